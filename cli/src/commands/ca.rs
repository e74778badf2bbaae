//! `spillway admin ca status | rotate | retire`: the mesh CA and its rotation. Rotating and
//! retiring update the CA this CLI trusts in its own client config, so it keeps reaching an
//! HTTPS coordinator after the old CA is gone.

use spillway_api::ca::{CaStatus, RetireRequest};

use super::output::{Format, print};
use crate::client::Client;

/// `spillway admin ca status`.
pub async fn status(c: &Client, format: Format) -> anyhow::Result<()> {
    let status: CaStatus = c.get("/v1/ca").await?;
    show(&status, format)
}

/// `spillway admin ca rotate`.
pub async fn rotate(c: &Client, format: Format) -> anyhow::Result<()> {
    let status: CaStatus = c
        .post("/v1/admin/ca/rotate", &serde_json::json!({}))
        .await?;
    trust_locally(c, &status)?;
    show(&status, format)?;
    if format.is_table() {
        println!(
            "\nThe new CA signs from now on; both are trusted. Connected nodes take the new CA and renew their certificates now; the others when they connect. When `spillway admin ca status` shows no node left on the old CA: spillway admin ca retire"
        );
    }
    Ok(())
}

/// `spillway admin ca retire [--force]`.
pub async fn retire(c: &Client, force: bool, format: Format) -> anyhow::Result<()> {
    let status: CaStatus = c
        .post("/v1/admin/ca/retire", &RetireRequest { force })
        .await?;
    trust_locally(c, &status)?;
    show(&status, format)?;
    if format.is_table() {
        println!(
            "\nThe old CA is retired. Other client configs and MQTT clients that name a CA file need the new one: `spillway admin ca status -o json` holds it (pem)."
        );
    }
    Ok(())
}

/// Puts the CAs the coordinator trusts now into this CLI's client config, if it names any.
fn trust_locally(c: &Client, status: &CaStatus) -> anyhow::Result<()> {
    if let Some(path) = c.update_trusted_cas(&status.pem)? {
        eprintln!("updated the trusted CAs in {}", path.display());
    }
    Ok(())
}

fn show(status: &CaStatus, format: Format) -> anyhow::Result<()> {
    print(format, status, &["CA", "FINGERPRINT", "SUBJECT"], || {
        let mut rows = vec![vec![
            "signing".to_owned(),
            short(&status.signing.fingerprint),
            status.signing.subject.clone(),
        ]];
        if let Some(r) = &status.retiring {
            rows.push(vec![
                "retiring".to_owned(),
                short(&r.fingerprint),
                r.subject.clone(),
            ]);
        }
        rows
    })?;
    if !format.is_table() || status.retiring.is_none() {
        return Ok(());
    }
    let held: Vec<String> = status.nodes.iter().filter_map(|n| n.holds_back()).collect();
    println!(
        "\n{} of {} node(s) on the new CA.",
        status.nodes.len() - held.len(),
        status.nodes.len()
    );
    if held.is_empty() {
        println!("No node depends on the old CA: it can be retired (spillway admin ca retire).");
    } else {
        println!("Still on the old CA:");
        for why in held {
            println!("  {why}");
        }
    }
    Ok(())
}

/// The first 16 hex digits of a fingerprint.
fn short(fingerprint: &str) -> String {
    fingerprint.chars().take(16).collect()
}
