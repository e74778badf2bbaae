//! MQTT triggers and outputs with real brokers: Mosquitto (Debian's) and the coordinator's
//! embedded rumqttd, real agent processes, Mosquitto's own clients publishing and subscribing.

mod support;

use std::time::Duration;

use support::mqtt::{Mosquitto, Subscriber, publish, publish_as, publish_file};
use support::{Coordinator, Node, files_under, free_port, repo, wait_until};

const FIRE_FDL: &str = "configs/examples/fire-alert/functions.yaml";

/// A node running the fire-alert example against `broker`.
fn fire_node(broker: &str, extra_mqtt: &str) -> Node {
    let node = Node::new(&format!(
        "node_name = \"edge-1\"\nfunctions = [\"fire/functions.yaml\"]\n[mqtt]\nbroker = \"{broker}\"\n{extra_mqtt}"
    ));
    for file in ["functions.yaml", "detect.sh"] {
        node.write(
            &format!("fire/{file}"),
            std::fs::read(repo(&format!("configs/examples/fire-alert/{file}"))).expect("example"),
        );
    }
    node
}

/// The verdicts the detector wrote into the folder output, sorted.
fn verdicts(node: &Node) -> Vec<String> {
    let dir = node.path("data/alerts/log");
    let mut v: Vec<String> = files_under(&dir)
        .iter()
        .map(|f| {
            std::fs::read_to_string(dir.join(f))
                .expect("verdict")
                .trim()
                .to_owned()
        })
        .collect();
    v.sort();
    v
}

/// Waits until Mosquitto has the agent's subscription to `filter`.
fn subscribed(broker: &Mosquitto, filter: &str) -> bool {
    wait_until(Duration::from_secs(20), || {
        broker.log().contains(&format!("{filter} (QoS 1)"))
    })
}

#[test]
fn a_camera_message_runs_the_detector_and_the_verdict_is_published_through_mosquitto() {
    let broker = Mosquitto::start();
    let mut node = fire_node(&broker.url(), "");
    node.start();
    let banner = node.banner.join("\n");
    assert!(
        banner.contains("MQTT messages on cameras/+/frames"),
        "{banner}"
    );
    assert!(
        banner.contains("results published on alerts/fire"),
        "{banner}"
    );
    assert!(subscribed(&broker, "cameras/+/frames"), "{}", node.log());
    let alerts = Subscriber::start(broker.port, "alerts/fire");
    publish(broker.port, "cameras/cam1/frames", &["73"]);
    publish(broker.port, "cameras/cam2/frames", &["20"]);
    let mut lines = alerts.wait_for(2, Duration::from_secs(30));
    lines.sort();
    assert_eq!(
        lines,
        ["alerts/fire cam1 FIRE 73", "alerts/fire cam2 NOT FIRE 20"],
        "{}",
        node.log()
    );
    assert_eq!(verdicts(&node), ["cam1 FIRE 73", "cam2 NOT FIRE 20"]);
    let jobs = node.jobs().join("\n");
    assert!(
        jobs.contains("mqtt:cameras/cam1/frames") && jobs.contains("mqtt:cameras/cam2/frames"),
        "{jobs}"
    );
    // The payloads were the inputs only while the jobs ran.
    assert!(files_under(&node.path("state/inbox")).is_empty());
}

#[test]
fn messages_published_while_the_agent_is_down_run_when_it_returns_each_exactly_once() {
    let broker = Mosquitto::start();
    let mut node = fire_node(&broker.url(), "");
    node.start();
    assert!(subscribed(&broker, "cameras/+/frames"), "{}", node.log());
    assert!(node.stop().success());
    // The same reading twice is two messages, so two jobs.
    publish(broker.port, "cameras/cam1/frames", &["90", "90", "10"]);
    node.start();
    assert!(
        wait_until(Duration::from_secs(30), || verdicts(&node).len() >= 3),
        "{}",
        node.log()
    );
    // Another restart must not run anything again.
    assert!(node.stop().success());
    node.start();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        verdicts(&node),
        ["cam1 FIRE 90", "cam1 FIRE 90", "cam1 NOT FIRE 10"],
        "{}",
        node.log()
    );
}

#[test]
fn a_burst_cut_by_sigkill_becomes_exactly_one_job_per_message() {
    let broker = Mosquitto::start();
    let mut node = Node::new(&format!(
        "functions = [\"echo.yaml\"]\n[mqtt]\nbroker = \"{}\"\n",
        broker.url()
    ));
    node.write(
        "echo.yaml",
        "functions:\n  oscar:\n  - edge:\n      name: echo\n      runtime: process\n      script: echo.sh\n      cpu: '0.1'\n      memory: 16Mi\n      triggers:\n      - mqtt: {topic: sensors/+/reading}\n      output:\n      - storage_provider: minio.default\n        path: readings/out\n",
    );
    node.write(
        "echo.sh",
        "cp \"$INPUT_FILE_PATH\" \"$TMP_OUTPUT_DIR/$JOB_ID\"\n",
    );
    node.start();
    assert!(subscribed(&broker, "sensors/+/reading"), "{}", node.log());
    let payloads: Vec<String> = (0..60).map(|i| format!("m{i:02}")).collect();
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    publish(broker.port, "sensors/s1/reading", &refs);
    let out = node.path("data/readings/out");
    // Killed twice mid-burst: each time some messages are journaled but not yet acknowledged,
    // and the broker sends them again.
    for done in [12, 30] {
        assert!(
            wait_until(Duration::from_secs(30), || files_under(&out).len() >= done),
            "{}",
            node.log()
        );
        node.kill9();
        node.start();
    }
    assert!(
        wait_until(Duration::from_secs(60), || files_under(&out).len() >= 60),
        "only {} of 60 messages ran:\n{}",
        files_under(&out).len(),
        node.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    let mut seen: Vec<String> = files_under(&out)
        .iter()
        .map(|f| {
            std::fs::read_to_string(out.join(f))
                .expect("output")
                .trim()
                .to_owned()
        })
        .collect();
    seen.sort();
    assert_eq!(seen, payloads, "every message exactly once");
}

#[test]
fn oversized_and_unwanted_messages_are_refused_without_stopping_the_rest() {
    let broker = Mosquitto::start();
    let mut node = fire_node(&broker.url(), "max_payload = \"1Ki\"\n");
    node.start();
    assert!(subscribed(&broker, "cameras/+/frames"), "{}", node.log());
    let big = node.path("big.bin");
    std::fs::write(&big, vec![b'7'; 4096]).expect("write");
    publish_file(broker.port, "cameras/cam9/frames", &big);
    publish(broker.port, "cameras/cam1/frames", &["75"]);
    assert!(
        wait_until(Duration::from_secs(30), || verdicts(&node)
            == ["cam1 FIRE 75"]),
        "{}",
        node.log()
    );
    let jobs = node.jobs();
    let refused = jobs
        .iter()
        .find(|j| j.contains("Failed") && j.contains("mqtt:cameras/cam9/frames"))
        .unwrap_or_else(|| panic!("no failed job for the oversized message: {jobs:?}"));
    let id = refused.split_whitespace().next().expect("job id");
    let (ok, log, err) = node.agent_cli(&["logs", id]);
    assert!(ok, "{err}");
    assert!(
        log.contains("payload is 4096 bytes, over [mqtt] max_payload (1024 bytes)"),
        "{log}"
    );
    // The message's inbox copy goes once the end is journaled (just after `jobs` shows it).
    assert!(wait_until(Duration::from_secs(10), || files_under(
        &node.path("state/inbox")
    )
    .is_empty()));

    // A function moved to another topic while the agent was down: the broker still holds the
    // old subscription's messages; they are dropped with a warning, and the old subscription
    // is removed.
    assert!(node.stop().success());
    let fdl = std::fs::read_to_string(node.path("fire/functions.yaml")).expect("fdl");
    node.write(
        "fire/functions.yaml",
        fdl.replace("cameras/+/frames", "drones/+/frames"),
    );
    publish(broker.port, "cameras/cam1/frames", &["99"]);
    node.start();
    assert!(subscribed(&broker, "drones/+/frames"), "{}", node.log());
    assert!(
        wait_until(Duration::from_secs(20), || node
            .log()
            .contains("no deployed function wants")),
        "{}",
        node.log()
    );
    assert!(
        wait_until(Duration::from_secs(10), || broker
            .log()
            .contains("Received UNSUBSCRIBE from spillway-edge-1")),
        "{}",
        broker.log()
    );
    publish(broker.port, "drones/d1/frames", &["61"]);
    assert!(
        wait_until(Duration::from_secs(30), || verdicts(&node).len() == 2),
        "{}",
        node.log()
    );
    assert_eq!(verdicts(&node), ["cam1 FIRE 75", "unknown FIRE 61"]);
}

#[test]
fn the_coordinators_embedded_broker_carries_deployed_triggers_and_keeps_an_absent_agents_messages()
{
    let mqtt_port = free_port();
    let c = Coordinator::with_config(&format!(
        "[mqtt]\nlisten = \"127.0.0.1:{mqtt_port}\"\nallow_anonymous = true\n"
    ));
    let mut node = Node::new(&format!(
        "node_name = \"edge-1\"\n[mqtt]\nbroker = \"mqtt://127.0.0.1:{mqtt_port}\"\nmax_payload = \"1Ki\"\n"
    ));
    c.join(&node);
    node.start();
    let (ok, _, err) = c.cli(&["apply", "-f", repo(FIRE_FDL).to_str().expect("utf-8")]);
    assert!(ok, "apply failed: {err}");
    let alerts = Subscriber::start(mqtt_port, "alerts/fire");
    // The deployment reaches the agent, which subscribes: probe until a verdict comes back.
    let probed = wait_until(Duration::from_secs(30), || {
        publish(mqtt_port, "cameras/probe/frames", &["1"]);
        std::thread::sleep(Duration::from_millis(300));
        !alerts.lines().is_empty()
    });
    assert!(
        probed,
        "no verdict through the embedded broker:\n{}",
        node.log()
    );
    assert!(node.stop().success());
    publish(mqtt_port, "cameras/cam2/frames", &["88"]);
    node.start();
    assert!(
        wait_until(Duration::from_secs(30), || alerts
            .lines()
            .iter()
            .any(|l| l == "alerts/fire cam2 FIRE 88")),
        "{:?}\n{}",
        alerts.lines(),
        node.log()
    );
    // A refused message is counted where the operator looks: the coordinator's metrics.
    let big = node.path("big.bin");
    std::fs::write(&big, vec![b'9'; 4096]).expect("write");
    publish_file(mqtt_port, "cameras/cam3/frames", &big);
    let counted = wait_until(Duration::from_secs(20), || {
        c.metrics().contains(
            "spillway_mqtt_messages_refused_total{node=\"edge-1\",reason=\"too_large\"} 1",
        )
    });
    assert!(counted, "{}", c.metrics());
}

#[test]
fn tls_and_credentials_from_the_agent_config_reach_a_secured_broker_and_wrong_ones_are_named() {
    let broker = Mosquitto::start_secured();
    let ca = broker.dir.path().join("ca.crt");
    let mut node = fire_node(
        &format!("mqtts://127.0.0.1:{}", broker.port),
        &format!(
            "ca_file = \"{}\"\nusername = \"edge\"\npassword_file = \"mqtt-password\"\n",
            ca.display()
        ),
    );
    node.write("mqtt-password", "not-the-password\n");
    node.start();
    assert!(
        wait_until(Duration::from_secs(20), || node
            .log()
            .contains("the MQTT broker refused this agent")),
        "{}",
        node.log()
    );
    assert!(node.stop().success());
    node.write("mqtt-password", "secret\n");
    node.start();
    assert!(
        subscribed(&broker, "cameras/+/frames"),
        "{}\n{}",
        node.log(),
        broker.log()
    );
    let options = [
        "--cafile",
        ca.to_str().expect("utf-8"),
        "-u",
        "edge",
        "-P",
        "secret",
    ];
    publish_as(broker.port, &options, "cameras/cam7/frames", &["66"]);
    assert!(
        wait_until(Duration::from_secs(30), || verdicts(&node)
            == ["cam7 FIRE 66"]),
        "{}",
        node.log()
    );
}
