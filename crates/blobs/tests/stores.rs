//! The behaviour every object store promises, run on local disk and on a
//! real S3-compatible server process (moto). Disk-only details (file modes,
//! temp files, directory pruning) are in local_dir.rs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use blobs::testing::S3Server;
use blobs::{BlobStore, BoxFuture, Encrypted, LocalDirStore, S3Store, StorageConfig};
use domain::{ErrorCode, Result};
use vault::{DataKey, DataKeys};

/// One store under test and whatever keeps it alive.
struct Backend {
    store: Arc<dyn BlobStore>,
    _dir: Option<tempfile::TempDir>,
    _server: Option<S3Server>,
}

fn local() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDirStore::new(dir.path().join("objects")).unwrap();
    Backend { store: Arc::new(store), _dir: Some(dir), _server: None }
}

/// Parts of the smallest size S3 accepts, so the large-object test uploads
/// in several parts.
fn s3() -> Backend {
    let server = S3Server::start();
    let config = StorageConfig { multipart_part_bytes: 5 << 20, ..server.bucket() };
    Backend { store: Arc::new(S3Store::new(&config).unwrap()), _dir: None, _server: Some(server) }
}

/// Runs each test body on both backends.
macro_rules! blob_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn local() {
                    let backend = super::local();
                    super::$name(backend.store.clone()).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn s3() {
                    let backend = super::s3();
                    super::$name(backend.store.clone()).await;
                }
            }
        )*
    };
}

blob_tests!(
    round_trip_through_the_trait_object,
    overwrite_is_atomic,
    c30_delete_removes_the_object_at_once,
    operations_reject_invalid_keys,
    list_by_prefix_is_a_sorted_string_prefix,
    large_objects_round_trip_in_parts,
    c27_objects_are_sealed_with_the_owners_key,
);

async fn round_trip_through_the_trait_object(store: Arc<dyn BlobStore>) {
    let key = "0190a1b2-c3d4/0190a1b2-ffff.png";
    assert_eq!(store.get(key).await.unwrap(), None);
    assert!(!store.exists(key).await.unwrap());
    store.put(key, b"hello".to_vec()).await.unwrap();
    assert!(store.exists(key).await.unwrap());
    assert_eq!(store.get(key).await.unwrap().as_deref(), Some(&b"hello"[..]));
    // Empty objects are objects too.
    store.put("o/empty", Vec::new()).await.unwrap();
    assert_eq!(store.get("o/empty").await.unwrap(), Some(Vec::new()));
    // A key that is only a prefix of other keys is not an object.
    assert_eq!(store.get("0190a1b2-c3d4").await.unwrap(), None);
    assert!(!store.exists("0190a1b2-c3d4").await.unwrap());
}

async fn overwrite_is_atomic(store: Arc<dyn BlobStore>) {
    let key = "owner/asset.png";
    let (a, b) = (vec![b'a'; 256 * 1024], vec![b'b'; 300 * 1024]);
    store.put(key, a.clone()).await.unwrap();
    // Readers racing with overwrites see either the old or the new object, whole.
    let writer = {
        let (store, a, b) = (store.clone(), a.clone(), b.clone());
        tokio::spawn(async move {
            for i in 0..10 {
                store.put(key, if i % 2 == 0 { b.clone() } else { a.clone() }).await.unwrap();
            }
        })
    };
    while !writer.is_finished() {
        let got = store.get(key).await.unwrap().unwrap();
        assert!(got == a || got == b, "torn read of {} bytes", got.len());
    }
    writer.await.unwrap();
    assert_eq!(store.get(key).await.unwrap().unwrap(), a);
    assert_eq!(store.list_prefix("").await.unwrap(), [key], "no temp objects are visible");
}

async fn c30_delete_removes_the_object_at_once(store: Arc<dyn BlobStore>) {
    let (key, other) = ("owner-1/asset-1.png", "owner-2/asset-2.png");
    store.put(key, b"secret pixels".to_vec()).await.unwrap();
    store.put(other, b"keep".to_vec()).await.unwrap();
    store.delete(key).await.unwrap();
    assert_eq!(store.get(key).await.unwrap(), None, "gone as soon as delete returns");
    assert!(!store.exists(key).await.unwrap());
    assert!(store.list_prefix("owner-1/").await.unwrap().is_empty());
    assert_eq!(store.list_prefix("").await.unwrap(), [other]);
    // Idempotent.
    store.delete(key).await.unwrap();
    store.delete("never/existed.png").await.unwrap();
}

async fn operations_reject_invalid_keys(store: Arc<dyn BlobStore>) {
    for bad in ["../x", "a/../../b", "/abs", "a//b", "a/", ".tmp-1", "a b"] {
        assert_eq!(store.put(bad, b"x".to_vec()).await.unwrap_err().code, ErrorCode::InvalidInput, "{bad}");
        assert_eq!(store.get(bad).await.unwrap_err().code, ErrorCode::InvalidInput);
        assert_eq!(store.delete(bad).await.unwrap_err().code, ErrorCode::InvalidInput);
        assert_eq!(store.exists(bad).await.unwrap_err().code, ErrorCode::InvalidInput);
    }
    assert_eq!(store.list_prefix("../").await.unwrap_err().code, ErrorCode::InvalidInput);
    assert_eq!(store.list_prefix("/").await.unwrap_err().code, ErrorCode::InvalidInput);
    assert!(store.list_prefix("").await.unwrap().is_empty(), "nothing was written");
}

async fn list_by_prefix_is_a_sorted_string_prefix(store: Arc<dyn BlobStore>) {
    for key in ["b/2.png", "a/2.png", "a/1.png", "ab/1.png", "a/sub/3.png", "c.png"] {
        store.put(key, key.as_bytes().to_vec()).await.unwrap();
    }
    let all = store.list_prefix("").await.unwrap();
    assert_eq!(all, ["a/1.png", "a/2.png", "a/sub/3.png", "ab/1.png", "b/2.png", "c.png"]);
    assert_eq!(store.list_prefix("a/").await.unwrap(), ["a/1.png", "a/2.png", "a/sub/3.png"]);
    assert_eq!(store.list_prefix("a").await.unwrap(), ["a/1.png", "a/2.png", "a/sub/3.png", "ab/1.png"]);
    assert_eq!(store.list_prefix("a/s").await.unwrap(), ["a/sub/3.png"]);
    assert_eq!(store.list_prefix("a/1").await.unwrap(), ["a/1.png"]);
    assert!(store.list_prefix("zzz/").await.unwrap().is_empty());
    assert!(store.list_prefix("c.png/").await.unwrap().is_empty());
}

async fn large_objects_round_trip_in_parts(store: Arc<dyn BlobStore>) {
    // 12 MiB of varied bytes: three parts of at most 5 MiB on S3.
    let big: Vec<u8> = (0..12u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    store.put("owner/big.png", big.clone()).await.unwrap();
    assert!(store.get("owner/big.png").await.unwrap().unwrap() == big, "the object comes back byte for byte");
    assert_eq!(store.list_prefix("owner/").await.unwrap(), ["owner/big.png"]);
}

/// Data keys held in memory, one per owner.
#[derive(Default)]
struct Keys(Mutex<HashMap<String, Arc<DataKey>>>);

impl DataKeys for Keys {
    fn data_key<'a>(&'a self, owner_id: &'a str) -> BoxFuture<'a, Result<Arc<DataKey>>> {
        Box::pin(
            async move { Ok(self.0.lock().unwrap().entry(owner_id.to_string()).or_insert_with(|| Arc::new(DataKey::generate())).clone()) },
        )
    }
}

async fn c27_objects_are_sealed_with_the_owners_key(inner: Arc<dyn BlobStore>) {
    let sealed = Encrypted::new(inner.clone(), Arc::new(Keys::default()));
    let (owner, other) = (domain::ids::new_id(), domain::ids::new_id());
    let key = format!("{owner}/{}.png", domain::ids::new_id());
    let pixels = b"\x89PNG secret pixels".to_vec();
    sealed.put(&key, pixels.clone()).await.unwrap();
    let stored = inner.get(&key).await.unwrap().unwrap();
    assert!(!stored.windows(13).any(|w| w == b"secret pixels"), "only ciphertext reaches the store");
    assert_eq!(sealed.get(&key).await.unwrap(), Some(pixels));
    assert_eq!(sealed.list_prefix(&format!("{owner}/")).await.unwrap(), [key.clone()]);
    // Copied under another account, the object does not open.
    let copy = format!("{other}/{}.png", domain::ids::new_id());
    inner.put(&copy, stored).await.unwrap();
    assert!(sealed.get(&copy).await.is_err());
}
