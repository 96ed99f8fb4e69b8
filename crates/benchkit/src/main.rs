//! Helpers for `bench/run` (see bench/README.md); not part of the product.
//!
//!   benchkit upstream ADDR DELAY_MS          an OpenAI Images server answering every generation
//!                                         with a 256x256 PNG after DELAY_MS (for Atelier and LiteLLM alike)
//!   benchkit setup DATA_DIR DB_URL FILE      an account with credits, an API key, a session and one
//!                                         1 MiB image (its plaintext written to FILE); prints JSON
//!   benchkit seed DATA_DIR DB_URL USER N     N more images of USER, written straight to the store and
//!                                         the sealed object store (fast seeding; export and purge
//!                                         are then measured through the product)
//!   benchkit inflight URL KEY N              N generations at once through /v1/images/generations;
//!                                         prints how many succeeded
//!   benchkit queue POSTGRES_URL N WORKERS    N queued tasks claimed and completed by WORKERS workers
//!                                         (one connection pool each); checks no task is claimed twice

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use blobs::{BlobStore, Encrypted, LocalDirStore};
use serde_json::{json, Value};
use store::{NewApiKey, NewAsset, NewGrant, NewSession, NewTask, NewUser, Store};

type Res<T> = Result<T, String>;

fn arg(args: &[String], i: usize) -> Res<&str> {
    args.get(i).map(String::as_str).ok_or_else(|| format!("missing argument {i}; see the header of crates/benchkit/src/main.rs"))
}

fn num(args: &[String], i: usize) -> Res<u64> {
    arg(args, i)?.parse().map_err(|e| format!("argument {i}: {e}"))
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let done = match args.first().map(String::as_str) {
        Some("upstream") => upstream(&args).await,
        Some("setup") => setup(&args).await,
        Some("seed") => seed(&args).await,
        Some("inflight") => inflight(&args).await,
        Some("queue") => queue(&args).await,
        _ => Err("usage: benchkit upstream|setup|seed|inflight|queue …".into()),
    };
    if let Err(e) = done {
        eprintln!("benchkit: {e}");
        std::process::exit(1);
    }
}

// ------------------------------------------------------------------ upstream

async fn upstream(args: &[String]) -> Res<()> {
    let (addr, delay) = (arg(args, 1)?, Duration::from_millis(num(args, 2)?));
    let image = imaging::RgbaImage::from_fn(256, 256, |x, y| imaging::Rgba([x as u8, y as u8, (x ^ y) as u8, 255]));
    let b64: Arc<str> = base64::engine::general_purpose::STANDARD.encode(imaging::encode_png(&image).map_err(err)?.bytes).into();
    let generate = move |axum::Json(body): axum::Json<Value>| {
        let b64 = b64.clone();
        async move {
            tokio::time::sleep(delay).await;
            let n = body.get("n").and_then(Value::as_u64).unwrap_or(1).clamp(1, 10);
            let data: Vec<Value> = (0..n).map(|_| json!({ "b64_json": &*b64 })).collect();
            axum::Json(json!({ "created": store::now_ms() / 1000, "data": data }))
        }
    };
    let app = axum::Router::new().route("/v1/images/generations", axum::routing::post(generate));
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(err)?;
    println!("upstream on {}", listener.local_addr().map_err(err)?);
    axum::serve(listener, app).await.map_err(err)
}

// ------------------------------------------------------------------ accounts and images

/// The data dir as `atelier` opens it: its master key, the database, and
/// the local object store sealed with each owner's key.
async fn open(data_dir: &str, db_url: &str) -> Res<(Store, Arc<dyn BlobStore>)> {
    let dir = Path::new(data_dir);
    std::fs::create_dir_all(dir).map_err(err)?;
    let (master, _) = vault::LocalMasterKey::load_or_create(&dir.join("master.key")).map_err(err)?;
    let store = Store::connect(db_url, 8).await.map_err(err)?.with_master_key(Arc::new(master));
    store.migrate().await.map_err(err)?;
    let objects: Arc<dyn BlobStore> = Arc::new(LocalDirStore::new(dir.join("objects")).map_err(err)?);
    let sealed: Arc<dyn BlobStore> = Arc::new(Encrypted::new(objects, Arc::new(store.clone())));
    Ok((store, sealed))
}

fn random_token() -> String {
    let bytes: [u8; 24] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn setup(args: &[String]) -> Res<()> {
    let (store, blobs) = open(arg(args, 1)?, arg(args, 2)?).await?;
    let user = store
        .create_user(NewUser {
            email: format!("bench-{}@example.com", store::now_ms()),
            name: "Bench".into(),
            password_hash: None,
            locale: None,
        })
        .await
        .map_err(err)?;
    store
        .grant_credits(NewGrant {
            user_id: user.id.clone(),
            amount: 1_000_000_000,
            source: "admin".into(),
            key: format!("bench:{}", user.id),
            reason: "benchmark".into(),
            expires_at: None,
        })
        .await
        .map_err(err)?;
    let key: String = rand::Rng::sample_iter(rand::thread_rng(), rand::distributions::Alphanumeric).take(40).map(char::from).collect();
    let key = format!("atl_{key}");
    let hash = web::auth::token_hash(&key);
    store
        .create_api_key(NewApiKey { owner_id: &user.id, name: "bench", prefix: &key[..12], secret_hash: &hash, scopes: "images" })
        .await
        .map_err(err)?;
    let session = random_token();
    store
        .create_session(NewSession {
            user_id: user.id.clone(),
            token_hash: web::auth::token_hash(&session),
            expires_at: store::now_ms() + 86_400_000,
            ip: None,
            user_agent: None,
        })
        .await
        .map_err(err)?;
    // 1 MiB of incompressible bytes behind a PNG signature: served as stored.
    let mut bytes = vec![0u8; 1 << 20];
    rand::Rng::fill(&mut rand::thread_rng(), &mut bytes[..]);
    bytes[..8].copy_from_slice(b"\x89PNG\r\n\x1a\n");
    std::fs::write(arg(args, 3)?, &bytes).map_err(err)?;
    let asset = put_image(&store, blobs.as_ref(), &user.id, bytes).await?;
    println!("{}", json!({ "user": user.id, "email": user.email, "key": key, "session": session, "asset": asset }));
    store.close().await;
    Ok(())
}

async fn put_image(store: &Store, blobs: &dyn BlobStore, owner: &str, bytes: Vec<u8>) -> Res<String> {
    let id = domain::ids::new_id();
    let asset = NewAsset {
        storage_key: format!("{owner}/{id}.png"),
        id: id.clone(),
        owner_id: owner.to_string(),
        task_id: None,
        kind: "upload".into(),
        parent_id: None,
        content_type: "image/png".into(),
        sha256: web::auth::token_hash(&format!("{}:{}", id, bytes.len())),
        size_bytes: bytes.len() as i64,
        width: 256,
        height: 256,
        saved: true,
        expires_at: None,
    };
    blobs.put(&asset.storage_key, bytes).await.map_err(err)?;
    store.insert_asset(&asset).await.map_err(err)?;
    Ok(id)
}

async fn seed(args: &[String]) -> Res<()> {
    let (store, blobs) = open(arg(args, 1)?, arg(args, 2)?).await?;
    let (owner, n) = (arg(args, 3)?.to_string(), num(args, 4)?);
    // A few writers at once: object writes fsync, rows queue for the writer.
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..8u64 {
        let (store, blobs, owner) = (store.clone(), blobs.clone(), owner.clone());
        writers.spawn(async move {
            for i in (w..n).step_by(8) {
                let mut bytes = vec![0u8; 16 * 1024];
                bytes[..8].copy_from_slice(&i.to_le_bytes());
                put_image(&store, blobs.as_ref(), &owner, bytes).await?;
            }
            Ok::<_, String>(())
        });
    }
    while let Some(r) = writers.join_next().await {
        r.map_err(err)??;
    }
    store.close().await;
    println!("{n} images of 16 KiB seeded");
    Ok(())
}

// ------------------------------------------------------------------ load

/// Tally of the answers to a burst of requests.
#[derive(Debug, Default, PartialEq)]
struct Tally {
    ok: u64,
    /// Status code (0: no answer) → count, for everything that failed.
    failed: BTreeMap<u16, u64>,
}

impl Tally {
    /// A 200 counts only when its body holds as many images as asked for.
    fn record(&mut self, status: u16, body: Option<&Value>, n: usize) {
        let images = body
            .and_then(|b| b["data"].as_array())
            .map_or(0, |d| d.iter().filter(|i| i["b64_json"].as_str().is_some_and(|s| !s.is_empty())).count());
        if status == 200 && images == n {
            self.ok += 1;
        } else {
            *self.failed.entry(status).or_default() += 1;
        }
    }
}

async fn inflight(args: &[String]) -> Res<()> {
    let (url, key, n) = (arg(args, 1)?.trim_end_matches('/').to_string(), arg(args, 2)?.to_string(), num(args, 3)?);
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(600)).build().map_err(err)?;
    let started = Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..n {
        let request = client
            .post(format!("{url}/v1/images/generations"))
            .bearer_auth(&key)
            .json(&json!({ "model": "bench-image", "prompt": format!("a lighthouse at dusk, {i}"), "size": "256x256" }));
        requests.spawn(async move {
            match request.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    (status, r.json::<Value>().await.ok())
                }
                Err(_) => (0, None),
            }
        });
    }
    let mut tally = Tally::default();
    while let Some(answer) = requests.join_next().await {
        let (status, body) = answer.map_err(err)?;
        tally.record(status, body.as_ref(), 1);
    }
    let failed: BTreeMap<String, u64> = tally.failed.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    println!("{}", json!({ "sent": n, "ok": tally.ok, "failed": failed, "seconds": started.elapsed().as_secs_f64() }));
    Ok(())
}

// ------------------------------------------------------------------ queue

async fn queue(args: &[String]) -> Res<()> {
    let (url, n, workers) = (arg(args, 1)?, num(args, 2)?, num(args, 3)?.max(1));
    let master: Arc<dyn vault::MasterKey> = Arc::new(vault::LocalMasterKey::generate());
    let store = Store::connect(url, 8).await.map_err(err)?.with_master_key(master.clone());
    store.migrate().await.map_err(err)?;
    // 100 accounts share the queue, as on a real instance; the per-account
    // running cap is the product's default (4).
    let mut owners = Vec::new();
    for a in 0..100 {
        let user = store
            .create_user(NewUser { email: format!("queue-{a}@example.com"), name: "Queue".into(), password_hash: None, locale: None })
            .await
            .map_err(err)?;
        owners.push(user.id);
    }
    let submitted = Instant::now();
    for i in 0..n as usize {
        store
            .submit_task(NewTask {
                owner_id: owners[i % owners.len()].clone(),
                kind: "generate".into(),
                prompt: format!("queued {i}"),
                params: "{}".into(),
                provider: None,
                model: None,
                cost: 0,
                max_attempts: 3,
                idempotency_key: None,
                request_hash: None,
            })
            .await
            .map_err(err)?;
    }
    let submit_secs = submitted.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut loops = tokio::task::JoinSet::new();
    for w in 0..workers {
        let pool = Store::connect(url, 2)
            .await
            .map_err(err)?
            .with_master_key(master.clone())
            .with_scheduling(store::Scheduling { max_running_per_account: 4 });
        loops.spawn(async move {
            let (me, mut claimed) = (format!("bench-worker-{w}"), Vec::new());
            while let Some(task) = pool.claim_task(&me, 30_000).await.map_err(err)? {
                pool.complete_task(&task.id, &me, &[]).await.map_err(err)?;
                claimed.push(task.id);
            }
            pool.close().await;
            Ok::<_, String>(claimed)
        });
    }
    let (mut total, mut seen) = (0usize, HashSet::new());
    while let Some(r) = loops.join_next().await {
        let ids = r.map_err(err)??;
        total += ids.len();
        seen.extend(ids);
    }
    let secs = started.elapsed().as_secs_f64();
    let left = store.queued_count().await.map_err(err)?;
    store.close().await;
    println!(
        "{}",
        json!({ "tasks": n, "workers": workers, "claimed": total, "distinct": seen.len(), "left_queued": left,
                "submit_per_s": n as f64 / submit_secs, "claims_per_s": total as f64 / secs, "seconds": secs })
    );
    if total != seen.len() || total as u64 != n || left != 0 {
        return Err(format!("{total} claims of {} distinct tasks, {left} left queued, of {n}", seen.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_success_needs_every_image() {
        let mut t = Tally::default();
        t.record(200, Some(&json!({ "data": [{ "b64_json": "iVBO" }] })), 1);
        t.record(200, Some(&json!({ "data": [] })), 1);
        t.record(200, Some(&json!({ "data": [{ "b64_json": "" }] })), 1);
        t.record(503, Some(&json!({ "error": {} })), 1);
        t.record(0, None, 1);
        assert_eq!(t.ok, 1);
        assert_eq!(t.failed, BTreeMap::from([(0, 1), (200, 2), (503, 1)]));
    }
}
