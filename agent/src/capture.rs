//! Bounded capture of a job's stdout/stderr: the first and the last bytes are kept, the middle
//! of a chatty run is dropped (and counted), so one noisy function cannot fill a Pi's SD card.

use std::fmt::Write as _;

#[derive(Debug, Clone)]
pub struct Captured {
    limit: usize,
    head: Vec<u8>,
    tail: Vec<u8>,
    total: u64,
}

impl Captured {
    /// Keeps at most `limit` bytes: half from the start, half from the end.
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(2),
            head: Vec::new(),
            tail: Vec::new(),
            total: 0,
        }
    }

    pub fn push(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        let head_room = (self.limit / 2).saturating_sub(self.head.len());
        let take = head_room.min(data.len());
        self.head.extend_from_slice(&data[..take]);
        data = &data[take..];
        if data.is_empty() {
            return;
        }
        let keep = self.limit - self.limit / 2;
        self.tail.extend_from_slice(data);
        if self.tail.len() > keep * 2 {
            // Amortised trimming: only shift when the buffer has doubled.
            let cut = self.tail.len() - keep;
            self.tail.drain(..cut);
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// The kept text, with a marker where bytes were dropped.
    pub fn render(&self) -> String {
        let keep = self.limit - self.limit / 2;
        let tail = &self.tail[self.tail.len().saturating_sub(keep)..];
        let dropped = self.total - (self.head.len() + tail.len()) as u64;
        if dropped == 0 {
            // Decode as one piece: a character split between head and tail stays whole.
            return String::from_utf8_lossy(&[self.head.as_slice(), tail].concat()).into_owned();
        }
        let mut out = String::from_utf8_lossy(&self.head).into_owned();
        let _ = write!(out, "\n[… {dropped} bytes not kept …]\n");
        out.push_str(&String::from_utf8_lossy(tail));
        out
    }

    /// The last non-empty line, for one-line failure reasons.
    pub fn last_line(&self) -> Option<String> {
        self.render()
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| l.chars().take(200).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_output_is_kept_whole() {
        let mut c = Captured::new(64);
        c.push(b"hello ");
        c.push(b"world\n");
        assert_eq!(c.render(), "hello world\n");
        assert_eq!(c.last_line().as_deref(), Some("hello world"));
    }

    #[test]
    fn a_flood_keeps_the_start_and_the_end() {
        let mut c = Captured::new(10);
        for _ in 0..1000 {
            c.push(b"0123456789");
        }
        let text = c.render();
        assert!(text.starts_with("01234"), "{text}");
        assert!(text.ends_with("56789"), "{text}");
        assert!(text.contains("[… 9990 bytes not kept …]"), "{text}");
    }

    proptest! {
        #[test]
        fn memory_stays_bounded_and_nothing_is_miscounted(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 0..100)) {
            let mut c = Captured::new(32);
            let mut all = Vec::new();
            for ch in &chunks { c.push(ch); all.extend_from_slice(ch); }
            prop_assert!(c.head.len() + c.tail.len() <= 16 + 2 * 16 + 50);
            prop_assert_eq!(c.total(), all.len() as u64);
            if all.len() <= 32 { prop_assert_eq!(c.render(), String::from_utf8_lossy(&all).into_owned()); }
        }
    }
}
