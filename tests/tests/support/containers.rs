//! What the container tests share: FDL entries, waiting for a job's end, and what a node's
//! containers leave behind (container state, cgroups, mounts, network namespaces).

use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{Node, wait_until};

pub fn function(name: &str, image: &str, script: Option<&str>, extra: &str) -> String {
    let script = script.map_or(String::new(), |s| format!("      script: {s}\n"));
    format!(
        "  - edge:\n      name: {name}\n      image: {image}\n{script}      timeout: 30\n{extra}      input: [{{storage_provider: minio.default, path: {name}/in}}]\n      output: [{{storage_provider: minio.default, path: {name}/out}}]\n"
    )
}

pub fn fdl(functions: &[String]) -> String {
    format!("functions:\n  oscar:\n{}", functions.concat())
}

/// The finished job of `input` (`name/in/file`): (id prefix, state), once it has ended
/// (`Delivering` is not the end: outputs are still being moved into place).
pub fn finished(node: &Node, input: &str) -> Option<(String, String)> {
    node.jobs().iter().find_map(|row| {
        let cols: Vec<&str> = row.split_whitespace().collect();
        (cols.len() >= 4 && cols[3] == input && matches!(cols[1], "Succeeded" | "Failed"))
            .then(|| (cols[0].to_owned(), cols[1].to_owned()))
    })
}

pub fn wait_finished(node: &Node, input: &str, within: Duration) -> (String, String) {
    let mut found = None;
    wait_until(within, || {
        found = finished(node, input);
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("{input} did not finish; agent log:\n{}", node.log()))
}

pub fn reason(node: &Node, id: &str) -> String {
    let (_, log, _) = node.agent_cli(&["logs", id]);
    log.lines()
        .find_map(|l| l.strip_prefix("reason:"))
        .map(|r| r.trim().to_owned())
        .unwrap_or_else(|| panic!("no reason in:\n{log}"))
}

/// Containers, cgroups, mounts and networks (namespaces, address leases, NAT and firewall
/// rules) of this node that still exist.
pub fn leftovers(node: &Node) -> Vec<String> {
    let containers = node.path("state/containers");
    let mut left: Vec<String> = std::fs::read_dir(&containers)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| format!("container state {}", e.path().display()))
        .collect();
    let key = container_key(node);
    // Namespaces the agent made ahead of jobs (`ID.ready` beside them) are its own, not left.
    let ready = ready_networks(node);
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 2 && (f[2] == "cgroup" || f[2] == "cgroup2") {
            let parent = Path::new(f[1]).join("spillway").join(&key);
            for e in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    left.push(format!("cgroup {}", e.path().display()));
                }
            }
        }
        let of_ready = ready.iter().any(|id| {
            f.get(1)
                .is_some_and(|at| Path::new(at) == node.path(&format!("state/netns/{id}")))
        });
        if line.contains(&*node.dir.path().to_string_lossy()) && !of_ready {
            left.push(format!("mount {line}"));
        }
    }
    for e in std::fs::read_dir(node.path("state/netns"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let id = name.strip_suffix(".json").unwrap_or(&name);
        let id = id.strip_suffix(".ready").unwrap_or(id);
        if !ready.iter().any(|r| r == id) {
            left.push(format!("network namespace file {}", e.path().display()));
        }
    }
    left.extend(network_leftovers(&key, &ready));
    left
}

/// The ids of the namespaces `node`'s agent holds ready for coming jobs.
pub fn ready_networks(node: &Node) -> Vec<String> {
    std::fs::read_dir(node.path("state/netns"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".ready").map(str::to_owned)
        })
        .collect()
}

/// Where the built-in container network's `host-local` plugin keeps its leases.
pub const LEASES: &str = "/run/spillway/cni/spillway";

/// Address leases and NAT rules of containers whose CNI id starts with `key` (except the
/// namespaces held `ready`), and firewall rules for addresses nobody leases (the firewall
/// plugin's rules name no container).
pub fn network_leftovers(key: &str, ready: &[String]) -> Vec<String> {
    let held = |owner: &str| ready.iter().any(|id| owner == format!("{key}-{id}"));
    let mut left = Vec::new();
    let mut leased = Vec::new();
    for e in std::fs::read_dir(LEASES).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<std::net::Ipv4Addr>().is_err() {
            continue;
        }
        let owner = std::fs::read_to_string(e.path()).unwrap_or_default();
        let owner_id = owner.lines().next().unwrap_or_default().trim();
        if owner.starts_with(&format!("{key}-")) && !held(owner_id) {
            left.push(format!("address lease {name} ({})", owner.trim()));
        }
        leased.push(format!("{name}/32"));
    }
    let rules = std::process::Command::new("iptables-save")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for rule in rules.lines() {
        // The bridge plugin's NAT rules name the container in a comment (`id: \"KEY-ID\"`).
        let of_ready = ready
            .iter()
            .any(|id| rule.contains(&format!("{key}-{id}\\\"")));
        if rule.contains(&format!("{key}-")) && !of_ready {
            left.push(format!("iptables rule {rule}"));
        }
        let unleased = rule.starts_with("-A CNI-FORWARD")
            && rule.contains("/32")
            && !leased.iter().any(|ip| rule.contains(&format!(" {ip} ")));
        if unleased {
            left.push(format!(
                "firewall rule for an address nobody leases: {rule}"
            ));
        }
    }
    left
}

/// Waits up to 10 s for the node's containers, cgroups and mounts to be gone; fails naming what
/// is left.
pub fn assert_nothing_left(node: &Node) {
    assert!(
        wait_until(Duration::from_secs(10), || leftovers(node).is_empty()),
        "left behind: {:?}",
        leftovers(node)
    );
}

/// The key of `node`'s containers on this host: its cgroup parent and the prefix of the
/// container ids CNI sees (the first 12 hex of sha256 of its containers folder).
pub fn container_key(node: &Node) -> String {
    let containers = node.path("state/containers");
    hex::encode(Sha256::digest(containers.as_os_str().as_encoded_bytes()))[..12].to_owned()
}
