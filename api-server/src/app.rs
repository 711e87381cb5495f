//! The gateway's shared state: watch-backed caches of the resources, the SQL index, storage
//! and auth; lookups by the names and ids conda-store's API uses.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use conda_store_crds::naming::object_name;
use conda_store_crds::{
    ArtifactKind, Build, BuildPhase, Environment, Namespace, RoleBinding, Specification,
};
use conda_store_storage::{ArtifactStore, Key};
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::Notify;

use crate::auth::login::Authenticator;
use crate::auth::{Caller, Permission};
use crate::error::{ApiError, ApiResult};
use crate::index::{Index, Kind};
use crate::metrics::Metrics;
use crate::views;

/// Everything a request handler reads.
pub struct App {
    /// `/`-framed API prefix (`/conda-store/`).
    pub prefix: String,
    /// The Kubernetes API, for writes.
    pub client: Client,
    /// Cached Namespaces.
    pub namespaces: Store<Namespace>,
    /// Cached Environments.
    pub environments: Store<Environment>,
    /// Cached Builds.
    pub builds: Store<Build>,
    /// Cached Specifications.
    pub specifications: Store<Specification>,
    /// Woken on every change of an Environment or Build.
    pub changed: Arc<Notify>,
    /// The SQL index.
    pub index: Index,
    /// Artifact storage.
    pub storage: Arc<dyn ArtifactStore>,
    /// The local artifact directory (for its disk figures), when storage is local.
    pub storage_dir: Option<std::path::PathBuf>,
    /// Authentication.
    pub auth: Authenticator,
    /// Request metrics.
    pub metrics: Metrics,
    /// Whether every cache is filled.
    pub ready: AtomicBool,
    /// How long writes wait for the operator.
    pub build_wait: Duration,
    /// How long a pull of a dynamic image waits for its build.
    pub dynamic_wait: Duration,
    /// Largest body accepted.
    pub max_body_bytes: usize,
    /// How long a request's headers (or the next request on an idle connection) may take.
    pub header_timeout: Duration,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// The global build policy (the operator's).
    pub policy: conda_store_crds::Policy,
    /// Solving without building: the channels it may fetch, and its slots.
    pub solver: crate::routes::solve::Solver,
    /// The channels the package catalog indexes.
    pub catalog: crate::catalog::CatalogConfig,
    /// Bumped on every change the watches see: list rows are rebuilt when it moved.
    pub generation: std::sync::atomic::AtomicU64,
    /// The list rows of the last generation they were built for.
    pub rows: tokio::sync::Mutex<Option<(u64, Arc<Rows>)>>,
}

/// The writer halves of the caches, for [`App::watch`] or for tests that fill them directly.
pub struct Writers {
    /// Namespaces.
    pub namespaces: reflector::store::Writer<Namespace>,
    /// Environments.
    pub environments: reflector::store::Writer<Environment>,
    /// Builds.
    pub builds: reflector::store::Writer<Build>,
    /// Specifications.
    pub specifications: reflector::store::Writer<Specification>,
}

/// The read halves of the caches.
pub struct Stores {
    /// Namespaces.
    pub namespaces: Store<Namespace>,
    /// Environments.
    pub environments: Store<Environment>,
    /// Builds.
    pub builds: Store<Build>,
    /// Specifications.
    pub specifications: Store<Specification>,
}

/// Empty caches and their writers.
pub fn caches() -> (Stores, Writers) {
    let (namespaces, nw) = reflector::store();
    let (environments, ew) = reflector::store();
    let (builds, bw) = reflector::store();
    let (specifications, sw) = reflector::store();
    (
        Stores {
            namespaces,
            environments,
            builds,
            specifications,
        },
        Writers {
            namespaces: nw,
            environments: ew,
            builds: bw,
            specifications: sw,
        },
    )
}

fn slim<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
    if let Some(a) = obj.meta_mut().annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

impl App {
    /// Starts the watches that fill the caches, and the index keeper.
    pub fn watch(self: &Arc<Self>, writers: Writers) {
        fn spawn<K>(app: Arc<App>, api: Api<K>, writer: reflector::store::Writer<K>)
        where
            K: Resource<DynamicType = ()>
                + Clone
                + std::fmt::Debug
                + serde::de::DeserializeOwned
                + Send
                + Sync
                + 'static,
        {
            tokio::spawn(async move {
                let stream = watcher(api, watcher::Config::default())
                    .default_backoff()
                    .modify(slim)
                    .reflect(writer)
                    .touched_objects();
                futures::pin_mut!(stream);
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(_) => app.changed_now(),
                        Err(e) => tracing::warn!(error = %e, "watch"),
                    }
                }
            });
        }
        let c = self.client.clone();
        spawn(
            self.clone(),
            Api::<Namespace>::all(c.clone()),
            writers.namespaces,
        );
        spawn(
            self.clone(),
            Api::<Environment>::all(c.clone()),
            writers.environments,
        );
        spawn(self.clone(), Api::<Build>::all(c.clone()), writers.builds);
        spawn(
            self.clone(),
            Api::<Specification>::all(c),
            writers.specifications,
        );
        let app = self.clone();
        tokio::spawn(async move { app.keep_revocations().await });
        if !self.catalog.interval.is_zero() && !self.catalog.channels.is_empty() {
            let app = self.clone();
            let cfg = self.catalog.clone();
            tokio::spawn(crate::catalog::run(app, cfg));
        }
        let app = self.clone();
        tokio::spawn(async move {
            let _ = app.namespaces.wait_until_ready().await;
            let _ = app.environments.wait_until_ready().await;
            let _ = app.builds.wait_until_ready().await;
            let _ = app.specifications.wait_until_ready().await;
            app.ready.store(true, Ordering::Relaxed);
            tracing::info!("caches filled");
            app.keep_index().await;
        });
    }

    /// Reads the revoked tokens every replica recorded, every few seconds.
    async fn keep_revocations(self: Arc<Self>) {
        loop {
            match self
                .index
                .revoked_tokens(jiff::Timestamp::now().as_second())
                .await
            {
                Ok(jtis) => self.auth.set_revoked(jtis),
                Err(e) => tracing::warn!(error = %e, "reading revoked tokens"),
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }

    /// Revokes the token `jti` (valid until `exp`): refused here at once, by every replica
    /// within seconds.
    pub async fn revoke(&self, jti: &str, exp: i64) -> ApiResult<()> {
        self.index
            .revoke_token(jti, exp, jiff::Timestamp::now().as_second())
            .await?;
        self.auth.revoke_locally(jti);
        Ok(())
    }

    /// Keeps the SQL index up to date: ids for every object, packages of completed builds.
    async fn keep_index(self: Arc<Self>) {
        loop {
            let woken = self.changed.notified();
            if let Err(e) = self.sync_index().await {
                tracing::warn!(error = %e, "updating the index");
            }
            let _ = tokio::time::timeout(Duration::from_secs(30), woken).await;
            // Let a burst of changes settle into one pass.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One pass of the index keeper.
    pub async fn sync_index(&self) -> Result<(), ApiError> {
        for ns in self.namespaces.state() {
            self.index.id(Kind::Namespace, &ns.name_any()).await?;
        }
        for env in self.environments.state() {
            self.index.id(Kind::Environment, &key(&*env)).await?;
        }
        for b in self.builds.state() {
            self.index_completed_build(&b).await?;
        }
        Ok(())
    }

    /// Records a completed build's packages from its lockfile, unless they are already: the
    /// keeper does it as builds complete, and a read of the packages that comes first does it
    /// then (it must not find a completed build empty).
    pub async fn index_completed_build(&self, b: &Build) -> Result<(), ApiError> {
        let Some(id) = b.status.as_ref().and_then(|s| s.id) else {
            return Ok(());
        };
        if views::build_phase(b) != BuildPhase::Completed || self.index.build_indexed(id).await? {
            return Ok(());
        }
        let Some(lock) = artifact_key(b, ArtifactKind::Lockfile) else {
            return Ok(());
        };
        let text = match self.storage.get_bytes(&Key::new(&lock)?).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(build = id, error = %e, "reading a lockfile to index");
                return Ok(());
            }
        };
        let text = String::from_utf8_lossy(&text);
        match conda_store_crds::spec::lockfile::parse_lockfile(
            &text,
            &conda_store_crds::spec::error::Location::path("lockfile"),
        ) {
            Ok(lock) => {
                self.index
                    .index_build(
                        id,
                        &b.namespace().unwrap_or_default(),
                        &b.name_any(),
                        &lock.packages,
                    )
                    .await?
            }
            Err(e) => tracing::warn!(build = id, error = %e, "an unreadable lockfile"),
        }
        Ok(())
    }

    /// The Namespace people call `name`.
    pub fn namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        let obj = object_name(name).ok()?;
        self.namespaces
            .get(&ObjectRef::new(&obj))
            .filter(|ns| views::namespace_name(ns) == name)
            .or_else(|| {
                self.namespaces
                    .state()
                    .into_iter()
                    .find(|ns| views::namespace_name(ns) == name)
            })
    }

    /// The Environment people call `name` in the Namespace object `ns`.
    pub fn environment(&self, ns: &str, name: &str) -> Option<Arc<Environment>> {
        if let Ok(obj) = object_name(name)
            && let Some(env) = self.environments.get(&ObjectRef::new(&obj).within(ns))
            && views::environment_name(&env) == name
        {
            return Some(env);
        }
        self.environments
            .state()
            .into_iter()
            .find(|e| e.namespace().as_deref() == Some(ns) && views::environment_name(e) == name)
    }

    /// The Build with numeric id `id`.
    pub fn build(&self, id: i64) -> Option<Arc<Build>> {
        self.builds
            .state()
            .into_iter()
            .find(|b| b.status.as_ref().and_then(|s| s.id) == Some(id))
    }

    /// The Environment of a Build.
    pub fn environment_of(&self, b: &Build) -> Option<Arc<Environment>> {
        self.environments
            .get(&ObjectRef::new(&b.spec.environment).within(&b.namespace().unwrap_or_default()))
    }

    /// The Namespace object named `ns` (its object name, not its conda name).
    pub fn namespace_object(&self, ns: &str) -> Option<Arc<Namespace>> {
        self.namespaces.get(&ObjectRef::new(ns))
    }

    /// The role bindings of the Namespace object `ns` (none when it does not exist).
    pub fn bindings(&self, ns: &str) -> Vec<RoleBinding> {
        self.namespaces
            .get(&ObjectRef::new(ns))
            .map(|n| n.spec.role_bindings.clone())
            .unwrap_or_default()
    }

    /// The conda name of the Namespace object `ns`.
    pub fn namespace_name(&self, ns: &str) -> String {
        self.namespaces
            .get(&ObjectRef::new(ns))
            .map(|n| views::namespace_name(&n))
            .unwrap_or_else(|| ns.to_string())
    }

    /// Whether `caller` holds `permission` on the environment `env` (conda name) of the
    /// Namespace object `ns`, or on the namespace itself.
    pub fn may(
        &self,
        caller: &Caller,
        permission: Permission,
        ns: &str,
        env: Option<&str>,
    ) -> bool {
        caller.may(
            permission,
            &self.bindings(ns),
            &self.namespace_name(ns),
            env,
        )
    }

    /// `may`, as a 403 error naming the target.
    pub fn require(
        &self,
        caller: &Caller,
        permission: Permission,
        ns: &str,
        env: Option<&str>,
    ) -> ApiResult<()> {
        if self.may(caller, permission, ns, env) {
            return Ok(());
        }
        let target = match env {
            Some(e) => format!("{}/{e}", self.namespace_name(ns)),
            None => self.namespace_name(ns),
        };
        Err(denied(caller, permission, &target))
    }

    /// The id of an object of `kind` keyed `key`, handed out when first needed.
    pub async fn id(&self, kind: Kind, key: &str) -> ApiResult<i64> {
        Ok(self.index.id(kind, key).await?)
    }

    /// The namespace view of the Namespace object `ns`.
    pub async fn namespace_view(&self, ns: &Namespace) -> ApiResult<views::NamespaceView> {
        Ok(views::namespace(
            ns,
            self.id(Kind::Namespace, &ns.name_any()).await?,
        ))
    }

    /// The environment id of a Build.
    pub async fn environment_id_of(&self, b: &Build) -> ApiResult<i64> {
        self.id(
            Kind::Environment,
            &format!(
                "{}/{}",
                b.namespace().unwrap_or_default(),
                b.spec.environment
            ),
        )
        .await
    }

    /// The view of a Build, with its specification.
    pub async fn build_view(&self, b: &Build, with_spec: bool) -> ApiResult<views::BuildView> {
        let env_id = self.environment_id_of(b).await?;
        let spec = if with_spec {
            let ns = b.namespace().unwrap_or_default();
            match self
                .specifications
                .get(&ObjectRef::new(&b.spec.specification).within(&ns))
            {
                Some(s) => {
                    let id = self
                        .id(Kind::Specification, &format!("{ns}/{}", s.name_any()))
                        .await?;
                    let env_name = self
                        .environment_of(b)
                        .map(|e| views::environment_name(&e))
                        .unwrap_or_else(|| b.spec.environment.clone());
                    Some(views::specification(&s, id, &env_name))
                }
                None => None,
            }
        } else {
            None
        };
        Ok(views::build(b, env_id, spec))
    }

    /// The view of an Environment (with its current build when `full`).
    pub async fn environment_view(
        &self,
        env: &Environment,
        full: bool,
    ) -> ApiResult<views::EnvironmentView> {
        let ns_obj = env.namespace().unwrap_or_default();
        let ns_view = match self.namespaces.get(&ObjectRef::new(&ns_obj)) {
            Some(ns) => self.namespace_view(&ns).await?,
            None => views::NamespaceView {
                id: self.id(Kind::Namespace, &ns_obj).await?,
                name: ns_obj,
                metadata_: Default::default(),
                role_mappings: Vec::new(),
            },
        };
        let id = self.id(Kind::Environment, &key(env)).await?;
        let current = match (full, env.status.as_ref().and_then(|s| s.current_build)) {
            (true, Some(bid)) => match self.build(bid) {
                Some(b) => Some(self.build_view(&b, false).await?),
                None => None,
            },
            _ => None,
        };
        Ok(views::environment(env, id, ns_view, current))
    }
}

/// The 403 for a caller lacking `permission` on `target`: conda-store answers 403 whether or not
/// the caller logged in (credentials that are not valid are a 401, elsewhere).
pub fn denied(caller: &Caller, permission: Permission, target: &str) -> ApiError {
    if caller.authenticated() {
        ApiError::forbidden(format!(
            "{} may not {} on {target}",
            caller.entity(),
            permission.as_str()
        ))
    } else {
        ApiError::forbidden(format!(
            "anonymous callers may not {} on {target}; log in or present a token",
            permission.as_str()
        ))
    }
}

/// `<kubernetes namespace>/<object name>`.
pub fn key<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.clone().unwrap_or_default(),
        obj.meta().name.clone().unwrap_or_default()
    )
}

/// The storage key of a build's artifact of `kind` (the first, for logs).
pub fn artifact_key(b: &Build, kind: ArtifactKind) -> Option<String> {
    b.status
        .as_ref()?
        .artifacts
        .iter()
        .find(|a| a.kind == kind && owns_key(b, &a.key))
        .map(|a| a.key.clone())
}

/// Whether `key` lies under the build's own storage prefix (`builds/<namespace>/<build>/`):
/// only those keys are served for it, whatever its status says.
pub fn owns_key(b: &Build, key: &str) -> bool {
    conda_store_crds::labels::in_build_prefix(
        &b.namespace().unwrap_or_default(),
        &b.name_any(),
        key,
    )
}

/// The names list rows are made with, gathered once per rebuild: with a thousand
/// environments, per-item lookups in the caches would cost a scan each.
struct Names {
    /// Namespace object name → (conda name, role bindings).
    namespaces: HashMap<String, (String, Vec<RoleBinding>)>,
    /// (Kubernetes namespace, Environment object name) → conda name.
    environments: HashMap<(String, String), String>,
}

impl Names {
    fn of(app: &App) -> Names {
        Names {
            namespaces: app
                .namespaces
                .state()
                .iter()
                .map(|n| {
                    (
                        n.name_any(),
                        (views::namespace_name(n), n.spec.role_bindings.clone()),
                    )
                })
                .collect(),
            environments: app
                .environments
                .state()
                .iter()
                .map(|e| {
                    (
                        (e.namespace().unwrap_or_default(), e.name_any()),
                        views::environment_name(e),
                    )
                })
                .collect(),
        }
    }

    /// The conda name of the Namespace object `ns`.
    fn namespace_name<'a>(&'a self, ns: &'a str) -> &'a str {
        self.namespaces.get(ns).map_or(ns, |(n, _)| n.as_str())
    }

    /// The conda name of an Environment object (its object name when unknown).
    fn environment_name<'a>(&'a self, ns: &str, env: &'a str) -> &'a str {
        self.environments
            .get(&(ns.to_string(), env.to_string()))
            .map_or(env, String::as_str)
    }
}

/// An environment as lists need it.
pub struct EnvRow {
    /// Numeric id.
    pub id: i64,
    /// The object.
    pub env: Arc<Environment>,
    /// Its Kubernetes namespace (the Namespace object name).
    pub ns: String,
    /// Its namespace's conda name.
    pub ns_name: String,
    /// Its conda name.
    pub name: String,
    /// Its list view (made once per change, serialised by every list request).
    pub view: views::EnvironmentView,
}

/// A build (with an id) as lists need it.
pub struct BuildRow {
    /// Numeric id.
    pub id: i64,
    /// Its environment's id.
    pub env_id: i64,
    /// The object.
    pub build: Arc<Build>,
    /// Its Kubernetes namespace.
    pub ns: String,
    /// Its namespace's conda name.
    pub ns_name: String,
    /// Its environment's conda name.
    pub env_name: String,
    /// Its list view.
    pub view: views::BuildView,
}

/// Every environment and build, sorted by id, with names and ids resolved: rebuilt once per
/// change, shared by every list request until the next.
pub struct Rows {
    /// Environments by id.
    pub envs: Vec<EnvRow>,
    /// Builds by id.
    pub builds: Vec<BuildRow>,
    /// Namespace object name → role bindings.
    pub bindings: HashMap<String, Vec<RoleBinding>>,
    /// Build id → its index in `builds`.
    pub build_index: HashMap<i64, usize>,
}

impl App {
    /// Waits until `check` answers, looking again on every change the watches see (never by
    /// polling); `None` when `within` passes first.
    pub async fn wait_for<T>(
        &self,
        within: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Registered before the check, so a change between the two is not missed.
            let woken = self.changed.notified();
            if let Some(answer) = check() {
                return Some(answer);
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return None;
            }
        }
    }

    /// Records a change: wakes writers waiting for the operator and retires the list rows.
    pub fn changed_now(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    /// The list rows of the current generation.
    pub async fn rows(&self) -> ApiResult<Arc<Rows>> {
        let mut slot = self.rows.lock().await;
        let generation = self.generation.load(Ordering::Relaxed);
        if let Some((g, rows)) = slot.as_ref()
            && *g == generation
        {
            return Ok(rows.clone());
        }
        let snap = Names::of(self);
        let mut envs = Vec::new();
        for env in self.environments.state() {
            let ns = env.namespace().unwrap_or_default();
            envs.push(EnvRow {
                id: self.id(Kind::Environment, &key(&*env)).await?,
                view: self.environment_view(&env, false).await?,
                ns_name: snap.namespace_name(&ns).to_string(),
                name: views::environment_name(&env),
                ns,
                env,
            });
        }
        envs.sort_by_key(|e| e.id);
        let mut builds = Vec::new();
        for b in self.builds.state() {
            let Some(id) = b.status.as_ref().and_then(|s| s.id) else {
                continue;
            };
            let ns = b.namespace().unwrap_or_default();
            let env_id = self.environment_id_of(&b).await?;
            builds.push(BuildRow {
                id,
                env_id,
                view: views::build(&b, env_id, None),
                ns_name: snap.namespace_name(&ns).to_string(),
                env_name: snap.environment_name(&ns, &b.spec.environment).to_string(),
                ns,
                build: b,
            });
        }
        builds.sort_by_key(|b| b.id);
        let build_index = builds.iter().enumerate().map(|(i, b)| (b.id, i)).collect();
        let rows = Arc::new(Rows {
            envs,
            builds,
            bindings: snap
                .namespaces
                .into_iter()
                .map(|(k, (_, b))| (k, b))
                .collect(),
            build_index,
        });
        *slot = Some((generation, rows.clone()));
        Ok(rows)
    }
}

/// Authorisation for many items of one request: what Namespaces grant the caller is worked
/// out once per namespace.
pub struct ListAuthz<'a> {
    caller: &'a Caller,
    rows: &'a Rows,
    granted: HashMap<&'a str, Option<conda_store_crds::rbac::Role>>,
}

impl<'a> ListAuthz<'a> {
    /// For `caller` over `rows`.
    pub fn new(caller: &'a Caller, rows: &'a Rows) -> Self {
        ListAuthz {
            caller,
            rows,
            granted: HashMap::new(),
        }
    }

    /// Whether the caller holds `permission` on environment `env` of namespace `ns` (object
    /// name) called `ns_name`.
    pub fn may(&mut self, permission: Permission, ns: &'a str, ns_name: &str, env: &str) -> bool {
        let least = permission.least_role();
        if self.caller.carried_role(ns_name, Some(env)) >= Some(least) {
            return true;
        }
        let (caller, rows) = (self.caller, self.rows);
        let granted = *self.granted.entry(ns).or_insert_with(|| {
            caller.granted_role(rows.bindings.get(ns).map_or(&[][..], Vec::as_slice))
        });
        granted >= Some(least)
    }
}
