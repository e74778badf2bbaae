//! The `spillway` commands that talk to a coordinator. `main.rs` parses; this module does.

#[cfg(feature = "serve")]
pub mod admin;
pub mod ca;
pub mod flash;
pub mod membership;
pub mod output;
pub mod upgrade;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use spillway_proto::fdl;
use spillway_proto::wire::JobPhase;

use crate::client::{Client, encode_path};
use output::{Format, print, since};
use spillway_api::*;

/// An apply request for `path`: the FDL text plus every script and module it names, read from
/// next to the file. Validation errors are reported here, before anything is sent.
pub fn apply_request(path: &Path) -> anyhow::Result<ApplyRequest> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let parsed = fdl::parse_file(path);
    for w in parsed.warnings() {
        eprintln!("{w}");
    }
    let (doc, _) = match parsed.into_result() {
        Ok(r) => r,
        Err(e) => {
            let lines: Vec<String> = e.diagnostics.iter().map(|d| d.to_string()).collect();
            bail!(
                "{} is not valid; nothing was applied:\n{}",
                path.display(),
                lines.join("\n")
            );
        }
    };
    let written = fdl::parse_str(&path.display().to_string(), &text, Path::new(""))
        .into_result()
        .map(|(d, _)| d)
        .unwrap_or_default();
    let mut files = BTreeMap::new();
    for (def, as_written) in doc.functions.iter().zip(&written.functions) {
        for (resolved, rel) in [
            (&def.script, &as_written.script),
            (&def.module, &as_written.module),
        ] {
            if let (Some(resolved), Some(rel)) = (resolved, rel) {
                let bytes = std::fs::read(resolved).with_context(|| {
                    format!(
                        "function `{}`: cannot read {} (named in {})",
                        def.name,
                        resolved.display(),
                        path.display()
                    )
                })?;
                files.insert(
                    rel.to_string_lossy().into_owned(),
                    base64::engine::general_purpose::STANDARD.encode(bytes),
                );
            }
        }
    }
    Ok(ApplyRequest {
        file: path.display().to_string(),
        text,
        files,
    })
}

pub async fn apply(client: &Client, files: &[PathBuf]) -> anyhow::Result<()> {
    for path in files {
        let req = apply_request(path)?;
        let outcome: ApplyOutcome = client.post("/v1/apply", &req).await?;
        for w in outcome.warnings {
            eprintln!("{w}");
        }
        for (name, verdict) in outcome.functions {
            println!("function/{name} {verdict}");
        }
    }
    Ok(())
}

pub async fn delete_functions(client: &Client, names: &[String]) -> anyhow::Result<()> {
    for name in names {
        client
            .delete(&format!("/v1/functions/{}", encode_path(name)))
            .await?;
        println!("function/{name} deleted");
    }
    Ok(())
}

/// The function names an FDL file defines (for `delete -f`).
pub fn function_names(path: &Path) -> anyhow::Result<Vec<String>> {
    let (doc, _) = fdl::parse_file(path)
        .into_result()
        .map_err(|e| anyhow::anyhow!("{} is not valid: {}", path.display(), e.diagnostics.len()))?;
    Ok(doc.functions.into_iter().map(|f| f.name).collect())
}

pub async fn delete_node(client: &Client, name: &str) -> anyhow::Result<()> {
    client
        .delete(&format!("/v1/nodes/{}", encode_path(name)))
        .await?;
    println!("node/{name} deleted (its certificate no longer connects)");
    Ok(())
}

fn load_cols(n: &NodeView) -> (String, String, String, String) {
    match &n.load {
        Some(l) => (
            l.queued.to_string(),
            l.running.to_string(),
            format!("{:.0}%", f64::from(l.cpu_permille) / 10.0),
            if l.memory_total > 0 {
                format!(
                    "{:.0}%",
                    l.memory_used as f64 * 100.0 / l.memory_total as f64
                )
            } else {
                "-".into()
            },
        ),
        None => ("-".into(), "-".into(), "-".into(), "-".into()),
    }
}

pub async fn get_nodes(client: &Client, format: Format) -> anyhow::Result<()> {
    let nodes: Vec<NodeView> = client.get("/v1/nodes").await?;
    print(
        format,
        &nodes,
        &[
            "NAME",
            "STATUS",
            "QUEUED",
            "RUNNING",
            "CPU",
            "MEMORY",
            "FUNCTIONS",
            "ARCH",
            "LAST SEEN",
            "CERT LEFT",
        ],
        || {
            nodes
                .iter()
                .map(|n| {
                    let (q, r, cpu, mem) = load_cols(n);
                    vec![
                        n.name.clone(),
                        if n.disk_full {
                            format!("{},DiskFull", n.health)
                        } else {
                            n.health.to_string()
                        },
                        q,
                        r,
                        cpu,
                        mem,
                        n.running.len().to_string(),
                        n.arch.clone(),
                        n.silent_for_ms
                            .map_or_else(|| since(n.last_seen_ms), output::age),
                        output::left(n.cert_expires_at_ms),
                    ]
                })
                .collect()
        },
    )
}

pub async fn get_functions(client: &Client, format: Format) -> anyhow::Result<()> {
    let fs: Vec<FunctionView> = client.get("/v1/functions").await?;
    print(
        format,
        &fs,
        &["NAME", "RUNTIME", "NODES", "INPUTS", "OUTPUTS", "AGE"],
        || {
            fs.iter()
                .map(|f| {
                    vec![
                        f.name.clone(),
                        f.runtime.clone(),
                        if f.nodes.is_empty() {
                            "-".into()
                        } else {
                            f.nodes.join(",")
                        },
                        f.inputs.join(","),
                        f.outputs.join(","),
                        since(f.applied_at_ms),
                    ]
                })
                .collect()
        },
    )
}

pub async fn get_jobs(
    client: &Client,
    format: Format,
    node: Option<&str>,
    function: Option<&str>,
    limit: usize,
) -> anyhow::Result<()> {
    let mut q = format!("/v1/jobs?limit={limit}");
    if let Some(n) = node {
        q.push_str(&format!("&node={}", encode_path(n)));
    }
    if let Some(f) = function {
        q.push_str(&format!("&function={}", encode_path(f)));
    }
    let jobs: Vec<JobView> = client.get(&q).await?;
    print(
        format,
        &jobs,
        &[
            "JOB", "FUNCTION", "NODE", "STATUS", "INPUT", "AGE", "REASON",
        ],
        || {
            jobs.iter()
                .map(|j| {
                    vec![
                        j.job.id.short(),
                        j.job.function.clone(),
                        match &j.ran_on {
                            Some(peer) => format!("{}→{peer}", j.node),
                            None => j.node.clone(),
                        },
                        j.job.phase.to_string(),
                        j.job.input.clone().unwrap_or_default(),
                        since(j.job.queued_at_ms),
                        j.job.reason.clone().unwrap_or_default(),
                    ]
                })
                .collect()
        },
    )
}

pub async fn get_files(
    client: &Client,
    format: Format,
    node: &str,
    prefix: &str,
) -> anyhow::Result<()> {
    let listing: Listing = client
        .get(&format!(
            "/v1/nodes/{}/files?prefix={}",
            encode_path(node),
            encode_path(prefix)
        ))
        .await?;
    print(format, &listing, &["PATH", "SIZE", "AGE"], || {
        listing
            .files
            .iter()
            .map(|f| vec![f.path.clone(), f.size.to_string(), since(f.modified_ms)])
            .collect()
    })
}

/// `NODE:bucket/key`.
pub fn split_remote(spec: &str) -> anyhow::Result<(&str, &str)> {
    let (node, path) = spec
        .split_once(':')
        .filter(|(n, p)| !n.is_empty() && !p.is_empty())
        .ok_or_else(|| {
            anyhow::anyhow!("`{spec}` is not NODE:PATH (e.g. pi-1:images/in/photo.jpg)")
        })?;
    // Checked here too (the node checks again): a URL would silently resolve `..` away.
    spillway_proto::ObjectKey::parse(path.trim_end_matches('/'))
        .map_err(|e| anyhow::anyhow!("`{path}` is not a path inside a node's data folders: {e}"))?;
    Ok((node, path))
}

pub async fn download(client: &Client, spec: &str, dest: Option<&Path>) -> anyhow::Result<()> {
    let (node, path) = split_remote(spec)?;
    let bytes = client
        .get_bytes(&format!(
            "/v1/nodes/{}/files/{}",
            encode_path(node),
            encode_path(path)
        ))
        .await?;
    match dest {
        None => {
            use std::io::Write;
            std::io::stdout().write_all(&bytes)?;
        }
        Some(d) => {
            let target = if d.is_dir() {
                d.join(Path::new(path).file_name().unwrap_or_default())
            } else {
                d.to_owned()
            };
            std::fs::write(&target, bytes)
                .with_context(|| format!("cannot write {}", target.display()))?;
            eprintln!("{spec} -> {}", target.display());
        }
    }
    Ok(())
}

pub async fn upload(client: &Client, file: &Path, spec: &str) -> anyhow::Result<()> {
    let (node, path) = split_remote(spec)?;
    let path = if path.ends_with('/') {
        format!(
            "{path}{}",
            file.file_name().unwrap_or_default().to_string_lossy()
        )
    } else {
        path.to_owned()
    };
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let stored: Stored = client
        .send_bytes(
            reqwest_tls::Method::PUT,
            &format!(
                "/v1/nodes/{}/files/{}",
                encode_path(node),
                encode_path(&path)
            ),
            bytes,
        )
        .await?;
    println!("{}:{} ({})", stored.node, stored.path, &stored.sha256[..12]);
    Ok(())
}

pub async fn describe(client: &Client, kind: &str, name: &str) -> anyhow::Result<()> {
    let value: serde_json::Value = match kind {
        "node" | "nodes" => {
            client
                .get(&format!("/v1/nodes/{}", encode_path(name)))
                .await?
        }
        "function" | "functions" => {
            client
                .get(&format!("/v1/functions/{}", encode_path(name)))
                .await?
        }
        "job" | "jobs" => {
            client
                .get(&format!("/v1/jobs/{}", encode_path(name)))
                .await?
        }
        other => bail!("cannot describe `{other}`: use node, function or job"),
    };
    print!("{}", serde_saphyr::to_string(&value)?);
    Ok(())
}

pub async fn logs(client: &Client, job: &str) -> anyhow::Result<()> {
    let bytes = client
        .get_bytes(&format!("/v1/jobs/{}/log", encode_path(job)))
        .await?;
    print!("{}", String::from_utf8_lossy(&bytes));
    Ok(())
}

pub async fn invoke(
    client: &Client,
    function: &str,
    file: &Path,
    node: Option<&str>,
    wait: Option<Duration>,
    format: Format,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let mut q = format!(
        "/v1/functions/{}/invoke?file={}",
        encode_path(function),
        encode_path(&name)
    );
    if let Some(n) = node {
        q.push_str(&format!("&node={}", encode_path(n)));
    }
    let invoked: Invoked = client
        .send_bytes(reqwest_tls::Method::POST, &q, bytes)
        .await?;
    let Some(timeout) = wait else {
        return print(format, &invoked, &["JOB", "NODE", "INPUT"], || {
            vec![vec![
                invoked.job.clone(),
                invoked.node.clone(),
                invoked.input.clone(),
            ]]
        });
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(job) = client
            .get::<JobView>(&format!("/v1/jobs/{}", invoked.job))
            .await
            && job.job.phase.is_final()
        {
            print(format, &job, &["JOB", "NODE", "STATUS", "OUTPUT"], || {
                let outs = if job.job.outputs.is_empty() {
                    vec![job.job.reason.clone().unwrap_or_default()]
                } else {
                    job.job
                        .outputs
                        .iter()
                        .map(|o| format!("{}:{o}", job.node))
                        .collect()
                };
                outs.into_iter()
                    .map(|o| {
                        vec![
                            job.job.id.short(),
                            job.node.clone(),
                            job.job.phase.to_string(),
                            o,
                        ]
                    })
                    .collect()
            })?;
            if job.job.phase == JobPhase::Failed {
                bail!(
                    "job {} failed; see `spillway logs {}`",
                    job.job.id.short(),
                    job.job.id.short()
                );
            }
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "job {} did not finish within {}; follow it with `spillway describe job {}`",
                invoked.job,
                humantime::format_duration(timeout),
                invoked.job
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Live per-node load, redrawn every `interval` (`once` prints a single frame).
pub async fn top(client: &Client, interval: Duration, once: bool) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    loop {
        let nodes: Vec<NodeView> = client.get("/v1/nodes").await?;
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::NOTHING);
        t.set_header(vec![
            "NODE",
            "STATUS",
            "QUEUED",
            "RUNNING",
            "OLDEST",
            "CPU",
            "MEMORY",
            "FREE SLOTS",
        ]);
        for n in &nodes {
            let (q, r, cpu, mem) = load_cols(n);
            let oldest = n.load.as_ref().map_or("-".into(), |l| {
                if l.queued == 0 {
                    "-".into()
                } else {
                    output::age(l.oldest_queued_ms)
                }
            });
            let slots = n.load.as_ref().map_or(String::new(), |l| {
                l.functions
                    .iter()
                    .map(|f| format!("{}={}", f.name, f.free_slots))
                    .collect::<Vec<_>>()
                    .join(" ")
            });
            t.add_row(vec![
                n.name.clone(),
                n.health.to_string(),
                q,
                r,
                oldest,
                cpu,
                mem,
                slots,
            ]);
        }
        if !once && std::io::stdout().is_terminal() {
            print!("\x1b[2J\x1b[H");
        }
        println!("{}", t.trim_fmt());
        if once {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
