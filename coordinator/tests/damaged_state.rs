//! A coordinator whose state is damaged refuses to start, says what to do, and leaves the file
//! as it was for a restore: a table read as empty would otherwise push an empty deployment and
//! take every node's functions away.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use redb::ReadableDatabase;
use spillway_coordinator::config::CoordinatorConfig;
use spillway_coordinator::server::Coordinator;

fn config(dir: &std::path::Path) -> CoordinatorConfig {
    CoordinatorConfig {
        state_dir: dir.join("coordinator"),
        quic_listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        ..CoordinatorConfig::default()
    }
}

async fn refusal(config: CoordinatorConfig) -> String {
    match Coordinator::start(config).await {
        Ok(_) => panic!("a coordinator started on damaged state"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_file_that_is_not_one_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    std::fs::create_dir_all(&config.state_dir).unwrap();
    let garbage: Vec<u8> = (0..65_536u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(config.store_path(), &garbage).unwrap();
    let why = refusal(config.clone()).await;
    assert!(
        why.contains("damaged or not a Spillway state") && why.contains("restore"),
        "{why}"
    );
    assert_eq!(std::fs::read(config.store_path()).unwrap(), garbage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_function_record_refuses_the_start_and_stays_for_a_restore() {
    const FUNCTIONS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("functions");
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    std::fs::create_dir_all(&config.state_dir).unwrap();
    {
        let db = redb::Database::create(config.store_path()).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(FUNCTIONS)
            .unwrap()
            .insert("thumbnail", &b"{\"name\": \"thumbnail\", half a rec"[..])
            .unwrap();
        tx.commit().unwrap();
    }
    let why = refusal(config.clone()).await;
    assert!(
        why.contains("unreadable record in `functions`")
            && why.contains("every node's functions away"),
        "{why}"
    );
    // The record is still there, as it was.
    let db = redb::Database::create(config.store_path()).unwrap();
    let tx = db.begin_read().unwrap();
    let kept = tx.open_table(FUNCTIONS).unwrap();
    assert_eq!(
        kept.get("thumbnail").unwrap().unwrap().value(),
        &b"{\"name\": \"thumbnail\", half a rec"[..]
    );
}
