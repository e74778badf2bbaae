//! One job's life after admission: staging, the run, delivery of its outputs, its log. These
//! tasks write no journal: they report how the run or delivery ended, and the engine's book
//! decides what that means.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use spillway_proto::fdl::{MqttOutput, S3Settings, StorageRef};
use spillway_proto::{FunctionDef, JobId, ObjectKey};

use super::{JobEvent, Shared};
use crate::book::RunEnd;
use crate::capture::Captured;
use crate::catalog::Deployed;
use crate::joblog;
use crate::journal::{JobRecord, JobState, now_ms};
use crate::runtime::{Exit, Outcome, StagedJob};
use crate::staging::{Staging, deliver};

/// One run attempt: stage, execute, collect the outputs, write the log; how it ended.
pub(super) async fn run_job(s: &Arc<Shared>, f: &Deployed, record: JobRecord) -> RunEnd {
    let config = &s.config;
    let staging = Staging::for_attempt(&config.staging_dir(), record.id, record.attempt);
    let file_name = record.event.file_name().to_owned();
    // A guest's input was fetched from the coordinator; the event still names the origin's file.
    let guest = match s.journal.hosting(record.id) {
        Ok(guest) => guest,
        Err(e) => return failed(s, &record, format!("cannot read the journal: {e}"), None),
    };
    let guest_input = guest.as_ref().map(|g| g.dir.join("input").join(&file_name));
    let origin = guest
        .as_ref()
        .map_or(config.node_name.as_str(), |g| g.origin.as_str());
    let prepared = {
        let (staging, name, s) = (staging.clone(), file_name.clone(), s.clone());
        let (id, event) = (record.id, record.event.clone());
        tokio::task::spawn_blocking(move || {
            let (input, shown) = match guest_input {
                Some(path) => (std::fs::File::open(&path), path),
                None => (
                    crate::staging::open_input(&s.config, id, &event),
                    s.config.input_of(id, &event),
                ),
            };
            staging.prepare(input, &shown, &name)
        })
        .await
    };
    if let Err(reason) = prepared
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        return failed(s, &record, reason, None);
    }
    let job = StagedJob {
        job_id: record.id.to_string(),
        function: f.def.name.clone(),
        input_dir: staging.input_dir.clone(),
        output_dir: staging.output_dir.clone(),
        work_dir: staging.work_dir.clone(),
        file_name,
        event_json: record.event.to_json(origin, &rfc3339_now()).to_string(),
        variables: StagedJob::variables_of(&f.def),
        timeout: f.def.timeout.unwrap_or(config.defaults.timeout),
        memory_limit: f.limits.demand.memory.0,
        log_limit: config.logs.max_bytes_per_stream,
        pid_file: config.run_dir().join(format!("{}.pid", record.id)),
    };
    let _ = s.events.send(JobEvent::Started {
        id: record.id,
        function: f.def.name.clone(),
        at: Instant::now(),
    });
    let log_limit = job.log_limit;
    // A bug in a runtime (or a library it uses) must fail its job, not leave it running forever.
    let outcome = match futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
        f.executor.execute(job),
    ))
    .await
    {
        Ok(outcome) => outcome,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown");
            tracing::error!(job = %record.id, "the runtime panicked: {what}");
            Outcome {
                exit: Exit::Failure(format!(
                    "internal error in the agent while running this job ({what}); this is a bug, please report it"
                )),
                stdout: Captured::new(log_limit),
                stderr: Captured::new(log_limit),
            }
        }
    };
    let streams = Some((&outcome.stdout, &outcome.stderr));
    let keys = match outcome.exit {
        Exit::Failure(reason) => return failed(s, &record, reason, streams),
        Exit::Success => match staging.collect_outputs() {
            Ok(keys) => keys,
            Err(e) => return failed(s, &record, e.to_string(), streams),
        },
    };
    if let Some(g) = &guest {
        return keep_for_origin(s, record, g, &staging, keys, streams);
    }
    let how = RunEnd::Ran {
        staging: staging.root.clone(),
        outputs: keys.clone(),
    };
    // The streams are only in memory: keep them with the job before its end is journaled.
    let mut ran = record;
    ran.state = JobState::Ran {
        staging: staging.root.clone(),
        outputs: keys,
    };
    log(s, &ran, streams);
    how
}

/// A failed run: its log, with its streams, then its report.
fn failed(
    s: &Shared,
    record: &JobRecord,
    reason: String,
    streams: Option<(&Captured, &Captured)>,
) -> RunEnd {
    let mut ended = record.clone();
    ended.state = JobState::Failed {
        reason: reason.clone(),
    };
    ended.finished_at_ms = Some(now_ms());
    log(s, &ended, streams);
    RunEnd::Failed { reason }
}

fn log(s: &Shared, record: &JobRecord, streams: Option<(&Captured, &Captured)>) {
    joblog::write(
        &s.config.logs_dir(),
        record,
        streams.map(|(o, _)| o),
        streams.map(|(_, e)| e),
    );
}

/// A guest job's outputs are not delivered here: they move to the guest's folder, where the
/// link picks them up for the coordinator (and the origin).
fn keep_for_origin(
    s: &Shared,
    record: JobRecord,
    guest: &crate::journal::Guest,
    staging: &Staging,
    keys: Vec<ObjectKey>,
    streams: Option<(&Captured, &Captured)>,
) -> RunEnd {
    let kept = guest.dir.join("output");
    let _ = std::fs::remove_dir_all(&kept);
    if let Err(e) = std::fs::rename(&staging.output_dir, &kept) {
        let reason = format!("cannot keep the outputs for the origin: {e}");
        return failed(s, &record, reason, streams);
    }
    let mut ended = record;
    ended.state = JobState::Succeeded {
        outputs: keys.iter().map(|k| k.to_string()).collect(),
    };
    ended.finished_at_ms = Some(now_ms());
    log(s, &ended, streams);
    RunEnd::GuestRan {
        dir: guest.dir.clone(),
        outputs: keys,
    }
}

/// Where a function's outputs go: folders (`output` with a storage provider) and MQTT topics.
#[derive(Debug, Clone, Default)]
pub(super) struct Targets {
    pub folders: Vec<StorageRef>,
    pub buckets: Vec<(StorageRef, S3Settings)>,
    pub mqtt: Vec<MqttOutput>,
}

impl Targets {
    pub fn of(def: &FunctionDef) -> Self {
        let (mut folders, mut buckets) = (Vec::new(), Vec::new());
        for out in &def.output {
            match def.s3_settings(&out.provider) {
                Some(s3) => buckets.push((out.clone(), s3)),
                None => folders.push(out.clone()),
            }
        }
        Self {
            folders,
            buckets,
            mqtt: def.mqtt_outputs.clone(),
        }
    }
}

/// Copies a job's outputs to the function's folder outputs and publishes them to its MQTT
/// outputs; the state the job ends in.
async fn deliver_outputs(
    s: &Arc<Shared>,
    targets: &Targets,
    id: JobId,
    output_dir: &Path,
    keys: &[ObjectKey],
) -> JobState {
    let (dir, keys_owned, root, outputs) = (
        output_dir.to_owned(),
        keys.to_vec(),
        s.config.data_root.clone(),
        targets.folders.clone(),
    );
    let mut delivered =
        match tokio::task::spawn_blocking(move || deliver(&dir, &keys_owned, &outputs, &root, id))
            .await
        {
            Ok(Ok(paths)) => paths,
            Ok(Err(e)) => {
                return JobState::Failed {
                    reason: e.to_string(),
                };
            }
            Err(e) => {
                return JobState::Failed {
                    reason: format!("delivery panicked: {e}"),
                };
            }
        };
    if let Err(reason) = upload_outputs(targets, output_dir, keys, &mut delivered).await {
        return JobState::Failed { reason };
    }
    if let Err(reason) = publish_outputs(s, targets, output_dir, keys, &mut delivered).await {
        return JobState::Failed { reason };
    }
    JobState::Succeeded { outputs: delivered }
}

/// Uploads every output file to the S3 outputs that accept it, as `folder/key` in the bucket
/// (the same layout as a folder output). Re-uploading after a crash writes the same objects.
async fn upload_outputs(
    targets: &Targets,
    output_dir: &Path,
    keys: &[ObjectKey],
    delivered: &mut Vec<String>,
) -> Result<(), String> {
    for (out, settings) in &targets.buckets {
        let bucket = spillway_plumbing::s3::Bucket::open(settings, &out.path.bucket)?;
        for key in keys.iter().filter(|k| out.accepts(k.file_name())) {
            let name = match &out.path.folder {
                Some(folder) => format!("{folder}/{key}"),
                None => key.to_string(),
            };
            bucket
                .put(&name, read_output(output_dir, key).await?)
                .await?;
            delivered.push(format!("{}:{}/{name}", out.provider, bucket.name()));
        }
    }
    Ok(())
}

async fn read_output(output_dir: &Path, key: &ObjectKey) -> Result<Vec<u8>, String> {
    let path = key.under(output_dir);
    tokio::fs::read(&path)
        .await
        .map_err(|e| format!("cannot read the output {}: {e}", path.display()))
}

/// Publishes every output file its MQTT outputs accept (the file's bytes are the payload).
/// At least once: a crash after the broker's acknowledgement publishes it again at restart.
async fn publish_outputs(
    s: &Arc<Shared>,
    targets: &Targets,
    output_dir: &Path,
    keys: &[ObjectKey],
    delivered: &mut Vec<String>,
) -> Result<(), String> {
    if targets.mqtt.is_empty() {
        return Ok(());
    }
    let Some(publisher) = s.mqtt.get() else {
        return Err(
            "the function publishes to MQTT but this agent has no broker: add [mqtt] broker to agent.toml".into(),
        );
    };
    for out in &targets.mqtt {
        for key in keys.iter().filter(|k| out.accepts(k.file_name())) {
            let payload = read_output(output_dir, key).await?;
            publisher
                .publish(&out.topic, out.qos, out.retain, payload)
                .await?;
            delivered.push(format!("mqtt:{}", out.topic));
        }
    }
    Ok(())
}

/// Delivers the outputs of a job journaled `Ran` (found at start-up, or fetched from the peer
/// that ran it) from `staging_root/output` to the function's outputs; the state it ends in,
/// its log written.
pub(super) async fn finish_delivery(
    s: &Arc<Shared>,
    mut record: JobRecord,
    staging_root: &Path,
    keys: &[ObjectKey],
    targets: &Targets,
) -> JobState {
    let state = deliver_outputs(s, targets, record.id, &staging_root.join("output"), keys).await;
    record.state = state.clone();
    record.finished_at_ms = Some(now_ms());
    log(s, &record, None);
    state
}

fn rfc3339_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_times_are_rfc3339() {
        let t = super::rfc3339_now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
