//! What an Environment needs: which Build to create, which to keep, and its status.
//!
//! Builds are named `<environment>-<first 8 hex of the spec hash>-<attempt>`: the same
//! decision taken twice (a restart, a stale cache) names the same Build, so the second create
//! fails with AlreadyExists instead of making a duplicate.

use conda_store_crds::{Build, BuildPhase, Environment, EnvironmentPhase, EnvironmentStatus};

use super::conditions::{FALSE, TRUE, condition, set};
use conda_store_crds::ConditionType as C;

/// What the environment reconciler knows of one of its Builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    pub name: String,
    /// The Specification's object name.
    pub specification: String,
    pub id: Option<i64>,
    pub phase: BuildPhase,
    pub message: Option<String>,
}

/// The normalised specification the Environment's spec gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The Specification object name.
    pub name: String,
    pub sha256: String,
}

/// What the decision looks at.
pub struct EnvInputs<'a> {
    pub env: &'a Environment,
    /// The specification, or every problem with the spec as one message.
    pub desired: Result<Desired, String>,
    /// The Environment's Builds (any order).
    pub builds: &'a [BuildInfo],
    /// Builds to keep (the namespace's retention); `None` keeps all.
    pub keep_builds: Option<u32>,
    pub now: jiff::Timestamp,
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvPlan {
    /// The name of a Build to create for the desired specification.
    pub create_build: Option<String>,
    /// Old builds beyond the retention to delete.
    pub delete_builds: Vec<String>,
    /// The status to write.
    pub status: EnvironmentStatus,
    /// The Build whose prefix the environment's current link should name.
    pub current: Option<String>,
}

/// The Build name for the `attempt`-th build of `specification` in `environment`.
pub fn build_name(environment: &str, specification: &str, attempt: u32) -> String {
    Build::name_for(environment, specification, attempt)
}

fn attempt_of(name: &str) -> u32 {
    Build::attempt_of(name)
}

/// Newest last: by id, builds without one yet (just created) after all others.
fn order(b: &BuildInfo) -> (i64, u32, String) {
    (
        b.id.unwrap_or(i64::MAX),
        attempt_of(&b.name),
        b.name.clone(),
    )
}

/// Decides the Environment's next step and status.
pub fn plan(i: &EnvInputs) -> EnvPlan {
    let env = i.env;
    let generation = env.metadata.generation;
    let old = env.status.clone().unwrap_or_default();
    let mut status = EnvironmentStatus {
        observed_generation: generation,
        conditions: old.conditions.clone(),
        ..old.clone()
    };
    let cond = |status: &mut EnvironmentStatus,
                t: C,
                s: conda_store_crds::ConditionStatus,
                reason: &str,
                m: String| {
        let c = condition(&old.conditions, t, s, reason, m, generation, i.now);
        set(&mut status.conditions, c);
    };
    let mut builds: Vec<&BuildInfo> = i.builds.iter().collect();
    builds.sort_by_key(|b| order(b));
    let completed = |b: &&BuildInfo| b.phase == BuildPhase::Completed;
    let by_id = |id: i64| builds.iter().copied().find(|b| b.id == Some(id));

    // The current build: pinned, else the newest completed build of the desired spec, else
    // the one current before (a failed new spec leaves the working environment in place).
    let previous = old.current_build.and_then(by_id).filter(completed);
    let mut create_build = None;
    let mut current = previous;
    let pinned = env.spec.pinned_build;

    match &i.desired {
        Err(message) => {
            cond(
                &mut status,
                C::Ready,
                FALSE,
                "InvalidSpecification",
                message.clone(),
            );
            cond(
                &mut status,
                C::Building,
                FALSE,
                "InvalidSpecification",
                String::new(),
            );
            cond(
                &mut status,
                C::Failed,
                TRUE,
                "InvalidSpecification",
                message.clone(),
            );
            status.phase = Some(EnvironmentPhase::Invalid);
        }
        Ok(desired) => {
            let of_spec: Vec<&BuildInfo> = builds
                .iter()
                .copied()
                .filter(|b| b.specification == desired.name)
                .collect();
            let changed = old.specification.as_deref() != Some(desired.name.as_str());
            let live = of_spec
                .iter()
                .any(|b| b.phase == BuildPhase::Completed || !b.phase.is_terminal());
            if of_spec.is_empty() || (changed && !live) {
                let attempt = of_spec
                    .iter()
                    .map(|b| attempt_of(&b.name))
                    .max()
                    .unwrap_or(0)
                    + 1;
                create_build = Some(build_name(
                    env.metadata.name.as_deref().unwrap_or_default(),
                    &desired.name,
                    attempt,
                ));
            }
            status.specification = Some(desired.name.clone());
            status.specification_hash = Some(desired.sha256.clone());
            let newest_completed = of_spec.iter().copied().rfind(completed);
            if newest_completed.is_some() {
                current = newest_completed;
            }
            // The build that says how the desired spec is doing: the newest one (unless a
            // new one is about to be created).
            let latest = if create_build.is_some() {
                None
            } else {
                of_spec
                    .iter()
                    .copied()
                    .rfind(|b| !b.phase.is_terminal())
                    .or(newest_completed)
                    .or(of_spec.last().copied())
            };
            status.latest_build = latest.and_then(|b| b.id).or(old.latest_build);
            match latest {
                None => {
                    cond(
                        &mut status,
                        C::Ready,
                        FALSE,
                        "Building",
                        "a build was created".into(),
                    );
                    cond(&mut status, C::Building, TRUE, "Queued", String::new());
                    cond(&mut status, C::Failed, FALSE, "Building", String::new());
                    status.phase = Some(EnvironmentPhase::Building);
                }
                Some(b) if !b.phase.is_terminal() => {
                    let m = format!("build {} is {:?}", b.id.unwrap_or_default(), b.phase);
                    cond(&mut status, C::Ready, FALSE, "Building", m);
                    cond(&mut status, C::Building, TRUE, "Building", String::new());
                    cond(&mut status, C::Failed, FALSE, "Building", String::new());
                    status.phase = Some(EnvironmentPhase::Building);
                }
                Some(b) if b.phase == BuildPhase::Completed => {
                    let m = format!("build {} is current", b.id.unwrap_or_default());
                    cond(&mut status, C::Ready, TRUE, "BuildCompleted", m);
                    cond(
                        &mut status,
                        C::Building,
                        FALSE,
                        "BuildCompleted",
                        String::new(),
                    );
                    cond(
                        &mut status,
                        C::Failed,
                        FALSE,
                        "BuildCompleted",
                        String::new(),
                    );
                    status.phase = Some(EnvironmentPhase::Ready);
                }
                Some(b) => {
                    let (reason, what) = if b.phase == BuildPhase::Canceled {
                        ("BuildCanceled", "was canceled")
                    } else {
                        ("BuildFailed", "failed")
                    };
                    let m = match &b.message {
                        Some(m) => format!("build {} {what}: {m}", b.id.unwrap_or_default()),
                        None => format!("build {} {what}", b.id.unwrap_or_default()),
                    };
                    cond(&mut status, C::Ready, FALSE, reason, m.clone());
                    cond(&mut status, C::Building, FALSE, reason, String::new());
                    cond(&mut status, C::Failed, TRUE, reason, m);
                    status.phase = Some(if b.phase == BuildPhase::Canceled {
                        EnvironmentPhase::Canceled
                    } else {
                        EnvironmentPhase::Failed
                    });
                }
            }
        }
    }

    if let Some(id) = pinned {
        match by_id(id).filter(completed) {
            Some(b) => {
                current = Some(b);
                let m = format!("pinned to build {id}");
                cond(&mut status, C::Ready, TRUE, "Pinned", m);
                status.phase = Some(EnvironmentPhase::Ready);
            }
            None => {
                let m =
                    format!("the pinned build {id} is not a completed build of this environment");
                cond(&mut status, C::Ready, FALSE, "PinnedBuildUnavailable", m);
                status.phase = Some(EnvironmentPhase::Failed);
            }
        }
    }
    status.current_build = current.and_then(|b| b.id);

    // Retention: the newest `keep` ended builds stay, and so do the current, pinned and
    // unfinished ones whatever their age.
    let mut delete_builds = Vec::new();
    if let Some(keep) = i.keep_builds {
        let protected = |b: &BuildInfo| {
            !b.phase.is_terminal()
                || b.id.is_some() && (b.id == status.current_build || b.id == pinned)
        };
        let ended: Vec<&BuildInfo> = builds
            .iter()
            .copied()
            .filter(|b| b.phase.is_terminal())
            .collect();
        let excess = ended.len().saturating_sub(keep.max(1) as usize);
        delete_builds = ended
            .iter()
            .take(excess)
            .filter(|b| !protected(b))
            .map(|b| b.name.clone())
            .collect();
    }

    EnvPlan {
        create_build,
        delete_builds,
        status,
        current: current.map(|b| b.name.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conda_store_crds::EnvironmentSpec;

    const S1: &str = "spec-1111111111111111111111111111111111111111";
    const S2: &str = "spec-2222222222222222222222222222222222222222";

    fn env(status: Option<EnvironmentStatus>) -> Environment {
        let mut e = Environment::new("env", EnvironmentSpec::default());
        e.metadata.generation = Some(3);
        e.status = status;
        e
    }

    fn desired(name: &str) -> Result<Desired, String> {
        Ok(Desired {
            name: name.into(),
            sha256: format!("{}{}", &name[5..], "0".repeat(24)),
        })
    }

    fn b(name: &str, spec: &str, id: Option<i64>, phase: BuildPhase) -> BuildInfo {
        BuildInfo {
            name: name.into(),
            specification: spec.into(),
            id,
            phase,
            message: None,
        }
    }

    fn run(e: &Environment, d: Result<Desired, String>, builds: &[BuildInfo]) -> EnvPlan {
        plan(&EnvInputs {
            env: e,
            desired: d,
            builds,
            keep_builds: None,
            now: jiff::Timestamp::from_second(10).unwrap(),
        })
    }

    fn cond(p: &EnvPlan, t: C) -> &conda_store_crds::Condition {
        conda_store_crds::find_condition(&p.status.conditions, t).unwrap()
    }

    #[test]
    fn build_names_fit_job_names() {
        let env = "e".repeat(40);
        let name = build_name(&env, S1, 9999);
        assert_eq!(name.len(), 54);
        assert_eq!(build_name("env", S1, 1), "env-11111111-1");
    }

    #[test]
    fn a_new_environment_gets_its_first_build() {
        let p = run(&env(None), desired(S1), &[]);
        assert_eq!(p.create_build.as_deref(), Some("env-11111111-1"));
        assert_eq!(p.status.phase, Some(EnvironmentPhase::Building));
        assert_eq!(p.status.specification.as_deref(), Some(S1));
        assert_eq!(cond(&p, C::Ready).status, FALSE);
        assert_eq!(p.status.observed_generation, Some(3));
    }

    #[test]
    fn the_same_decision_again_names_the_same_build() {
        // A restart before the status was written: the cache may not show the build yet.
        let first = run(&env(None), desired(S1), &[]);
        let again = run(&env(None), desired(S1), &[]);
        assert_eq!(first.create_build, again.create_build);
        // Once it shows, nothing more is created.
        let builds = [b("env-11111111-1", S1, None, BuildPhase::Queued)];
        assert_eq!(run(&env(None), desired(S1), &builds).create_build, None);
    }

    #[test]
    fn completed_build_becomes_current_and_ready() {
        let builds = [b("env-11111111-1", S1, Some(4), BuildPhase::Completed)];
        let p = run(&env(None), desired(S1), &builds);
        assert_eq!(p.create_build, None);
        assert_eq!(p.status.current_build, Some(4));
        assert_eq!(p.status.latest_build, Some(4));
        assert_eq!(p.current.as_deref(), Some("env-11111111-1"));
        assert_eq!(cond(&p, C::Ready).status, TRUE);
        assert_eq!(p.status.phase, Some(EnvironmentPhase::Ready));
    }

    #[test]
    fn a_changed_spec_builds_again_and_keeps_the_old_build_current() {
        let old = EnvironmentStatus {
            specification: Some(S1.into()),
            current_build: Some(4),
            ..Default::default()
        };
        let builds = [b("env-11111111-1", S1, Some(4), BuildPhase::Completed)];
        let p = run(&env(Some(old.clone())), desired(S2), &builds);
        assert_eq!(p.create_build.as_deref(), Some("env-22222222-1"));
        assert_eq!(p.status.current_build, Some(4));
        // The new one fails: still the old one current, Failed reported.
        let mut builds = builds.to_vec();
        let mut failed = b("env-22222222-1", S2, Some(5), BuildPhase::Failed);
        failed.message = Some("nothing provides nope".into());
        builds.push(failed);
        let old = EnvironmentStatus {
            specification: Some(S2.into()),
            ..old
        };
        let p = run(&env(Some(old)), desired(S2), &builds);
        assert_eq!(
            p.create_build, None,
            "a failed spec is not retried in a loop"
        );
        assert_eq!(p.status.current_build, Some(4));
        assert_eq!(p.status.latest_build, Some(5));
        assert_eq!(cond(&p, C::Failed).status, TRUE);
        assert!(cond(&p, C::Ready).message.contains("nothing provides nope"));
        assert_eq!(p.status.phase, Some(EnvironmentPhase::Failed));
    }

    #[test]
    fn going_back_to_a_built_spec_points_at_its_build() {
        let old = EnvironmentStatus {
            specification: Some(S2.into()),
            current_build: Some(5),
            ..Default::default()
        };
        let builds = [
            b("env-11111111-1", S1, Some(4), BuildPhase::Completed),
            b("env-22222222-1", S2, Some(5), BuildPhase::Completed),
        ];
        let p = run(&env(Some(old)), desired(S1), &builds);
        assert_eq!(p.create_build, None);
        assert_eq!(p.status.current_build, Some(4));
    }

    #[test]
    fn going_back_to_a_failed_spec_tries_again() {
        let old = EnvironmentStatus {
            specification: Some(S2.into()),
            ..Default::default()
        };
        let builds = [
            b("env-11111111-1", S1, Some(4), BuildPhase::Failed),
            b("env-22222222-1", S2, Some(5), BuildPhase::Completed),
        ];
        let p = run(&env(Some(old)), desired(S1), &builds);
        assert_eq!(p.create_build.as_deref(), Some("env-11111111-2"));
    }

    #[test]
    fn an_invalid_spec_creates_nothing() {
        let p = run(&env(None), Err("line 3: unknown key".into()), &[]);
        assert_eq!(p.create_build, None);
        assert_eq!(cond(&p, C::Ready).reason, "InvalidSpecification");
        assert!(cond(&p, C::Ready).message.contains("line 3"));
        assert_eq!(p.status.phase, Some(EnvironmentPhase::Invalid));
    }

    #[test]
    fn pinned_build_is_current() {
        let mut e = env(Some(EnvironmentStatus {
            specification: Some(S2.into()),
            ..Default::default()
        }));
        e.spec.pinned_build = Some(4);
        let builds = [
            b("env-11111111-1", S1, Some(4), BuildPhase::Completed),
            b("env-22222222-1", S2, Some(5), BuildPhase::Completed),
        ];
        let p = run(&e, desired(S2), &builds);
        assert_eq!(p.status.current_build, Some(4));
        assert_eq!(p.current.as_deref(), Some("env-11111111-1"));
        assert_eq!(cond(&p, C::Ready).reason, "Pinned");
        e.spec.pinned_build = Some(99);
        let p = run(&e, desired(S2), &builds);
        assert_eq!(cond(&p, C::Ready).reason, "PinnedBuildUnavailable");
    }

    #[test]
    fn retention_keeps_the_newest_and_the_protected() {
        let builds = [
            b("env-11111111-1", S1, Some(1), BuildPhase::Completed),
            b("env-11111111-2", S1, Some(2), BuildPhase::Failed),
            b("env-11111111-3", S1, Some(3), BuildPhase::Completed),
            b("env-22222222-1", S2, Some(6), BuildPhase::Failed),
            b("env-22222222-2", S2, Some(7), BuildPhase::Building),
        ];
        let mut e = env(Some(EnvironmentStatus {
            specification: Some(S2.into()),
            ..Default::default()
        }));
        e.spec.pinned_build = Some(1);
        let p = plan(&EnvInputs {
            env: &e,
            desired: desired(S2),
            builds: &builds,
            keep_builds: Some(1),
            now: jiff::Timestamp::from_second(10).unwrap(),
        });
        // Ended: 1, 2, 3, 6; keep the newest (6); 1 is pinned (current), 3 deleted, 2 deleted.
        assert_eq!(p.delete_builds, vec!["env-11111111-2", "env-11111111-3"]);
    }
}
