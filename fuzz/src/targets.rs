//! The parsers that read hostile bytes, each with real seed inputs and the tokens of its
//! language. A target's `run` feeds one input to the real code; it may refuse the input (an
//! `Err` is a good answer), it may never panic.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use spillway_proto::wire::{
    AgentFrame, BlobRequest, CoordinatorFrame, FrameDecoder, GuestDone, JobPhase, JobUpdate,
    JoinReply, JoinRequest, MAX_JOIN_FRAME, MAX_STREAM_FRAME, Offer, OfferReason, Outcome,
    PROTOCOL, Placement,
};
use spillway_proto::{Event, FileEvent, JobId, ObjectKey};

use crate::rng::Rng;
use crate::tarball;

/// Feeds one input to a parser: `true` when it accepted it, `false` when it refused it.
pub type Run = Box<dyn FnMut(&[u8]) -> bool>;

/// One parser under test.
pub struct Target {
    pub name: &'static str,
    pub seeds: Vec<Vec<u8>>,
    pub dictionary: Vec<&'static [u8]>,
    /// Makes a fresh input now and then instead of mutating a seed (structure-aware targets).
    pub generate: Option<fn(&mut Rng) -> Vec<u8>>,
    pub run: Run,
}

pub const NAMES: [&str; 10] = [
    "wire",
    "load-report",
    "join",
    "ca-trust",
    "fdl",
    "layer",
    "archive",
    "s3-event",
    "oscar-event",
    "mqtt",
];

pub fn target(name: &str, scratch: &Path) -> anyhow::Result<Target> {
    Ok(match name {
        "wire" => wire(),
        "load-report" => load_report(),
        "join" => join(scratch)?,
        "ca-trust" => ca_trust(scratch)?,
        "fdl" => fdl()?,
        "layer" => layer(scratch)?,
        "archive" => archive(scratch)?,
        "s3-event" => s3_event(),
        "oscar-event" => oscar_event(),
        "mqtt" => mqtt(),
        other => anyhow::bail!("no target `{other}`: {}", NAMES.join(", ")),
    })
}

fn frame<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    spillway_proto::wire::frame::encode(msg)
}

fn event() -> Event {
    Event::File(FileEvent {
        bucket: "fire".into(),
        key: ObjectKey::parse("in/cam1.jpg").expect("a constant key"),
        size: 1234,
        mtime_ns: 1_700_000_000_000_000_000,
        sha256: [7; 32],
    })
}

/// Frames of the control stream, blob streams and joins, as peers send them.
fn wire() -> Target {
    let id = JobId::from_bytes([3; 16]);
    let update = JobUpdate {
        id,
        function: "detect".into(),
        phase: JobPhase::Succeeded,
        input: Some("fire/in/cam1.jpg".into()),
        outputs: vec!["fire/out/cam1.json".into()],
        reason: None,
        attempt: 1,
        queued_at_ms: 1,
        started_at_ms: Some(2),
        finished_at_ms: Some(3),
        origin: Some("pi-1".into()),
    };
    let seeds = vec![
        frame(&AgentFrame::Job(update)),
        frame(&AgentFrame::Offer(Offer {
            id,
            function: "detect".into(),
            event: event(),
            input: [1; 32],
            input_bytes: 1234,
            reason: OfferReason::Admission,
            queued_at_ms: 1,
            local_wait_ms: 2,
            run_ms: 3,
        })),
        frame(&AgentFrame::GuestDone(GuestDone {
            id,
            attempt: 2,
            outcome: Outcome::Succeeded {
                outputs: vec![("out/a.json".into(), [2; 32])],
            },
        })),
        frame(&AgentFrame::HandoverAck(id)),
        frame(&CoordinatorFrame::Place(Placement {
            id,
            origin: "pi-1".into(),
            function: "detect".into(),
            event: event(),
            input: [1; 32],
            attempt: 1,
            hops: 1,
            visited: vec!["pi-1".into()],
        })),
        frame(&CoordinatorFrame::Declined {
            id,
            reason: "no peer".into(),
        }),
        frame(&BlobRequest::Put(b"input bytes".to_vec())),
    ];
    Target {
        name: "wire",
        seeds,
        dictionary: vec![
            b"\xff\xff\xff\xff",
            b"\x00\x00\x00\x00",
            b"\x80\x80\x80\x80\x10",
        ],
        generate: None,
        run: Box::new(|bytes| {
            let mut ok = false;
            let mut agent = FrameDecoder::new(MAX_STREAM_FRAME);
            agent.push(bytes);
            while let Ok(Some(_)) = agent.decode::<AgentFrame>() {
                ok = true;
            }
            let mut coordinator = FrameDecoder::new(MAX_STREAM_FRAME);
            coordinator.push(bytes);
            while let Ok(Some(_)) = coordinator.decode::<CoordinatorFrame>() {
                ok = true;
            }
            let mut blob = FrameDecoder::new(MAX_STREAM_FRAME);
            blob.push(bytes);
            ok |= matches!(blob.decode::<BlobRequest>(), Ok(Some(_)));
            ok
        }),
    }
}

/// Load-report datagrams.
fn load_report() -> Target {
    use spillway_proto::load::{FunctionLoad, LoadReport};
    let full = LoadReport {
        seq: 9,
        sent_at_ms: 1,
        queued: 3,
        running: 1,
        functions: vec![FunctionLoad {
            name: "detect".into(),
            free_slots: 1,
            queued: 3,
            running: 1,
            mean_run_ms: 250,
        }],
        ..LoadReport::default()
    };
    Target {
        name: "load-report",
        seeds: vec![
            LoadReport::default().to_datagram(1150),
            full.to_datagram(1150),
        ],
        dictionary: vec![b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"],
        generate: None,
        run: Box::new(|bytes| LoadReport::from_datagram(bytes).is_ok()),
    }
}

/// Join requests: the frame, the token in it, the node name and the CSR the CA would sign.
fn join(scratch: &Path) -> anyhow::Result<Target> {
    let ca =
        spillway_coordinator::server::ca::Authority::load_or_create(&scratch.join("ca"), "fuzz")?;
    let (_, csr_der) = spillway_link::identity::new_request("pi-1")?;
    let token = spillway_link::token::JoinToken::generate(&ca.fingerprint())
        .map_err(anyhow::Error::msg)?
        .to_string();
    let request = JoinRequest {
        version: PROTOCOL,
        token,
        node: "pi-1".into(),
        csr_der,
    };
    Ok(Target {
        name: "join",
        seeds: vec![
            frame(&request),
            frame(&JoinReply::Refused {
                reason: "no".into(),
            }),
        ],
        dictionary: vec![b"spw1.", b".", b"\x30\x82\xff\xff", b"\x06\x03\x55\x04\x03"],
        generate: None,
        run: Box::new(move |bytes| {
            let mut d = FrameDecoder::new(MAX_JOIN_FRAME);
            d.push(bytes);
            let Ok(Some(req)) = d.decode::<JoinRequest>() else {
                return false;
            };
            let token = spillway_link::token::JoinToken::parse(&req.token).is_ok();
            let name = spillway_link::identity::valid_node_name(&req.node);
            // The coordinator signs only for a valid token and name; the CSR's parser is fuzzed
            // under a fixed name so every mutated request reaches it.
            let signed = ca
                .sign_node("pi-1", &req.csr_der, std::time::Duration::from_secs(86_400))
                .is_ok();
            token && name && signed
        }),
    })
}

/// The CAs a coordinator sends an agent during a rotation, as the agent takes them: the frame,
/// then an agent's whole check and store (bounds, one certificate per entry, the set verifying
/// the chain the coordinator presented), against a real rotation's chain.
fn ca_trust(scratch: &Path) -> anyhow::Result<Target> {
    use spillway_link::membership::Membership;
    let ca =
        spillway_coordinator::server::ca::Authority::load_or_create(&scratch.join("ca"), "fuzz")?;
    let old = ca.cert_der();
    ca.rotate()?;
    let trust = ca.trust();
    let (leaf, _) = trust.signing.server_leaf(&[])?;
    let presented = vec![leaf, old.clone(), trust.signing.cert_der().to_vec()];
    let (key, csr_der) = spillway_link::identity::new_request("pi-1")?;
    let (cert_der, _, _) =
        ca.sign_node("pi-1", &csr_der, std::time::Duration::from_secs(86_400))?;
    let node = scratch.join("node");
    let member = Membership {
        coordinator: "127.0.0.1:7443".into(),
        cert_der,
        ca_der: old,
        key_der: key.serialize_der(),
    };
    member.save(&node)?;
    Ok(Target {
        name: "ca-trust",
        seeds: vec![
            frame(&CoordinatorFrame::Trust { cas: trust.cas() }),
            frame(&CoordinatorFrame::Trust {
                cas: vec![trust.signing.cert_der().to_vec()],
            }),
        ],
        dictionary: vec![
            b"\x30\x82",
            b"\x30\x83\xff\xff\xff",
            b"\x06\x03\x55\x1d\x13",
        ],
        generate: None,
        run: Box::new(move |bytes| {
            let mut d = FrameDecoder::new(MAX_STREAM_FRAME);
            d.push(bytes);
            let Ok(Some(CoordinatorFrame::Trust { cas })) = d.decode::<CoordinatorFrame>() else {
                return false;
            };
            spillway_agent::mesh::trust::adopt(&node, &member, &cas, &presented).is_ok()
        }),
    })
}

/// Every FDL file the repository ships (OSCAR's, SCAR's, the thesis figures, Spillway's own).
fn fdl() -> anyhow::Result<Target> {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut seeds = Vec::new();
    let mut stack = vec![configs.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                seeds.push(std::fs::read(&path)?);
            }
        }
    }
    anyhow::ensure!(
        !seeds.is_empty(),
        "no FDL files under {}",
        configs.display()
    );
    let base = PathBuf::from("/nonexistent");
    Ok(Target {
        name: "fdl",
        seeds,
        dictionary: vec![
            b"[",
            b"]",
            b"{",
            b"}",
            b"- ",
            b": ",
            b"\n  ",
            b"\n- ",
            b"&a ",
            b"*a",
            b"!!binary ",
            b"\"",
            b"'",
            b"18446744073709551616",
            b"-1",
            b"1e309",
            b"0x",
            b"\xc3\xa9",
            b"#",
            b"<<: *a",
            b"---\n",
            b"...\n",
            b"timeout: ",
            b"cpu: ",
            b"memory: ",
            b"replicas: ",
            b"input: ",
            b"path: ",
            b"storage_provider: ",
            b"..",
            b"/",
            b"\t",
        ],
        generate: None,
        run: Box::new(move |bytes| {
            let text = String::from_utf8_lossy(bytes);
            spillway_proto::fdl::parse_str("fuzz.yaml", &text, &base)
                .into_result()
                .is_ok()
        }),
    })
}

/// Image layers: structure-aware tarballs (every hostile shape of the unpacker's tests, and
/// random ones), plain or gzipped, unpacked into a fresh root each time.
fn layer(scratch: &Path) -> anyhow::Result<Target> {
    let root = scratch.join("layer");
    let mut rng = Rng::new(1);
    let seeds = std::iter::once(tarball::benign_layer())
        .chain((0..15).map(|_| tarball::layer(&mut rng)))
        .collect();
    Ok(Target {
        name: "layer",
        seeds,
        dictionary: tarball::DICTIONARY.to_vec(),
        generate: Some(tarball::layer),
        run: Box::new(move |bytes| {
            let _ = std::fs::remove_dir_all(&root);
            if std::fs::create_dir_all(&root).is_err() {
                return false;
            }
            let mut budget = spillway_agent::image::unpack::Budget {
                bytes: 64 << 20,
                entries: 10_000,
            };
            spillway_agent::image::unpack::apply_layer(bytes, &root, &mut budget).is_ok()
        }),
    })
}

/// `oci-archive` and `docker save` tarballs, imported into an image store.
fn archive(scratch: &Path) -> anyhow::Result<Target> {
    use spillway_agent::image::{ImageStore, Platform, archive};
    let store_dir = scratch.join("store");
    let file = scratch.join("archive.tar");
    let mut rng = Rng::new(2);
    let seeds = vec![
        tarball::oci_archive_of(&tarball::benign_layer()),
        tarball::oci_archive(&mut rng),
        tarball::docker_save(&mut rng),
    ];
    let platform = Platform::parse("linux/amd64").map_err(anyhow::Error::msg)?;
    let mut store = Arc::new(ImageStore::open(&store_dir)?);
    let mut runs = 0u64;
    Ok(Target {
        name: "archive",
        seeds,
        dictionary: tarball::DICTIONARY.to_vec(),
        generate: Some(tarball::oci_archive),
        run: Box::new(move |bytes| {
            runs += 1;
            if runs.is_multiple_of(5_000) {
                // What succeeded piles up: start from an empty store now and then.
                let _ = std::fs::remove_dir_all(&store_dir);
                match ImageStore::open(&store_dir) {
                    Ok(s) => store = Arc::new(s),
                    Err(_) => return false,
                }
            }
            if std::fs::write(&file, bytes).is_err() {
                return false;
            }
            archive::import(&store, &file, Some("fuzz:1"), &platform).is_ok()
        }),
    })
}

/// MinIO and S3 bucket notifications, as `/events` receives them.
fn s3_event() -> Target {
    let minio = br#"{"EventName":"s3:ObjectCreated:Put","Key":"fire/in/cam%201.jpg","Records":[{"eventVersion":"2.0","eventSource":"minio:s3","eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"fire"},"object":{"key":"in%2Fcam%201.jpg","size":1234}}}]}"#;
    let s3 = br#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"a/b+c.jpg"}}},{"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"b"},"object":{"key":"x"}}}]}"#;
    let test = br#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}"#;
    Target {
        name: "s3-event",
        seeds: vec![minio.to_vec(), s3.to_vec(), test.to_vec()],
        dictionary: json_dictionary(),
        generate: None,
        run: Box::new(|bytes| {
            spillway_coordinator::server::events::parse_notification(bytes).is_ok()
        }),
    }
}

/// OSCAR's wrapped event (`POST /job/{service}`), with a Spillway envelope or a notification.
fn oscar_event() -> Target {
    let envelope = spillway_proto::envelope::Envelope {
        spillway: spillway_proto::envelope::ENVELOPE_VERSION,
        job: JobId::from_bytes([4; 16]),
        function: "detect".into(),
        origin: "pi-1".into(),
        hops: 1,
        attempt: 1,
        event: event(),
        input: spillway_proto::envelope::InputRef {
            name: "cam1.jpg".into(),
            size: 1234,
            sha256: hex::encode([7u8; 32]),
            url: "http://127.0.0.1:7480/v1/blobs/00?expires=1&signature=00".into(),
        },
        callback: "http://127.0.0.1:7480/v1/callbacks/j/1?expires=1&signature=00".into(),
        expires_at: 1,
        upload: None,
        script: Some("echo".into()),
        variables: Default::default(),
    };
    let inner = serde_json::json!({ "spillway": envelope }).to_string();
    let wrapped = serde_json::json!({"storage_provider": "minio.default", "event": inner});
    let minio = r#"{"Records":[{"eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"in/x.jpg"}}}]}"#;
    let notified = serde_json::json!({"storage_provider": "minio.store", "event": minio});
    Target {
        name: "oscar-event",
        seeds: vec![
            wrapped.to_string().into_bytes(),
            notified.to_string().into_bytes(),
        ],
        dictionary: json_dictionary(),
        generate: None,
        run: Box::new(|bytes| {
            matches!(
                spillway_coordinator::server::oscar_api::parse_wrapped_event(bytes),
                Some(Ok(_))
            )
        }),
    }
}

/// What MQTT clients send the broker's gateway: packets framed, decoded and judged against a
/// node's grants exactly as the gateway does.
fn mqtt() -> Target {
    use spillway_coordinator::server::mqtt::acl::{Grants, Principal};
    use spillway_coordinator::server::mqtt::gateway::{ClientPacket, frame, read_client};
    // Real packets, encoded by rumqttc (what its clients and mosquitto's send).
    use rumqttc::mqttbytes::QoS;
    use rumqttc::mqttbytes::v4::{Connect, Packet, Publish, Subscribe, Unsubscribe};
    let encode = |p: Packet| {
        let mut out = bytes::BytesMut::new();
        p.write(&mut out, usize::MAX)
            .map(|_| out.to_vec())
            .unwrap_or_default()
    };
    let mut c = Connect::new("spillway-edge-1");
    c.set_login("camera", "spwm_0123456789");
    c.clean_session = false;
    let connect = encode(Packet::Connect(c));
    let mut p = Publish::new("cameras/cam1/frames", QoS::AtLeastOnce, b"77".to_vec());
    p.pkid = 1;
    let publish = encode(Packet::Publish(p));
    let mut sub = Subscribe::new("cameras/+/frames", QoS::AtLeastOnce);
    sub.pkid = 2;
    sub.add("#".into(), QoS::AtMostOnce);
    let subscribe = encode(Packet::Subscribe(sub));
    let mut u = Unsubscribe::new("a/b/#");
    u.pkid = 3;
    let unsubscribe = encode(Packet::Unsubscribe(u));
    let mut session = connect.clone();
    for p in [
        &publish,
        &subscribe,
        &unsubscribe,
        &b"\xc0\x00\xe0\x00".to_vec(),
    ] {
        session.extend_from_slice(p);
    }
    let grants = Grants {
        publish: vec!["alerts/fire".into()],
        subscribe: vec!["cameras/+/frames".into(), "$SYS/#".into()],
    };
    Target {
        name: "mqtt",
        seeds: vec![connect, publish, subscribe, unsubscribe, session],
        dictionary: vec![
            b"MQTT",
            b"\x04",
            b"#",
            b"+",
            b"/",
            b"$",
            b"\xff\xff\xff\x7f",
            b"\x00\x00",
        ],
        generate: None,
        run: Box::new(move |bytes| {
            let mut buf = bytes::BytesMut::from(bytes);
            let (mut packets, mut granted) = (0usize, 0usize);
            while let Ok(Some((header, raw))) = frame(&mut buf, 1 << 20) {
                packets += 1;
                match read_client(header, raw) {
                    Ok(ClientPacket::Connect(c)) => {
                        granted += Principal::User("u".into()).session(&c.client_id).len();
                    }
                    Ok(ClientPacket::Publish(p)) => {
                        granted += usize::from(grants.may_publish(&p.topic));
                    }
                    Ok(ClientPacket::Subscribe(s)) => {
                        granted += s
                            .filters
                            .iter()
                            .filter(|f| grants.may_subscribe(&f.path))
                            .count();
                    }
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
            std::hint::black_box(granted);
            packets > 0
        }),
    }
}

fn json_dictionary() -> Vec<&'static [u8]> {
    vec![
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b",",
        b":",
        b"\\u0000",
        b"\\ud800",
        b"%2F",
        b"%",
        b"null",
        b"true",
        b"1e999",
        b"-0",
        b"18446744073709551616",
        b"\"Records\":",
        b"\"s3\":",
        b"\"key\":",
        b"\"spillway\":",
        b"\"event\":",
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_accepts_its_own_seeds() {
        let scratch = tempfile::tempdir().expect("tmp");
        for name in NAMES {
            let mut t = target(name, scratch.path()).expect("target");
            let accepted = t.seeds.clone().iter().filter(|s| (t.run)(s)).count();
            assert!(accepted > 0, "{name}: no seed is a valid input");
            if name == "mqtt" {
                for (i, seed) in t.seeds.clone().iter().enumerate() {
                    assert!((t.run)(seed), "MQTT seed {i} is refused: {seed:?}");
                }
            }
        }
    }
}
