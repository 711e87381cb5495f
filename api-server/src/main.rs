//! `conda-store-api-server`: conda-store's REST API for the conda.store resources.

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use conda_store_api_server::{Config, router};

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
    Serve {
        /// Address to listen on.
        #[arg(long, env = "CONDA_STORE_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Path prefix of the conda-store API.
        #[arg(long, env = "CONDA_STORE_URL_PREFIX", default_value = "/conda-store/")]
        url_prefix: String,
        /// Log as JSON lines (for production) instead of text.
        #[arg(long, env = "CONDA_STORE_LOG_JSON")]
        log_json: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve {
            listen,
            url_prefix,
            log_json,
        } => {
            init_logging(log_json);
            let config = Config::with_prefix(&url_prefix);
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            tracing::info!(addr = %listener.local_addr()?, prefix = %config.url_prefix, "serving");
            axum::serve(listener, router(&config))
                .with_graceful_shutdown(shutdown())
                .await?;
            tracing::info!("stopped");
            Ok(())
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
