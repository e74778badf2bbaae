//! The embedded broker in a process of its own (`spillway mqtt-broker`, hidden), started and
//! watched by the coordinator. Release builds abort on panic, so a fault in rumqttd inside the
//! coordinator would take the whole coordinator down; out here it takes only the broker, which
//! the coordinator starts again (its in-memory sessions are lost, as at any restart) while the
//! gateway answers "server unavailable".

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::server::broker::{self, BrokerError};

/// What the coordinator tells the broker process on its stdin (one JSON line).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrokerOrder {
    pub listen: SocketAddr,
    pub user: String,
    pub password: String,
    pub max_payload: usize,
    pub max_inflight: u16,
}

/// The broker process's side: start rumqttd, say `ready`, live until stdin closes (the
/// coordinator is gone) — and die with the coordinator in any case.
pub fn child_main() -> Result<(), String> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("cannot follow the coordinator's life: {e}"))?;
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    stdin
        .read_line(&mut line)
        .map_err(|e| format!("no order on stdin: {e}"))?;
    let order: BrokerOrder =
        serde_json::from_str(&line).map_err(|e| format!("a bad order on stdin: {e}"))?;
    broker::start_internal(
        order.listen,
        &(order.user, order.password),
        order.max_payload,
        order.max_inflight,
    )
    .map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    // The coordinator holds our stdin open while it wants us.
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stdin, &mut rest);
    Ok(())
}

/// Starts the broker process and keeps it running: once it is ready this returns, and a task
/// starts it again whenever it stops.
pub async fn supervise(order: BrokerOrder) -> Result<(), BrokerError> {
    let (child, stdin) = spawn(&order).await?;
    tokio::spawn(async move {
        // The broker lives while its stdin is open: both are held here.
        let (mut child, mut _stdin) = (child, stdin);
        let mut backoff = Duration::from_millis(500);
        loop {
            let status = child.wait().await;
            tracing::error!(
                "the MQTT broker process stopped ({}); starting it again (its sessions and undelivered messages are lost)",
                status.map_or_else(|e| e.to_string(), |s| s.to_string())
            );
            loop {
                tokio::time::sleep(backoff).await;
                match spawn(&order).await {
                    Ok((c, i)) => {
                        tracing::info!("the MQTT broker process is back on {}", order.listen);
                        (child, _stdin) = (c, i);
                        backoff = Duration::from_millis(500);
                        break;
                    }
                    Err(e) => {
                        tracing::error!("cannot start the MQTT broker process again: {e}");
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        }
    });
    Ok(())
}

async fn spawn(order: &BrokerOrder) -> Result<(Child, ChildStdin), BrokerError> {
    let exe = std::env::current_exe()
        .map_err(|e| BrokerError::Start(format!("cannot find the coordinator's binary: {e}")))?;
    let mut child = Command::new(exe)
        .arg("mqtt-broker")
        .env(
            "SPILLWAY_LOG",
            std::env::var("SPILLWAY_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BrokerError::Start(format!("cannot start the broker process: {e}")))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| BrokerError::Start("the broker process has no stdin".into()))?;
    let text = serde_json::to_string(order).map_err(|e| BrokerError::Start(e.to_string()))?;
    stdin
        .write_all(format!("{text}\n").as_bytes())
        .await
        .map_err(|e| BrokerError::Start(format!("cannot give the broker its orders: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| BrokerError::Start("the broker process has no stdout".into()))?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
    match ready {
        Ok(Ok(Some(line))) if line == "ready" => {}
        Ok(_) => {
            let status = child.wait().await.ok();
            return Err(match status.and_then(|s| s.code()) {
                Some(_) => BrokerError::Start(format!(
                    "the broker process could not start on {} (its error is above)",
                    order.listen
                )),
                None => BrokerError::Start("the broker process died while starting".into()),
            });
        }
        Err(_) => {
            return Err(BrokerError::Start(
                "the broker process did not get ready within 10 s".into(),
            ));
        }
    }
    Ok((child, stdin))
}
