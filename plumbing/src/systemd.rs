//! Running under systemd (`Type=notify`): say when the service is ready and when it stops, and
//! pet the watchdog only while the work loop is alive, so a wedged process is restarted.
//! Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// When a work loop last went round, shared with the watchdog.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    origin: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Heartbeat {
    /// The loop is alive now.
    pub fn beat(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long ago the loop last went round.
    pub fn age(&self) -> Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

fn tell(state: &[NotifyState]) {
    // Functions start with a cleared environment, so the variables are kept for later calls.
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!("cannot notify the service manager: {e}");
    }
}

/// Start-up is done; `status` is what `systemctl status` shows.
pub fn ready(status: &str) {
    tell(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    tell(&[NotifyState::Status(status)]);
}

pub fn stopping() {
    tell(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The watchdog interval systemd asked for (`WatchdogSec=`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec))
}

/// Pets the watchdog at half its interval while `heartbeat` is younger than `stale`; stops
/// petting (so systemd restarts the service) when the loop stops going round.
pub fn spawn_watchdog(
    heartbeat: Heartbeat,
    stale: Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    let interval = watchdog_interval()?;
    tracing::info!("systemd watchdog every {:.1}s", interval.as_secs_f64());
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval / 2);
        let mut warned = false;
        loop {
            tick.tick().await;
            let age = heartbeat.age();
            if age <= stale {
                tell(&[NotifyState::Watchdog]);
                warned = false;
            } else if !warned {
                tracing::error!(
                    "the work loop has not gone round for {:.1}s; no longer petting the watchdog",
                    age.as_secs_f64()
                );
                warned = true;
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_ages_until_the_next_beat() {
        let h = Heartbeat::default();
        h.beat();
        assert!(h.age() < Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(30));
        assert!(h.age() >= Duration::from_millis(30));
        h.clone().beat();
        assert!(h.age() < Duration::from_millis(30), "clones share the beat");
    }
}
