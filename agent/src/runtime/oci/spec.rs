//! The OCI runtime spec of one job: runc's defaults (pid, mount, ipc, uts, cgroup and network
//! namespaces, the network one joined or left out as the function asks; masked and read-only /proc paths; no devices) tightened for functions: read-only
//! root with a tmpfs `/tmp`, the job's input read-only and its output writable, the FDL script
//! mounted where OSCAR mounts it, memory/CPU/pids limits, `no_new_privileges`, a reduced
//! capability set and a seccomp profile that refuses what a function never needs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder, Mount,
    MountBuilder, ProcessBuilder, RootBuilder, Spec, UserBuilder,
};

/// Where the function sees its input, its output and its script.
pub const INPUT_DIR: &str = "/tmp/spillway/input";
pub const OUTPUT_DIR: &str = "/tmp/spillway/output";
/// OSCAR mounts the service script here; scripts that refer to themselves keep working.
pub const SCRIPT_PATH: &str = "/oscar/config/script.sh";

/// Capabilities a function keeps (Docker's default set without MKNOD, NET_RAW, SETPCAP,
/// SETFCAP and SYS_CHROOT): enough for images that switch users or fix file ownership.
const CAPABILITIES: [Capability; 9] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::NetBindService,
    Capability::AuditWrite,
];

/// System calls refused with EPERM: kernel modules, reboot, swap, mounts (the old call and the
/// new mount API), namespaces, BPF, keyrings, clocks, other processes' memory. (Names that exist
/// on x86_64, arm64 and arm, and that Debian 12's libseccomp knows.)
pub const DENIED_SYSCALLS: [&str; 36] = [
    "acct",
    "add_key",
    "adjtimex",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "init_module",
    "kcmp",
    "kexec_load",
    "keyctl",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "umount2",
    "unshare",
];

/// `clone` flags that make new namespaces: a function may fork, never make a namespace (a user
/// namespace would give it capabilities over one; the kernel's attack surface grows with it).
pub const DENIED_CLONE_FLAGS: [(&str, u64); 7] = [
    ("CLONE_NEWNS", 0x0002_0000),
    ("CLONE_NEWCGROUP", 0x0200_0000),
    ("CLONE_NEWUTS", 0x0400_0000),
    ("CLONE_NEWIPC", 0x0800_0000),
    ("CLONE_NEWUSER", 0x1000_0000),
    ("CLONE_NEWPID", 0x2000_0000),
    ("CLONE_NEWNET", 0x4000_0000),
];

/// Everything about one run that the spec depends on.
#[derive(Debug, Clone)]
pub struct Plan {
    pub hostname: String,
    pub cgroups_path: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub input_dir: PathBuf,
    pub output_dir: PathBuf,
    /// The output folder again at SCAR's `/tmp/$REQUEST_ID/output`.
    pub scar_output: Option<String>,
    pub script: Option<PathBuf>,
    pub memory: Option<u64>,
    pub cpu_millis: Option<u64>,
    pub pids: i64,
    pub network: Network,
    /// Bind-mounted read-only as the container's `/etc/resolv.conf` when it has a network.
    pub resolv_conf: Option<PathBuf>,
    pub tmp_size: u64,
}

/// The container's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// A new, empty one (`network: none`): only a loopback device.
    Isolated,
    /// One the agent made and had wired (`network: outbound`), a bind-mounted namespace file.
    Joined(PathBuf),
    /// The host's own (`network: host`).
    Host,
}

fn mount(dest: &str, typ: &str, source: &Path, options: &[&str]) -> Result<Mount, String> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(|e| e.to_string())
}

/// Builds the spec for a bundle whose root is the `rootfs` folder next to `config.json`.
pub fn build(plan: &Plan) -> Result<Spec, String> {
    let mut spec = Spec::default();
    spec.set_hostname(Some(plan.hostname.clone()));
    spec.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(true)
            .build()
            .map_err(|e| e.to_string())?,
    ));
    let caps: HashSet<Capability> = CAPABILITIES.into_iter().collect();
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(plan.args.clone())
        .env(plan.env.clone())
        .cwd(plan.cwd.clone())
        .no_new_privileges(true)
        .user(
            UserBuilder::default()
                .uid(plan.uid)
                .gid(plan.gid)
                .build()
                .map_err(|e| e.to_string())?,
        )
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .build()
                .map_err(|e| e.to_string())?,
        )
        .build()
        .map_err(|e| e.to_string())?;
    spec.set_process(Some(process));

    let mut mounts = spec.mounts().clone().unwrap_or_default();
    let tmp_options = format!("size={}", plan.tmp_size);
    mounts.push(mount(
        "/tmp",
        "tmpfs",
        Path::new("tmpfs"),
        &["nosuid", "nodev", "mode=1777", &tmp_options],
    )?);
    mounts.push(mount(
        INPUT_DIR,
        "bind",
        &plan.input_dir,
        &["rbind", "ro", "nosuid", "nodev"],
    )?);
    mounts.push(mount(
        OUTPUT_DIR,
        "bind",
        &plan.output_dir,
        &["rbind", "rw", "nosuid", "nodev"],
    )?);
    if let Some(scar) = &plan.scar_output {
        mounts.push(mount(
            scar,
            "bind",
            &plan.output_dir,
            &["rbind", "rw", "nosuid", "nodev"],
        )?);
    }
    if let Some(script) = &plan.script {
        mounts.push(mount(
            SCRIPT_PATH,
            "bind",
            script,
            &["bind", "ro", "nosuid", "nodev"],
        )?);
    }
    if let Some(resolv) = plan
        .resolv_conf
        .as_deref()
        .filter(|_| plan.network != Network::Isolated)
    {
        mounts.push(mount("/etc/resolv.conf", "bind", resolv, &["bind", "ro"])?);
    }
    spec.set_mounts(Some(mounts));

    let Some(linux) = spec.linux_mut() else {
        return Err("the default spec has no linux section".to_owned());
    };
    linux.set_cgroups_path(Some(PathBuf::from(&plan.cgroups_path)));
    if let Some(ns) = linux.namespaces_mut() {
        match &plan.network {
            Network::Isolated => {}
            Network::Host => ns.retain(|n| n.typ() != LinuxNamespaceType::Network),
            Network::Joined(path) => {
                for n in ns
                    .iter_mut()
                    .filter(|n| n.typ() == LinuxNamespaceType::Network)
                {
                    n.set_path(Some(path.clone()));
                }
            }
        }
    }
    if let Some(resources) = linux.resources_mut() {
        if let Some(limit) = plan.memory {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            resources.set_memory(Some(
                LinuxMemoryBuilder::default()
                    .limit(limit)
                    // No swap beyond the limit: an over-limit job is OOM-killed, not slowed to a crawl.
                    .swap(limit)
                    .build()
                    .map_err(|e| e.to_string())?,
            ));
        }
        if let Some(millis) = plan.cpu_millis.filter(|m| *m > 0) {
            const PERIOD: u64 = 100_000;
            resources.set_cpu(Some(
                LinuxCpuBuilder::default()
                    .period(PERIOD)
                    .quota(i64::try_from(millis * PERIOD / 1000).unwrap_or(i64::MAX))
                    .build()
                    .map_err(|e| e.to_string())?,
            ));
        }
        resources.set_pids(Some(
            LinuxPidsBuilder::default()
                .limit(plan.pids)
                .build()
                .map_err(|e| e.to_string())?,
        ));
    }
    let mut rules = vec![
        LinuxSyscallBuilder::default()
            .names(
                DENIED_SYSCALLS
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            )
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(nix::libc::EPERM as u32)
            .build()
            .map_err(|e| e.to_string())?,
    ];
    rules.extend(namespace_rules()?);
    linux.set_seccomp(Some(
        LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .syscalls(rules)
            .build()
            .map_err(|e| e.to_string())?,
    ));
    Ok(spec)
}

/// `clone` with a namespace flag is refused (one rule per flag: seccomp compares masked
/// arguments for equality). `clone3` passes its flags in memory seccomp cannot read, so it is
/// refused with ENOSYS: the C library then falls back to `clone`, which the rules see.
fn namespace_rules() -> Result<Vec<oci_spec::runtime::LinuxSyscall>, String> {
    use oci_spec::runtime::{LinuxSeccompArgBuilder, LinuxSeccompOperator};
    let mut rules = Vec::new();
    for (_, flag) in DENIED_CLONE_FLAGS {
        let arg = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(flag)
            .value_two(flag)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build()
            .map_err(|e| e.to_string())?;
        rules.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone".to_owned()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(nix::libc::EPERM as u32)
                .args(vec![arg])
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    rules.push(
        LinuxSyscallBuilder::default()
            .names(vec!["clone3".to_owned()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(nix::libc::ENOSYS as u32)
            .build()
            .map_err(|e| e.to_string())?,
    );
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            hostname: "fire".into(),
            cgroups_path: "/spillway/job-1".into(),
            args: vec!["/bin/sh".into(), SCRIPT_PATH.into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            input_dir: "/state/in".into(),
            output_dir: "/state/out".into(),
            scar_output: Some("/tmp/0123abcd/output".into()),
            script: Some("/fdl/script.sh".into()),
            memory: Some(64 << 20),
            cpu_millis: Some(500),
            pids: 64,
            network: Network::Isolated,
            resolv_conf: Some("/etc/resolv.conf".into()),
            tmp_size: 16 << 20,
        }
    }

    #[test]
    fn limits_isolation_and_mounts_follow_the_plan() {
        let spec = build(&plan()).expect("spec");
        assert!(
            spec.root()
                .as_ref()
                .expect("root")
                .readonly()
                .unwrap_or(false)
        );
        let process = spec.process().as_ref().expect("process");
        assert_eq!(process.no_new_privileges(), Some(true));
        let caps = process.capabilities().as_ref().expect("caps");
        assert!(
            !caps
                .bounding()
                .as_ref()
                .expect("bounding")
                .contains(&Capability::SysAdmin)
        );
        let linux = spec.linux().as_ref().expect("linux");
        let ns: Vec<_> = linux
            .namespaces()
            .as_ref()
            .expect("ns")
            .iter()
            .map(|n| n.typ())
            .collect();
        for want in [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Network,
        ] {
            assert!(ns.contains(&want), "{want:?}");
        }
        let res = linux.resources().as_ref().expect("resources");
        assert_eq!(
            res.memory().as_ref().and_then(|m| m.limit()),
            Some(64 << 20)
        );
        assert_eq!(res.cpu().as_ref().and_then(|c| c.quota()), Some(50_000));
        assert_eq!(res.pids().as_ref().map(|p| p.limit()), Some(64));
        assert!(linux.seccomp().is_some());
        let mounts = spec.mounts().as_ref().expect("mounts");
        let find = |d: &str| {
            mounts
                .iter()
                .find(|m| m.destination() == Path::new(d))
                .cloned()
        };
        let input = find(INPUT_DIR).expect("input mount");
        assert!(
            input
                .options()
                .as_ref()
                .expect("opts")
                .contains(&"ro".to_string())
        );
        let scar = find("/tmp/0123abcd/output").expect("SCAR's output folder");
        assert_eq!(scar.source().as_deref(), Some(Path::new("/state/out")));
        let output = find(OUTPUT_DIR).expect("output mount");
        assert!(
            output
                .options()
                .as_ref()
                .expect("opts")
                .contains(&"rw".to_string())
        );
        assert!(find(SCRIPT_PATH).is_some());
        assert_eq!(find("/tmp").expect("tmp").typ().as_deref(), Some("tmpfs"));
    }

    fn network_of(spec: &Spec) -> Option<oci_spec::runtime::LinuxNamespace> {
        let ns = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .expect("ns");
        assert!(ns.iter().any(|n| n.typ() == LinuxNamespaceType::Pid));
        ns.into_iter()
            .find(|n| n.typ() == LinuxNamespaceType::Network)
    }

    fn resolv_of(spec: &Spec) -> Option<PathBuf> {
        spec.mounts()
            .as_ref()
            .expect("mounts")
            .iter()
            .find(|m| m.destination() == Path::new("/etc/resolv.conf"))
            .and_then(|m| m.source().clone())
    }

    #[test]
    fn a_function_gets_the_network_it_asked_for() {
        let none = build(&plan()).expect("spec");
        let private = network_of(&none).expect("a private namespace");
        assert_eq!(private.path(), &None, "a new, empty namespace");
        assert_eq!(resolv_of(&none), None, "no resolver without a network");

        let outbound = build(&Plan {
            network: Network::Joined("/state/netns/job-1".into()),
            ..plan()
        })
        .expect("spec");
        assert_eq!(
            network_of(&outbound).expect("joined").path(),
            &Some(PathBuf::from("/state/netns/job-1"))
        );
        assert_eq!(resolv_of(&outbound), Some("/etc/resolv.conf".into()));

        let host = build(&Plan {
            network: Network::Host,
            ..plan()
        })
        .expect("spec");
        assert!(network_of(&host).is_none(), "the host's namespace");
        assert_eq!(resolv_of(&host), Some("/etc/resolv.conf".into()));
    }
}
