//! The gateway's settings, from flags or the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use conda_store_crds::rbac::Role;
use conda_store_storage::args::StorageArgs;

/// `serve` settings.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CONDA_STORE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Seconds a connection may take to send a request's headers, and may stay idle between
    /// requests, before it is closed (slow and idle clients cannot hold connections).
    #[arg(long, env = "CONDA_STORE_HEADER_TIMEOUT", default_value_t = 15)]
    pub header_timeout_seconds: u64,
    /// Seconds a request body may take to arrive.
    #[arg(long, env = "CONDA_STORE_BODY_TIMEOUT", default_value_t = 60)]
    pub body_timeout_seconds: u64,
    /// Connections served at once; more are closed as they come.
    #[arg(long, env = "CONDA_STORE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Path prefix of the conda-store API.
    #[arg(long, env = "CONDA_STORE_URL_PREFIX", default_value = "/conda-store/")]
    pub url_prefix: String,
    /// The conda-store-ui bundle served at `{prefix}ui/` (`index.html`, `main.js`, `main.css`
    /// of npm `@conda-store/conda-store-ui`'s `dist/`; the image carries it). Without it the UI
    /// is a page saying so.
    #[arg(
        long,
        env = "CONDA_STORE_UI_DIR",
        default_value = "/usr/share/conda-store-ui"
    )]
    pub ui_dir: PathBuf,
    /// The SQL index: `sqlite://PATH` (created when missing) or `postgres://...`.
    #[arg(
        long,
        env = "CONDA_STORE_DATABASE_URL",
        default_value = "sqlite:///var/lib/conda-store/index.db"
    )]
    pub database_url: String,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Secret that signs tokens (at least 32 bytes). Unset: a random one, so tokens do not
    /// survive a restart and several replicas do not accept each other's tokens.
    #[arg(long, env = "CONDA_STORE_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// The dev-only users file (user name, password, primary namespace) for logins.
    #[arg(long, env = "CONDA_STORE_USERS_FILE")]
    pub users_file: Option<PathBuf>,
    /// Accept Kubernetes tokens (ServiceAccounts of pipelines), checked with TokenReview.
    #[arg(long, env = "CONDA_STORE_TOKEN_REVIEW")]
    pub token_review: bool,
    /// OpenID Connect issuer whose ID tokens are accepted as bearer tokens (its
    /// `/.well-known/openid-configuration` and keys are fetched from it).
    #[arg(long, env = "CONDA_STORE_OIDC_ISSUER", requires = "oidc_client_id")]
    pub oidc_issuer: Option<String>,
    /// This gateway's client id at the issuer (the ID tokens' audience).
    #[arg(long, env = "CONDA_STORE_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,
    /// The claim that names the user (their primary namespace too).
    #[arg(
        long,
        env = "CONDA_STORE_OIDC_USERNAME_CLAIM",
        default_value = "preferred_username"
    )]
    pub oidc_username_claim: String,
    /// The claim listing a person's groups at the issuer (for `--group-binding`).
    #[arg(long, env = "CONDA_STORE_OIDC_GROUPS_CLAIM", default_value = "groups")]
    pub oidc_groups_claim: String,
    /// The client secret for browser sign-in with the issuer (unset: a public client, PKCE
    /// alone). Browser sign-in is offered whenever an issuer is set; register
    /// `{origin}{prefix}oauth_callback/` as its redirect URI there.
    #[arg(long, env = "CONDA_STORE_OIDC_CLIENT_SECRET", hide_env_values = true)]
    pub oidc_client_secret: Option<String>,
    /// The scopes browser sign-in asks the issuer for.
    #[arg(
        long,
        env = "CONDA_STORE_OIDC_SCOPES",
        default_value = "openid profile"
    )]
    pub oidc_scopes: String,
    /// The sign-in button's words: "Sign in with ...".
    #[arg(
        long,
        env = "CONDA_STORE_OIDC_DISPLAY_NAME",
        default_value = "OpenID Connect"
    )]
    pub oidc_display_name: String,
    /// A JupyterHub people sign in with, as browsers reach it (without `/hub/`). This gateway
    /// is registered there as a service with `oauth_client_id`, `api_token` (the client
    /// secret) and `oauth_redirect_uri` `{origin}{prefix}oauth_callback/`.
    #[arg(
        long,
        env = "CONDA_STORE_JUPYTERHUB_URL",
        requires = "jupyterhub_client_secret"
    )]
    pub jupyterhub_url: Option<String>,
    /// The hub as this gateway reaches it, when not by `--jupyterhub-url` (a cluster address).
    #[arg(long, env = "CONDA_STORE_JUPYTERHUB_API_URL")]
    pub jupyterhub_api_url: Option<String>,
    /// This gateway's OAuth client id at the hub.
    #[arg(
        long,
        env = "CONDA_STORE_JUPYTERHUB_CLIENT_ID",
        default_value = "service-conda-store"
    )]
    pub jupyterhub_client_id: String,
    /// The service's API token at the hub (its OAuth client secret).
    #[arg(
        long,
        env = "CONDA_STORE_JUPYTERHUB_CLIENT_SECRET",
        hide_env_values = true
    )]
    pub jupyterhub_client_secret: Option<String>,
    /// The JupyterHub sign-in button's words.
    #[arg(
        long,
        env = "CONDA_STORE_JUPYTERHUB_DISPLAY_NAME",
        default_value = "JupyterHub"
    )]
    pub jupyterhub_display_name: String,
    /// Bindings a group at the identity provider earns, `GROUP:PATTERN=ROLE` (repeatable).
    /// `GROUP` may be `*` (every group) and `PATTERN` may hold `{group}`:
    /// `*:{group}/*=editor` makes each group's members editors of its namespace.
    #[arg(long = "group-binding")]
    pub group_bindings: Vec<crate::auth::groups::GroupBinding>,
    /// The role people get on their own primary namespace (`none` for no role).
    #[arg(long, env = "CONDA_STORE_OWN_NAMESPACE_ROLE", default_value = "admin", value_parser = parse_optional_role)]
    pub own_namespace_role: OptionalRole,
    /// A binding every authenticated caller gets, `PATTERN=ROLE` (repeatable).
    #[arg(long = "authenticated-binding", value_parser = parse_binding)]
    pub authenticated_bindings: Vec<(String, Role)>,
    /// A binding callers without credentials get, `PATTERN=ROLE` (repeatable; none by default).
    #[arg(long = "anonymous-binding", value_parser = parse_binding)]
    pub anonymous_bindings: Vec<(String, Role)>,
    /// Largest request body accepted, bytes.
    #[arg(long, env = "CONDA_STORE_MAX_BODY_BYTES", default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// How long a write waits for the operator to give the new build its id, seconds.
    #[arg(long, env = "CONDA_STORE_BUILD_WAIT_SECONDS", default_value_t = 60)]
    pub build_wait_seconds: u64,
    /// How long a pull of a dynamic image waits for its build, seconds.
    #[arg(long, env = "CONDA_STORE_DYNAMIC_WAIT_SECONDS", default_value_t = 600)]
    pub dynamic_wait_seconds: u64,
    /// Lifetime of login sessions and the default lifetime of API tokens, seconds.
    #[arg(long, env = "CONDA_STORE_SESSION_SECONDS", default_value_t = 86_400)]
    pub session_seconds: i64,
    /// The global build policy, the operator's (`--policy` there): solves without a build
    /// follow it, and `GET /api/v1/setting/` shows it.
    #[arg(long, env = "CONDA_STORE_POLICY")]
    pub policy: Option<PathBuf>,
    /// Channels `GET /api/v1/specification/` may fetch to solve without building, besides
    /// the global policy's allowed and default channels (comma-separated). No other channel
    /// is fetched by the gateway: a tenant's channel URL could point anywhere inside the
    /// cluster, and builds fetch those from their egress-restricted Jobs instead.
    #[arg(long, env = "CONDA_STORE_SOLVE_CHANNELS", value_delimiter = ',')]
    pub solve_channels: Vec<String>,
    /// Solves without building that run at once; more wait up to 30 s, then answer 503.
    #[arg(long, env = "CONDA_STORE_MAX_SOLVES", default_value_t = 2)]
    pub max_solves: usize,
    /// Channels whose repodata the package catalog indexes (`GET /api/v1/package/`,
    /// conda-store's `conda_indexed_channels`; comma-separated). Unset: the channels solving
    /// may fetch (the global policy's allowed and default channels, `--solve-channels`).
    #[arg(long, env = "CONDA_STORE_CATALOG_CHANNELS", value_delimiter = ',')]
    pub catalog_channels: Option<Vec<String>>,
    /// Subdirs of each catalog channel.
    #[arg(
        long,
        env = "CONDA_STORE_CATALOG_SUBDIRS",
        value_delimiter = ',',
        default_value = "linux-64,noarch"
    )]
    pub catalog_subdirs: Vec<String>,
    /// Seconds between two catalog passes (0: no catalog of channels, only built packages).
    #[arg(long, env = "CONDA_STORE_CATALOG_INTERVAL", default_value_t = 3600)]
    pub catalog_interval_seconds: u64,
    /// Log as JSON lines (for production) instead of text.
    #[arg(long, env = "CONDA_STORE_LOG_JSON")]
    pub log_json: bool,
}

impl ServeArgs {
    /// The global policy from `--policy` (the default policy when unset).
    pub fn global_policy(&self) -> anyhow::Result<conda_store_crds::Policy> {
        use anyhow::Context;
        match &self.policy {
            None => Ok(conda_store_crds::Policy::default()),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading the policy {}", p.display()))?;
                serde_yaml::from_str(&text)
                    .with_context(|| format!("reading the policy {}", p.display()))
            }
        }
    }
}

/// A role, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalRole(pub Option<Role>);

fn parse_optional_role(s: &str) -> Result<OptionalRole, String> {
    if s == "none" {
        return Ok(OptionalRole(None));
    }
    s.parse()
        .map(|r| OptionalRole(Some(r)))
        .map_err(|e| format!("{e}"))
}

/// Parses `PATTERN=ROLE`.
pub fn parse_binding(s: &str) -> Result<(String, Role), String> {
    let (pattern, role) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("{s:?}: expected PATTERN=ROLE"))?;
    conda_store_crds::rbac::validate_pattern(pattern).map_err(|e| e.to_string())?;
    Ok((
        pattern.to_string(),
        role.parse().map_err(|e| format!("{e}"))?,
    ))
}

/// Normalises a prefix to `/segment/.../` form (`""` and `/` both mean the root).
pub fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        format!("/{trimmed}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_and_prefixes() {
        assert_eq!(
            parse_binding("team/*=viewer").unwrap(),
            ("team/*".into(), Role::Viewer)
        );
        assert!(parse_binding("team/*").is_err());
        assert!(parse_binding("a/b/c=admin").is_err());
        assert!(parse_binding("team/*=owner").is_err());
        assert_eq!(normalize_prefix("conda-store"), "/conda-store/");
        assert_eq!(normalize_prefix("/"), "/");
    }
}
