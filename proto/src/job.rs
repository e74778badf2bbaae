//! Events that trigger work, and the job identity derived from them.
//!
//! The job id is a hash of (origin node, function, object key, content hash). The same event
//! seen twice (a rescan after a restart, a redelivered notification) therefore names the same
//! job, and everything downstream can be idempotent on it.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::key::ObjectKey;

/// A job's identity: 128 bits of a SHA-256, shown as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId([u8; 16]);

/// Hex in JSON and other text formats (what people and scripts read), raw bytes on the wire.
impl Serialize for JobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_string())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 16]>::deserialize(d).map(Self)
        }
    }
}

/// Why a job id could not be read from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, displaydoc::Display)]
/// `{0}` is not a job id: expected 32 hexadecimal digits
pub struct JobIdError(String);

impl JobId {
    /// The id of the job an event makes (see [`JobId::derive_nth`] for writes after the first).
    pub fn derive(origin: &str, function: &str, key: &str, content_sha256: &[u8; 32]) -> Self {
        Self::hashed(origin, function, key, content_sha256, None)
    }

    /// The id of the `occurrence`-th write of the same key with the same content (the first is
    /// [`JobId::derive`]'s): OSCAR runs every upload, identical ones included. The occurrence
    /// goes after the fixed-length content hash, so no id of a first write can equal it.
    pub fn derive_nth(
        origin: &str,
        function: &str,
        key: &str,
        content_sha256: &[u8; 32],
        occurrence: u64,
    ) -> Self {
        let nth = (occurrence > 1).then_some(occurrence);
        Self::hashed(origin, function, key, content_sha256, nth)
    }

    /// The one place a job id is computed.
    fn hashed(
        origin: &str,
        function: &str,
        key: &str,
        content_sha256: &[u8; 32],
        occurrence: Option<u64>,
    ) -> Self {
        let mut h = Sha256::new();
        // Length-prefix every part so ("ab","c") and ("a","bc") never collide.
        for part in [
            b"spillway/job/v1".as_slice(),
            origin.as_bytes(),
            function.as_bytes(),
            key.as_bytes(),
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.update(content_sha256);
        if let Some(n) = occurrence {
            h.update(n.to_le_bytes());
        }
        let digest = h.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        Self(id)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The first 12 hex digits, enough to name a job on one node (as git and docker do).
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl std::str::FromStr for JobId {
    type Err = JobIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut id = [0u8; 16];
        hex::decode_to_slice(s, &mut id).map_err(|_| JobIdError(s.to_owned()))?;
        Ok(Self(id))
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({})", self.short())
    }
}

/// What triggered a job. New variants go last: journals and the wire keep variant numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    File(FileEvent),
    Mqtt(Box<MqttEvent>),
    /// A file written again under a key written before (see [`FileWrite`]).
    FileAgain(Box<FileWrite>),
}

/// The `occurrence`-th write (2 or more) of a key into a bucket folder: a new modification time
/// or size, whatever the content. The first write stays an [`Event::File`], so the ids of jobs
/// made before writes were counted do not change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileWrite {
    pub file: FileEvent,
    pub occurrence: u64,
}

/// A message received on a function's MQTT trigger; the payload is the job's input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttEvent {
    pub topic: String,
    /// The input file's name (the trigger's `file_name`, or the topic's last level).
    pub file_name: ObjectKey,
    pub size: u64,
    pub sha256: [u8; 32],
    /// How many messages with this topic and payload arrived before, plus one: the same
    /// reading published twice is two jobs, a redelivery of one message is the same job.
    pub occurrence: u64,
    pub qos: u8,
    pub retain: bool,
    /// When the agent received it, milliseconds since the Unix epoch.
    pub received_at_ms: u64,
}

/// A file that was closed after writing, or moved, into a watched bucket folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEvent {
    /// The bucket (first segment of the function's input path, e.g. `fire-detect`).
    pub bucket: String,
    /// The key inside the bucket (`input/cam1.jpg`), as MinIO would report it.
    pub key: ObjectKey,
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i128,
    pub sha256: [u8; 32],
}

impl Event {
    /// The event of the `occurrence`-th write of a file (1 for the first).
    pub fn written(file: FileEvent, occurrence: u64) -> Self {
        if occurrence <= 1 {
            Event::File(file)
        } else {
            Event::FileAgain(Box::new(FileWrite { file, occurrence }))
        }
    }

    /// The file, for events that are files.
    pub fn as_file(&self) -> Option<&FileEvent> {
        match self {
            Event::File(f) => Some(f),
            Event::FileAgain(w) => Some(&w.file),
            Event::Mqtt(_) => None,
        }
    }

    /// The input file's name (`FILE_NAME`).
    pub fn file_name(&self) -> &str {
        match self {
            Event::File(f) => f.key.file_name(),
            Event::FileAgain(w) => w.file.key.file_name(),
            Event::Mqtt(m) => m.file_name.as_str(),
        }
    }

    /// Where the input came from, for people: `bucket/key` or `mqtt:topic`.
    pub fn source(&self) -> String {
        match self {
            Event::File(f) => format!("{}/{}", f.bucket, f.key),
            Event::FileAgain(w) => format!("{}/{}", w.file.bucket, w.file.key),
            Event::Mqtt(m) => format!("mqtt:{}", m.topic),
        }
    }

    pub fn sha256(&self) -> &[u8; 32] {
        match self {
            Event::File(f) => &f.sha256,
            Event::FileAgain(w) => &w.file.sha256,
            Event::Mqtt(m) => &m.sha256,
        }
    }

    pub fn job_id(&self, origin: &str, function: &str) -> JobId {
        match self {
            Event::File(f) => JobId::derive(
                origin,
                function,
                &format!("{}/{}", f.bucket, f.key),
                &f.sha256,
            ),
            Event::FileAgain(w) => JobId::derive_nth(
                origin,
                function,
                &format!("{}/{}", w.file.bucket, w.file.key),
                &w.file.sha256,
                w.occurrence,
            ),
            Event::Mqtt(m) => JobId::derive(
                origin,
                function,
                &format!("mqtt:{}#{}", m.topic, m.occurrence),
                &m.sha256,
            ),
        }
    }

    /// The event as the JSON a function receives in `EVENT`.
    ///
    /// File events are shaped like the MinIO bucket notification OSCAR's supervisor passes on,
    /// so scripts written for OSCAR that read `EVENT` keep working.
    pub fn to_json(&self, origin: &str, event_time_rfc3339: &str) -> serde_json::Value {
        match self {
            Event::File(f) => file_json(f, origin, event_time_rfc3339),
            Event::FileAgain(w) => file_json(&w.file, origin, event_time_rfc3339),
            Event::Mqtt(m) => serde_json::json!({
                "EventName": "mqtt:Message",
                "Key": m.topic,
                "Records": [{
                    "eventVersion": "2.0",
                    "eventSource": "spillway:mqtt",
                    "eventTime": event_time_rfc3339,
                    "eventName": "mqtt:Message",
                    "mqtt": {
                        "topic": m.topic,
                        "qos": m.qos,
                        "retain": m.retain,
                        "size": m.size,
                        "sha256": hex::encode(m.sha256),
                        "occurrence": m.occurrence,
                    },
                    "source": { "host": origin }
                }]
            }),
        }
    }
}

/// A file event as the MinIO bucket notification OSCAR's supervisor passes on.
fn file_json(f: &FileEvent, origin: &str, event_time_rfc3339: &str) -> serde_json::Value {
    let full_key = format!("{}/{}", f.bucket, f.key);
    serde_json::json!({
        "EventName": "s3:ObjectCreated:Put",
        "Key": full_key,
        "Records": [{
            "eventVersion": "2.0",
            "eventSource": "spillway:folder",
            "eventTime": event_time_rfc3339,
            "eventName": "s3:ObjectCreated:Put",
            "s3": {
                "bucket": { "name": f.bucket },
                "object": {
                    "key": f.key.as_str(),
                    "size": f.size,
                    "sha256": hex::encode(f.sha256),
                }
            },
            "source": { "host": origin }
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, content: u8) -> Event {
        Event::File(FileEvent {
            bucket: "fire-detect".into(),
            key: ObjectKey::parse(key).expect("valid key"),
            size: 3,
            mtime_ns: 1,
            sha256: [content; 32],
        })
    }

    #[test]
    fn the_same_event_seen_twice_is_the_same_job() {
        let a = event("input/a.jpg", 1).job_id("pi-1", "fire");
        let b = event("input/a.jpg", 1).job_id("pi-1", "fire");
        assert_eq!(a, b);
    }

    #[test]
    fn origin_function_key_and_content_each_change_the_job() {
        let base = event("input/a.jpg", 1).job_id("pi-1", "fire");
        assert_ne!(base, event("input/a.jpg", 2).job_id("pi-1", "fire"));
        assert_ne!(base, event("input/b.jpg", 1).job_id("pi-1", "fire"));
        assert_ne!(base, event("input/a.jpg", 1).job_id("pi-2", "fire"));
        assert_ne!(base, event("input/a.jpg", 1).job_id("pi-1", "smoke"));
    }

    #[test]
    fn every_write_of_a_key_is_its_own_job_and_the_first_keeps_its_old_id() {
        let Event::File(file) = event("input/a.jpg", 1) else {
            unreachable!()
        };
        let first = Event::written(file.clone(), 1);
        assert_eq!(
            first,
            Event::File(file.clone()),
            "ids made before writes were counted stay"
        );
        // The id of a first write, computed as every earlier release did.
        assert_eq!(
            first.job_id("pi-1", "fire").to_string(),
            JobId::derive("pi-1", "fire", "fire-detect/input/a.jpg", &[1; 32]).to_string()
        );
        let ids: Vec<JobId> = (1..=4)
            .map(|n| Event::written(file.clone(), n).job_id("pi-1", "fire"))
            .collect();
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                assert_ne!(a, b, "identical content written again is a new job");
            }
        }
        assert_eq!(
            ids[2],
            Event::written(file.clone(), 3).job_id("pi-1", "fire"),
            "the same write seen again is the same job"
        );
        let again = Event::written(file.clone(), 2);
        assert_eq!(again.as_file(), Some(&file));
        assert_eq!(again.source(), "fire-detect/input/a.jpg");
        assert_eq!(again.to_json("pi-1", "t"), first.to_json("pi-1", "t"));
    }

    #[test]
    fn job_ids_round_trip_through_text() {
        let id = event("input/a.jpg", 1).job_id("pi-1", "fire");
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<JobId>(), Ok(id));
        assert!(id.short().len() == 12 && text.starts_with(&id.short()));
        assert!("zz".parse::<JobId>().is_err());
    }

    fn message(occurrence: u64) -> Event {
        Event::Mqtt(Box::new(MqttEvent {
            topic: "cameras/cam1/frames".into(),
            file_name: ObjectKey::parse("frames").expect("valid key"),
            size: 3,
            sha256: [7; 32],
            occurrence,
            qos: 1,
            retain: false,
            received_at_ms: 1,
        }))
    }

    #[test]
    fn the_same_reading_published_again_is_a_new_job_but_a_redelivery_is_not() {
        assert_eq!(message(1).job_id("pi", "f"), message(1).job_id("pi", "f"));
        assert_ne!(message(1).job_id("pi", "f"), message(2).job_id("pi", "f"));
        let json = message(1).to_json("pi", "2026-01-01T00:00:00Z");
        assert_eq!(json["Records"][0]["mqtt"]["topic"], "cameras/cam1/frames");
        assert_eq!(message(1).source(), "mqtt:cameras/cam1/frames");
    }

    #[test]
    fn event_json_looks_like_a_minio_notification() {
        let json = event("input/a.jpg", 1).to_json("pi-1", "2026-01-01T00:00:00Z");
        assert_eq!(json["Key"], "fire-detect/input/a.jpg");
        assert_eq!(json["Records"][0]["s3"]["bucket"]["name"], "fire-detect");
        assert_eq!(json["Records"][0]["s3"]["object"]["key"], "input/a.jpg");
    }
}

#[cfg(test)]
mod serde_tests {
    use super::*;

    #[test]
    fn job_ids_are_hex_in_json_and_bytes_in_postcard() {
        let id = JobId::from_bytes([0xab; 16]);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(16)));
        assert_eq!(serde_json::from_str::<JobId>(&json).unwrap(), id);
        let bin = postcard::to_stdvec(&id).unwrap();
        assert_eq!(bin.len(), 16);
        assert_eq!(postcard::from_bytes::<JobId>(&bin).unwrap(), id);
    }
}
