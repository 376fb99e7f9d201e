//! `tenure sql-server`: the store over the Postgres wire protocol, for BI tools
//! (Metabase, Grafana, Superset), notebooks and psql, on `datafusion-postgres`.

use std::sync::Arc;

use async_trait::async_trait;
use clap::Args;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{SetExpr, Statement};
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire;
use datafusion_postgres::{DfSessionService, datafusion_pg_catalog};
use pgwire::api::auth::md5pass::{Md5PasswordAuthStartupHandler, hash_md5_password};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::results::Response;
use pgwire::api::{ClientInfo, ConnectionManager, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::exit::BadInput;

/// The database name clients connect to.
pub const DATABASE: &str = "tenure";

/// Serve the store over the Postgres wire protocol (read-only).
///
/// BI tools, notebooks and psql connect as to a Postgres database named
/// `tenure`: the table `events` and every table function of `tenure sql`
/// (retention, funnel, segment, rfm, ltv, lifecycle, lifecycle_stages, kpi,
/// stickiness, abtest) answer in DataFusion's SQL, with the `pg_catalog` and
/// `information_schema` tables clients query when they connect. Only
/// queries run: no DDL, no writes, no `COPY`. Each connection reads the
/// store as committed when it connected (reconnect to see newer events);
/// connections made between two commits share one session, so a `SET` of a
/// DataFusion option applies to all of them.
///
/// Prints `listening on postgres://HOST:PORT/tenure` once bound; stops on
/// Ctrl-C.
///
/// Examples:
///
///   tenure sql-server --data ./store
///
///   psql -h 127.0.0.1 -p 5433 -d tenure -c "SELECT * FROM retention('week') LIMIT 5"
///
///   tenure sql-server --data s3://bucket/store --listen 0.0.0.0:5433 --user analyst --password-file /run/secrets/pg
#[derive(Args)]
pub struct SqlServerArgs {
    /// Store URL (a local directory, file://, memory://, s3://, gs://, az://).
    #[arg(long, value_name = "URL")]
    pub data: String,
    /// Address to listen on (port 0: any free port, printed).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:5433")]
    pub listen: String,
    /// The user clients must log in as (with --password-file); without it,
    /// any user connects without a password.
    #[arg(long, value_name = "NAME", requires = "password_file")]
    pub user: Option<String>,
    /// File holding the password (its first line) of --user; clients send
    /// it MD5-hashed, as Postgres' md5 method.
    #[arg(long, value_name = "PATH", requires = "user")]
    pub password_file: Option<String>,
    /// Worker threads per query (default: TENURE_THREADS, else all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// Runs the server until interrupted.
pub fn run(args: SqlServerArgs) -> anyhow::Result<()> {
    let login = match (&args.user, &args.password_file) {
        (Some(user), Some(file)) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| BadInput(format!("--password-file {file}: {e}")))?;
            let password = text.lines().next().unwrap_or("").to_string();
            if password.is_empty() {
                return Err(BadInput(format!("--password-file {file} is empty")).into());
            }
            Some(Arc::new(Login {
                user: user.clone(),
                password,
            }))
        }
        _ => None,
    };
    let threads = tenure_engine::table::thread_count(args.threads);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let options = tenure_engine::OpenOptions {
            threads: args.threads,
            ..Default::default()
        };
        // A store that cannot be opened fails now, not at the first client.
        let sessions = Arc::new(Sessions {
            store: tenure_store::Store::open_existing(&args.data)?,
            data: args.data.clone(),
            options,
            current: Default::default(),
        });
        sessions.get().await?;
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .map_err(|e| BadInput(format!("--listen {}: {e}", args.listen)))?;
        let addr = listener.local_addr()?;
        println!("listening on postgres://{addr}/{DATABASE}");
        let connections = Arc::new(ConnectionManager::new());
        let cancel = Arc::new(DefaultCancelHandler::new(connections.clone()));
        loop {
            let (socket, peer) = tokio::select! {
                accepted = listener.accept() => accepted?,
                _ = tokio::signal::ctrl_c() => break,
            };
            let sessions = sessions.clone();
            let (login, connections, cancel) = (login.clone(), connections.clone(), cancel.clone());
            tokio::spawn(async move {
                // Each connection reads the newest committed snapshot.
                let ctx = match sessions.get().await {
                    Ok(ctx) => ctx,
                    Err(e) => {
                        tracing::warn!("connection from {peer}: {e:#}");
                        return;
                    }
                };
                let handlers = Arc::new(Handlers::new(ctx, login, connections, cancel));
                if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
                    tracing::info!("connection from {peer}: {e}");
                }
            });
        }
        anyhow::Ok(())
    })
}

/// The session of the store's newest snapshot, shared by the connections
/// made while it is the newest (setting a session up, `pg_catalog` included,
/// costs more than most queries: ~25 ms per connection at 9.6M events).
struct Sessions {
    store: tenure_store::Store,
    data: String,
    options: tenure_engine::OpenOptions,
    /// The version and transaction of the snapshot it reads, and the session.
    current: tokio::sync::Mutex<Option<(u64, String, Arc<SessionContext>)>>,
}

impl Sessions {
    /// The session of the newest committed snapshot (a new one when a
    /// commit happened since the last connection).
    async fn get(&self) -> anyhow::Result<Arc<SessionContext>> {
        let snapshot = tenure_store::load_latest(&self.store).await?;
        let mut current = self.current.lock().await;
        if let Some((version, txn, ctx)) = current.as_ref()
            && *version == snapshot.version
            && *txn == snapshot.txn
        {
            return Ok(ctx.clone());
        }
        let key = (snapshot.version, snapshot.txn.clone());
        let ctx = session(&self.data, snapshot, &self.options).await?;
        *current = Some((key.0, key.1, ctx.clone()));
        Ok(ctx)
    }
}

/// A session over `snapshot`: `events` and the table functions in the
/// catalog `tenure` (schema `public`), with `pg_catalog` and
/// `information_schema`.
async fn session(
    data: &str,
    snapshot: tenure_schema::Snapshot,
    options: &tenure_engine::OpenOptions,
) -> anyhow::Result<Arc<SessionContext>> {
    use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider};
    let events = tenure_engine::Events::open_snapshot(data, snapshot, options.clone()).await?;
    tenure_engine::sql::register_functions(&events);
    let ctx = events.ctx.clone();
    let schema = Arc::new(MemorySchemaProvider::new());
    let table = ctx.table_provider("events").await?;
    datafusion::catalog::SchemaProvider::register_table(&*schema, "events".into(), table)?;
    let catalog = Arc::new(MemoryCatalogProvider::new());
    catalog.register_schema("public", schema)?;
    ctx.register_catalog(DATABASE, catalog);
    {
        let state = ctx.state_ref();
        let mut state = state.write();
        let config = state.config_mut().options_mut();
        config.catalog.default_catalog = DATABASE.into();
        config.catalog.default_schema = "public".into();
        config.catalog.information_schema = true;
    }
    datafusion_pg_catalog::pg_catalog::setup_pg_catalog(
        &ctx,
        DATABASE,
        datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
    )
    .map_err(|e| anyhow::anyhow!("pg_catalog: {e}"))?;
    Ok(Arc::new(ctx))
}

/// The one login of `--user`/`--password-file`.
#[derive(Debug)]
struct Login {
    user: String,
    password: String,
}

#[async_trait]
impl AuthSource for Login {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        check_database(login.database())?;
        let user = login.user().unwrap_or_default();
        // An unknown user gets the same exchange as a wrong password: a
        // password nobody knows (fresh random bytes each time).
        let unknown: String;
        let password = if user == self.user {
            self.password.as_str()
        } else {
            unknown = (0..16).map(|_| format!("{:02x}", rand_byte())).collect();
            unknown.as_str()
        };
        let salt: [u8; 4] = std::array::from_fn(|_| rand_byte());
        let hashed = hash_md5_password(user, password, &salt);
        Ok(Password::new(Some(salt.to_vec()), hashed.into_bytes()))
    }
}

/// A random byte: std's `RandomState` is seeded from the system's random
/// source once per process and stepped per instance; mixed with the time.
fn rand_byte() -> u8 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u8
}

/// Only the database `tenure` exists (clients that name none send the user
/// name, as Postgres' do).
fn check_database(database: Option<&str>) -> PgWireResult<()> {
    match database {
        Some(d) if d != DATABASE => Err(PgWireError::UserError(Box::new(ErrorInfo::new(
            "FATAL".into(),
            "3D000".into(),
            format!("database \"{d}\" does not exist (this server has one: {DATABASE})"),
        )))),
        _ => Ok(()),
    }
}

/// Startup without a password.
struct Open {
    connections: Arc<ConnectionManager>,
}

#[async_trait]
impl NoopStartupHandler for Open {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.connections.clone())
    }
}

/// Startup: MD5 password of the one login, or none.
struct Startup {
    password: Option<Md5PasswordAuthStartupHandler<Login, DefaultServerParameterProvider>>,
    open: Open,
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + futures::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        if let PgWireFrontendMessage::Startup(startup) = &message {
            check_database(startup.parameters.get("database").map(String::as_str))?;
        }
        match &self.password {
            Some(p) => p.on_startup(client, message).await,
            None => self.open.on_startup(client, message).await,
        }
    }
}

/// A connection's handlers: queries on its session, its startup, and the
/// server's cancel handler.
struct Handlers {
    session: Arc<DfSessionService>,
    startup: Arc<Startup>,
    cancel: Arc<DefaultCancelHandler>,
}

impl Handlers {
    fn new(
        ctx: Arc<SessionContext>,
        login: Option<Arc<Login>>,
        connections: Arc<ConnectionManager>,
        cancel: Arc<DefaultCancelHandler>,
    ) -> Self {
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(ReadOnly),
            Arc::new(CursorStatementHook),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
        ];
        let password = login.map(|l| {
            Md5PasswordAuthStartupHandler::new(
                l,
                Arc::new(DefaultServerParameterProvider::default()),
            )
            .with_connection_manager(connections.clone())
        });
        Self {
            session: Arc::new(DfSessionService::new_with_hooks(ctx, hooks)),
            startup: Arc::new(Startup {
                password,
                open: Open { connections },
            }),
            cancel,
        }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        self.session.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        self.session.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}

/// Refuses every statement but queries, EXPLAIN, SHOW/SET of session
/// settings, transactions and cursors: no DDL, no writes, no COPY.
struct ReadOnly;

impl ReadOnly {
    fn check(statement: &Statement) -> Option<PgWireResult<Response>> {
        let allowed = match statement {
            Statement::Query(q) => !matches!(
                q.body.as_ref(),
                SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_)
            ),
            Statement::Explain { statement, .. } => Self::check(statement).is_none(),
            Statement::ExplainTable { .. }
            | Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::Set(_)
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Declare { .. }
            | Statement::Fetch { .. }
            | Statement::Close { .. }
            | Statement::Discard { .. }
            | Statement::Deallocate { .. } => true,
            _ => false,
        };
        (!allowed).then(|| {
            Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "ERROR".into(),
                // read_only_sql_transaction
                "25006".into(),
                format!(
                    "tenure sql-server is read-only: only queries run here, not `{}`",
                    first_words(&statement.to_string())
                ),
            ))))
        })
    }
}

/// The first two words of a statement, for messages.
fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

#[async_trait]
impl QueryHook for ReadOnly {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::check(statement)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        match Self::check(statement) {
            Some(Err(e)) => Some(Err(e)),
            _ => None,
        }
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::check(statement)
    }
}
