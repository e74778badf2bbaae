//! Group commit of hand-over records.
//!
//! Every hand-over change must be on disk before the messages that depend on it leave. Doing
//! that with one fsynced commit per change, under the hand-over lock, capped the coordinator at
//! one change per fsync. Instead the lock holder queues the change's records together with what
//! may only happen once they are durable (an [`Entry`]) and goes on. One thread takes everything
//! queued while its last fsync ran, writes it in one durable transaction, and then runs the
//! entries' follow-ups in the order they were queued. So one fsync covers every change that
//! arrived meanwhile, no fsync happens under the lock, and messages still leave in ledger order.
//! An entry without records waits its turn too: a message re-sent to a reconnecting peer must
//! not overtake the record it depends on.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use redb::{Database, Durability};

use super::{HANDOVERS, StoreError};

/// The most entries one transaction takes, so a flood still gets answers in bounded time.
const MAX_BATCH: usize = 4096;

/// What happens once an entry's records are durable, or could not be made so.
pub type Then = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// One change: records to write (key → encoded row, `None` removes it) and its follow-up.
struct Entry {
    records: Vec<(String, Option<Vec<u8>>)>,
    then: Then,
}

/// Counters for `/metrics`: their ratio is the mean number of records per fsync.
#[derive(Debug, Default)]
struct JournalStats {
    commits: AtomicU64,
    records: AtomicU64,
}

/// The queue and the thread that commits it. Dropping it commits what is queued and waits for
/// the thread, so the database is closed when the owning store is gone.
pub struct Journal {
    tx: Option<mpsc::Sender<Entry>>,
    committer: Option<JoinHandle<()>>,
    stats: Arc<JournalStats>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Journal {
    pub fn start(db: Arc<Database>) -> Self {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(JournalStats::default());
        let counters = stats.clone();
        let committer = std::thread::Builder::new()
            .name("handover-journal".into())
            .spawn(move || run(&db, &rx, &counters))
            .ok();
        Self {
            tx: committer.is_some().then_some(tx),
            committer,
            stats,
        }
    }

    /// Queues records and what happens once they are durable. Never blocks.
    pub fn queue(&self, records: Vec<(String, Option<Vec<u8>>)>, then: Then) {
        let entry = Entry { records, then };
        let refused = match &self.tx {
            Some(tx) => tx.send(entry).err().map(|e| e.0),
            None => Some(entry),
        };
        if let Some(entry) = refused {
            (entry.then)(Err(StoreError::Db(
                "the hand-over journal's thread is not running (the coordinator is stopping, or \
                 could not start a thread); restart the coordinator"
                    .into(),
            )));
        }
    }

    /// How many durable commits the journal made, and how many records they held.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.stats.commits.load(Ordering::Relaxed),
            self.stats.records.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
    }
}

fn run(db: &Database, rx: &mpsc::Receiver<Entry>, stats: &JournalStats) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let records: usize = batch.iter().map(|e| e.records.len()).sum();
        let result = if records == 0 {
            Ok(())
        } else {
            commit(db, &batch)
        };
        match &result {
            Ok(()) if records > 0 => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats.records.fetch_add(records as u64, Ordering::Relaxed);
            }
            Ok(()) => {}
            Err(e) => {
                let jobs: Vec<&str> = batch
                    .iter()
                    .flat_map(|entry| entry.records.iter().map(|(key, _)| key.as_str()))
                    .collect();
                tracing::error!(
                    ?jobs,
                    "cannot write hand-over records; what depends on them is held back: {e}"
                );
            }
        }
        for entry in batch {
            let result = result.clone();
            // A follow-up that panics must not take the thread, and every later change, with it.
            if std::panic::catch_unwind(AssertUnwindSafe(|| (entry.then)(result))).is_err() {
                tracing::error!("a hand-over follow-up panicked; the journal goes on");
            }
        }
    }
}

/// Writes a batch in one durable transaction, in queue order (a later record of a job wins).
fn commit(db: &Database, batch: &[Entry]) -> Result<(), StoreError> {
    let mut tx = db.begin_write()?;
    tx.set_durability(Durability::Immediate)?;
    {
        let mut table = tx.open_table(HANDOVERS)?;
        for (key, value) in batch.iter().flat_map(|e| &e.records) {
            match value {
                Some(v) => {
                    table.insert(key.as_str(), v.as_slice())?;
                }
                None => {
                    table.remove(key.as_str())?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::Receiver;
    use std::time::Duration;

    use redb::ReadableDatabase;

    use super::*;

    fn db() -> (tempfile::TempDir, Arc<Database>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::create(dir.path().join("j.redb")).expect("db");
        let tx = db.begin_write().expect("write");
        tx.open_table(HANDOVERS).expect("table");
        tx.commit().expect("commit");
        (dir, Arc::new(db))
    }

    fn read(db: &Database, key: &str) -> Option<Vec<u8>> {
        let tx = db.begin_read().expect("read");
        let t = tx.open_table(HANDOVERS).expect("table");
        t.get(key).expect("get").map(|v| v.value().to_vec())
    }

    fn put(key: &str, value: &str) -> Vec<(String, Option<Vec<u8>>)> {
        vec![(key.into(), Some(value.as_bytes().to_vec()))]
    }

    /// Queues an entry whose follow-up reports `name` and what `key` holds on disk by then.
    fn queue(
        j: &Journal,
        db: &Arc<Database>,
        records: Vec<(String, Option<Vec<u8>>)>,
        key: &str,
        name: &str,
        done: &mpsc::Sender<(String, Option<Vec<u8>>)>,
    ) {
        let (db, key, name, done) = (db.clone(), key.to_owned(), name.to_owned(), done.clone());
        j.queue(
            records,
            Box::new(move |r| {
                r.expect("committed");
                let _ = done.send((name, read(&db, &key)));
            }),
        );
    }

    fn take(rx: &Receiver<(String, Option<Vec<u8>>)>, n: usize) -> Vec<(String, Option<Vec<u8>>)> {
        (0..n)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).expect("follow-up"))
            .collect()
    }

    #[test]
    fn follow_ups_run_after_their_records_are_on_disk_and_in_queue_order() {
        let (_dir, db) = db();
        let j = Journal::start(db.clone());
        let (done, rx) = mpsc::channel();
        queue(&j, &db, put("a", "1"), "a", "first", &done);
        // No records of its own, but it must not overtake the record before it.
        queue(&j, &db, vec![], "a", "resend", &done);
        let mut both = put("a", "2");
        both.extend(put("z", "0"));
        queue(&j, &db, both, "a", "second", &done);
        queue(&j, &db, vec![("z".into(), None)], "z", "forget", &done);
        let seen = take(&rx, 4);
        let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["first", "resend", "second", "forget"]);
        // Each follow-up sees its own record or a later one (they may share the commit).
        assert!(seen[0].1.is_some());
        assert!(seen[1].1.is_some());
        assert_eq!(seen[2].1.as_deref(), Some(&b"2"[..]));
        assert_eq!(seen[3].1, None);
        assert_eq!(
            read(&db, "a").as_deref(),
            Some(&b"2"[..]),
            "a later record wins"
        );
        assert_eq!(read(&db, "z"), None);
    }

    #[test]
    fn changes_queued_during_a_commit_share_the_next_one_and_wait_for_it() {
        let (_dir, db) = db();
        let j = Journal::start(db.clone());
        let (done, rx) = mpsc::channel();
        // Holding the write lock stalls the committer as a slow fsync would.
        let blocker = db.begin_write().expect("write");
        for i in 0..50 {
            let key = format!("job-{i}");
            queue(&j, &db, put(&key, "placed"), &key, &key, &done);
        }
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            rx.try_recv().is_err(),
            "no follow-up may run before its record is durable"
        );
        drop(blocker);
        let seen = take(&rx, 50);
        assert!(
            seen.iter()
                .all(|(_, v)| v.as_deref() == Some(&b"placed"[..]))
        );
        let (commits, records) = j.stats();
        assert_eq!(records, 50);
        assert!(commits <= 2, "50 changes took {commits} commits");
    }

    #[test]
    fn changes_from_many_threads_all_land_each_thread_in_its_order() {
        let (_dir, db) = db();
        let j = Arc::new(Journal::start(db.clone()));
        let (done, rx) = mpsc::channel();
        std::thread::scope(|s| {
            for t in 0..4 {
                let (j, db, done) = (j.clone(), db.clone(), done.clone());
                s.spawn(move || {
                    for i in 0..100 {
                        let key = format!("t{t}");
                        let name = format!("{t}:{i}");
                        queue(&j, &db, put(&key, &i.to_string()), &key, &name, &done);
                    }
                });
            }
        });
        let seen = take(&rx, 400);
        for t in 0..4 {
            let order: Vec<u32> = seen
                .iter()
                .filter_map(|(n, _)| n.strip_prefix(&format!("{t}:"))?.parse().ok())
                .collect();
            assert_eq!(order, (0..100).collect::<Vec<_>>());
            assert_eq!(read(&db, &format!("t{t}")).as_deref(), Some(&b"99"[..]));
        }
        let (commits, _) = j.stats();
        assert!((1..=400).contains(&commits));
    }

    #[test]
    fn dropping_the_journal_writes_what_is_queued_and_closes_the_database() {
        let (dir, db) = db();
        let j = Journal::start(db.clone());
        for i in 0..20 {
            j.queue(put(&format!("job-{i}"), "x"), Box::new(|_| {}));
        }
        drop(db);
        drop(j);
        // The committer's handle was the last: the file opens again.
        let db = Database::create(dir.path().join("j.redb")).expect("reopen");
        assert!((0..20).all(|i| read(&db, &format!("job-{i}")).is_some()));
    }

    #[test]
    fn a_panicking_follow_up_does_not_stop_the_journal() {
        let (_dir, db) = db();
        let j = Journal::start(db.clone());
        let (done, rx) = mpsc::channel();
        j.queue(put("a", "1"), Box::new(|_| panic!("follow-up bug")));
        queue(&j, &db, put("b", "1"), "b", "after", &done);
        assert_eq!(take(&rx, 1)[0].1.as_deref(), Some(&b"1"[..]));
    }
}
