//! The agent's side of its link to the coordinator, as a sans-IO state machine: it is told what
//! happened and what time it is, and answers with what to do. The QUIC shell in the agent only
//! carries out the [`Action`]s, so every path here is tested without sockets or sleeps.
//!
//! `Backoff → Connecting → Handshaking → Steady`, back to `Backoff` on any loss, with
//! exponential, jittered backoff that resets once a connection has been steady for a while.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig {
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// From the QUIC handshake starting to the coordinator's `Welcome`.
    pub handshake_timeout: Duration,
    /// Load reports when nothing changes (the coordinator may override it in `Welcome`).
    pub report_interval: Duration,
    /// Significant changes are reported at once, but never more often than this.
    pub min_report_gap: Duration,
    /// A connection steady for this long resets the backoff.
    pub stable_after: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(10),
            report_interval: Duration::from_secs(1),
            min_report_gap: Duration::from_millis(100),
            stable_after: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Waiting before the next attempt.
    Backoff {
        until: Instant,
    },
    Connecting {
        since: Instant,
    },
    /// Connected, `Hello` sent, waiting for `Welcome`.
    Handshaking {
        since: Instant,
    },
    Steady {
        since: Instant,
    },
}

/// What happened, as the shell saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The QUIC (and TLS) handshake succeeded.
    Connected,
    /// The coordinator accepted our `Hello`.
    Welcomed { report_interval: Duration },
    /// The coordinator refused us (version, identity); retried slowly.
    Refused(String),
    /// Connecting failed or the connection broke.
    Lost(String),
    /// Our load changed significantly.
    LoadChanged,
}

/// What the shell must do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Connect,
    SendHello,
    SendReport,
    /// Give up on the current connection attempt or connection.
    Close(String),
}

#[derive(Debug)]
pub struct Link {
    cfg: LinkConfig,
    state: LinkState,
    failures: u32,
    report_interval: Duration,
    last_report: Option<Instant>,
    report_pending: bool,
    rng: u64,
    last_error: Option<String>,
}

impl Link {
    /// A link that connects at once. `seed` makes the jitter differ between agents (and
    /// repeatable in tests).
    pub fn new(cfg: LinkConfig, now: Instant, seed: u64) -> Self {
        Self {
            cfg,
            state: LinkState::Backoff { until: now },
            failures: 0,
            report_interval: cfg.report_interval,
            last_report: None,
            report_pending: false,
            rng: seed | 1,
            last_error: None,
        }
    }

    pub fn state(&self) -> LinkState {
        self.state
    }

    pub fn is_steady(&self) -> bool {
        matches!(self.state, LinkState::Steady { .. })
    }

    /// Why the last connection failed, for status output.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Consecutive failed attempts since the last stable connection.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Action> {
        match (self.state, input) {
            (LinkState::Connecting { .. }, Input::Connected) => {
                self.state = LinkState::Handshaking { since: now };
                vec![Action::SendHello]
            }
            (LinkState::Handshaking { .. }, Input::Welcomed { report_interval }) => {
                self.state = LinkState::Steady { since: now };
                self.report_interval = report_interval.max(self.cfg.min_report_gap);
                self.last_error = None;
                self.last_report = Some(now);
                vec![Action::SendReport]
            }
            (_, Input::Refused(reason)) => {
                // Refusals do not heal by hammering: wait the longest backoff.
                self.failures = self.failures.max(16);
                self.fail(now, reason)
            }
            (LinkState::Connecting { .. }, Input::Lost(reason))
            | (LinkState::Handshaking { .. }, Input::Lost(reason))
            | (LinkState::Steady { .. }, Input::Lost(reason)) => self.fail(now, reason),
            (LinkState::Steady { .. }, Input::LoadChanged) => {
                self.report_pending = true;
                self.poll(now)
            }
            _ => Vec::new(),
        }
    }

    /// Timers: call when [`Link::next_wakeup`] has passed (calling earlier is harmless).
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            LinkState::Backoff { until } if now >= until => {
                self.state = LinkState::Connecting { since: now };
                vec![Action::Connect]
            }
            LinkState::Connecting { since } | LinkState::Handshaking { since }
                if now >= since + self.cfg.handshake_timeout =>
            {
                let mut actions = vec![Action::Close("handshake timed out".into())];
                actions.extend(self.fail(now, "no answer from the coordinator".into()));
                actions
            }
            LinkState::Steady { since } => {
                if self.failures > 0 && now >= since + self.cfg.stable_after {
                    self.failures = 0;
                }
                let last = self.last_report.unwrap_or(since);
                let due = now >= last + self.report_interval
                    || (self.report_pending && now >= last + self.cfg.min_report_gap);
                if due {
                    self.last_report = Some(now);
                    self.report_pending = false;
                    vec![Action::SendReport]
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        }
    }

    /// When [`Link::poll`] next has something to do.
    pub fn next_wakeup(&self) -> Instant {
        match self.state {
            LinkState::Backoff { until } => until,
            LinkState::Connecting { since } | LinkState::Handshaking { since } => {
                since + self.cfg.handshake_timeout
            }
            LinkState::Steady { since } => {
                let last = self.last_report.unwrap_or(since);
                let gap = if self.report_pending {
                    self.cfg.min_report_gap
                } else {
                    self.report_interval
                };
                last + gap
            }
        }
    }

    fn fail(&mut self, now: Instant, reason: String) -> Vec<Action> {
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some(reason);
        self.report_pending = false;
        self.state = LinkState::Backoff {
            until: now + self.backoff(),
        };
        Vec::new()
    }

    /// `min · 2^(failures-1)`, capped, then scaled by a jitter in [0.5, 1.0) so agents cut off
    /// together do not come back together.
    fn backoff(&mut self) -> Duration {
        let exp = self.failures.saturating_sub(1).min(20);
        let base = self
            .cfg
            .backoff_min
            .saturating_mul(1u32 << exp)
            .min(self.cfg.backoff_max);
        // xorshift64: deterministic, dependency-free, good enough for jitter.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let jitter = 0.5 + (self.rng % 1000) as f64 / 2000.0;
        base.mul_f64(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(link: &mut Link, now: Instant) {
        assert_eq!(link.poll(now), vec![Action::Connect]);
        assert_eq!(link.handle(now, Input::Connected), vec![Action::SendHello]);
        let welcomed = link.handle(
            now,
            Input::Welcomed {
                report_interval: Duration::from_secs(1),
            },
        );
        assert_eq!(welcomed, vec![Action::SendReport]);
    }

    #[test]
    fn connects_at_once_then_reports_every_interval() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::default(), t0, 7);
        connect(&mut link, t0);
        assert!(link.is_steady());
        assert!(link.poll(t0 + Duration::from_millis(999)).is_empty());
        assert_eq!(link.next_wakeup(), t0 + Duration::from_secs(1));
        assert_eq!(
            link.poll(t0 + Duration::from_secs(1)),
            vec![Action::SendReport]
        );
    }

    #[test]
    fn significant_change_is_reported_at_once_but_rate_limited() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::default(), t0, 7);
        connect(&mut link, t0);
        // 10 ms after the last report: held back until the minimum gap has passed.
        let t = t0 + Duration::from_millis(10);
        assert!(link.handle(t, Input::LoadChanged).is_empty());
        assert_eq!(link.next_wakeup(), t0 + Duration::from_millis(100));
        let t = t0 + Duration::from_millis(100);
        assert_eq!(link.poll(t), vec![Action::SendReport]);
        // Later changes go out immediately.
        let t = t0 + Duration::from_millis(400);
        assert_eq!(link.handle(t, Input::LoadChanged), vec![Action::SendReport]);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let cfg = LinkConfig::default();
        let mut now = Instant::now();
        let mut link = Link::new(cfg, now, 42);
        let mut waits = Vec::new();
        for _ in 0..12 {
            assert_eq!(link.poll(now), vec![Action::Connect]);
            link.handle(now, Input::Lost("connection refused".into()));
            let LinkState::Backoff { until } = link.state() else {
                panic!("expected backoff");
            };
            waits.push(until - now);
            now = until;
        }
        assert!(waits[0] >= cfg.backoff_min / 2 && waits[0] < cfg.backoff_min);
        assert!(waits[3] > waits[0] * 3, "{waits:?}");
        assert!(waits.iter().all(|w| *w <= cfg.backoff_max), "{waits:?}");
        assert!(waits[11] >= cfg.backoff_max / 2, "{waits:?}");
        assert_eq!(link.last_error(), Some("connection refused"));
    }

    #[test]
    fn steady_connection_resets_the_backoff() {
        let cfg = LinkConfig::default();
        let mut now = Instant::now();
        let mut link = Link::new(cfg, now, 1);
        for _ in 0..6 {
            link.poll(now);
            link.handle(now, Input::Lost("down".into()));
            now = link.next_wakeup();
        }
        assert_eq!(link.failures(), 6);
        connect(&mut link, now);
        link.poll(now + cfg.stable_after);
        assert_eq!(link.failures(), 0);
        let t = now + cfg.stable_after;
        link.handle(t, Input::Lost("cut".into()));
        assert!(link.next_wakeup() - t < cfg.backoff_min);
    }

    #[test]
    fn unanswered_hello_times_out_and_retries() {
        let cfg = LinkConfig::default();
        let t0 = Instant::now();
        let mut link = Link::new(cfg, t0, 3);
        link.poll(t0);
        link.handle(t0, Input::Connected);
        let t = t0 + cfg.handshake_timeout;
        let actions = link.poll(t);
        assert!(matches!(actions[0], Action::Close(_)));
        assert!(matches!(link.state(), LinkState::Backoff { .. }));
    }

    #[test]
    fn refusal_waits_the_longest_backoff() {
        let cfg = LinkConfig::default();
        let t0 = Instant::now();
        let mut link = Link::new(cfg, t0, 9);
        link.poll(t0);
        link.handle(t0, Input::Connected);
        link.handle(t0, Input::Refused("protocol mismatch".into()));
        assert!(link.next_wakeup() - t0 >= cfg.backoff_max / 2);
        assert_eq!(link.last_error(), Some("protocol mismatch"));
    }

    #[test]
    fn no_report_is_sent_while_disconnected() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::default(), t0, 5);
        link.poll(t0);
        link.handle(t0, Input::Lost("x".into()));
        assert!(link.handle(t0, Input::LoadChanged).is_empty());
        assert!(link.poll(t0 + Duration::from_millis(50)).is_empty());
    }
}
