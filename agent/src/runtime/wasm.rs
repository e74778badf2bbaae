//! The `wasm` runtime: WASI preview-1 modules run by wasmtime.
//!
//! A module is compiled once per content hash and the native code cached on disk
//! (`state/wasm-cache`), so a restart does not recompile. Each job gets a fresh instance from an
//! `InstancePre`, its own memory cap, and an epoch deadline for its timeout. The input folder is
//! preopened read-only at `/tmp/input`, the output folder read-write at `/tmp/output`.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use spillway_proto::FunctionDef;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder, Trap,
};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use super::{Executor, Exit, Outcome, PrepareError, RunFuture, Runtime, StagedJob};
use crate::capture::Captured;
use spillway_agent_config::WasmSettings;

/// Epoch tick: the resolution of wasm timeouts.
const TICK: Duration = Duration::from_millis(10);
pub const GUEST_INPUT_DIR: &str = "/tmp/input";
pub const GUEST_OUTPUT_DIR: &str = "/tmp/output";

/// One engine for every wasm function of the agent.
#[derive(Clone)]
pub struct WasmRuntime {
    engine: Engine,
    cache_dir: PathBuf,
    ticker: Arc<Ticker>,
}

impl std::fmt::Debug for WasmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmRuntime")
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

pub struct WasiState {
    wasi: WasiP1Ctx,
    limits: StoreLimits,
}

/// A prepared wasm function: its instantiation template and the shared engine.
pub struct WasmExecutor {
    name: String,
    pre: InstancePre<WasiState>,
    engine: Engine,
    ticker: Arc<Ticker>,
}

impl std::fmt::Debug for WasmExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmExecutor")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for WasiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WasiState")
    }
}

impl WasmRuntime {
    pub fn new(settings: &WasmSettings, cache_dir: PathBuf) -> Result<Self, PrepareError> {
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .memory_reservation(settings.memory_reservation.0)
            .memory_guard_size(settings.memory_guard_size.0)
            .memory_reservation_for_growth(1 << 20);
        if settings.pooling {
            let mut pool = PoolingAllocationConfig::default();
            let n = settings.pool_instances;
            pool.total_memories(n)
                .total_tables(n)
                .total_core_instances(n)
                .total_component_instances(0);
            pool.max_memory_size(settings.memory_reservation.0 as usize);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config).map_err(|e| PrepareError::Engine(e.to_string()))?;
        let ticker = Ticker::start(engine.clone());
        Ok(Self {
            engine,
            cache_dir,
            ticker,
        })
    }

    /// Compiles `bytes`, or loads the native code cached for them.
    fn load_module(
        &self,
        function: &str,
        path: &Path,
        bytes: &[u8],
    ) -> Result<Module, PrepareError> {
        let bad = |message: String| PrepareError::BadModule {
            function: function.to_owned(),
            path: path.to_owned(),
            message,
        };
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let key = format!(
            "{}-{:016x}.cwasm",
            hex::encode(Sha256::digest(bytes)),
            engine_hash.finish()
        );
        let cached = self.cache_dir.join(key);
        if cached.is_file() {
            // SAFETY: the file was written by `Module::serialize` of this same engine configuration
            // (its name carries the module hash and the engine's compatibility hash) into the
            // agent's private state directory.
            match unsafe { Module::deserialize_file(&self.engine, &cached) } {
                Ok(module) => return Ok(module),
                Err(e) => {
                    tracing::warn!(path = %cached.display(), "ignoring unusable compiled module: {e}")
                }
            }
        }
        let module = Module::new(&self.engine, bytes).map_err(|e| bad(format!("{e:#}")))?;
        if let Ok(native) = module.serialize() {
            let tmp = cached.with_extension("tmp");
            let written = std::fs::create_dir_all(&self.cache_dir)
                .and_then(|()| std::fs::write(&tmp, native))
                .and_then(|()| std::fs::rename(&tmp, &cached));
            if let Err(e) = written {
                tracing::warn!("cannot cache compiled module {}: {e}", cached.display());
            }
        }
        Ok(module)
    }
}

impl Runtime for WasmRuntime {
    fn prepare(&self, function: &FunctionDef) -> Result<Arc<dyn Executor>, PrepareError> {
        Ok(Arc::new(self.prepare_wasm(function)?))
    }
}

impl WasmRuntime {
    /// Compiles (or loads) and links a function's module.
    pub fn prepare_wasm(&self, function: &FunctionDef) -> Result<WasmExecutor, PrepareError> {
        let path = function.module.clone().unwrap_or_default();
        let bytes = std::fs::read(&path).map_err(|_| PrepareError::MissingFile {
            function: function.name.clone(),
            what: "module",
            path: path.clone(),
        })?;
        let module = self.load_module(&function.name, &path, &bytes)?;
        let mut linker: Linker<WasiState> = Linker::new(&self.engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut WasiState| &mut s.wasi)
            .map_err(|e| PrepareError::Engine(e.to_string()))?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| PrepareError::BadModule {
                function: function.name.clone(),
                path: path.clone(),
                message: format!("{e:#} (only WASI preview 1 imports are available)"),
            })?;
        if module.get_export("_start").is_none() {
            return Err(PrepareError::BadModule {
                function: function.name.clone(),
                path,
                message: "no `_start` export: build it as a WASI command (a program with `main`)"
                    .into(),
            });
        }
        Ok(WasmExecutor {
            name: function.name.clone(),
            pre,
            engine: self.engine.clone(),
            ticker: self.ticker.clone(),
        })
    }
}

impl WasmExecutor {
    /// Runs one job on the calling thread (which may block).
    pub fn run_blocking(&self, job: &StagedJob) -> Outcome {
        run_instance(&self.pre, &self.engine, &self.ticker, &self.name, job)
    }
}

impl Executor for WasmExecutor {
    fn execute(&self, job: StagedJob) -> RunFuture {
        let (pre, engine, ticker, name) = (
            self.pre.clone(),
            self.engine.clone(),
            self.ticker.clone(),
            self.name.clone(),
        );
        Box::pin(async move {
            let limit = job.log_limit;
            // wasmtime-wasi's synchronous API blocks; keep it off the async workers.
            match tokio::task::spawn_blocking(move || {
                run_instance(&pre, &engine, &ticker, &name, &job)
            })
            .await
            {
                Ok(outcome) => outcome,
                Err(e) => Outcome {
                    exit: Exit::Failure(format!("the wasm run panicked: {e}")),
                    stdout: Captured::new(limit),
                    stderr: Captured::new(limit),
                },
            }
        })
    }
}

/// One job: instantiate, run `_start`, and classify how it ended.
fn run_instance(
    pre: &InstancePre<WasiState>,
    engine: &Engine,
    ticker: &Ticker,
    name: &str,
    job: &StagedJob,
) -> Outcome {
    let stdout_pipe = CaptureStream::new(job.log_limit);
    let stderr_pipe = CaptureStream::new(job.log_limit);
    let outcome = |exit: Exit| Outcome {
        exit,
        stdout: stdout_pipe.take(),
        stderr: stderr_pipe.take(),
    };
    let mut builder = WasiCtxBuilder::new();
    builder
        .args(&[name])
        .envs(&job.contract_env(GUEST_INPUT_DIR, GUEST_OUTPUT_DIR))
        .stdout(stdout_pipe.clone())
        .stderr(stderr_pipe.clone())
        .allow_blocking_current_thread(true);
    let preopens = builder
        .preopened_dir(&job.input_dir, GUEST_INPUT_DIR, FsPerms::ReadOnly)
        .and_then(|b| b.preopened_dir(&job.output_dir, GUEST_OUTPUT_DIR, FsPerms::ReadWrite))
        // SCAR's name for the output folder, for modules ported from SCAR functions.
        .and_then(|b| b.preopened_dir(&job.output_dir, job.scar_output_dir(), FsPerms::ReadWrite));
    if let Err(e) = preopens {
        return outcome(Exit::Failure(format!(
            "cannot open the staging folders: {e}"
        )));
    }
    let limits = StoreLimitsBuilder::new()
        .memory_size(usize::try_from(job.memory_limit).unwrap_or(usize::MAX))
        .instances(1)
        .trap_on_grow_failure(true)
        .build();
    let mut store = Store::new(
        engine,
        WasiState {
            wasi: builder.build_p1(),
            limits,
        },
    );
    store.limiter(|s| &mut s.limits);
    let ticks = (job.timeout.as_millis() / TICK.as_millis()).max(1) as u64;
    store.set_epoch_deadline(ticks);
    store.epoch_deadline_trap();
    let _running = ticker.run_guard();
    let result = pre.instantiate(&mut store).and_then(|instance| {
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
        start.call(&mut store, ())
    });
    let exit = match result {
        Ok(()) => Exit::Success,
        Err(e) => classify(&e, job),
    };
    drop(store);
    outcome(exit)
}

fn classify(e: &wasmtime::Error, job: &StagedJob) -> Exit {
    if let Some(code) = e.downcast_ref::<I32Exit>() {
        return if code.0 == 0 {
            Exit::Success
        } else {
            Exit::Failure(format!("module exited with status {}", code.0))
        };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Exit::Failure(format!(
            "timed out after {}s (raise `timeout` in the FDL if the job needs longer)",
            job.timeout.as_secs()
        )),
        _ if format!("{e:#}").contains("forcing trap when growing memory") => {
            Exit::Failure(format!(
                "exceeded its memory limit of {} MiB (raise `memory` in the FDL)",
                job.memory_limit >> 20
            ))
        }
        Some(trap) => Exit::Failure(format!("trapped: {trap}")),
        None => Exit::Failure(format!("failed: {}", first_line(&format!("{e:#}")))),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// Advances the engine's epoch every [`TICK`] while any wasm job runs, and sleeps otherwise, so
/// an idle agent costs no wake-ups.
#[derive(Debug)]
pub struct Ticker {
    active: AtomicUsize,
    thread: std::thread::Thread,
}

/// Marks a wasm run in progress for as long as it lives.
#[derive(Debug)]
pub struct RunGuard<'a>(&'a Ticker);

impl Ticker {
    fn start(engine: Engine) -> Arc<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<Ticker>>(1);
        let handle = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                let Ok(me) = rx.recv() else { return };
                let me = Arc::downgrade(&me);
                loop {
                    let Some(t) = me.upgrade() else { return };
                    let busy = t.active.load(Ordering::Acquire) > 0;
                    drop(t);
                    if busy {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    } else {
                        std::thread::park_timeout(Duration::from_secs(60));
                    }
                }
            })
            .expect("spawning the epoch thread");
        let ticker = Arc::new(Self {
            active: AtomicUsize::new(0),
            thread: handle.thread().clone(),
        });
        let _ = tx.send(ticker.clone());
        ticker
    }

    pub fn run_guard(&self) -> RunGuard<'_> {
        if self.active.fetch_add(1, Ordering::AcqRel) == 0 {
            self.thread.unpark();
        }
        RunGuard(self)
    }
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A guest's stdout or stderr, kept like a process's: bounded, first and last bytes. Unlike
/// wasmtime's `MemoryOutputPipe` it never refuses a write, so a chatty module does not fail
/// because of its own logging.
#[derive(Debug, Clone)]
struct CaptureStream(Arc<std::sync::Mutex<Captured>>);

impl CaptureStream {
    fn new(limit: usize) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Captured::new(limit))))
    }

    fn push(&self, data: &[u8]) {
        if let Ok(mut c) = self.0.lock() {
            c.push(data);
        }
    }

    fn take(&self) -> Captured {
        match self.0.lock() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for CaptureStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
