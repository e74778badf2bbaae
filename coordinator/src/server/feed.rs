//! The event feed: job and node changes, numbered, the last [`KEEP`] kept in memory for
//! `spillway get events` and for streams that resume (`Last-Event-ID`), and sent live to the
//! server-sent event streams behind `spillway get … --watch`.
//!
//! The feed is what the coordinator saw, for people and dashboards; it is not the ledger (a
//! restart starts it again from id 1, and a stream that asks for an older id is told it missed
//! events).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use spillway_api::events::{FeedEvent, FeedKind};
use tokio::sync::broadcast;

/// Events kept for listing and resuming.
pub const KEEP: usize = 10_000;

/// Streams open at once (each holds an API connection); more are refused with 503.
pub const MAX_STREAMS: usize = 64;

#[derive(Debug)]
pub struct Feed {
    kept: Mutex<VecDeque<Arc<FeedEvent>>>,
    live: broadcast::Sender<Arc<FeedEvent>>,
    /// Permits for open streams.
    pub streams: Arc<tokio::sync::Semaphore>,
}

impl Default for Feed {
    fn default() -> Self {
        Self {
            kept: Mutex::new(VecDeque::with_capacity(1024)),
            live: broadcast::channel(1024).0,
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
        }
    }
}

/// What a stream or a listing gets from the kept events.
#[derive(Debug)]
pub struct Since {
    pub events: Vec<Arc<FeedEvent>>,
    /// Events after the asked id were dropped before it could have them.
    pub missed: bool,
}

impl Feed {
    /// Records an event and sends it to the open streams.
    pub fn publish(
        &self,
        kind: FeedKind,
        name: &str,
        reason: &str,
        node: Option<&str>,
        function: Option<&str>,
        message: String,
    ) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let id = kept.back().map_or(1, |e| e.id + 1);
        let event = Arc::new(FeedEvent {
            id,
            at_ms: spillway_plumbing::now_ms(),
            kind,
            name: name.to_owned(),
            reason: reason.to_owned(),
            node: node.map(str::to_owned),
            function: function.map(str::to_owned),
            message,
        });
        if kept.len() == KEEP {
            kept.pop_front();
        }
        kept.push_back(event.clone());
        // Sent under the lock, so streams see events in id order.
        let _ = self.live.send(event);
    }

    /// The kept events after `after` (0: all kept), and a receiver for what comes next: taken
    /// together, so nothing falls between them.
    pub fn follow(&self, after: u64) -> (Since, broadcast::Receiver<Arc<FeedEvent>>) {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let rx = self.live.subscribe();
        (since(&kept, after), rx)
    }

    /// What comes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FeedEvent>> {
        self.live.subscribe()
    }

    pub fn since(&self, after: u64) -> Since {
        since(&self.kept.lock().unwrap_or_else(|e| e.into_inner()), after)
    }
}

fn since(kept: &VecDeque<Arc<FeedEvent>>, after: u64) -> Since {
    let first = kept.front().map_or(u64::MAX, |e| e.id);
    Since {
        missed: after > 0 && after.saturating_add(1) < first && !kept.is_empty(),
        events: kept.iter().filter(|e| e.id > after).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(feed: &Feed, reason: &str) {
        feed.publish(
            FeedKind::Job,
            "j",
            reason,
            Some("pi"),
            Some("f"),
            String::new(),
        );
    }

    #[test]
    fn ids_increase_and_a_resume_gets_only_what_came_after() {
        let feed = Feed::default();
        for r in ["Queued", "Running", "Succeeded"] {
            job(&feed, r);
        }
        let all = feed.since(0);
        assert_eq!(
            all.events.iter().map(|e| e.id).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let rest = feed.since(1);
        assert_eq!(rest.events.len(), 2);
        assert!(!rest.missed);
        assert!(feed.since(3).events.is_empty());
    }

    #[test]
    fn only_the_last_events_are_kept_and_an_older_resume_is_told_it_missed_some() {
        let feed = Feed::default();
        for _ in 0..KEEP + 5 {
            job(&feed, "Queued");
        }
        let all = feed.since(0);
        assert_eq!(all.events.len(), KEEP);
        assert_eq!(all.events[0].id, 6);
        let old = feed.since(2);
        assert!(old.missed);
        assert_eq!(old.events.len(), KEEP);
        assert!(!feed.since(5).missed);
    }

    #[tokio::test]
    async fn a_follower_gets_the_kept_events_then_the_live_ones_without_a_gap() {
        let feed = Feed::default();
        job(&feed, "Queued");
        let (kept, mut rx) = feed.follow(0);
        job(&feed, "Running");
        assert_eq!(kept.events.len(), 1);
        assert_eq!(rx.recv().await.unwrap().id, 2);
    }
}
