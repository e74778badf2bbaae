//! What keeps the journal bounded: two indexes kept in the same transactions as the records
//! (jobs not yet finished; finished jobs by when they ended), so a restart and a resync read
//! what they need and not every job ever run, and retention that removes the oldest finished
//! jobs past an age or a count.

use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::{
    ENDED, GUESTS, Guest, JOBS, JobRecord, Journal, JournalError, MESSAGE_TIMES, MESSAGES, META,
    RETURNED, UNFINISHED, decode, decode_message,
};

/// [`META`] key of the highest occurrence of a message whose record was removed: a message
/// seen again after its record went is numbered above it, so it never takes the id of a job
/// that message made before.
pub(super) const MESSAGE_FLOOR: &str = "message_floor";

/// The key of a message in [`MESSAGE_TIMES`].
pub(super) fn message_time_key(seen_at_ms: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&seen_at_ms.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// Builds [`MESSAGE_TIMES`] once, for a journal written before messages were kept by time
/// (their records say 0: they are the first to go).
pub(super) fn build_message_times(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let mut meta = txn.open_table(META)?;
    if meta.get("message_times")?.is_some_and(|v| v.value() >= 1) {
        return Ok(());
    }
    let messages = txn.open_table(MESSAGES)?;
    let mut times = txn.open_table(MESSAGE_TIMES)?;
    for item in messages.iter()? {
        let (key, value) = item?;
        let at = decode_message(value.value()).map_or(0, |m| m.seen_at_ms);
        times.insert(message_time_key(at, key.value()).as_slice(), ())?;
    }
    meta.insert("message_times", 1)?;
    Ok(())
}

/// How long finished jobs are kept, and how many at most (`[retention]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_age_ms: u64,
    pub max_jobs: u64,
}

/// The key of a job in [`ENDED`]: `None` while it is not finished.
pub(super) fn ended_key(record: &JobRecord) -> Option<[u8; 24]> {
    if !record.state.is_final() {
        return None;
    }
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&record.finished_at_ms.unwrap_or(0).to_be_bytes());
    key[8..].copy_from_slice(record.id.as_bytes());
    Some(key)
}

/// Both indexes, open in one write transaction (once for all its changes).
pub(super) struct Indexes<'txn> {
    unfinished: redb::Table<'txn, &'static [u8], ()>,
    ended: redb::Table<'txn, &'static [u8], ()>,
}

impl<'txn> Indexes<'txn> {
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Self, redb::Error> {
        Ok(Self {
            unfinished: txn.open_table(UNFINISHED)?,
            ended: txn.open_table(ENDED)?,
        })
    }

    /// Keeps the indexes true of a job that was finished under `was` ([`ended_key`] of its
    /// record before; `None`: new, or not finished) and is now `after`.
    pub(super) fn update(
        &mut self,
        was: Option<[u8; 24]>,
        after: &JobRecord,
    ) -> Result<(), redb::Error> {
        if let Some(was) = was {
            self.ended.remove(was.as_slice())?;
        }
        let id = after.id.as_bytes();
        match ended_key(after) {
            Some(key) => {
                self.unfinished.remove(id.as_slice())?;
                self.ended.insert(key.as_slice(), ())?;
            }
            None => {
                self.unfinished.insert(id.as_slice(), ())?;
            }
        }
        Ok(())
    }
}

/// Builds the indexes from every record, once, for a journal written before they existed.
pub(super) fn build_indexes(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let mut meta = txn.open_table(META)?;
    if meta.get("indexes")?.is_some_and(|v| v.value() >= 1) {
        return Ok(());
    }
    let jobs = txn.open_table(JOBS)?;
    let mut indexes = Indexes::open(txn)?;
    for item in jobs.iter()? {
        let (_, value) = item?;
        // An unreadable record is reported when it is read, not here.
        if let Ok(record) = decode::<JobRecord>("", value.value()) {
            indexes.update(None, &record)?;
        }
    }
    meta.insert("indexes", 1)?;
    Ok(())
}

/// The keys of an index by time (8 big-endian bytes of ms first) that `retention` removes:
/// older than its age, or the oldest beyond its count; at most `limit`, oldest first.
fn oldest_past(
    index: &redb::Table<'_, &'static [u8], ()>,
    now_ms: u64,
    retention: Retention,
    limit: usize,
) -> Result<Vec<Vec<u8>>, redb::Error> {
    let total = index.len()?;
    let cutoff = now_ms.saturating_sub(retention.max_age_ms);
    let mut doomed = Vec::new();
    for item in index.iter()? {
        let (key, _) = item?;
        let key = key.value().to_vec();
        let at = key
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes);
        let over = total - doomed.len() as u64 > retention.max_jobs;
        if (at >= cutoff && !over) || doomed.len() >= limit {
            break;
        }
        doomed.push(key);
    }
    Ok(doomed)
}

/// Removes the remembered MQTT messages last seen before the cutoff, and the oldest beyond
/// `max_jobs`, at most `limit`; raises the floor of occurrences to the highest one removed.
/// Returns how many went.
fn prune_messages(
    txn: &WriteTransaction,
    now_ms: u64,
    retention: Retention,
    limit: usize,
) -> Result<usize, JournalError> {
    let mut times = txn.open_table(MESSAGE_TIMES).map_err(redb::Error::from)?;
    let mut messages = txn.open_table(MESSAGES).map_err(redb::Error::from)?;
    let mut meta = txn.open_table(META).map_err(redb::Error::from)?;
    let doomed = oldest_past(&times, now_ms, retention, limit)?;
    let mut floor = meta
        .get(MESSAGE_FLOOR)
        .map_err(redb::Error::from)?
        .map_or(0, |v| v.value());
    for key in &doomed {
        times.remove(key.as_slice()).map_err(redb::Error::from)?;
        let Some(message) = key.get(8..) else {
            continue;
        };
        if let Some(seen) = messages.remove(message).map_err(redb::Error::from)? {
            floor = floor.max(decode_message(seen.value())?.count);
        }
    }
    meta.insert(MESSAGE_FLOOR, floor)
        .map_err(redb::Error::from)?;
    Ok(doomed.len())
}

impl Journal {
    /// Removes finished jobs that ended before `now_ms - max_age_ms`, and the oldest beyond
    /// `max_jobs`, at most `limit` of them (so the engine is never held long), staged like any
    /// change. A guest job whose result the coordinator has not taken is kept. The MQTT
    /// messages remembered go by the same rule (last seen before the cutoff, the oldest beyond
    /// `max_jobs`). Returns the ids of the jobs removed, for their logs to go too.
    pub fn prune(
        &self,
        now_ms: u64,
        retention: Retention,
        limit: usize,
    ) -> Result<Vec<spillway_proto::JobId>, JournalError> {
        let mut txn = self.db.begin_write().map_err(redb::Error::from)?;
        txn.set_durability(redb::Durability::None)
            .map_err(redb::Error::from)?;
        let mut removed = Vec::new();
        {
            let mut ended = txn.open_table(ENDED).map_err(redb::Error::from)?;
            let mut jobs = txn.open_table(JOBS).map_err(redb::Error::from)?;
            let mut guests = txn.open_table(GUESTS).map_err(redb::Error::from)?;
            let mut returned = txn.open_table(RETURNED).map_err(redb::Error::from)?;
            let doomed = oldest_past(&ended, now_ms, retention, limit)?;
            for key in doomed {
                let Some(id) = key.get(8..24) else { continue };
                let waiting_guest = guests
                    .get(id)
                    .map_err(redb::Error::from)?
                    .map(|v| decode::<Guest>("a guest", v.value()))
                    .transpose()?
                    .is_some_and(|g| !g.acked);
                if waiting_guest {
                    continue;
                }
                ended.remove(key.as_slice()).map_err(redb::Error::from)?;
                jobs.remove(id).map_err(redb::Error::from)?;
                guests.remove(id).map_err(redb::Error::from)?;
                returned.remove(id).map_err(redb::Error::from)?;
                let mut raw = [0u8; 16];
                raw.copy_from_slice(id);
                removed.push(spillway_proto::JobId::from_bytes(raw));
            }
        }
        let messages = prune_messages(&txn, now_ms, retention, limit)?;
        txn.commit().map_err(redb::Error::from)?;
        if !removed.is_empty() || messages > 0 {
            self.note_staged(removed.len() + messages);
        }
        Ok(removed)
    }

    /// Gives the file's free pages back to the file system (after a large prune, at start-up:
    /// it needs the journal to itself). Returns whether it changed anything.
    pub fn compact(&mut self) -> Result<bool, JournalError> {
        self.flush()?;
        self.db
            .compact()
            .map_err(|e| JournalError::Storage(redb::Error::from(e)))
    }
}

#[cfg(test)]
mod tests;
