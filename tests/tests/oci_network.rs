//! A container function's network, end to end: its own namespace wired by the real CNI plugins
//! (Debian's `containernetworking-plugins`) with outbound traffic masqueraded, as OSCAR's pods
//! have; `network: none` and `network: host` when the FDL asks. "The outside" is a test host in
//! a network namespace this test makes, serving a file over HTTP: no traffic leaves the machine.

mod support;

use std::process::{Child, Command};
use std::time::Duration;

use support::containers::{
    assert_nothing_left, container_key, fdl, function, network_leftovers, ready_networks,
    wait_finished,
};
use support::oci::write_docker_save;
use support::{Node, wait_until};

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("iproute2");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A host in a network namespace of its own, one veth link away from this machine's, serving
/// `hello.txt` over HTTP on 10.79.K.2:8080. Removed on drop.
struct Outside {
    ns: String,
    host_if: String,
    address: String,
    server: Child,
    _site: tempfile::TempDir,
}

impl Outside {
    fn start(greeting: &str) -> Self {
        let k = std::process::id() % 250 + 1;
        let ns = format!("spwout{k}");
        let (host_if, far_if) = (format!("spwout{k}h"), format!("spwout{k}f"));
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &far_if, "netns", &ns,
        ]);
        ip(&["addr", "add", &format!("10.79.{k}.1/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("10.79.{k}.2/30"),
            "dev",
            &far_if,
        ]);
        ip(&["-n", &ns, "link", "set", &far_if, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let site = tempfile::tempdir().expect("site");
        std::fs::write(site.path().join("hello.txt"), greeting).expect("hello");
        let address = format!("10.79.{k}.2:8080");
        let server = Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-m", "http.server", "8080"])
            .args(["--bind", &format!("10.79.{k}.2"), "--directory"])
            .arg(site.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("http.server");
        let outside = Self {
            ns,
            host_if,
            address,
            server,
            _site: site,
        };
        let served = wait_until(Duration::from_secs(20), || {
            let to = outside.address.parse().expect("address");
            std::net::TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_ok()
        });
        assert!(
            served,
            "the outside host does not serve {}",
            outside.address
        );
        outside
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

const PROBE_SH: &str = r#"#!/bin/sh
{
  echo "net=$(ls /sys/class/net | tr '\n' ' ')"
  # (Debian busybox-static 1.35 wget crashes on -T: `timeout` bounds it instead.)
  if timeout 10 wget -q -O "$TMP_OUTPUT_DIR/fetched.txt" "http://$OUTSIDE/hello.txt"; then
    echo reached
  else
    echo unreachable
  fi
  if [ -s /etc/resolv.conf ]; then echo resolver; else echo no-resolver; fi
} > "$TMP_OUTPUT_DIR/probe.txt"
"#;

fn node_with_busybox(config: &str) -> Node {
    let node = Node::new(config);
    let archive = node.path("busybox.tar");
    write_docker_save(&archive, "localhost/busybox:saved");
    let (ok, out, err) = node.agent_cli(&["load", &archive.display().to_string()]);
    assert!(ok && out.contains("localhost/busybox:saved"), "{out}{err}");
    node
}

fn probe(node: &Node, name: &str) -> String {
    let (id, state) = wait_finished(node, &format!("{name}/in/go"), Duration::from_secs(90));
    let probe = std::fs::read_to_string(node.path(&format!("data/{name}/out/probe.txt")))
        .unwrap_or_default();
    assert_eq!(
        state,
        "Succeeded",
        "{probe}\n{}",
        node.agent_cli(&["logs", &id]).1
    );
    probe
}

#[test]
fn a_container_reaches_out_from_its_own_namespace_and_is_cut_off_or_on_the_host_when_asked() {
    let outside = Outside::start("hello from outside");
    let mut node = node_with_busybox("functions = [\"fn.yaml\"]\n");
    node.write("probe.sh", PROBE_SH);
    let env = format!(
        "      environment: {{variables: {{OUTSIDE: \"{}\"}}}}\n",
        outside.address
    );
    node.write(
        "fn.yaml",
        fdl(&[
            function("reach", "localhost/busybox:saved", Some("probe.sh"), &env),
            function(
                "cut",
                "localhost/busybox:saved",
                Some("probe.sh"),
                &format!("{env}      network: none\n"),
            ),
            function(
                "shared",
                "localhost/busybox:saved",
                Some("probe.sh"),
                &format!("{env}      network: host\n"),
            ),
        ]),
    );
    node.start();
    for name in ["reach", "cut", "shared"] {
        node.write(&format!("data/{name}/in/go"), "x");
    }

    // The default: an interface of its own, through the node's bridge and NAT to the outside.
    let reach = probe(&node, "reach");
    assert_eq!(
        reach.lines().collect::<Vec<_>>(),
        ["net=eth0 lo ", "reached", "resolver"],
        "{reach}"
    );
    assert_eq!(
        std::fs::read_to_string(node.path("data/reach/out/fetched.txt")).expect("fetched"),
        "hello from outside"
    );
    // `network: none`: only a loopback device, nothing reachable, no resolver.
    let cut = probe(&node, "cut");
    assert_eq!(
        cut.lines().collect::<Vec<_>>(),
        ["net=lo ", "unreachable", "no-resolver"],
        "{cut}"
    );
    // `network: host`: the node's own interfaces, the outside link among them.
    let shared = probe(&node, "shared");
    assert!(
        shared.contains(&outside.host_if) && shared.contains("\nreached\n"),
        "{shared}"
    );
    // Every namespace, address, NAT rule and firewall rule went with its job; the agent keeps
    // namespaces made ahead for the next jobs, and releases them when it stops.
    assert_nothing_left(&node);
    assert!(!ready_networks(&node).is_empty(), "none made ahead");
    node.stop();
    assert!(ready_networks(&node).is_empty());
    let key = container_key(&node);
    assert!(
        network_leftovers(&key, &[]).is_empty(),
        "{:?}",
        network_leftovers(&key, &[])
    );
}

#[test]
fn without_cni_plugins_an_outbound_function_is_not_deployed_and_says_what_to_install() {
    let mut node =
        node_with_busybox("functions = [\"fn.yaml\"]\n[oci]\ncni_path = [\"/nonexistent/cni\"]\n");
    node.write("probe.sh", PROBE_SH);
    node.write(
        "fn.yaml",
        fdl(&[
            function("reach", "localhost/busybox:saved", Some("probe.sh"), ""),
            function(
                "cut",
                "localhost/busybox:saved",
                Some("probe.sh"),
                "      network: none\n",
            ),
        ]),
    );
    node.start();
    let refusal = node
        .banner
        .iter()
        .find(|l| l.trim_start().starts_with("NOT DEPLOYED reach:"))
        .unwrap_or_else(|| panic!("reach was deployed: {:?}", node.banner));
    for want in [
        "loopback, bridge, host-local, firewall not found in /nonexistent/cni",
        "apt install containernetworking-plugins",
        "`network: none`",
    ] {
        assert!(refusal.contains(want), "missing `{want}` in: {refusal}");
    }
    // The function that needs no network runs as before, and nothing was wired for it.
    node.write("data/cut/in/go", "x");
    assert!(probe(&node, "cut").contains("net=lo "));
    node.write("data/reach/in/go", "x");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        node.jobs().iter().all(|j| !j.contains("reach/in/go")),
        "{:?}",
        node.jobs()
    );
    assert!(network_leftovers(&container_key(&node), &[]).is_empty());
    assert!(
        ready_networks(&node).is_empty(),
        "no namespaces made ahead without the plugins"
    );
    assert_nothing_left(&node);
    node.stop();
}
