//! From an MQTT message to the jobs it makes: one per function whose trigger matches, the
//! payload stored as the input file, all journaled in one commit (the message remembered, and
//! the jobs that start at once already `Running`) before the broker is told.

use sha2::{Digest, Sha256};
use spillway_proto::fdl::MqttTrigger;
use spillway_proto::{Event, MqttEvent, ObjectKey};

use super::identify::fail;
use super::{Agent, AgentError};
use crate::book;
use crate::journal::{Change, JobRecord, now_ms};
use crate::mqtt::Incoming;
use crate::mqtt::arrival::{Arrival, classify, message_key, remember};

impl Agent {
    /// Journals the jobs a message makes, then lets it be acknowledged.
    pub(super) fn on_message(&mut self, m: Incoming) -> Result<(), AgentError> {
        let s = self.shared.clone();
        let wanted = self.catalog.triggered_by_topic(&m.topic);
        if wanted.is_empty() {
            // Left over from a function deleted while the broker kept the session's messages.
            self.mqtt_unwanted += 1;
            tracing::warn!(topic = %m.topic, "MQTT message on a topic no deployed function wants: dropped");
            self.after.push(super::drive::After::Acknowledge(m.done));
            return Ok(());
        }
        let sha256: [u8; 32] = Sha256::digest(&m.payload).into();
        let key = message_key(&m.topic, &sha256);
        let (seen, floor) = s.journal.message_seen(&key)?;
        let occurrence = match classify(seen, floor, m.delivery) {
            Arrival::Redelivery => {
                tracing::debug!(topic = %m.topic, "MQTT redelivery of a journaled message");
                // Its first delivery may be staged, not yet durable: acknowledged in turn.
                self.after.push(super::drive::After::Acknowledge(m.done));
                return Ok(());
            }
            Arrival::New { occurrence } => occurrence,
        };
        let limit = s.config.mqtt.as_ref().map_or(u64::MAX, |c| c.max_payload.0);
        let size = m.payload.len() as u64;
        let mut records = Vec::new();
        for (function, trigger) in &wanted {
            let name = &function.def.name;
            let event = Event::Mqtt(Box::new(MqttEvent {
                topic: m.topic.clone(),
                file_name: input_name(trigger, &m.topic),
                size,
                sha256,
                occurrence,
                qos: m.qos,
                retain: m.retain,
                received_at_ms: now_ms(),
            }));
            let mut record =
                JobRecord::new(event.job_id(&s.config.node_name, name), name.clone(), event);
            if size > limit {
                self.mqtt_too_large += 1;
                fail(
                    &mut record,
                    format!(
                        "MQTT message on `{}` refused: its payload is {size} bytes, over [mqtt] max_payload ({limit} bytes); raise the limit in agent.toml or publish smaller messages",
                        m.topic
                    ),
                );
            } else {
                let path = s.config.input_of(record.id, &record.event);
                // Synced with the other inputs of this batch, before its durable commit.
                self.inbox_unsynced = true;
                if let Err(e) =
                    spillway_plumbing::atomic::write_whole_unsynced(&path, &m.payload, 0o644)
                {
                    fail(
                        &mut record,
                        format!("cannot store the MQTT message as {}: {e}", path.display()),
                    );
                }
            }
            records.push(record);
        }
        let mut arrivals = Vec::new();
        for record in records {
            let known = super::drive::known(&s.journal, record.id)?;
            // Never a retry (below), so never one the coordinator returned.
            arrivals.push(book::Arrival {
                record,
                known,
                guest: None,
                returned: false,
            });
        }
        // A message is a new job even when an earlier one with the same payload failed: its
        // occurrence makes another id. So a redelivered message is never a retry.
        let seen = Change::SeenMessage(key, remember(occurrence, m.delivery, now_ms()));
        self.arrive(arrivals, false, vec![seen])?;
        self.after.push(super::drive::After::Acknowledge(m.done));
        Ok(())
    }
}

/// The input file's name: the trigger's `file_name`, else the topic's last level when that is
/// a usable file name, else `message`.
fn input_name(trigger: &MqttTrigger, topic: &str) -> ObjectKey {
    let last = topic.rsplit('/').next().unwrap_or_default();
    trigger
        .file_name
        .as_deref()
        .into_iter()
        .chain([last])
        .find_map(|name| ObjectKey::parse(name).ok().filter(|_| !name.contains('/')))
        .or_else(|| ObjectKey::parse("message").ok())
        .expect("`message` is a valid object key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_is_named_after_the_trigger_or_the_topic() {
        let t = |file_name: Option<&str>| MqttTrigger {
            topic: "cameras/+/frames".into(),
            qos: 1,
            file_name: file_name.map(str::to_owned),
        };
        assert_eq!(
            input_name(&t(None), "cameras/cam1/frames").as_str(),
            "frames"
        );
        assert_eq!(
            input_name(&t(Some("f.jpg")), "cameras/cam1/frames").as_str(),
            "f.jpg"
        );
        assert_eq!(input_name(&t(None), "cameras/cam1/").as_str(), "message");
        assert_eq!(input_name(&t(None), "a/..").as_str(), "message");
    }
}
