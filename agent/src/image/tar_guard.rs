//! A bound on what the `tar` crate reads between two entries. It reads a GNU long name, a long
//! link target or a PAX extension header whole into memory before it yields the entry they
//! belong to, so a few MB of gzip could make it allocate gigabytes. Wrapped around the tar
//! stream, [`Allowance`] lets it read the previous entry's data plus [`BETWEEN_ENTRIES`] and
//! fails the read past that.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

/// Headers, long names and extension records of one entry: far above any real path (4096).
pub const BETWEEN_ENTRIES: u64 = 1 << 20;

/// Bytes the tar reader may still consume, shared by the reader and its owner.
#[derive(Debug, Clone)]
pub struct Allowance(Rc<Cell<u64>>);

impl Allowance {
    /// A guarded `inner` and the handle that tops its allowance up.
    pub fn wrap<R: Read>(inner: R) -> (Guarded<R>, Self) {
        let left = Rc::new(Cell::new(BETWEEN_ENTRIES));
        (
            Guarded {
                inner,
                left: left.clone(),
            },
            Self(left),
        )
    }

    /// An entry of `size` bytes was yielded: it may be read (or skipped), padded to 512, and
    /// the next entry's headers after it.
    pub fn entry(&self, size: u64) {
        let padded = size.div_ceil(512).saturating_mul(512);
        self.0.set(padded.saturating_add(BETWEEN_ENTRIES));
    }
}

#[derive(Debug)]
pub struct Guarded<R> {
    inner: R,
    left: Rc<Cell<u64>>,
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left.get();
        if left == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "an entry's name or extended header is larger than {BETWEEN_ENTRIES} bytes"
                ),
            ));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left.set(left - n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_long_name_is_refused_without_reading_it_whole() {
        // A GNU long-name entry announcing 64 MiB of name, then a file.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(64 << 20);
        h.as_gnu_mut().expect("gnu").name[..13].copy_from_slice(b"././@LongLink");
        h.set_cksum();
        b.append(&h, std::io::repeat(b'a').take(64 << 20))
            .expect("append");
        let bytes = b.into_inner().expect("tar");
        let (guarded, allowance) = Allowance::wrap(&bytes[..]);
        let mut archive = tar::Archive::new(guarded);
        let mut entries = archive.entries().expect("entries");
        let err = match entries.next() {
            Some(Err(e)) => e.to_string(),
            Some(Ok(_)) => panic!("expected a refusal, got an entry"),
            None => panic!("expected a refusal, got the end"),
        };
        drop(allowance);
        assert!(err.contains("larger than"), "{err}");
    }

    #[test]
    fn ordinary_archives_read_through() {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("{}/file", "d".repeat(300));
        let mut h = tar::Header::new_gnu();
        h.set_size(3 << 20);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, std::io::repeat(7).take(3 << 20))
            .expect("append");
        let bytes = b.into_inner().expect("tar");
        let (guarded, allowance) = Allowance::wrap(&bytes[..]);
        let mut archive = tar::Archive::new(guarded);
        let mut seen = 0;
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            allowance.entry(entry.size());
            assert_eq!(entry.path().expect("path").to_string_lossy(), long);
            std::io::copy(&mut entry, &mut std::io::sink()).expect("read");
            seen += 1;
        }
        assert_eq!(seen, 1);
    }
}
