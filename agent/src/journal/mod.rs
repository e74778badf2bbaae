//! The agent's durable job journal (redb). Every state change of a job is committed here
//! before the agent acts on it; after a crash the journal is the whole truth.
//!
//! Group commit: the engine stages each plan's changes in a commit of its own that is not yet
//! durable (no fsync; later reads see it), and makes everything staged durable with one fsynced
//! commit ([`Journal::flush`]) before it carries out any of those plans' acts. So one fsync
//! covers whatever arrived while the last one ran, and nothing is acted on, acknowledged or
//! started before it is on disk. A crash loses only staged changes nobody has seen the effects
//! of: the broker re-sends the messages, inotify's rescan finds the files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use spillway_proto::{Event, JobId, ObjectKey};

/// Job id → encoded [`JobRecord`].
const JOBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("jobs");
/// `function \0 bucket/key` → (size, mtime, job id): lets a rescan skip hashing unchanged files.
const FILES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("files");
/// Job id → [`Guest`]: jobs another node handed over, placed here by the coordinator.
const GUESTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("guests");
/// Job id → why it came back: jobs the coordinator returned, never offered again.
const RETURNED: TableDefinition<&[u8], &str> = TableDefinition::new("returned");
/// MQTT messages seen, by topic and payload hash: how many, and the last one's delivery.
const MESSAGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("messages");
/// `bucket/key` → [`WriteStamp`]: which write of a file was seen last, so that every new write
/// is a new job and a rescan of the same write is not.
const WRITES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("writes");

mod retention;

pub use retention::Retention;

/// Job ids of jobs not yet `Succeeded` or `Failed`: what a restart puts back in motion, read
/// without the finished ones.
const UNFINISHED: TableDefinition<&[u8], ()> = TableDefinition::new("unfinished");
/// `finished_at_ms` (big-endian) then the job id, of every finished job: oldest first for
/// retention, newest first for a resync.
const ENDED: TableDefinition<&[u8], ()> = TableDefinition::new("ended");
/// The journal's layout: `indexes` is 1 once [`UNFINISHED`] and [`ENDED`] cover every job,
/// `message_times` once [`MESSAGE_TIMES`] covers every message; `message_floor` is the highest
/// occurrence of a message whose record retention removed.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// `seen_at_ms` (big-endian) then the [`MESSAGES`] key: the oldest go first.
const MESSAGE_TIMES: TableDefinition<&[u8], ()> = TableDefinition::new("message_times");

/// Leading byte of every encoded record, so a future layout can be told apart.
const RECORD_VERSION: u8 = 1;

/// Why the journal failed; the agent cannot promise anything without it, so these are fatal.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum JournalError {
    /// cannot open the journal {path}: {source} (is another agent using this state_dir?)
    Open { path: PathBuf, source: redb::Error },
    /// journal storage error: {0}
    Storage(#[from] redb::Error),
    /// journal record for job {0} is unreadable: {1}
    Corrupt(String, postcard::Error),
    /// job {0} cannot go from {1} to {2}
    IllegalTransition(JobId, &'static str, &'static str),
}

/// Where a job is in its life. Only the transitions in [`JobState::can_become`] happen.
/// A job is born `Queued`, or `Running` when a slot is free (both in the same commit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    Queued,
    Running,
    /// The function finished; its outputs wait in `staging` to be delivered.
    Ran {
        staging: PathBuf,
        outputs: Vec<ObjectKey>,
    },
    Succeeded {
        outputs: Vec<String>,
    },
    Failed {
        reason: String,
    },
    /// Offered to the coordinator; nobody runs it until the coordinator answers.
    Offered,
    /// The coordinator owns it; its result will be delivered here.
    Handed,
}

impl JobState {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Queued => "Queued",
            Self::Running => "Running",
            Self::Ran { .. } => "Delivering",
            Self::Succeeded { .. } => "Succeeded",
            Self::Failed { .. } => "Failed",
            Self::Offered => "Offered",
            Self::Handed => "Handed",
        }
    }

    pub fn is_final(&self) -> bool {
        matches!(self, Self::Succeeded { .. } | Self::Failed { .. })
    }

    /// The job state machine. `Running → Queued` is the recovery of an interrupted run;
    /// `Failed → Queued` a retry, asked for by delivering the same input again. A queued job may
    /// be offered to the coordinator; it leaves `Offered` only on the coordinator's answer:
    /// declined or returned (`Queued`), accepted (`Handed`), or its result (`Ran`, `Failed`).
    pub fn can_become(&self, next: &JobState) -> bool {
        use JobState::*;
        matches!(
            (self, next),
            (Queued, Running)
                | (Queued, Failed { .. })
                | (Running, Ran { .. })
                | (Running, Failed { .. })
                | (Running, Queued)
                | (Ran { .. }, Succeeded { .. })
                | (Ran { .. }, Failed { .. })
                | (Failed { .. }, Queued)
                | (Queued, Offered)
                | (Offered, Queued)
                | (Offered, Handed)
                | (Offered | Handed, Ran { .. })
                | (Offered | Handed, Failed { .. })
                | (Handed, Queued)
        )
    }
}

/// Everything the agent knows about one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub function: String,
    pub event: Event,
    pub state: JobState,
    /// Runs started so far (1 while the first run is going).
    pub attempt: u32,
    pub queued_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
}

impl JobRecord {
    pub fn new(id: JobId, function: String, event: Event) -> Self {
        Self {
            id,
            function,
            event,
            state: JobState::Queued,
            attempt: 0,
            queued_at_ms: now_ms(),
            started_at_ms: None,
            finished_at_ms: None,
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A job placed here by the coordinator on behalf of another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guest {
    pub origin: String,
    pub attempt: u32,
    /// Where its input was fetched to (outside every watched folder).
    pub dir: PathBuf,
    /// The coordinator has its result; only the origin is remembered (for job reports).
    pub acked: bool,
}

/// A file already seen, by size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenFile {
    pub size: u64,
    pub mtime_ns: i128,
    pub sha256: [u8; 32],
}

/// The last write of a file seen in a bucket folder: its size, modification time and inode
/// (a file stored whole is a new inode, even within one tick of the clock), and how many writes
/// of the key were seen (1 for the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteStamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub inode: u64,
    pub occurrence: u64,
}

/// A file's modification time in nanoseconds since the Unix epoch (0 when unknown).
pub fn mtime_ns(meta: &std::fs::Metadata) -> i128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128)
}

impl WriteStamp {
    /// The stamp of the file `meta` describes, given the last one seen for its key: the same
    /// write again (a rescan, a repeated notification) keeps its occurrence; a new size,
    /// modification time or inode is the next write, whatever the content.
    pub fn next(last: Option<WriteStamp>, meta: &std::fs::Metadata) -> WriteStamp {
        use std::os::unix::fs::MetadataExt;
        let (size, mtime_ns, inode) = (meta.len(), mtime_ns(meta), meta.ino());
        let occurrence = match last {
            None => 1,
            Some(l) if (l.size, l.mtime_ns, l.inode) == (size, mtime_ns, inode) => l.occurrence,
            Some(l) => l.occurrence.saturating_add(1),
        };
        WriteStamp {
            size,
            mtime_ns,
            inode,
            occurrence,
        }
    }
}

/// The last MQTT message with a given topic and payload: how many arrived, and how the last
/// one was delivered (to tell a broker's redelivery from a new message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSeen {
    pub count: u64,
    pub packet_id: u16,
    /// The connection it arrived on (its start time in ms).
    pub connection: u64,
    /// When it was last seen (0 in journals written before retention kept messages).
    pub seen_at_ms: u64,
}

/// [`MessageSeen`] as journals before retention wrote it.
#[derive(Deserialize)]
struct MessageSeenV1 {
    count: u64,
    packet_id: u16,
    connection: u64,
}

/// A message record of either layout.
fn decode_message(bytes: &[u8]) -> Result<MessageSeen, JournalError> {
    decode::<MessageSeen>("an MQTT message", bytes).or_else(|e| {
        let old: MessageSeenV1 = decode("an MQTT message", bytes).map_err(|_| e)?;
        Ok(MessageSeen {
            count: old.count,
            packet_id: old.packet_id,
            connection: old.connection,
            seen_at_ms: 0,
        })
    })
}

/// One change to the journal, as the engine's job book decides it; [`Journal::commit`] applies
/// a batch of them in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A job enters (or, placed here anew by the coordinator, enters again) as it is.
    Put(JobRecord),
    /// A job placed here on behalf of another node, and where its input is.
    Guest(JobId, Guest),
    /// The coordinator has a guest job's result: only its origin is kept.
    GuestAcked(JobId),
    /// A file already made into a job, so a rescan need not hash it again.
    SeenFile(String, SeenFile),
    /// An MQTT message already made into its jobs, to tell a redelivery from a new message.
    SeenMessage(Vec<u8>, MessageSeen),
    /// The last write seen of a bucket file (`bucket/key`).
    Written(String, WriteStamp),
    /// The job moves on: `Running` counts an attempt and stamps its start, a final state its end.
    Move { id: JobId, to: JobState, at_ms: u64 },
    /// The coordinator returned the job: queued, and never offered again.
    Returned { id: JobId, reason: String },
    /// A failed job asked for again (its input delivered anew): queued at `at_ms`, attempts
    /// from zero.
    Retry { id: JobId, at_ms: u64 },
}

impl Change {
    /// What this change does to the record of the job it names, checked against the job
    /// state machine.
    pub fn apply(&self, record: &mut JobRecord) -> Result<(), JournalError> {
        let to = match self {
            Change::Move { to, .. } => to.clone(),
            Change::Returned { .. } | Change::Retry { .. } => JobState::Queued,
            Change::Put(_)
            | Change::Guest(..)
            | Change::GuestAcked(_)
            | Change::SeenFile(..)
            | Change::SeenMessage(..)
            | Change::Written(..) => return Ok(()),
        };
        if to != record.state && !record.state.can_become(&to) {
            return Err(JournalError::IllegalTransition(
                record.id,
                record.state.name(),
                to.name(),
            ));
        }
        match self {
            Change::Move { at_ms, .. } => {
                if to == JobState::Running {
                    record.attempt += 1;
                    record.started_at_ms = Some(*at_ms);
                } else if to.is_final() {
                    record.finished_at_ms = Some(*at_ms);
                }
            }
            Change::Retry { at_ms, .. } => {
                record.attempt = 0;
                record.queued_at_ms = *at_ms;
                record.started_at_ms = None;
                record.finished_at_ms = None;
            }
            _ => {}
        }
        record.state = to;
        Ok(())
    }
}

#[derive(Debug)]
pub struct Journal {
    db: Database,
    stats: JournalStats,
}

/// What the journal has written since it was opened: staged commits (one per plan), durable
/// commits (one fsync each) and the changes they held. `durable / jobs` is fsyncs per job.
#[derive(Debug, Default)]
pub struct JournalStats {
    staged: AtomicU64,
    durable: AtomicU64,
    changes: AtomicU64,
    /// Whether something staged is not durable yet.
    pending: AtomicBool,
}

/// A copy of [`JournalStats`]' counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalCounts {
    pub staged_commits: u64,
    pub durable_commits: u64,
    pub changes: u64,
}

/// redb's page cache (1 GiB unless told): a 1 GB board's journal gets a few MiB, which holds
/// the indexes and the jobs under way; the file's bulk (finished jobs) is read rarely.
const CACHE: usize = 16 << 20;

/// How long start-up waits for the journal's lock. A killed agent's lock outlives it for a
/// moment: a job process it was forking holds a copy of the descriptor until that child execs
/// or dies of its parent-death signal. Another live agent holds it for good.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// `Database::create`, retried while another process holds the file's lock, for up to `wait`.
fn create_waiting_for_lock(
    path: &Path,
    wait: std::time::Duration,
) -> Result<Database, redb::DatabaseError> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match redb::Builder::new().set_cache_size(CACHE).create(path) {
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

impl Journal {
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let open = || -> Result<Database, redb::Error> {
            let db = create_waiting_for_lock(path, LOCK_WAIT)?;
            let txn = db.begin_write()?;
            txn.open_table(JOBS)?;
            txn.open_table(FILES)?;
            txn.open_table(GUESTS)?;
            txn.open_table(RETURNED)?;
            txn.open_table(MESSAGES)?;
            txn.open_table(WRITES)?;
            // Journals written before the indexes existed get them once, from a full read.
            retention::build_indexes(&txn)?;
            retention::build_message_times(&txn)?;
            txn.commit()?;
            Ok(db)
        };
        open()
            .map(|db| Self {
                db,
                stats: JournalStats::default(),
            })
            .map_err(|source| JournalError::Open {
                path: path.to_owned(),
                source,
            })
    }

    /// Applies `changes` in one durable transaction (one fsync): all of them or, on an error,
    /// none. For tests; the engine stages and flushes.
    #[cfg(test)]
    pub(crate) fn commit(&self, changes: &[Change]) -> Result<(), JournalError> {
        self.stage(changes)?;
        self.flush()
    }

    /// Applies `changes` in one transaction that later reads see but that is not on disk until
    /// the next [`Journal::flush`]: all of them or, on an error, none. Only the engine calls
    /// this, with what its job book decided, and acts on none of it before flushing.
    pub fn stage(&self, changes: &[Change]) -> Result<(), JournalError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.write(changes, Durability::None)?;
        self.note_staged(changes.len());
        Ok(())
    }

    /// Counts a staged commit of `changes` changes, for the next flush to make durable.
    fn note_staged(&self, changes: usize) {
        self.stats.staged.fetch_add(1, Ordering::Relaxed);
        self.stats
            .changes
            .fetch_add(changes as u64, Ordering::Relaxed);
        self.stats.pending.store(true, Ordering::Relaxed);
    }

    /// Makes everything staged durable, with one fsynced commit; nothing to do when nothing is
    /// staged.
    pub fn flush(&self) -> Result<(), JournalError> {
        if !self.stats.pending.load(Ordering::Relaxed) {
            return Ok(());
        }
        // A durable commit makes the non-durable ones before it durable too.
        self.write(&[], Durability::Immediate)?;
        self.stats.durable.fetch_add(1, Ordering::Relaxed);
        self.stats.pending.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// What the journal has written since it was opened.
    pub fn counts(&self) -> JournalCounts {
        JournalCounts {
            staged_commits: self.stats.staged.load(Ordering::Relaxed),
            durable_commits: self.stats.durable.load(Ordering::Relaxed),
            changes: self.stats.changes.load(Ordering::Relaxed),
        }
    }

    fn write(&self, changes: &[Change], durability: Durability) -> Result<(), JournalError> {
        let mut txn = self.db.begin_write().map_err(redb::Error::from)?;
        txn.set_durability(durability).map_err(redb::Error::from)?;
        {
            let mut jobs = txn.open_table(JOBS).map_err(redb::Error::from)?;
            let mut guests = txn.open_table(GUESTS).map_err(redb::Error::from)?;
            let mut indexes = retention::Indexes::open(&txn)?;
            for change in changes {
                match change {
                    Change::Put(record) => {
                        let key = record.id.as_bytes();
                        let was = jobs
                            .insert(key.as_slice(), encode(record).as_slice())
                            .map_err(redb::Error::from)?
                            .map(|v| decode::<JobRecord>(&record.id.to_string(), v.value()))
                            .transpose()?
                            .as_ref()
                            .and_then(retention::ended_key);
                        indexes.update(was, record)?;
                    }
                    Change::Guest(id, guest) => {
                        guests
                            .insert(id.as_bytes().as_slice(), encode(guest).as_slice())
                            .map_err(redb::Error::from)?;
                    }
                    Change::GuestAcked(id) => {
                        let key = id.as_bytes().as_slice();
                        let guest = match guests.get(key).map_err(redb::Error::from)? {
                            Some(v) => Some(decode::<Guest>(&id.to_string(), v.value())?),
                            None => None,
                        };
                        if let Some(mut guest) = guest {
                            guest.acked = true;
                            guests
                                .insert(key, encode(&guest).as_slice())
                                .map_err(redb::Error::from)?;
                        }
                    }
                    Change::SeenFile(key, seen) => {
                        txn.open_table(FILES)
                            .map_err(redb::Error::from)?
                            .insert(key.as_bytes(), encode(seen).as_slice())
                            .map_err(redb::Error::from)?;
                    }
                    Change::SeenMessage(key, seen) => {
                        let was = txn
                            .open_table(MESSAGES)
                            .map_err(redb::Error::from)?
                            .insert(key.as_slice(), encode(seen).as_slice())
                            .map_err(redb::Error::from)?
                            .map(|v| decode_message(v.value()))
                            .transpose()?;
                        let mut times = txn.open_table(MESSAGE_TIMES).map_err(redb::Error::from)?;
                        if let Some(was) = was {
                            times
                                .remove(retention::message_time_key(was.seen_at_ms, key).as_slice())
                                .map_err(redb::Error::from)?;
                        }
                        times
                            .insert(
                                retention::message_time_key(seen.seen_at_ms, key).as_slice(),
                                (),
                            )
                            .map_err(redb::Error::from)?;
                    }
                    Change::Written(key, stamp) => {
                        txn.open_table(WRITES)
                            .map_err(redb::Error::from)?
                            .insert(key.as_bytes(), encode(stamp).as_slice())
                            .map_err(redb::Error::from)?;
                    }
                    Change::Move { id, .. }
                    | Change::Returned { id, .. }
                    | Change::Retry { id, .. } => {
                        let key = id.as_bytes().as_slice();
                        let bytes = jobs
                            .get(key)
                            .map_err(redb::Error::from)?
                            .map(|v| v.value().to_vec());
                        let Some(bytes) = bytes else {
                            return Err(JournalError::Storage(redb::Error::Corrupted(format!(
                                "job {id} is missing"
                            ))));
                        };
                        let mut record: JobRecord = decode(&id.to_string(), &bytes)?;
                        let was = retention::ended_key(&record);
                        change.apply(&mut record)?;
                        indexes.update(was, &record)?;
                        jobs.insert(key, encode(&record).as_slice())
                            .map_err(redb::Error::from)?;
                        if let Change::Returned { reason, .. } = change {
                            txn.open_table(RETURNED)
                                .map_err(redb::Error::from)?
                                .insert(key, reason.as_str())
                                .map_err(redb::Error::from)?;
                        }
                    }
                }
            }
        }
        txn.commit().map_err(redb::Error::from)?;
        Ok(())
    }

    pub fn get(&self, id: JobId) -> Result<Option<JobRecord>, JournalError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let jobs = txn.open_table(JOBS).map_err(redb::Error::from)?;
        let value = jobs
            .get(id.as_bytes().as_slice())
            .map_err(redb::Error::from)?;
        value
            .map(|v| decode(&id.to_string(), v.value()))
            .transpose()
    }

    /// A job this node runs (or ran) for another node, acknowledged or not.
    pub fn guest(&self, id: JobId) -> Result<Option<Guest>, JournalError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let guests = txn.open_table(GUESTS).map_err(redb::Error::from)?;
        let value = guests
            .get(id.as_bytes().as_slice())
            .map_err(redb::Error::from)?;
        value
            .map(|v| decode(&id.to_string(), v.value()))
            .transpose()
    }

    /// A guest job whose result the coordinator does not have yet.
    pub fn hosting(&self, id: JobId) -> Result<Option<Guest>, JournalError> {
        Ok(self.guest(id)?.filter(|g| !g.acked))
    }

    /// Guest jobs whose result the coordinator has not acknowledged yet.
    pub fn guests(&self) -> Result<Vec<(JobId, Guest)>, JournalError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(GUESTS).map_err(redb::Error::from)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(redb::Error::from)? {
            let (key, value) = item.map_err(redb::Error::from)?;
            let mut id = [0u8; 16];
            if key.value().len() == 16 {
                id.copy_from_slice(key.value());
            }
            out.push((
                JobId::from_bytes(id),
                decode(&hex::encode(id), value.value())?,
            ));
        }
        Ok(out)
    }

    pub fn was_returned(&self, id: JobId) -> Result<bool, JournalError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(RETURNED).map_err(redb::Error::from)?;
        Ok(table
            .get(id.as_bytes().as_slice())
            .map_err(redb::Error::from)?
            .is_some())
    }

    pub fn seen_file(&self, file_key: &str) -> Result<Option<SeenFile>, JournalError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let files = txn.open_table(FILES).map_err(redb::Error::from)?;
        let value = files.get(file_key.as_bytes()).map_err(redb::Error::from)?;
        value.map(|v| decode(file_key, v.value())).transpose()
    }

    /// The last write seen of bucket file `key` (`bucket/key`).
    pub fn last_write(&self, key: &str) -> Result<Option<WriteStamp>, JournalError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(WRITES).map_err(redb::Error::from)?;
        let value = table.get(key.as_bytes()).map_err(redb::Error::from)?;
        value.map(|v| decode(key, v.value())).transpose()
    }

    /// What the journal remembers of the message with this key, and the occurrence below which
    /// a message it no longer remembers must not be numbered (see [`Journal::prune`]).
    pub fn message_seen(&self, key: &[u8]) -> Result<(Option<MessageSeen>, u64), JournalError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(MESSAGES).map_err(redb::Error::from)?;
        let value = table.get(key).map_err(redb::Error::from)?;
        let seen = value.map(|v| decode_message(v.value())).transpose()?;
        let meta = txn.open_table(META).map_err(redb::Error::from)?;
        let floor = meta
            .get(retention::MESSAGE_FLOOR)
            .map_err(redb::Error::from)?
            .map_or(0, |v| v.value());
        Ok((seen, floor))
    }

    /// Every job not yet `Succeeded` or `Failed`, oldest first; read through their index,
    /// however many finished jobs the journal holds.
    pub fn unfinished(&self) -> Result<Vec<JobRecord>, JournalError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let index = txn.open_table(UNFINISHED).map_err(redb::Error::from)?;
        let ids = index
            .iter()
            .map_err(redb::Error::from)?
            .map(|item| item.map(|(key, _)| key.value().to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(redb::Error::from)?;
        let mut jobs = lookup(&txn, ids)?;
        jobs.sort_by_key(|j: &JobRecord| (j.queued_at_ms, j.id));
        Ok(jobs)
    }

    /// The `n` jobs that finished last, newest first, through their index.
    pub fn recently_finished(&self, n: usize) -> Result<Vec<JobRecord>, JournalError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let index = txn.open_table(ENDED).map_err(redb::Error::from)?;
        // Its keys are the end time, then the job id.
        let ids = index
            .iter()
            .map_err(redb::Error::from)?
            .rev()
            .take(n)
            .map(|item| item.map(|(key, _)| key.value().get(8..).unwrap_or_default().to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(redb::Error::from)?;
        lookup(&txn, ids)
    }

    /// Every job, decoded: a full read (tools and tests; the agent reads through the indexes).
    pub fn all(&self) -> Result<Vec<JobRecord>, JournalError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(JOBS).map_err(redb::Error::from)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(redb::Error::from)? {
            let (key, value) = item.map_err(redb::Error::from)?;
            out.push(decode(&hex::encode(key.value()), value.value())?);
        }
        Ok(out)
    }
}

/// The records of the jobs `ids` names (in that order) that the journal holds.
fn lookup(txn: &redb::ReadTransaction, ids: Vec<Vec<u8>>) -> Result<Vec<JobRecord>, JournalError> {
    let table = txn.open_table(JOBS).map_err(redb::Error::from)?;
    let mut jobs = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(v) = table.get(id.as_slice()).map_err(redb::Error::from)? {
            jobs.push(decode(&hex::encode(&id), v.value())?);
        }
    }
    Ok(jobs)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = vec![RECORD_VERSION];
    // Serialising plain structs into a Vec cannot fail.
    bytes.extend(postcard::to_allocvec(value).unwrap_or_default());
    bytes
}

fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T, JournalError> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|e| JournalError::Corrupt(what.to_owned(), e))
        }
        _ => Err(JournalError::Corrupt(
            what.to_owned(),
            postcard::Error::DeserializeBadEncoding,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_proto::{FileEvent, ObjectKey};

    fn record(n: u8) -> JobRecord {
        let event = Event::File(FileEvent {
            bucket: "b".into(),
            key: ObjectKey::parse("k").expect("key"),
            size: 1,
            mtime_ns: 0,
            sha256: [n; 32],
        });
        JobRecord::new(event.job_id("node", "f"), "f".into(), event)
    }

    fn to(id: JobId, state: JobState) -> Change {
        Change::Move {
            id,
            to: state,
            at_ms: 7,
        }
    }

    #[test]
    fn start_up_waits_for_a_lock_a_dying_predecessor_still_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j.redb");
        let held = Journal::open(&path).expect("first holder");
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(held);
        });
        let waited = std::time::Instant::now();
        create_waiting_for_lock(&path, std::time::Duration::from_secs(5))
            .expect("opened once the lock was released");
        assert!(waited.elapsed() >= std::time::Duration::from_millis(250));
        releaser.join().expect("releaser");
    }

    #[test]
    fn a_lock_held_for_good_is_refused_naming_the_other_agent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j.redb");
        let _held = Journal::open(&path).expect("first holder");
        let refused = create_waiting_for_lock(&path, std::time::Duration::from_millis(200))
            .expect_err("the lock is never released");
        assert!(matches!(refused, redb::DatabaseError::DatabaseAlreadyOpen));
        let message = JournalError::Open {
            path: path.clone(),
            source: refused.into(),
        }
        .to_string();
        assert!(
            message.contains("is another agent using this state_dir?"),
            "{message}"
        );
    }

    #[test]
    fn a_batch_is_committed_whole_and_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j.redb");
        let r = record(1);
        {
            let j = Journal::open(&path).expect("open");
            j.commit(&[Change::Put(r.clone()), to(r.id, JobState::Running)])
                .expect("commit");
        }
        let j = Journal::open(&path).expect("reopen");
        let back = j.get(r.id).expect("get").expect("present");
        assert_eq!(back.state, JobState::Running);
        assert_eq!(
            (back.attempt, back.started_at_ms),
            (1, Some(7)),
            "one attempt"
        );
        assert_eq!(j.unfinished().expect("list").len(), 1);
    }

    #[test]
    fn staged_changes_are_read_at_once_and_one_flush_makes_them_all_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j.redb");
        let j = Journal::open(&path).expect("open");
        let records: Vec<JobRecord> = (0..50).map(record).collect();
        for r in &records {
            j.stage(&[Change::Put(r.clone())]).expect("stage");
            // The next decision reads what the last one staged.
            j.stage(&[to(r.id, JobState::Running)])
                .expect("a staged job moves on");
        }
        assert_eq!(
            j.get(records[7].id).expect("get").map(|r| r.state),
            Some(JobState::Running)
        );
        let staged = j.counts();
        assert_eq!(
            (
                staged.staged_commits,
                staged.durable_commits,
                staged.changes
            ),
            (100, 0, 100)
        );
        j.flush().expect("flush");
        j.flush().expect("nothing left to flush");
        assert_eq!(
            j.counts().durable_commits,
            1,
            "one fsync for 100 staged commits"
        );
        // A refused batch stages nothing, and leaves nothing to flush.
        j.stage(&[
            Change::Put(record(99)),
            to(records[0].id, JobState::Succeeded { outputs: vec![] }),
        ])
        .expect_err("Running cannot become Succeeded without Ran");
        j.flush().expect("flush");
        assert_eq!(j.counts().durable_commits, 1);
        assert!(j.get(record(99).id).expect("get").is_none());
    }

    #[test]
    fn a_crash_keeps_what_was_flushed_and_nothing_staged_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, crashed) = (dir.path().join("j.redb"), dir.path().join("crashed.redb"));
        let j = Journal::open(&path).expect("open");
        j.stage(&[Change::Put(record(1))]).expect("stage");
        j.flush().expect("flush");
        j.stage(&[Change::Put(record(2)), to(record(1).id, JobState::Running)])
            .expect("stage");
        // The file as a crash would leave it now: everything written so far, closed by nobody
        // (a copy holds no lock, and its redb has not shut down cleanly).
        std::fs::copy(&path, &crashed).expect("copy");
        let back = Journal::open(&crashed).expect("reopen after the crash");
        assert_eq!(
            back.get(record(1).id).expect("get").map(|r| r.state),
            Some(JobState::Queued),
            "flushed, and its staged move lost"
        );
        assert!(
            back.get(record(2).id).expect("get").is_none(),
            "staged only: lost"
        );
        // While the live journal reads what it staged.
        assert_eq!(
            j.get(record(1).id).expect("get").map(|r| r.state),
            Some(JobState::Running)
        );
    }

    #[test]
    fn a_second_agent_on_the_same_state_dir_is_told_why_it_cannot_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j.redb");
        let _first = Journal::open(&path).expect("open");
        let err = Journal::open(&path).expect_err("locked").to_string();
        assert!(err.contains("another agent"), "{err}");
    }

    #[test]
    fn only_legal_transitions_are_allowed() {
        use JobState::*;
        assert!(Queued.can_become(&Running));
        assert!(!Queued.can_become(&Succeeded { outputs: vec![] }));
        assert!(!Succeeded { outputs: vec![] }.can_become(&Running));
        assert!(
            !Succeeded { outputs: vec![] }.can_become(&Queued),
            "a success is final"
        );
        let failed = Failed {
            reason: String::new(),
        };
        assert!(failed.can_become(&Queued), "a retry");
        assert!(!failed.can_become(&Running), "a retry queues first");
        assert!(Running.can_become(&Queued), "recovery after a crash");
    }

    #[test]
    fn an_offered_job_leaves_offered_only_on_an_answer() {
        use JobState::*;
        assert!(Queued.can_become(&Offered));
        assert!(
            !Running.can_become(&Offered),
            "a started job is never offered"
        );
        assert!(
            !Offered.can_become(&Running),
            "in doubt: nobody runs it here"
        );
        assert!(Offered.can_become(&Queued), "declined");
        assert!(Offered.can_become(&Handed), "accepted");
        assert!(
            Offered.can_become(&Ran {
                staging: PathBuf::new(),
                outputs: vec![]
            }),
            "delivered (its acceptance was lost)"
        );
        assert!(Handed.can_become(&Queued), "returned");
        assert!(!Handed.can_become(&Running), "returned jobs queue first");
    }

    #[test]
    fn a_guest_is_remembered_by_its_origin_after_its_result_was_taken() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(&dir.path().join("j.redb")).expect("open");
        let r = record(3);
        let guest = Guest {
            origin: "pi-1".into(),
            attempt: 1,
            dir: dir.path().join("g"),
            acked: false,
        };
        j.commit(&[Change::Put(r.clone()), Change::Guest(r.id, guest)])
            .expect("host");
        assert!(j.hosting(r.id).expect("read").is_some());
        j.commit(&[Change::GuestAcked(r.id)]).expect("ack");
        assert_eq!(j.hosting(r.id).expect("read"), None);
        assert_eq!(
            j.guest(r.id).expect("read").map(|g| g.origin),
            Some("pi-1".into())
        );
    }

    #[test]
    fn a_returned_job_is_queued_and_remembered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(&dir.path().join("j.redb")).expect("open");
        let r = record(4);
        j.commit(&[
            Change::Put(r.clone()),
            to(r.id, JobState::Offered),
            to(r.id, JobState::Handed),
        ])
        .expect("hand over");
        assert!(!j.was_returned(r.id).expect("read"));
        j.commit(&[Change::Returned {
            id: r.id,
            reason: "hop limit".into(),
        }])
        .expect("return");
        assert_eq!(
            j.get(r.id).expect("get").map(|x| x.state),
            Some(JobState::Queued)
        );
        assert!(j.was_returned(r.id).expect("read"));
    }

    #[test]
    fn the_journal_refuses_an_illegal_transition_and_writes_nothing_of_the_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(&dir.path().join("j.redb")).expect("open");
        let r = record(2);
        j.commit(&[Change::Put(r.clone())]).expect("insert");
        let other = record(5);
        let err = j
            .commit(&[
                Change::Put(other.clone()),
                to(r.id, JobState::Succeeded { outputs: vec![] }),
            ])
            .expect_err("illegal");
        assert!(matches!(
            err,
            JournalError::IllegalTransition(_, "Queued", "Succeeded")
        ));
        assert_eq!(
            j.get(r.id).expect("get").map(|x| x.state),
            Some(JobState::Queued),
            "nothing was written"
        );
        assert_eq!(
            j.get(other.id).expect("get"),
            None,
            "not even the first change"
        );
    }
}
