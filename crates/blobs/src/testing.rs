//! A real S3-compatible server for tests: moto in server mode
//! (`pip install 'moto[server]'`), one process per [`S3Server`], each test
//! on its own bucket.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::StorageConfig;

/// Starts moto on a free port, prints the port, and exits when its stdin
/// closes, so the server dies with the test process even when a test
/// panics or is killed.
const LAUNCHER: &str = "
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
";

pub struct S3Server {
    child: Child,
    pub port: u16,
}

impl S3Server {
    pub fn start() -> S3Server {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = Command::new(python)
            .args(["-c", LAUNCHER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with moto[server] (pip install 'moto[server]')");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("moto port");
        let port = line.trim().parse().unwrap_or_else(|_| panic!("moto did not start (is 'moto[server]' installed?): {line:?}"));
        S3Server { child, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A new empty bucket and the settings that reach it.
    pub fn bucket(&self) -> StorageConfig {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        write!(stream, "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", self.port).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("create bucket");
        assert!(response.starts_with("HTTP/1.1 200"), "create bucket: {response}");
        StorageConfig {
            backend: "s3".into(),
            bucket: name,
            endpoint: self.endpoint(),
            path_style: true,
            access_key_id: "test".into(),
            secret_access_key: "test".into(),
            timeout_seconds: 5,
            max_retries: 1,
            ..StorageConfig::default()
        }
    }

    /// The environment that points an `atelier` process at `bucket`.
    pub fn env(config: &StorageConfig) -> Vec<(String, String)> {
        [
            ("BACKEND", config.backend.clone()),
            ("BUCKET", config.bucket.clone()),
            ("ENDPOINT", config.endpoint.clone()),
            ("PATH_STYLE", config.path_style.to_string()),
            ("ACCESS_KEY_ID", config.access_key_id.clone()),
            ("SECRET_ACCESS_KEY", config.secret_access_key.clone()),
            ("TIMEOUT_SECONDS", config.timeout_seconds.to_string()),
            ("MAX_RETRIES", config.max_retries.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("ATELIER_STORAGE_{k}"), v))
        .collect()
    }

    /// Kills the server at once, like a crash or a network cut.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
