//! Namespace: the Kubernetes namespace of the same name exists and is labelled; status.

use std::sync::Arc;
use std::time::Duration;

use conda_store_crds::naming::is_rfc1123_label;
use conda_store_crds::{Namespace, NamespaceStatus};
use k8s_openapi::api::core::v1::Namespace as KubeNamespace;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;

use super::{Ctx, Error, apply_status};
use crate::decide::conditions::{FALSE, TRUE, condition, set};
use crate::labels;
use conda_store_crds::ConditionType;

pub async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    ctx.metrics
        .reconciles
        .with_label_values(&["Namespace"])
        .inc();
    let name = ns.name_any();
    let old = ns.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let generation = ns.metadata.generation;
    let mut status = NamespaceStatus {
        observed_generation: generation,
        conditions: old.conditions.clone(),
        environment_count: Some(
            ctx.environments
                .state()
                .iter()
                .filter(|e| e.namespace().as_deref() == Some(name.as_str()))
                .count() as u32,
        ),
    };
    let ready = if !is_rfc1123_label(&name, 63) {
        condition(
            &old.conditions,
            ConditionType::Ready,
            FALSE,
            "InvalidName",
            format!(
                "{name:?} cannot name a Kubernetes namespace (lowercase letters, digits and '-', at most 63)"
            ),
            generation,
            now,
        )
    } else {
        ensure_kube_namespace(&ctx, &name).await?;
        condition(
            &old.conditions,
            ConditionType::Ready,
            TRUE,
            "NamespaceReady",
            format!("the Kubernetes namespace {name} holds its environments"),
            generation,
            now,
        )
    };
    set(&mut status.conditions, ready);
    if Some(&status) != ns.status.as_ref() {
        apply_status(&Api::<Namespace>::all(ctx.client.clone()), &*ns, &status).await?;
    }
    // Also recounts the environments now and then.
    Ok(Action::requeue(Duration::from_secs(30)))
}

/// Applies the Kubernetes namespace (labels included) at most every few minutes per
/// namespace: reconciles come often, and a namespace deleted by someone is re-created at the
/// next apply.
async fn ensure_kube_namespace(ctx: &Ctx, name: &str) -> Result<(), Error> {
    const EVERY: Duration = Duration::from_secs(300);
    let fresh = ctx
        .ensured_namespaces
        .lock()
        .expect("not poisoned")
        .get(name)
        .is_some_and(|t| t.elapsed() < EVERY);
    if fresh {
        return Ok(());
    }
    let kube_ns = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                labels::MANAGED_BY: labels::MANAGER,
                labels::NAMESPACE: name,
            },
        },
    });
    Api::<KubeNamespace>::all(ctx.client.clone())
        .patch(
            name,
            &PatchParams::apply(labels::FIELD_MANAGER).force(),
            &Patch::Apply(&kube_ns),
        )
        .await?;
    ctx.ensured_namespaces
        .lock()
        .expect("not poisoned")
        .insert(name.to_string(), std::time::Instant::now());
    Ok(())
}
