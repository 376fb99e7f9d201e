//! `tenure cluster`: a Ballista scheduler or executor with Tenure's plans.

use std::net::SocketAddr;

use clap::{Args, Subcommand};

use crate::exit::BadInput;

/// Run Tenure's analyses on several machines: Apache DataFusion Ballista's
/// scheduler and executors, with Tenure's plans, codecs and functions.
///
/// Start one scheduler, then executors that register with it, then give
/// any analysis or `tenure sql` the scheduler's address:
///
///   tenure cluster scheduler --bind 127.0.0.1:50050
///
///   tenure cluster executor --scheduler 127.0.0.1:50050 --bind 127.0.0.1:50051
///
///   tenure retention --data s3://bucket/store --period week --cluster df://127.0.0.1:50050
///
/// The store must be reachable by the same --data URL from the client, the
/// scheduler and every executor (a bucket, or a directory on a shared
/// disk); credentials come from each process's environment. Output is the
/// same as a local run's.
#[derive(Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub role: Role,
}

/// A cluster process.
#[derive(Subcommand)]
pub enum Role {
    /// The scheduler: plans queries into stages and hands tasks to executors.
    Scheduler {
        /// Address to listen on (clients and executors connect here).
        #[arg(long, default_value = "127.0.0.1:50050")]
        bind: SocketAddr,
    },
    /// An executor: runs tasks and serves their results.
    Executor {
        /// The scheduler's address (host:port).
        #[arg(long, value_name = "HOST:PORT")]
        scheduler: String,
        /// Address to listen on for result fetches (Arrow Flight); its gRPC
        /// service listens on the next port.
        #[arg(long, default_value = "127.0.0.1:50051")]
        bind: SocketAddr,
        /// Tasks run at once (default: the number of cores).
        #[arg(long, default_value_t = 0)]
        tasks: usize,
        /// Directory for shuffle files, and for operators' spill files
        /// (under DIR/spill) (default: the system's temporary directory).
        #[arg(long, value_name = "DIR")]
        work_dir: Option<String>,
    },
}

/// Runs the command until the process is stopped.
pub fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.role {
        Role::Scheduler { bind } => {
            eprintln!("tenure cluster scheduler listening on {bind}");
            rt.block_on(tenure_cluster::scheduler(bind))
        }
        Role::Executor {
            scheduler,
            bind,
            tasks,
            work_dir,
        } => {
            let (host, port) = tenure_cluster::scheduler_address(&scheduler)
                .ok_or_else(|| BadInput(format!("--scheduler `{scheduler}` is not host:port")))?;
            let grpc_port = bind
                .port()
                .checked_add(1)
                .ok_or_else(|| BadInput("--bind's port leaves no port for gRPC".into()))?;
            let tasks = if tasks == 0 {
                tenure_engine::table::thread_count(0)
            } else {
                tasks
            };
            eprintln!(
                "tenure cluster executor on {bind} (gRPC {grpc_port}), {tasks} tasks, scheduler {host}:{port}"
            );
            rt.block_on(tenure_cluster::executor(tenure_cluster::ExecutorOptions {
                scheduler: (host, port),
                bind,
                grpc_port,
                tasks,
                work_dir,
            }))
        }
    }
}
