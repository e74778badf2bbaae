//! `-o table|json|yaml`: every listing can be read by a person or a script.

use comfy_table::{Table, presets};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// Prints `value` as JSON or YAML, or as the table `rows` builds.
pub fn print<T: Serialize>(
    format: Format,
    value: &T,
    header: &[&str],
    rows: impl FnOnce() -> Vec<Vec<String>>,
) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_saphyr::to_string(value)?),
        Format::Table => {
            let mut t = Table::new();
            t.load_preset(presets::NOTHING);
            t.set_header(header.to_vec());
            for row in rows() {
                t.add_row(row);
            }
            println!("{}", t.trim_fmt());
        }
    }
    Ok(())
}

/// `3s`, `5m`, `2h`, `4d`: how long ago, kubectl-style.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

pub fn since(at_ms: u64) -> String {
    age(spillway_plumbing::now_ms().saturating_sub(at_ms))
}

/// Time left until `at_ms` ("30d"), "expired", or "-" when unknown (0).
pub fn left(at_ms: u64) -> String {
    let now = spillway_plumbing::now_ms();
    match at_ms {
        0 => "-".into(),
        t if t <= now => "expired".into(),
        t => age(t - now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(age(999), "0s");
        assert_eq!(age(61_000), "1m");
        assert_eq!(age(7_300_000), "2h");
        assert_eq!(age(200_000_000), "2d");
    }
}
