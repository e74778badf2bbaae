//! The functions this node runs: read from the configured FDL files, filtered to this node,
//! checked against its capacity, and prepared by their runtime.
//!
//! A function that cannot be deployed is reported and skipped; the others keep working.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use spillway_proto::fdl::{self, BucketPath, MqttTrigger, Platform, Trigger};
use spillway_proto::{FunctionDef, Runtime as RuntimeKind};

use crate::runtime::oci::{OciRuntime, OciSettings};
use crate::runtime::process::ProcessRuntime;
use crate::runtime::wasm::WasmRuntime;
use crate::runtime::{Executor, PrepareError, Runtime};
use crate::scheduler::{Demand, FunctionLimits, Scheduler};
use spillway_agent_config::AgentConfig;

/// A function ready to run here.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub def: FunctionDef,
    pub executor: Arc<dyn Executor>,
    pub limits: FunctionLimits,
    /// Absolute folders under the data root whose new files trigger this function, with the
    /// bucket path each one stands for.
    pub inputs: Vec<(PathBuf, BucketPath)>,
    /// Deployed by the coordinator (so every node that has it runs the same definition, and
    /// its jobs may be handed over).
    pub from_mesh: bool,
}

/// A function that was not deployed, and why.
#[derive(Debug, Clone)]
pub struct Refused {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Catalog {
    pub functions: BTreeMap<String, Arc<Deployed>>,
    pub refused: Vec<Refused>,
}

/// The runtimes of this agent, built once and shared by every function.
#[derive(Debug)]
pub struct Runtimes {
    pub process: ProcessRuntime,
    pub wasm: WasmRuntime,
    pub oci: OciRuntime,
}

impl Runtimes {
    /// `shim` runs each container job (`SHIM oci-run BUNDLE`).
    pub fn new(config: &AgentConfig, shim: &Path) -> Result<Self, PrepareError> {
        let oci = OciSettings {
            registries: config.oci.registries.clone(),
            platform: config.oci.platform.clone(),
            shim: shim.to_owned(),
            pids_limit: config.oci.pids_limit,
            tmp_size: config.oci.tmp_size.0,
            max_store_bytes: config.oci.image_store_max.0,
            kill_grace: config.oci.kill_grace,
            default_cpu: config.defaults.cpu.0,
            network: config.oci.network.clone(),
        };
        Ok(Self {
            process: ProcessRuntime::new(&config.process_user)?,
            wasm: WasmRuntime::new(&config.wasm, config.wasm_cache_dir())?,
            oci: OciRuntime::new(
                &config.images_dir(),
                &config.containers_dir(),
                &config.netns_dir(),
                oci,
            )?,
        })
    }

    fn prepare(&self, def: &FunctionDef) -> Result<Arc<dyn Executor>, PrepareError> {
        match def.runtime {
            RuntimeKind::Process => self.process.prepare(def),
            RuntimeKind::Wasm => self.wasm.prepare(def),
            RuntimeKind::Oci => self.oci.prepare(def),
        }
    }
}

impl Catalog {
    /// Reads every FDL file and deploys the functions meant for this node into `scheduler`,
    /// then the functions the coordinator deployed here (`mesh`). Local files win a name clash.
    pub fn load(
        config: &AgentConfig,
        runtimes: &Runtimes,
        scheduler: &mut Scheduler,
        mesh: Vec<Result<FunctionDef, (String, String)>>,
    ) -> Self {
        let mut catalog = Catalog::default();
        for file in &config.functions {
            catalog.load_file(file, config, runtimes, scheduler);
        }
        for def in mesh {
            let def = match def {
                Ok(def) => def,
                Err((name, reason)) => {
                    catalog.refused.push(Refused { name, reason });
                    continue;
                }
            };
            catalog.add(def, config, runtimes, scheduler, true);
        }
        catalog
    }

    /// Deploys `def` and records the outcome: deployed, or refused with the reason.
    fn add(
        &mut self,
        def: FunctionDef,
        config: &AgentConfig,
        runtimes: &Runtimes,
        scheduler: &mut Scheduler,
        from_mesh: bool,
    ) {
        let name = def.name.clone();
        match self.deploy(def, config, runtimes, scheduler) {
            Ok(mut deployed) => {
                deployed.from_mesh = from_mesh;
                self.functions.insert(name, Arc::new(deployed));
            }
            Err(reason) => {
                tracing::error!(function = %name, "not deployed: {reason}");
                self.refused.push(Refused { name, reason });
            }
        }
    }

    fn load_file(
        &mut self,
        file: &Path,
        config: &AgentConfig,
        runtimes: &Runtimes,
        scheduler: &mut Scheduler,
    ) {
        let parsed = fdl::parse_file(file);
        for warning in parsed.warnings() {
            tracing::warn!("{warning}");
        }
        let doc = match parsed.into_result() {
            Ok((doc, _)) => doc,
            Err(e) => {
                for d in &e.diagnostics {
                    tracing::error!("{d}");
                }
                self.refused.push(Refused {
                    name: file.display().to_string(),
                    reason: format!(
                        "{} has errors; none of its functions were deployed",
                        file.display()
                    ),
                });
                return;
            }
        };
        for def in doc.functions {
            if meant_for_this_node(&def, config) {
                self.add(def, config, runtimes, scheduler, false);
            }
        }
    }

    fn deploy(
        &self,
        def: FunctionDef,
        config: &AgentConfig,
        runtimes: &Runtimes,
        scheduler: &mut Scheduler,
    ) -> Result<Deployed, String> {
        if let Some(existing) = self.functions.get(&def.name) {
            return Err(format!(
                "a function named `{}` is already deployed from {}",
                def.name, existing.def.location
            ));
        }
        let limits = FunctionLimits {
            demand: Demand {
                cpu: def.cpu.unwrap_or(config.defaults.cpu),
                memory: def.memory.unwrap_or(config.defaults.memory),
            },
            max_concurrency: def.max_concurrency,
        };
        for output in def.output.iter().filter(|o| o.provider.is_local()) {
            let out_dir = output.path.dir_under(&config.data_root);
            let loops = def.input.iter().any(|i| {
                i.provider.is_local() && out_dir.starts_with(i.path.dir_under(&config.data_root))
            });
            if loops {
                return Err(format!(
                    "output `{}` is inside its own input folder, so every result would trigger `{}` again, forever; write outputs to another folder",
                    output.path, def.name
                ));
            }
        }
        check_mqtt(&def, config)?;
        scheduler
            .add_function(&def.name, limits)
            .map_err(|e| e.to_string())?;
        let executor = runtimes.prepare(&def).map_err(|e| {
            scheduler.remove_function(&def.name);
            e.to_string()
        })?;
        let mut inputs = Vec::new();
        for input in &def.input {
            // An S3 input's objects reach this node through the coordinator (`POST /events`),
            // which drops each into the same `bucket/folder` under the data root.
            if input.provider.is_local() || def.s3_settings(&input.provider).is_some() {
                inputs.push((input.path.dir_under(&config.data_root), input.path.clone()));
            } else {
                tracing::warn!(function = %def.name, "input from `{}` is not supported (storage kinds: minio, local, s3)", input.provider);
            }
        }
        for output in def.output.iter() {
            if !output.provider.is_local() && def.s3_settings(&output.provider).is_none() {
                tracing::warn!(function = %def.name, "output to `{}` is not delivered (storage kinds: minio, local, s3)", output.provider);
            }
        }
        Ok(Deployed {
            def,
            executor,
            limits,
            inputs,
            from_mesh: false,
        })
    }

    /// Functions triggered by a file at `path`: each with the bucket path of the input folder
    /// and the file's path relative to that folder.
    pub fn triggered_by<'a>(
        &'a self,
        path: &'a Path,
    ) -> impl Iterator<Item = (&'a Arc<Deployed>, &'a BucketPath, &'a Path)> + 'a {
        self.functions.values().flat_map(move |f| {
            f.inputs.iter().filter_map(move |(dir, bucket)| {
                path.strip_prefix(dir).ok().map(|rel| (f, bucket, rel))
            })
        })
    }

    /// Functions triggered by an MQTT message on `topic`, with the trigger that matched.
    pub fn triggered_by_topic(&self, topic: &str) -> Vec<(Arc<Deployed>, MqttTrigger)> {
        let mut found = Vec::new();
        for f in self.functions.values() {
            let matched = f.def.triggers.iter().find_map(|t| match t {
                Trigger::Mqtt(m) if fdl::topic_matches(&m.topic, topic) => Some(m.clone()),
                Trigger::Mqtt(_) => None,
            });
            if let Some(m) = matched {
                found.push((f.clone(), m));
            }
        }
        found
    }

    /// The topic filters the deployed functions want, each with the highest QoS asked for.
    pub fn mqtt_subscriptions(&self) -> BTreeMap<String, u8> {
        let mut subs = BTreeMap::new();
        for f in self.functions.values() {
            for Trigger::Mqtt(m) in &f.def.triggers {
                let level = subs.entry(m.topic.clone()).or_insert(m.qos);
                *level = (*level).max(m.qos);
            }
        }
        subs
    }

    /// How long a queued job of each function may wait before it is offered: only functions
    /// the coordinator deployed (every peer runs the same definition) are ever offered.
    pub fn spill_thresholds(&self) -> Vec<(String, u64)> {
        self.functions
            .values()
            .filter(|f| f.from_mesh)
            .map(|f| {
                let ms = f
                    .def
                    .rescheduler_threshold
                    .map_or(crate::book::DEFAULT_RESCHEDULER_THRESHOLD_MS, |secs| {
                        secs.saturating_mul(1000)
                    });
                (f.def.name.clone(), ms)
            })
            .collect()
    }

    /// Every watched input folder.
    pub fn input_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .functions
            .values()
            .flat_map(|f| f.inputs.iter().map(|(d, _)| d.clone()))
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

/// MQTT triggers and outputs need a broker, and must not feed a function its own results.
fn check_mqtt(def: &FunctionDef, config: &AgentConfig) -> Result<(), String> {
    if def.triggers.is_empty() && def.mqtt_outputs.is_empty() {
        return Ok(());
    }
    if config.mqtt.is_none() {
        return Err(format!(
            "`{}` has MQTT triggers or outputs but this agent has no broker: add `[mqtt] broker = \"mqtt://HOST:1883\"` to agent.toml",
            def.name
        ));
    }
    for out in &def.mqtt_outputs {
        for Trigger::Mqtt(t) in &def.triggers {
            if fdl::topic_matches(&t.topic, &out.topic) {
                return Err(format!(
                    "MQTT output `{}` matches its own trigger `{}`, so every result would trigger `{}` again, forever; publish to another topic",
                    out.topic, t.topic, def.name
                ));
            }
        }
    }
    Ok(())
}

/// `functions.oscar[]` entries for this node's cluster (all of them without a `cluster_id`).
/// SCAR `functions.aws[]` entries are meant for AWS Lambda and are not run by an agent.
fn meant_for_this_node(def: &FunctionDef, config: &AgentConfig) -> bool {
    match (&def.platform, &config.cluster_id) {
        (Platform::Aws, _) => {
            tracing::info!(function = %def.name, "skipping SCAR Lambda function: it is meant for AWS Lambda");
            false
        }
        (Platform::Oscar { .. }, None) => true,
        (Platform::Oscar { cluster_id }, Some(mine)) => {
            cluster_id.as_deref().is_none_or(|c| c == mine)
        }
    }
}
