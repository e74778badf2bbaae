//! A container's own network (`network: outbound`, the default, as an OSCAR pod has): a network
//! namespace the agent makes for each job and has wired by the standard CNI plugins, as
//! containerd, Podman and k3s do.
//!
//! The built-in network is a bridge (`oci.network_bridge`, `spillway0`) with addresses from
//! `host-local` (`oci.network_subnet`) and outbound traffic masqueraded (the `bridge` plugin's
//! `ipMasq`), then the `firewall` plugin, so that forwarding works on hosts whose FORWARD policy
//! is DROP (Docker's). Operators keep functions off their LAN with rules in its `CNI-ADMIN`
//! chain, or name a network list of their own (`oci.cni_conflist`).
//!
//! Each namespace is a bind-mounted file under the agent's state (`netns/ID`) with the CNI
//! result beside it (`netns/ID.json`), so that an agent killed mid-job releases the address and
//! the rules at its next start ([`Networks::sweep`]).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use spillway_agent_config::ContainerNetwork;

/// A plugin that has not answered by then is killed and the job fails.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Bounds on what a plugin prints and on the operator's network list.
const MAX_PLUGIN_OUTPUT: u64 = 256 << 10;
const MAX_CONFLIST: u64 = 64 << 10;
const MAX_PLUGINS: usize = 16;
/// Addresses handed out on the host: shared by every agent on it, as they share the bridge.
/// On tmpfs, so a reboot (which empties every namespace) empties it too.
const IPAM_DIR: &str = "/run/spillway/cni";
const IFNAME: &str = "eth0";
const CNI_VERSION: &str = "1.0.0";

/// The network list and where its plugins are.
#[derive(Debug)]
pub struct Networks {
    name: String,
    version: String,
    plugins: Vec<Map<String, Value>>,
    cni_path: Vec<PathBuf>,
    /// Namespace files and CNI results of this agent's live containers.
    dir: PathBuf,
    /// Prefix of the container ids CNI sees: rules and addresses are keyed by them, and several
    /// agents on one host share the bridge.
    key: String,
}

impl Networks {
    /// The operator's network list, or the built-in bridge. An unreadable list is an error here,
    /// at start, not at a job.
    pub fn new(config: &ContainerNetwork, dir: &Path, key: &str) -> Result<Self, String> {
        let NetworkList {
            name,
            version,
            plugins,
        } = match &config.conflist {
            Some(path) => load(path)?,
            None => builtin(config),
        };
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Self {
            name,
            version,
            plugins,
            cni_path: config.cni_path.clone(),
            dir: dir.to_path_buf(),
            key: key.to_owned(),
        })
    }

    /// The plugins this network needs that are not installed (empty when it can be used).
    pub fn missing_plugins(&self) -> Vec<String> {
        // A plugin's IPAM plugin is run by it, from the same folders.
        std::iter::once("loopback")
            .chain(self.plugins.iter().flat_map(|p| {
                [at(p, "type").as_str(), at(p, "ipam")["type"].as_str()]
                    .into_iter()
                    .flatten()
            }))
            .filter(|t| self.find(t).is_none())
            .map(str::to_owned)
            .collect()
    }

    /// What to tell the user when plugins are missing.
    pub fn missing_message(&self, missing: &[String]) -> String {
        format!(
            "a container gets its own outbound network (`network: outbound`, the default) through the CNI plugins, and {} not found in {}; install them (Debian and Raspberry Pi OS: `apt install containernetworking-plugins`) or set `oci.cni_path`, or give the function `network: none` (no network) or `network: host` (the node's)",
            missing.join(", "),
            self.cni_path
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// Where the namespace `id` is (a bind-mounted nsfs file).
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Beside a namespace: the CNI result its `DEL` needs.
    fn result_file(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Beside a namespace made ahead of its job while it waits ([`super::ready`]).
    pub fn marker(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.ready"))
    }

    /// Makes the namespace of container `id` and wires it; its path for the container's spec.
    /// On failure nothing is left behind.
    pub fn attach(&self, id: &str) -> Result<PathBuf, String> {
        let netns = self.path(id);
        make_namespace(&netns)?;
        let wired = self.wire(id, &netns);
        if wired.is_err() {
            self.detach(id);
        }
        wired.map(|_| netns)
    }

    fn wire(&self, id: &str, netns: &Path) -> Result<(), String> {
        let loopback = self.conf(&Map::from_iter([("type".into(), "loopback".into())]), None);
        self.invoke("ADD", id, netns, &loopback)?;
        let mut result: Option<Value> = None;
        for plugin in &self.plugins {
            let conf = self.conf(plugin, result.as_ref());
            result = Some(self.invoke("ADD", id, netns, &conf)?);
            // Written after each plugin: a crash between two leaves what the DEL needs.
            let saved = serde_json::to_vec(&result).unwrap_or_default();
            std::fs::write(self.result_file(id), saved)
                .map_err(|e| format!("cannot save the network's state: {e}"))?;
        }
        if let Some(address) = result
            .as_ref()
            .and_then(|r| r["ips"][0]["address"].as_str())
        {
            tracing::debug!(container = id, address, "container network attached");
        }
        Ok(())
    }

    /// Unwires and removes the namespace of container `id` (plugins in reverse order, as CNI
    /// asks); failures are logged, and the next start tries again.
    pub fn detach(&self, id: &str) {
        let netns = self.path(id);
        let state = self.result_file(id);
        let result: Option<Value> = std::fs::File::open(&state).ok().and_then(|f| {
            let mut text = Vec::new();
            f.take(MAX_PLUGIN_OUTPUT).read_to_end(&mut text).ok()?;
            serde_json::from_slice(&text).ok()
        });
        let mut clean = true;
        for plugin in self.plugins.iter().rev() {
            let conf = self.conf(plugin, result.as_ref());
            if let Err(e) = self.invoke("DEL", id, &netns, &conf) {
                tracing::warn!(
                    container = id,
                    "cannot release the container's network: {e}"
                );
                clean = false;
            }
        }
        let _ = nix::mount::umount2(&netns, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&netns);
        let _ = std::fs::remove_file(self.marker(id));
        if clean {
            let _ = std::fs::remove_file(&state);
        }
    }

    /// Releases the networks an agent killed mid-job left (its namespaces, addresses and rules);
    /// how many it found.
    pub fn sweep(&self) -> usize {
        let mut ids: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let id = name.strip_suffix(".json").unwrap_or(&name);
                id.strip_suffix(".ready").unwrap_or(id).to_owned()
            })
            .collect();
        ids.sort();
        ids.dedup();
        for id in &ids {
            self.detach(id);
        }
        ids.len()
    }

    /// One plugin's configuration as CNI hands it over: the list's name and version on it.
    fn conf(&self, plugin: &Map<String, Value>, prev: Option<&Value>) -> Value {
        let mut conf = plugin.clone();
        conf.insert("cniVersion".into(), self.version.clone().into());
        conf.insert("name".into(), self.name.clone().into());
        if let Some(prev) = prev {
            conf.insert("prevResult".into(), prev.clone());
        }
        Value::Object(conf)
    }

    fn find(&self, plugin: &str) -> Option<PathBuf> {
        self.cni_path
            .iter()
            .map(|dir| dir.join(plugin))
            .find(|p| p.is_file())
    }

    /// Runs one plugin (the CNI protocol: environment, configuration on stdin, result or error
    /// on stdout), bounded in time and output.
    fn invoke(&self, command: &str, id: &str, netns: &Path, conf: &Value) -> Result<Value, String> {
        let plugin = conf["type"].as_str().unwrap_or_default();
        let exe = self
            .find(plugin)
            .ok_or_else(|| self.missing_message(&[plugin.to_owned()]))?;
        let path = std::env::join_paths(&self.cni_path).unwrap_or_default();
        let mut child = Command::new(&exe)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", format!("{}-{id}", self.key))
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", IFNAME)
            .env("CNI_PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run CNI plugin {}: {e}", exe.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(conf.to_string().as_bytes());
        }
        let reader = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(pipe) = pipe {
                    let _ = pipe.take(MAX_PLUGIN_OUTPUT).read_to_end(&mut bytes);
                }
                bytes
            })
        };
        let stdout = reader(child.stdout.take().map(|p| Box::new(p) as _));
        let stderr = reader(child.stderr.take().map(|p| Box::new(p) as _));
        let deadline = Instant::now() + PLUGIN_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(format!(
                        "CNI plugin `{plugin}` ({command}) did not answer within {}s",
                        PLUGIN_TIMEOUT.as_secs()
                    ));
                }
                Err(e) => break Err(format!("CNI plugin `{plugin}`: {e}")),
            }
        }?;
        let out = stdout.join().unwrap_or_default();
        let err = stderr.join().unwrap_or_default();
        let answer: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
        if status.success() {
            return Ok(answer);
        }
        // CNI errors are `{"code", "msg", "details"}` on stdout.
        let said = match (answer["msg"].as_str(), answer["details"].as_str()) {
            (Some(msg), Some(details)) if !details.is_empty() => format!("{msg} ({details})"),
            (Some(msg), _) => msg.to_owned(),
            _ => String::from_utf8_lossy(&err).trim().to_owned(),
        };
        Err(format!("CNI plugin `{plugin}` ({command}) failed: {said}"))
    }
}

/// A CNI network list: its name and version, handed to every plugin, and the plugins in order.
#[derive(Debug)]
struct NetworkList {
    name: String,
    version: String,
    plugins: Vec<Map<String, Value>>,
}

/// A plugin's field, `null` when absent (indexing a `Map` would panic; a `Value` does not).
fn at<'a>(plugin: &'a Map<String, Value>, key: &str) -> &'a Value {
    plugin.get(key).unwrap_or(&Value::Null)
}

/// The built-in network: a bridge with outbound traffic masqueraded, then the firewall plugin.
fn builtin(config: &ContainerNetwork) -> NetworkList {
    let bridge = serde_json::json!({
        "type": "bridge",
        "bridge": config.bridge,
        "isGateway": true,
        "ipMasq": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": config.subnet}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": IPAM_DIR,
        },
    });
    let firewall = serde_json::json!({"type": "firewall", "backend": "iptables"});
    let plugins = [bridge, firewall]
        .into_iter()
        .filter_map(|p| match p {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .collect();
    NetworkList {
        name: "spillway".to_owned(),
        version: CNI_VERSION.to_owned(),
        plugins,
    }
}

/// The operator's CNI network list (`.conflist`), checked: a name, a version, and at most
/// [`MAX_PLUGINS`] plugins whose `type` is a plain file name.
fn load(path: &Path) -> Result<NetworkList, String> {
    let bad = |what: String| format!("oci.cni_conflist {}: {what}", path.display());
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut text = Vec::new();
    file.take(MAX_CONFLIST + 1)
        .read_to_end(&mut text)
        .map_err(|e| bad(e.to_string()))?;
    if text.len() as u64 > MAX_CONFLIST {
        return Err(bad(format!("larger than {} KiB", MAX_CONFLIST >> 10)));
    }
    let list: Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let field = |name: &str| {
        list[name]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| bad(format!("needs `{name}`, a string")))
    };
    let (name, version) = (field("name")?, field("cniVersion")?);
    let plugins: Vec<Map<String, Value>> = match &list["plugins"] {
        Value::Array(items) if !items.is_empty() && items.len() <= MAX_PLUGINS => items
            .iter()
            .map(|p| p.as_object().cloned())
            .collect::<Option<_>>()
            .ok_or_else(|| bad("every entry of `plugins` is an object".to_owned()))?,
        _ => {
            return Err(bad(format!(
                "needs `plugins`, a list of 1 to {MAX_PLUGINS} plugins"
            )));
        }
    };
    let plain = |t: &Value| {
        t.as_str().is_some_and(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !t.starts_with('.')
        })
    };
    for p in &plugins {
        let ipam = &at(p, "ipam")["type"];
        if !plain(at(p, "type")) || !(ipam.is_null() || plain(ipam)) {
            return Err(bad(format!(
                "plugin `type` {} (ipam {ipam}) is not a plugin's file name",
                at(p, "type")
            )));
        }
    }
    Ok(NetworkList {
        name,
        version,
        plugins,
    })
}

/// A new network namespace, kept alive by a bind mount on `path` (as `ip netns add` does). The
/// namespace is entered by a thread of its own, which ends with it.
fn make_namespace(path: &Path) -> Result<(), String> {
    std::fs::File::create_new(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let target = path.to_path_buf();
    let made = std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || -> nix::Result<()> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?
        .join();
    match made {
        Ok(Ok(())) => Ok(()),
        failed => {
            let _ = std::fs::remove_file(path);
            Err(match failed {
                Ok(Err(e)) => format!("cannot make a network namespace: {e}"),
                _ => "cannot make a network namespace".to_owned(),
            })
        }
    }
}

/// The resolver configuration for a container with a network: the host's, unless it names only
/// resolvers on the host's loopback (systemd-resolved's 127.0.0.53), which a namespace of its
/// own cannot reach; then systemd-resolved's list of upstream servers, when there is one.
pub fn resolv_conf(own_namespace: bool) -> Option<PathBuf> {
    let host = Path::new("/etc/resolv.conf");
    let text = std::fs::read_to_string(host).ok()?;
    let servers: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .map(str::trim)
        .collect();
    let loopback_only =
        !servers.is_empty() && servers.iter().all(|s| s.starts_with("127.") || *s == "::1");
    let upstream = Path::new("/run/systemd/resolve/resolv.conf");
    if own_namespace && loopback_only && upstream.is_file() {
        return Some(upstream.to_path_buf());
    }
    Some(host.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ContainerNetwork {
        ContainerNetwork::new("spwtest0".into(), "10.93.0.0/24".into()).expect("config")
    }

    #[test]
    fn the_built_in_network_masquerades_and_passes_the_firewall() {
        let NetworkList {
            name,
            version,
            plugins,
        } = builtin(&config());
        assert_eq!((name.as_str(), version.as_str()), ("spillway", "1.0.0"));
        let types: Vec<_> = plugins
            .iter()
            .filter_map(|p| at(p, "type").as_str())
            .collect();
        assert_eq!(types, ["bridge", "firewall"]);
        assert_eq!(at(&plugins[0], "ipMasq"), true);
        assert_eq!(at(&plugins[0], "bridge"), "spwtest0");
        assert_eq!(
            at(&plugins[0], "ipam")["ranges"][0][0]["subnet"],
            "10.93.0.0/24"
        );
    }

    #[test]
    fn an_operators_network_list_is_checked_before_use() {
        let dir = tempfile::tempdir().expect("tmp");
        let write = |text: &str| {
            let p = dir.path().join("net.conflist");
            std::fs::write(&p, text).expect("write");
            load(&p)
        };
        let ok = write(r#"{"cniVersion":"0.4.0","name":"lan","plugins":[{"type":"macvlan","master":"eth0","ipam":{"type":"dhcp"}}]}"#)
            .expect("valid");
        assert_eq!((ok.name.as_str(), ok.version.as_str()), ("lan", "0.4.0"));
        for (text, says) in [
            ("{", "EOF"),
            (
                r#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#,
                "needs `name`",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
                "a list of 1 to 16",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../../bin/sh"}]}"#,
                "not a plugin's file name",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"/bin/sh"}]}"#,
                "not a plugin's file name",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[1]}"#,
                "is an object",
            ),
        ] {
            let e = write(text).expect_err(text);
            assert!(
                e.contains("oci.cni_conflist") && e.contains(says),
                "{text}: {e}"
            );
        }
        let huge = format!(r#"{{"name":"{}"}}"#, "x".repeat(70_000));
        assert!(
            write(&huge)
                .expect_err("huge")
                .contains("larger than 64 KiB")
        );
    }

    #[test]
    fn missing_plugins_are_named_with_what_to_install() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut config = config();
        config.cni_path = vec![dir.path().join("nowhere")];
        let networks = Networks::new(&config, &dir.path().join("netns"), "k").expect("new");
        let missing = networks.missing_plugins();
        assert_eq!(missing, ["loopback", "bridge", "host-local", "firewall"]);
        let message = networks.missing_message(&missing);
        assert!(
            message.contains("apt install containernetworking-plugins")
                && message.contains("network: none")
                && message.contains("nowhere"),
            "{message}"
        );
    }
}
