//! The gateway: conda-store's REST API (`/api/v1/...`) served from the conda.store resources
//! (watch-backed caches), artifact storage and a SQL index, with conda-store's auth model.

pub mod app;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod error;
pub mod index;
pub mod metrics;
pub mod query;
pub mod routes;
pub mod views;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;

use crate::app::App;
use crate::auth::jwt::Signer;
use crate::auth::login::Authenticator;
use crate::auth::users::UsersFile;
use crate::config::ServeArgs;

/// Builds the gateway's state from its settings (caches empty until [`App::watch`]).
pub async fn build_app(
    args: &ServeArgs,
    client: kube::Client,
) -> anyhow::Result<(Arc<App>, app::Writers)> {
    let index = index::Index::open(&args.database_url)
        .await
        .with_context(|| format!("opening the index database {}", args.database_url))?;
    let storage = args.storage.open().context("opening artifact storage")?;
    let secret = match &args.secret_key {
        Some(s) if s.len() >= 32 => s.as_bytes().to_vec(),
        Some(_) => anyhow::bail!("the secret key must be at least 32 bytes"),
        None => {
            tracing::warn!(
                "no --secret-key: tokens are signed with a random key and die with this process"
            );
            let mut key = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                .map_err(|_| anyhow::anyhow!("no randomness for a secret key"))?;
            key.to_vec()
        }
    };
    let users = UsersFile::open(args.users_file.clone())?;
    let mut auth = Authenticator::new(
        Signer::new(&secret),
        users,
        args.token_review.then(|| client.clone()),
    );
    auth.own_namespace_role = args.own_namespace_role.0;
    let mut oidc_client = None;
    if let (Some(issuer), Some(client)) = (&args.oidc_issuer, &args.oidc_client_id) {
        auth.oidc = Some(auth::oidc::Oidc::new(
            issuer,
            client,
            &args.oidc_username_claim,
            &args.oidc_groups_claim,
        ));
        oidc_client = Some(auth::sso::OidcClient {
            display: args.oidc_display_name.clone(),
            client_secret: args.oidc_client_secret.clone(),
            scopes: args.oidc_scopes.clone(),
        });
    }
    let hub = match (&args.jupyterhub_url, &args.jupyterhub_client_secret) {
        (Some(url), Some(secret)) => {
            let url = url.trim_end_matches('/').to_string();
            Some(auth::sso::JupyterHub {
                api_url: args
                    .jupyterhub_api_url
                    .as_deref()
                    .map(|u| u.trim_end_matches('/').to_string())
                    .unwrap_or_else(|| url.clone()),
                url,
                client_id: args.jupyterhub_client_id.clone(),
                client_secret: secret.clone(),
                display: args.jupyterhub_display_name.clone(),
            })
        }
        _ => None,
    };
    auth.sso = auth::sso::Sso::new(oidc_client, hub);
    auth.group_bindings = args.group_bindings.clone();
    auth.authenticated_bindings = args.authenticated_bindings.clone();
    auth.anonymous_bindings = args.anonymous_bindings.clone();
    auth.session_seconds = args.session_seconds;
    let (stores, writers) = app::caches();
    let policy = args.global_policy()?;
    let solver = routes::solve::Solver::new(&policy, &args.solve_channels, args.max_solves);
    let catalog = catalog::CatalogConfig {
        channels: match &args.catalog_channels {
            Some(c) => c.iter().filter(|c| !c.is_empty()).cloned().collect(),
            None => solver.channels(),
        },
        subdirs: args.catalog_subdirs.clone(),
        interval: Duration::from_secs(args.catalog_interval_seconds),
    };
    let app = Arc::new(App {
        prefix: config::normalize_prefix(&args.url_prefix),
        client,
        namespaces: stores.namespaces,
        environments: stores.environments,
        builds: stores.builds,
        specifications: stores.specifications,
        changed: Arc::new(tokio::sync::Notify::new()),
        index,
        storage,
        auth,
        metrics: metrics::Metrics::default(),
        ready: AtomicBool::new(false),
        build_wait: Duration::from_secs(args.build_wait_seconds),
        dynamic_wait: Duration::from_secs(args.dynamic_wait_seconds),
        max_body_bytes: args.max_body_bytes,
        storage_dir: (args.storage.storage == conda_store_storage::args::Backend::Local)
            .then(|| args.storage.storage_dir.clone()),
        header_timeout: std::time::Duration::from_secs(args.header_timeout_seconds),
        body_timeout: std::time::Duration::from_secs(args.body_timeout_seconds),
        max_connections: args.max_connections.max(1),
        generation: Default::default(),
        rows: Default::default(),
        policy,
        solver,
        catalog,
        ui: routes::ui::UiAssets::load(&args.ui_dir)
            .with_context(|| format!("reading the UI bundle in {}", args.ui_dir.display()))?,
    });
    Ok((app, writers))
}
