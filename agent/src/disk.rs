//! Room on disk. A board's SD card fills up (a function's outputs, a log nobody rotates, an
//! image pull): the agent then stops taking new inputs before its journal has no room to
//! commit, lets what runs finish, and takes inputs again once there is room. The decision is
//! sans-IO ([`DiskGuard`]); [`free_bytes`] measures.

use std::path::Path;

/// Whether the agent takes new inputs, judged from the free space it is shown. It stops below
/// `min_free` and starts again only above twice that, so a disk hovering at the line does not
/// flip it at every look.
#[derive(Debug, Clone)]
pub struct DiskGuard {
    min_free: u64,
    full: bool,
}

/// A change of [`DiskGuard`]'s verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Below `min_free`: stop taking inputs.
    Full { free: u64, min_free: u64 },
    /// Above twice `min_free` again: take inputs.
    Room { free: u64 },
}

impl DiskGuard {
    /// `min_free` 0: never full.
    pub fn new(min_free: u64) -> Self {
        Self {
            min_free,
            full: false,
        }
    }

    pub fn is_full(&self) -> bool {
        self.full
    }

    /// Takes a measurement of the free space; says when the verdict turns.
    pub fn observe(&mut self, free: u64) -> Option<Turn> {
        if self.min_free == 0 {
            return None;
        }
        if !self.full && free < self.min_free {
            self.full = true;
            return Some(Turn::Full {
                free,
                min_free: self.min_free,
            });
        }
        if self.full && free > self.min_free.saturating_mul(2) {
            self.full = false;
            return Some(Turn::Room { free });
        }
        None
    }
}

/// The space an unprivileged writer may still use on the file systems holding `paths`: the
/// least of them (the state folder and the data root may be on different ones).
pub fn free_bytes<'a>(paths: impl IntoIterator<Item = &'a Path>) -> std::io::Result<u64> {
    let mut least = u64::MAX;
    for path in paths {
        let stat = rustix::fs::statvfs(path)?;
        least = least.min(stat.f_bavail.saturating_mul(stat.f_frsize));
    }
    Ok(least)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn it_stops_below_the_line_and_starts_again_only_well_above_it() {
        let mut g = DiskGuard::new(64 * MIB);
        assert_eq!(g.observe(500 * MIB), None);
        assert_eq!(
            g.observe(60 * MIB),
            Some(Turn::Full {
                free: 60 * MIB,
                min_free: 64 * MIB
            })
        );
        assert!(g.is_full());
        // Back just over the line: still full (no flapping at the line).
        assert_eq!(g.observe(70 * MIB), None);
        assert_eq!(g.observe(128 * MIB), None);
        assert_eq!(g.observe(129 * MIB), Some(Turn::Room { free: 129 * MIB }));
        assert!(!g.is_full());
    }

    #[test]
    fn no_line_means_never_full() {
        let mut g = DiskGuard::new(0);
        assert_eq!(g.observe(0), None);
        assert!(!g.is_full());
    }

    proptest! {
        /// Turns alternate (never full twice or room twice in a row), and the verdict always
        /// matches the last turn.
        #[test]
        fn turns_alternate_and_the_verdict_follows_them(
            line in 1u64..1_000,
            seen in prop::collection::vec(0u64..3_000, 1..200),
        ) {
            let mut g = DiskGuard::new(line);
            let mut last_full = false;
            for free in seen {
                match g.observe(free) {
                    Some(Turn::Full { .. }) => {
                        prop_assert!(!last_full && free < line);
                        last_full = true;
                    }
                    Some(Turn::Room { .. }) => {
                        prop_assert!(last_full && free > 2 * line);
                        last_full = false;
                    }
                    None => {}
                }
                prop_assert_eq!(g.is_full(), last_full);
            }
        }
    }

    #[test]
    fn free_space_is_measured_on_the_tightest_file_system() {
        let dir = tempfile::tempdir().expect("tmp");
        let free = free_bytes([dir.path(), Path::new("/")]).expect("statvfs");
        assert!(free > 0 && free < u64::MAX);
        assert!(free_bytes([Path::new("/nonexistent/x")]).is_err());
    }
}
