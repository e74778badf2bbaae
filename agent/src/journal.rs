//! The agent's durable job journal (redb). Every state change of a job is committed here, with
//! an fsync, before the agent acts on it; after a crash the journal is the whole truth.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
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

/// The last MQTT message with a given topic and payload: how many arrived, and how the last
/// one was delivered (to tell a broker's redelivery from a new message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSeen {
    pub count: u64,
    pub packet_id: u16,
    /// The connection it arrived on (its start time in ms).
    pub connection: u64,
}

#[derive(Debug)]
pub struct Journal {
    db: Database,
}

impl Journal {
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let open = || -> Result<Database, redb::Error> {
            let db = Database::create(path)?;
            let txn = db.begin_write()?;
            txn.open_table(JOBS)?;
            txn.open_table(FILES)?;
            txn.open_table(GUESTS)?;
            txn.open_table(RETURNED)?;
            txn.open_table(MESSAGES)?;
            txn.commit()?;
            Ok(db)
        };
        open()
            .map(|db| Self { db })
            .map_err(|source| JournalError::Open {
                path: path.to_owned(),
                source,
            })
    }

    /// Inserts a new job; `false` (and no change) when a job with this id already exists.
    pub fn insert_if_new(
        &self,
        record: &JobRecord,
        seen: Option<(&str, &SeenFile)>,
    ) -> Result<bool, JournalError> {
        let txn = self.db.begin_write().map_err(redb::Error::from)?;
        let inserted = {
            let mut jobs = txn.open_table(JOBS).map_err(redb::Error::from)?;
            let exists = jobs
                .get(record.id.as_bytes().as_slice())
                .map_err(redb::Error::from)?
                .is_some();
            if !exists {
                jobs.insert(record.id.as_bytes().as_slice(), encode(record).as_slice())
                    .map_err(redb::Error::from)?;
            }
            if let Some((file_key, seen)) = seen {
                let mut files = txn.open_table(FILES).map_err(redb::Error::from)?;
                files
                    .insert(file_key.as_bytes(), encode(seen).as_slice())
                    .map_err(redb::Error::from)?;
            }
            !exists
        };
        txn.commit().map_err(redb::Error::from)?;
        Ok(inserted)
    }

    /// Applies `change` to a job and commits it. Returns the new record.
    pub fn update(
        &self,
        id: JobId,
        change: impl FnOnce(&mut JobRecord),
    ) -> Result<JobRecord, JournalError> {
        let txn = self.db.begin_write().map_err(redb::Error::from)?;
        let record = {
            let mut jobs = txn.open_table(JOBS).map_err(redb::Error::from)?;
            let mut record = match jobs
                .get(id.as_bytes().as_slice())
                .map_err(redb::Error::from)?
            {
                Some(bytes) => decode::<JobRecord>(&id.to_string(), bytes.value())?,
                None => {
                    return Err(JournalError::Storage(redb::Error::Corrupted(format!(
                        "job {id} is missing"
                    ))));
                }
            };
            let before = record.state.clone();
            change(&mut record);
            if record.state != before && !before.can_become(&record.state) {
                return Err(JournalError::IllegalTransition(
                    id,
                    before.name(),
                    record.state.name(),
                ));
            }
            jobs.insert(id.as_bytes().as_slice(), encode(&record).as_slice())
                .map_err(redb::Error::from)?;
            record
        };
        txn.commit().map_err(redb::Error::from)?;
        Ok(record)
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

    /// Records a guest job (queued) and where its input is, in one commit; `false` when the
    /// job is already here. A job that ran here before and whose result the coordinator already
    /// took is a new placement (its origin is running it again, e.g. after it failed).
    pub fn insert_guest(&self, record: &JobRecord, guest: &Guest) -> Result<bool, JournalError> {
        let txn = self.db.begin_write().map_err(redb::Error::from)?;
        let inserted = {
            let mut jobs = txn.open_table(JOBS).map_err(redb::Error::from)?;
            let mut guests = txn.open_table(GUESTS).map_err(redb::Error::from)?;
            let key = record.id.as_bytes().as_slice();
            let hosting = match guests.get(key).map_err(redb::Error::from)? {
                Some(v) => !decode::<Guest>(&record.id.to_string(), v.value())?.acked,
                None => false,
            };
            let done_before = match jobs.get(key).map_err(redb::Error::from)? {
                None => true,
                Some(v) => decode::<JobRecord>(&record.id.to_string(), v.value())?
                    .state
                    .is_final(),
            };
            let new = !hosting && done_before;
            if new {
                jobs.insert(key, encode(record).as_slice())
                    .map_err(redb::Error::from)?;
                guests
                    .insert(key, encode(guest).as_slice())
                    .map_err(redb::Error::from)?;
            }
            new
        };
        txn.commit().map_err(redb::Error::from)?;
        Ok(inserted)
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

    /// The coordinator has the guest job's result: its files may go (the origin is kept).
    pub fn guest_acknowledged(&self, id: JobId) -> Result<(), JournalError> {
        let txn = self.db.begin_write().map_err(redb::Error::from)?;
        {
            let mut guests = txn.open_table(GUESTS).map_err(redb::Error::from)?;
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
        txn.commit().map_err(redb::Error::from)?;
        Ok(())
    }

    /// A job the coordinator returned goes back to `Queued` and is remembered as never to be
    /// offered again, in one commit.
    pub fn returned(&self, id: JobId, reason: &str) -> Result<JobRecord, JournalError> {
        let txn = self.db.begin_write().map_err(redb::Error::from)?;
        let record = {
            let mut jobs = txn.open_table(JOBS).map_err(redb::Error::from)?;
            let bytes = jobs
                .get(id.as_bytes().as_slice())
                .map_err(redb::Error::from)?
                .map(|v| v.value().to_vec());
            let Some(bytes) = bytes else {
                return Err(JournalError::Storage(redb::Error::Corrupted(format!(
                    "job {id} is missing"
                ))));
            };
            let mut record: JobRecord = decode(&id.to_string(), &bytes)?;
            if !record.state.can_become(&JobState::Queued) {
                return Err(JournalError::IllegalTransition(
                    id,
                    record.state.name(),
                    "Queued",
                ));
            }
            record.state = JobState::Queued;
            jobs.insert(id.as_bytes().as_slice(), encode(&record).as_slice())
                .map_err(redb::Error::from)?;
            txn.open_table(RETURNED)
                .map_err(redb::Error::from)?
                .insert(id.as_bytes().as_slice(), reason)
                .map_err(redb::Error::from)?;
            record
        };
        txn.commit().map_err(redb::Error::from)?;
        Ok(record)
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

    pub fn message_seen(&self, key: &[u8]) -> Result<Option<MessageSeen>, JournalError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(MESSAGES).map_err(redb::Error::from)?;
        let value = table.get(key).map_err(redb::Error::from)?;
        value
            .map(|v| decode("an MQTT message", v.value()))
            .transpose()
    }

    /// Records the jobs an MQTT message makes and that it was seen, in one commit, so a
    /// redelivery after a crash either finds all of them or none. Returns the new jobs.
    pub fn insert_message(
        &self,
        records: &[JobRecord],
        key: &[u8],
        seen: &MessageSeen,
    ) -> Result<Vec<JobId>, JournalError> {
        let txn = self.db.begin_write().map_err(redb::Error::from)?;
        let mut new = Vec::new();
        {
            let mut jobs = txn.open_table(JOBS).map_err(redb::Error::from)?;
            for record in records {
                let id = record.id.as_bytes().as_slice();
                if jobs.get(id).map_err(redb::Error::from)?.is_none() {
                    jobs.insert(id, encode(record).as_slice())
                        .map_err(redb::Error::from)?;
                    new.push(record.id);
                }
            }
            let mut messages = txn.open_table(MESSAGES).map_err(redb::Error::from)?;
            messages
                .insert(key, encode(seen).as_slice())
                .map_err(redb::Error::from)?;
        }
        txn.commit().map_err(redb::Error::from)?;
        Ok(new)
    }

    /// Every job not yet `Succeeded` or `Failed`, oldest first.
    pub fn unfinished(&self) -> Result<Vec<JobRecord>, JournalError> {
        let mut jobs = self.all()?;
        jobs.retain(|j| !j.state.is_final());
        jobs.sort_by_key(|j| (j.queued_at_ms, j.id));
        Ok(jobs)
    }

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

    #[test]
    fn a_job_is_inserted_once_and_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j.redb");
        let r = record(1);
        {
            let j = Journal::open(&path).expect("open");
            assert!(j.insert_if_new(&r, None).expect("insert"));
            assert!(
                !j.insert_if_new(&r, None).expect("insert again"),
                "the same job twice is one job"
            );
            j.update(r.id, |x| x.state = JobState::Running)
                .expect("update");
        }
        let j = Journal::open(&path).expect("reopen");
        let back = j.get(r.id).expect("get").expect("present");
        assert_eq!(back.state, JobState::Running);
        assert_eq!(j.unfinished().expect("list").len(), 1);
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
    fn a_guest_is_hosted_once_and_again_only_after_its_result_was_taken() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(&dir.path().join("j.redb")).expect("open");
        let r = record(3);
        let guest = Guest {
            origin: "pi-1".into(),
            attempt: 1,
            dir: dir.path().join("g"),
            acked: false,
        };
        assert!(j.insert_guest(&r, &guest).expect("host"));
        assert!(
            !j.insert_guest(&r, &guest).expect("again"),
            "a repeated placement"
        );
        j.update(r.id, |x| x.state = JobState::Running)
            .expect("run");
        j.update(r.id, |x| x.state = JobState::Failed { reason: "x".into() })
            .expect("fail");
        assert!(
            !j.insert_guest(&r, &guest).expect("not yet taken"),
            "its result is still to be sent"
        );
        j.guest_acknowledged(r.id).expect("ack");
        assert_eq!(j.hosting(r.id).expect("read"), None);
        assert_eq!(
            j.guest(r.id).expect("read").map(|g| g.origin),
            Some("pi-1".into())
        );
        assert!(
            j.insert_guest(&r, &guest).expect("retry"),
            "the origin runs it again"
        );
        assert_eq!(
            j.get(r.id).expect("get").map(|x| x.state),
            Some(JobState::Queued)
        );
    }

    #[test]
    fn a_returned_job_is_queued_and_remembered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(&dir.path().join("j.redb")).expect("open");
        let r = record(4);
        j.insert_if_new(&r, None).expect("insert");
        j.update(r.id, |x| x.state = JobState::Offered)
            .expect("offer");
        j.update(r.id, |x| x.state = JobState::Handed)
            .expect("hand");
        assert!(!j.was_returned(r.id).expect("read"));
        assert_eq!(
            j.returned(r.id, "hop limit").expect("return").state,
            JobState::Queued
        );
        assert!(j.was_returned(r.id).expect("read"));
    }

    #[test]
    fn the_journal_refuses_an_illegal_transition() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(&dir.path().join("j.redb")).expect("open");
        let r = record(2);
        j.insert_if_new(&r, None).expect("insert");
        let err = j
            .update(r.id, |x| x.state = JobState::Succeeded { outputs: vec![] })
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
    }
}
