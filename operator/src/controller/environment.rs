//! Environment: normalise, ensure the Specification, create Builds, keep the status.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use conda_store_crds::spec::{RawSpec, normalize};
use conda_store_crds::{Build, Environment, Specification};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::{Ctx, Error, apply_status};
use crate::decide::build::phase;
use crate::decide::environment::{BuildInfo, Desired, EnvInputs, plan};
use crate::labels;

pub async fn reconcile(env: Arc<Environment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    ctx.metrics
        .reconciles
        .with_label_values(&["Environment"])
        .inc();
    if env.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = env.namespace().unwrap_or_default();
    let name = env.name_any();
    let client = ctx.client.clone();

    let namespace = ctx
        .namespaces
        .get(&kube::runtime::reflector::ObjectRef::new(&ns));
    let desired = match &namespace {
        None => Err(format!(
            "there is no conda-store Namespace {ns:?}: create one (kind Namespace, group \
             conda.store) to allow environments here"
        )),
        Some(_) => {
            let policy = ctx.policy_for(&ns, &env.conda_name());
            RawSpec::from_environment(&env.spec)
                .and_then(|raw| normalize(&raw, &policy))
                .map_err(|e| e.to_string())
        }
    };
    let desired = match desired {
        Ok(spec) => {
            let spec_obj = Specification::from_normalized(spec);
            ensure_specification(&ctx, &ns, &spec_obj).await?;
            Ok(Desired {
                name: spec_obj.name_any(),
                sha256: spec_obj.spec.sha256.clone(),
            })
        }
        Err(message) => Err(message),
    };

    let builds: Vec<BuildInfo> = ctx
        .builds
        .state()
        .iter()
        .filter(|b| {
            b.namespace().as_deref() == Some(ns.as_str())
                && b.labels().get(labels::ENVIRONMENT) == Some(&name)
        })
        .map(|b| BuildInfo {
            name: b.name_any(),
            specification: b.spec.specification.clone(),
            id: b.status.as_ref().and_then(|s| s.id),
            phase: phase(b),
            message: b.status.as_ref().and_then(|s| s.message.clone()),
        })
        .collect();
    let keep_builds = namespace
        .as_ref()
        .and_then(|n| n.spec.retention.as_ref())
        .and_then(|r| r.keep_builds);
    let p = plan(&EnvInputs {
        env: &env,
        desired: desired.clone(),
        builds: &builds,
        keep_builds,
        now: jiff::Timestamp::now(),
    });

    let build_api: Api<Build> = Api::namespaced(client.clone(), &ns);
    if let (Some(build_name), Ok(d)) = (&p.create_build, &desired) {
        let attempt = Build::attempt_of(build_name);
        let build = Build::new_for(&env, &d.name, attempt)
            .ok_or_else(|| Error::Other("the Environment has no uid".into()))?;
        match build_api.create(&PostParams::default(), &build).await {
            Ok(_) => {
                ctx.event(
                    &*env,
                    EventType::Normal,
                    "BuildCreated",
                    format!("build {build_name} for specification {}", d.name),
                )
                .await;
            }
            // Created before (a restart or a stale cache): the same decision, the same name.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    for old in &p.delete_builds {
        match build_api.delete(old, &DeleteParams::background()).await {
            Ok(_) => {
                ctx.event(
                    &*env,
                    EventType::Normal,
                    "BuildDeleted",
                    format!("build {old} is beyond the namespace's retention"),
                )
                .await;
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    if Some(&p.status) != env.status.as_ref() {
        apply_status(
            &Api::<Environment>::namespaced(client, &ns),
            &*env,
            &p.status,
        )
        .await?;
    }
    if let (Some(dir), Some(current)) = (&ctx.cfg.local_envs_dir, &p.current) {
        switch_link(&dir.join(&ns), &name, current);
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Creates the Specification, or checks that the one already there holds the same content
/// (the API server of older clusters does not enforce its immutability rule).
async fn ensure_specification(ctx: &Ctx, ns: &str, spec: &Specification) -> Result<(), Error> {
    let key = format!("{ns}/{}", spec.name_any());
    if ctx.known_specs.lock().expect("not poisoned").contains(&key) {
        return Ok(());
    }
    ensure_specification_once(ctx, ns, spec).await?;
    ctx.known_specs.lock().expect("not poisoned").insert(key);
    Ok(())
}

async fn ensure_specification_once(ctx: &Ctx, ns: &str, spec: &Specification) -> Result<(), Error> {
    let api: Api<Specification> = Api::namespaced(ctx.client.clone(), ns);
    let mut obj = spec.clone();
    obj.metadata.labels = Some(BTreeMap::from([(
        labels::MANAGED_BY.to_string(),
        labels::MANAGER.to_string(),
    )]));
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api.get(&spec.name_any()).await?;
            if existing.spec == spec.spec {
                Ok(())
            } else {
                Err(Error::Other(format!(
                    "Specification {ns}/{} was modified after it was created; delete it so \
                     the operator writes it again",
                    spec.name_any()
                )))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Points `<dir>/<environment>` at `<dir>/<build>` when that prefix exists (atomic rename).
fn switch_link(dir: &Path, environment: &str, build: &str) {
    let target = dir.join(build);
    let link = dir.join(environment);
    if !target.join("conda-meta").is_dir() {
        return;
    }
    if std::fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
        return;
    }
    match conda_store_engine::install::switch_current(&link, &target) {
        Ok(()) => {
            tracing::info!(link = %link.display(), target = %target.display(), "current build switched")
        }
        Err(e) => tracing::warn!(error = %e, link = %link.display(), "switching the current link"),
    }
}
