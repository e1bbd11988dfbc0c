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
