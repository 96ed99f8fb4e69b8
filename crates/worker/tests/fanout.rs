//! Hub events between two nodes through PostgreSQL LISTEN/NOTIFY (each
//! node's hub has its own sender and listener connection on one database).

use std::time::{Duration, Instant};

use store::testing::{test_db, TestBackend};
use tokio::sync::watch;
use worker::{fanout, PartialFrame, TaskHub};

fn frame(partial_index: u32) -> PartialFrame {
    PartialFrame {
        task_id: domain::ids::new_id(),
        owner_id: domain::ids::new_id(),
        image_index: 0,
        partial_index,
        width: 256,
        height: 256,
        // Far more than one NOTIFY carries.
        b64: "iVBORw0KGgo".repeat(6_000),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_frames_published_on_one_node_reach_listeners_on_another() {
    let db = test_db(TestBackend::Postgres).await;
    let (_stop, stopped) = watch::channel(false);
    let node1 = fanout::connect(&db.store, TaskHub::default(), stopped.clone()).await;
    let node2 = fanout::connect(&db.store, TaskHub::default(), stopped.clone()).await;
    let mut heard_on_2 = node2.subscribe_partials();
    let mut heard_on_1 = node1.subscribe_partials();

    // The listeners connect in the background: publish until one arrives.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut published = Vec::new();
    let got = loop {
        let sent = frame(published.len() as u32);
        published.push(sent.clone());
        node1.partial(sent.clone());
        assert_eq!(*heard_on_1.recv().await.unwrap(), sent, "delivered on its own node at once");
        if let Ok(Ok(got)) = tokio::time::timeout(Duration::from_millis(500), heard_on_2.recv()).await {
            break got;
        }
        assert!(Instant::now() < deadline, "no frame crossed nodes");
    };
    assert!(published.contains(&got), "joined whole from its parts");
    // Its own NOTIFY does not come back to node 1 a second time.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(heard_on_1.try_recv().is_err());
}

#[tokio::test]
async fn on_sqlite_the_hub_stays_in_process() {
    let db = test_db(TestBackend::Sqlite).await;
    let (_stop, stopped) = watch::channel(false);
    let hub = fanout::connect(&db.store, TaskHub::default(), stopped).await;
    let mut heard = hub.subscribe_partials();
    hub.partial(frame(0));
    assert_eq!(heard.recv().await.unwrap().partial_index, 0);
    assert!(db.store.listen(fanout::CHANNEL).await.unwrap().is_none());
}
