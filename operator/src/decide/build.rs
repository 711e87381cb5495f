//! What a Build needs next, from the Build and the state of its Jobs.
//!
//! A step's condition (`Solved`, `Installed`, `Packed`, `ImageBuilt`) records its progress:
//! absent before its Job exists, `Unknown` (reason `Running`) once the Job was created, `True`
//! or `False` once its result was collected. The Jobs themselves are the other half: a Job
//! that exists counts as started even when the operator stopped before writing the condition,
//! so a restart never creates a second Job for a step.

use std::collections::BTreeMap;

use conda_store_crds::{ArtifactKind, Build, BuildPhase, BuildStep};

use super::conditions::{FALSE, TRUE, get};

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
    let ready: Vec<BuildStep> = states
        .iter()
        .filter(|(step, state)| {
            *state == StepState::NotStarted
                && !jobs.contains_key(step)
                && step.needs().is_none_or(|n| {
                    states
                        .iter()
                        .any(|(s, st)| *s == n && *st == StepState::Succeeded)
                })
        })
        .map(|(step, _)| *step)
        .collect();
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
    fn solve_first_then_install_then_pack_and_image_together() {
        let b = building();
        assert_eq!(
            next_action(&b, &jobs(&[]), ALL, false),
            BuildAction::CreateJobs(vec![BuildStep::Solve])
        );
        let b = with(b, BuildStep::Solve, UNKNOWN, "");
        let running = jobs(&[(BuildStep::Solve, JobState::Running)]);
        assert_eq!(next_action(&b, &running, ALL, false), BuildAction::Wait);
        let done = jobs(&[(BuildStep::Solve, JobState::Succeeded)]);
        assert_eq!(
            next_action(&b, &done, ALL, false),
            BuildAction::Collect(vec![BuildStep::Solve])
        );
        let b = with(b, BuildStep::Solve, TRUE, "");
        assert_eq!(
            next_action(&b, &done, ALL, false),
            BuildAction::CreateJobs(vec![BuildStep::Install])
        );
        let b = with(b, BuildStep::Install, TRUE, "");
        let done = jobs(&[
            (BuildStep::Solve, JobState::Succeeded),
            (BuildStep::Install, JobState::Succeeded),
        ]);
        assert_eq!(
            next_action(&b, &done, ALL, false),
            BuildAction::CreateJobs(vec![BuildStep::Pack, BuildStep::Image])
        );
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
        assert_eq!(next_action(&b, &running, ALL, false), BuildAction::Wait);
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
}
