//! Runtimes execute one staged job. A [`Runtime`] prepares a function once (compile a module,
//! check a script) into an [`Executor`]; the executor runs each job of that function.
//!
//! `process`, `wasm` and `oci` (containers) live here, behind the same two traits.

pub mod job_user;
pub mod oci;
pub mod process;
pub mod wasm;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use spillway_proto::FunctionDef;

use crate::capture::Captured;

/// Why a function could not be prepared for running on this node.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum PrepareError {
    /// function `{function}`: {what} {path} not found; put it next to the FDL file or fix the path
    MissingFile {
        function: String,
        what: &'static str,
        path: PathBuf,
    },
    /// function `{function}`: cannot compile WASI module {path}: {message}
    BadModule {
        function: String,
        path: PathBuf,
        message: String,
    },
    /// function `{function}`: {message}
    BadImage { function: String, message: String },
    /// function `{function}`: {message}
    Network { function: String, message: String },
    /// wasm engine: {0}
    Engine(String),
}

/// Everything a run needs, already staged on disk.
#[derive(Clone)]
pub struct StagedJob {
    pub job_id: String,
    pub function: String,
    /// Host folder holding the input file (read-only for the function).
    pub input_dir: PathBuf,
    /// Host folder whose files become the outputs.
    pub output_dir: PathBuf,
    /// Working folder for the run (scratch space).
    pub work_dir: PathBuf,
    pub file_name: String,
    pub event_json: String,
    /// The function's own `environment.variables`, then its `environment.secrets` (whose values
    /// `Debug` does not show).
    pub variables: Vec<(String, String)>,
    pub timeout: Duration,
    pub memory_limit: u64,
    pub log_limit: usize,
    /// Where a process runtime records its process group, so a restarted agent can reap it.
    pub pid_file: PathBuf,
}

impl std::fmt::Debug for StagedJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.variables.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("StagedJob")
            .field("job_id", &self.job_id)
            .field("function", &self.function)
            .field("input_dir", &self.input_dir)
            .field("output_dir", &self.output_dir)
            .field("file_name", &self.file_name)
            .field("variables", &names)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl StagedJob {
    /// The function's variables and secrets, as the run's environment starts.
    pub fn variables_of(def: &spillway_proto::FunctionDef) -> Vec<(String, String)> {
        def.environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(
                def.secrets
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose().to_owned())),
            )
            .collect()
    }

    /// The staging-contract variables, with the folders as the function sees them.
    pub fn contract_env(&self, input_dir: &str, output_dir: &str) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self.variables.clone();
        let sep = if input_dir.ends_with('/') { "" } else { "/" };
        env.extend([
            (
                "INPUT_FILE_PATH".to_owned(),
                format!("{input_dir}{sep}{}", self.file_name),
            ),
            ("TMP_INPUT_DIR".to_owned(), input_dir.to_owned()),
            ("TMP_OUTPUT_DIR".to_owned(), output_dir.to_owned()),
            ("FILE_NAME".to_owned(), self.file_name.clone()),
            ("EVENT".to_owned(), self.event_json.clone()),
            ("JOB_ID".to_owned(), self.job_id.clone()),
        ]);
        // SCAR's names for the same, which its users' scripts still read (each runtime also
        // shows the output folder at SCAR's `/tmp/$REQUEST_ID/output`, see `scar_output_dir`).
        let input = format!("{input_dir}{sep}{}", self.file_name);
        env.extend([
            ("SCAR_INPUT_FILE".to_owned(), input.clone()),
            ("INPUT_FILE".to_owned(), input),
            ("REQUEST_ID".to_owned(), self.job_id.clone()),
        ]);
        env
    }

    /// Where SCAR's supervisor put the output folder, `/tmp/$REQUEST_ID/output`: scripts written
    /// for SCAR that name it instead of `$TMP_OUTPUT_DIR` find the job's output folder there.
    pub fn scar_output_dir(&self) -> String {
        format!("/tmp/{}/output", self.job_id)
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// The function failed; the text says why, in words a user can act on.
    Failure(String),
}

#[derive(Debug)]
pub struct Outcome {
    pub exit: Exit,
    pub stdout: Captured,
    pub stderr: Captured,
}

pub type RunFuture = Pin<Box<dyn Future<Output = Outcome> + Send + 'static>>;

/// Runs the jobs of one prepared function.
pub trait Executor: Send + Sync + std::fmt::Debug + 'static {
    fn execute(&self, job: StagedJob) -> RunFuture;
}

/// Turns a function definition into an executor, once per deployment.
pub trait Runtime: Send + Sync + std::fmt::Debug {
    fn prepare(&self, function: &FunctionDef)
    -> Result<std::sync::Arc<dyn Executor>, PrepareError>;
}
