//! Several coordinators in one client config, as kubectl has them: named contexts beside the
//! flat keys the coordinator writes (which stay the context `default`), and `current-context`.
//!
//! ```toml
//! current-context = "lab"
//! coordinator = "https://home.lan:7480"   # the context `default`
//! token = "…"
//! [contexts.lab]
//! coordinator = "https://lab.example:7480"
//! token = "…"
//! ca_file = "lab-ca.pem"
//! ```
//!
//! Edits go through toml_edit, so a user's comments and layout survive `use-context` and
//! `spillway up` adding its context.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The flat keys' context.
pub const DEFAULT_CONTEXT: &str = "default";
/// The context `spillway up` adds to a config it did not write.
pub const UP_CONTEXT: &str = "spillway-up";

/// Where one coordinator is and how to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub coordinator: Option<String>,
    pub token: Option<String>,
    /// The CA (PEM) the coordinator's HTTPS certificate must chain to: the only one trusted for
    /// it (the coordinator writes its mesh CA here).
    pub ca: Option<String>,
    pub ca_file: Option<std::path::PathBuf>,
}

/// A client config file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub coordinator: Option<String>,
    pub token: Option<String>,
    pub ca: Option<String>,
    pub ca_file: Option<std::path::PathBuf>,
    #[serde(rename = "current-context")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Settings>,
}

impl ConfigFile {
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        for name in file.contexts.keys() {
            check_name(name)?;
        }
        Ok(file)
    }

    /// The flat keys, as the context `default`.
    pub fn flat(&self) -> Settings {
        Settings {
            coordinator: self.coordinator.clone(),
            token: self.token.clone(),
            ca: self.ca.clone(),
            ca_file: self.ca_file.clone(),
        }
    }

    /// Whether the flat keys say anything (a file may hold named contexts only).
    pub fn has_flat(&self) -> bool {
        self.flat() != Settings::default()
    }

    /// The context a command uses: `asked` (`--context`, `$SPILLWAY_CONTEXT`), else
    /// `current-context`, else the flat keys. `None` in the answer's name means the flat keys.
    pub fn select(&self, asked: Option<&str>) -> Result<(Option<String>, Settings), String> {
        let Some(name) = asked.or(self.current_context.as_deref()) else {
            return Ok((None, self.flat()));
        };
        match self.contexts.get(name) {
            Some(s) => Ok((Some(name.to_owned()), s.clone())),
            None if name == DEFAULT_CONTEXT => Ok((None, self.flat())),
            None => Err(format!(
                "no context named `{name}` (there are: {}); see `spillway config get-contexts`",
                self.names().join(", ")
            )),
        }
    }

    /// Every context's name: `default` when the flat keys say anything, then the named ones.
    pub fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if self.has_flat() || !self.contexts.contains_key(DEFAULT_CONTEXT) {
            names.push(DEFAULT_CONTEXT.to_owned());
        }
        names.extend(
            self.contexts
                .keys()
                .filter(|n| *n != DEFAULT_CONTEXT || !self.has_flat())
                .cloned(),
        );
        names
    }

    /// The name of the context in use when none is asked for.
    pub fn current(&self) -> String {
        self.current_context
            .clone()
            .unwrap_or_else(|| DEFAULT_CONTEXT.to_owned())
    }
}

/// Context names are what a shell and a table show without quoting.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "context name {name:?}: use 1 to 64 letters, digits, `-`, `.` or `_`"
        ))
    }
}

fn document(text: &str) -> Result<toml_edit::DocumentMut, String> {
    text.parse::<toml_edit::DocumentMut>()
        .map_err(|e| e.to_string())
}

/// `text` with `current-context` set to `name`, which must exist.
pub fn use_context(text: &str, name: &str) -> Result<String, String> {
    let file = ConfigFile::parse(text)?;
    file.select(Some(name))?;
    let mut doc = document(text)?;
    doc["current-context"] = toml_edit::value(name);
    Ok(doc.to_string())
}

/// `text` with context `name` holding `settings` (the keys given replace the context's; others
/// stay). The flat keys are the context `default`.
pub fn set_context(text: &str, name: &str, settings: &Settings) -> Result<String, String> {
    check_name(name)?;
    ConfigFile::parse(text)?;
    let mut doc = document(text)?;
    let table: &mut toml_edit::Table = if name == DEFAULT_CONTEXT {
        doc.as_table_mut()
    } else {
        let contexts = doc
            .entry("contexts")
            .or_insert_with(|| {
                let mut t = toml_edit::Table::new();
                t.set_implicit(true);
                toml_edit::Item::Table(t)
            })
            .as_table_mut()
            .ok_or("`contexts` is not a table")?;
        contexts
            .entry(name)
            .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("`contexts.{name}` is not a table"))?
    };
    let mut put = |key: &str, value: Option<String>| {
        if let Some(v) = value {
            table[key] = toml_edit::value(v);
        }
    };
    put("coordinator", settings.coordinator.clone());
    put("token", settings.token.clone());
    put("ca", settings.ca.clone());
    put(
        "ca_file",
        settings
            .ca_file
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned()),
    );
    // A pinned CA and a CA file would disagree: the one given wins.
    if settings.ca.is_some() {
        table.remove("ca_file");
    } else if settings.ca_file.is_some() {
        table.remove("ca");
    }
    Ok(doc.to_string())
}

/// `text` without context `name`; if it was the current one, the flat keys are current again.
pub fn delete_context(text: &str, name: &str) -> Result<String, String> {
    let file = ConfigFile::parse(text)?;
    if !file.contexts.contains_key(name) {
        return Err(if name == DEFAULT_CONTEXT {
            "the context `default` is the file's own keys: edit the file to remove them".into()
        } else {
            format!(
                "no context named `{name}` (there are: {})",
                file.names().join(", ")
            )
        });
    }
    let mut doc = document(text)?;
    if let Some(contexts) = doc.get_mut("contexts").and_then(|c| c.as_table_mut()) {
        contexts.remove(name);
    }
    if file.current_context.as_deref() == Some(name) {
        doc.remove("current-context");
    }
    Ok(doc.to_string())
}

/// `text` with the CA of context `name` (`None`: the flat keys) replaced by `pem`, when it
/// pins one with `ca`.
pub fn replace_ca(text: &str, name: Option<&str>, pem: &str) -> Result<String, String> {
    let mut doc = document(text)?;
    let table = match name {
        None => doc.as_table_mut(),
        Some(n) => doc
            .get_mut("contexts")
            .and_then(|c| c.get_mut(n))
            .and_then(|t| t.as_table_mut())
            .ok_or_else(|| format!("no context named `{n}`"))?,
    };
    table["ca"] = toml_edit::value(pem);
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINE: &str =
        "# my own lab\ncoordinator = \"https://lab:7480\" # by hand\ntoken = \"t1\"\n";

    #[test]
    fn the_flat_keys_are_the_default_context_and_named_ones_are_chosen_by_name() {
        let text = set_context(
            MINE,
            "home",
            &Settings {
                coordinator: Some("http://127.0.0.1:7480".into()),
                token: Some("t2".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let file = ConfigFile::parse(&text).unwrap();
        assert_eq!(file.names(), ["default", "home"]);
        let (name, s) = file.select(None).unwrap();
        assert_eq!((name, s.token.as_deref()), (None, Some("t1")));
        let (name, s) = file.select(Some("home")).unwrap();
        assert_eq!(
            (name.as_deref(), s.token.as_deref()),
            (Some("home"), Some("t2"))
        );
        let err = file.select(Some("gone")).unwrap_err();
        assert!(
            err.contains("no context named `gone` (there are: default, home)"),
            "{err}"
        );
    }

    #[test]
    fn using_a_context_keeps_the_users_comments_and_refuses_unknown_names() {
        let text = set_context(MINE, "home", &Settings::default()).unwrap();
        let used = use_context(&text, "home").unwrap();
        assert!(
            used.contains("# my own lab") && used.contains("# by hand"),
            "{used}"
        );
        assert_eq!(ConfigFile::parse(&used).unwrap().current(), "home");
        assert!(use_context(&text, "nope").is_err());
        let back = use_context(&used, "default").unwrap();
        assert_eq!(
            ConfigFile::parse(&back).unwrap().select(None).unwrap().0,
            None
        );
    }

    #[test]
    fn deleting_the_current_context_falls_back_to_the_flat_keys() {
        let text = use_context(
            &set_context(MINE, "home", &Settings::default()).unwrap(),
            "home",
        )
        .unwrap();
        let gone = delete_context(&text, "home").unwrap();
        let file = ConfigFile::parse(&gone).unwrap();
        assert_eq!(file.current(), "default");
        assert!(file.contexts.is_empty());
        assert!(delete_context(&gone, "default").is_err());
    }

    #[test]
    fn hostile_context_names_and_files_are_refused() {
        for bad in ["", "a b", "x\"]\n[evil", &"n".repeat(65)] {
            assert!(
                set_context(MINE, bad, &Settings::default()).is_err(),
                "{bad:?}"
            );
        }
        assert!(ConfigFile::parse("[contexts.\"a b\"]\ncoordinator = \"x\"\n").is_err());
        assert!(ConfigFile::parse("colour = \"red\"\n").is_err());
        assert!(set_context("contexts = 3\n", "home", &Settings::default()).is_err());
    }

    #[test]
    fn a_rotated_ca_replaces_the_pinned_one_of_the_context_in_use() {
        let text = set_context(
            MINE,
            "home",
            &Settings {
                ca: Some("OLD".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let rotated = replace_ca(&text, Some("home"), "NEW\n").unwrap();
        let file = ConfigFile::parse(&rotated).unwrap();
        assert_eq!(file.contexts["home"].ca.as_deref(), Some("NEW\n"));
        assert_eq!(file.ca, None);
    }
}
