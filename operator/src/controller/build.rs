//! Build: id, admission, one Job per step, results from the Jobs' termination messages.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use conda_store_crds::{
    ArtifactKind, Build, BuildPhase, BuildStatus, BuildStep, Environment, Specification, StepJob,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;

use super::{Ctx, Error, apply_status};
use crate::decide::build::{
    Admission, Check, Effect, Facts, FoundJob, IdAnswer, Input, JobState, Jobs, Loss, Next,
    Waiting, phase, plan, steps_for, stuck_pod, unschedulable_pod,
};
use crate::decide::conditions::TRUE;
use crate::jobs::{JobInputs, StepReport, step_job};
use crate::labels;

pub async fn reconcile(build: Arc<Build>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    ctx.metrics.reconciles.with_label_values(&["Build"]).inc();
    let ns = build.namespace().unwrap_or_default();
    let api: Api<Build> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, labels::ARTIFACTS_FINALIZER, build, |event| async {
        match event {
            Finalizer::Apply(b) => apply(b, ctx.clone()).await,
            Finalizer::Cleanup(b) => cleanup(b, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Other(other.to_string()),
    })
}

fn key(build: &Build) -> String {
    format!(
        "{}/{}",
        build.namespace().unwrap_or_default(),
        build.name_any()
    )
}

/// The Jobs the cache shows for the build, by step.
fn jobs_of(ctx: &Ctx, build: &Build) -> Jobs {
    ctx.jobs
        .state()
        .iter()
        // A Job being deleted (by someone else: the build's own deletions come after it
        // ended) counts as gone; its pods may take a while to stop.
        .filter(|j| is_job_of(ctx, j, build))
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .filter_map(|j| {
            let step = step_of(j.labels())?;
            Some((
                step,
                FoundJob {
                    name: j.name_any(),
                    uid: j.uid().unwrap_or_default(),
                    state: job_state(j),
                },
            ))
        })
        .collect()
}

/// Whether `job` runs a step of `build`: in the right namespace, labelled with the build's
/// namespace, name and uid. Jobs made before the uid label existed are recognised as before
/// (by name labels; in the build's own namespace, also by their owner reference).
fn is_job_of(ctx: &Ctx, job: &Job, build: &Build) -> bool {
    let ns = build.namespace().unwrap_or_default();
    let uid = build.uid().unwrap_or_default();
    let labels = job.labels();
    let in_place = job.namespace().as_deref() == Some(ctx.job_namespace(&ns).as_str())
        && labels.get(labels::BUILD) == Some(&build.name_any())
        && labels
            .get(labels::NAMESPACE)
            .map_or(ctx.cfg.job_namespace.is_none(), |n| *n == ns);
    let owned = || {
        job.owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && o.uid == uid)
    };
    in_place
        && match labels.get(labels::BUILD_UID) {
            Some(u) => *u == uid,
            None => ctx.cfg.job_namespace.is_some() || owned(),
        }
}

/// The step a Job or pod runs, from its label.
fn step_of(labels: &BTreeMap<String, String>) -> Option<BuildStep> {
    let value = labels.get(labels::STEP)?;
    BuildStep::from_name(value)
}

pub(super) fn job_state(job: &Job) -> JobState {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    for c in conditions {
        // The Job's own conditions (batch/v1), not ours.
        if c.status == TRUE && c.type_ == "Complete" {
            return JobState::Succeeded;
        }
        if c.status == TRUE && c.type_ == "Failed" {
            let reason = c.reason.clone().unwrap_or_default();
            let message = c.message.clone().unwrap_or_default();
            return JobState::Failed(
                format!("{reason}: {message}")
                    .trim_matches([':', ' '])
                    .into(),
            );
        }
    }
    JobState::Running
}

/// What the phase overlay is keyed by: the object's uid, never its name. An environment
/// deleted and made again has a new Build of the same name, which must not inherit the old
/// one's ended phase (it would wait for the cache to show that end, forever).
fn phase_key(b: &Build) -> String {
    b.uid().unwrap_or_else(|| key(b))
}

/// Records `p` as the phase this process wrote for `b` (until the cache shows it).
pub(super) fn record_phase(ctx: &Ctx, b: &Build, p: BuildPhase) {
    ctx.phases
        .lock()
        .expect("not poisoned")
        .insert(phase_key(b), p);
}

/// The effective phase: what this process wrote last, if the cache is behind.
pub(super) fn effective_phase(ctx: &Ctx, b: &Build) -> BuildPhase {
    let cached = phase(b);
    let mut phases = ctx.phases.lock().expect("not poisoned");
    match phases.get(&phase_key(b)).copied() {
        Some(p) if p != cached && !cached.is_terminal() => p,
        Some(_) => {
            phases.remove(&phase_key(b));
            cached
        }
        None => cached,
    }
}

/// The build slots as the cache shows them (with the phases this process wrote since).
fn admission(ctx: &Ctx) -> Admission {
    let mut a = Admission {
        max: ctx.cfg.max_builds,
        ..Admission::default()
    };
    for b in ctx.builds.state() {
        match effective_phase(ctx, &b) {
            BuildPhase::Building => a.building += 1,
            BuildPhase::Queued if !b.spec.cancel => {
                if let Some(id) = b.status.as_ref().and_then(|s| s.id) {
                    a.queued.push(Waiting { id, key: key(&b) });
                }
            }
            _ => {}
        }
    }
    a
}

fn environment_of(ctx: &Ctx, build: &Build) -> Option<Arc<Environment>> {
    ctx.environments.get(
        &ObjectRef::new(&build.spec.environment).within(&build.namespace().unwrap_or_default()),
    )
}

async fn apply(build: Arc<Build>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    // This process ended the build but the cache does not show it yet: deciding on the stale
    // copy would, say, take the Job it just deleted for a vanished one and overwrite the
    // recorded failure. Wait for the cache instead.
    if !phase(&build).is_terminal() && effective_phase(&ctx, &build).is_terminal() {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let ns = build.namespace().unwrap_or_default();
    let env = environment_of(&ctx, &build);
    let artifacts = env
        .as_ref()
        .map(|e| e.spec.artifacts())
        .unwrap_or_else(|| ArtifactKind::DEFAULTS.to_vec());
    let steps = steps_for(&artifacts);
    let mut jobs = jobs_of(&ctx, &build);
    let api: Api<Build> = Api::namespaced(ctx.client.clone(), &ns);
    let job_ns = ctx.job_namespace(&ns);
    let shell = Shell {
        ctx: &ctx,
        build: &build,
        env: env.as_deref(),
        api: &api,
        jobs_api: Api::namespaced(ctx.client.clone(), &job_ns),
        job_ns: &job_ns,
    };
    let old = build.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let mut status = BuildStatus {
        observed_generation: build.metadata.generation,
        ..old.clone()
    };

    // Plan and act until the build has to wait, so that a new build gets its id, its slot
    // and its first Job with a single status write (each write costs the API server).
    let mut facts = Facts::default();
    let mut next = Next::Requeue(Duration::from_secs(60));
    // The build slots are only looked at while the build waits for one (a scan of every
    // cached Build); within a reconcile only this build's own state changes.
    let admission = if phase(&build) == BuildPhase::Queued {
        admission(&ctx)
    } else {
        Admission::default()
    };
    for _ in 0..8 {
        let plan = plan(
            Input {
                build: &build,
                status: &status,
                jobs: &jobs,
                steps: &steps,
                admission: &admission,
                job_namespace: &job_ns,
                now,
            },
            std::mem::take(&mut facts),
        );
        tracing::debug!(build = %key(&build), effects = ?plan.effects, next = ?plan.next, "build");
        // The one overlay for a stale cache: the phase this process decided, until the
        // cache shows it (see `effective_phase`).
        if let Some(p) = plan.status.phase
            && plan.status.phase != status.phase
        {
            record_phase(&ctx, &build, p);
        }
        status = plan.status;
        next = plan.next;
        for effect in plan.effects {
            shell
                .carry_out(effect, &status, &mut jobs, &mut facts)
                .await?;
        }
        if next != Next::Continue {
            break;
        }
    }
    if status != old {
        apply_status(&api, &*build, &status).await?;
    }
    Ok(match next {
        Next::AwaitChange => Action::await_change(),
        Next::Requeue(d) => Action::requeue(d),
        Next::Continue => Action::requeue(Duration::from_millis(100)),
    })
}

/// What the Build reconciler carries out for its plans: the only place it touches the API,
/// storage, events and metrics.
struct Shell<'a> {
    ctx: &'a Ctx,
    build: &'a Build,
    env: Option<&'a Environment>,
    api: &'a Api<Build>,
    jobs_api: Api<Job>,
    job_ns: &'a str,
}

impl Shell<'_> {
    async fn carry_out(
        &self,
        effect: Effect,
        status: &BuildStatus,
        jobs: &mut Jobs,
        facts: &mut Facts,
    ) -> Result<(), Error> {
        let ctx = self.ctx;
        match effect {
            Effect::TakeId => {
                // The cache can lag behind the id this process wrote a moment ago: ask the
                // API before handing out another, or the build would be renumbered.
                let written = self
                    .api
                    .get_opt(&self.build.name_any())
                    .await?
                    .and_then(|b| b.status)
                    .filter(|s| s.id.is_some());
                facts.id = Some(match written {
                    Some(s) => IdAnswer::Written(Box::new(s)),
                    None => IdAnswer::New(ctx.ids.next().await?),
                });
            }
            Effect::CreateJobs(steps) => self.create_jobs(steps, status, jobs, facts).await?,
            Effect::ReadReports(steps) => {
                for step in steps {
                    let uid = jobs.get(&step).map(|j| j.uid.clone()).unwrap_or_default();
                    let report = read_report(ctx, self.job_ns, &uid, step).await?;
                    facts.reports.push((step, report));
                }
            }
            Effect::CheckVanished(steps) => {
                for (step, why) in vanished(&self.jobs_api, jobs, &status.jobs, &steps).await? {
                    facts.lost.push((step, Loss::JobDeleted, why));
                }
                facts.checked = Some(Check::Vanished);
            }
            Effect::Inspect {
                pods,
                jobs: running,
            } => {
                if pods {
                    for (step, why) in stuck_steps(ctx, self.job_ns, jobs).await? {
                        facts.lost.push((step, Loss::PodCannotStart, why));
                    }
                }
                for (step, why) in vanished(&self.jobs_api, jobs, &status.jobs, &running).await? {
                    facts.lost.push((step, Loss::JobDeleted, why));
                }
                facts.checked = Some(Check::Inspected);
            }
            Effect::DeleteJobs { running_only } => {
                delete_jobs(&self.jobs_api, jobs, running_only).await?
            }
            Effect::Event {
                type_,
                reason,
                note,
            } => ctx.event(self.build, type_, reason, note).await,
            Effect::StepEnded {
                step,
                succeeded,
                seconds,
            } => {
                let outcome = if succeeded { "succeeded" } else { "failed" };
                ctx.metrics
                    .step_seconds
                    .with_label_values(&[step.as_str(), outcome])
                    .observe(seconds);
            }
        }
        Ok(())
    }

    /// Creates the steps' Jobs, after writing the solve step's input to storage.
    async fn create_jobs(
        &self,
        steps: Vec<BuildStep>,
        status: &BuildStatus,
        jobs: &mut Jobs,
        facts: &mut Facts,
    ) -> Result<(), Error> {
        let (ctx, build) = (self.ctx, self.build);
        let (ns, name) = (build.namespace().unwrap_or_default(), build.name_any());
        let spec_api: Api<Specification> = Api::namespaced(ctx.client.clone(), &ns);
        let spec = match spec_api.get_opt(&build.spec.specification).await? {
            Some(s) if s.is_consistent() => s,
            Some(_) => {
                facts.refused = Some(
                    "the Specification's content does not match its sha256 (it was modified)"
                        .into(),
                );
                return Ok(());
            }
            None => {
                facts.refused = Some(format!(
                    "the Specification {} is gone",
                    build.spec.specification
                ));
                return Ok(());
            }
        };
        let spec_json =
            serde_json::to_vec(&spec.spec.spec).map_err(|e| Error::Other(e.to_string()))?;
        if steps.contains(&BuildStep::Solve) {
            // The solve Job's input, in storage: no argument or variable size limit.
            let key = conda_store_storage::Key::new(&crate::jobs::spec_key(&ns, &name))?;
            ctx.store.put_bytes(&key, spec_json.into()).await?;
        }
        let display = self
            .env
            .and_then(|e| e.spec.name.clone())
            .unwrap_or_else(|| build.spec.environment.clone());
        let policy = ctx.policy_for(&ns, &display);
        // An image step waits while blobs are collected (its uploads would race the
        // deletions); the others go ahead.
        let gate = ctx.image_gate.try_step();
        let (steps, held): (Vec<_>, Vec<_>) = steps
            .into_iter()
            .partition(|s| *s != BuildStep::Image || gate.is_some());
        if steps.is_empty() && !held.is_empty() {
            facts.retry_after = Some(Duration::from_secs(5));
            return Ok(());
        }
        for step in steps {
            let job = step_job(
                &JobInputs {
                    build,
                    step,
                    build_id: status.id.unwrap_or_default(),
                    environment_name: &display,
                    channel_alias: policy.channel_alias.as_deref(),
                    pip: !spec.spec.spec.pip.is_empty(),
                },
                &ctx.cfg,
            );
            // The step's directories made here, when this process can: one container start
            // less on the build's path. Any failure leaves the init container to do it.
            let job = if ctx.prepares_dirs
                && let Some(dirs) = crate::jobs::prepared_dirs(
                    &job,
                    &ctx.cfg.envs_dir,
                    (ctx.cfg.storage.storage == conda_store_storage::args::Backend::Local)
                        .then_some(ctx.cfg.storage.storage_dir.as_path()),
                )
                && dirs.iter().all(|d| std::fs::create_dir_all(d).is_ok())
            {
                crate::jobs::without_prepare(job)
            } else {
                job
            };
            let job_name = job.name_any();
            let created = match self.jobs_api.create(&PostParams::default(), &job).await {
                Ok(j) => j,
                // Made by this build before (a restart, a stale cache), or a name someone
                // else took: only the build's own Job is waited on.
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    match self.jobs_api.get_opt(&job_name).await? {
                        Some(j) if is_job_of(ctx, &j, build) => j,
                        Some(_) => {
                            facts.refused = Some(format!(
                                "{} failed: the Job name {job_name} is taken by a Job that is not this build's",
                                step.as_str()
                            ));
                            return Ok(());
                        }
                        // Deleted in between: created again on the next pass.
                        None => {
                            facts.retry_after = Some(Duration::from_secs(1));
                            return Ok(());
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            };
            let uid = created.uid().unwrap_or_default();
            facts.created.push(StepJob {
                step,
                namespace: created.namespace().unwrap_or_default(),
                name: job_name.clone(),
                uid: uid.clone(),
            });
            jobs.insert(
                step,
                FoundJob {
                    name: job_name,
                    uid,
                    state: JobState::Running,
                },
            );
        }
        Ok(())
    }
}

/// Deletes the build's Jobs (with their pods); only the running ones when `running_only`.
async fn delete_jobs(api: &Api<Job>, jobs: &Jobs, running_only: bool) -> Result<(), Error> {
    for j in jobs.values() {
        if running_only && j.state != JobState::Running {
            continue;
        }
        match api.delete(&j.name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The steps among `steps` whose Job is gone, replaced or being deleted, asked of the API
/// (the cache may be behind), with the message that fails them.
async fn vanished(
    api: &Api<Job>,
    jobs: &Jobs,
    recorded: &[StepJob],
    steps: &[BuildStep],
) -> Result<Vec<(BuildStep, String)>, Error> {
    let mut gone = Vec::new();
    for &step in steps {
        // The Job as the cache shows it, else as the status recorded it when it was created.
        let known = jobs
            .get(&step)
            .map(|j| (j.name.clone(), j.uid.clone()))
            .or_else(|| {
                recorded
                    .iter()
                    .find(|r| r.step == step)
                    .map(|r| (r.name.clone(), r.uid.clone()))
            });
        let Some((name, uid)) = known else {
            gone.push((step, "the step's Job is gone".to_string()));
            continue;
        };
        let current = api.get_opt(&name).await?;
        if current.is_none_or(|j| {
            j.metadata.deletion_timestamp.is_some()
                || (!uid.is_empty() && j.uid().as_deref() != Some(uid.as_str()))
        }) {
            tracing::debug!(job = %name, "a running step's Job is gone");
            gone.push((
                step,
                format!("the Job {name} was deleted before it finished"),
            ));
        }
    }
    Ok(gone)
}

/// The pods the Job with uid `job_uid` controls, in `job_ns`: found by the `controller-uid`
/// label and checked against their owner reference, so a pod someone labelled like a build
/// step's is never read.
async fn job_pods(ctx: &Ctx, job_ns: &str, job_uid: &str) -> Result<Vec<Pod>, Error> {
    if job_uid.is_empty() {
        return Ok(Vec::new());
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), job_ns);
    let list = pods
        .list(&ListParams::default().labels(&labels::job_pods_selector(job_uid)))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| labels::controlled_by_job(&p.metadata, job_uid))
        .collect())
}

/// Running steps whose pod cannot start (bad image, missing Secret...), with the reason.
async fn stuck_steps(
    ctx: &Ctx,
    job_ns: &str,
    jobs: &Jobs,
) -> Result<Vec<(BuildStep, String)>, Error> {
    let now = jiff::Timestamp::now();
    let mut stuck = Vec::new();
    let mut pods = Vec::new();
    for (step, j) in jobs {
        if j.state == JobState::Running {
            for pod in job_pods(ctx, job_ns, &j.uid).await? {
                pods.push((*step, pod));
            }
        }
    }
    tracing::trace!(pods = pods.len(), "looking for stuck pods");
    for (step, pod) in pods {
        let age = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| now.as_second() - t.0.as_second());
        let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
        for c in conditions.into_iter().flatten() {
            if c.type_ != "PodScheduled" || c.status != "False" {
                continue;
            }
            let reason = c.reason.as_deref().unwrap_or_default();
            let message = c.message.as_deref().unwrap_or_default();
            if let Some(why) = unschedulable_pod(reason, message, age) {
                stuck.push((step, format!("pod {}: {why}", pod.name_any())));
            }
        }
        // The init container (which makes the step's directories) first, then the step's own.
        let status = pod.status.as_ref();
        let statuses = status
            .and_then(|s| s.init_container_statuses.as_ref())
            .into_iter()
            .flatten()
            .chain(
                status
                    .and_then(|s| s.container_statuses.as_ref())
                    .into_iter()
                    .flatten(),
            );
        for cs in statuses {
            let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
                continue;
            };
            let reason = w.reason.as_deref().unwrap_or_default();
            let message = w.message.as_deref().unwrap_or_default();
            tracing::debug!(pod = %pod.name_any(), reason, age, "a step's pod is waiting");
            if let Some(why) = stuck_pod(reason, message, age) {
                stuck.push((step, format!("pod {}: {why}", pod.name_any())));
            }
        }
    }
    Ok(stuck)
}

/// The report in the termination message of the newest finished pod of the step's Job.
async fn read_report(
    ctx: &Ctx,
    job_ns: &str,
    job_uid: &str,
    step: BuildStep,
) -> Result<Option<StepReport>, Error> {
    let mut list = job_pods(ctx, job_ns, job_uid).await?;
    list.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
    for pod in list.iter().rev() {
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref());
        for cs in statuses.into_iter().flatten() {
            let message = cs
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.message.as_ref());
            if let Some(m) = message {
                match serde_json::from_str::<StepReport>(m) {
                    Ok(r) => return Ok(Some(r)),
                    Err(_) => {
                        // Not our JSON (the runtime's own message, e.g. an exec failure).
                        return Ok(Some(StepReport {
                            step: step.as_str().into(),
                            ok: false,
                            message: Some(m.trim().to_string()),
                            artifacts: vec![],
                            details: serde_json::Value::Null,
                            duration_ms: 0,
                        }));
                    }
                }
            }
        }
    }
    Ok(None)
}

/// A deleted Build: its Jobs go with it (owner references); its artifacts and installed
/// prefix are removed here. Content-addressed image blobs are shared and stay.
async fn cleanup(build: Arc<Build>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    ctx.phases
        .lock()
        .expect("not poisoned")
        .remove(&phase_key(&build));
    let ns = build.namespace().unwrap_or_default();
    let name = build.name_any();
    let prefix = format!("{}/", labels::build_key(&ns, &name));
    if let Some(job_ns) = &ctx.cfg.job_namespace {
        // Not owned by the Build (it lives in another namespace): deleted here, pods too.
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), job_ns);
        let params = ListParams::default().labels(&ctx.job_selector(&ns, &name));
        jobs.delete_collection(&DeleteParams::background(), &params)
            .await?;
    }
    let removed = ctx.store.delete_prefix(&prefix).await?;
    if let Some(dir) = &ctx.cfg.local_envs_dir {
        let path = dir.join(&ns).join(&name);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "removing a deleted build's prefix")
            }
        }
        // The environment's `current` link, if it named this build, would now dangle.
        let link = dir.join(&ns).join(&build.spec.environment);
        if std::fs::read_link(&link).is_ok_and(|t| t == path)
            && let Err(e) = std::fs::remove_file(&link)
        {
            tracing::warn!(error = %e, link = %link.display(), "removing a current link");
        }
    }
    tracing::info!(build = %key(&build), objects = removed, "deleted the build's artifacts");
    Ok(Action::await_change())
}
