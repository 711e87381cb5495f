//! What a Build needs next, from the Build and the state of its Jobs.
//!
//! A step's condition (`Solved`, `Installed`, `Packed`, `ImageBuilt`) records its progress:
//! absent before its Job exists, `Unknown` (reason `Running`) once the Job was created, `True`
//! or `False` once its result was collected. The Jobs themselves are the other half: a Job
//! that exists counts as started even when the operator stopped before writing the condition,
//! so a restart never creates a second Job for a step.

use std::collections::BTreeMap;
use std::time::Duration;

use conda_store_crds::{
    Artifact, ArtifactKind, Build, BuildPhase, BuildStatus, BuildStep, ConditionStatus, StepJob,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;

use super::conditions::{FALSE, TRUE, UNKNOWN, condition, get, set};
use crate::jobs::StepReport;
use crate::labels;

/// What the Job of a step is doing, as its status tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Running,
    Succeeded,
    /// The Job gave up (backoff limit reached, deadline, ...): the reason from its condition.
    Failed(String),
}

/// The steps a build runs for the artifacts asked for, in order. Solve and install always
/// run: the lockfile is the hand-off and the installed prefix is the environment itself.
pub fn steps_for(artifacts: &[ArtifactKind]) -> Vec<BuildStep> {
    BuildStep::for_artifacts(artifacts)
}

/// The recorded progress of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    NotStarted,
    Started,
    Succeeded,
    Failed,
}

/// The recorded progress of `step` in the build's conditions.
pub fn step_state(build: &Build, step: BuildStep) -> StepState {
    let conditions = build
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    match get(conditions, step.condition_type()) {
        None => StepState::NotStarted,
        Some(c) if c.status == TRUE => StepState::Succeeded,
        Some(c) if c.status == FALSE => StepState::Failed,
        Some(_) => StepState::Started,
    }
}

/// The build's phase (a build without status is queued).
pub fn phase(build: &Build) -> BuildPhase {
    build
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or(BuildPhase::Queued)
}

/// The next thing to do for a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildAction {
    /// Give it its numeric id (and the `Queued` phase).
    AssignId,
    /// Nothing to do until a Job or a free build slot changes something.
    Wait,
    /// It got a build slot: `Queued` → `Building`.
    Start,
    /// Create the Jobs of these steps (their inputs are ready).
    CreateJobs(Vec<BuildStep>),
    /// These steps' Jobs finished: read their reports and record the results.
    Collect(Vec<BuildStep>),
    /// These steps were started but their Jobs are not in the cache: make sure they are gone
    /// (a direct read, not the cache) and fail the step if so.
    CheckVanished(Vec<BuildStep>),
    /// Every step succeeded.
    Complete,
    /// A step failed; the message is its condition's.
    Fail { step: BuildStep, message: String },
    /// `spec.cancel` is set: delete its Jobs and end it `Canceled`.
    Cancel,
    /// It ended while Jobs still run (a parallel step after another failed): delete them.
    DeleteJobs,
    /// It ended and nothing is left to do.
    Idle,
}

/// Decides the next action for `build` given the Jobs the cache shows for it, the steps its
/// environment asks for and whether it may take a build slot now (see [`admitted`]).
pub fn next_action(
    build: &Build,
    jobs: &BTreeMap<BuildStep, JobState>,
    steps: &[BuildStep],
    may_start: bool,
) -> BuildAction {
    let status = build.status.as_ref();
    if status.and_then(|s| s.id).is_none() {
        return BuildAction::AssignId;
    }
    let phase = phase(build);
    if phase.is_terminal() {
        return if jobs.values().any(|j| *j == JobState::Running) {
            BuildAction::DeleteJobs
        } else {
            BuildAction::Idle
        };
    }
    if build.spec.cancel {
        return BuildAction::Cancel;
    }
    if phase == BuildPhase::Queued {
        return if may_start {
            BuildAction::Start
        } else {
            BuildAction::Wait
        };
    }

    // Building.
    let states: Vec<(BuildStep, StepState)> =
        steps.iter().map(|&s| (s, step_state(build, s))).collect();
    if let Some(&(step, _)) = states.iter().find(|(_, s)| *s == StepState::Failed) {
        let message = status
            .and_then(|s| get(&s.conditions, step.condition_type()))
            .map(|c| c.message.clone())
            .unwrap_or_default();
        return BuildAction::Fail { step, message };
    }
    let collect: Vec<BuildStep> = states
        .iter()
        .filter(|(step, state)| {
            *state != StepState::Succeeded
                && matches!(
                    jobs.get(step),
                    Some(JobState::Succeeded | JobState::Failed(_))
                )
        })
        .map(|(step, _)| *step)
        .collect();
    if !collect.is_empty() {
        return BuildAction::Collect(collect);
    }
    let vanished: Vec<BuildStep> = states
        .iter()
        .filter(|(step, state)| *state == StepState::Started && !jobs.contains_key(step))
        .map(|(step, _)| *step)
        .collect();
    if !vanished.is_empty() {
        return BuildAction::CheckVanished(vanished);
    }
    if states.iter().all(|(_, s)| *s == StepState::Succeeded) {
        return BuildAction::Complete;
    }
    // A step's Job is created as soon as the step it follows has one (or gets one now): its
    // pod starts while the earlier step runs, and waits for that step's completion marker.
    // Pod starts then overlap instead of adding up; the lockfile and the prefix are still
    // handed over through storage and the volume, one step after the other.
    let mut ready: Vec<BuildStep> = Vec::new();
    for (step, state) in &states {
        let follows_a_started_step = step.needs().is_none_or(|n| {
            ready.contains(&n)
                || states.iter().any(|(s, st)| {
                    *s == n && matches!(st, StepState::Started | StepState::Succeeded)
                })
                || jobs.contains_key(&n)
        });
        if *state == StepState::NotStarted && !jobs.contains_key(step) && follows_a_started_step {
            ready.push(*step);
        }
    }
    if ready.is_empty() {
        BuildAction::Wait
    } else {
        BuildAction::CreateJobs(ready)
    }
}

/// Container waiting reasons that do not clear by themselves: the image or the pod's
/// configuration (a missing Secret, say) is wrong. Without this the step would wait for the
/// Job's deadline.
const STUCK_REASONS: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// Reasons that are final at once (nothing can make them succeed on a retry).
const FINAL_REASONS: [&str; 2] = ["ErrImageNeverPull", "InvalidImageName"];

/// How long a pod may wait with a stuck reason before its step fails (pulls do recover from
/// short registry outages).
pub const STUCK_GRACE_SECONDS: i64 = 120;

/// Why a step's pod will not start, if it will not: from its container's waiting reason and
/// message and the pod's age.
pub fn stuck_pod(reason: &str, message: &str, age_seconds: i64) -> Option<String> {
    if !STUCK_REASONS.contains(&reason) {
        return None;
    }
    if age_seconds < STUCK_GRACE_SECONDS && !FINAL_REASONS.contains(&reason) {
        return None;
    }
    Some(if message.is_empty() {
        format!("its pod cannot start: {reason}")
    } else {
        format!("its pod cannot start: {reason}: {message}")
    })
}

/// Why a step's pod cannot be scheduled, if that will not change by itself: a volume claim it
/// mounts does not exist in the build's namespace (each namespace that builds needs the claims
/// the operator is configured with). Other reasons (no node has room yet) can clear, so those
/// steps wait for the Job's deadline.
pub fn unschedulable_pod(reason: &str, message: &str, age_seconds: i64) -> Option<String> {
    let missing_claim = message.contains("persistentvolumeclaim") && message.contains("not found");
    if reason != "Unschedulable" || !missing_claim || age_seconds < STUCK_GRACE_SECONDS {
        return None;
    }
    Some(format!("its pod cannot be scheduled: {message}"))
}

/// The build slots as the cache shows them: how many builds are building and which wait.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    pub building: usize,
    pub queued: Vec<Waiting>,
    pub max: usize,
}

impl Admission {
    /// Whether the build `key`, queued with `id`, may start (it counts as waiting even
    /// when the cache does not show its id yet).
    pub fn admits(&self, key: &str, id: Option<i64>) -> bool {
        let mut queued = self.queued.clone();
        if let Some(id) = id
            && !queued.iter().any(|w| w.key == key)
        {
            queued.push(Waiting {
                id,
                key: key.to_string(),
            });
        }
        admitted(key, self.building, &queued, self.max)
    }
}

/// A build waiting for a slot, as the admission decision sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Waiting {
    /// Builds are admitted in id order (ids are given in creation order).
    pub id: i64,
    pub key: String,
}

/// Whether the queued build `key` may start: at most `max` builds build at once, and the
/// free slots go to the queued builds with the lowest ids.
pub fn admitted(key: &str, building: usize, queued: &[Waiting], max: usize) -> bool {
    let free = max.saturating_sub(building);
    let mut queued: Vec<&Waiting> = queued.iter().collect();
    queued.sort();
    queued.iter().take(free).any(|w| w.key == key)
}

/// A Job of the build, as the cache shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundJob {
    pub name: String,
    pub uid: String,
    pub state: JobState,
}

/// The build's Jobs, by step.
pub type Jobs = BTreeMap<BuildStep, FoundJob>;

/// What the reconciler knows when it plans.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The Build as the cache showed it (its status is the one before this reconcile).
    pub build: &'a Build,
    /// The status as planned so far in this reconcile.
    pub status: &'a BuildStatus,
    pub jobs: &'a Jobs,
    /// The steps its environment's artifacts need.
    pub steps: &'a [BuildStep],
    /// The other builds, for whether it may take a build slot now.
    pub admission: &'a Admission,
    /// Where its Jobs run (for messages).
    pub job_namespace: &'a str,
    pub now: jiff::Timestamp,
}

/// The id the build gets.
#[derive(Debug, Clone, PartialEq)]
pub enum IdAnswer {
    /// The API already holds a status with an id (this process wrote it; the cache lags).
    Written(Box<BuildStatus>),
    /// A new id from the allocator.
    New(i64),
}

/// Why a started step is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    PodCannotStart,
    JobDeleted,
}

impl Loss {
    fn reason(self) -> &'static str {
        match self {
            Loss::PodCannotStart => "PodCannotStart",
            Loss::JobDeleted => "JobDeleted",
        }
    }
}

/// Which check of running steps was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Started steps missing from the cache, asked of the API.
    Vanished,
    /// A long-running build's pods and Jobs, looked at for ones that will not finish.
    Inspected,
}

/// What the reconciler learned carrying out the last plan's effects: the next plan folds it
/// into the status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub id: Option<IdAnswer>,
    /// Jobs created, in order.
    pub created: Vec<StepJob>,
    /// Reports of finished steps (`None`: the pod left none).
    pub reports: Vec<(BuildStep, Option<StepReport>)>,
    pub lost: Vec<(BuildStep, Loss, String)>,
    pub checked: Option<Check>,
    /// The build cannot go on (its Specification is gone or was modified, a Job name is
    /// taken by something else): fail it with this message.
    pub refused: Option<String>,
    /// Nothing more now: try again after this long (a Job deleted while it was created, an
    /// image step held while blobs are collected).
    pub retry_after: Option<Duration>,
}

/// Something the reconciler carries out for a plan; the ones that learn something answer
/// in the next [`Facts`].
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Find the build's id: the one the API holds, else a new one ([`Facts::id`]).
    TakeId,
    /// Create these steps' Jobs ([`Facts::created`], or `refused`/`retry_after`).
    CreateJobs(Vec<BuildStep>),
    /// Read these finished steps' reports ([`Facts::reports`]).
    ReadReports(Vec<BuildStep>),
    /// Ask the API (not the cache) whether these started steps' Jobs are gone
    /// ([`Facts::lost`], `checked: Vanished`).
    CheckVanished(Vec<BuildStep>),
    /// Look at running steps: `pods`, their pods for ones that cannot start; `jobs`, these
    /// steps' Jobs against the API ([`Facts::lost`], `checked: Inspected`).
    Inspect { pods: bool, jobs: Vec<BuildStep> },
    /// Delete the build's Jobs (only the running ones when `running_only`).
    DeleteJobs { running_only: bool },
    Event {
        type_: EventType,
        reason: &'static str,
        note: String,
    },
    /// A step ended: its duration for the metrics.
    StepEnded {
        step: BuildStep,
        succeeded: bool,
        seconds: f64,
    },
}

/// Where the reconcile goes after a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Carry out the effects, then plan again.
    Continue,
    Requeue(Duration),
    AwaitChange,
}

/// The new status, what to do, and where to go next.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub status: BuildStatus,
    pub effects: Vec<Effect>,
    pub next: Next,
}

impl Plan {
    fn event(&mut self, type_: EventType, reason: &'static str, note: String) {
        self.effects.push(Effect::Event {
            type_,
            reason,
            note,
        });
    }

    fn go(mut self, next: Next) -> Plan {
        self.next = next;
        self
    }
}

/// Plans the next move for a build: folds what the last effects learned into its status,
/// then decides ([`next_action`]) and says what the reconciler must carry out.
pub fn plan(input: Input<'_>, facts: Facts) -> Plan {
    let old = input.build.status.clone().unwrap_or_default().conditions;
    let generation = input.build.metadata.generation;
    let now = input.now;
    let ns = input
        .build
        .metadata
        .namespace
        .as_deref()
        .unwrap_or_default();
    let name = input.build.metadata.name.as_deref().unwrap_or_default();
    let mut p = Plan {
        status: input.status.clone(),
        effects: Vec::new(),
        next: Next::Continue,
    };
    let step_condition =
        |status: &mut BuildStatus, step: BuildStep, s: ConditionStatus, reason: &str, m: String| {
            let c = condition(&old, step.condition_type(), s, reason, m, generation, now);
            set(&mut status.conditions, c);
        };

    // What the last effects learned.
    match facts.id {
        Some(IdAnswer::Written(written)) => {
            p.status = BuildStatus {
                observed_generation: generation,
                ..*written
            };
        }
        Some(IdAnswer::New(id)) => {
            p.status.id = Some(id);
            p.status.phase = Some(BuildPhase::Queued);
            p.status.scheduled_on = Some(Time(now));
        }
        None => {}
    }
    for job in facts.created {
        let (step, job_name) = (job.step, job.name.clone());
        p.status.jobs.retain(|j| j.step != step);
        p.status.jobs.push(job);
        step_condition(
            &mut p.status,
            step,
            UNKNOWN,
            "Running",
            format!("Job {job_name}"),
        );
        p.event(
            EventType::Normal,
            "StepStarted",
            format!("{} in Job {job_name}", step.as_str()),
        );
    }
    for (step, report) in facts.reports {
        collect(&mut p, input, step, report, ns, name, &step_condition);
    }
    for (step, loss, why) in &facts.lost {
        step_condition(&mut p.status, *step, FALSE, loss.reason(), why.clone());
    }
    if let Some(message) = facts.refused {
        end(&mut p, BuildPhase::Failed, now);
        p.status.message = Some(message.clone());
        p.event(EventType::Warning, "Failed", message);
        return p.go(Next::AwaitChange);
    }
    if let Some(after) = facts.retry_after {
        return p.go(Next::Requeue(after));
    }
    match facts.checked {
        Some(Check::Vanished) => return p.go(Next::Requeue(Duration::from_secs(2))),
        Some(Check::Inspected) if facts.lost.is_empty() => {
            return p.go(Next::Requeue(Duration::from_secs(30)));
        }
        _ => {}
    }

    // What comes next.
    let working = Build {
        status: Some(p.status.clone()),
        ..input.build.clone()
    };
    let states: BTreeMap<BuildStep, JobState> = input
        .jobs
        .iter()
        .map(|(s, j)| (*s, j.state.clone()))
        .collect();
    let may_start = phase(&working) == BuildPhase::Queued
        && input.admission.admits(&format!("{ns}/{name}"), p.status.id);
    match next_action(&working, &states, input.steps, may_start) {
        BuildAction::Idle => p.go(Next::AwaitChange),
        BuildAction::Wait if phase(&working) == BuildPhase::Queued => {
            p.go(Next::Requeue(Duration::from_secs(3)))
        }
        BuildAction::Wait => {
            // Pods are only looked at once the build has run for a while: a pod cannot be
            // stuck before, and a burst of new builds costs no lists. A missed watch event
            // must not leave the build waiting for a Job that is gone: the running Jobs are
            // checked against the API as well.
            let running_for = p
                .status
                .started_on
                .as_ref()
                .map_or(0, |t| now.as_second() - t.0.as_second());
            let running: Vec<BuildStep> = input
                .jobs
                .iter()
                .filter(|(_, j)| j.state == JobState::Running)
                .map(|(step, _)| *step)
                .collect();
            if running_for < 10 {
                return p.go(Next::Requeue(Duration::from_secs(30)));
            }
            p.effects.push(Effect::Inspect {
                pods: running_for >= 60,
                jobs: running,
            });
            p
        }
        BuildAction::AssignId => {
            p.effects.push(Effect::TakeId);
            p
        }
        BuildAction::Start => {
            p.status.phase = Some(BuildPhase::Building);
            p.status.started_on = Some(Time(now));
            p
        }
        BuildAction::CreateJobs(steps) => {
            p.effects.push(Effect::CreateJobs(steps));
            p
        }
        BuildAction::Collect(steps) => {
            p.effects.push(Effect::ReadReports(steps));
            p
        }
        BuildAction::CheckVanished(steps) => {
            p.effects.push(Effect::CheckVanished(steps));
            p
        }
        BuildAction::Complete => {
            end(&mut p, BuildPhase::Completed, now);
            p.status.size = Some(p.status.artifacts.iter().filter_map(|a| a.size).sum());
            let id = p.status.id.unwrap_or_default();
            p.event(
                EventType::Normal,
                "Completed",
                format!("build {id} completed"),
            );
            p.go(Next::Requeue(Duration::from_secs(1)))
        }
        BuildAction::Fail { step, message } => {
            end(&mut p, BuildPhase::Failed, now);
            let message = format!("{} failed: {message}", step.as_str());
            p.status.message = Some(message.clone());
            p.event(EventType::Warning, "Failed", message);
            p.effects.push(Effect::DeleteJobs { running_only: true });
            p.go(Next::Requeue(Duration::from_secs(1)))
        }
        BuildAction::Cancel => {
            p.effects.push(Effect::DeleteJobs {
                running_only: false,
            });
            for step in input.steps {
                let done = get(&old, step.condition_type())
                    .is_some_and(|c| c.status == TRUE || c.status == FALSE);
                if !done {
                    step_condition(
                        &mut p.status,
                        *step,
                        FALSE,
                        "Canceled",
                        "the build was canceled".into(),
                    );
                }
            }
            end(&mut p, BuildPhase::Canceled, now);
            p.status.message = Some("canceled".into());
            p.event(
                EventType::Normal,
                "Canceled",
                "its Jobs were deleted".into(),
            );
            p.go(Next::Requeue(Duration::from_secs(1)))
        }
        BuildAction::DeleteJobs => {
            p.effects.push(Effect::DeleteJobs { running_only: true });
            p.go(Next::AwaitChange)
        }
    }
}

fn end(p: &mut Plan, phase: BuildPhase, now: jiff::Timestamp) {
    p.status.phase = Some(phase);
    p.status.ended_on = Some(Time(now));
}

/// Records a finished step's result from its Job's state and its report.
fn collect(
    p: &mut Plan,
    input: Input<'_>,
    step: BuildStep,
    report: Option<StepReport>,
    ns: &str,
    build: &str,
    step_condition: &impl Fn(&mut BuildStatus, BuildStep, ConditionStatus, &str, String),
) {
    let Some(job) = input.jobs.get(&step) else {
        return;
    };
    let (job_name, job_ns) = (&job.name, input.job_namespace);
    let report = report.map(|r| own_artifacts_only(r, ns, build));
    let outcome = match (&job.state, &report) {
        (JobState::Succeeded, Some(r)) if r.ok => Ok(r),
        (_, Some(r)) if !r.ok => Err(r
            .message
            .clone()
            .unwrap_or_else(|| "the step failed".into())),
        (JobState::Succeeded, _) => Err(format!("Job {job_name} succeeded without a report")),
        (JobState::Failed(why), _) => Err(format!(
            "Job {job_name} failed ({why}); see `kubectl logs -n {job_ns} job/{job_name}`"
        )),
        (JobState::Running, _) => return,
    };
    let seconds = report
        .as_ref()
        .map_or(0.0, |r| r.duration_ms as f64 / 1000.0);
    // The step's log is stored whether it succeeded or not; a failed step's is the one a
    // person most needs.
    if report.is_some() {
        let log = Artifact {
            kind: ArtifactKind::Logs,
            key: format!(
                "{}/logs/{}.log",
                labels::build_key(ns, build),
                step.as_str()
            ),
            size: None,
            digest: None,
        };
        if !p.status.artifacts.iter().any(|o| o.key == log.key) {
            p.status.artifacts.push(log);
        }
    }
    let succeeded = outcome.is_ok();
    match outcome {
        Ok(r) => {
            for a in &r.artifacts {
                if !p
                    .status
                    .artifacts
                    .iter()
                    .any(|o| o.kind == a.kind && o.key == a.key)
                {
                    p.status.artifacts.push(a.clone());
                }
            }
            if step == BuildStep::Solve {
                p.status.package_count = r
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
            step_condition(&mut p.status, step, TRUE, "Succeeded", summary);
        }
        Err(message) => step_condition(&mut p.status, step, FALSE, "Failed", message),
    }
    p.effects.push(Effect::StepEnded {
        step,
        succeeded,
        seconds,
    });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::conditions::{UNKNOWN, condition, set};
    use conda_store_crds::{BuildSpec, BuildStatus};

    const ALL: &[BuildStep] = BuildStep::ALL;

    fn build(id: Option<i64>, phase: Option<BuildPhase>) -> Build {
        let mut b = Build::new(
            "env-12345678-1",
            BuildSpec {
                environment: "env".into(),
                specification: "spec-x".into(),
                cancel: false,
            },
        );
        b.status = Some(BuildStatus {
            id,
            phase,
            ..Default::default()
        });
        b
    }

    fn with(
        mut b: Build,
        step: BuildStep,
        status: conda_store_crds::ConditionStatus,
        message: &str,
    ) -> Build {
        let t = jiff::Timestamp::from_second(1).unwrap();
        let s = b.status.get_or_insert_default();
        set(
            &mut s.conditions,
            condition(&[], step.condition_type(), status, "r", message, None, t),
        );
        b
    }

    fn building() -> Build {
        build(Some(7), Some(BuildPhase::Building))
    }

    fn jobs(list: &[(BuildStep, JobState)]) -> BTreeMap<BuildStep, JobState> {
        list.iter().cloned().collect()
    }

    #[test]
    fn steps_follow_the_artifacts() {
        assert_eq!(
            steps_for(&ArtifactKind::DEFAULTS),
            vec![BuildStep::Solve, BuildStep::Install, BuildStep::Pack]
        );
        assert_eq!(
            steps_for(&[ArtifactKind::Lockfile]),
            vec![BuildStep::Solve, BuildStep::Install]
        );
        assert_eq!(
            steps_for(&[ArtifactKind::Image, ArtifactKind::Archive]),
            ALL.to_vec()
        );
    }

    #[test]
    fn a_new_build_gets_an_id_first() {
        let b = Build::new("b", BuildSpec::default());
        assert_eq!(
            next_action(&b, &jobs(&[]), ALL, true),
            BuildAction::AssignId
        );
        assert_eq!(
            next_action(&build(None, None), &jobs(&[]), ALL, true),
            BuildAction::AssignId
        );
    }

    #[test]
    fn queued_waits_for_a_slot() {
        let b = build(Some(1), Some(BuildPhase::Queued));
        assert_eq!(next_action(&b, &jobs(&[]), ALL, false), BuildAction::Wait);
        assert_eq!(next_action(&b, &jobs(&[]), ALL, true), BuildAction::Start);
    }

    #[test]
    fn every_steps_job_starts_with_the_one_it_follows() {
        // All at once: each later pod starts while the earlier step runs, then waits for it.
        let b = building();
        assert_eq!(
            next_action(&b, &jobs(&[]), ALL, false),
            BuildAction::CreateJobs(ALL.to_vec())
        );
        // A solve Job made before (a restart): the rest follow it.
        let b = with(b, BuildStep::Solve, UNKNOWN, "");
        let running = jobs(&[(BuildStep::Solve, JobState::Running)]);
        assert_eq!(
            next_action(&b, &running, ALL, false),
            BuildAction::CreateJobs(vec![BuildStep::Install, BuildStep::Pack, BuildStep::Image])
        );
        let b = with(
            with(
                with(b, BuildStep::Install, UNKNOWN, ""),
                BuildStep::Pack,
                UNKNOWN,
                "",
            ),
            BuildStep::Image,
            UNKNOWN,
            "",
        );
        let all_running = jobs(
            &ALL.iter()
                .map(|s| (*s, JobState::Running))
                .collect::<Vec<_>>(),
        );
        assert_eq!(next_action(&b, &all_running, ALL, false), BuildAction::Wait);
        let mut done = all_running.clone();
        done.insert(BuildStep::Solve, JobState::Succeeded);
        assert_eq!(
            next_action(&b, &done, ALL, false),
            BuildAction::Collect(vec![BuildStep::Solve])
        );
        let b = with(b, BuildStep::Solve, TRUE, "");
        assert_eq!(next_action(&b, &done, ALL, false), BuildAction::Wait);
        let b = with(b, BuildStep::Install, TRUE, "");
        let done = jobs(&[
            (BuildStep::Solve, JobState::Succeeded),
            (BuildStep::Install, JobState::Succeeded),
        ]);
        let b = with(
            with(b, BuildStep::Pack, TRUE, ""),
            BuildStep::Image,
            TRUE,
            "",
        );
        assert_eq!(next_action(&b, &done, ALL, false), BuildAction::Complete);
    }

    #[test]
    fn a_job_created_before_a_restart_is_not_created_again() {
        // The Job exists but the operator stopped before recording the step as started.
        let b = building();
        let running = jobs(&[(BuildStep::Solve, JobState::Running)]);
        assert_eq!(
            next_action(&b, &running, ALL, false),
            BuildAction::CreateJobs(vec![BuildStep::Install, BuildStep::Pack, BuildStep::Image])
        );
        let done = jobs(&[(
            BuildStep::Solve,
            JobState::Failed("BackoffLimitExceeded".into()),
        )]);
        assert_eq!(
            next_action(&b, &done, ALL, false),
            BuildAction::Collect(vec![BuildStep::Solve])
        );
    }

    #[test]
    fn a_failed_step_fails_the_build() {
        let b = with(building(), BuildStep::Solve, FALSE, "nothing provides foo");
        assert_eq!(
            next_action(&b, &jobs(&[]), ALL, false),
            BuildAction::Fail {
                step: BuildStep::Solve,
                message: "nothing provides foo".into()
            }
        );
    }

    #[test]
    fn a_started_step_without_its_job_is_checked() {
        let b = with(building(), BuildStep::Solve, UNKNOWN, "");
        assert_eq!(
            next_action(&b, &jobs(&[]), ALL, false),
            BuildAction::CheckVanished(vec![BuildStep::Solve])
        );
    }

    #[test]
    fn cancel_wins_over_everything_but_the_end() {
        let mut b = with(building(), BuildStep::Solve, UNKNOWN, "");
        b.spec.cancel = true;
        let running = jobs(&[(BuildStep::Solve, JobState::Running)]);
        assert_eq!(next_action(&b, &running, ALL, false), BuildAction::Cancel);
        let mut q = build(Some(3), Some(BuildPhase::Queued));
        q.spec.cancel = true;
        assert_eq!(next_action(&q, &jobs(&[]), ALL, false), BuildAction::Cancel);
        let mut done = build(Some(3), Some(BuildPhase::Completed));
        done.spec.cancel = true;
        assert_eq!(
            next_action(&done, &jobs(&[]), ALL, false),
            BuildAction::Idle
        );
    }

    #[test]
    fn an_ended_build_stops_its_remaining_jobs() {
        let b = build(Some(3), Some(BuildPhase::Failed));
        let running = jobs(&[(BuildStep::Pack, JobState::Running)]);
        assert_eq!(
            next_action(&b, &running, ALL, false),
            BuildAction::DeleteJobs
        );
        let done = jobs(&[(BuildStep::Pack, JobState::Succeeded)]);
        assert_eq!(next_action(&b, &done, ALL, false), BuildAction::Idle);
    }

    #[test]
    fn pods_whose_claim_is_missing_fail_their_step_after_the_grace() {
        let msg =
            r#"0/1 nodes are available: 1 persistentvolumeclaim "conda-store-envs" not found."#;
        assert_eq!(unschedulable_pod("Unschedulable", msg, 30), None, "grace");
        assert!(
            unschedulable_pod("Unschedulable", msg, 121)
                .unwrap()
                .contains(r#"persistentvolumeclaim "conda-store-envs" not found"#)
        );
        let busy = "0/3 nodes are available: 3 Insufficient cpu.";
        assert_eq!(unschedulable_pod("Unschedulable", busy, 10_000), None);
    }

    #[test]
    fn pods_that_cannot_start_fail_their_step() {
        assert_eq!(stuck_pod("ContainerCreating", "", 1_000), None);
        assert_eq!(stuck_pod("ImagePullBackOff", "back-off", 30), None, "grace");
        assert_eq!(
            stuck_pod("ImagePullBackOff", "back-off", 121).as_deref(),
            Some("its pod cannot start: ImagePullBackOff: back-off")
        );
        assert!(stuck_pod("ErrImageNeverPull", "not present", 1).is_some());
        assert!(
            stuck_pod("CreateContainerConfigError", "secret \"s3\" not found", 200)
                .unwrap()
                .contains("secret")
        );
    }

    #[test]
    fn admission_in_id_order_within_the_limit() {
        let q = |id: i64| Waiting {
            id,
            key: format!("ns/b{id}"),
        };
        let queued = [q(5), q(3), q(9)];
        assert!(admitted("ns/b3", 0, &queued, 2));
        assert!(admitted("ns/b5", 0, &queued, 2));
        assert!(!admitted("ns/b9", 0, &queued, 2));
        assert!(admitted("ns/b3", 1, &queued, 2));
        assert!(!admitted("ns/b5", 1, &queued, 2));
        assert!(!admitted("ns/b3", 2, &queued, 2));
        assert!(!admitted("ns/b3", 5, &queued, 2));
    }

    fn t(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(second).unwrap()
    }

    fn found(state: JobState) -> FoundJob {
        FoundJob {
            name: "b-solve".into(),
            uid: "u".into(),
            state,
        }
    }

    /// Plans for `b` (namespace `team`) with `jobs`, no other build, one slot.
    fn plan_for(b: &Build, jobs: &Jobs, facts: Facts, now: i64) -> Plan {
        let mut b = b.clone();
        b.metadata.namespace = Some("team".into());
        let admission = Admission {
            max: 1,
            ..Admission::default()
        };
        let status = b.status.clone().unwrap_or_default();
        plan(
            Input {
                build: &b,
                status: &status,
                jobs,
                steps: &[BuildStep::Solve, BuildStep::Install],
                admission: &admission,
                job_namespace: "team",
                now: t(now),
            },
            facts,
        )
    }

    #[test]
    fn a_new_build_takes_an_id_then_starts_then_creates_its_solve_job() {
        let b = Build::new("b", BuildSpec::default());
        let p = plan_for(&b, &Jobs::new(), Facts::default(), 100);
        assert_eq!((p.effects, p.next), (vec![Effect::TakeId], Next::Continue));
        let p = plan_for(
            &b,
            &Jobs::new(),
            Facts {
                id: Some(IdAnswer::New(4)),
                ..Facts::default()
            },
            100,
        );
        // The id it was just given admits it (the cache does not show it yet).
        assert_eq!(p.status.id, Some(4));
        assert_eq!(p.status.phase, Some(BuildPhase::Building));
        assert_eq!(p.status.scheduled_on, Some(Time(t(100))));
        assert!(p.effects.is_empty());
        let mut b = b;
        b.status = Some(p.status);
        let p = plan_for(&b, &Jobs::new(), Facts::default(), 100);
        assert_eq!(
            p.effects,
            vec![Effect::CreateJobs(vec![
                BuildStep::Solve,
                BuildStep::Install
            ])]
        );
        let created = |step: BuildStep| StepJob {
            step,
            namespace: "team".into(),
            name: format!("b-{}", step.as_str()),
            uid: "u".into(),
        };
        let p = plan_for(
            &b,
            &Jobs::from([
                (BuildStep::Solve, found(JobState::Running)),
                (BuildStep::Install, found(JobState::Running)),
            ]),
            Facts {
                created: vec![created(BuildStep::Solve), created(BuildStep::Install)],
                ..Facts::default()
            },
            100,
        );
        assert_eq!(p.status.jobs.len(), 2);
        let solved = get(&p.status.conditions, BuildStep::Solve.condition_type()).unwrap();
        assert_eq!(
            (solved.status.as_str(), solved.message.as_str()),
            ("Unknown", "Job b-solve")
        );
        assert!(matches!(
            &p.effects[0],
            Effect::Event {
                reason: "StepStarted",
                ..
            }
        ));
        // Just started: no inspection yet.
        assert_eq!(p.next, Next::Requeue(Duration::from_secs(30)));
    }

    #[test]
    fn an_id_the_api_already_holds_is_kept() {
        let b = Build::new("b", BuildSpec::default());
        let written = BuildStatus {
            id: Some(9),
            phase: Some(BuildPhase::Queued),
            ..Default::default()
        };
        let p = plan_for(
            &b,
            &Jobs::new(),
            Facts {
                id: Some(IdAnswer::Written(Box::new(written))),
                ..Facts::default()
            },
            100,
        );
        assert_eq!(p.status.id, Some(9));
    }

    #[test]
    fn a_report_is_recorded_with_only_the_builds_own_artifacts() {
        let mut b = with(building(), BuildStep::Solve, UNKNOWN, "");
        b.metadata.name = Some("b".into());
        let jobs = Jobs::from([(BuildStep::Solve, found(JobState::Succeeded))]);
        let p = plan_for(&b, &jobs, Facts::default(), 100);
        assert_eq!(p.effects, vec![Effect::ReadReports(vec![BuildStep::Solve])]);
        let artifact = |key: &str| Artifact {
            kind: ArtifactKind::Lockfile,
            key: key.into(),
            size: Some(10),
            digest: None,
        };
        let report = StepReport {
            step: "solve".into(),
            ok: true,
            message: None,
            artifacts: vec![
                artifact("builds/team/b/conda-lock.yml"),
                artifact("builds/other/theirs/conda-lock.yml"),
            ],
            details: serde_json::json!({"packages": {"linux-64": 12}}),
            duration_ms: 1500,
        };
        let p = plan_for(
            &b,
            &jobs,
            Facts {
                reports: vec![(BuildStep::Solve, Some(report))],
                ..Facts::default()
            },
            100,
        );
        let keys: Vec<&str> = p.status.artifacts.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "builds/team/b/logs/solve.log",
                "builds/team/b/conda-lock.yml"
            ]
        );
        assert_eq!(p.status.package_count, Some(12));
        let solved = get(&p.status.conditions, BuildStep::Solve.condition_type()).unwrap();
        assert_eq!(
            (solved.status.as_str(), solved.message.as_str()),
            ("True", "done in 1.5 s")
        );
        assert!(p.effects.contains(&Effect::StepEnded {
            step: BuildStep::Solve,
            succeeded: true,
            seconds: 1.5
        }));
        // The install Job is next, in the same reconcile.
        assert!(
            p.effects
                .contains(&Effect::CreateJobs(vec![BuildStep::Install]))
        );
    }

    #[test]
    fn a_failed_job_without_a_report_fails_the_step_and_then_the_build() {
        let b = with(building(), BuildStep::Solve, UNKNOWN, "");
        let jobs = Jobs::from([(
            BuildStep::Solve,
            found(JobState::Failed("DeadlineExceeded".into())),
        )]);
        let p = plan_for(
            &b,
            &jobs,
            Facts {
                reports: vec![(BuildStep::Solve, None)],
                ..Facts::default()
            },
            100,
        );
        assert_eq!(p.status.phase, Some(BuildPhase::Failed));
        assert_eq!(
            p.status.message.as_deref(),
            Some(
                "solve failed: Job b-solve failed (DeadlineExceeded); see `kubectl logs -n team job/b-solve`"
            )
        );
        assert!(
            p.effects
                .contains(&Effect::DeleteJobs { running_only: true })
        );
        assert_eq!(p.status.ended_on, Some(Time(t(100))));
    }

    #[test]
    fn a_refused_build_fails_at_once_and_waits() {
        let p = plan_for(
            &building(),
            &Jobs::new(),
            Facts {
                refused: Some("the Specification spec-x is gone".into()),
                ..Facts::default()
            },
            100,
        );
        assert_eq!(p.status.phase, Some(BuildPhase::Failed));
        assert_eq!(
            p.status.message.as_deref(),
            Some("the Specification spec-x is gone")
        );
        assert_eq!(p.next, Next::AwaitChange);
    }

    #[test]
    fn a_long_running_step_is_inspected_and_a_lost_one_fails() {
        let mut b = with(
            with(building(), BuildStep::Solve, UNKNOWN, ""),
            BuildStep::Install,
            UNKNOWN,
            "",
        );
        b.status.as_mut().unwrap().started_on = Some(Time(t(0)));
        let jobs = Jobs::from([
            (BuildStep::Solve, found(JobState::Running)),
            (BuildStep::Install, found(JobState::Running)),
        ]);
        let p = plan_for(&b, &jobs, Facts::default(), 5);
        assert_eq!(
            (p.effects.len(), p.next),
            (0, Next::Requeue(Duration::from_secs(30)))
        );
        let p = plan_for(&b, &jobs, Facts::default(), 30);
        assert_eq!(
            p.effects,
            vec![Effect::Inspect {
                pods: false,
                jobs: vec![BuildStep::Solve, BuildStep::Install]
            }]
        );
        let p = plan_for(&b, &jobs, Facts::default(), 90);
        assert_eq!(
            p.effects,
            vec![Effect::Inspect {
                pods: true,
                jobs: vec![BuildStep::Solve, BuildStep::Install]
            }]
        );
        let nothing = Facts {
            checked: Some(Check::Inspected),
            ..Facts::default()
        };
        assert_eq!(
            plan_for(&b, &jobs, nothing, 90).next,
            Next::Requeue(Duration::from_secs(30))
        );
        let lost = Facts {
            checked: Some(Check::Inspected),
            lost: vec![(
                BuildStep::Solve,
                Loss::PodCannotStart,
                "pod p: its pod cannot start: ErrImageNeverPull".into(),
            )],
            ..Facts::default()
        };
        let p = plan_for(&b, &jobs, lost, 90);
        assert_eq!(p.status.phase, Some(BuildPhase::Failed));
        let solved = get(&p.status.conditions, BuildStep::Solve.condition_type()).unwrap();
        assert_eq!(solved.reason, "PodCannotStart");
    }

    #[test]
    fn a_held_image_step_retries_later() {
        let p = plan_for(
            &building(),
            &Jobs::new(),
            Facts {
                retry_after: Some(Duration::from_secs(5)),
                ..Facts::default()
            },
            100,
        );
        assert_eq!(
            (p.effects.len(), p.next),
            (0, Next::Requeue(Duration::from_secs(5)))
        );
    }

    #[test]
    fn cancel_marks_the_unfinished_steps_and_deletes_every_job() {
        let mut b = with(
            with(building(), BuildStep::Solve, TRUE, ""),
            BuildStep::Install,
            UNKNOWN,
            "",
        );
        b.spec.cancel = true;
        let p = plan_for(&b, &Jobs::new(), Facts::default(), 100);
        assert_eq!(p.status.phase, Some(BuildPhase::Canceled));
        assert!(p.effects.contains(&Effect::DeleteJobs {
            running_only: false
        }));
        let c = |step: BuildStep| {
            get(&p.status.conditions, step.condition_type())
                .unwrap()
                .reason
                .clone()
        };
        assert_eq!(
            (c(BuildStep::Solve).as_str(), c(BuildStep::Install).as_str()),
            ("r", "Canceled")
        );
    }
}
