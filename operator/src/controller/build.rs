//! Build: id, admission, one Job per step, results from the Jobs' termination messages.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use conda_store_crds::{
    Artifact, ArtifactKind, Build, BuildPhase, BuildStatus, BuildStep, Environment, Specification,
    StepJob,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;

use super::{Ctx, Error, apply_status};
use crate::decide::build::{
    BuildAction, JobState, Waiting, admitted, next_action, phase, steps_for, stuck_pod,
    unschedulable_pod,
};
use crate::decide::conditions::{FALSE, TRUE, UNKNOWN, condition, get, set};
use crate::jobs::{JobInputs, StepReport, step_job};
use crate::labels;
use conda_store_crds::ConditionStatus;

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

/// A Job of the build, as the cache shows it.
#[derive(Debug, Clone)]
struct FoundJob {
    name: String,
    uid: String,
    state: JobState,
}

type Jobs = BTreeMap<BuildStep, FoundJob>;

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

/// The effective phase: what this process wrote last, if the cache is behind.
fn effective_phase(ctx: &Ctx, b: &Build) -> BuildPhase {
    let cached = phase(b);
    let mut phases = ctx.phases.lock().expect("not poisoned");
    match phases.get(&key(b)).copied() {
        Some(p) if p != cached && !cached.is_terminal() => p,
        Some(_) => {
            phases.remove(&key(b));
            cached
        }
        None => cached,
    }
}

fn may_start(ctx: &Ctx, build: &Build) -> bool {
    let (mut building, mut queued) = (0, Vec::new());
    for b in ctx.builds.state() {
        match effective_phase(ctx, &b) {
            BuildPhase::Building => building += 1,
            BuildPhase::Queued if !b.spec.cancel => {
                if let Some(id) = b.status.as_ref().and_then(|s| s.id) {
                    queued.push(Waiting { id, key: key(&b) });
                }
            }
            _ => {}
        }
    }
    // The build itself, if the cache does not show its id yet.
    let me = key(build);
    if !queued.iter().any(|w| w.key == me)
        && let Some(id) = build.status.as_ref().and_then(|s| s.id)
    {
        queued.push(Waiting {
            id,
            key: me.clone(),
        });
    }
    admitted(&me, building, &queued, ctx.cfg.max_builds)
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
    let name = build.name_any();
    let env = environment_of(&ctx, &build);
    let artifacts = env
        .as_ref()
        .map(|e| e.spec.artifacts())
        .unwrap_or_else(|| ArtifactKind::DEFAULTS.to_vec());
    let steps = steps_for(&artifacts);
    let mut jobs = jobs_of(&ctx, &build);
    let api: Api<Build> = Api::namespaced(ctx.client.clone(), &ns);
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.job_namespace(&ns));
    let old = build.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let generation = build.metadata.generation;
    let mut status = BuildStatus {
        observed_generation: generation,
        ..old.clone()
    };
    let step_condition =
        |status: &mut BuildStatus, step: BuildStep, s: ConditionStatus, reason: &str, m: String| {
            let c = condition(
                &old.conditions,
                step.condition_type(),
                s,
                reason,
                m,
                generation,
                now,
            );
            set(&mut status.conditions, c);
        };

    // Decide and act until the build has to wait, so that a new build gets its id, its slot
    // and its first Job with a single status write (each write costs the API server).
    let mut working = (*build).clone();
    let mut next = Next::Requeue(Duration::from_secs(60));
    for _ in 0..6 {
        working.status = Some(status.clone());
        let states: BTreeMap<BuildStep, JobState> =
            jobs.iter().map(|(s, j)| (*s, j.state.clone())).collect();
        let starting = phase(&working) == BuildPhase::Queued && may_start(&ctx, &working);
        let action = next_action(&working, &states, &steps, starting);
        tracing::debug!(build = %key(&build), ?action, "build");
        next = match action {
            BuildAction::Idle => Next::AwaitChange,
            BuildAction::Wait => {
                if phase(&working) == BuildPhase::Queued {
                    Next::Requeue(Duration::from_secs(3))
                } else {
                    // Pods are only looked at once the build has run for a while: a pod
                    // cannot be stuck before, and a burst of new builds costs no lists.
                    let running_for = status
                        .started_on
                        .as_ref()
                        .map_or(0, |t| now.as_second() - t.0.as_second());
                    let stuck = if running_for >= 60 {
                        stuck_steps(&ctx, &ns, &name, &jobs).await?
                    } else {
                        Vec::new()
                    };
                    // A missed watch event must not leave the build waiting for a Job that
                    // is gone: the running Jobs are checked against the API as well.
                    let running: Vec<BuildStep> = jobs
                        .iter()
                        .filter(|(_, j)| j.state == JobState::Running)
                        .map(|(step, _)| *step)
                        .collect();
                    let gone = if running_for >= 10 {
                        vanished(&jobs_api, &jobs, &status.jobs, &running).await?
                    } else {
                        Vec::new()
                    };
                    if stuck.is_empty() && gone.is_empty() {
                        Next::Requeue(Duration::from_secs(30))
                    } else {
                        for (step, why) in stuck {
                            step_condition(&mut status, step, FALSE, "PodCannotStart", why);
                        }
                        for (step, why) in gone {
                            step_condition(&mut status, step, FALSE, "JobDeleted", why);
                        }
                        Next::Continue
                    }
                }
            }
            BuildAction::AssignId => {
                // The cache can lag behind the id this process wrote a moment ago: ask the
                // API before handing out another, or the build would be renumbered.
                let fresh = api
                    .get_opt(&name)
                    .await?
                    .and_then(|b| b.status)
                    .filter(|s| s.id.is_some());
                match fresh {
                    Some(written) => {
                        status = BuildStatus {
                            observed_generation: generation,
                            ..written
                        };
                    }
                    None => {
                        let id = ctx.ids.next().await?;
                        status.id = Some(id);
                        status.phase = Some(BuildPhase::Queued);
                        status.scheduled_on = Some(Time(now));
                    }
                }
                Next::Continue
            }
            BuildAction::Start => {
                status.phase = Some(BuildPhase::Building);
                status.started_on = Some(Time(now));
                ctx.phases
                    .lock()
                    .expect("not poisoned")
                    .insert(key(&build), BuildPhase::Building);
                Next::Continue
            }
            BuildAction::CreateJobs(to_create) => 'create: {
                let spec_api: Api<Specification> = Api::namespaced(ctx.client.clone(), &ns);
                let spec = spec_api.get_opt(&build.spec.specification).await?;
                let spec = match spec {
                    Some(s) if s.is_consistent() => s,
                    Some(_) => {
                        return fail_now(
                        &ctx,
                        &api,
                        &build,
                        status,
                        "the Specification's content does not match its sha256 (it was modified)",
                    )
                    .await;
                    }
                    None => {
                        return fail_now(
                            &ctx,
                            &api,
                            &build,
                            status,
                            &format!("the Specification {} is gone", build.spec.specification),
                        )
                        .await;
                    }
                };
                let spec_json =
                    serde_json::to_vec(&spec.spec.spec).map_err(|e| Error::Other(e.to_string()))?;
                if to_create.contains(&BuildStep::Solve) {
                    // The solve Job's input, in storage: no argument or variable size limit.
                    let key = conda_store_storage::Key::new(&crate::jobs::spec_key(&ns, &name))?;
                    ctx.store.put_bytes(&key, spec_json.into()).await?;
                }
                let display = env
                    .as_ref()
                    .and_then(|e| e.spec.name.clone())
                    .unwrap_or_else(|| build.spec.environment.clone());
                let policy = ctx.policy_for(&ns, &display);
                // An image step waits while blobs are collected (its uploads would race the
                // deletions); the others go ahead.
                let gate = ctx.image_gate.try_step();
                let (to_create, held): (Vec<_>, Vec<_>) = to_create
                    .into_iter()
                    .partition(|s| *s != BuildStep::Image || gate.is_some());
                if to_create.is_empty() && !held.is_empty() {
                    break 'create Next::Requeue(Duration::from_secs(5));
                }
                for step in to_create {
                    let job = step_job(
                        &JobInputs {
                            build: &build,
                            step,
                            build_id: status.id.unwrap_or_default(),
                            environment_name: &display,
                            channel_alias: policy.channel_alias.as_deref(),
                        },
                        &ctx.cfg,
                    );
                    let job_name = job.name_any();
                    let created = match jobs_api.create(&PostParams::default(), &job).await {
                        Ok(j) => j,
                        // Made by this build before (a restart, a stale cache), or a name
                        // someone else took: only the build's own Job is waited on.
                        Err(kube::Error::Api(e)) if e.code == 409 => {
                            match jobs_api.get_opt(&job_name).await? {
                                Some(j) if is_job_of(&ctx, &j, &build) => j,
                                Some(_) => {
                                    return fail_now(
                                        &ctx,
                                        &api,
                                        &build,
                                        status,
                                        &format!(
                                            "{} failed: the Job name {job_name} is taken by a Job that is not this build's",
                                            step.as_str()
                                        ),
                                    )
                                    .await;
                                }
                                // Deleted in between: created again on the next pass.
                                None => break 'create Next::Requeue(Duration::from_secs(1)),
                            }
                        }
                        Err(e) => return Err(e.into()),
                    };
                    let uid = created.uid().unwrap_or_default();
                    status.jobs.retain(|j| j.step != step);
                    status.jobs.push(StepJob {
                        step,
                        namespace: created.namespace().unwrap_or_default(),
                        name: job_name.clone(),
                        uid: uid.clone(),
                    });
                    step_condition(
                        &mut status,
                        step,
                        UNKNOWN,
                        "Running",
                        format!("Job {job_name}"),
                    );
                    ctx.event(
                        &*build,
                        EventType::Normal,
                        "StepStarted",
                        format!("{} in Job {job_name}", step.as_str()),
                    )
                    .await;
                    jobs.insert(
                        step,
                        FoundJob {
                            name: job_name,
                            uid,
                            state: JobState::Running,
                        },
                    );
                }
                Next::Continue
            }
            BuildAction::Collect(finished) => {
                for step in finished {
                    let FoundJob {
                        name: job_name,
                        uid,
                        state,
                    } = jobs[&step].clone();
                    let job_ns = ctx.job_namespace(&ns);
                    let report = read_report(&ctx, &job_ns, &uid, step)
                        .await?
                        .map(|r| own_artifacts_only(r, &ns, &name));
                    let outcome = match (&state, &report) {
                        (JobState::Succeeded, Some(r)) if r.ok => Ok(r),
                        (_, Some(r)) if !r.ok => Err(r
                            .message
                            .clone()
                            .unwrap_or_else(|| "the step failed".into())),
                        (JobState::Succeeded, _) => {
                            Err(format!("Job {job_name} succeeded without a report"))
                        }
                        (JobState::Failed(why), _) => Err(format!(
                            "Job {job_name} failed ({why}); see `kubectl logs -n {job_ns} job/{job_name}`"
                        )),
                        (JobState::Running, _) => continue,
                    };
                    let seconds = report
                        .as_ref()
                        .map_or(0.0, |r| r.duration_ms as f64 / 1000.0);
                    // The step's log is stored whether it succeeded or not; a failed step's
                    // is the one a person most needs.
                    if report.is_some() {
                        let log = Artifact {
                            kind: ArtifactKind::Logs,
                            key: format!(
                                "{}/logs/{}.log",
                                labels::build_key(&ns, &name),
                                step.as_str()
                            ),
                            size: None,
                            digest: None,
                        };
                        if !status.artifacts.iter().any(|o| o.key == log.key) {
                            status.artifacts.push(log);
                        }
                    }
                    match outcome {
                        Ok(r) => {
                            for a in &r.artifacts {
                                if !status
                                    .artifacts
                                    .iter()
                                    .any(|o| o.kind == a.kind && o.key == a.key)
                                {
                                    status.artifacts.push(a.clone());
                                }
                            }
                            if step == BuildStep::Solve {
                                status.package_count = r
                                    .details
                                    .get("packages")
                                    .and_then(|p| p.as_object())
                                    .and_then(|m| m.values().filter_map(|v| v.as_u64()).max())
                                    .map(|n| n as u32);
                            }
                            let summary = r
                                .message
                                .clone()
                                .unwrap_or_else(|| format!("done in {seconds:.1} s"));
                            step_condition(&mut status, step, TRUE, "Succeeded", summary);
                            ctx.metrics
                                .step_seconds
                                .with_label_values(&[step.as_str(), "succeeded"])
                                .observe(seconds);
                        }
                        Err(message) => {
                            step_condition(&mut status, step, FALSE, "Failed", message);
                            ctx.metrics
                                .step_seconds
                                .with_label_values(&[step.as_str(), "failed"])
                                .observe(seconds);
                        }
                    }
                }
                Next::Continue
            }
            BuildAction::CheckVanished(steps) => {
                for (step, why) in vanished(&jobs_api, &jobs, &status.jobs, &steps).await? {
                    step_condition(&mut status, step, FALSE, "JobDeleted", why);
                }
                Next::Requeue(Duration::from_secs(2))
            }
            BuildAction::Complete => {
                status.phase = Some(BuildPhase::Completed);
                status.ended_on = Some(Time(now));
                status.size = Some(status.artifacts.iter().filter_map(|a| a.size).sum());
                ctx.phases
                    .lock()
                    .expect("not poisoned")
                    .insert(key(&build), BuildPhase::Completed);
                ctx.event(
                    &*build,
                    EventType::Normal,
                    "Completed",
                    format!("build {} completed", old.id.unwrap_or_default()),
                )
                .await;
                Next::Requeue(Duration::from_secs(1))
            }
            BuildAction::Fail { step, message } => {
                status.phase = Some(BuildPhase::Failed);
                status.ended_on = Some(Time(now));
                status.message = Some(format!("{} failed: {message}", step.as_str()));
                ctx.phases
                    .lock()
                    .expect("not poisoned")
                    .insert(key(&build), BuildPhase::Failed);
                ctx.event(
                    &*build,
                    EventType::Warning,
                    "Failed",
                    status.message.clone().unwrap_or_default(),
                )
                .await;
                delete_jobs(&jobs_api, &jobs, true).await?;
                Next::Requeue(Duration::from_secs(1))
            }
            BuildAction::Cancel => {
                delete_jobs(&jobs_api, &jobs, false).await?;
                for step in &steps {
                    let done = get(&old.conditions, step.condition_type())
                        .is_some_and(|c| c.status == TRUE || c.status == FALSE);
                    if !done {
                        step_condition(
                            &mut status,
                            *step,
                            FALSE,
                            "Canceled",
                            "the build was canceled".into(),
                        );
                    }
                }
                status.phase = Some(BuildPhase::Canceled);
                status.ended_on = Some(Time(now));
                status.message = Some("canceled".into());
                ctx.phases
                    .lock()
                    .expect("not poisoned")
                    .insert(key(&build), BuildPhase::Canceled);
                ctx.event(
                    &*build,
                    EventType::Normal,
                    "Canceled",
                    "its Jobs were deleted".into(),
                )
                .await;
                Next::Requeue(Duration::from_secs(1))
            }
            BuildAction::DeleteJobs => {
                delete_jobs(&jobs_api, &jobs, true).await?;
                Next::AwaitChange
            }
        };
        if !matches!(next, Next::Continue) {
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

/// Where a reconcile goes after one action.
enum Next {
    /// Decide again now (the action changed the build in memory only).
    Continue,
    Requeue(Duration),
    AwaitChange,
}

async fn fail_now(
    ctx: &Ctx,
    api: &Api<Build>,
    build: &Build,
    mut status: BuildStatus,
    message: &str,
) -> Result<Action, Error> {
    status.phase = Some(BuildPhase::Failed);
    status.ended_on = Some(Time(jiff::Timestamp::now()));
    status.message = Some(message.into());
    ctx.phases
        .lock()
        .expect("not poisoned")
        .insert(key(build), BuildPhase::Failed);
    ctx.event(build, EventType::Warning, "Failed", message.into())
        .await;
    apply_status(api, build, &status).await?;
    Ok(Action::await_change())
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

/// A step's report with only the artifacts under the build's own storage prefix: a report is
/// the pod's word, and a key elsewhere would hand the build another build's files.
fn own_artifacts_only(mut r: StepReport, ns: &str, build: &str) -> StepReport {
    let before = r.artifacts.len();
    r.artifacts
        .retain(|a| labels::in_build_prefix(ns, build, &a.key));
    if r.artifacts.len() != before {
        tracing::warn!(
            build,
            "a step reported artifacts outside its build's prefix; dropped"
        );
    }
    r
}

/// Running steps whose pod cannot start (bad image, missing Secret...), with the reason.
async fn stuck_steps(
    ctx: &Ctx,
    ns: &str,
    build: &str,
    jobs: &Jobs,
) -> Result<Vec<(BuildStep, String)>, Error> {
    let now = jiff::Timestamp::now();
    let mut stuck = Vec::new();
    let mut pods = Vec::new();
    for (step, j) in jobs {
        if j.state == JobState::Running {
            for pod in job_pods(ctx, &ctx.job_namespace(ns), &j.uid).await? {
                pods.push((*step, pod));
            }
        }
    }
    tracing::trace!(build, pods = pods.len(), "looking for stuck pods");
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
