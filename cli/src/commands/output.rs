//! `-o table|wide|name|json|yaml|jsonpath=TEMPLATE`: every listing can be read by a person or a
//! script.

use std::sync::OnceLock;

use comfy_table::{Table, presets};
use serde::Serialize;

use super::jsonpath::Template;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Columns for a terminal.
    Table,
    /// The table with every column (addresses, labels, versions, …).
    Wide,
    /// Names only, one per line, for scripts (`xargs`, loops).
    Name,
    Json,
    Yaml,
    /// `jsonpath=TEMPLATE`: kubectl's templates (the template is [`jsonpath_template`]).
    JsonPath,
}

/// The template of `-o jsonpath=…`, parsed once when the flag is (one per process, as the flag).
static JSONPATH: OnceLock<Template> = OnceLock::new();

fn jsonpath_template() -> Option<&'static Template> {
    JSONPATH.get()
}

impl Format {
    /// The `-o` flag's value parser.
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "table" => Self::Table,
            "wide" => Self::Wide,
            "name" => Self::Name,
            "json" => Self::Json,
            "yaml" => Self::Yaml,
            _ => {
                let Some(template) = text.strip_prefix("jsonpath=") else {
                    return Err(format!(
                        "`{text}`: use table, wide, name, json, yaml or jsonpath=TEMPLATE"
                    ));
                };
                let template = Template::parse(template)?;
                // A second -o replaces the first, as clap does with the flag.
                let _ = JSONPATH.set(template);
                Self::JsonPath
            }
        })
    }

    /// Prints `value` as JSON, YAML or the `-o jsonpath` template; `false` for the table
    /// formats, which the caller prints its own way.
    pub fn print_data<T: Serialize>(self, value: &T) -> anyhow::Result<bool> {
        match self {
            Self::Json => println!("{}", serde_json::to_string_pretty(value)?),
            Self::Yaml => print!("{}", serde_saphyr::to_string(value)?),
            Self::JsonPath => {
                let value = serde_json::to_value(value)?;
                if let Some(t) = jsonpath_template() {
                    // Ends with a newline, once: a shell prompt never runs on after it.
                    let text = t.render(&value);
                    if text.ends_with('\n') {
                        print!("{text}");
                    } else {
                        println!("{text}");
                    }
                }
            }
            Self::Table | Self::Wide | Self::Name => return Ok(false),
        }
        Ok(true)
    }

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
    if format.print_data(value)? {
        return Ok(());
    }
    match format {
        Format::Json | Format::Yaml | Format::JsonPath => {}
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
