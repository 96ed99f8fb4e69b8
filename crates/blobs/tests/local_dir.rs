use std::sync::Arc;

use blobs::{validate_key, BlobStore, LocalDirStore};
use domain::ErrorCode;

fn store() -> (tempfile::TempDir, LocalDirStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDirStore::new(dir.path().join("objects")).unwrap();
    (dir, store)
}

/// Every file under `dir`, relative, including hidden ones.
fn files_on_disk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn round_trip_through_the_trait_object() {
    let (_tmp, local) = store();
    let store: Arc<dyn BlobStore> = Arc::new(local.clone());
    let key = "0190a1b2-c3d4/0190a1b2-ffff.png";
    assert_eq!(store.get(key).await.unwrap(), None);
    assert!(!store.exists(key).await.unwrap());
    store.put(key, b"hello".to_vec()).await.unwrap();
    assert!(store.exists(key).await.unwrap());
    assert_eq!(store.get(key).await.unwrap().as_deref(), Some(&b"hello"[..]));
    assert_eq!(std::fs::read(local.path_of(key).unwrap()).unwrap(), b"hello");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(local.path_of(key).unwrap()).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "objects are private to the owner: {mode:o}");
    }
    // Empty objects are objects too.
    store.put("o/empty", Vec::new()).await.unwrap();
    assert_eq!(store.get("o/empty").await.unwrap(), Some(Vec::new()));
}

#[tokio::test]
async fn overwrite_is_atomic_and_leaves_no_temp_files() {
    let (_tmp, store) = store();
    let store = Arc::new(store);
    let key = "owner/asset.png";
    let (a, b) = (vec![b'a'; 256 * 1024], vec![b'b'; 300 * 1024]);
    store.put(key, a.clone()).await.unwrap();

    // Readers racing with overwrites see either the old or the new object, whole.
    let writer = {
        let (store, a, b) = (store.clone(), a.clone(), b.clone());
        tokio::spawn(async move {
            for i in 0..20 {
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
    assert_eq!(files_on_disk(store.root()), vec!["owner/asset.png".to_string()]);
}

#[tokio::test]
async fn c30_delete_removes_file_from_disk_at_once() {
    let (_tmp, store) = store();
    let key = "owner-1/asset-1.png";
    let other = "owner-2/asset-2.png";
    store.put(key, b"secret pixels".to_vec()).await.unwrap();
    store.put(other, b"keep".to_vec()).await.unwrap();
    let path = store.path_of(key).unwrap();
    assert!(path.is_file());

    store.delete(key).await.unwrap();
    assert!(!path.exists(), "file must be gone as soon as delete returns");
    assert!(!path.parent().unwrap().exists(), "empty owner directory is pruned");
    assert!(store.root().is_dir(), "root is never pruned");
    assert_eq!(store.get(key).await.unwrap(), None);
    assert!(!store.exists(key).await.unwrap());
    assert_eq!(files_on_disk(store.root()), vec!["owner-2/asset-2.png".to_string()]);

    // Idempotent.
    store.delete(key).await.unwrap();
    store.delete("never/existed.png").await.unwrap();
}

#[test]
fn key_validation_rejects_traversal_and_odd_keys() {
    for bad in ["../x", "a/../../b", "/abs", "a//b", "", "a/", ".", "..", "a/./b", "a/..", ".tmp-1", "a b", "a\\b", "a/b\0", "ключ", "C:x"]
    {
        let err = validate_key(bad).expect_err(bad);
        assert_eq!(err.code, ErrorCode::InvalidInput, "{bad}");
    }
    assert!(validate_key(&"a".repeat(513)).is_err());
    assert!(validate_key(&"a".repeat(512)).is_ok());
    for good in ["a", "owner/asset.png", "0190a1b2-c3d4-7e5f/a_b-c.v2.png", "a/b/c/d"] {
        validate_key(good).expect(good);
    }
}

#[tokio::test]
async fn store_operations_reject_invalid_keys() {
    let (tmp, store) = store();
    for bad in ["../x", "a/../../b", "/abs", "a//b"] {
        assert_eq!(store.put(bad, b"x".to_vec()).await.unwrap_err().code, ErrorCode::InvalidInput, "{bad}");
        assert_eq!(store.get(bad).await.unwrap_err().code, ErrorCode::InvalidInput);
        assert_eq!(store.delete(bad).await.unwrap_err().code, ErrorCode::InvalidInput);
        assert_eq!(store.exists(bad).await.unwrap_err().code, ErrorCode::InvalidInput);
        assert_eq!(store.path_of(bad).unwrap_err().code, ErrorCode::InvalidInput);
    }
    assert_eq!(store.list_prefix("../").await.unwrap_err().code, ErrorCode::InvalidInput);
    assert_eq!(store.list_prefix("/").await.unwrap_err().code, ErrorCode::InvalidInput);
    // Nothing escaped the root.
    assert_eq!(files_on_disk(tmp.path()), Vec::<String>::new());
}

#[tokio::test]
async fn list_by_prefix_is_sorted_and_skips_temp_files() {
    let (_tmp, store) = store();
    for key in ["b/2.png", "a/2.png", "a/1.png", "ab/1.png", "a/sub/3.png", "c.png"] {
        store.put(key, key.as_bytes().to_vec()).await.unwrap();
    }
    // A leftover temp file from a crashed put is never listed.
    std::fs::write(store.root().join("a/.tmp-123-abc-0"), b"partial").unwrap();

    let all = store.list_prefix("").await.unwrap();
    assert_eq!(all, ["a/1.png", "a/2.png", "a/sub/3.png", "ab/1.png", "b/2.png", "c.png"]);
    assert_eq!(store.list_prefix("a/").await.unwrap(), ["a/1.png", "a/2.png", "a/sub/3.png"]);
    assert_eq!(store.list_prefix("a").await.unwrap(), ["a/1.png", "a/2.png", "a/sub/3.png", "ab/1.png"]);
    assert_eq!(store.list_prefix("a/s").await.unwrap(), ["a/sub/3.png"]);
    assert_eq!(store.list_prefix("a/1").await.unwrap(), ["a/1.png"]);
    assert!(store.list_prefix("zzz/").await.unwrap().is_empty());
    assert!(store.list_prefix("c.png/").await.unwrap().is_empty());
}

#[tokio::test]
async fn storage_errors_do_not_leak_paths() {
    let (_tmp, store) = store();
    // A file where a directory must go makes the put fail inside the store.
    store.put("owner", b"x".to_vec()).await.unwrap();
    let err = store.put("owner/asset.png", b"y".to_vec()).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Internal);
    let root = store.root().to_string_lossy().into_owned();
    assert!(!err.message.contains(&root) && !err.message.contains("owner"), "{}", err.message);
    // Reading a key whose parent is a file is simply missing.
    assert_eq!(store.get("owner/asset.png").await.unwrap(), None);
}
