//! Bucket notifications already made into jobs, so that a redelivered notification (webhooks
//! retry until they are answered) is not a second run. A notification is the same one when its
//! object's `sequencer` is: S3 and MinIO give every write of an object a new one, identical
//! content included, so a new upload still makes a new job.
//!
//! Remembered in memory, for the last [`REMEMBERED`] notifications: a redelivery after a
//! coordinator restart, or older than that, is a new job.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// How many notifications are remembered (about 200 bytes each).
pub const REMEMBERED: usize = 8192;

/// (function, bucket, key, sequencer) of a notification.
pub type Seen = (String, String, String, String);

/// The jobs made of recent notifications: (job id, node).
#[derive(Debug, Default)]
pub struct Notified {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    jobs: HashMap<Seen, (String, String)>,
    order: VecDeque<Seen>,
}

impl Notified {
    /// The job this notification made already, if it was seen.
    pub fn made(&self, seen: &Seen) -> Option<(String, String)> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.jobs.get(seen).cloned()
    }

    /// Remembers the job a notification made, forgetting the oldest beyond [`REMEMBERED`].
    pub fn remember(&self, seen: Seen, job: String, node: String) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.jobs.insert(seen.clone(), (job, node)).is_none() {
            inner.order.push_back(seen);
        }
        while inner.order.len() > REMEMBERED {
            if let Some(old) = inner.order.pop_front() {
                inner.jobs.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(n: usize) -> Seen {
        ("f".into(), "b".into(), "k".into(), format!("{n:016X}"))
    }

    #[test]
    fn a_redelivery_finds_its_job_and_memory_stays_bounded() {
        let notified = Notified::default();
        notified.remember(seen(0), "job0".into(), "edge-1".into());
        assert_eq!(
            notified.made(&seen(0)),
            Some(("job0".into(), "edge-1".into()))
        );
        assert_eq!(
            notified.made(&seen(1)),
            None,
            "a new write is a new sequencer"
        );
        for n in 1..=REMEMBERED {
            notified.remember(seen(n), format!("job{n}"), "edge-1".into());
        }
        assert_eq!(notified.made(&seen(0)), None, "the oldest is forgotten");
        assert!(notified.made(&seen(REMEMBERED)).is_some());
        let inner = notified.inner.lock().expect("lock");
        assert_eq!(
            (inner.jobs.len(), inner.order.len()),
            (REMEMBERED, REMEMBERED)
        );
    }
}
