//! A fresh, migrated database per test, cheaply: SQLite in a temp dir, or a
//! PostgreSQL database cloned from a template migrated once per schema.
//!
//! PostgreSQL comes from `ATELIER_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). If it cannot be reached the
//! test fails: the PostgreSQL half of a suite is never skipped silently.

use sqlx::{Connection, Executor, PgConnection};

use crate::migrate::schema_fingerprint;
use crate::{BackendKind, Store};

pub use crate::BackendKind as TestBackend;

pub struct TestDb {
    pub store: Store,
    /// The database's URL, for tests that start a server process on it.
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

pub fn postgres_admin_url() -> String {
    std::env::var("ATELIER_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// Replaces the database name in a PostgreSQL URL.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let cut = base.rfind('/').filter(|&i| i > "postgres://".len()).unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..cut], name);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

fn test_master_key() -> std::sync::Arc<dyn vault::MasterKey> {
    std::sync::Arc::new(vault::LocalMasterKey::generate())
}

pub async fn test_db(kind: TestBackend) -> TestDb {
    match kind {
        BackendKind::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("test.db").display());
            let store = Store::connect(&url, 4).await.expect("open SQLite").with_master_key(test_master_key());
            store.migrate().await.expect("migrate SQLite");
            TestDb { store, url, cleanup: Cleanup::Sqlite(dir) }
        }
        BackendKind::Postgres => {
            let admin_url = postgres_admin_url();
            let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
                panic!("PostgreSQL is required for the store tests and is unreachable at {admin_url}: {e}. Start it or set ATELIER_TEST_POSTGRES_URL.")
            });
            let template = format!("atelier_tpl_{:016x}", schema_fingerprint());
            // One process at a time builds the template and clones from it.
            admin.execute("SELECT pg_advisory_lock(727502)").await.expect("advisory lock");
            let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&template)
                .fetch_one(&mut admin)
                .await
                .expect("query pg_database");
            if !exists {
                let building = format!("{template}_building");
                admin.execute(format!("DROP DATABASE IF EXISTS {building}").as_str()).await.expect("drop stale template");
                admin.execute(format!("CREATE DATABASE {building}").as_str()).await.expect("create template");
                let store = Store::connect(&with_database(&admin_url, &building), 2).await.expect("connect template");
                store.migrate().await.expect("migrate template");
                store.close().await;
                // A closed pool's server sessions may linger for a moment.
                let mut attempts = 0;
                while let Err(e) = admin.execute(format!("ALTER DATABASE {building} RENAME TO {template}").as_str()).await {
                    attempts += 1;
                    assert!(attempts < 50, "rename template: {e}");
                    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
                        .bind(&building)
                        .execute(&mut admin)
                        .await
                        .expect("end lingering sessions");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
            let name = format!("atelier_t_{}", uuid::Uuid::now_v7().simple());
            let created = admin.execute(format!("CREATE DATABASE {name} TEMPLATE {template}").as_str()).await;
            admin.execute("SELECT pg_advisory_unlock(727502)").await.expect("advisory unlock");
            created.expect("clone template database");
            admin.close().await.ok();
            let url = with_database(&admin_url, &name);
            let store = Store::connect(&url, 5).await.expect("connect test database").with_master_key(test_master_key());
            TestDb { store, url, cleanup: Cleanup::Postgres { admin_url, name } }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Cleanup::Postgres { admin_url, name } = &self.cleanup {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs inside the test's runtime; a plain thread with its own
            // runtime may block on the DROP without tripping tokio.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(async {
                    if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                        let _ = admin.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await;
                    }
                });
            })
            .join();
        }
    }
}

/// Every `(table, column)` of the schema, read from the database's own
/// catalogue (`sqlite_master` / `information_schema`), so a table added
/// later is covered without naming it.
pub async fn schema_columns(store: &Store) -> Vec<(String, String)> {
    let sql = match store.kind() {
        BackendKind::Sqlite => {
            "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' ORDER BY m.name, p.cid"
        }
        BackendKind::Postgres => {
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
        }
    };
    crate::with_pool!(store, pool => sqlx::query_as(sql).fetch_all(pool).await.expect("read the schema"))
}

/// For every column of every table, how many rows hold `needle` anywhere in
/// the column's text form; only the non-zero counts.
pub async fn rows_mentioning(store: &Store, needle: &str) -> Vec<(String, String, i64)> {
    let pattern = format!("%{needle}%");
    let mut hits = Vec::new();
    for (table, column) in schema_columns(store).await {
        let sql = format!(r#"SELECT COUNT(*) FROM "{table}" WHERE CAST("{column}" AS TEXT) LIKE $1"#);
        let n: i64 = crate::with_pool!(store, pool => sqlx::query_scalar(&sql).bind(&pattern).fetch_one(pool).await.expect("count rows"));
        if n > 0 {
            hits.push((table, column, n));
        }
    }
    hits
}

/// Writes each named async test case, `async fn NAME(store: Store)`, as two
/// tests: `NAME::sqlite` and `NAME::postgres`.
#[macro_export]
macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let db = $crate::testing::test_db($crate::testing::TestBackend::Sqlite).await;
                    super::$name(db.store.clone()).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let db = $crate::testing::test_db($crate::testing::TestBackend::Postgres).await;
                    super::$name(db.store.clone()).await;
                }
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(with_database("postgres://u@h:5432/test", "x"), "postgres://u@h:5432/x");
        assert_eq!(with_database("postgres://u@h/test?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
        assert_eq!(with_database("postgres://u@h:5432", "x"), "postgres://u@h:5432/x");
    }
}
