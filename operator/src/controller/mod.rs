//! The controllers: one per kind, each a thin shell that reads the caches, asks the pure
//! decision of [`crate::decide`] what to do and does it.

mod build;
mod environment;
#[cfg(test)]
mod fixtures;
mod namespace;
#[cfg(test)]
mod scenarios;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use conda_store_crds::{Build, BuildPhase, Environment, Namespace, Policy};
use conda_store_storage::ArtifactStore;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;

use crate::config::RunArgs;
use crate::http::Health;
use crate::ids::IdAllocator;
use crate::labels;
use crate::leader::Elector;
use crate::metrics::Metrics;

/// A reconcile failure; the controller retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Ids(#[from] crate::ids::IdError),
    #[error("artifact storage: {0}")]
    Storage(#[from] conda_store_storage::StorageError),
    #[error("{0}")]
    Other(String),
}

/// What every reconcile shares.
pub struct Ctx {
    pub client: Client,
    pub cfg: RunArgs,
    pub policy: Policy,
    pub metrics: Metrics,
    pub recorder: Recorder,
    pub ids: IdAllocator,
    pub store: Arc<dyn ArtifactStore>,
    pub namespaces: Store<Namespace>,
    pub environments: Store<Environment>,
    pub builds: Store<Build>,
    pub jobs: Store<Job>,
    /// Phases this process wrote that the build cache may not show yet: admission counts
    /// them, so a burst of reconciles cannot start more builds than allowed.
    pub phases: Mutex<HashMap<String, BuildPhase>>,
    /// Specifications (`namespace/name`) this process created or checked: they are
    /// immutable, so one check per process is enough.
    pub known_specs: Mutex<std::collections::HashSet<String>>,
    /// Kubernetes namespaces this process applied, and when.
    pub ensured_namespaces: Mutex<HashMap<String, std::time::Instant>>,
    /// Keeps image Jobs from starting while blobs are collected.
    pub image_gate: crate::blob_gc::ImageGate,
    /// Whether this process makes the build steps' directories on the shared volumes itself
    /// (see [`prepares_dirs`]), so step pods need no init container.
    pub prepares_dirs: bool,
}

/// Every `--blob-gc-interval-seconds`, deletes the image blobs no build references, at a
/// moment no image step runs (retried a minute later while one does).
async fn collect_blobs_periodically(ctx: Arc<Ctx>) {
    let every = Duration::from_secs(ctx.cfg.blob_gc_interval_seconds);
    let mut wait = every;
    loop {
        tokio::time::sleep(wait).await;
        let gate = ctx.image_gate.collect().await;
        wait = match image_steps_active(&ctx).await {
            Ok(0) => {
                match crate::blob_gc::collect(ctx.store.as_ref()).await {
                    Ok(r) => {
                        ctx.metrics.blobs_deleted.inc_by(r.deleted as u64);
                        tracing::info!(
                            images = r.images,
                            blobs = r.blobs,
                            deleted = r.deleted,
                            bytes = r.deleted_bytes,
                            "collected unreferenced image blobs"
                        );
                    }
                    Err(e) => tracing::warn!(error = %e, "collecting image blobs failed"),
                }
                every
            }
            Ok(n) => {
                tracing::debug!(active = n, "image steps run; blob collection waits");
                every.min(Duration::from_secs(60))
            }
            Err(e) => {
                tracing::warn!(error = %e, "listing image Jobs failed; blob collection waits");
                every.min(Duration::from_secs(60))
            }
        };
        drop(gate);
    }
}

/// Image Jobs not finished yet, asked of the API (the cache may not show a Job just made).
async fn image_steps_active(ctx: &Ctx) -> Result<usize, kube::Error> {
    let api = jobs_api(&ctx.client, &ctx.cfg);
    let selector = format!(
        "{}={},{}=image",
        labels::MANAGED_BY,
        labels::MANAGER,
        labels::STEP
    );
    let jobs = api
        .list(&kube::api::ListParams::default().labels(&selector))
        .await?;
    Ok(jobs
        .items
        .iter()
        .filter(|j| build::job_state(j) == crate::decide::build::JobState::Running)
        .count())
}

/// Where the operator's Jobs are: the shared job namespace when there is one (the operator's
/// rights on Jobs may end there), else every namespace.
fn jobs_api(client: &Client, cfg: &RunArgs) -> Api<Job> {
    match &cfg.job_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

impl Ctx {
    /// The namespace the Jobs of a build in `build_ns` run in.
    pub fn job_namespace(&self, build_ns: &str) -> String {
        self.cfg
            .job_namespace
            .clone()
            .unwrap_or_else(|| build_ns.to_string())
    }

    /// The label selector of a build's Jobs and their pods, in their namespace. In a shared
    /// job namespace the build's name is not enough (builds of two namespaces may share it);
    /// in the build's own namespace it is, and Jobs made before the namespace label have it.
    pub fn job_selector(&self, build_ns: &str, build: &str) -> String {
        match self.cfg.job_namespace {
            Some(_) => format!("{}={build},{}={build_ns}", labels::BUILD, labels::NAMESPACE),
            None => format!("{}={build}", labels::BUILD),
        }
    }

    /// The effective policy of an environment (by conda name) of a Kubernetes namespace.
    pub fn policy_for(&self, namespace: &str, environment: &str) -> Policy {
        match self.namespaces.get(&ObjectRef::new(namespace)) {
            Some(ns) => ns.effective_policy(&self.policy, Some(environment)),
            None => self.policy.clone(),
        }
    }

    /// Publishes a Kubernetes Event about `obj` (failures only logged: events are advisory).
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::debug!(error = %e, reason, "publishing an event");
        }
    }
}

/// Writes `status` of `obj` by server-side apply under the operator's field manager.
pub async fn apply_status<K>(api: &Api<K>, obj: &K, status: &impl Serialize) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(labels::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

fn error_policy<K>(kind: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Ctx>) -> Action {
    move |obj, err, ctx| {
        let _ = obj;
        ctx.metrics.errors.with_label_values(&[kind]).inc();
        tracing::warn!(kind, error = %err, "reconcile failed; retrying");
        Action::requeue(Duration::from_secs(5))
    }
}

fn identity(cfg: &RunArgs) -> String {
    cfg.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "operator".into());
        format!("{host}-{}", std::process::id())
    })
}

/// Events a shared store's subscribers may fall behind by before its watch waits for them.
const SHARED_BUFFER: usize = 1024;

/// Runs the operator until a signal or the loss of leadership.
pub async fn run(cfg: RunArgs) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let policy = cfg.global_policy()?;
    let store = cfg.storage.open()?;
    let metrics = Metrics::default();
    let health = Health::default();
    let listener = tokio::net::TcpListener::bind(&cfg.listen).await?;
    tracing::info!(listen = %cfg.listen, "serving /metrics, /healthz and /readyz");
    let app = crate::http::router(metrics.clone(), health.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    });

    let me = identity(&cfg);
    let (lease_duration, renew_every) = cfg.lease_timing();
    let elector = Elector::new(client.clone(), &cfg.operator_namespace, &me, lease_duration);
    if cfg.leader_election {
        // A standby is ready: it can take over at any time.
        health.ready.store(true, Ordering::Relaxed);
        tracing::info!(identity = %me, "waiting for the leader Lease");
        elector.acquire(Duration::from_secs(2)).await;
        tracing::info!(identity = %me, "leading");
        health.ready.store(false, Ordering::Relaxed);
    }

    // Each kind is watched once into a store the reconcilers share. Cached objects are slimmed
    // (no managed fields, no kubectl last-applied copy, no Job pod template): with a thousand
    // environments that halves the operator's memory.
    let watch = watcher::Config::default();
    let managed =
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));
    //
    // Namespaces and Builds are shared streams: the Environment reconciler is woken by a change
    // of either only after the store it reads holds that change. With a watch of its own (as
    // `owns` makes), it could be woken first, decide on the old Build and wait for its
    // 300-second requeue: an Environment shown Building minutes after its build completed.
    let (namespaces, ns_writer) = reflector::store_shared::<Namespace>(SHARED_BUFFER);
    let ns_for_envs = ns_writer.subscribe().expect("a shared store");
    let ns_for_self = ns_writer.subscribe().expect("a shared store");
    let ns_source = watcher(Api::<Namespace>::all(client.clone()), watch.clone())
        .default_backoff()
        .modify(conda_store_runtime::slim)
        .reflect_shared(ns_writer)
        .applied_objects();
    let (environments, env_writer) = reflector::store::<Environment>();
    let env_stream = watcher(Api::<Environment>::all(client.clone()), watch.clone())
        .default_backoff()
        .modify(conda_store_runtime::slim)
        .reflect(env_writer)
        .applied_objects();
    let (builds, build_writer) = reflector::store_shared::<Build>(SHARED_BUFFER);
    let builds_for_envs = build_writer.subscribe().expect("a shared store");
    let builds_for_self = build_writer.subscribe().expect("a shared store");
    let build_source = watcher(Api::<Build>::all(client.clone()), watch.clone())
        .default_backoff()
        .modify(conda_store_runtime::slim)
        .reflect_shared(build_writer)
        .applied_objects();
    let (jobs, jobs_writer) = reflector::store::<Job>();
    let job_stream = watcher(jobs_api(&client, &cfg), managed)
        .default_backoff()
        .modify(|job: &mut Job| {
            conda_store_runtime::slim(job);
            job.spec = None;
        })
        .reflect(jobs_writer)
        .touched_objects();

    let ctx = Arc::new(Ctx {
        client: client.clone(),
        policy,
        metrics: metrics.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "conda-store-operator".into(),
                instance: Some(me.clone()),
            },
        ),
        ids: IdAllocator::new(client.clone(), &cfg.operator_namespace),
        store,
        namespaces: namespaces.clone(),
        environments: environments.clone(),
        builds: builds.clone(),
        jobs,
        known_specs: Mutex::new(std::collections::HashSet::new()),
        ensured_namespaces: Mutex::new(HashMap::new()),
        phases: Mutex::new(HashMap::new()),
        image_gate: crate::blob_gc::ImageGate::default(),
        prepares_dirs: prepares_dirs(&cfg),
        cfg,
    });
    if ctx.cfg.blob_gc_interval_seconds > 0 {
        tokio::spawn(collect_blobs_periodically(ctx.clone()));
    }

    // Readiness once every cache is filled. The stores' readiness future keeps one waker only
    // (the controller's own wait replaces ours), so it is polled again every half second.
    {
        let (ctx, health) = (ctx.clone(), health.clone());
        tokio::spawn(async move {
            async fn filled<K>(store: &Store<K>)
            where
                K: kube::runtime::reflector::Lookup + Clone + 'static,
                K::DynamicType: Eq + std::hash::Hash + Clone,
            {
                while tokio::time::timeout(Duration::from_millis(500), store.wait_until_ready())
                    .await
                    .is_err()
                {}
            }
            filled(&ctx.namespaces).await;
            filled(&ctx.environments).await;
            filled(&ctx.builds).await;
            filled(&ctx.jobs).await;
            health.ready.store(true, Ordering::Relaxed);
            tracing::info!("caches filled");
        });
    }
    // Builds by phase, recounted from the cache.
    {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            loop {
                let mut counts: HashMap<BuildPhase, i64> = HashMap::new();
                for b in ctx.builds.state() {
                    *counts.entry(crate::decide::build::phase(&b)).or_default() += 1;
                }
                for p in [
                    BuildPhase::Queued,
                    BuildPhase::Building,
                    BuildPhase::Completed,
                    BuildPhase::Failed,
                    BuildPhase::Canceled,
                ] {
                    ctx.metrics
                        .builds
                        .with_label_values(&[p.conda_store_name()])
                        .set(counts.get(&p).copied().unwrap_or(0));
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
    }

    // The shared watches run on their own, feeding their stores and subscribers.
    let sources = async move {
        futures::join!(
            ns_source.for_each(|r| {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "watching Namespaces");
                }
                futures::future::ready(())
            }),
            build_source.for_each(|r| {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "watching Builds");
                }
                futures::future::ready(())
            }),
        );
    };
    // Not joined with the controllers: those end on a signal, the watches never do.
    tokio::spawn(sources);
    let env_store = environments.clone();
    let ns_fut = Controller::for_shared_stream(ns_for_self, namespaces)
        .shutdown_on_signal()
        .run(namespace::reconcile, error_policy("Namespace"), ctx.clone())
        .for_each(|_| futures::future::ready(()));
    let env_fut = Controller::for_stream(env_stream, environments)
        .owns_shared_stream(builds_for_envs)
        .watches_shared_stream(ns_for_envs, move |ns: Arc<Namespace>| {
            let name = ns.name_any();
            env_store
                .state()
                .into_iter()
                .filter(|e| e.namespace().as_deref() == Some(name.as_str()))
                .map(|e| ObjectRef::from_obj(&*e))
                .collect::<Vec<_>>()
        })
        .shutdown_on_signal()
        .run(
            environment::reconcile,
            error_policy("Environment"),
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    // Jobs map to their Build by labels, not owner references: in a shared job namespace
    // the Build (elsewhere) cannot own them. Jobs made before the namespace label run in
    // their build's namespace.
    let build_fut = Controller::for_shared_stream(builds_for_self, builds)
        .watches_stream(job_stream, |job: Job| {
            let build = job.labels().get(labels::BUILD)?.clone();
            let ns = job
                .labels()
                .get(labels::NAMESPACE)
                .cloned()
                .or_else(|| job.namespace())?;
            Some(ObjectRef::<Build>::new(&build).within(&ns))
        })
        .shutdown_on_signal()
        .run(build::reconcile, error_policy("Build"), ctx.clone())
        .for_each(|_| futures::future::ready(()));

    // One task per controller: a slow reconcile of one kind cannot hold up the watches
    // (and so the caches) of the others.
    let controllers = async {
        let (a, b, c) = futures::join!(
            tokio::spawn(ns_fut),
            tokio::spawn(env_fut),
            tokio::spawn(build_fut)
        );
        for r in [a, b, c] {
            if let Err(e) = r {
                tracing::error!(error = %e, "a controller task ended abnormally");
            }
        }
    };
    if ctx.cfg.leader_election {
        tokio::select! {
            () = controllers => {
                // Stopped by a signal: a standby need not wait for the Lease to expire.
                if let Err(e) = elector.release().await {
                    tracing::warn!(error = %e, "releasing the leader Lease");
                }
                tracing::info!("stopped; the leader Lease is released");
                Ok(())
            }
            () = elector.keep(renew_every) => {
                anyhow::bail!("lost the leader Lease; exiting so a restart follows")
            }
        }
    } else {
        controllers.await;
        Ok(())
    }
}

/// Whether this process can make the step Jobs' directories itself: the Jobs run in the
/// release's namespace, so they mount the volumes this process mounts at the same paths, and
/// this process runs as the Jobs' user, so what it makes is theirs. Otherwise (Jobs in each
/// build's namespace, with claims this process does not see) their init container makes them.
pub fn prepares_dirs(cfg: &RunArgs) -> bool {
    // The effective uid: the one files this process makes belong to.
    let uid = i64::from(rustix::process::geteuid().as_raw());
    cfg.job_namespace.is_some()
        && uid == cfg.job_user
        && std::path::Path::new(&cfg.envs_dir).is_dir()
}
