//! `-o table|wide|name|json|yaml`: every listing can be read by a person or a script.

use comfy_table::{Table, presets};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Columns for a terminal.
    Table,
    /// The table with every column (addresses, labels, versions, …).
    Wide,
    /// Names only, one per line, for scripts (`xargs`, loops).
    Name,
    Json,
    Yaml,
}

impl Format {
    /// Meant for a person reading a terminal (table, wide and name print as tables where a
    /// command has no list of names).
    pub fn is_table(self) -> bool {
        matches!(self, Self::Table | Self::Wide | Self::Name)
    }
}

/// A column header shown only with `-o wide`.
pub const WIDE: char = '+';

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
        Format::Name => {
            for row in rows() {
                if let Some(name) = row.into_iter().next() {
                    println!("{name}");
                }
            }
        }
        Format::Table | Format::Wide => println!("{}", table(format, header, rows())),
    }
    Ok(())
}

/// The table of `rows` under `header`: a column whose header starts with [`WIDE`] only with
/// `-o wide`.
pub fn table(format: Format, header: &[&str], rows: Vec<Vec<String>>) -> String {
    let shown: Vec<usize> = (0..header.len())
        .filter(|&i| format == Format::Wide || !header[i].starts_with(WIDE))
        .collect();
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(
        shown
            .iter()
            .map(|&i| header[i].trim_start_matches(WIDE))
            .collect::<Vec<_>>(),
    );
    for row in rows {
        t.add_row(
            shown
                .iter()
                .map(|&i| row.get(i).cloned().unwrap_or_default())
                .collect::<Vec<_>>(),
        );
    }
    t.trim_fmt()
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
