//! Resource quantities as OSCAR writes them: Kubernetes-style CPU and memory amounts.
//!
//! CPU is kept in millicores and memory in bytes, so comparisons and slot arithmetic are exact.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A CPU amount in thousandths of a core (`0.5`, `"1.0"`, `"500m"` are 500, 1000, 500).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Millicores(pub u64);

/// A memory amount in bytes (`512Mi`, `1Gi`, `0.5Gi`, `128M`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Bytes(pub u64);

/// Why a quantity could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, displaydoc::Display)]
pub enum QuantityError {
    /// `{0}` is not a number: write e.g. `1`, `0.5` or `500m`
    NotANumber(String),
    /// `{0}` has an unknown unit `{1}`: use one of Ki, Mi, Gi, Ti, k, M, G, T (memory) or m (CPU)
    UnknownUnit(String, String),
    /// `{0}` must be greater than zero
    NotPositive(String),
    /// `{0}` is too large
    TooLarge(String),
}

impl Millicores {
    /// Parses `1`, `1.5`, `"0.25"` or `"250m"`.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let t = text.trim();
        let (number, scale) = match t.strip_suffix('m') {
            Some(n) => (n, 1.0),
            None => (t, 1000.0),
        };
        let value = parse_number(text, number)? * scale;
        positive(text, value).map(|v| Self(v.round() as u64))
    }

    /// In cores, as a fraction (1500m is 1.5).
    pub fn as_cores_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }
}

impl Bytes {
    /// Parses a Kubernetes quantity. A bare number is bytes, as in Kubernetes.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let t = text.trim();
        let split = t
            .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        if number.trim().is_empty() {
            return Err(QuantityError::NotANumber(text.to_owned()));
        }
        let multiplier: f64 = match unit {
            "" => 1.0,
            "Ki" => 1024.0,
            "Mi" => 1024.0 * 1024.0,
            "Gi" => 1024.0 * 1024.0 * 1024.0,
            "Ti" => 1024f64.powi(4),
            "Pi" => 1024f64.powi(5),
            "k" | "K" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            "T" => 1e12,
            "P" => 1e15,
            _ => return Err(QuantityError::UnknownUnit(text.to_owned(), unit.to_owned())),
        };
        let value = parse_number(text, number)? * multiplier;
        positive(text, value).map(|v| Self(v.round() as u64))
    }

    /// From mebibytes, the unit SCAR/Lambda use for a bare `memory: 1024`.
    pub fn from_mib(mib: u64) -> Self {
        Self(mib.saturating_mul(1024 * 1024))
    }

    pub fn as_mib(self) -> u64 {
        self.0 / (1024 * 1024)
    }
}

fn parse_number(original: &str, number: &str) -> Result<f64, QuantityError> {
    let n = number.trim();
    if n.is_empty() || n.starts_with('+') {
        return Err(QuantityError::NotANumber(original.to_owned()));
    }
    n.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| QuantityError::NotANumber(original.to_owned()))
}

fn positive(original: &str, value: f64) -> Result<f64, QuantityError> {
    if value <= 0.0 || value.round() < 1.0 {
        return Err(QuantityError::NotPositive(original.to_owned()));
    }
    // 2^53 keeps f64 exact and is far beyond any real machine.
    if value > 9.0e15 {
        return Err(QuantityError::TooLarge(original.to_owned()));
    }
    Ok(value)
}

impl fmt::Display for Millicores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}", self.0 / 1000)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("Ti", 1 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ];
        for (unit, size) in UNITS {
            if self.0 >= size {
                let value = self.0 as f64 / size as f64;
                return if self.0.is_multiple_of(size) {
                    write!(f, "{}{unit}", self.0 / size)
                } else {
                    write!(f, "{value:.1}{unit}")
                };
            }
        }
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_accepts_numbers_strings_and_millicores() {
        assert_eq!(Millicores::parse("1.0"), Ok(Millicores(1000)));
        assert_eq!(Millicores::parse("0.5"), Ok(Millicores(500)));
        assert_eq!(Millicores::parse("250m"), Ok(Millicores(250)));
        assert_eq!(Millicores::parse("2"), Ok(Millicores(2000)));
    }

    #[test]
    fn cpu_rejects_garbage_zero_and_negative() {
        assert!(matches!(
            Millicores::parse("lots"),
            Err(QuantityError::NotANumber(_))
        ));
        assert!(matches!(
            Millicores::parse("0"),
            Err(QuantityError::NotPositive(_))
        ));
        assert!(matches!(
            Millicores::parse("-1"),
            Err(QuantityError::NotPositive(_))
        ));
        assert!(matches!(
            Millicores::parse("0.0001"),
            Err(QuantityError::NotPositive(_))
        ));
    }

    #[test]
    fn memory_understands_binary_and_decimal_units() {
        assert_eq!(Bytes::parse("1Gi"), Ok(Bytes(1 << 30)));
        assert_eq!(Bytes::parse("512Mi"), Ok(Bytes(512 << 20)));
        assert_eq!(Bytes::parse("0.5Gi"), Ok(Bytes(512 << 20)));
        assert_eq!(Bytes::parse("2Gi"), Ok(Bytes(2 << 30)));
        assert_eq!(Bytes::parse("128M"), Ok(Bytes(128_000_000)));
        assert_eq!(Bytes::parse("4096"), Ok(Bytes(4096)));
        assert_eq!(Bytes::parse("1e3"), Ok(Bytes(1000)));
    }

    #[test]
    fn memory_names_the_bad_unit() {
        assert_eq!(
            Bytes::parse("1GB"),
            Err(QuantityError::UnknownUnit("1GB".into(), "GB".into()))
        );
        assert!(matches!(
            Bytes::parse("Gi"),
            Err(QuantityError::NotANumber(_))
        ));
    }

    #[test]
    fn quantities_display_the_way_users_write_them() {
        assert_eq!(Bytes(1 << 30).to_string(), "1Gi");
        assert_eq!(Bytes(1536 << 20).to_string(), "1.5Gi");
        assert_eq!(Millicores(1500).to_string(), "1500m");
        assert_eq!(Millicores(2000).to_string(), "2");
    }
}
