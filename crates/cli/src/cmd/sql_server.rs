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
/// SIGTERM or Ctrl-C.
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
        // SIGTERM and Ctrl-C stop it, handled from before it says it listens.
        let stop = tenure_server::serve_cmd::signalled();
        tokio::pin!(stop);
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
                _ = &mut stop => break,
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
    // Every catalog read-only from here on: whatever statement got past the
    // hook (`SELECT ... INTO`, a DDL form it does not know), no table or
    // schema can be created or dropped in the session the connections share.
    for name in ctx.catalog_names() {
        if let Some(catalog) = ctx.catalog(&name) {
            ctx.register_catalog(&name, Arc::new(ReadOnlyCatalog(catalog)));
        }
    }
    Ok(Arc::new(ctx))
}

/// A catalog whose schemas and tables cannot be added or removed (the
/// providers' refusals are DataFusion's defaults).
#[derive(Debug)]
struct ReadOnlyCatalog(Arc<dyn datafusion::catalog::CatalogProvider>);

impl datafusion::catalog::CatalogProvider for ReadOnlyCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.0.schema_names()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn datafusion::catalog::SchemaProvider>> {
        self.0
            .schema(name)
            .map(|s| Arc::new(ReadOnlySchema(s)) as Arc<dyn datafusion::catalog::SchemaProvider>)
    }
}

/// A schema whose tables cannot be added or removed.
#[derive(Debug)]
struct ReadOnlySchema(Arc<dyn datafusion::catalog::SchemaProvider>);

#[async_trait]
impl datafusion::catalog::SchemaProvider for ReadOnlySchema {
    fn table_names(&self) -> Vec<String> {
        self.0.table_names()
    }

    async fn table(
        &self,
        name: &str,
    ) -> datafusion::error::Result<Option<Arc<dyn datafusion::catalog::TableProvider>>> {
        self.0.table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        self.0.table_exist(name)
    }
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

/// Startup: MD5 password of the one login, or none; marks the connection
/// logged in when it succeeds.
struct Startup {
    password: Option<Md5PasswordAuthStartupHandler<Login, DefaultServerParameterProvider>>,
    open: Open,
    authenticated: Arc<std::sync::atomic::AtomicBool>,
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
        let done = match &message {
            PgWireFrontendMessage::Startup(startup) => {
                check_database(startup.parameters.get("database").map(String::as_str))?;
                // Without a password, a startup that succeeds logs in.
                self.password.is_none()
            }
            // The password's answer: it logs in when it is right.
            PgWireFrontendMessage::PasswordMessageFamily(_) => self.password.is_some(),
            _ => false,
        };
        match &self.password {
            Some(p) => p.on_startup(client, message).await?,
            None => self.open.on_startup(client, message).await?,
        }
        if done {
            self.authenticated
                .store(true, std::sync::atomic::Ordering::Release);
        }
        Ok(())
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
        let authenticated = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(ReadOnly {
                authenticated: authenticated.clone(),
            }),
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
                authenticated,
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

/// Refuses every statement but queries, EXPLAIN, SHOW/SET of client
/// settings, transactions and cursors: no DDL, no writes, no COPY, no
/// `SELECT ... INTO`, no `SET` of a DataFusion option (the session is shared
/// by every connection); and everything before the connection has logged in.
struct ReadOnly {
    /// Set once the connection's startup (and password) succeeded: pgwire
    /// keeps reading a connection whose login failed, so a query sent along
    /// with a bad login would otherwise run.
    authenticated: Arc<std::sync::atomic::AtomicBool>,
}

/// Whether a query writes: `SELECT ... INTO`, a data-modifying body, in any
/// part of it or of its CTEs.
fn query_writes(q: &datafusion::sql::sqlparser::ast::Query) -> bool {
    q.with
        .as_ref()
        .is_some_and(|w| w.cte_tables.iter().any(|c| query_writes(&c.query)))
        || body_writes(&q.body)
}

fn body_writes(body: &SetExpr) -> bool {
    match body {
        SetExpr::Select(s) => s.into.is_some(),
        SetExpr::Query(q) => query_writes(q),
        SetExpr::SetOperation { left, right, .. } => body_writes(left) || body_writes(right),
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => true,
        _ => false,
    }
}

impl ReadOnly {
    fn check(&self, statement: &Statement) -> Option<PgWireResult<Response>> {
        if !self
            .authenticated
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Some(Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                // invalid_authorization_specification
                "28000".into(),
                "not logged in".into(),
            )))));
        }
        let allowed = match statement {
            Statement::Query(q) => !query_writes(q),
            Statement::Explain { statement, .. } => self.check(statement).is_none(),
            Statement::Declare { stmts } => stmts
                .iter()
                .all(|d| d.for_query.as_ref().is_none_or(|q| !query_writes(q))),
            // Client settings only: DataFusion's own options would change
            // the session every connection shares.
            Statement::Set(_) => !statement.to_string().to_lowercase().contains("datafusion."),
            Statement::ExplainTable { .. }
            | Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
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
        self.check(statement)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        match self.check(statement) {
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
        self.check(statement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn refused(hook: &ReadOnly, sql: &str) -> bool {
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        assert_eq!(statements.len(), 1, "{sql}");
        hook.check(&statements[0]).is_some()
    }

    #[test]
    fn the_hook_lets_only_reads_through_and_nothing_before_login() {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hook = ReadOnly {
            authenticated: flag.clone(),
        };
        // Before login: nothing, not even a plain query.
        assert!(refused(&hook, "SELECT 1"));
        assert!(refused(&hook, "SET application_name = 'x'"));
        flag.store(true, std::sync::atomic::Ordering::Release);
        for sql in [
            "SELECT count(*) FROM events",
            "WITH a AS (SELECT 1 AS x) SELECT x FROM a UNION SELECT 2",
            "EXPLAIN SELECT * FROM events",
            "SET application_name = 'psql'",
            "SHOW search_path",
            "BEGIN",
            "COMMIT",
            "DECLARE c CURSOR FOR SELECT * FROM events",
        ] {
            assert!(!refused(&hook, sql), "{sql}");
        }
        for sql in [
            "SELECT * INTO t FROM events",
            "SELECT 1 UNION (SELECT 2 INTO t)",
            "WITH a AS (SELECT * INTO t FROM events) SELECT 1",
            "DECLARE c CURSOR FOR SELECT * INTO t FROM events",
            "EXPLAIN SELECT * INTO t FROM events",
            "SET datafusion.execution.batch_size = 1",
            "SET \"datafusion.runtime.memory_limit\" = '1K'",
            "INSERT INTO events (event) VALUES ('x')",
            "CREATE TABLE t (a INT)",
            "CREATE VIEW v AS SELECT 1",
            "DROP TABLE events",
            "COPY (SELECT 1) TO '/tmp/x'",
            "DELETE FROM events",
            "UPDATE events SET event = 'x'",
        ] {
            assert!(refused(&hook, sql), "{sql}");
        }
    }

    /// Whatever got past the hook: the shared session's catalogs refuse new
    /// and dropped tables and schemas.
    #[test]
    fn the_session_cannot_create_or_drop_anything() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("store").to_string_lossy().into_owned();
        let events = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/retention/events.ndjson");
        let store = tenure_ingest::Store::open(&url).unwrap();
        let mut ing =
            tenure_ingest::Ingest::begin(store, tenure_ingest::IngestOptions::default()).unwrap();
        ing.add_file(&events).unwrap();
        ing.commit().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = tenure_store::Store::open_existing(&url).unwrap();
            let snapshot = tenure_store::load_latest(&store).await.unwrap();
            let ctx = session(&url, snapshot, &Default::default()).await.unwrap();
            let rows = |sql: &'static str| {
                let ctx = ctx.clone();
                async move { ctx.sql(sql).await?.collect().await }
            };
            assert!(rows("SELECT count(*) FROM events").await.is_ok());
            assert!(
                rows("SELECT count(*) FROM tenure.public.events")
                    .await
                    .is_ok()
            );
            for sql in [
                "SELECT * INTO t FROM events",
                "CREATE TABLE t AS SELECT 1",
                "CREATE VIEW v AS SELECT 1",
                "DROP TABLE events",
                "CREATE SCHEMA s",
                "CREATE TABLE datafusion.public.t AS SELECT 1",
            ] {
                assert!(rows(sql).await.is_err(), "{sql}");
            }
            assert!(rows("SELECT count(*) FROM events").await.is_ok());
        });
    }
}
