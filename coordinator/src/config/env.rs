//! Settings from the environment, over the config file: what a container orchestrator sets
//! (`docker run -e`, a Kubernetes Deployment's `env`) without mounting a file of its own. Each
//! variable replaces one key of the file before it is read, so the file's checks apply to it.

use toml::{Table, Value};

/// The variables read, the key each replaces, and whether it is a comma-separated list.
pub const VARIABLES: [(&str, &[&str], bool); 9] = [
    ("SPILLWAY_NAME", &["name"], false),
    ("SPILLWAY_STATE_DIR", &["state_dir"], false),
    ("SPILLWAY_QUIC_LISTEN", &["quic", "listen"], false),
    ("SPILLWAY_HTTP_LISTEN", &["http", "listen"], false),
    ("SPILLWAY_HTTP_TLS_NAMES", &["http", "tls_names"], true),
    ("SPILLWAY_METRICS_LISTEN", &["metrics", "listen"], false),
    ("SPILLWAY_MQTT_TLS_LISTEN", &["mqtt", "tls_listen"], false),
    ("SPILLWAY_MQTT_TLS_NAMES", &["mqtt", "tls_names"], true),
    ("SPILLWAY_PUBLIC_URL", &["replicas", "public_url"], false),
];

/// Prefixes of settings variables: one of them that is not in `VARIABLES` is a typo, refused
/// rather than silently ignored.
const SETTINGS_PREFIXES: [&str; 5] = [
    "SPILLWAY_QUIC_",
    "SPILLWAY_HTTP_",
    "SPILLWAY_METRICS_",
    "SPILLWAY_MQTT_",
    "SPILLWAY_STATE_",
];

/// At most this long: a value is one address, path, URL or a short list of names.
const MAX_VALUE: usize = 4096;

/// `text` (the config file) with the settings among `vars` applied, as TOML again.
pub fn overlay(
    text: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<String, String> {
    let mut table: Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut applied = false;
    for (name, value) in vars {
        let Some((_, path, list)) = VARIABLES.iter().find(|(n, _, _)| *n == name) else {
            if SETTINGS_PREFIXES.iter().any(|p| name.starts_with(p)) {
                return Err(format!(
                    "{name} is not a setting: the environment may set {}",
                    VARIABLES.map(|v| v.0).join(", ")
                ));
            }
            continue;
        };
        if value.len() > MAX_VALUE {
            return Err(format!("{name} is longer than {MAX_VALUE} bytes"));
        }
        let value = if *list {
            Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_owned()))
                    .collect(),
            )
        } else {
            Value::String(value)
        };
        set(&mut table, path, value).map_err(|e| format!("{name}: {e}"))?;
        applied = true;
    }
    if !applied {
        return Ok(text.to_owned());
    }
    toml::to_string(&table).map_err(|e| e.to_string())
}

fn set(table: &mut Table, path: &[&str], value: Value) -> Result<(), String> {
    match path {
        [key] => {
            table.insert((*key).to_owned(), value);
            Ok(())
        }
        [section, rest @ ..] => match table
            .entry((*section).to_owned())
            .or_insert_with(|| Value::Table(Table::new()))
        {
            Value::Table(inner) => set(inner, rest, value),
            _ => Err(format!("the file's `{section}` is not a section")),
        },
        [] => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CoordinatorConfig;
    use std::path::Path;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn variables_replace_the_files_keys_and_add_missing_sections() {
        let file = "name = \"c\"\n[http]\nlisten = \"127.0.0.1:7480\"\n";
        let text = overlay(
            file,
            vars(&[
                ("SPILLWAY_HTTP_LISTEN", "0.0.0.0:7480"),
                ("SPILLWAY_HTTP_TLS_NAMES", "coordinator.lan, 10.0.0.5,"),
                ("SPILLWAY_QUIC_LISTEN", "0.0.0.0:7443"),
                ("SPILLWAY_STATE_DIR", "/data"),
                ("SPILLWAY_LOG", "debug"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        let c = CoordinatorConfig::from_toml(&text, Path::new("/etc/spillway")).unwrap();
        assert_eq!(c.name, "c");
        assert_eq!(c.http_listen.to_string(), "0.0.0.0:7480");
        assert_eq!(c.quic_listen.to_string(), "0.0.0.0:7443");
        assert_eq!(c.state_dir, Path::new("/data"));
        assert_eq!(
            c.http_tls,
            crate::config::HttpTls::Mesh {
                names: vec!["coordinator.lan".into(), "10.0.0.5".into()]
            }
        );
    }

    #[test]
    fn without_settings_variables_the_file_is_read_as_it_is() {
        let file = "# a comment\nname = \"c\"\n";
        assert_eq!(overlay(file, vars(&[("PATH", "/bin")])).unwrap(), file);
    }

    #[test]
    fn a_misspelt_variable_is_refused_naming_the_ones_there_are() {
        let err = overlay("", vars(&[("SPILLWAY_HTTP_LISTN", "0.0.0.0:1")])).unwrap_err();
        assert!(
            err.starts_with("SPILLWAY_HTTP_LISTN is not a setting"),
            "{err}"
        );
        assert!(err.contains("SPILLWAY_HTTP_LISTEN"), "{err}");
    }

    #[test]
    fn values_go_through_the_files_checks() {
        // Plain HTTP off loopback is refused whether the file or the environment asks for it.
        let text = overlay(
            "[http]\ntls = \"off\"\n",
            vars(&[("SPILLWAY_HTTP_LISTEN", "0.0.0.0:7480")]),
        )
        .unwrap();
        let err = CoordinatorConfig::from_toml(&text, Path::new("/")).unwrap_err();
        assert!(err.contains("plain HTTP is only for loopback"), "{err}");
        let text = overlay("", vars(&[("SPILLWAY_QUIC_LISTEN", "not an address")])).unwrap();
        assert!(CoordinatorConfig::from_toml(&text, Path::new("/")).is_err());
        let err =
            overlay("quic = 1\n", vars(&[("SPILLWAY_QUIC_LISTEN", "0.0.0.0:1")])).unwrap_err();
        assert!(err.contains("`quic` is not a section"), "{err}");
        let long = "x".repeat(MAX_VALUE + 1);
        assert!(overlay("", vars(&[("SPILLWAY_NAME", &long)])).is_err());
    }
}
