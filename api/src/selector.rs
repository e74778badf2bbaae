//! Label selectors as kubectl's `-l` takes them, the equality subset: `key=value`,
//! `key!=value` and `key` (present), joined by commas; every term must hold.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Is(String, String),
    IsNot(String, String),
    Has(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector(Vec<Term>);

/// The longest selector taken.
const MAX_LEN: usize = 1024;

impl std::str::FromStr for Selector {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.len() > MAX_LEN {
            return Err(format!("a selector is at most {MAX_LEN} bytes"));
        }
        let key = |k: &str| {
            let k = k.trim();
            let ok = !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
            ok.then(|| k.to_owned()).ok_or_else(|| {
                format!("`{k}` is not a label key (letters, digits, `-_./`), in selector `{text}`")
            })
        };
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            terms.push(if let Some((k, v)) = part.split_once("!=") {
                Term::IsNot(key(k)?, v.trim().to_owned())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Term::Is(key(k)?, v.trim().to_owned())
            } else {
                Term::Has(key(part)?)
            });
        }
        Ok(Selector(terms))
    }
}

/// The selector in the form it was parsed from (normalised), for query strings.
impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, term) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match term {
                Term::Is(k, v) => write!(f, "{k}={v}")?,
                Term::IsNot(k, v) => write!(f, "{k}!={v}")?,
                Term::Has(k) => f.write_str(k)?,
            }
        }
        Ok(())
    }
}

impl Selector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|term| match term {
            Term::Is(k, v) => labels.get(k) == Some(v),
            Term::IsNot(k, v) => labels.get(k) != Some(v),
            Term::Has(k) => labels.contains_key(k),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_term_must_hold() {
        let s: Selector = "zone=kitchen, board!=zero,gpu".parse().expect("selector");
        assert_eq!(s.to_string(), "zone=kitchen,board!=zero,gpu");
        assert_eq!(s.to_string().parse::<Selector>().expect("again"), s);
        assert!(s.matches(&labels(&[
            ("zone", "kitchen"),
            ("board", "pi4"),
            ("gpu", "")
        ])));
        assert!(!s.matches(&labels(&[
            ("zone", "kitchen"),
            ("board", "zero"),
            ("gpu", "")
        ])));
        assert!(!s.matches(&labels(&[("zone", "kitchen"), ("board", "pi4")])));
        assert!(!s.matches(&labels(&[("zone", "hall"), ("gpu", "")])));
        let everyone: Selector = "".parse().expect("empty");
        assert!(everyone.matches(&labels(&[])));
        let double: Selector = "zone==kitchen".parse().expect("==");
        assert!(double.matches(&labels(&[("zone", "kitchen")])));
    }

    #[test]
    fn bad_keys_and_huge_selectors_are_refused_with_the_selector_named() {
        let err = "zone kitchen=1".parse::<Selector>().expect_err("space");
        assert!(err.contains("`zone kitchen` is not a label key"), "{err}");
        assert!("=x".parse::<Selector>().is_err());
        assert!("a=".repeat(600).parse::<Selector>().is_err());
    }
}
