//! Who `process` functions run as. Unless `[process] user = "root"`, a job runs as an
//! unprivileged user (`nobody` by default) in a mount namespace of its own, with a private
//! `/tmp` holding only its folders (`/tmp/spillway/{input,output,work}`, the input read-only)
//! and its script (`/tmp/spillway/script`, read-only). So it cannot read the agent's state
//! (keys, journal, other jobs' files), write where its user may not, or see another job's
//! temporary files; the folders above its own need no loosening, because they are bound in
//! while the child is still root.

use std::ffi::CString;
use std::path::Path;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};

use super::StagedJob;

/// Where a jailed job finds its folders.
pub const INSIDE: &str = "/tmp/spillway";

/// The unprivileged user jobs run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobUser {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
}

impl JobUser {
    /// `[process] user`: `root` (or any uid 0) means none; `UID:GID`, or a name from the
    /// host's user database. An agent that is not root cannot switch: none, said in the log.
    pub fn resolve(setting: &str) -> Result<Option<Self>, String> {
        if setting == "root" {
            return Ok(None);
        }
        let user = match setting.split_once(':') {
            Some((u, g)) => {
                let (Ok(uid), Ok(gid)) = (u.parse::<u32>(), g.parse::<u32>()) else {
                    return Err(format!(
                        "process.user `{setting}`: UID:GID must be two numbers, e.g. 65534:65534"
                    ));
                };
                Self {
                    name: setting.to_owned(),
                    uid: Uid::from_raw(uid),
                    gid: Gid::from_raw(gid),
                }
            }
            None => match passwd_entry(&read_passwd(), setting) {
                Some((uid, gid)) => Self {
                    name: setting.to_owned(),
                    uid: Uid::from_raw(uid),
                    gid: Gid::from_raw(gid),
                },
                // The conventional nobody, on a board whose passwd file lacks it.
                None if setting == "nobody" => Self {
                    name: "nobody".to_owned(),
                    uid: Uid::from_raw(65534),
                    gid: Gid::from_raw(65534),
                },
                None => {
                    return Err(format!(
                        "process.user `{setting}`: no such user in /etc/passwd (create it, e.g. `useradd --system spillway-job`, or name another, or give UID:GID)"
                    ));
                }
            },
        };
        if user.uid.is_root() {
            return Ok(None);
        }
        if !nix::unistd::geteuid().is_root() {
            tracing::warn!(
                "process functions run as this agent's own user: only a root agent can run them as {}",
                user.name
            );
            return Ok(None);
        }
        Ok(Some(user))
    }
}

/// `/etc/passwd`, read directly: the agent is a static binary, and a static C library's
/// name-service lookups may crash. Bounded: a passwd file is small.
fn read_passwd() -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open("/etc/passwd") {
        let _ = f.take(1 << 20).read_to_string(&mut text);
    }
    text
}

/// The uid and gid of `name` in passwd-format `text`.
fn passwd_entry(text: &str, name: &str) -> Option<(u32, u32)> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
    })
}

/// Everything the child needs to jail itself, prepared before the fork: the child may only
/// make system calls (no allocation between fork and exec).
#[derive(Debug)]
pub struct Jail {
    uid: Uid,
    gid: Gid,
    input: Source,
    output: Source,
    work: Source,
    script: Option<Source>,
    /// SCAR's `/tmp/$REQUEST_ID` and `/tmp/$REQUEST_ID/output` (the output folder again).
    scar: (CString, CString),
}

/// A folder or file to bind into the jail. The child opens it (`O_PATH`, closed at exec) in
/// its new mount namespace before the tmpfs goes over `/tmp` (which may hide it: a state
/// folder under `/tmp`), onto a fixed descriptor, and binds it through `/proc/self/fd`.
#[derive(Debug)]
struct Source {
    host: CString,
    fd: i32,
    path: CString,
}

/// Descriptors the child parks its sources on (replaced in the child only; closed at exec).
const FIRST_FD: i32 = 900;

impl Source {
    fn new(host: &Path, fd: i32) -> std::io::Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let host = CString::new(host.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::other(format!("{} has a NUL byte", host.display())))?;
        let path = CString::new(format!("/proc/self/fd/{fd}"))
            .map_err(|_| std::io::Error::other("a number has no NUL"))?;
        Ok(Self { host, fd, path })
    }

    /// In the child: opens the source onto its descriptor.
    fn park(&self) -> nix::Result<()> {
        use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
        let opened = nix::fcntl::open(
            self.host.as_c_str(),
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // SAFETY: `self.fd` is a descriptor number the child reserves for this source; dup3
        // replaces whatever was there in the child only, and it closes at exec.
        let mut target = unsafe { OwnedFd::from_raw_fd(self.fd) };
        nix::unistd::dup3(&opened, &mut target, nix::fcntl::OFlag::O_CLOEXEC)?;
        let _ = target.into_raw_fd();
        Ok(())
    }
}

impl Jail {
    /// Hands the job's output and work folders to `user` (the input stays the agent's, read
    /// only) and prepares the child's steps.
    pub fn new(user: &JobUser, job: &StagedJob, script: Option<&Path>) -> std::io::Result<Self> {
        for dir in [&job.output_dir, &job.work_dir] {
            std::os::unix::fs::chown(dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()))?;
        }
        Ok(Self {
            uid: user.uid,
            gid: user.gid,
            input: Source::new(&job.input_dir, FIRST_FD)?,
            output: Source::new(&job.output_dir, FIRST_FD + 1)?,
            work: Source::new(&job.work_dir, FIRST_FD + 2)?,
            script: script.map(|s| Source::new(s, FIRST_FD + 3)).transpose()?,
            scar: {
                let output = job.scar_output_dir();
                let parent = output.trim_end_matches("/output").to_owned();
                let c = |s: String| {
                    CString::new(s).map_err(|_| std::io::Error::other("a job id has no NUL"))
                };
                (c(parent)?, c(output)?)
            },
        })
    }

    /// In the forked child, before exec: a mount namespace whose `/tmp` is a fresh tmpfs with
    /// the job's folders bound in, then the job's user. Only system calls: async-signal-safe.
    pub fn enter(&self) -> std::io::Result<()> {
        let none = None::<&std::ffi::CStr>;
        let inside = c"/tmp/spillway";
        let (input, output, work, script) = (
            c"/tmp/spillway/input",
            c"/tmp/spillway/output",
            c"/tmp/spillway/work",
            c"/tmp/spillway/script",
        );
        unshare(CloneFlags::CLONE_NEWNS)?;
        // Nothing done here may reach the host's mounts.
        mount(
            none,
            c"/",
            none,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            none,
        )?;
        for source in [&self.input, &self.output, &self.work]
            .into_iter()
            .chain(self.script.as_ref())
        {
            source.park()?;
        }
        mount(
            Some(c"tmpfs"),
            c"/tmp",
            Some(c"tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(c"mode=1777"),
        )?;
        let dir = Mode::from_bits_truncate(0o755);
        for path in [inside, input, output, work] {
            nix::unistd::mkdir(path, dir)?;
        }
        let bind = |from: &std::ffi::CStr, to: &std::ffi::CStr, read_only: bool| {
            mount(Some(from), to, none, MsFlags::MS_BIND, none)?;
            if read_only {
                mount(
                    none,
                    to,
                    none,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    none,
                )?;
            }
            Ok::<(), nix::Error>(())
        };
        bind(&self.input.path, input, true)?;
        bind(&self.output.path, output, false)?;
        bind(&self.work.path, work, false)?;
        for path in [&self.scar.0, &self.scar.1] {
            nix::unistd::mkdir(path.as_c_str(), dir)?;
        }
        bind(&self.output.path, &self.scar.1, false)?;
        if let Some(host) = &self.script {
            drop(nix::fcntl::open(
                script,
                nix::fcntl::OFlag::O_CREAT
                    | nix::fcntl::OFlag::O_WRONLY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )?);
            bind(&host.path, script, true)?;
        }
        nix::unistd::setgroups(&[self.gid])?;
        nix::unistd::setgid(self.gid)?;
        nix::unistd::setuid(self.uid)?;
        nix::unistd::chdir(work)?;
        // Changing credentials cleared the parent-death signal: set it again.
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines_give_uid_and_gid_and_malformed_ones_nothing() {
        let text = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/:/usr/sbin/nologin\nbroken:x:abc\n";
        assert_eq!(passwd_entry(text, "nobody"), Some((65534, 65534)));
        assert_eq!(passwd_entry(text, "root"), Some((0, 0)));
        assert_eq!(passwd_entry(text, "broken"), None);
        assert_eq!(passwd_entry(text, "nob"), None);
    }

    #[test]
    fn root_and_uid_zero_mean_no_switch_and_unknown_users_are_named() {
        assert_eq!(JobUser::resolve("root"), Ok(None));
        assert_eq!(JobUser::resolve("0:0"), Ok(None));
        let err = JobUser::resolve("no-such-user-here").unwrap_err();
        assert!(err.contains("no such user"), "{err}");
        let err = JobUser::resolve("1:x").unwrap_err();
        assert!(err.contains("two numbers"), "{err}");
    }
}
