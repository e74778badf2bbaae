//! Spillway's MQTT fields: `triggers: [{mqtt: {topic, qos}}]` starts a job per message, and an
//! `output` entry `{mqtt: {topic}}` publishes each output file as a message.

use marked_yaml::Node;
use marked_yaml::types::MarkedMappingNode;
use serde::{Deserialize, Serialize};

use super::diag::Diagnostics;
use super::reader::{Extra, Fields, boolean, mapping, sequence, string, strings, unsigned};
use crate::key::ObjectKey;

/// A message source that starts jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    Mqtt(MqttTrigger),
}

/// Messages on `topic` (a filter: `+` and `#` wildcards) start a job each; the payload is the
/// job's input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttTrigger {
    pub topic: String,
    pub qos: u8,
    /// The input file's name; the topic's last level when unset.
    pub file_name: Option<String>,
}

/// Output files published as messages (the file's bytes are the payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttOutput {
    pub topic: String,
    pub qos: u8,
    pub retain: bool,
    pub suffix: Vec<String>,
    pub prefix: Vec<String>,
}

impl MqttOutput {
    /// Whether an output file with this name is published here (no filters: every file).
    pub fn accepts(&self, file_name: &str) -> bool {
        (self.suffix.is_empty() || self.suffix.iter().any(|s| file_name.ends_with(s.as_str())))
            && (self.prefix.is_empty()
                || self
                    .prefix
                    .iter()
                    .any(|p| file_name.starts_with(p.as_str())))
    }
}

/// Why a topic or topic filter is refused (MQTT 3.1.1 §4.7).
pub fn check_topic(topic: &str, filter: bool) -> Result<(), String> {
    if topic.is_empty() {
        return Err("a topic cannot be empty".into());
    }
    if topic.len() > 65535 {
        return Err("a topic is at most 65535 bytes".into());
    }
    if topic.contains('\0') {
        return Err("a topic cannot contain NUL".into());
    }
    let levels: Vec<&str> = topic.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let wild = level.contains('+') || level.contains('#');
        if wild && !filter {
            return Err(format!(
                "`{topic}`: wildcards (`+`, `#`) are for subscriptions, not for publishing"
            ));
        }
        if wild && *level != "+" && *level != "#" {
            return Err(format!(
                "`{topic}`: a wildcard must be a whole level (`a/+/b`, `a/#`), not `{level}`"
            ));
        }
        if *level == "#" && i + 1 != levels.len() {
            return Err(format!("`{topic}`: `#` may only be the last level"));
        }
    }
    Ok(())
}

/// Whether `topic` matches the subscription `filter` (topics starting with `$` only match
/// filters that name them, as brokers do).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && !filter.starts_with('$') {
        return false;
    }
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match (f, t.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (f, Some(level)) if f == level => {}
            _ => return false,
        }
    }
    t.next().is_none()
}

pub(crate) fn read_triggers(diags: &mut Diagnostics, node: &Node, path: &str) -> Vec<Trigger> {
    let Some(items) = sequence(diags, node, path) else {
        return Vec::new();
    };
    let mut triggers = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let ipath = format!("{path}[{i}]");
        let Some(map) = mapping(diags, item, &ipath) else {
            continue;
        };
        let mut f = Fields::new(map, ipath.clone());
        let mqtt = f
            .field("mqtt")
            .and_then(|(n, p)| Some((mapping(diags, n, &p)?, p)));
        let mut extra = Extra::new();
        f.finish(diags, &["mqtt"], &mut extra);
        match mqtt {
            Some((m, p)) => {
                if let Some(t) = read_mqtt_trigger(diags, m, &p) {
                    triggers.push(Trigger::Mqtt(t));
                }
            }
            None => diags.error(
                map.span(),
                &ipath,
                "a trigger needs a source, e.g. `mqtt: {topic: \"cameras/+/frames\", qos: 1}`",
            ),
        }
    }
    triggers
}

fn read_mqtt_trigger(
    diags: &mut Diagnostics,
    map: &MarkedMappingNode,
    path: &str,
) -> Option<MqttTrigger> {
    let mut f = Fields::new(map, path);
    let topic = read_topic(diags, &mut f, map, true);
    let qos = read_qos(diags, &mut f);
    let file_name = f.field("file_name").and_then(|(n, p)| {
        let name = string(diags, n, &p)?;
        match ObjectKey::parse(&name) {
            Ok(key) if !name.contains('/') => Some(key.as_str().to_owned()),
            _ => {
                diags.error(
                    n.span(),
                    &p,
                    format!(
                        "`{name}` is not a plain file name (no `/`, `..` or control characters)"
                    ),
                );
                None
            }
        }
    });
    let mut extra = Extra::new();
    f.finish(diags, &["topic", "qos", "file_name"], &mut extra);
    Some(MqttTrigger {
        topic: topic?,
        qos: qos?,
        file_name,
    })
}

/// An `output` entry written as `{mqtt: {topic, qos, retain}}` (with the usual filters).
pub(crate) fn read_mqtt_output(
    diags: &mut Diagnostics,
    node: &Node,
    path: &str,
    suffix: Vec<String>,
    prefix: Vec<String>,
) -> Option<MqttOutput> {
    let map = mapping(diags, node, path)?;
    let mut f = Fields::new(map, path);
    let topic = read_topic(diags, &mut f, map, false);
    let qos = read_qos(diags, &mut f);
    let retain = f
        .field("retain")
        .map_or(Some(false), |(n, p)| boolean(diags, n, &p));
    let mut extra = Extra::new();
    f.finish(diags, &["topic", "qos", "retain"], &mut extra);
    Some(MqttOutput {
        topic: topic?,
        qos: qos?,
        retain: retain?,
        suffix,
        prefix,
    })
}

/// `suffix`/`prefix` of an output entry, shared by folder and MQTT outputs.
pub(crate) fn read_filters(diags: &mut Diagnostics, f: &mut Fields<'_>) -> [Vec<String>; 2] {
    ["suffix", "prefix"].map(|key| {
        f.field(key)
            .map(|(n, p)| strings(diags, n, &p))
            .unwrap_or_default()
    })
}

fn read_topic(
    diags: &mut Diagnostics,
    f: &mut Fields<'_>,
    map: &MarkedMappingNode,
    filter: bool,
) -> Option<String> {
    let Some((n, p)) = f.field("topic") else {
        diags.error(map.span(), &f.path, "missing `topic`");
        return None;
    };
    let topic = string(diags, n, &p)?;
    match check_topic(&topic, filter) {
        Ok(()) => Some(topic),
        Err(e) => {
            diags.error(n.span(), &p, e);
            None
        }
    }
}

fn read_qos(diags: &mut Diagnostics, f: &mut Fields<'_>) -> Option<u8> {
    match f.field("qos") {
        None => Some(1),
        Some((n, p)) => match unsigned(diags, n, &p)? {
            q @ 0..=2 => Some(q as u8),
            q => {
                diags.error(n.span(), &p, format!("QoS is 0, 1 or 2, not {q}"));
                None
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_as_brokers_match_them() {
        assert!(topic_matches("cameras/+/frames", "cameras/cam1/frames"));
        assert!(!topic_matches("cameras/+/frames", "cameras/cam1/frames/x"));
        assert!(!topic_matches("cameras/+/frames", "cameras/frames"));
        assert!(topic_matches("cameras/#", "cameras"));
        assert!(topic_matches("cameras/#", "cameras/a/b"));
        assert!(topic_matches("#", "a/b"));
        assert!(!topic_matches("#", "$SYS/load"));
        assert!(topic_matches("a/b", "a/b"));
        assert!(!topic_matches("a/b", "a/c"));
        assert!(topic_matches("+/+", "a/"));
    }

    #[test]
    fn bad_topics_are_refused_with_the_rule_they_break() {
        assert!(check_topic("a/+/b", true).is_ok());
        assert!(check_topic("a/#", true).is_ok());
        assert!(
            check_topic("a/+/b", false)
                .unwrap_err()
                .contains("subscriptions")
        );
        assert!(
            check_topic("a/b#", true)
                .unwrap_err()
                .contains("whole level")
        );
        assert!(
            check_topic("a/#/b", true)
                .unwrap_err()
                .contains("last level")
        );
        assert!(check_topic("", true).is_err());
    }

    #[test]
    fn output_filters_select_files() {
        let out = MqttOutput {
            topic: "alerts".into(),
            qos: 1,
            retain: false,
            suffix: vec![".txt".into()],
            prefix: vec![],
        };
        assert!(out.accepts("result.txt"));
        assert!(!out.accepts("image.png"));
    }

    fn parse(yaml: &str) -> Result<crate::fdl::Fdl, String> {
        crate::fdl::parse_str("f.yaml", yaml, std::path::Path::new("/"))
            .into_result()
            .map(|(fdl, _)| fdl)
            .map_err(|e| {
                e.diagnostics
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
    }

    const FUNCTION: &str = "functions:\n  oscar:\n  - edge:\n      name: fire\n      runtime: process\n      command: [\"true\"]\n";

    #[test]
    fn triggers_and_mqtt_outputs_are_read_beside_folder_outputs() {
        let fdl = parse(&format!(
            "{FUNCTION}      triggers:\n      - mqtt: {{topic: \"cameras/+/frames\", qos: 0, file_name: frame.jpg}}\n      output:\n      - mqtt: {{topic: alerts/fire, retain: true}}\n        suffix: [.txt]\n      - storage_provider: minio.default\n        path: alerts/log\n"
        ))
        .expect("valid");
        let f = &fdl.functions[0];
        assert_eq!(
            f.triggers,
            vec![Trigger::Mqtt(MqttTrigger {
                topic: "cameras/+/frames".into(),
                qos: 0,
                file_name: Some("frame.jpg".into()),
            })]
        );
        assert_eq!(f.mqtt_outputs.len(), 1);
        assert!(f.mqtt_outputs[0].retain && f.mqtt_outputs[0].qos == 1);
        assert_eq!(f.mqtt_outputs[0].suffix, vec![".txt".to_owned()]);
        assert_eq!(f.output.len(), 1);
    }

    #[test]
    fn mqtt_mistakes_are_reported_where_they_are() {
        let err = parse(&format!(
            "{FUNCTION}      input:\n      - mqtt: {{topic: a}}\n      triggers:\n      - mqtt: {{topic: \"a/#/b\", qos: 3}}\n      - http: {{}}\n      output:\n      - mqtt: {{topic: \"alerts/+\"}}\n"
        ))
        .expect_err("invalid");
        assert!(
            err.contains("input[0].mqtt") && err.contains("triggers:"),
            "{err}"
        );
        assert!(
            err.contains("triggers[0].mqtt.topic") && err.contains("last level"),
            "{err}"
        );
        assert!(
            err.contains("triggers[0].mqtt.qos") && err.contains("not 3"),
            "{err}"
        );
        assert!(
            err.contains("triggers[1]") && err.contains("needs a source"),
            "{err}"
        );
        assert!(
            err.contains("output[0].mqtt.topic") && err.contains("not for publishing"),
            "{err}"
        );
    }
}
