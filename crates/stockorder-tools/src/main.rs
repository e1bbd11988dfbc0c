//! The `stockorder-tools` binary: clients, load, shutdown proofs and the rolling restart.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Clients, load and shutdown proofs for a stockorder service, over its public APIs only.
#[derive(Debug, Parser)]
#[command(name = "stockorder-tools", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Talk to a running server: the original's demo loop, or one call printed as JSON.
    Client(stockorder_tools::client::ClientArgs),
    /// Drive load at a running server and print throughput and latency.
    Load(stockorder_tools::load::LoadArgs),
    /// Start a server, load it, signal it, and account for every request.
    Prove(stockorder_tools::prove::ProveArgs),
    /// Restart three replicas behind HAProxy one by one under load, and account for every
    /// request and order.
    RollingRestart(stockorder_tools::rolling::RollingArgs),
}

/// Errors end here, printed once with their causes, exit code 1.
fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Client(args) => stockorder_tools::client::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Load(args) => stockorder_tools::load::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Prove(args) => stockorder_tools::prove::run(args).await,
        Command::RollingRestart(args) => stockorder_tools::rolling::run(args).await,
    }
}
