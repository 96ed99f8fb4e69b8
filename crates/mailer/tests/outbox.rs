//! Outbox delivery end to end: a real SMTP server (Python's aiosmtpd), an
//! unreachable one, the `.eml` directory transport and bad recipients.
//!
//! The SMTP test needs `python3` with aiosmtpd: `python3 -m pip install aiosmtpd`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailer::{MailConfig, Mailer};
use store::testing::{test_db, TestBackend, TestDb};
use store::{Mail, NewMail, Store};

const SUBJECT: &str = "Café ✓ 画像 — your images are ready";
const BODY: &str = "Hello Zoë,\n\nCafé ✓ 画像: 3 images are ready.\nhttps://atelier.example/gallery\n";

async fn db() -> TestDb {
    test_db(TestBackend::Sqlite).await
}

async fn enqueue(store: &Store, to: &str, subject: &str, body: &str) -> String {
    store
        .enqueue_mail(NewMail {
            user_id: None,
            kind: "test_notice".to_string(),
            to_addr: to.to_string(),
            subject: subject.to_string(),
            body_text: body.to_string(),
        })
        .await
        .expect("enqueue mail")
}

async fn row(store: &Store, id: &str) -> Mail {
    store.mail_by_id(id).await.expect("read outbox").expect("outbox row exists")
}

/// A port nothing listens on (right now).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().unwrap().port()
}

fn smtp_config(port: u16) -> MailConfig {
    MailConfig { smtp_host: "127.0.0.1".to_string(), smtp_port: port, smtp_tls: "none".to_string(), ..MailConfig::default() }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// Kills the SMTP server when the test ends, pass or fail.
struct ServerGuard(Child);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn require_aiosmtpd() {
    let ok = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        panic!(
            "this test needs a real SMTP server: python3 with the aiosmtpd package. \
             Install it with `python3 -m pip install aiosmtpd` (and make sure `python3` is on PATH)."
        );
    }
}

/// Starts `python3 -m aiosmtpd` with the Maildir handler and waits until it
/// accepts connections.
fn start_smtp_server(port: u16, maildir: &Path, log: &Path) -> ServerGuard {
    require_aiosmtpd();
    let log_file = std::fs::File::create(log).expect("create server log");
    let child = Command::new("python3")
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
        .arg(maildir)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("spawn python3 -m aiosmtpd");
    let mut guard = ServerGuard(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return guard;
        }
        if let Some(status) = guard.0.try_wait().expect("poll aiosmtpd") {
            panic!("aiosmtpd exited early ({status}): {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        if Instant::now() > deadline {
            panic!("aiosmtpd did not listen on 127.0.0.1:{port}: {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Parses a message file with Python's `email` package, which decodes the
/// RFC 2047 subject and the transfer-encoded body.
fn parse_with_python(path: &Path) -> serde_json::Value {
    let script = r#"
import email, json, sys
from email import policy
with open(sys.argv[1], "rb") as f:
    m = email.message_from_binary_file(f, policy=policy.default)
print(json.dumps({
    "from": str(m["From"]), "to": str(m["To"]), "subject": str(m["Subject"]),
    "date": str(m["Date"] or ""), "message_id": str(m["Message-ID"] or ""),
    "content_type": m.get_content_type(), "charset": m.get_content_charset(),
    "rcpt": str(m["X-RcptTo"] or ""), "body": m.get_content(),
}))
"#;
    let out = Command::new("python3").args(["-c", script]).arg(path).output().expect("run python3");
    assert!(out.status.success(), "python could not parse {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("python output is JSON")
}

fn normalize_newlines(s: &str) -> String {
    s.replace("\r\n", "\n")
}

#[tokio::test]
async fn c24_outbox_message_is_delivered_over_smtp() {
    let tmp = tempfile::tempdir().unwrap();
    let maildir = tmp.path().join("maildir");
    let port = free_port();
    let _server = start_smtp_server(port, &maildir, &tmp.path().join("aiosmtpd.log"));

    let db = db().await;
    let id = enqueue(&db.store, "Zoë Example <zoe@example.com>", SUBJECT, BODY).await;

    let mailer = Mailer::new(&smtp_config(port), tmp.path().join("unused")).unwrap();
    let sent = mailer.deliver_due(&db.store).await.expect("deliver_due");
    assert_eq!(sent, 1);

    let mail = row(&db.store, &id).await;
    assert_eq!(mail.status, "sent", "last_error: {:?}", mail.last_error);
    assert_eq!(mail.last_error, None);
    assert!(mail.sent_at.is_some());

    let received = files_in(&maildir.join("new"));
    assert_eq!(received.len(), 1, "exactly one message in the Maildir: {received:?}");
    let raw = std::fs::read(&received[0]).unwrap();
    assert!(raw.is_ascii(), "the message on the wire is 7-bit clean (encoded subject and body)");

    let m = parse_with_python(&received[0]);
    assert_eq!(m["subject"], SUBJECT);
    assert!(m["to"].as_str().unwrap().contains("zoe@example.com"), "{}", m["to"]);
    assert!(m["to"].as_str().unwrap().contains("Zoë Example"), "{}", m["to"]);
    assert_eq!(m["from"], "Atelier <no-reply@localhost>");
    assert_eq!(m["rcpt"], "zoe@example.com", "envelope recipient");
    assert_eq!(m["message_id"], format!("<{id}@localhost>"));
    assert!(!m["date"].as_str().unwrap().is_empty(), "Date header");
    assert_eq!(m["content_type"], "text/plain");
    assert_eq!(m["charset"], "utf-8");
    assert_eq!(normalize_newlines(m["body"].as_str().unwrap()).trim_end(), BODY.trim_end());

    // Nothing is due any more.
    assert_eq!(mailer.deliver_due(&db.store).await.unwrap(), 0);
    assert_eq!(files_in(&maildir.join("new")).len(), 1);
}

#[tokio::test]
async fn smtp_server_down_keeps_mail_pending_with_backoff() {
    let tmp = tempfile::tempdir().unwrap();
    let db = db().await;
    let id = enqueue(&db.store, "zoe@example.com", "Hello", "Body").await;

    let mailer = Mailer::new(&smtp_config(free_port()), tmp.path().to_path_buf()).unwrap();
    let before = store::now_ms();
    let sent = mailer.deliver_due(&db.store).await.expect("a transport failure is not an error of the round");
    assert_eq!(sent, 0);

    let mail = row(&db.store, &id).await;
    assert_eq!(mail.status, "pending");
    assert_eq!(mail.attempts, 1);
    let error = mail.last_error.clone().expect("last_error is recorded");
    assert!(!error.is_empty());
    assert!(!error.contains("Body"), "the body never ends up in last_error: {error}");
    assert!(mail.next_attempt_at >= before + 60_000, "retried after about a minute, not now");
    assert!(mail.next_attempt_at <= store::now_ms() + 61_000);
    assert_eq!(mail.sent_at, None);

    // Not due yet: a second round leaves it alone.
    assert_eq!(mailer.deliver_due(&db.store).await.unwrap(), 0);
    assert_eq!(row(&db.store, &id).await.attempts, 1);

    // And the direct API reports the transport failure as `unavailable`.
    let err = mailer.deliver(&mail).await.unwrap_err();
    assert_eq!(err.code, domain::ErrorCode::Unavailable);
}

#[tokio::test]
async fn dir_transport_writes_one_complete_eml_per_message_and_marks_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let mail_dir = tmp.path().join("data").join("mail"); // created on demand
    let db = db().await;
    let a = enqueue(&db.store, "ann@example.com", "Plain subject", "Plain body line\n").await;
    let b = enqueue(&db.store, "bob@example.com", SUBJECT, BODY).await;

    let mailer = Mailer::new(&MailConfig::default(), mail_dir.clone()).unwrap();
    assert_eq!(mailer.deliver_due(&db.store).await.unwrap(), 2);

    let files = files_in(&mail_dir);
    assert_eq!(files.len(), 2, "one file per message and no temp files left: {files:?}");
    for (id, to) in [(&a, "ann@example.com"), (&b, "bob@example.com")] {
        let mail = row(&db.store, id).await;
        assert_eq!(mail.status, "sent");
        let path = mail_dir.join(format!("{}-{}.eml", mail.created_at, mail.id));
        assert!(files.contains(&path), "{path:?} in {files:?}");

        let text = String::from_utf8(std::fs::read(&path).unwrap()).expect("UTF-8 file");
        let (head, body) = text.split_once("\r\n\r\n").expect("headers, blank line, body");
        for header in
            ["From: ", "To: ", "Subject: ", "Date: ", "Message-ID: ", "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8"]
        {
            assert!(head.lines().any(|l| l.starts_with(header)), "missing {header:?} in\n{head}");
        }
        assert!(head.contains(&format!("Message-ID: <{}@localhost>", mail.id)));
        assert!(head.contains("From: Atelier <no-reply@localhost>"));
        assert!(head.contains(to));
        assert!(!body.trim().is_empty());
    }
    let plain = std::fs::read_to_string(mail_dir.join(format!("{}-{a}.eml", row(&db.store, &a).await.created_at))).unwrap();
    assert!(plain.contains("Subject: Plain subject\r\n"));
    assert!(plain.ends_with("Plain body line\r\n") || plain.ends_with("Plain body line\n"), "{plain:?}");

    // A second round has nothing to send and writes nothing.
    assert_eq!(mailer.deliver_due(&db.store).await.unwrap(), 0);
    assert_eq!(files_in(&mail_dir).len(), 2);
}

#[tokio::test]
async fn invalid_recipient_is_failed_without_retry() {
    let tmp = tempfile::tempdir().unwrap();
    let db = db().await;
    let bad = enqueue(&db.store, "not-an-address", "Hello", "Body").await;
    let injected = enqueue(&db.store, "zoe@example.com\r\nBcc: eve@example.com", "Hello", "Body").await;

    let mailer = Mailer::new(&MailConfig::default(), tmp.path().to_path_buf()).unwrap();
    assert_eq!(mailer.deliver_due(&db.store).await.unwrap(), 0);

    for id in [&bad, &injected] {
        let mail = row(&db.store, id).await;
        assert_eq!(mail.status, "failed", "{id}");
        assert_eq!(mail.attempts, 1);
        assert!(mail.last_error.is_some());
        assert_eq!(mail.sent_at, None);
        let err = mailer.deliver(&mail).await.unwrap_err();
        assert_eq!(err.code, domain::ErrorCode::InvalidInput);
    }
    assert!(files_in(tmp.path()).is_empty(), "nothing written for a bad address");

    // Given up: later rounds never pick it up again.
    assert!(db.store.due_mail(store::now_ms() + 365 * 86_400_000, 10).await.unwrap().is_empty());
    assert_eq!(mailer.deliver_due(&db.store).await.unwrap(), 0);
    assert_eq!(row(&db.store, &bad).await.attempts, 1);
}

#[tokio::test]
async fn run_delivers_at_once_and_stops_on_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let db = db().await;
    let id = enqueue(&db.store, "zoe@example.com", "Hello", "Body").await;

    let mailer = Arc::new(Mailer::new(&MailConfig::default(), tmp.path().to_path_buf()).unwrap());
    let (tx, rx) = tokio::sync::watch::channel(false);
    // An interval of an hour: the message only goes out if the first round runs at once.
    let task = tokio::spawn(mailer::run(mailer, db.store.clone(), rx, Duration::from_secs(3600)));

    let deadline = Instant::now() + Duration::from_secs(10);
    while row(&db.store, &id).await.status != "sent" {
        assert!(Instant::now() < deadline, "run did not deliver the due message");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("run stops on shutdown").unwrap();
}

#[tokio::test]
async fn c25_marketing_mail_carries_one_click_unsubscribe_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let mail_dir = tmp.path().join("mail");
    let db = db().await;
    let notice = enqueue(&db.store, "ann@example.com", "Receipt", "Thanks\n").await;
    let mail = NewMail {
        user_id: None,
        kind: "marketing".to_string(),
        to_addr: "ann@example.com".to_string(),
        subject: "News".to_string(),
        body_text: "New styles\n".to_string(),
    };
    let link = "https://atelier.example/unsubscribe?u=abc&s=0123";
    let marketing = db.store.enqueue_marketing_mail(&mail, link, store::now_ms()).await.unwrap();

    let mailer = Mailer::new(&MailConfig::default(), mail_dir.clone()).unwrap();
    assert_eq!(mailer.deliver_due(&db.store).await.unwrap(), 2);
    let head = |id: &str| {
        let path = files_in(&mail_dir).into_iter().find(|p| p.to_string_lossy().contains(id)).unwrap();
        std::fs::read_to_string(path).unwrap().split_once("\r\n\r\n").unwrap().0.to_string()
    };
    let marketing_head = head(&marketing);
    assert!(marketing_head.contains(&format!("List-Unsubscribe: <{link}>")), "{marketing_head}");
    assert!(marketing_head.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"), "{marketing_head}");
    assert!(!head(&notice).contains("List-Unsubscribe"), "service notices have no unsubscribe link");
}
