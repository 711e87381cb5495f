//! `conda-store-api-server`: conda-store's REST API for the conda.store resources.

use anyhow::Context;
use clap::{Parser, Subcommand};
use conda_store_api_server::config::ServeArgs;
use conda_store_api_server::{build_app, routes};

/// conda-store for Kubernetes: the REST API gateway.
#[derive(Parser)]
#[command(name = "conda-store-api-server", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API until SIGTERM or Ctrl-C.
    Serve(Box<ServeArgs>),
    /// Print the argon2 hash of a password for the users file (the password is read from
    /// standard input, one line, so it stays out of the shell's history and `ps`).
    HashPassword,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().command {
        Command::Serve(args) => {
            conda_store_runtime::init_logs(args.log_json, "info");
            let client = kube::Client::try_default()
                .await
                .context("connecting to Kubernetes (KUBECONFIG or in-cluster)")?;
            let (app, writers) = build_app(&args, client).await?;
            app.watch(writers);
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("binding {}", args.listen))?;
            tracing::info!(addr = %listener.local_addr()?, prefix = %app.prefix, "serving");
            routes::serve(listener, app, conda_store_runtime::stop_signal()).await?;
            tracing::info!("stopped");
            Ok(())
        }
        Command::HashPassword => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            let password = line.trim_end_matches(['\n', '\r']);
            anyhow::ensure!(!password.is_empty(), "no password on standard input");
            println!(
                "{}",
                conda_store_api_server::auth::users::hash_password(password)
            );
            Ok(())
        }
    }
}
