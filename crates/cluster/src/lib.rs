//! Tenure on an Apache DataFusion Ballista cluster.
//!
//! - [`scheduler`] and [`executor`] run Ballista's own scheduler and
//!   executor processes with what Tenure's plans need: its extension codecs
//!   ([`LogicalCodec`], [`PhysicalCodec`]: Tenure's nodes, then Ballista's),
//!   its scalar functions, and a runtime in which the store a session names
//!   (`tenure.store`, see [`tenure_engine::remote`]) is registered under the
//!   private URL its plans' files are addressed by.
//! - [`remote`] turns an opened store's session into one whose query planner
//!   submits its plans to a scheduler (`--cluster df://host:port`).
//!
//! The store must be reachable by the same URL from every process: a
//! directory on a shared disk, or a bucket.

use std::net::SocketAddr;
use std::sync::Arc;

use ballista_core::extension::{
    SessionConfigExt, SessionStateExt, ballista_aggregate_functions, ballista_scalar_functions,
    ballista_window_functions,
};
use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{FunctionRegistry, SessionState, SessionStateBuilder, TaskContext};
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, ScalarUDF, WindowUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use tenure_engine::codec::TenureCodec;
use tenure_engine::remote::{Remote, functions, register_store, with_tenure_options};

/// First byte of an encoded node: Tenure's codec wrote the rest.
const TENURE: u8 = b'T';
/// First byte of an encoded node: Ballista's codec wrote the rest.
const BALLISTA: u8 = b'B';

/// Splits an encoded node into the codec that wrote it and its bytes.
fn tagged(buf: &[u8]) -> DfResult<(u8, &[u8])> {
    match buf.split_first() {
        Some((&t, rest)) if t == TENURE || t == BALLISTA => Ok((t, rest)),
        _ => Err(DataFusionError::Internal(
            "an encoded plan node names neither Tenure's codec nor Ballista's".into(),
        )),
    }
}

/// Tenure's logical codec (a table function's result in a logical plan),
/// then Ballista's (file formats, its own nodes).
#[derive(Debug, Default)]
pub struct LogicalCodec {
    ballista: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for LogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> DfResult<Extension> {
        self.ballista.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> DfResult<()> {
        self.ballista.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> DfResult<Arc<dyn TableProvider>> {
        match tagged(buf)? {
            (TENURE, rest) => TenureCodec.try_decode_table_provider(rest, table_ref, schema, ctx),
            (_, rest) => self
                .ballista
                .try_decode_table_provider(rest, table_ref, schema, ctx),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> DfResult<()> {
        if node
            .downcast_ref::<tenure_engine::sql::FoldTable>()
            .is_some()
        {
            buf.push(TENURE);
            return TenureCodec.try_encode_table_provider(table_ref, node, buf);
        }
        buf.push(BALLISTA);
        self.ballista
            .try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> DfResult<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> DfResult<()> {
        self.ballista.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<ScalarUDF>> {
        self.ballista.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> DfResult<()> {
        self.ballista.try_encode_udf(node, buf)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<AggregateUDF>> {
        self.ballista.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> DfResult<()> {
        self.ballista.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<WindowUDF>> {
        self.ballista.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> DfResult<()> {
        self.ballista.try_encode_udwf(node, buf)
    }
}

/// Tenure's physical codec (key scans, folds, feature rows), then
/// Ballista's (shuffle writers and readers, its own nodes).
#[derive(Debug, Default)]
pub struct PhysicalCodec {
    ballista: BallistaPhysicalExtensionCodec,
}

impl PhysicalExtensionCodec for PhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        match tagged(buf)? {
            (TENURE, rest) => {
                PhysicalExtensionCodec::try_decode(&TenureCodec, rest, inputs, ctx, converter)
            }
            (_, rest) => self.ballista.try_decode(rest, inputs, ctx, converter),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        if tenure_engine::codec::is_tenure_node(node.as_ref()) {
            buf.push(TENURE);
            return PhysicalExtensionCodec::try_encode(&TenureCodec, node, buf, converter);
        }
        buf.push(BALLISTA);
        self.ballista.try_encode(node, buf, converter)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<ScalarUDF>> {
        self.ballista.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> DfResult<()> {
        self.ballista.try_encode_udf(node, buf)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<AggregateUDF>> {
        self.ballista.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> DfResult<()> {
        self.ballista.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<WindowUDF>> {
        self.ballista.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> DfResult<()> {
        self.ballista.try_encode_udwf(node, buf)
    }
}

/// A session configuration every process of the cluster starts from:
/// Ballista's, knowing Tenure's settings, with Tenure's codecs.
pub fn config() -> SessionConfig {
    with_tenure_options(SessionConfig::new_with_ballista())
        .with_ballista_logical_extension_codec(Arc::new(LogicalCodec::default()))
        .with_ballista_physical_extension_codec(Arc::new(PhysicalCodec::default()))
}

/// A runtime in which the store `config` names is registered.
pub fn runtime(config: &SessionConfig) -> DfResult<Arc<RuntimeEnv>> {
    runtime_in(config, None)
}

/// [`runtime`], with the files an operator spills to disk under
/// `work_dir/spill` when given (an executor's `--work-dir`), else in the
/// system's temporary directory.
fn runtime_in(
    config: &SessionConfig,
    work_dir: Option<&std::path::Path>,
) -> DfResult<Arc<RuntimeEnv>> {
    let mut builder = RuntimeEnvBuilder::new();
    if let Some(dir) = work_dir {
        builder = builder.with_temp_file_path(spill_dir(dir));
    }
    let runtime = builder.build_arc()?;
    register_store(config, &runtime)?;
    Ok(runtime)
}

/// Where an executor with `work_dir` spills.
fn spill_dir(work_dir: &std::path::Path) -> std::path::PathBuf {
    work_dir.join("spill")
}

/// The scheduler's session for a client's settings: Ballista's, with
/// Tenure's functions and the store named by the settings.
fn scheduler_session(config: SessionConfig) -> DfResult<SessionState> {
    let config = with_tenure_options(config);
    let runtime = runtime(&config)?;
    let mut scalar = ballista_scalar_functions();
    scalar.extend(functions());
    Ok(SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_optimizer_rules(ballista_core::optimizer::ballista_default_optimizer_rules())
        .with_scalar_functions(scalar)
        .with_aggregate_functions(ballista_aggregate_functions())
        .with_window_functions(ballista_window_functions())
        .build())
}

/// The scheduler URL of `--cluster` (`df://host:port`, or `host:port`) as
/// Ballista's client takes it.
pub fn scheduler_url(cluster: &str) -> anyhow::Result<String> {
    let (host, port) = scheduler_address(cluster).ok_or_else(|| {
        anyhow::anyhow!(
            "--cluster `{cluster}` is not df://host:port (for example df://127.0.0.1:50050)"
        )
    })?;
    Ok(format!("http://{host}:{port}"))
}

/// The host and port of a scheduler's address (`df://host:port`,
/// `http://host:port` or `host:port`); `None` when it is not one.
pub fn scheduler_address(address: &str) -> Option<(String, u16)> {
    let rest = address
        .strip_prefix("df://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address);
    let (host, port) = rest.rsplit_once(':')?;
    (!host.is_empty()).then_some(())?;
    Some((host.to_string(), port.parse().ok()?))
}

/// Makes an opened store's session run its plans on the cluster whose
/// scheduler is at `cluster`.
pub fn remote(cluster: &str) -> anyhow::Result<Remote> {
    let url = scheduler_url(cluster)?;
    Ok(Remote(Arc::new(move |state: SessionState| {
        // The session's catalog (its `events` table) is kept: a default one
        // created again would replace it.
        let config = state
            .config()
            .clone()
            .with_create_default_catalog_and_schema(false)
            // Ballista 55's adaptive planner loses track of a job whose
            // executor dies after a stage has finished ("Can't find active
            // stage to update stage outputs": the query never ends); the
            // static planner runs the lost stages again.
            .with_ballista_adaptive_query_planner(false)
            .with_ballista_logical_extension_codec(Arc::new(LogicalCodec::default()))
            .with_ballista_physical_extension_codec(Arc::new(PhysicalCodec::default()));
        let mut config = config;
        // With the static planner, a join whose build side got a dynamic
        // filter cannot be swapped when Ballista splits it into stages
        // ("Cannot swap HashJoinExec inputs after dynamic filters have been
        // constructed", and the job never ends): no dynamic join filters.
        let optimizer = &mut config.options_mut().optimizer;
        optimizer.enable_dynamic_filter_pushdown = false;
        optimizer.enable_join_dynamic_filter_pushdown = false;
        optimizer.enable_topk_dynamic_filter_pushdown = false;
        optimizer.enable_aggregate_dynamic_filter_pushdown = false;
        let state = SessionStateBuilder::new_from_existing(state)
            .with_config(config)
            .build();
        // Ballista's upgrade sets its own scalar functions: Tenure's again.
        let mut state = state.upgrade_for_ballista(url.clone())?;
        for f in functions() {
            state.register_udf(f)?;
        }
        Ok(state)
    })))
}

/// A process announces the address it binds to (executors call the
/// scheduler back there, clients fetch results there): not 0.0.0.0 or ::.
fn announced(bind: SocketAddr) -> anyhow::Result<()> {
    if bind.ip().is_unspecified() {
        anyhow::bail!(
            "--bind {bind}: the address is also the one other processes connect to; give this \
             machine's address (for example 10.0.0.5:{})",
            bind.port()
        );
    }
    Ok(())
}

/// How often an executor tells the scheduler it is alive.
pub const HEARTBEAT_SECS: u64 = 2;

/// How long the scheduler waits for an executor's heartbeat before it
/// drops the executor and runs its tasks elsewhere.
pub const EXECUTOR_TIMEOUT_SECS: u64 = 10;

/// Runs a scheduler listening on `bind` until the process ends.
pub async fn scheduler(bind: SocketAddr) -> anyhow::Result<()> {
    announced(bind)?;
    use ballista_scheduler::cluster::BallistaCluster;
    use ballista_scheduler::config::SchedulerConfig;
    let config = SchedulerConfig {
        // An executor that stops answering (killed, its machine gone) is
        // dropped and its tasks run again elsewhere after seconds, not the
        // default three minutes; executors beat every HEARTBEAT_SECS.
        executor_timeout_seconds: EXECUTOR_TIMEOUT_SECS,
        expire_dead_executor_interval_seconds: 2,
        no_executors_grace_period_seconds: EXECUTOR_TIMEOUT_SECS,
        bind_host: bind.ip().to_string(),
        bind_port: bind.port(),
        external_host: bind.ip().to_string(),
        override_config_producer: Some(Arc::new(config)),
        override_session_builder: Some(Arc::new(scheduler_session)),
        override_logical_codec: Some(Arc::new(LogicalCodec::default())),
        override_physical_codec: Some(Arc::new(PhysicalCodec::default())),
        ..Default::default()
    };
    let cluster = BallistaCluster::new_from_config(&config).await?;
    ballista_scheduler::scheduler_process::start_server(cluster, bind, Arc::new(config)).await?;
    Ok(())
}

/// What an executor is started with.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler (`host:port`).
    pub scheduler: (String, u16),
    /// Where it listens for results fetches (Arrow Flight).
    pub bind: SocketAddr,
    /// Its gRPC port.
    pub grpc_port: u16,
    /// Tasks run at once.
    pub tasks: usize,
    /// Where shuffle files go.
    pub work_dir: Option<String>,
}

/// Runs an executor registered with the scheduler until the process ends.
pub async fn executor(opts: ExecutorOptions) -> anyhow::Result<()> {
    announced(opts.bind)?;
    use ballista_core::registry::BallistaFunctionRegistry;
    use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
    let mut registry = BallistaFunctionRegistry::default();
    for f in functions() {
        registry.scalar_functions.insert(f.name().to_string(), f);
    }
    // Spill files go with the shuffle files, where the operator said.
    let work_dir = opts.work_dir.as_ref().map(std::path::PathBuf::from);
    if let Some(dir) = &work_dir {
        std::fs::create_dir_all(spill_dir(dir))
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", spill_dir(dir).display()))?;
    }
    let config = ExecutorProcessConfig {
        bind_host: opts.bind.ip().to_string(),
        external_host: Some(opts.bind.ip().to_string()),
        port: opts.bind.port(),
        grpc_port: opts.grpc_port,
        scheduler_host: opts.scheduler.0.clone(),
        scheduler_port: opts.scheduler.1,
        scheduler_connect_timeout_seconds: 30,
        vcores: opts.tasks.max(1),
        executor_heartbeat_interval_seconds: HEARTBEAT_SECS,
        work_dir: opts.work_dir.clone(),
        override_config_producer: Some(Arc::new(config)),
        override_runtime_producer: Some(Arc::new(move |c: &SessionConfig| {
            runtime_in(c, work_dir.as_deref())
        })),
        override_function_registry: Some(Arc::new(registry)),
        override_logical_codec: Some(Arc::new(LogicalCodec::default())),
        override_physical_codec: Some(Arc::new(PhysicalCodec::default())),
        ..Default::default()
    };
    start_executor_process(Arc::new(config)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_executor_spills_under_its_work_dir() {
        let dir = std::env::temp_dir().join(format!("tenure-spill-test-{}", std::process::id()));
        std::fs::create_dir_all(spill_dir(&dir)).unwrap();
        let spilling = runtime_in(&SessionConfig::new(), Some(&dir)).unwrap();
        let file = spilling.disk_manager.create_tmp_file("test").unwrap();
        let path = file.path().expect("a file on disk").to_path_buf();
        assert!(path.starts_with(spill_dir(&dir)), "{}", path.display());
        drop(file);
        // Without a work directory: the system's temporary directory.
        let default = runtime(&SessionConfig::new()).unwrap();
        let file = default.disk_manager.create_tmp_file("test").unwrap();
        assert!(!file.path().expect("a file on disk").starts_with(&dir));
        drop(file);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
