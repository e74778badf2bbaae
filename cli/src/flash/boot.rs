//! What goes onto a boot partition, decided from what is already there (sans-IO: text in, text
//! out). Two first-boot mechanisms exist in the wild:
//! - cloud-init (Ubuntu for Raspberry Pi, Raspberry Pi OS since Trixie): `user-data` next to
//!   `meta-data` on the boot partition; we add a `runcmd` entry (and `hostname`, wifi in
//!   `network-config`), keeping everything the user had.
//! - `systemd.run=` on `cmdline.txt` (Raspberry Pi OS Bookworm and older, as Raspberry Pi Imager
//!   does it): the kernel command line makes systemd run our script once, then reboot.
//!
//! Either way the script (`spillway-firstrun.sh`) installs the agent with `spillway-agent
//! install`, enables the service and deletes itself, the token and the binary from the card.

use serde_json::{Map, Value};

use super::{Arch, FlashOptions};

/// Where Raspberry Pi OS (Bookworm+), Ubuntu and Debian's raspi images mount the boot partition.
pub const BOOT_MOUNT: &str = "/boot/firmware";
/// Our files sit in the boot partition's root folder, as Raspberry Pi Imager's `firstrun.sh`
/// does (also because fatfs 0.3 writes sub-folders that fsck.vfat rejects).
pub const AGENT: &str = "spillway-agent";
pub const CONFIG: &str = "spillway-agent.toml";
pub const TOKEN: &str = "spillway-join-token";
pub const SCRIPT: &str = "spillway-firstrun.sh";
/// On the board the token moves here (mode 0600) before the card's copy is deleted.
pub const TOKEN_ON_BOARD: &str = "/etc/spillway/join-token";

/// How the OS on the card runs something once at first boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstBoot {
    CloudInit,
    KernelCommandLine,
}

/// What the boot partition says about the OS on the card.
#[derive(Debug, Default)]
pub struct BootFiles {
    /// File names in the partition's root folder.
    pub names: Vec<String>,
    pub config_txt: Option<String>,
}

impl BootFiles {
    fn has(&self, name: &str) -> bool {
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    pub fn first_boot(&self) -> FirstBoot {
        if self.has("user-data") || self.has("meta-data") {
            FirstBoot::CloudInit
        } else {
            FirstBoot::KernelCommandLine
        }
    }

    /// The userland's architecture, from `config.txt`'s `arm_64bit` and the kernels present.
    /// 32-bit Raspberry Pi OS ships `kernel7*.img` (and a 64-bit `kernel8.img` for Pi 4 kernels
    /// under a 32-bit userland), 64-bit only `kernel8.img` / `kernel_2712.img`.
    pub fn arch(&self) -> Option<Arch> {
        let arm_64bit = self.config_txt.as_deref().and_then(|text| {
            text.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter_map(|l| l.strip_prefix("arm_64bit="))
                .map(|v| v.trim() == "1")
                .next_back()
        });
        match arm_64bit {
            Some(true) => Some(Arch::Aarch64),
            Some(false) => Some(Arch::Armv7),
            None if self.has("kernel7.img") || self.has("kernel7l.img") => Some(Arch::Armv7),
            None if self.has("kernel8.img") || self.has("kernel_2712.img") => Some(Arch::Aarch64),
            None => None,
        }
    }
}

/// The kernel command line tokens that run our script once (what Raspberry Pi Imager adds).
pub fn firstrun_args() -> String {
    format!(
        "systemd.run={BOOT_MOUNT}/{SCRIPT} systemd.run_success_action=reboot systemd.unit=kernel-command-line.target"
    )
}

/// `cmdline.txt` with our first-boot tokens: one line, an earlier `systemd.run` (another tool's
/// first-boot script) chained from ours, a previous flash of ours replaced.
pub fn cmdline_with_firstrun(cmdline: &str) -> (String, Option<String>) {
    let mut previous = None;
    let mut kept = Vec::new();
    for token in cmdline.split_whitespace() {
        if let Some(path) = token.strip_prefix("systemd.run=") {
            if !path.ends_with(SCRIPT) {
                previous = Some(path.to_owned());
            }
        } else if !token.starts_with("systemd.run_success_action=")
            && token != "systemd.unit=kernel-command-line.target"
        {
            kept.push(token);
        }
    }
    let args = firstrun_args();
    kept.push(&args);
    (format!("{}\n", kept.join(" ")), previous)
}

/// `user-data` with our `runcmd` entry (once) and the host name; everything else kept.
pub fn user_data_with_firstrun(existing: &str, hostname: Option<&str>) -> Result<String, String> {
    let mut doc = yaml_mapping(existing, "user-data")?;
    let command = Value::from(vec![
        "sh".to_owned(),
        format!("{BOOT_MOUNT}/{SCRIPT}"),
        "--now".to_owned(),
    ]);
    let runcmd = doc
        .entry("runcmd")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Value::Array(list) = runcmd else {
        return Err("user-data: `runcmd` is not a list".into());
    };
    if !list.contains(&command) {
        list.push(command);
    }
    if let Some(name) = hostname {
        doc.insert("hostname".into(), name.into());
    }
    let yaml = serde_saphyr::to_string(&Value::Object(doc)).map_err(|e| e.to_string())?;
    Ok(format!("#cloud-config\n{yaml}"))
}

/// `network-config` (netplan v2, with or without a top-level `network:`) with a wifi network.
pub fn network_config_with_wifi(existing: &str, wifi: &super::Wifi) -> Result<String, String> {
    let mut doc = yaml_mapping(existing, "network-config")?;
    let net = match doc.get_mut("network") {
        Some(Value::Object(inner)) => inner,
        _ => &mut doc,
    };
    net.entry("version").or_insert(2.into());
    let mut ap = Map::new();
    ap.insert("password".into(), wifi.password.clone().into());
    let mut wlan = Map::new();
    wlan.insert("dhcp4".into(), true.into());
    wlan.insert("optional".into(), true.into());
    wlan.insert("regulatory-domain".into(), wifi.country.clone().into());
    wlan.insert(
        "access-points".into(),
        Value::Object(
            [(wifi.ssid.clone(), Value::Object(ap))]
                .into_iter()
                .collect(),
        ),
    );
    let wifis = net
        .entry("wifis")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(wifis) = wifis else {
        return Err("network-config: `wifis` is not a mapping".into());
    };
    wifis.insert("wlan0".into(), Value::Object(wlan));
    serde_saphyr::to_string(&Value::Object(doc)).map_err(|e| e.to_string())
}

fn yaml_mapping(text: &str, what: &str) -> Result<Map<String, Value>, String> {
    if text
        .trim()
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(Map::new());
    }
    match serde_saphyr::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(_) => Err(format!("{what} is not a YAML mapping")),
        Err(e) => Err(format!("{what} is not valid YAML: {e}")),
    }
}

/// The agent's config on the board: the user's `--agent-config` (if any) plus state paths, the
/// node name and `[join]`. Checked by the agent's own parser before anything is written.
pub fn agent_config(base: Option<&str>, opts: &FlashOptions) -> Result<String, String> {
    let mut table: toml::Table = match base {
        Some(text) => toml::from_str(text).map_err(|e| format!("--agent-config: {e}"))?,
        None => toml::Table::new(),
    };
    table
        .entry("data_root")
        .or_insert("/var/lib/spillway/data".into());
    table
        .entry("state_dir")
        .or_insert("/var/lib/spillway/state".into());
    if let Some(name) = &opts.hostname {
        table.entry("node_name").or_insert(name.as_str().into());
    }
    let mut join = toml::Table::new();
    join.insert("coordinator".into(), opts.coordinator.as_str().into());
    join.insert("token_file".into(), TOKEN_ON_BOARD.into());
    table.insert("join".into(), join.into());
    let text = format!(
        "# Written by `spillway flash`. The agent joins {} at its first start with the token in\n# {TOKEN_ON_BOARD}, then links with its own certificate.\n{}",
        opts.coordinator,
        toml::to_string(&table).map_err(|e| e.to_string())?
    );
    spillway_agent_config::AgentConfig::from_toml(&text, std::path::Path::new("/etc/spillway"))
        .map_err(|e| format!("the agent config would be invalid: {e}"))?;
    Ok(text)
}

/// The script run once at first boot, as root. `previous` is another tool's first-boot script
/// that `cmdline.txt` named before us; it runs after ours.
pub fn firstrun_script(opts: &FlashOptions, previous: Option<&str>) -> String {
    let mut s = String::from(
        r#"#!/bin/sh
# Written by `spillway flash`. Runs once at first boot (systemd.run= on cmdline.txt, or
# cloud-init's runcmd): installs the Spillway agent as a systemd service, then deletes itself,
# the join token and the agent binary from the boot partition.
set -eu
boot=$(cd "$(dirname "$0")" && pwd)
say() { echo "spillway firstrun: $*"; echo "spillway firstrun: $*" > /dev/kmsg 2>/dev/null || true; }
"#,
    );
    if let Some(name) = &opts.hostname {
        s.push_str(&format!(
            r#"name={name}
old=$(cat /etc/hostname 2>/dev/null || true)
echo "$name" > /etc/hostname
if [ -f /etc/hosts ] && [ -n "$old" ]; then sed -i "s/[[:space:]]$old\$/ $name/" /etc/hosts; fi
grep -q "[[:space:]]$name\$" /etc/hosts 2>/dev/null || echo "127.0.1.1 $name" >> /etc/hosts
hostname "$name" 2>/dev/null || true
say "host name $name"
"#
        ));
    }
    if let Some(wifi) = &opts.wifi {
        let quote = |v: &str| v.replace('\\', "\\\\").replace('\n', "");
        s.push_str(&format!(
            r#"if [ -d /etc/NetworkManager ]; then
  f=/etc/NetworkManager/system-connections/spillway-wifi.nmconnection
  umask 077
  cat > "$f" <<'SPILLWAY_WIFI'
[connection]
id=spillway-wifi
type=wifi
[wifi]
mode=infrastructure
ssid={ssid}
[wifi-security]
key-mgmt=wpa-psk
psk={psk}
[ipv4]
method=auto
[ipv6]
method=auto
SPILLWAY_WIFI
  umask 022
fi
command -v raspi-config >/dev/null && raspi-config nonint do_wifi_country {country} || true
command -v rfkill >/dev/null && rfkill unblock wifi || true
say "wifi network {ssid} configured"
"#,
            ssid = quote(&wifi.ssid),
            psk = quote(&wifi.password),
            country = wifi.country,
        ));
    }
    s.push_str(&format!(
        r#"mkdir -p /usr/local/bin /etc/spillway
# Copied off the FAT partition first: it may be mounted noexec.
cp "$boot/{AGENT}" /usr/local/bin/spillway-agent.new
chmod 755 /usr/local/bin/spillway-agent.new
mv /usr/local/bin/spillway-agent.new /usr/local/bin/spillway-agent
/usr/local/bin/spillway-agent --config "$boot/{CONFIG}" install
(umask 077; cp "$boot/{TOKEN}" {TOKEN_ON_BOARD})
sed -i 's| systemd.run[^ ]*||g; s| systemd.unit=kernel-command-line.target||g' "$boot/cmdline.txt" 2>/dev/null || true
systemctl daemon-reload
systemctl enable spillway-agent.service
if [ "${{1:-}}" = --now ]; then systemctl start spillway-agent.service; fi
rm -f "$boot/{TOKEN}" "$boot/{AGENT}" "$boot/{CONFIG}"
say "the Spillway agent is installed; it joins {coordinator} when it starts"
"#,
        coordinator = opts.coordinator
    ));
    if let Some(previous) = previous {
        s.push_str(&format!(
            "# The first-boot script cmdline.txt named before `spillway flash`.\nif [ -f {previous} ]; then sh {previous}; fi\n"
        ));
    }
    s.push_str("rm -f \"$0\"\nexit 0\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str], config: Option<&str>) -> BootFiles {
        BootFiles {
            names: names.iter().map(|n| n.to_string()).collect(),
            config_txt: config.map(str::to_owned),
        }
    }

    #[test]
    fn architecture_comes_from_arm_64bit_then_from_the_kernels_present() {
        let pi64 = files(&["kernel8.img", "kernel_2712.img", "config.txt"], None);
        assert_eq!(pi64.arch(), Some(Arch::Aarch64));
        let pi32 = files(
            &["kernel.img", "kernel7.img", "kernel7l.img", "kernel8.img"],
            None,
        );
        assert_eq!(pi32.arch(), Some(Arch::Armv7));
        let forced = files(
            &["kernel7l.img", "kernel8.img"],
            Some("[all]\narm_64bit=1 # 64-bit kernel\n"),
        );
        assert_eq!(forced.arch(), Some(Arch::Aarch64));
        assert_eq!(files(&["vmlinuz"], Some("[pi4]\n")).arch(), None);
    }

    #[test]
    fn cloud_init_cards_are_recognised_by_their_seed_files() {
        assert_eq!(
            files(&["user-data", "meta-data"], None).first_boot(),
            FirstBoot::CloudInit
        );
        assert_eq!(
            files(&["cmdline.txt"], None).first_boot(),
            FirstBoot::KernelCommandLine
        );
    }

    #[test]
    fn cmdline_gets_our_tokens_once_and_chains_another_first_boot_script() {
        let pi = "console=serial0,115200 console=tty1 root=PARTUUID=1-02 rootwait quiet\n";
        let (once, prev) = cmdline_with_firstrun(pi);
        assert_eq!(prev, None);
        assert!(once.starts_with("console=serial0,115200 console=tty1 root=PARTUUID=1-02"));
        assert!(once.ends_with("systemd.unit=kernel-command-line.target\n"));
        assert_eq!(once.lines().count(), 1);
        let (twice, prev) = cmdline_with_firstrun(&once);
        assert_eq!((twice.as_str(), prev), (once.as_str(), None), "idempotent");
        let imager = "root=x systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot systemd.unit=kernel-command-line.target";
        let (chained, prev) = cmdline_with_firstrun(imager);
        assert_eq!(prev.as_deref(), Some("/boot/firstrun.sh"));
        assert_eq!(chained.matches("systemd.run=").count(), 1);
    }

    #[test]
    fn user_data_keeps_the_users_settings_and_adds_one_runcmd() {
        let existing = "#cloud-config\nusers:\n  - name: pi\nruncmd:\n  - [echo, hi]\n";
        let once = user_data_with_firstrun(existing, Some("pi-7")).expect("merge");
        assert!(once.starts_with("#cloud-config\n"));
        let doc: Value = serde_saphyr::from_str(&once).expect("yaml");
        assert_eq!(doc["users"][0]["name"], "pi");
        assert_eq!(doc["hostname"], "pi-7");
        assert_eq!(doc["runcmd"].as_array().map(Vec::len), Some(2));
        let twice = user_data_with_firstrun(&once, Some("pi-7")).expect("merge");
        let doc: Value = serde_saphyr::from_str(&twice).expect("yaml");
        assert_eq!(
            doc["runcmd"].as_array().map(Vec::len),
            Some(2),
            "not added twice"
        );
        assert!(user_data_with_firstrun("runcmd: 3\n", None).is_err());
        assert!(user_data_with_firstrun("a: [\n", None).is_err());
    }

    #[test]
    fn network_config_gets_the_wifi_under_network_when_the_file_has_it() {
        let wifi = crate::flash::Wifi {
            ssid: "home".into(),
            password: "secret pass".into(),
            country: "ES".into(),
        };
        let wrapped = network_config_with_wifi("network:\n  version: 2\n", &wifi).expect("ok");
        let doc: Value = serde_saphyr::from_str(&wrapped).expect("yaml");
        assert_eq!(
            doc["network"]["wifis"]["wlan0"]["access-points"]["home"]["password"],
            "secret pass"
        );
        let bare = network_config_with_wifi("", &wifi).expect("ok");
        let doc: Value = serde_saphyr::from_str(&bare).expect("yaml");
        assert_eq!(doc["version"], 2);
        assert_eq!(doc["wifis"]["wlan0"]["regulatory-domain"], "ES");
    }

    #[test]
    fn agent_config_adds_join_and_keeps_the_users_settings() {
        let opts = FlashOptions {
            coordinator: "10.0.2.2:7443".into(),
            hostname: Some("pi-7".into()),
            ..FlashOptions::default()
        };
        let text = agent_config(Some("[labels]\nzone = \"shed\"\n"), &opts).expect("valid");
        let c =
            spillway_agent_config::AgentConfig::from_toml(&text, "/etc".as_ref()).expect("parses");
        assert_eq!(c.node_name, "pi-7");
        assert_eq!(c.labels["zone"], "shed");
        assert_eq!(c.join.map(|j| j.token_file), Some(TOKEN_ON_BOARD.into()));
        let err = agent_config(Some("[resources]\nmemory = \"lots\"\n"), &opts).unwrap_err();
        assert!(err.contains("lots"), "{err}");
    }
}
