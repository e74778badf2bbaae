//! The agent's side of its link to the coordinator, as a sans-IO state machine: it is told what
//! happened and what time it is, and answers with what to do. The QUIC shell in the agent only
//! carries out the [`Action`]s, so every path here is tested without sockets or sleeps.
//!
//! `Backoff → Connecting → Handshaking → Steady`, back to `Backoff` on any loss, with
//! exponential, jittered backoff that resets once a connection has been steady for a while.
//!
//! Each connection attempt has a generation; what an abandoned connection still reports is
//! ignored. The machine also says when the link becomes usable ([`Action::Linked`]: resend
//! recent jobs, resume hand-overs, let offers out) and when it stops being so, and it puts the
//! coordinator's deployments in force one at a time, in the order they came, acknowledging each
//! on the connection it came on.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::wire::{DeployAck, Deployment};

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

/// What happened, as the shell saw it. `generation` names the connection attempt it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The QUIC (and TLS) handshake succeeded.
    Connected { generation: u64 },
    /// The coordinator accepted our `Hello`.
    Welcomed {
        generation: u64,
        report_interval: Duration,
    },
    /// The coordinator refused us (version, identity); retried slowly.
    Refused { generation: u64, reason: String },
    /// Connecting failed or the connection broke.
    Lost { generation: u64, reason: String },
    /// Our load changed significantly.
    LoadChanged,
    /// The coordinator sent a function set to put in force.
    Deployment {
        generation: u64,
        deployment: Box<Deployment>,
    },
    /// The agent put the deployment it was given in force (or refused it, as the ack says).
    Deployed(DeployAck),
}

/// What the shell must do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open connection attempt `generation`.
    Connect {
        generation: u64,
    },
    /// Introduce this agent, naming the deployment in force.
    SendHello {
        deployed: [u8; 32],
    },
    SendReport,
    /// Give up on the current connection attempt or connection.
    Close(String),
    /// The link is usable: send the recent jobs (the coordinator may have missed updates),
    /// offer again what is unanswered, send guest results again, let new offers out.
    Linked,
    /// The link is no longer usable; offers wait for the next [`Action::Linked`].
    Unlinked(String),
    /// Put this deployment in force; answer with [`Input::Deployed`].
    Apply(Box<Deployment>),
    /// Tell the coordinator a deployment is in force.
    SendDeployAck(DeployAck),
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
    /// The current (or last) connection attempt.
    generation: u64,
    /// The deployment in force, named in every `Hello`.
    deployed: [u8; 32],
    /// The deployment being put in force, by the generation it came on.
    applying: Option<u64>,
    waiting: VecDeque<(u64, Box<Deployment>)>,
}

/// Deployments waiting to be put in force; a coordinator that sends more is resending, and
/// only the newest matters.
const MAX_WAITING_DEPLOYMENTS: usize = 8;

impl Link {
    /// A link that connects at once. `seed` makes the jitter differ between agents (and
    /// repeatable in tests).
    pub fn new(cfg: LinkConfig, now: Instant, seed: u64, deployed: [u8; 32]) -> Self {
        Self {
            generation: 0,
            deployed,
            applying: None,
            waiting: VecDeque::new(),
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

    /// The connection attempt that counts now; reports about others are stale.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The deployment in force.
    pub fn deployed(&self) -> [u8; 32] {
        self.deployed
    }

    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Action> {
        let current = self.generation;
        match (self.state, input) {
            (_, Input::Deployed(ack)) => self.in_force(ack),
            (
                _,
                Input::Connected { generation }
                | Input::Welcomed { generation, .. }
                | Input::Refused { generation, .. }
                | Input::Lost { generation, .. }
                | Input::Deployment { generation, .. },
            ) if generation != current => Vec::new(),
            (LinkState::Connecting { .. }, Input::Connected { .. }) => {
                self.state = LinkState::Handshaking { since: now };
                vec![Action::SendHello {
                    deployed: self.deployed,
                }]
            }
            (
                LinkState::Handshaking { .. },
                Input::Welcomed {
                    report_interval, ..
                },
            ) => {
                self.state = LinkState::Steady { since: now };
                self.report_interval = report_interval.max(self.cfg.min_report_gap);
                self.last_error = None;
                self.last_report = Some(now);
                vec![Action::SendReport, Action::Linked]
            }
            (_, Input::Refused { reason, .. }) => {
                // Refusals do not heal by hammering: wait the longest backoff.
                self.failures = self.failures.max(16);
                let mut actions = vec![Action::Close("refused".into())];
                actions.extend(self.fail(now, reason));
                actions
            }
            (
                LinkState::Connecting { .. }
                | LinkState::Handshaking { .. }
                | LinkState::Steady { .. },
                Input::Lost { reason, .. },
            ) => {
                let mut actions = vec![Action::Close("lost".into())];
                actions.extend(self.fail(now, reason));
                actions
            }
            (LinkState::Steady { .. }, Input::LoadChanged) => {
                self.report_pending = true;
                self.poll(now)
            }
            (_, Input::Deployment { deployment, .. }) => {
                if self.applying.is_none() {
                    self.applying = Some(current);
                    return vec![Action::Apply(deployment)];
                }
                if self.waiting.len() >= MAX_WAITING_DEPLOYMENTS {
                    self.waiting.pop_front();
                }
                self.waiting.push_back((current, deployment));
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// A deployment is in force: acknowledged on the connection it came on (a later one
    /// learns it from `Hello`), and the next one applied.
    fn in_force(&mut self, ack: DeployAck) -> Vec<Action> {
        self.deployed = ack.deployment;
        let mut actions = Vec::new();
        if self.applying.take() == Some(self.generation) && self.is_steady() {
            actions.push(Action::SendDeployAck(ack));
        }
        if let Some((generation, next)) = self.waiting.pop_front() {
            self.applying = Some(generation);
            actions.push(Action::Apply(next));
        }
        actions
    }

    /// Timers: call when [`Link::next_wakeup`] has passed (calling earlier is harmless).
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            LinkState::Backoff { until } if now >= until => {
                self.state = LinkState::Connecting { since: now };
                self.generation += 1;
                vec![Action::Connect {
                    generation: self.generation,
                }]
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
        let was_linked = self.is_steady();
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some(reason.clone());
        self.report_pending = false;
        self.state = LinkState::Backoff {
            until: now + self.backoff(),
        };
        if was_linked {
            vec![Action::Unlinked(reason)]
        } else {
            Vec::new()
        }
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

    fn new(now: Instant, seed: u64) -> Link {
        Link::new(LinkConfig::default(), now, seed, [0; 32])
    }

    fn connect(link: &mut Link, now: Instant) {
        let generation = link.generation() + 1;
        assert_eq!(link.poll(now), vec![Action::Connect { generation }]);
        assert_eq!(
            link.handle(now, Input::Connected { generation }),
            vec![Action::SendHello {
                deployed: link.deployed()
            }]
        );
        let welcomed = link.handle(
            now,
            Input::Welcomed {
                generation,
                report_interval: Duration::from_secs(1),
            },
        );
        assert_eq!(welcomed, vec![Action::SendReport, Action::Linked]);
    }

    fn lost(link: &Link, reason: &str) -> Input {
        Input::Lost {
            generation: link.generation(),
            reason: reason.into(),
        }
    }

    #[test]
    fn connects_at_once_then_reports_every_interval() {
        let t0 = Instant::now();
        let mut link = new(t0, 7);
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
        let mut link = new(t0, 7);
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
        let mut link = Link::new(cfg, now, 42, [0; 32]);
        let mut waits = Vec::new();
        for _ in 0..12 {
            assert!(matches!(link.poll(now)[..], [Action::Connect { .. }]));
            link.handle(now, lost(&link, "connection refused"));
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
        let mut link = Link::new(cfg, now, 1, [0; 32]);
        for _ in 0..6 {
            link.poll(now);
            link.handle(now, lost(&link, "down"));
            now = link.next_wakeup();
        }
        assert_eq!(link.failures(), 6);
        connect(&mut link, now);
        link.poll(now + cfg.stable_after);
        assert_eq!(link.failures(), 0);
        let t = now + cfg.stable_after;
        assert_eq!(
            link.handle(t, lost(&link, "cut")),
            vec![Action::Close("lost".into()), Action::Unlinked("cut".into())]
        );
        assert!(link.next_wakeup() - t < cfg.backoff_min);
    }

    #[test]
    fn unanswered_hello_times_out_and_retries() {
        let cfg = LinkConfig::default();
        let t0 = Instant::now();
        let mut link = Link::new(cfg, t0, 3, [0; 32]);
        link.poll(t0);
        link.handle(t0, Input::Connected { generation: 1 });
        let t = t0 + cfg.handshake_timeout;
        let actions = link.poll(t);
        assert!(matches!(actions[0], Action::Close(_)));
        assert!(matches!(link.state(), LinkState::Backoff { .. }));
    }

    #[test]
    fn refusal_waits_the_longest_backoff() {
        let cfg = LinkConfig::default();
        let t0 = Instant::now();
        let mut link = Link::new(cfg, t0, 9, [0; 32]);
        link.poll(t0);
        link.handle(t0, Input::Connected { generation: 1 });
        link.handle(
            t0,
            Input::Refused {
                generation: 1,
                reason: "protocol mismatch".into(),
            },
        );
        assert!(link.next_wakeup() - t0 >= cfg.backoff_max / 2);
        assert_eq!(link.last_error(), Some("protocol mismatch"));
    }

    #[test]
    fn no_report_is_sent_while_disconnected() {
        let t0 = Instant::now();
        let mut link = new(t0, 5);
        link.poll(t0);
        link.handle(t0, lost(&link, "x"));
        assert!(link.handle(t0, Input::LoadChanged).is_empty());
        assert!(link.poll(t0 + Duration::from_millis(50)).is_empty());
    }

    fn deployment(n: u8) -> Box<Deployment> {
        Box::new(Deployment {
            functions: vec![crate::wire::FunctionBundle {
                name: format!("f{n}"),
                def_json: "{}".into(),
                files: vec![],
            }],
        })
    }

    fn ack(d: &Deployment) -> DeployAck {
        DeployAck {
            deployment: d.digest(),
            running: vec![],
            refused: vec![],
        }
    }

    #[test]
    fn what_an_abandoned_connection_reports_is_ignored() {
        let t0 = Instant::now();
        let mut link = new(t0, 11);
        connect(&mut link, t0);
        link.handle(t0, lost(&link, "cut"));
        let t = link.next_wakeup();
        assert_eq!(link.poll(t), vec![Action::Connect { generation: 2 }]);
        assert!(
            link.handle(t, Input::Connected { generation: 1 })
                .is_empty()
        );
        let stale = Input::Lost {
            generation: 1,
            reason: "old reader ended".into(),
        };
        assert!(link.handle(t, stale).is_empty(), "the new attempt goes on");
        assert!(matches!(link.state(), LinkState::Connecting { .. }));
    }

    #[test]
    fn deployments_are_applied_one_at_a_time_in_order_and_acked_on_their_connection() {
        let t0 = Instant::now();
        let mut link = new(t0, 13);
        connect(&mut link, t0);
        let (d1, d2) = (deployment(1), deployment(2));
        let generation = link.generation();
        let sent = |d: &Deployment| Input::Deployment {
            generation,
            deployment: Box::new(d.clone()),
        };
        assert_eq!(link.handle(t0, sent(&d1)), vec![Action::Apply(d1.clone())]);
        assert!(link.handle(t0, sent(&d2)).is_empty(), "waits for the first");
        assert_eq!(
            link.handle(t0, Input::Deployed(ack(&d1))),
            vec![Action::SendDeployAck(ack(&d1)), Action::Apply(d2.clone())]
        );
        // The link breaks while the second is applied: its ack is not sent on the next
        // connection, whose Hello names it instead.
        link.handle(t0, lost(&link, "cut"));
        assert!(link.handle(t0, Input::Deployed(ack(&d2))).is_empty());
        let t = link.next_wakeup();
        link.poll(t);
        let hello = link.handle(
            t,
            Input::Connected {
                generation: link.generation(),
            },
        );
        assert_eq!(
            hello,
            vec![Action::SendHello {
                deployed: d2.digest()
            }]
        );
    }
}
