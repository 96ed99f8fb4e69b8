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
async fn objects_are_private_files_under_the_root() {
    let (_tmp, store) = store();
    let key = "0190a1b2-c3d4/0190a1b2-ffff.png";
    store.put(key, b"hello".to_vec()).await.unwrap();
    assert_eq!(std::fs::read(store.path_of(key).unwrap()).unwrap(), b"hello");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(store.path_of(key).unwrap()).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "objects are private to the owner: {mode:o}");
    }
}

#[tokio::test]
async fn overwrites_leave_no_temp_files() {
    let (_tmp, store) = store();
    let key = "owner/asset.png";
    for byte in [b'a', b'b', b'c'] {
        store.put(key, vec![byte; 64 * 1024]).await.unwrap();
    }
    assert_eq!(files_on_disk(store.root()), vec!["owner/asset.png".to_string()]);
}

#[tokio::test]
async fn c30_delete_removes_the_file_and_prunes_empty_directories() {
    let (_tmp, store) = store();
    let key = "owner-1/asset-1.png";
    store.put(key, b"secret pixels".to_vec()).await.unwrap();
    store.put("owner-2/asset-2.png", b"keep".to_vec()).await.unwrap();
    let path = store.path_of(key).unwrap();
    store.delete(key).await.unwrap();
    assert!(!path.exists(), "file must be gone as soon as delete returns");
    assert!(!path.parent().unwrap().exists(), "empty owner directory is pruned");
    assert!(store.root().is_dir(), "root is never pruned");
    assert_eq!(files_on_disk(store.root()), vec!["owner-2/asset-2.png".to_string()]);
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
async fn invalid_keys_never_reach_the_disk() {
    let (tmp, store) = store();
    for bad in ["../x", "a/../../b", "/abs", "a//b"] {
        assert_eq!(store.put(bad, b"x".to_vec()).await.unwrap_err().code, ErrorCode::InvalidInput, "{bad}");
        assert_eq!(store.path_of(bad).unwrap_err().code, ErrorCode::InvalidInput);
    }
    assert_eq!(files_on_disk(tmp.path()), Vec::<String>::new());
}

#[tokio::test]
async fn listing_skips_temp_files_of_crashed_puts() {
    let (_tmp, store) = store();
    store.put("a/1.png", b"1".to_vec()).await.unwrap();
    std::fs::write(store.root().join("a/.tmp-123-abc-0"), b"partial").unwrap();
    assert_eq!(store.list_prefix("").await.unwrap(), ["a/1.png"]);
    assert_eq!(store.list_prefix("a/").await.unwrap(), ["a/1.png"]);
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
