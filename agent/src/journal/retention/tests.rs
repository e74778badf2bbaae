use super::*;
use crate::journal::{Change, JobState};
use spillway_proto::{Event, FileEvent, ObjectKey};

fn job(n: u32) -> JobRecord {
    let event = Event::File(FileEvent {
        bucket: "b".into(),
        key: ObjectKey::parse(&format!("k{n}")).expect("key"),
        size: 1,
        mtime_ns: 0,
        sha256: [0; 32],
    });
    let mut r = JobRecord::new(event.job_id("node", "f"), "f".into(), event);
    r.queued_at_ms = u64::from(n);
    r
}

/// Job `n`, finished at `at_ms`.
fn finished(n: u32, at_ms: u64) -> JobRecord {
    let mut r = job(n);
    r.state = JobState::Succeeded { outputs: vec![] };
    r.finished_at_ms = Some(at_ms);
    r
}

fn put(j: &Journal, records: impl IntoIterator<Item = JobRecord>) {
    let changes: Vec<Change> = records.into_iter().map(Change::Put).collect();
    j.stage(&changes).expect("stage");
    j.flush().expect("flush");
}

const KEEP_ALL: Retention = Retention {
    max_age_ms: u64::MAX,
    max_jobs: u64::MAX,
};

#[test]
fn a_restart_and_a_resync_read_their_jobs_through_the_indexes() {
    let dir = tempfile::tempdir().expect("tmp");
    let j = Journal::open(&dir.path().join("j.redb")).expect("open");
    put(&j, (0..100).map(|n| finished(n, 1_000 + u64::from(n))));
    let waiting = job(500);
    put(&j, [waiting.clone()]);
    assert_eq!(j.unfinished().expect("unfinished"), vec![waiting.clone()]);
    let recent: Vec<u64> = j
        .recently_finished(3)
        .expect("recent")
        .iter()
        .filter_map(|r| r.finished_at_ms)
        .collect();
    assert_eq!(recent, [1_099, 1_098, 1_097], "newest first");
    // Moving on moves it between the indexes.
    j.stage(&[
        Change::Move {
            id: waiting.id,
            to: JobState::Running,
            at_ms: 2_000,
        },
        Change::Move {
            id: waiting.id,
            to: JobState::Failed { reason: "x".into() },
            at_ms: 2_001,
        },
    ])
    .expect("stage");
    assert!(j.unfinished().expect("unfinished").is_empty());
    assert_eq!(j.recently_finished(1).expect("recent")[0].id, waiting.id);
    // And back: a retry takes it out of the finished ones.
    j.stage(&[Change::Retry {
        id: waiting.id,
        at_ms: 3_000,
    }])
    .expect("retry");
    assert_eq!(j.unfinished().expect("unfinished").len(), 1);
    assert_ne!(j.recently_finished(1).expect("recent")[0].id, waiting.id);
}

#[test]
fn retention_removes_the_oldest_finished_jobs_by_age_then_by_count_and_nothing_unfinished() {
    let dir = tempfile::tempdir().expect("tmp");
    let j = Journal::open(&dir.path().join("j.redb")).expect("open");
    put(&j, (0..50).map(|n| finished(n, 1_000 * u64::from(n))));
    put(&j, [job(900)]);
    // Older than 10 s at t = 30 s: the jobs that ended at 0..19 s.
    let by_age = Retention {
        max_age_ms: 10_000,
        max_jobs: u64::MAX,
    };
    let removed = j.prune(30_000, by_age, 1_000).expect("prune");
    assert_eq!(removed.len(), 20);
    assert!(removed.contains(&finished(0, 0).id) && !removed.contains(&finished(20, 0).id));
    // Then at most 10, in bounded steps.
    let by_count = Retention {
        max_age_ms: u64::MAX,
        max_jobs: 10,
    };
    assert_eq!(j.prune(30_000, by_count, 15).expect("prune").len(), 15);
    assert_eq!(j.prune(30_000, by_count, 15).expect("prune").len(), 5);
    assert!(j.prune(30_000, by_count, 15).expect("prune").is_empty());
    let left = j.all().expect("all");
    assert_eq!(left.len(), 11, "10 finished and the unfinished one");
    assert!(left.iter().any(|r| r.id == job(900).id));
    assert_eq!(j.recently_finished(100).expect("recent").len(), 10);
    assert!(j.prune(u64::MAX, KEEP_ALL, 100).expect("prune").is_empty());
}

#[test]
fn a_guest_whose_result_the_coordinator_has_not_taken_is_kept() {
    let dir = tempfile::tempdir().expect("tmp");
    let j = Journal::open(&dir.path().join("j.redb")).expect("open");
    let guest = finished(1, 10);
    put(&j, [guest.clone(), finished(2, 20)]);
    j.stage(&[Change::Guest(
        guest.id,
        Guest {
            origin: "pi-2".into(),
            attempt: 1,
            dir: "/x".into(),
            acked: false,
        },
    )])
    .expect("guest");
    let all_of_them = Retention {
        max_age_ms: 0,
        max_jobs: 0,
    };
    let removed = j.prune(1_000, all_of_them, 100).expect("prune");
    assert_eq!(removed, [finished(2, 20).id]);
    assert!(j.get(guest.id).expect("get").is_some());
    j.stage(&[Change::GuestAcked(guest.id)]).expect("ack");
    assert_eq!(j.prune(1_000, all_of_them, 100).expect("prune"), [guest.id]);
}

#[test]
fn a_journal_from_before_the_indexes_gets_them_when_opened() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("j.redb");
    {
        // Written as an older agent did: records only.
        let db = redb::Database::create(&path).expect("db");
        let txn = db.begin_write().expect("txn");
        {
            let mut jobs = txn.open_table(JOBS).expect("jobs");
            for r in [finished(1, 10), job(2)] {
                jobs.insert(
                    r.id.as_bytes().as_slice(),
                    super::super::encode(&r).as_slice(),
                )
                .expect("insert");
            }
        }
        txn.commit().expect("commit");
    }
    let j = Journal::open(&path).expect("open");
    assert_eq!(j.unfinished().expect("unfinished"), vec![job(2)]);
    assert_eq!(
        j.recently_finished(5).expect("recent"),
        vec![finished(1, 10)]
    );
}

#[test]
fn compaction_gives_the_space_of_pruned_jobs_back() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("j.redb");
    let mut j = Journal::open(&path).expect("open");
    for chunk in 0..20u32 {
        put(
            &j,
            (0..1_000).map(|n| finished(chunk * 1_000 + n, u64::from(n))),
        );
    }
    let before = std::fs::metadata(&path).expect("meta").len();
    let none = Retention {
        max_age_ms: u64::MAX,
        max_jobs: 100,
    };
    while !j.prune(1, none, 5_000).expect("prune").is_empty() {}
    j.flush().expect("flush");
    j.compact().expect("compact");
    let after = std::fs::metadata(&path).expect("meta").len();
    assert!(after * 4 < before, "{before} bytes -> {after}");
    assert_eq!(j.recently_finished(1_000).expect("recent").len(), 100);
}

fn seen(count: u64, at_ms: u64) -> super::super::MessageSeen {
    super::super::MessageSeen {
        count,
        packet_id: 1,
        connection: 1,
        seen_at_ms: at_ms,
    }
}

fn message_key(n: u8) -> Vec<u8> {
    vec![n; 65]
}

#[test]
fn remembered_messages_go_by_age_and_count_and_their_occurrences_are_never_reused() {
    let dir = tempfile::tempdir().expect("tmp");
    let j = Journal::open(&dir.path().join("j.redb")).expect("open");
    let changes: Vec<Change> = (0..10u8)
        .map(|n| Change::SeenMessage(message_key(n), seen(u64::from(n) + 1, 1_000 * u64::from(n))))
        .collect();
    j.stage(&changes).expect("stage");
    // Seen again later: its time moves, so age counts from the last sighting.
    j.stage(&[Change::SeenMessage(message_key(0), seen(2, 9_500))])
        .expect("again");
    j.flush().expect("flush");
    // Last seen before 5,000 ms: messages 1 to 4 go (0 was seen again at 9,500).
    let age = Retention {
        max_age_ms: 5_000,
        max_jobs: u64::MAX,
    };
    j.prune(10_000, age, 100).expect("prune");
    let left: Vec<u8> = (0..10u8)
        .filter(|n| j.message_seen(&message_key(*n)).expect("read").0.is_some())
        .collect();
    assert_eq!(left, [0, 5, 6, 7, 8, 9]);
    // The highest occurrence removed (message 4's fifth) is the floor for what comes back.
    assert_eq!(j.message_seen(&message_key(4)).expect("read"), (None, 5));
    // By count: the oldest beyond 3 go.
    let count = Retention {
        max_age_ms: u64::MAX,
        max_jobs: 3,
    };
    j.prune(10_000, count, 100).expect("prune");
    let left: Vec<u8> = (0..10u8)
        .filter(|n| j.message_seen(&message_key(*n)).expect("read").0.is_some())
        .collect();
    assert_eq!(left, [0, 8, 9]);
    assert_eq!(j.message_seen(&message_key(7)).expect("read").1, 8);
}

#[test]
fn messages_remembered_by_an_older_agent_are_read_and_indexed_when_opened() {
    #[derive(serde::Serialize)]
    struct Old {
        count: u64,
        packet_id: u16,
        connection: u64,
    }
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("j.redb");
    {
        let db = redb::Database::create(&path).expect("db");
        let txn = db.begin_write().expect("txn");
        {
            let mut messages = txn.open_table(MESSAGES).expect("messages");
            let old = Old {
                count: 4,
                packet_id: 9,
                connection: 77,
            };
            messages
                .insert(
                    message_key(1).as_slice(),
                    super::super::encode(&old).as_slice(),
                )
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    let j = Journal::open(&path).expect("open");
    let (read, floor) = j.message_seen(&message_key(1)).expect("read");
    let read = read.expect("remembered");
    assert_eq!(
        (read.count, read.packet_id, read.connection, read.seen_at_ms),
        (4, 9, 77, 0)
    );
    assert_eq!(floor, 0);
    // Indexed as the oldest: the first to go.
    let age = Retention {
        max_age_ms: 1,
        max_jobs: u64::MAX,
    };
    j.prune(10, age, 100).expect("prune");
    assert_eq!(j.message_seen(&message_key(1)).expect("read"), (None, 4));
}
