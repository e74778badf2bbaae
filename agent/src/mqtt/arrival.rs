//! Is a message new, or the broker delivering again one the journal already holds? Sans-IO.
//!
//! With QoS 1 a broker re-sends every message it has no `PUBACK` for when the client
//! reconnects, flagged `DUP` and under the same packet id. The agent acknowledges a message
//! only after its jobs are journaled, so a re-sent message is either unknown (the agent died
//! before journaling it: a new job) or the last one journaled with that topic and payload on an
//! earlier connection, under the same packet id (the same job). A sensor publishing the same
//! reading twice is two messages, so two jobs.

use sha2::{Digest, Sha256};

use crate::journal::MessageSeen;

/// What a received message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Already journaled: acknowledge it, start nothing.
    Redelivery,
    /// A message to act on; the `occurrence`th with this topic and payload.
    New { occurrence: u64 },
}

/// How a message came in, as far as telling redeliveries apart needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub dup: bool,
    pub packet_id: u16,
    /// The connection it came on (increasing with every connection).
    pub connection: u64,
}

/// `floor`: the highest occurrence of a message whose record retention removed; a message the
/// journal does not remember is numbered above it.
pub fn classify(seen: Option<MessageSeen>, floor: u64, d: Delivery) -> Arrival {
    match seen {
        // QoS 0 messages (packet id 0) are never re-sent.
        Some(s)
            if d.dup
                && d.packet_id != 0
                && s.packet_id == d.packet_id
                && s.connection < d.connection =>
        {
            Arrival::Redelivery
        }
        Some(s) => Arrival::New {
            occurrence: s.count + 1,
        },
        None => Arrival::New {
            occurrence: floor + 1,
        },
    }
}

/// What the journal remembers about a message just acted on, at `now_ms`.
pub fn remember(occurrence: u64, d: Delivery, now_ms: u64) -> MessageSeen {
    MessageSeen {
        count: occurrence,
        packet_id: d.packet_id,
        connection: d.connection,
        seen_at_ms: now_ms,
    }
}

/// The journal key of a topic and payload.
pub fn message_key(topic: &str, sha256: &[u8; 32]) -> Vec<u8> {
    let mut key = Vec::with_capacity(32 + 1 + 32);
    // Hash the topic: keys stay short however long topics are.
    key.extend_from_slice(&Sha256::digest(topic.as_bytes()));
    key.push(0);
    key.extend_from_slice(sha256);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(dup: bool, packet_id: u16, connection: u64) -> Delivery {
        Delivery {
            dup,
            packet_id,
            connection,
        }
    }

    #[test]
    fn a_redelivery_after_reconnecting_is_the_same_job() {
        let seen = remember(3, d(false, 17, 100), 5);
        assert_eq!(
            classify(Some(seen), 0, d(true, 17, 200)),
            Arrival::Redelivery
        );
    }

    #[test]
    fn the_same_reading_published_again_is_a_new_job() {
        let seen = remember(3, d(false, 17, 100), 5);
        assert_eq!(
            classify(Some(seen), 0, d(false, 18, 100)),
            Arrival::New { occurrence: 4 }
        );
        // Re-sent, but not the one journaled (another packet id): the agent died before
        // journaling it, so it is new.
        assert_eq!(
            classify(Some(seen), 0, d(true, 18, 200)),
            Arrival::New { occurrence: 4 }
        );
        assert_eq!(
            classify(None, 0, d(true, 17, 200)),
            Arrival::New { occurrence: 1 }
        );
    }

    #[test]
    fn a_message_seen_again_after_its_record_went_is_numbered_above_every_removed_one() {
        // Retention removed records with occurrences up to 7: no job id of theirs comes back.
        assert_eq!(
            classify(None, 7, d(false, 3, 300)),
            Arrival::New { occurrence: 8 }
        );
    }

    /// Drives a broker session through random crashes between journaling and acknowledging
    /// and checks that every published message becomes exactly one job.
    #[derive(Debug, Clone)]
    enum Step {
        /// Publish payload (0..3) — identical payloads are separate messages.
        Publish(u8),
        /// The agent receives the next unacknowledged message; `crash_before_journal`,
        /// `crash_before_ack` or neither.
        Receive(u8),
        Reconnect,
        /// Retention removes what the journal remembers of a payload (only once nothing with
        /// it waits at the broker: records go 30 days after they were last seen).
        Forget(u8),
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        prop::collection::vec(
            prop_oneof![
                (0u8..3).prop_map(Step::Publish),
                (0u8..3).prop_map(Step::Receive),
                Just(Step::Reconnect),
                (0u8..3).prop_map(Step::Forget),
            ],
            1..60,
        )
    }

    proptest! {
        #[test]
        fn every_message_is_one_job_whatever_the_crashes(steps in steps()) {
            use std::collections::{BTreeMap, VecDeque};
            // Broker side: messages not yet acknowledged, in order, with packet ids.
            let mut queue: VecDeque<(u64, u8, u16, bool)> = VecDeque::new(); // (msg, payload, pkid, sent)
            let mut next_pkid = 1u16;
            let mut next_msg = 0u64;
            // Agent side: the journal.
            let mut journal: BTreeMap<u8, MessageSeen> = BTreeMap::new();
            let mut jobs: BTreeMap<(u8, u64), u64> = BTreeMap::new(); // (payload, occurrence) -> msg
            let mut connection = 1u64;
            let mut floor = 0u64;
            for step in steps {
                match step {
                    Step::Forget(p) => {
                        if !queue.iter().any(|q| q.1 == p)
                            && let Some(seen) = journal.remove(&p)
                        {
                            floor = floor.max(seen.count);
                        }
                    }
                    Step::Publish(p) => {
                        queue.push_back((next_msg, p, next_pkid, false));
                        next_msg += 1;
                        next_pkid = next_pkid.wrapping_add(1).max(1);
                    }
                    Step::Reconnect => connection += 1,
                    Step::Receive(crash) => {
                        let Some(&(msg, payload, pkid, sent)) = queue.front() else { continue };
                        queue[0].3 = true;
                        let delivery = d(sent, pkid, connection);
                        if crash == 0 {
                            connection += 1; // died before journaling: nothing recorded
                            continue;
                        }
                        match classify(journal.get(&payload).copied(), floor, delivery) {
                            Arrival::Redelivery => {}
                            Arrival::New { occurrence } => {
                                prop_assert!(jobs.insert((payload, occurrence), msg).is_none());
                                journal.insert(payload, remember(occurrence, delivery, 0));
                            }
                        }
                        if crash == 1 {
                            connection += 1; // died after journaling, before the PUBACK
                            continue;
                        }
                        queue.pop_front();
                    }
                }
            }
            // Deliver whatever is left without crashes.
            connection += 1;
            while let Some((msg, payload, pkid, sent)) = queue.pop_front() {
                let delivery = d(sent, pkid, connection);
                if let Arrival::New { occurrence } = classify(journal.get(&payload).copied(), floor, delivery) {
                    prop_assert!(jobs.insert((payload, occurrence), msg).is_none());
                    journal.insert(payload, remember(occurrence, delivery, 0));
                }
            }
            let mut ran: Vec<u64> = jobs.values().copied().collect();
            ran.sort_unstable();
            prop_assert_eq!(ran, (0..next_msg).collect::<Vec<_>>(), "each message exactly once");
        }
    }
}
