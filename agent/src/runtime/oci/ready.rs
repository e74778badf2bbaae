//! Namespaces wired ahead of the jobs that will use them: the CNI plugins take a good part of a
//! second's tenth per job (fork, exec, iptables), so a container job takes a namespace made
//! before it arrived and the next one is made behind it. Each is still used by one job only and
//! never made for nothing more than [`SPARE`] at a time. A namespace waiting in the pool is
//! marked (`ID.ready` beside it); the marks go when it is taken, and the agent releases what is
//! left when it stops (or, after a crash, at its next start, with every other leftover).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::network::Networks;

/// Namespaces kept ready (those being made count).
pub const SPARE: usize = 2;

#[derive(Debug)]
pub struct ReadyNetworks {
    networks: Networks,
    ready: Mutex<Vec<String>>,
    making: AtomicUsize,
    next: AtomicU64,
}

impl ReadyNetworks {
    pub fn new(networks: Networks) -> Self {
        Self {
            networks,
            ready: Mutex::new(Vec::new()),
            making: AtomicUsize::new(0),
            next: AtomicU64::new(1),
        }
    }

    pub fn networks(&self) -> &Networks {
        &self.networks
    }

    fn new_id(&self) -> String {
        format!("net-{}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// A wired namespace for one container (its id and path): a ready one, else one made now.
    /// Blocking.
    pub fn take(self: &Arc<Self>) -> Result<(String, PathBuf), String> {
        let ready = self.ready.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let id = match ready {
            Some(id) => {
                let _ = std::fs::remove_file(self.networks.marker(&id));
                id
            }
            None => {
                let id = self.new_id();
                self.networks.attach(&id)?;
                id
            }
        };
        self.refill();
        let path = self.networks.path(&id);
        Ok((id, path))
    }

    /// Starts making namespaces until [`SPARE`] are ready or being made, each on a thread.
    pub fn refill(self: &Arc<Self>) {
        loop {
            let ready = self.ready.lock().unwrap_or_else(|p| p.into_inner()).len();
            let making = self.making.load(Ordering::Acquire);
            if ready + making >= SPARE {
                return;
            }
            // Another caller counted in between: look again.
            if self
                .making
                .compare_exchange(making, making + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            let pool = self.clone();
            let made = std::thread::Builder::new()
                .name("netns-ready".into())
                .spawn(move || {
                    let id = pool.new_id();
                    match pool.networks.attach(&id) {
                        Ok(_) => {
                            let _ = std::fs::write(pool.networks.marker(&id), b"");
                            pool.ready
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(id);
                        }
                        Err(e) => tracing::warn!("cannot make a container network ahead: {e}"),
                    }
                    pool.making.fetch_sub(1, Ordering::AcqRel);
                });
            if made.is_err() {
                self.making.fetch_sub(1, Ordering::AcqRel);
                return;
            }
        }
    }

    /// Releases the namespaces still waiting (at stop). Blocking.
    pub fn release(&self) {
        let ready: Vec<String> =
            std::mem::take(&mut *self.ready.lock().unwrap_or_else(|p| p.into_inner()));
        for id in ready {
            self.networks.detach(&id);
        }
    }
}
