//! The reconcilers, one scenario per expected sequence of API calls (see `fixtures.rs`).

use std::sync::Arc;

use conda_store_crds::Environment;
use kube::runtime::watcher::Event;
use serde_json::Value;

use super::fixtures::{context, environment, namespace};
use super::{environment as env_controller, namespace as ns_controller};

fn condition<'a>(status: &'a Value, t: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == t)
        .unwrap_or_else(|| panic!("no {t} condition in {status}"))
}

/// The object with the status a status patch sent, as the API server answers it.
fn with_status<K: serde::Serialize>(obj: &K, status: &Value) -> Value {
    let mut v = serde_json::to_value(obj).expect("JSON");
    v["status"] = status.clone();
    v
}

#[tokio::test]
async fn a_namespace_gets_its_kubernetes_namespace_then_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, mut api, mut w) = context(dir.path());
    let ns = namespace("team");
    w.environments
        .apply_watcher_event(&Event::Apply(environment("team", "tools", &["tool"])));
    let run = tokio::spawn(ns_controller::reconcile(Arc::new(ns.clone()), ctx.clone()));

    let call = api.expect("PATCH", "/api/v1/namespaces/team?").await;
    assert!(
        call.uri.contains("fieldManager=conda-store-operator"),
        "{}",
        call.uri
    );
    assert_eq!(
        call.body["metadata"]["labels"]["conda.store/namespace"],
        "team"
    );
    call.echo(200);
    let call = api
        .expect(
            "PATCH",
            "/apis/conda.store/v1alpha1/condanamespaces/team/status?",
        )
        .await;
    let status = call.body["status"].clone();
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(condition(&status, "Ready")["reason"], "NamespaceReady");
    assert_eq!(status["environmentCount"], 1);
    call.answer(200, with_status(&ns, &status));
    run.await.unwrap().unwrap();
    api.nothing_more();

    // Reconciled again with that status: the namespace was applied moments ago and the status
    // is unchanged, so nothing is written.
    let mut seen = ns.clone();
    seen.status = Some(serde_json::from_value(status).unwrap());
    ns_controller::reconcile(Arc::new(seen), ctx.clone())
        .await
        .unwrap();
    api.nothing_more();
}

#[tokio::test]
async fn a_namespace_name_kubernetes_cannot_take_is_reported_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, mut api, _w) = context(dir.path());
    let ns = namespace("Team_A");
    let run = tokio::spawn(ns_controller::reconcile(Arc::new(ns.clone()), ctx.clone()));
    let call = api
        .expect(
            "PATCH",
            "/apis/conda.store/v1alpha1/condanamespaces/Team_A/status?",
        )
        .await;
    let status = call.body["status"].clone();
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert_eq!(condition(&status, "Ready")["reason"], "InvalidName");
    call.answer(200, with_status(&ns, &status));
    run.await.unwrap().unwrap();
    api.nothing_more();
}

/// The Specification and Build creates of a new environment, answered by `specs` and
/// `builds`; then its status patch, returned.
async fn new_environment(
    specs: impl FnOnce(super::fixtures::Call),
    builds: impl FnOnce(super::fixtures::Call),
) -> (Environment, Value) {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, mut api, mut w) = context(dir.path());
    w.namespaces
        .apply_watcher_event(&Event::Apply(namespace("team")));
    let env = environment("team", "tools", &["tool", "liba >=2"]);
    let run = tokio::spawn(env_controller::reconcile(
        Arc::new(env.clone()),
        ctx.clone(),
    ));

    let call = api
        .expect(
            "POST",
            "/apis/conda.store/v1alpha1/namespaces/team/specifications?",
        )
        .await;
    assert_eq!(
        call.body["spec"]["spec"]["dependencies"],
        serde_json::json!(["liba>=2", "tool"])
    );
    specs(call);
    let call = api
        .expect("POST", "/apis/conda.store/v1alpha1/namespaces/team/builds?")
        .await;
    assert_eq!(
        call.body["metadata"]["labels"]["conda.store/environment"],
        "tools"
    );
    assert_eq!(
        call.body["metadata"]["ownerReferences"][0]["uid"],
        "tools-uid"
    );
    builds(call);
    let call = api
        .expect(
            "PATCH",
            "/apis/conda.store/v1alpha1/namespaces/team/environments/tools/status?",
        )
        .await;
    let status = call.body["status"].clone();
    call.answer(200, with_status(&env, &status));
    run.await.unwrap().unwrap();
    api.nothing_more();
    (env, status)
}

#[tokio::test]
async fn a_new_environment_gets_its_specification_and_one_build() {
    let (_, status) = new_environment(|c| c.echo(201), |c| c.echo(201)).await;
    assert_eq!(status["phase"], "Building");
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert_eq!(condition(&status, "Building")["status"], "True");
    assert!(status["specificationHash"].as_str().unwrap().len() == 64);
}

/// After a restart (or with a cache that lags) the same decision is made again: the creates
/// meet AlreadyExists, the Specification is found unchanged, and no second Build is made.
#[tokio::test]
async fn a_restart_with_a_stale_cache_makes_no_duplicate() {
    let created = std::sync::Mutex::new(None::<Value>);
    let dir = tempfile::tempdir().unwrap();
    let (ctx, mut api, mut w) = context(dir.path());
    w.namespaces
        .apply_watcher_event(&Event::Apply(namespace("team")));
    let env = environment("team", "tools", &["tool"]);
    let run = tokio::spawn(env_controller::reconcile(
        Arc::new(env.clone()),
        ctx.clone(),
    ));
    let call = api
        .expect(
            "POST",
            "/apis/conda.store/v1alpha1/namespaces/team/specifications?",
        )
        .await;
    *created.lock().unwrap() = Some(call.body.clone());
    let name = call.body["metadata"]["name"].as_str().unwrap().to_string();
    call.fail(409, "AlreadyExists");
    let call = api
        .expect(
            "GET",
            &format!("/apis/conda.store/v1alpha1/namespaces/team/specifications/{name}"),
        )
        .await;
    let same = created.lock().unwrap().clone().unwrap();
    call.answer(200, same);
    let call = api
        .expect("POST", "/apis/conda.store/v1alpha1/namespaces/team/builds?")
        .await;
    call.fail(409, "AlreadyExists");
    let call = api
        .expect(
            "PATCH",
            "/apis/conda.store/v1alpha1/namespaces/team/environments/tools/status?",
        )
        .await;
    let status = call.body["status"].clone();
    assert_eq!(status["phase"], "Building");
    call.answer(200, with_status(&env, &status));
    run.await.unwrap().unwrap();
    api.nothing_more();
}

/// A Specification changed after it was made (Kubernetes 1.20 does not enforce its
/// immutability rule) is refused: no build of it is made.
#[tokio::test]
async fn a_modified_specification_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, mut api, mut w) = context(dir.path());
    w.namespaces
        .apply_watcher_event(&Event::Apply(namespace("team")));
    let env = environment("team", "tools", &["tool"]);
    let run = tokio::spawn(env_controller::reconcile(
        Arc::new(env.clone()),
        ctx.clone(),
    ));
    let call = api
        .expect(
            "POST",
            "/apis/conda.store/v1alpha1/namespaces/team/specifications?",
        )
        .await;
    let mut tampered = call.body.clone();
    tampered["spec"]["spec"]["dependencies"] = serde_json::json!(["evil"]);
    let name = call.body["metadata"]["name"].as_str().unwrap().to_string();
    call.fail(409, "AlreadyExists");
    api.expect(
        "GET",
        &format!("/apis/conda.store/v1alpha1/namespaces/team/specifications/{name}"),
    )
    .await
    .answer(200, tampered);
    let err = run.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("was modified"), "{err}");
    api.nothing_more();
}

/// An Environment in a namespace with no conda-store Namespace is reported, not built.
#[tokio::test]
async fn an_environment_without_its_namespace_is_not_built() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, mut api, _w) = context(dir.path());
    let env = environment("team", "tools", &["tool"]);
    let run = tokio::spawn(env_controller::reconcile(
        Arc::new(env.clone()),
        ctx.clone(),
    ));
    let call = api
        .expect(
            "PATCH",
            "/apis/conda.store/v1alpha1/namespaces/team/environments/tools/status?",
        )
        .await;
    let status = call.body["status"].clone();
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert!(
        condition(&status, "Ready")["message"]
            .as_str()
            .unwrap()
            .contains("no conda-store Namespace"),
        "{status}"
    );
    call.answer(200, with_status(&env, &status));
    run.await.unwrap().unwrap();
    api.nothing_more();
}

/// Build ids come from a counter ConfigMap: made on first use, then advanced by replace with
/// the resourceVersion read, so two operators racing never hand out the same id: the loser's
/// replace is a conflict, and it reads again.
#[tokio::test]
async fn build_ids_are_reserved_without_ever_handing_one_out_twice() {
    use crate::ids::IdAllocator;
    let (client, mut api) = super::fixtures::mock_client();
    let ids = IdAllocator::new(client, "conda-store");
    let path = "/api/v1/namespaces/conda-store/configmaps";

    // First use: no counter yet; it is created holding the next free id.
    let first = tokio::spawn(async move {
        let a = ids.next().await.unwrap();
        (ids, a)
    });
    api.expect("GET", &format!("{path}/conda-store-build-ids"))
        .await
        .fail(404, "NotFound");
    let call = api.expect("POST", &format!("{path}?")).await;
    assert_eq!(call.body["data"]["next"], "2");
    call.echo(201);
    let (ids, a) = first.await.unwrap();
    assert_eq!(a, 1);
    api.nothing_more();

    // Another operator moved the counter meanwhile: the replace conflicts, and the id comes
    // from a fresh read.
    let second = tokio::spawn(async move { ids.next().await.unwrap() });
    let counter = |next: &str, rv: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "conda-store-build-ids", "namespace": "conda-store",
                         "resourceVersion": rv},
            "data": {"next": next}})
    };
    api.expect("GET", &format!("{path}/conda-store-build-ids"))
        .await
        .answer(200, counter("7", "10"));
    let call = api
        .expect("PUT", &format!("{path}/conda-store-build-ids"))
        .await;
    assert_eq!(call.body["metadata"]["resourceVersion"], "10");
    assert_eq!(call.body["data"]["next"], "8");
    call.fail(409, "Conflict");
    api.expect("GET", &format!("{path}/conda-store-build-ids"))
        .await
        .answer(200, counter("9", "11"));
    let call = api
        .expect("PUT", &format!("{path}/conda-store-build-ids"))
        .await;
    assert_eq!(call.body["data"]["next"], "10");
    call.echo(200);
    assert_eq!(second.await.unwrap(), 9);
    api.nothing_more();
}

/// A Specification of `deps` and a new Build of it for Environment `env`, as the API server
/// holds them (the Build already carries its finalizer).
fn build_of(
    env: &Environment,
    deps: &str,
) -> (conda_store_crds::Specification, conda_store_crds::Build) {
    let spec = conda_store_crds::Specification::from_normalized(
        conda_store_crds::spec::normalize_yaml(
            &format!("channels: [https://conda.example/main]\ndependencies: [{deps}]\n"),
            &Default::default(),
        )
        .unwrap(),
    );
    let mut spec_obj = spec.clone();
    spec_obj.metadata.namespace = Some("team".into());
    let mut b =
        conda_store_crds::Build::new_for(env, &kube::ResourceExt::name_any(&spec), 1).unwrap();
    b.metadata.uid = Some("build-uid".into());
    b.metadata.finalizers = Some(vec![crate::labels::ARTIFACTS_FINALIZER.into()]);
    (spec_obj, b)
}

/// The next status write of build `name`: the call (to answer) and the status it writes.
async fn build_status_write(
    api: &mut super::fixtures::ApiServer,
    name: &str,
) -> (super::fixtures::Call, Value) {
    let call = api
        .expect(
            "PATCH",
            &format!("/apis/conda.store/v1alpha1/namespaces/team/builds/{name}/status?"),
        )
        .await;
    let status = call.body["status"].clone();
    (call, status)
}

/// A Job status whose condition `type_` (`Complete`, `Failed`) holds.
fn job_ended(type_: &str, reason: Option<&str>) -> k8s_openapi::api::batch::v1::JobStatus {
    k8s_openapi::api::batch::v1::JobStatus {
        conditions: Some(vec![k8s_openapi::api::batch::v1::JobCondition {
            type_: type_.into(),
            status: "True".into(),
            reason: reason.map(Into::into),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// A step's pod in `team` that exited with `exit` and `message` as its termination message:
/// controlled by the Job with uid `owner`, or by nothing (a look-alike with the Job's label).
fn step_pod(name: &str, owner: Option<&str>, created: &str, exit: i32, message: String) -> Value {
    let mut p = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "team", "creationTimestamp": created,
                     "labels": {"controller-uid": "job-uid"}},
        "status": {"containerStatuses": [{
            "name": "step", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": exit, "message": message}}}]}
    });
    if let Some(uid) = owner {
        p["metadata"]["ownerReferences"] = serde_json::json!([{
            "apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": uid,
            "controller": true}]);
    }
    p
}

fn pod_list(items: Vec<Value>) -> Value {
    serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
}

/// `build` running its solve step since `started`: the step's Job (uid `job-uid`) recorded in
/// its status and its Solved condition Unknown; the Job, with `job` as its status, in the
/// cache, or not at all with `None`. The Job's name.
fn solving(
    ctx: &super::Ctx,
    jobs: &mut kube::runtime::reflector::store::Writer<k8s_openapi::api::batch::v1::Job>,
    build: &mut conda_store_crds::Build,
    started: jiff::Timestamp,
    job: Option<k8s_openapi::api::batch::v1::JobStatus>,
) -> String {
    use conda_store_crds::{BuildPhase, BuildStatus, BuildStep, StepJob};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let mut j = crate::jobs::step_job(
        &crate::jobs::JobInputs {
            build,
            step: BuildStep::Solve,
            build_id: 1,
            environment_name: "tools",
            channel_alias: None,
            pip: false,
        },
        &ctx.cfg,
    );
    j.metadata.uid = Some("job-uid".into());
    j.metadata.namespace = Some("team".into());
    let job_name = kube::ResourceExt::name_any(&j);
    if let Some(status) = job {
        j.status = Some(status);
        jobs.apply_watcher_event(&Event::Apply(j));
    }
    build.status = Some(BuildStatus {
        id: Some(1),
        phase: Some(BuildPhase::Building),
        started_on: Some(Time(started)),
        jobs: vec![StepJob {
            step: BuildStep::Solve,
            namespace: "team".into(),
            name: job_name.clone(),
            uid: "job-uid".into(),
        }],
        conditions: vec![super::super::decide::conditions::condition(
            &[],
            conda_store_crds::ConditionType::Solved,
            conda_store_crds::ConditionStatus::Unknown,
            "Running",
            "Job",
            Some(1),
            started,
        )],
        ..Default::default()
    });
    job_name
}

/// A new Build: it takes an id (asking the API first, in case this process wrote one the
/// cache does not show), is admitted, writes its specification to storage, creates its solve
/// Job, and records all of that in one status write.
#[tokio::test]
async fn a_new_build_takes_an_id_and_starts_its_solve_job_in_one_status_write() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, mut api, mut w) = context(dir.path());
    let env = environment("team", "tools", &["tool"]);
    w.environments
        .apply_watcher_event(&Event::Apply(env.clone()));
    let (spec, build) = build_of(&env, "tool");
    let name = kube::ResourceExt::name_any(&build);
    let run = tokio::spawn(super::build::reconcile(
        Arc::new(build.clone()),
        ctx.clone(),
    ));
    let builds = "/apis/conda.store/v1alpha1/namespaces/team/builds";

    api.expect("GET", &format!("{builds}/{name}"))
        .await
        .answer(200, serde_json::to_value(&build).unwrap());
    api.expect(
        "GET",
        "/api/v1/namespaces/conda-store/configmaps/conda-store-build-ids",
    )
    .await
    .fail(404, "NotFound");
    api.expect("POST", "/api/v1/namespaces/conda-store/configmaps?")
        .await
        .echo(201);
    api.expect(
        "GET",
        &format!(
            "/apis/conda.store/v1alpha1/namespaces/team/specifications/{}",
            kube::ResourceExt::name_any(&spec)
        ),
    )
    .await
    .answer(200, serde_json::to_value(&spec).unwrap());
    let call = api
        .expect("POST", "/apis/batch/v1/namespaces/team/jobs?")
        .await;
    assert_eq!(call.body["metadata"]["name"], format!("{name}-solve"));
    assert_eq!(
        call.body["metadata"]["labels"]["conda.store/build-uid"],
        "build-uid"
    );
    let mut job = call.body.clone();
    job["metadata"]["uid"] = "job-uid".into();
    call.answer(201, job);
    // The Jobs of the steps that follow start with it, each waiting for the one before.
    for (step, after) in [("install", "solve"), ("pack", "install")] {
        let call = api
            .expect("POST", "/apis/batch/v1/namespaces/team/jobs?")
            .await;
        assert_eq!(call.body["metadata"]["name"], format!("{name}-{step}"));
        let args = &call.body["spec"]["template"]["spec"]["containers"][0]["args"];
        assert_eq!(
            (&args[0], &args[1], &args[2], &args[3]),
            (
                &Value::from("step"),
                &Value::from(step),
                &Value::from("--after"),
                &Value::from(after)
            )
        );
        let mut job = call.body.clone();
        job["metadata"]["uid"] = format!("{step}-uid").into();
        call.answer(201, job);
    }
    let call = api
        .expect("PATCH", &format!("{builds}/{name}/status?"))
        .await;
    let status = call.body["status"].clone();
    assert_eq!(status["id"], 1);
    assert_eq!(status["phase"], "Building");
    assert_eq!(status["jobs"][0]["step"], "solve");
    assert_eq!(status["jobs"][0]["uid"], "job-uid");
    assert_eq!(status["jobs"].as_array().unwrap().len(), 3);
    assert_eq!(condition(&status, "Solved")["status"], "Unknown");
    assert_eq!(condition(&status, "Packed")["status"], "Unknown");
    call.answer(200, with_status(&build, &status));
    run.await.unwrap().unwrap();
    api.nothing_more();
    // The solve Job reads its specification from storage, not from an argument.
    let stored = ctx
        .store
        .get_bytes(
            &conda_store_storage::Key::new(&format!("builds/team/{name}/specification.json"))
                .unwrap(),
        )
        .await
        .unwrap();
    let stored: Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(stored["dependencies"], serde_json::json!(["tool"]));
}

/// Cancel: the build's running Job is deleted, the unfinished step is marked canceled, and the
/// build ends Canceled, in one status write.
#[tokio::test]
async fn a_canceled_build_deletes_its_job_and_ends_canceled() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, mut api, mut w) = context(dir.path());
    let env = environment("team", "tools", &["tool"]);
    w.environments
        .apply_watcher_event(&Event::Apply(env.clone()));
    let (_, mut build) = build_of(&env, "tool");
    let name = kube::ResourceExt::name_any(&build);
    let job_name = solving(
        &ctx,
        &mut w.jobs,
        &mut build,
        jiff::Timestamp::now(),
        Some(Default::default()),
    );
    build.spec.cancel = true;
    let run = tokio::spawn(super::build::reconcile(
        Arc::new(build.clone()),
        ctx.clone(),
    ));
    api.expect(
        "DELETE",
        &format!("/apis/batch/v1/namespaces/team/jobs/{job_name}"),
    )
    .await
    .answer(
        200,
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
    );
    let (call, status) = build_status_write(&mut api, &name).await;
    assert_eq!(status["phase"], "Canceled");
    assert_eq!(condition(&status, "Solved")["status"], "False");
    assert_eq!(condition(&status, "Solved")["reason"], "Canceled");
    assert!(status["endedOn"].is_string());
    call.answer(200, with_status(&build, &status));
    run.await.unwrap().unwrap();
    api.nothing_more();
}

/// A step that failed: the build reads the report from its Job's own pod (never from a
/// look-alike pod that carries the same labels) and fails with the step's reason.
#[tokio::test]
async fn a_failed_step_fails_the_build_with_its_own_pods_report() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, mut api, mut w) = context(dir.path());
    let env = environment("team", "tools", &["nope"]);
    w.environments
        .apply_watcher_event(&Event::Apply(env.clone()));
    let (_, mut build) = build_of(&env, "nope");
    let name = kube::ResourceExt::name_any(&build);
    solving(
        &ctx,
        &mut w.jobs,
        &mut build,
        jiff::Timestamp::now(),
        Some(job_ended("Failed", Some("BackoffLimitExceeded"))),
    );
    let run = tokio::spawn(super::build::reconcile(
        Arc::new(build.clone()),
        ctx.clone(),
    ));
    let report = |ok: bool, message: &str| {
        serde_json::json!({"step": "solve", "ok": ok, "message": message, "artifacts": []})
            .to_string()
    };
    let call = api.expect("GET", "/api/v1/namespaces/team/pods?").await;
    assert!(
        call.uri.contains("labelSelector=controller-uid%3Djob-uid"),
        "{}",
        call.uri
    );
    call.answer(
        200,
        pod_list(vec![
            step_pod(
                "real",
                Some("job-uid"),
                "2026-01-01T00:00:00Z",
                1,
                report(false, "cannot solve: nothing provides nope"),
            ),
            // Newer, labelled alike, not the Job's: its "success" must not count.
            step_pod(
                "spoof",
                None,
                "2026-01-01T00:01:00Z",
                0,
                report(true, "all good"),
            ),
        ]),
    );
    let (call, status) = build_status_write(&mut api, &name).await;
    assert_eq!(status["phase"], "Failed");
    assert_eq!(condition(&status, "Solved")["status"], "False");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("nothing provides nope"),
        "{status}"
    );
    assert!(
        status["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "logs" && a["key"].as_str().unwrap().ends_with("/logs/solve.log")),
        "the failed step's log is listed: {status}"
    );
    call.answer(200, with_status(&build, &status));
    run.await.unwrap().unwrap();
    api.nothing_more();
}

/// A step that succeeded: its report's artifacts and package count go to the status, and the
/// next step's Job starts, all in one status write.
#[tokio::test]
async fn a_finished_step_records_its_artifacts_and_starts_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, mut api, mut w) = context(dir.path());
    let env = environment("team", "tools", &["tool"]);
    w.environments
        .apply_watcher_event(&Event::Apply(env.clone()));
    let (spec, mut build) = build_of(&env, "tool");
    let name = kube::ResourceExt::name_any(&build);
    solving(
        &ctx,
        &mut w.jobs,
        &mut build,
        jiff::Timestamp::now(),
        Some(job_ended("Complete", None)),
    );
    let run = tokio::spawn(super::build::reconcile(
        Arc::new(build.clone()),
        ctx.clone(),
    ));
    let key = format!("builds/team/{name}");
    let report = serde_json::json!({
        "step": "solve", "ok": true, "durationMs": 1200,
        "details": {"packages": {"linux-64": 3}},
        "artifacts": [
            {"kind": "lockfile", "key": format!("{key}/conda-lock.yaml")},
            {"kind": "yaml", "key": format!("{key}/environment.yaml")},
            // Not under the build's own prefix: never recorded.
            {"kind": "archive", "key": "builds/other-team/secret/archive.tar.gz"}
        ]
    });
    api.expect("GET", "/api/v1/namespaces/team/pods?")
        .await
        .answer(
            200,
            pod_list(vec![step_pod(
                "p",
                Some("job-uid"),
                "2026-01-01T00:00:00Z",
                0,
                report.to_string(),
            )]),
        );
    api.expect(
        "GET",
        &format!(
            "/apis/conda.store/v1alpha1/namespaces/team/specifications/{}",
            kube::ResourceExt::name_any(&spec)
        ),
    )
    .await
    .answer(200, serde_json::to_value(&spec).unwrap());
    let call = api
        .expect("POST", "/apis/batch/v1/namespaces/team/jobs?")
        .await;
    assert_eq!(call.body["metadata"]["name"], format!("{name}-install"));
    let mut created = call.body.clone();
    created["metadata"]["uid"] = "install-uid".into();
    call.answer(201, created);
    // And the pack Job, which waits for the install.
    let call = api
        .expect("POST", "/apis/batch/v1/namespaces/team/jobs?")
        .await;
    assert_eq!(call.body["metadata"]["name"], format!("{name}-pack"));
    call.echo(201);
    let (call, status) = build_status_write(&mut api, &name).await;
    assert_eq!(condition(&status, "Solved")["status"], "True");
    assert_eq!(condition(&status, "Installed")["status"], "Unknown");
    assert_eq!(status["packageCount"], 3);
    let keys: Vec<&str> = status["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&format!("{key}/conda-lock.yaml").as_str()),
        "{keys:?}"
    );
    assert!(!keys.iter().any(|k| k.contains("other-team")), "{keys:?}");
    assert!(
        status["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["step"] == "install" && j["uid"] == "install-uid")
    );
    call.answer(200, with_status(&build, &status));
    run.await.unwrap().unwrap();
    api.nothing_more();
}

/// A Job deleted under a running build (by a person, or a namespace clean-up): the API is
/// asked rather than the cache, and the build fails saying so, instead of waiting forever.
/// A Job of the same name but another uid (made by someone else since) counts as deleted too.
#[tokio::test]
async fn a_job_deleted_under_a_running_build_fails_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, mut api, mut w) = context(dir.path());
    let env = environment("team", "tools", &["tool"]);
    w.environments
        .apply_watcher_event(&Event::Apply(env.clone()));
    let (_, mut build) = build_of(&env, "tool");
    let name = kube::ResourceExt::name_any(&build);
    // The cache holds no Job for the step.
    let started = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(30);
    let job_name = solving(&ctx, &mut w.jobs, &mut build, started, None);
    let run = tokio::spawn(super::build::reconcile(
        Arc::new(build.clone()),
        ctx.clone(),
    ));
    // The cache holds no Job for the step: the API is asked by the recorded name, and answers
    // with a Job of another uid.
    api.expect(
        "GET",
        &format!("/apis/batch/v1/namespaces/team/jobs/{job_name}"),
    )
    .await
    .answer(
        200,
        serde_json::json!({"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": job_name, "namespace": "team", "uid": "someone-elses"}}),
    );
    let (call, status) = build_status_write(&mut api, &name).await;
    // First pass: the step is marked as its Job deleted, and the build looks again shortly.
    assert_eq!(status["phase"], "Building");
    assert_eq!(condition(&status, "Solved")["status"], "False");
    assert_eq!(condition(&status, "Solved")["reason"], "JobDeleted");
    call.answer(200, with_status(&build, &status));
    run.await.unwrap().unwrap();
    api.nothing_more();

    // Second pass: the failed step fails the build, with the reason.
    let mut seen = build.clone();
    seen.status = Some(serde_json::from_value(status).unwrap());
    let run = tokio::spawn(super::build::reconcile(Arc::new(seen.clone()), ctx.clone()));
    let (call, status) = build_status_write(&mut api, &name).await;
    assert_eq!(status["phase"], "Failed");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("was deleted before it finished"),
        "{status}"
    );
    call.answer(200, with_status(&seen, &status));
    run.await.unwrap().unwrap();
    api.nothing_more();
}

/// The Environment's Ready transition after its build completes: its Specification is there,
/// no new Build is made, and it is Ready with that build current.
#[tokio::test]
async fn an_environment_is_ready_once_its_build_completed() {
    use conda_store_crds::{BuildPhase, BuildStatus};
    let dir = tempfile::tempdir().unwrap();
    let (ctx, mut api, mut w) = context(dir.path());
    w.namespaces
        .apply_watcher_event(&Event::Apply(namespace("team")));
    let env = environment("team", "tools", &["tool"]);
    let (spec, mut build) = build_of(&env, "tool");
    build.metadata.namespace = Some("team".into());
    build.status = Some(BuildStatus {
        id: Some(7),
        phase: Some(BuildPhase::Completed),
        ..Default::default()
    });
    w.builds.apply_watcher_event(&Event::Apply(build));
    let run = tokio::spawn(env_controller::reconcile(
        Arc::new(env.clone()),
        ctx.clone(),
    ));
    let call = api
        .expect(
            "POST",
            "/apis/conda.store/v1alpha1/namespaces/team/specifications?",
        )
        .await;
    assert_eq!(
        call.body["metadata"]["name"],
        kube::ResourceExt::name_any(&spec)
    );
    call.echo(201);
    // No Build create: the specification's build completed.
    let call = api
        .expect(
            "PATCH",
            "/apis/conda.store/v1alpha1/namespaces/team/environments/tools/status?",
        )
        .await;
    let status = call.body["status"].clone();
    assert_eq!(status["phase"], "Ready");
    assert_eq!(status["currentBuild"], 7);
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(condition(&status, "Ready")["reason"], "BuildCompleted");
    assert_eq!(condition(&status, "Building")["status"], "False");
    call.answer(200, with_status(&env, &status));
    run.await.unwrap().unwrap();
    api.nothing_more();
}

/// An environment deleted and made again gets a Build of the same name: the phase this process
/// recorded for the old one (ended) must not hold the new one back (it waited forever for the
/// cache to show an end that was the old build's).
#[tokio::test]
async fn a_build_made_again_under_a_deleted_ones_name_is_not_held_by_its_phase() {
    use conda_store_crds::BuildPhase;
    let dir = tempfile::tempdir().unwrap();
    let (ctx, _api, _w) = context(dir.path());
    let env = environment("team", "tools", &["tool"]);
    let (_, mut old) = build_of(&env, "tool");
    old.metadata.uid = Some("old-uid".into());
    super::build::record_phase(&ctx, &old, BuildPhase::Completed);
    let (_, new) = build_of(&env, "tool");
    assert_eq!(
        kube::ResourceExt::name_any(&new),
        kube::ResourceExt::name_any(&old)
    );
    assert_eq!(
        super::build::effective_phase(&ctx, &new),
        BuildPhase::Queued
    );
    assert_eq!(
        super::build::effective_phase(&ctx, &old),
        BuildPhase::Completed
    );
}
