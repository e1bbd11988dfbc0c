//! The `stockorder` binary: parses the command line and hands over to the library.

use clap::Parser;
use stockorder::app::Application;
use stockorder::config::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    stockorder::telemetry::init(&cli.log);
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::Load(args)) => stockorder::load::run(args).await,
    }
}

async fn serve(args: stockorder::config::ServeArgs) -> anyhow::Result<()> {
    let app = Application::build(&args).await?;
    app.run_until(stockorder::signal::terminate()).await?;
    tracing::info!("shutdown complete");
    Ok(())
}

// mimalloc: glibc malloc/free was ~8% of request CPU (perf, GET at c64); with mimalloc a create
// costs ~47 µs of server CPU instead of ~57. Built with `no_thp`: transparent huge pages would
// back its first arena with 2 MiB pages and push idle RSS from ~8 MB to ~16 MB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
