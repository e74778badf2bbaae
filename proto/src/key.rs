//! Object keys: the path of a file relative to a bucket folder (`img/cam1.jpg`).
//!
//! Every key that comes from outside (a file name seen by inotify, an S3 notification, an HTTP
//! request, a function's output file) passes through [`ObjectKey::parse`] before it touches the
//! file system, so no key can name anything outside the folder it is joined to.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Longest key accepted, in bytes (S3's own limit).
pub const MAX_KEY_LEN: usize = 1024;

/// A relative, normalised, UTF-8 path with no `..`, no empty or `.` segments and no control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectKey(String);

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, displaydoc::Display)]
pub enum KeyError {
    /// the name is empty
    Empty,
    /// the name is not valid UTF-8; rename the file using UTF-8 characters
    NotUtf8,
    /// the name `{0}` is absolute; use a path relative to the folder
    Absolute(String),
    /// the name `{0}` contains a `..` segment, which could escape the folder
    ParentSegment(String),
    /// the name `{0}` contains an empty or `.` segment
    EmptySegment(String),
    /// the name {0:?} contains the control character U+{1:04X}; rename the file
    ControlCharacter(String, u32),
    /// the name is {0} bytes long; the limit is 1024
    TooLong(usize),
}

impl ObjectKey {
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        if text.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong(text.len()));
        }
        if let Some(c) = text.chars().find(|c| c.is_control()) {
            return Err(KeyError::ControlCharacter(text.to_owned(), c as u32));
        }
        if text.starts_with('/') || text.starts_with('\\') {
            return Err(KeyError::Absolute(text.to_owned()));
        }
        for segment in text.split('/') {
            match segment {
                ".." => return Err(KeyError::ParentSegment(text.to_owned())),
                "" | "." => return Err(KeyError::EmptySegment(text.to_owned())),
                _ => {}
            }
        }
        Ok(Self(text.to_owned()))
    }

    /// A key from a path relative to some folder, as the file system reports it.
    pub fn from_relative_path(path: &Path) -> Result<Self, KeyError> {
        let text = path.to_str().ok_or(KeyError::NotUtf8)?;
        Self::parse(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment: the file name a function sees as `FILE_NAME`.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// `base` joined with this key; always inside `base` by construction.
    pub fn under(&self, base: &Path) -> PathBuf {
        base.join(&self.0)
    }
}

impl TryFrom<String> for ObjectKey {
    type Error = KeyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ObjectKey> for String {
    fn from(key: ObjectKey) -> Self {
        key.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ordinary_names_and_nested_keys_are_accepted() {
        assert_eq!(
            ObjectKey::parse("cam1.jpg").map(|k| k.file_name().to_owned()),
            Ok("cam1.jpg".into())
        );
        assert_eq!(
            ObjectKey::parse("day 1/cam..1.jpg").map(|k| k.file_name().to_owned()),
            Ok("cam..1.jpg".into())
        );
    }

    #[test]
    fn escaping_and_hostile_names_are_refused_with_a_reason() {
        assert_eq!(
            ObjectKey::parse("../etc/passwd"),
            Err(KeyError::ParentSegment("../etc/passwd".into()))
        );
        assert_eq!(
            ObjectKey::parse("a/../../b"),
            Err(KeyError::ParentSegment("a/../../b".into()))
        );
        assert_eq!(
            ObjectKey::parse("/etc/passwd"),
            Err(KeyError::Absolute("/etc/passwd".into()))
        );
        assert_eq!(
            ObjectKey::parse("a//b"),
            Err(KeyError::EmptySegment("a//b".into()))
        );
        assert_eq!(
            ObjectKey::parse("bad\nname"),
            Err(KeyError::ControlCharacter("bad\nname".into(), 10))
        );
        assert_eq!(ObjectKey::parse(""), Err(KeyError::Empty));
        assert!(matches!(
            ObjectKey::parse(&"x".repeat(2000)),
            Err(KeyError::TooLong(2000))
        ));
        let message = KeyError::ControlCharacter("a\u{1b}b".into(), 0x1b).to_string();
        assert!(message.contains("U+001B"), "{message}");
    }

    proptest! {
        #[test]
        fn any_accepted_key_stays_inside_its_base(s in "[a-z./\\x00-\\x1f]{1,24}") {
            if let Ok(key) = ObjectKey::parse(&s) {
                let base = Path::new("/data/bucket");
                let joined = key.under(base);
                prop_assert!(joined.starts_with(base));
                prop_assert!(joined.components().all(|c| !matches!(c, std::path::Component::ParentDir)));
            }
        }
    }
}
