//! Several real processes on one PostgreSQL database (fresh per test) and
//! one S3-compatible server process (moto): web nodes (`serve --no-worker`)
//! and worker nodes (`worker`) that share nothing but those two.
//!
//! Engine calls are counted from the workers' JSON logs: a worker logs
//! `engine finished` with the task id each time the engine returned images
//! for a task, so a task run twice shows up twice.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blobs::testing::S3Server;
use blobs::{BlobStore, S3Store, StorageConfig};
use common::{Browser, Server};
use serde_json::{json, Value};
use store::testing::{test_db, TestBackend, TestDb};

/// One deployment: database, bucket, shared settings; nodes are started
/// from it.
struct Cluster {
    root: tempfile::TempDir,
    db: TestDb,
    s3: S3Server,
    bucket: StorageConfig,
    master_key: String,
    nodes: usize,
}

impl Cluster {
    async fn new() -> Cluster {
        let root = tempfile::tempdir().unwrap();
        let db = test_db(TestBackend::Postgres).await;
        let s3 = S3Server::start();
        let bucket = s3.bucket();
        let master_key = vault::LocalMasterKey::generate().to_base64();
        Cluster { root, db, s3, bucket, master_key, nodes: 0 }
    }

    fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("ATELIER_DATABASE_URL".into(), self.db.url.clone()),
            ("ATELIER_MASTER_KEY".into(), self.master_key.clone()),
            ("ATELIER_BILLING_ENABLED".into(), "true".into()),
            ("ATELIER_BILLING_SIGNUP_GRANT".into(), "1000000".into()),
            ("ATELIER_RATE_LIMITS_ENABLED".into(), "false".into()),
            ("ATELIER_TASKS_SWEEP_INTERVAL_SECONDS".into(), "1".into()),
            ("ATELIER_LOG_JSON".into(), "true".into()),
        ];
        env.extend(S3Server::env(&self.bucket));
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    /// A node with its own (scratch) data dir. The master key file is the
    /// cluster's key too, so test helpers that open the store from a data
    /// dir read what the nodes wrote.
    async fn node(&mut self, role: &[&str], extra: &[(&str, &str)]) -> Server {
        self.nodes += 1;
        let data = self.root.path().join(format!("node-{}", self.nodes)).join("data");
        std::fs::create_dir_all(&data).unwrap();
        vault::LocalMasterKey::from_base64(&self.master_key).unwrap().write_to(&data.join("master.key")).unwrap();
        let env = self.env(extra);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Server::start_role(role, &data, &env).await
    }

    async fn web(&mut self) -> Server {
        self.node(&["serve", "--no-worker", "--bind", "127.0.0.1:0"], &[]).await
    }

    async fn worker(&mut self, extra: &[(&str, &str)]) -> Server {
        self.node(&["worker"], extra).await
    }

    async fn sql(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.db.url).await.unwrap()
    }

    fn bucket_store(&self) -> Arc<dyn BlobStore> {
        Arc::new(S3Store::new(&self.bucket).unwrap())
    }

    fn data_dir(&self, node: &Server) -> PathBuf {
        node.data_dir.clone()
    }
}

/// Signs up on `server` (through the mailed link) and returns the account id.
async fn signed_up(browser: &mut Browser, email: &str) -> String {
    browser.sign_up(email, "Opal-Kestrel-Lantern-93").await;
    let (code, me) = browser.json(reqwest::Method::GET, "/api/v1/account", None).await;
    assert_eq!(code, 200, "{me}");
    me["id"].as_str().unwrap().to_string()
}

/// The same signed-in person on another web node: sessions live in the database.
fn same_person_on(browser: &Browser, server: &Server) -> Browser {
    let mut other = Browser::new(server);
    other.cookies = browser.cookies.clone();
    other
}

async fn submit(browser: &mut Browser, prompt: &str) -> String {
    let (code, task) = browser.json(reqwest::Method::POST, "/api/v1/tasks", Some(json!({"prompt": prompt, "size": "256x256"}))).await;
    assert_eq!(code, 202, "{task}");
    task["id"].as_str().unwrap().to_string()
}

/// Task statuses of an account, by id.
async fn statuses(pool: &sqlx::PgPool, owner: &str) -> HashMap<String, String> {
    sqlx::query_as::<_, (String, String)>("SELECT id, status FROM tasks WHERE owner_id = $1")
        .bind(owner)
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

async fn wait_until_all(pool: &sqlx::PgPool, owner: &str, n: usize, done: &[&str], within: Duration) -> HashMap<String, String> {
    let deadline = Instant::now() + within;
    loop {
        let now = statuses(pool, owner).await;
        if now.len() == n && now.values().all(|s| done.contains(&s.as_str())) {
            return now;
        }
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for s in now.values() {
            *counts.entry(s.as_str()).or_default() += 1;
        }
        assert!(Instant::now() < deadline, "tasks not done in time: {counts:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How many times each task went through the engine, from workers' logs.
fn engine_calls(workers: &[&Server]) -> HashMap<String, usize> {
    let mut calls = HashMap::new();
    for worker in workers {
        for line in worker.logs().lines() {
            let Ok(entry) = serde_json::from_str::<Value>(line) else { continue };
            if entry["fields"]["message"] == "engine finished" {
                *calls.entry(entry["fields"]["task"].as_str().unwrap().to_string()).or_insert(0) += 1;
            }
        }
    }
    calls
}

/// Every task's hold was captured exactly once, the ledger adds up to the
/// balance, and nothing is still held.
async fn assert_charged_once(pool: &sqlx::PgPool, owner: &str, succeeded: usize) {
    let (available, held): (i64, i64) =
        sqlx::query_as("SELECT available, held FROM balances WHERE user_id = $1").bind(owner).fetch_one(pool).await.unwrap();
    let ledger: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(amount), 0)::BIGINT FROM ledger WHERE user_id = $1")
        .bind(owner)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!((available, held), (ledger, 0), "balance == ledger, nothing left on hold");
    let captures: Vec<(String, i64)> =
        sqlx::query_as("SELECT reference, COUNT(*) FROM ledger WHERE user_id = $1 AND kind = 'capture' GROUP BY reference")
            .bind(owner)
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(captures.len(), succeeded, "one capture per succeeded task");
    assert!(captures.iter().all(|(_, n)| *n == 1), "no task captured twice");
    let costs: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(cost), 0)::BIGINT FROM tasks WHERE owner_id = $1 AND status = 'succeeded'")
        .bind(owner)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(available, 1_000_000 - costs, "charged exactly the succeeded tasks' cost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_tasks_through_two_web_nodes_run_once_and_are_charged_once() {
    let mut cluster = Cluster::new().await;
    let (web1, web2) = (cluster.web().await, cluster.web().await);
    let worker1 = cluster.worker(&[("ATELIER_TASKS_CONCURRENCY", "4")]).await;
    let worker2 = cluster.worker(&[("ATELIER_TASKS_CONCURRENCY", "4")]).await;
    let mut on1 = Browser::new(&web1);
    let owner = signed_up(&mut on1, "many@example.org").await;
    let on2 = same_person_on(&on1, &web2);

    // Eight clients at once, alternating web nodes.
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let mut browser = same_person_on(if c % 2 == 0 { &on1 } else { &on2 }, if c % 2 == 0 { &web1 } else { &web2 });
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..500 / 8 + usize::from(c < 500 % 8) {
                    ids.push(submit(&mut browser, &format!("lantern {c}-{i}")).await);
                }
                ids
            })
        })
        .collect();
    let mut submitted = Vec::new();
    for client in clients {
        submitted.extend(client.await.unwrap());
    }
    assert_eq!(submitted.len(), 500);

    let pool = cluster.sql().await;
    let done = wait_until_all(&pool, &owner, 500, &["succeeded", "failed"], Duration::from_secs(600)).await;
    assert!(done.values().all(|s| s == "succeeded"), "every task succeeded");
    let calls = engine_calls(&[&worker1, &worker2]);
    assert_eq!(calls.len(), 500);
    assert!(submitted.iter().all(|id| calls.get(id) == Some(&1)), "each task went through the engine exactly once");
    let by_worker: Vec<usize> = [&worker1, &worker2].iter().map(|w| engine_calls(&[w]).len()).collect();
    assert!(by_worker.iter().all(|n| *n > 0), "both workers took tasks: {by_worker:?}");
    let attempts: i64 =
        sqlx::query_scalar("SELECT MAX(attempts)::BIGINT FROM tasks WHERE owner_id = $1").bind(&owner).fetch_one(&pool).await.unwrap();
    assert_eq!(attempts, 1);
    assert_charged_once(&pool, &owner, 500).await;
    // An output and a thumbnail per task, all in the bucket, nothing else.
    let objects = cluster.bucket_store().list_prefix(&format!("{owner}/")).await.unwrap();
    assert_eq!(objects.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_worker_tasks_finish_on_the_other_after_the_lease_expires() {
    let mut cluster = Cluster::new().await;
    let web = cluster.web().await;
    // Slow renders and short leases: the kill lands mid-task, and the
    // lease runs out soon after.
    let slow = [
        ("ATELIER_TASKS_CONCURRENCY", "2"),
        ("ATELIER_ENGINE_MIN_DURATION_MS", "3000"),
        ("ATELIER_TASKS_LEASE_SECONDS", "3"),
        ("ATELIER_TASKS_HEARTBEAT_SECONDS", "1"),
    ];
    let mut doomed = cluster.worker(&slow).await;
    let mut browser = Browser::new(&web);
    let owner = signed_up(&mut browser, "crash@example.org").await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(submit(&mut browser, &format!("crash {i}")).await);
    }
    let pool = cluster.sql().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let held: Vec<String> = loop {
        let running: Vec<String> = sqlx::query_scalar("SELECT id FROM tasks WHERE owner_id = $1 AND status = 'running'")
            .bind(&owner)
            .fetch_all(&pool)
            .await
            .unwrap();
        if running.len() == 2 {
            break running;
        }
        assert!(Instant::now() < deadline, "the first worker never held two tasks");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    doomed.child.kill().await.unwrap();
    let survivor = cluster.worker(&slow).await;

    let done = wait_until_all(&pool, &owner, 4, &["succeeded", "failed"], Duration::from_secs(120)).await;
    assert!(done.values().all(|s| s == "succeeded"), "{done:?}");
    for id in &held {
        let attempts: i64 = sqlx::query_scalar("SELECT attempts::BIGINT FROM tasks WHERE id = $1").bind(id).fetch_one(&pool).await.unwrap();
        assert_eq!(attempts, 2, "re-queued after the lease expired, run again");
        let events: Vec<String> = sqlx::query_scalar("SELECT COALESCE(detail, '') FROM task_events WHERE task_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&pool)
            .await
            .unwrap();
        assert!(events.iter().any(|d| d == "lease expired"), "{events:?}");
    }
    let (killed, rest) = (engine_calls(&[&doomed]), engine_calls(&[&survivor]));
    assert!(held.iter().all(|id| !killed.contains_key(id) && rest.get(id) == Some(&1)), "the held tasks ran on the survivor");
    assert!(ids.iter().all(|id| killed.get(id).unwrap_or(&0) + rest.get(id).unwrap_or(&0) == 1), "no task's images were made twice");
    assert_charged_once(&pool, &owner, 4).await;
    // Nothing lost: each task has its output in the gallery listing.
    for id in &ids {
        let task = browser.wait_for(id, "succeeded").await;
        assert_eq!(task["outputs"].as_array().unwrap().len(), 1, "{task}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_on_web_node_1_shows_progress_of_a_task_run_by_node_2() {
    let mut cluster = Cluster::new().await;
    let web1 = cluster.web().await;
    // Node 2 runs web and worker; node 1 has no worker at all.
    let node2 = cluster
        .node(&["serve", "--bind", "127.0.0.1:0"], &[("ATELIER_ENGINE_MIN_DURATION_MS", "4000"), ("ATELIER_TASKS_HEARTBEAT_SECONDS", "1")])
        .await;
    let mut browser = Browser::new(&web1);
    signed_up(&mut browser, "watch@example.org").await;
    let id = submit(&mut browser, "a slow sunrise").await;
    let started = Instant::now();
    let response = browser.get(&format!("/api/v1/tasks/{id}/events")).await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let stream = tokio::time::timeout(Duration::from_secs(60), response.text()).await.expect("the stream ends with the task").unwrap();
    let events: Vec<Value> = stream
        .split("\n\n")
        .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("data:")).and_then(|d| serde_json::from_str(d.trim()).ok()))
        .collect();
    assert!(events.iter().any(|e| e["status"] == "running"), "{stream}");
    assert!(
        events.iter().any(|e| e["status"] == "running" && e["progress"].as_i64().is_some_and(|p| p > 0)),
        "progress reported while running: {stream}"
    );
    assert!(stream.contains("event: done") && events.last().unwrap()["status"] == "succeeded", "{stream}");
    assert!(started.elapsed() >= Duration::from_secs(4), "the stream followed the task, not a finished one");
    let ran_on = engine_calls(&[&node2]);
    assert_eq!(ran_on.get(&id), Some(&1), "node 2's worker made the image");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c30_purge_leaves_no_object_under_the_account_prefix_in_the_bucket() {
    let mut cluster = Cluster::new().await;
    let web = cluster.web().await;
    let _worker = cluster.worker(&[]).await;
    let mut gone = Browser::new(&web);
    let gone_id = signed_up(&mut gone, "gone@example.org").await;
    let mut stays = Browser::new(&web);
    let stays_id = signed_up(&mut stays, "stays@example.org").await;
    for browser in [&mut gone, &mut stays] {
        let id = submit(browser, "an image to forget").await;
        browser.wait_for(&id, "succeeded").await;
    }
    let bucket = cluster.bucket_store();
    assert_eq!(bucket.list_prefix(&format!("{gone_id}/")).await.unwrap().len(), 2);

    let env = cluster.env(&[]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = common::atelier_with(&cluster.data_dir(&web), &["admin", "purge-account", "gone@example.org"], &env);
    assert!(out.contains("2 objects deleted"), "{out}");
    assert!(bucket.list_prefix(&format!("{gone_id}/")).await.unwrap().is_empty(), "no object of the account is left");
    assert_eq!(bucket.list_prefix(&format!("{stays_id}/")).await.unwrap().len(), 2, "other accounts keep theirs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_server_stopped_mid_task_fails_cleanly_with_nothing_in_the_gallery() {
    let mut cluster = Cluster::new().await;
    let web = cluster.web().await;
    let _worker = cluster.worker(&[("ATELIER_ENGINE_MIN_DURATION_MS", "2000"), ("ATELIER_TASKS_HEARTBEAT_SECONDS", "1")]).await;
    let mut browser = Browser::new(&web);
    let owner = signed_up(&mut browser, "outage@example.org").await;
    let id = submit(&mut browser, "stored nowhere").await;
    browser.wait_for(&id, "running").await;
    // The engine is still rendering: its upload will find no server.
    cluster.s3.stop();

    let task = browser.wait_for(&id, "failed").await;
    assert_eq!(task["error_code"], "unavailable", "{task}");
    let pool = cluster.sql().await;
    let (attempts, max_attempts, assets): (i64, i64, i64) = sqlx::query_as(
        "SELECT attempts::BIGINT, max_attempts::BIGINT, (SELECT COUNT(*)::BIGINT FROM assets WHERE owner_id = $2) FROM tasks WHERE id = $1",
    )
    .bind(&id)
    .bind(&owner)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(max_attempts > 1 && attempts == max_attempts, "retried until the attempts ran out: {attempts}/{max_attempts}");
    assert_eq!(assets, 0, "no asset was recorded");
    let gallery = browser.get("/gallery").await;
    assert_eq!(gallery.status(), 200);
    // The page carries one tile template for infinite scroll, with an `{id}` placeholder.
    let page = gallery.text().await.unwrap().replace("href=\"/images/{id}\"", "");
    assert!(!page.contains("href=\"/images/"), "nothing half-written in the gallery");
    assert_charged_once(&pool, &owner, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_a_running_task_to_another_worker_without_counting_the_attempt() {
    let mut cluster = Cluster::new().await;
    let web = cluster.web().await;
    let leaving = cluster
        .worker(&[
            ("ATELIER_ENGINE_MIN_DURATION_MS", "8000"),
            ("ATELIER_TASKS_SHUTDOWN_GRACE_SECONDS", "1"),
            ("ATELIER_TASKS_CONCURRENCY", "1"),
        ])
        .await;
    let mut browser = Browser::new(&web);
    let owner = signed_up(&mut browser, "release@example.org").await;
    let id = submit(&mut browser, "a render cut short").await;
    browser.wait_for(&id, "running").await;
    let stopping = Instant::now();
    leaving.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(6), "exits after the grace, without waiting for the render");
    let pool = cluster.sql().await;
    let (status, attempts): (String, i64) =
        sqlx::query_as("SELECT status, attempts::BIGINT FROM tasks WHERE id = $1").bind(&id).fetch_one(&pool).await.unwrap();
    assert_eq!((status.as_str(), attempts), ("queued", 0), "back in the queue at once; the attempt does not count");

    let _next = cluster.worker(&[]).await;
    let task = browser.wait_for(&id, "succeeded").await;
    assert_eq!(task["attempts"], 1, "{task}");
    assert_charged_once(&pool, &owner, 1).await;
}
