//! Plans that run elsewhere: what a session carries to a cluster's scheduler
//! and executors so that Tenure's plans decode and read the same store there.
//!
//! A session opened with [`OpenOptions::remote`](crate::OpenOptions) has its
//! store's URL in its configuration ([`TenureOptions`], the `tenure.store`
//! setting). A cluster sends a session's settings with every task; where a
//! plan is decoded, [`register_store`] maps the store's private URL
//! (`tenure://s<digest>`, which the plan's file paths name) to the store
//! itself, and [`functions`] are the scalar functions plans may call. The
//! crate that talks to the cluster (`tenure-cluster`) is kept apart, so the
//! engine does not build a cluster's network stack.

use std::fmt;
use std::sync::Arc;

use std::any::Any;

use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SessionState;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionConfig;

/// Tenure's settings a session carries to where its plans run. Its
/// entries carry their `tenure.` prefix, so a cluster that sends a session's
/// settings as key-value pairs sets them again where they arrive.
#[derive(Debug, Clone, Default)]
pub struct TenureOptions {
    /// The store the session reads, as given to `--data`.
    pub store: String,
}

impl ConfigExtension for TenureOptions {
    const PREFIX: &'static str = "tenure";
}

impl ExtensionOptions for TenureOptions {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> DfResult<()> {
        match key {
            "store" => {
                self.store = value.to_string();
                Ok(())
            }
            _ => Err(DataFusionError::Configuration(format!(
                "tenure.{key} is not a setting (tenure.store is)"
            ))),
        }
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        vec![ConfigEntry {
            key: "tenure.store".into(),
            value: (!self.store.is_empty()).then(|| self.store.clone()),
            description: "The store the session reads, as given to --data",
        }]
    }
}

/// `config` with Tenure's settings known (so `tenure.store` can be set).
pub fn with_tenure_options(config: SessionConfig) -> SessionConfig {
    if config.options().extensions.get::<TenureOptions>().is_some() {
        config
    } else {
        config.with_option_extension(TenureOptions::default())
    }
}

/// The store `config` names (`tenure.store`), if any.
pub fn store_of(config: &SessionConfig) -> Option<&str> {
    config
        .options()
        .extensions
        .get::<TenureOptions>()
        .map(|o| o.store.as_str())
        .filter(|s| !s.is_empty())
}

/// Registers the store `config` names with `runtime`, under the private URL
/// its plans' files are addressed by. Nothing to do when it names none.
pub fn register_store(config: &SessionConfig, runtime: &RuntimeEnv) -> DfResult<()> {
    let Some(url) = store_of(config) else {
        return Ok(());
    };
    let store = tenure_store::Store::open_existing(url).map_err(|e| {
        DataFusionError::Execution(format!(
            "cannot open the store {url} named by the session: {e}"
        ))
    })?;
    // Derived from the URL as sent, as the session that sent it did.
    let base = url::Url::parse(&crate::table::store_url(url))
        .map_err(|e| DataFusionError::Internal(format!("the store's private URL: {e}")))?;
    runtime.register_object_store(&base, store.inner.clone());
    Ok(())
}

/// The URL the store opened from `given` is sent to a cluster by: a local
/// directory as an absolute path (each process resolves a relative one in
/// its own directory), a bucket as given (with its `?options`, which the
/// store's shown URL leaves out). A `memory://` store lives in this process
/// only and cannot be read elsewhere.
pub fn travelling_url(store: &tenure_store::Store, given: &str) -> crate::Result<String> {
    if given.starts_with("memory://") {
        return Err(crate::EngineError::BadRequest(format!(
            "{given} is a memory store, which only this process can read: a cluster needs a \
             store every process reaches (a bucket, or a directory on a shared disk)"
        )));
    }
    match &store.local_dir {
        Some(dir) => {
            let abs = std::fs::canonicalize(dir)
                .map_err(|e| crate::EngineError::BadRequest(format!("{}: {e}", dir.display())))?;
            Ok(abs.to_string_lossy().into_owned())
        }
        None => Ok(given.to_string()),
    }
}

/// The scalar functions Tenure's plans and SQL may call (`prop`).
pub fn functions() -> Vec<Arc<ScalarUDF>> {
    vec![crate::json::prop_udf()]
}

/// Turns an opened store's session into one whose plans run elsewhere
/// (for a cluster: its query planner submits them to the scheduler).
#[derive(Clone)]
pub struct Remote(pub Arc<dyn Fn(SessionState) -> DfResult<SessionState> + Send + Sync>);

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Remote")
    }
}
