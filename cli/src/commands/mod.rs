//! The `spillway` commands that talk to a coordinator. `main.rs` parses; this module does.

#[cfg(feature = "serve")]
pub mod admin;
pub mod ca;
pub mod complete;
pub mod config;
pub mod flash;
pub mod jsonpath;
pub mod membership;
pub mod output;
pub mod upgrade;
pub mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use spillway_proto::fdl;
use spillway_proto::wire::JobPhase;

use crate::client::{Client, encode_path};
use output::{Format, print, since};
use spillway_api::selector::Selector;
use spillway_api::*;

/// An apply request for `path`: the FDL text plus every script and module it names, read from
/// next to the file. Validation errors are reported here, before anything is sent.
pub fn apply_request(path: &Path) -> anyhow::Result<ApplyRequest> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    apply_request_of(path, text, &base)
}

/// The most an FDL document read from standard input may hold (as the API takes).
const MAX_STDIN_FDL: u64 = 4 << 20;

/// The FDL document on standard input (`apply -f -`): relative scripts and modules resolve
/// against the current folder.
pub fn apply_request_stdin() -> anyhow::Result<ApplyRequest> {
    use std::io::Read;
    let mut text = String::new();
    std::io::stdin()
        .take(MAX_STDIN_FDL + 1)
        .read_to_string(&mut text)
        .context("cannot read an FDL document from standard input")?;
    if text.len() as u64 > MAX_STDIN_FDL {
        bail!("the FDL document on standard input is over 4 MiB: split it into files");
    }
    apply_request_of(Path::new("<stdin>"), text, Path::new("."))
}

/// What `apply -f` names, in order: files; every `.yaml`/`.yml` file directly in a folder
/// (sorted); `-` for standard input (at most once).
pub fn apply_sources(named: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in named {
        if path.as_os_str() == "-" {
            if out.iter().any(|p: &PathBuf| p.as_os_str() == "-") {
                bail!("`-f -` (standard input) can be given once");
            }
            out.push(path.clone());
        } else if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot list {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            if found.is_empty() {
                bail!("{} holds no .yaml or .yml files", path.display());
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(path.clone());
        }
    }
    if out.is_empty() {
        bail!("which FDL files? spillway apply FILE… (or -f FILE, -f DIR, -f - for stdin)");
    }
    Ok(out)
}

fn apply_request_of(path: &Path, text: String, base: &Path) -> anyhow::Result<ApplyRequest> {
    let parsed = fdl::parse_str(&path.display().to_string(), &text, base);
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

pub async fn apply(client: &Client, named: &[PathBuf]) -> anyhow::Result<()> {
    // Every document is read and checked before the first is sent.
    let mut requests = Vec::new();
    for path in apply_sources(named)? {
        requests.push(if path.as_os_str() == "-" {
            apply_request_stdin()?
        } else {
            apply_request(&path)?
        });
    }
    for req in requests {
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

/// `spillway cordon|uncordon NODE…`: takes nodes out of placement (for maintenance) or back.
pub async fn cordon(client: &Client, nodes: &[String], cordoned: bool) -> anyhow::Result<()> {
    if nodes.is_empty() {
        bail!(
            "which nodes? spillway {} NODE…",
            if cordoned { "cordon" } else { "uncordon" }
        );
    }
    for name in nodes {
        let _: NodeView = client
            .put_json(
                &format!("/v1/nodes/{}/cordon", encode_path(name)),
                &Cordon { cordoned },
            )
            .await?;
        println!(
            "node/{name} {}",
            if cordoned {
                "cordoned (no new jobs are placed on it; what it has carries on)"
            } else {
                "uncordoned"
            }
        );
    }
    Ok(())
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

/// The items named, in the order asked (all of them when none is): every name that matches
/// none is reported together, as kubectl does.
fn named<T>(
    items: Vec<T>,
    names: &[String],
    kind: &str,
    name_of: impl Fn(&T) -> &str,
) -> anyhow::Result<Vec<T>> {
    if names.is_empty() {
        return Ok(items);
    }
    let missing: Vec<&str> = names
        .iter()
        .filter(|n| !items.iter().any(|i| name_of(i) == n.as_str()))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        bail!("no {kind} named {}", missing.join(", "));
    }
    let mut items: Vec<Option<T>> = items.into_iter().map(Some).collect();
    Ok(names
        .iter()
        .filter_map(|n| {
            items
                .iter_mut()
                .find(|i| i.as_ref().is_some_and(|i| name_of(i) == n.as_str()))
                .and_then(Option::take)
        })
        .collect())
}

/// `k=v,k2=v2` (or `-`): labels in a table cell.
pub(crate) fn labels_cell(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub async fn get_nodes(
    client: &Client,
    format: Format,
    names: &[String],
    selector: Option<&Selector>,
) -> anyhow::Result<()> {
    let all: Vec<NodeView> = client.get("/v1/nodes").await?;
    let mut nodes = named(all, names, "node", |n| &n.name)?;
    nodes.retain(|n| selector.is_none_or(|s| s.matches(&n.labels)));
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
            "+ADDRESS",
            "+VERSION",
            "+CLUSTER",
            "+LABELS",
        ],
        || {
            nodes
                .iter()
                .map(|n| {
                    let (q, r, cpu, mem) = load_cols(n);
                    let mut status = n.health.to_string();
                    if n.disk_full {
                        status.push_str(",DiskFull");
                    }
                    if n.cordoned {
                        status.push_str(",SchedulingDisabled");
                    }
                    vec![
                        n.name.clone(),
                        status,
                        q,
                        r,
                        cpu,
                        mem,
                        n.running.len().to_string(),
                        n.arch.clone(),
                        n.silent_for_ms
                            .map_or_else(|| since(n.last_seen_ms), output::age),
                        output::left(n.cert_expires_at_ms),
                        n.address.clone(),
                        n.agent_version.clone(),
                        n.cluster_id.clone().unwrap_or_else(|| "-".into()),
                        labels_cell(&n.labels),
                    ]
                })
                .collect()
        },
    )
}

pub async fn get_functions(
    client: &Client,
    format: Format,
    names: &[String],
    selector: Option<&Selector>,
) -> anyhow::Result<()> {
    let all: Vec<FunctionView> = client.get("/v1/functions").await?;
    let mut fs = named(all, names, "function", |f| &f.name)?;
    fs.retain(|f| selector.is_none_or(|s| s.matches(&f.labels)));
    print(
        format,
        &fs,
        &[
            "NAME",
            "RUNTIME",
            "NODES",
            "INPUTS",
            "OUTPUTS",
            "AGE",
            "+NODE SELECTOR",
            "+LABELS",
            "+SOURCE",
        ],
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
                        labels_cell(&f.node_selector),
                        labels_cell(&f.labels),
                        f.source.clone(),
                    ]
                })
                .collect()
        },
    )
}

/// Which jobs `get jobs` lists.
#[derive(Debug)]
pub struct JobFilter<'a> {
    pub node: Option<&'a str>,
    pub function: Option<&'a str>,
    /// Jobs of the nodes whose labels match.
    pub selector: Option<&'a Selector>,
    pub limit: usize,
}

pub async fn get_jobs(
    client: &Client,
    format: Format,
    ids: &[String],
    filter: JobFilter<'_>,
) -> anyhow::Result<()> {
    let jobs: Vec<JobView> = if ids.is_empty() {
        let mut q = format!("/v1/jobs?limit={}", filter.limit);
        if let Some(n) = filter.node {
            q.push_str(&format!("&node={}", encode_path(n)));
        }
        if let Some(f) = filter.function {
            q.push_str(&format!("&function={}", encode_path(f)));
        }
        if let Some(s) = filter.selector {
            q.push_str(&format!("&selector={}", encode_path(&s.to_string())));
        }
        client.get(&q).await?
    } else {
        // By id or a prefix of one, as `describe job` takes them.
        let mut found = Vec::new();
        for id in ids {
            found.push(
                client
                    .get::<JobView>(&format!("/v1/jobs/{}", encode_path(id)))
                    .await?,
            );
        }
        found
    };
    print(
        format,
        &jobs,
        &[
            "JOB", "FUNCTION", "NODE", "STATUS", "INPUT", "AGE", "REASON", "+ID", "+OUTPUTS",
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
                        j.job.id.to_string(),
                        j.job.outputs.join(","),
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

pub async fn describe(
    client: &Client,
    kind: &str,
    name: &str,
    format: Format,
) -> anyhow::Result<()> {
    let mut value: serde_json::Value = match kind {
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
    // Its recent events, as kubectl's describe ends with them (a job by its full id, which the
    // answer has even when a prefix was asked for).
    let (feed_kind, id) = match kind {
        "node" | "nodes" => ("node", value["name"].as_str().map(str::to_owned)),
        "job" | "jobs" => ("job", value["id"].as_str().map(str::to_owned)),
        _ => ("", None),
    };
    if let Some(id) = id {
        let events: Vec<serde_json::Value> = client
            .get(&format!("/v1/events?kind={feed_kind}"))
            .await
            .unwrap_or_default();
        let mut recent: Vec<serde_json::Value> = events
            .into_iter()
            .filter(|e| e["name"].as_str() == Some(id.as_str()))
            .collect();
        let keep = recent.len().saturating_sub(10);
        recent.drain(..keep);
        value["events"] = recent.into();
    }
    // A person reads YAML; `-o json` is for scripts.
    match format {
        Format::Json | Format::JsonPath => {
            format.print_data(&value)?;
        }
        Format::Name => println!("{name}"),
        Format::Yaml | Format::Table | Format::Wide => {
            print!("{}", serde_saphyr::to_string(&value)?)
        }
    }
    Ok(())
}

/// `spillway version`: this client's, then the coordinator's (its OSCAR-style system info).
pub async fn version(client: &Client, format: Format) -> anyhow::Result<()> {
    let mine = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "coordinator_features": cfg!(feature = "serve"),
    });
    let server: Result<serde_json::Value, _> = client.get("/system/info").await;
    match format {
        Format::Json | Format::Yaml | Format::JsonPath => {
            let mut both = serde_json::json!({ "client": mine });
            match &server {
                Ok(info) => both["server"] = info.clone(),
                Err(e) => both["server_error"] = e.to_string().into(),
            }
            format.print_data(&both)?;
        }
        Format::Table | Format::Wide | Format::Name => {
            println!("client: spillway {}", env!("CARGO_PKG_VERSION"));
            if let Ok(info) = &server {
                println!(
                    "server: spillway {} at {} (coordinator `{}`, {})",
                    info["version"].as_str().unwrap_or("?"),
                    client.base(),
                    info["name"].as_str().unwrap_or("?"),
                    info["architecture"].as_str().unwrap_or("?"),
                );
            }
        }
    }
    server.map(|_| ()).map_err(Into::into)
}

pub async fn logs(client: &Client, job: &str) -> anyhow::Result<()> {
    let bytes = client
        .get_bytes(&format!("/v1/jobs/{}/log", encode_path(job)))
        .await?;
    print!("{}", String::from_utf8_lossy(&bytes));
    Ok(())
}

/// What `invoke` sends as the job's input.
#[derive(Debug)]
pub enum Input {
    File(PathBuf),
    /// Text from the command line, as the file `input`.
    Text(String),
}

pub async fn invoke(
    client: &Client,
    function: &str,
    input: Input,
    node: Option<&str>,
    wait: Option<Duration>,
    format: Format,
) -> anyhow::Result<()> {
    let (bytes, name) = match input {
        Input::File(file) => (
            std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?,
            file.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        ),
        Input::Text(text) => (text.into_bytes(), "input".to_owned()),
    };
    let mut q = format!(
        "/v1/functions/{}/invoke?file={}",
        encode_path(function),
        encode_path(&name)
    );
    if let Some(n) = node {
        q.push_str(&format!("&node={}", encode_path(n)));
    }
    // Where the feed is before the job exists: its end cannot come before the wait starts.
    let feed_at = match wait {
        Some(_) => watch::position(client).await,
        None => None,
    };
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
    // Woken by the job's end on the event stream; polled when the stream cannot be had (a
    // token that may not read the feed, an older coordinator).
    if let Some(after) = feed_at {
        watch::until_finished(client, &invoked.job, after, deadline).await;
    }
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
