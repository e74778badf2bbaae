//! cargo-lambda's Runtime API emulator (`cargo lambda watch --only-lambda-apis`) with the real
//! runner as the function's `bootstrap`: Lambda's `Invoke` API on loopback, each invocation
//! handed to one of `concurrency` runner processes started as a custom runtime starts them.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{bin, free_port, wait_until};

pub struct LambdaEmulator {
    child: Child,
    runners: Vec<Child>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl LambdaEmulator {
    /// Serves `function` with `concurrency` warm instances (the emulator queues invocations
    /// beyond them, as Lambda throttles past its concurrency).
    pub fn start(function: &str, concurrency: usize) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        // It reads a Cargo manifest for the function names it serves; nothing is built.
        std::fs::write(
            dir.path().join("Cargo.toml"),
            format!("[package]\nname = \"stub\"\nversion = \"0.0.0\"\nedition = \"2021\"\n[[bin]]\nname = \"{function}\"\npath = \"none.rs\"\n"),
        )
        .expect("the emulator's manifest is written");
        let port = free_port();
        let log = dir.path().join("emulator.log");
        let child = Command::new("cargo-lambda")
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "--invoke-address",
                "127.0.0.1",
                "--concurrency",
            ])
            .arg(concurrency.max(1).to_string())
            .arg("--invoke-port")
            .arg(port.to_string())
            .current_dir(dir.path())
            .stdout(std::fs::File::create(&log).expect("the emulator's log is created"))
            .stderr(Stdio::null())
            .spawn()
            .expect("cargo-lambda (pip install cargo-lambda) must be installed");
        let up = wait_until(Duration::from_secs(30), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("starting Runtime server"))
        });
        assert!(
            up,
            "cargo-lambda did not start: {:?}",
            std::fs::read_to_string(&log)
        );
        // A custom runtime starts `bootstrap` with no arguments.
        let bootstrap = dir.path().join("bootstrap");
        std::os::unix::fs::symlink(bin("spillway-agent"), &bootstrap)
            .expect("the runner is linked as bootstrap");
        let runners = (0..concurrency.max(1))
            .map(|_| {
                Command::new(&bootstrap)
                    .env(
                        "AWS_LAMBDA_RUNTIME_API",
                        format!("127.0.0.1:{port}/.rt/{function}"),
                    )
                    .env("AWS_LAMBDA_FUNCTION_NAME", function)
                    // A line per job at info; warnings and errors still show.
                    .env("SPILLWAY_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .expect("the runner starts")
            })
            .collect();
        Self {
            child,
            runners,
            port,
            _dir: dir,
        }
    }

    /// Where `[aws] endpoint_url` points.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for LambdaEmulator {
    fn drop(&mut self) {
        for r in &mut self.runners {
            let _ = r.kill();
            let _ = r.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
