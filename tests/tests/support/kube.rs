//! A Kubernetes API **emulator** (kmock, PyPI, served by `kube_emulator.py` on loopback) in
//! place of a real API server, which cannot run here; and a **kubelet stand-in** played by the
//! test: for every Job created it runs the pod's init containers and then its container as host
//! processes (the images are not pulled: the runner and the function's script run on this
//! machine, with the pod's `emptyDir` as a temporary folder), and patches the Job's status as
//! the job controller would (`active`, then `Complete` or `Failed`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::repo;

pub struct KubeEmulator {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    kubelet: Option<std::thread::JoinHandle<()>>,
    /// Every Job the kubelet stand-in ran: (its manifest, the exit code of its container).
    pub ran: Arc<Mutex<Vec<(serde_json::Value, i32)>>>,
}

impl KubeEmulator {
    /// The emulator; `job_quota` plays a `count/jobs.batch` ResourceQuota.
    pub fn start(job_quota: Option<u32>) -> Self {
        let mut cmd = Command::new("python3");
        cmd.arg(repo("tests/tests/support/kube_emulator.py"))
            .arg("0");
        if let Some(q) = job_quota {
            cmd.args(["--job-quota", &q.to_string()]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with kmock (pip install kmock) must be installed");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(
                child
                    .stdout
                    .as_mut()
                    .expect("the Kubernetes emulator harness"),
            ),
            &mut line,
        )
        .expect("the Kubernetes emulator harness");
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("kube_emulator.py said {line:?}"));
        Self {
            port,
            child,
            dir: tempfile::tempdir().expect("the Kubernetes emulator harness"),
            stop: Arc::default(),
            kubelet: None,
            ran: Arc::default(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A kubeconfig for the emulator (a bearer token, as a service account's).
    pub fn kubeconfig(&self) -> PathBuf {
        let path = self.dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n    server: {}\nusers:\n- name: spillway\n  user:\n    token: emulator-token\ncontexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: spillway\ncurrent-context: emulator\n",
                self.url()
            ),
        )
        .expect("the Kubernetes emulator harness");
        path
    }

    /// Starts the kubelet stand-in for the Jobs of `namespace`.
    pub fn run_kubelet(&mut self, namespace: &str) {
        let base = format!("{}/apis/batch/v1/namespaces/{namespace}/jobs", self.url());
        let secrets = format!("{}/api/v1/namespaces/{namespace}/secrets", self.url());
        let stop = self.stop.clone();
        let ran = self.ran.clone();
        let pods = self.dir.path().to_owned();
        self.kubelet = Some(std::thread::spawn(move || {
            let mut started = BTreeMap::new();
            // Bounded: the test ends it, and it gives up after ten minutes on its own.
            for _ in 0..3000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let list = curl_json("GET", &base, None);
                for job in list["items"].as_array().cloned().unwrap_or_default() {
                    let name = job["metadata"]["name"].as_str().unwrap_or("").to_owned();
                    if name.is_empty() || started.contains_key(&name) {
                        continue;
                    }
                    let url = format!("{base}/{name}/status");
                    let (ran, pods, secrets) = (ran.clone(), pods.join(&name), secrets.clone());
                    started.insert(
                        name,
                        std::thread::spawn(move || {
                            let code = run_pod(&job, &url, &pods, &secrets);
                            ran.lock()
                                .expect("the Kubernetes emulator harness")
                                .push((job, code));
                        }),
                    );
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            for (_, pod) in started {
                let _ = pod.join();
            }
        }));
    }

    /// The Secrets of `namespace`, as the API lists them.
    pub fn secrets(&self, namespace: &str) -> Vec<serde_json::Value> {
        let list = curl_json(
            "GET",
            &format!("{}/api/v1/namespaces/{namespace}/secrets", self.url()),
            None,
        );
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// The Jobs the kubelet stand-in ran.
    pub fn jobs(&self) -> Vec<(serde_json::Value, i32)> {
        self.ran
            .lock()
            .expect("the Kubernetes emulator harness")
            .clone()
    }
}

impl Drop for KubeEmulator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(k) = self.kubelet.take() {
            let _ = k.join();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The variables of a container's `envFrom` Secrets, read from the API (`secrets`: the
/// namespace's Secrets URL) and base64-decoded, as the kubelet sets them.
fn env_from(container: &serde_json::Value, secrets: &str) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let Some(name) = source["secretRef"]["name"].as_str() else {
            continue;
        };
        let secret = curl_json("GET", &format!("{secrets}/{name}"), None);
        for (key, value) in secret["data"].as_object().into_iter().flatten() {
            let decoded = Command::new("base64")
                .arg("-d")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    use std::io::Write;
                    child
                        .stdin
                        .take()
                        .expect("the Kubernetes emulator harness")
                        .write_all(value.as_str().unwrap_or("").as_bytes())?;
                    child.wait_with_output()
                })
                .expect("the Kubernetes emulator harness");
            vars.push((
                key.clone(),
                String::from_utf8_lossy(&decoded.stdout).into_owned(),
            ));
        }
    }
    vars
}

/// Runs one Job's pod on this machine and reports it through the Job's status; returns the
/// container's exit code.
fn run_pod(job: &serde_json::Value, status_url: &str, pod_dir: &Path, secrets: &str) -> i32 {
    let spec = &job["spec"]["template"]["spec"];
    std::fs::create_dir_all(pod_dir).expect("the Kubernetes emulator harness");
    let mounts: Vec<(String, PathBuf)> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            let name = v["name"]
                .as_str()
                .expect("the Kubernetes emulator harness")
                .to_owned();
            let dir = pod_dir.join(&name);
            std::fs::create_dir_all(&dir).expect("the Kubernetes emulator harness");
            (name, dir)
        })
        .collect();
    patch_status(status_url, serde_json::json!({"active": 1}));
    let run = |container: &serde_json::Value| -> i32 {
        let mut paths: Vec<(String, PathBuf)> = Vec::new();
        for m in container["volumeMounts"].as_array().into_iter().flatten() {
            let volume = m["name"].as_str().expect("the Kubernetes emulator harness");
            let (_, dir) = mounts
                .iter()
                .find(|(n, _)| n == volume)
                .expect("the Kubernetes emulator harness");
            paths.push((
                m["mountPath"]
                    .as_str()
                    .expect("the Kubernetes emulator harness")
                    .to_owned(),
                dir.clone(),
            ));
        }
        // Paths under a mount point go to the volume's folder.
        let map = |arg: &str| -> String {
            for (mount, dir) in &paths {
                if let Some(rest) = arg.strip_prefix(mount.as_str()) {
                    return format!("{}{rest}", dir.display());
                }
            }
            arg.to_owned()
        };
        let argv: Vec<String> = container["command"]
            .as_array()
            .expect("the Kubernetes emulator harness")
            .iter()
            .map(|a| map(a.as_str().expect("the Kubernetes emulator harness")))
            .collect();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .env("PATH", "/usr/bin:/bin");
        for (k, v) in env_from(container, secrets) {
            cmd.env(k, v);
        }
        for e in container["env"].as_array().into_iter().flatten() {
            cmd.env(
                e["name"].as_str().expect("the Kubernetes emulator harness"),
                e["value"].as_str().unwrap_or(""),
            );
        }
        cmd.env("SPILLWAY_WORK_DIR", pod_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.code().unwrap_or(128))
            .unwrap_or(127)
    };
    for init in spec["initContainers"].as_array().into_iter().flatten() {
        let code = run(init);
        if code != 0 {
            patch_status(
                status_url,
                serde_json::json!({"active": 0, "failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "InitContainerFailed", "message": format!("init container exited with {code}")}]}),
            );
            return code;
        }
    }
    let code = run(&spec["containers"][0]);
    let status = if code == 0 {
        serde_json::json!({"active": 0, "succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    } else {
        serde_json::json!({"active": 0, "failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]})
    };
    patch_status(status_url, status);
    code
}

fn patch_status(url: &str, status: serde_json::Value) {
    let body = serde_json::json!({ "status": status }).to_string();
    curl_json("PATCH", url, Some(&body));
}

fn curl_json(method: &str, url: &str, body: Option<&str>) -> serde_json::Value {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", method, url]);
    if let Some(b) = body {
        cmd.args([
            "-H",
            "Content-Type: application/merge-patch+json",
            "--data-binary",
            b,
        ]);
    }
    let out = cmd.output().expect("the Kubernetes emulator harness");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}
