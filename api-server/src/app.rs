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

mod authz;
mod keeper;
mod rows;
mod view_ids;

pub use authz::{ListAuthz, denied};
pub use rows::{BuildRow, EnvRow, Rows};

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
    /// The web UI's bundle, when installed.
    pub ui: Option<crate::routes::ui::UiAssets>,
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
                    .modify(conda_store_runtime::slim)
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
}
