//! Helpers for tests that run the real binary: a server process and a
//! browser-like HTTP client.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct Server {
    pub child: Child,
    pub url: String,
    pub log: PathBuf,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
}

impl Server {
    pub async fn start(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        Server::start_role(&["serve", "--bind", "127.0.0.1:0"], data_dir, env).await
    }

    /// Any role: `serve [--no-worker]` (returns once the URL is printed) or
    /// `worker` (once it says it runs; `url` is empty).
    pub async fn start_role(role: &[&str], data_dir: &Path, env: &[(&str, &str)]) -> Server {
        std::fs::create_dir_all(data_dir.parent().unwrap()).unwrap();
        let log = data_dir.with_extension(format!("{}.log", rand_suffix()));
        let mut command = Command::new(env!("CARGO_BIN_EXE_atelier"));
        command
            .args(role)
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("RUST_LOG")
            .env_remove("DATABASE_URL")
            .env_remove("ATELIER_MASTER_KEY")
            .env("ATELIER_LOG_LEVEL", "debug")
            .env("ATELIER_MAIL_SEND_INTERVAL_SECONDS", "1")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start atelier");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("Atelier is running at ") {
                    return url.trim_end_matches('/').to_string();
                }
                if line.starts_with("Atelier worker running") {
                    return String::new();
                }
            }
            panic!("atelier exited before printing its URL: {}", std::fs::read_to_string(&log).unwrap_or_default());
        })
        .await
        .expect("the URL is printed at start");
        let database_url = env.iter().find(|(k, _)| *k == "ATELIER_DATABASE_URL").map(|(_, v)| v.to_string());
        Server { child, url, log, data_dir: data_dir.to_path_buf(), database_url }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
}

/// A browser-like client: keeps cookies, echoes the CSRF token.
pub struct Browser {
    pub http: reqwest::Client,
    pub base: String,
    pub cookies: BTreeMap<String, String>,
    /// Where the server keeps its outbox, to follow links mailed to users.
    data_dir: PathBuf,
    database_url: Option<String>,
}

impl Browser {
    pub fn new(server: &Server) -> Browser {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Browser {
            http,
            base: server.url.clone(),
            cookies: BTreeMap::new(),
            data_dir: server.data_dir.clone(),
            database_url: server.database_url.clone(),
        }
    }

    /// Follows the newest `kind` link mailed to `email` (read from the
    /// server's outbox) and returns the link's token.
    pub async fn mailed_token(&self, email: &str, kind: &str, path: &str) -> String {
        let store = open_store(&self.data_dir, self.database_url.as_deref(), &self.data_dir.join("master.key")).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let token = loop {
            if let Some(user) = store.user_by_email(email).await.unwrap() {
                let mails = store.mail_of_user(&user.id).await.unwrap();
                if let Some(mail) = mails.iter().find(|m| m.kind == kind) {
                    let at =
                        mail.body_text.find(&format!("{path}?token=")).unwrap_or_else(|| panic!("no {path} link in {}", mail.body_text));
                    let link = mail.body_text[at..].split_whitespace().next().unwrap();
                    break link.split("token=").nth(1).unwrap().split('&').next().unwrap().to_string();
                }
            }
            assert!(Instant::now() < deadline, "no {kind} mail to {email}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        store.close().await;
        token
    }

    pub async fn send(&mut self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let cookie = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let csrf = self.cookies.get("atelier_csrf").cloned().unwrap_or_default();
        let response = request.header("cookie", cookie).header("x-csrf-token", csrf).send().await.unwrap();
        for set in response.headers().get_all("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.insert(k.to_string(), v.to_string());
        }
        response
    }

    pub async fn get(&mut self, path: &str) -> reqwest::Response {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    pub async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let mut fields: Vec<(String, String)> = fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        fields.push(("_csrf".into(), self.cookies.get("atelier_csrf").cloned().unwrap_or_default()));
        let request = self.http.post(format!("{}{path}", self.base)).form(&fields);
        self.send(request).await
    }

    pub async fn json(&mut self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = self.send(request).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Signs up, confirms the address through the mailed link, and ends
    /// signed in, as a new user would.
    pub async fn sign_up(&mut self, email: &str, password: &str) {
        self.get("/signup").await;
        let resp =
            self.post_form("/signup", &[("name", "Noor"), ("email", email), ("password", password), ("birth_date", "1988-03-09")]).await;
        assert_eq!(resp.status(), 303, "{}", resp.text().await.unwrap());
        let token = self.mailed_token(email, "verify_email", "/verify-email").await;
        let page = self.get(&format!("/verify-email?token={token}")).await;
        assert_eq!(page.status(), 200);
        let resp = self.post_form("/verify-email", &[("token", &token)]).await;
        assert_eq!(resp.status(), 303, "{}", resp.text().await.unwrap());
        assert!(self.cookies.contains_key("atelier_session"));
    }

    pub async fn wait_for(&mut self, task_id: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let (code, task) = self.json(reqwest::Method::GET, &format!("/api/v1/tasks/{task_id}"), None).await;
            assert_eq!(code, 200, "{task}");
            if task["status"] == status {
                return task;
            }
            assert!(Instant::now() < deadline, "task never reached {status}: {task}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

pub fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

impl Server {
    /// SIGTERM, then wait for a clean exit.
    pub async fn stop(mut self) {
        let pid = self.child.id().expect("running").to_string();
        let _ = std::process::Command::new("kill").args(["-TERM", &pid]).status();
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.expect("stops on SIGTERM").unwrap();
        assert!(status.success(), "clean exit: {status}\n{}", self.logs());
    }
}

/// Runs a one-shot `atelier` command on a data dir; returns its stdout.
pub fn atelier(data_dir: &Path, args: &[&str]) -> String {
    atelier_with(data_dir, args, &[])
}

pub fn atelier_with(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_atelier"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("RUST_LOG")
        .env_remove("DATABASE_URL")
        .env_remove("ATELIER_MASTER_KEY")
        .envs(env.iter().copied())
        .output()
        .expect("run atelier");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "atelier {args:?} failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// The store of a server's data dir (its SQLite file, or `database_url`),
/// opened with the given master key file.
pub async fn open_store(data_dir: &Path, database_url: Option<&str>, master_key_file: &Path) -> store::Store {
    let (master, _) = vault::LocalMasterKey::load_or_create(master_key_file).unwrap();
    let url = database_url.map_or_else(|| format!("sqlite://{}", data_dir.join("atelier.db").display()), str::to_string);
    store::Store::connect(&url, 2).await.unwrap().with_master_key(std::sync::Arc::new(master))
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
