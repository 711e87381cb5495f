//! The operator on a real control plane and node: `conda-store-operator run` (leader-elected,
//! outside the cluster, as in local use, with the chart's RBAC for `jobPlacement=build`)
//! builds Environments through real Jobs that run the project's own image.
//!
//! `tests/e2e/operator.sh` provisions the cluster, the image, the CRDs, the RBAC, the demo
//! channel and a tarpit channel, then runs this test with `--ignored`. The test starts,
//! kills and restarts the operator itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use conda_store_crds::labels;
use conda_store_crds::{
    ArtifactKind, Build, BuildPhase, BuildStep, ConditionStatus, ConditionType, DependencyItem,
    Environment, EnvironmentSpec, Namespace, find_condition, is_true,
};
use conda_store_e2e::{Checks, apply, await_object, client, http_get, path, since, var, wait_for};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace as KubeNamespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::process::{Child, Command};

const NS: &str = "team";

/// What the provisioning script set up.
struct Setup {
    root: PathBuf,
    state: PathBuf,
    bin: PathBuf,
    channel: String,
    hang: String,
    metrics_port: u16,
    image: String,
}

impl Setup {
    fn from_env() -> anyhow::Result<Setup> {
        Ok(Setup {
            root: path("E2E_ROOT")?,
            state: path("E2E_STATE")?,
            bin: path("E2E_OPERATOR_BIN")?,
            channel: var("E2E_CHANNEL")?,
            hang: var("E2E_HANG")?,
            metrics_port: var("E2E_METRICS_PORT")?.parse()?,
            image: var("E2E_IMAGE")?,
        })
    }

    fn artifacts(&self, build: &str) -> PathBuf {
        self.state.join("artifacts/builds").join(NS).join(build)
    }

    fn prefix(&self, name: &str) -> PathBuf {
        self.state.join("envs").join(NS).join(name)
    }

    fn metrics(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }

    /// Starts operator replica `e2e-N`, listening on `listen` (default: the metrics port);
    /// a standby logs to `operator-standby.log`.
    fn start_operator(&self, n: u32, listen: Option<String>) -> anyhow::Result<Child> {
        let log_name = if listen.is_some() {
            "operator-standby.log"
        } else {
            "operator.log"
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state.join(log_name))?;
        let envs = self.state.join("envs");
        let listen = listen.unwrap_or_else(|| format!("127.0.0.1:{}", self.metrics_port));
        Command::new(&self.bin)
            .arg("run")
            .arg("--config")
            .arg(self.state.join("operator.yaml"))
            .arg("--envs-dir")
            .arg(&envs)
            .arg("--envs-volume")
            .arg(format!("hostPath:{}", envs.display()))
            .arg("--local-envs-dir")
            .arg(&envs)
            .args(["--listen", &listen, "--identity", &format!("e2e-{n}")])
            .env("KUBECONFIG", self.state.join("operator.kubeconfig"))
            .env(
                "RUST_LOG",
                "info,conda_store_operator::controller::build=debug",
            )
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting the operator")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An Environment in the team namespace with every artifact.
fn environment(name: &str, channel: &str, deps: &[&str]) -> Environment {
    let mut e = Environment::new(
        name,
        EnvironmentSpec {
            channels: vec![channel.to_string()],
            artifacts: Some(vec![
                ArtifactKind::Lockfile,
                ArtifactKind::Yaml,
                ArtifactKind::Archive,
                ArtifactKind::Image,
            ]),
            dependencies: Some(deps.iter().map(|d| DependencyItem(json!(d))).collect()),
            ..EnvironmentSpec::default()
        },
    );
    e.metadata.namespace = Some(NS.into());
    e
}

fn phase(b: &Build) -> Option<BuildPhase> {
    b.status.as_ref().and_then(|s| s.phase)
}

fn id(b: &Build) -> i64 {
    b.status.as_ref().and_then(|s| s.id).unwrap_or_default()
}

fn message(b: &Build) -> String {
    b.status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default()
}

fn condition_of(e: &Environment, t: ConditionType) -> Option<&conda_store_crds::Condition> {
    e.status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, t))
}

fn current_build(e: &Environment) -> Option<i64> {
    e.status.as_ref().and_then(|s| s.current_build)
}

/// The cluster as the test sees it.
struct Cluster {
    client: Client,
    builds: Api<Build>,
    envs: Api<Environment>,
    jobs: Api<Job>,
}

impl Cluster {
    /// The environment's builds, oldest first.
    async fn builds_of(&self, env: &str) -> anyhow::Result<Vec<Build>> {
        let params = ListParams::default().labels(&format!("{}={env}", labels::ENVIRONMENT));
        let mut list = self.builds.list(&params).await?.items;
        list.sort_by_key(id);
        Ok(list)
    }

    async fn build_count(&self, env: &str) -> anyhow::Result<usize> {
        Ok(self.builds_of(env).await?.len())
    }

    /// The first build of `env`, once there is one.
    async fn first_build(&self, env: &str, secs: u64) -> anyhow::Result<String> {
        wait_for(secs, &format!("a build of {env}"), || async {
            Ok(self.builds_of(env).await?.first().map(|b| b.name_any()))
        })
        .await
    }

    /// The build once it ended (completed, failed or canceled).
    async fn ended(&self, name: &str, secs: u64) -> anyhow::Result<Build> {
        await_object(
            &self.builds,
            name,
            secs,
            &format!("build {name} to end"),
            |b: Option<&Build>| b.and_then(phase).is_some_and(|p| p.is_terminal()),
        )
        .await
    }

    /// Fails unless the build ended in `want`, with its status for the reader.
    async fn ended_as(&self, name: &str, secs: u64, want: BuildPhase) -> anyhow::Result<Build> {
        let b = self.ended(name, secs).await?;
        if phase(&b) != Some(want) {
            bail!(
                "build {name} ended {:?}, want {want:?}: {}",
                phase(&b),
                serde_json::to_string_pretty(&b.status)?
            );
        }
        Ok(b)
    }

    async fn job_count(&self, build: &str) -> anyhow::Result<usize> {
        let params = ListParams::default().labels(&format!("{}={build}", labels::BUILD));
        Ok(self.jobs.list(&params).await?.items.len())
    }

    /// The env's first build is Building and its solve Job exists: the build's name.
    async fn solving(&self, env: &str) -> anyhow::Result<String> {
        wait_for(60, &format!("{env} solving"), || async {
            let Some(b) = self.builds_of(env).await?.into_iter().next() else {
                return Ok(None);
            };
            if phase(&b) != Some(BuildPhase::Building) {
                return Ok(None);
            }
            let params = ListParams::default().labels(&format!(
                "{}={},{}={}",
                labels::BUILD,
                b.name_any(),
                labels::STEP,
                BuildStep::Solve.as_str()
            ));
            let jobs = self.jobs.list(&params).await?.items;
            Ok(jobs.first().map(|_| b.name_any()))
        })
        .await
    }

    /// The environment once `cond` holds.
    async fn env_until(
        &self,
        name: &str,
        secs: u64,
        what: &str,
        cond: impl Fn(&Environment) -> bool + Send + 'static,
    ) -> anyhow::Result<Environment> {
        await_object(
            &self.envs,
            name,
            secs,
            what,
            move |e: Option<&Environment>| e.is_some_and(&cond),
        )
        .await
    }

    async fn ready_reason(&self, name: &str, reason: &'static str) -> anyhow::Result<()> {
        self.env_until(
            name,
            30,
            &format!("{name} Ready reason {reason}"),
            move |e| condition_of(e, ConditionType::Ready).is_some_and(|c| c.reason == reason),
        )
        .await
        .map(|_| ())
    }

    async fn lease_holder(&self, want: &'static str, secs: u64) -> anyhow::Result<()> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "conda-store");
        await_object(
            &leases,
            "conda-store-operator",
            secs,
            &format!("{want} holding the Lease"),
            move |l: Option<&Lease>| {
                l.and_then(|l| l.spec.as_ref())
                    .and_then(|s| s.holder_identity.as_deref())
                    == Some(want)
            },
        )
        .await
        .map(|_| ())
    }
}

/// The Argo CD health check of examples/argocd-health.md on the Environment ("STATUS: message").
async fn argocd_health(setup: &Setup, e: &Environment) -> anyhow::Result<String> {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new("bash")
        .arg(setup.root.join("tests/support/argocd-health.sh"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(&serde_json::to_vec(e)?).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn contains(haystack: &str, needle: &str) -> anyhow::Result<()> {
    if haystack.contains(needle) {
        Ok(())
    } else {
        bail!("expected {needle:?} in:\n{haystack}")
    }
}

/// The largest `N` in `(N<marker>` on the lines of `log` holding `marker`: how many pieces a
/// step took from a cache, as its log says.
fn cached(log: &str, marker: &str) -> u64 {
    log.lines()
        .filter_map(|l| {
            let before = &l[..l.find(marker)?];
            let n = &before[before.rfind('(')? + 1..];
            n.parse::<u64>().ok()
        })
        .max()
        .unwrap_or(0)
}

async fn run(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cmd).args(args).output().await?;
    if !out.status.success() {
        bail!("{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

/// Every `builds/*/*/image.json` in storage references blobs that exist: how many.
fn remaining_images_complete(artifacts: &Path) -> anyhow::Result<usize> {
    let mut n = 0;
    for ns in std::fs::read_dir(artifacts.join("builds"))? {
        for build in std::fs::read_dir(ns?.path())? {
            let summary = build?.path().join("image.json");
            if !summary.exists() {
                continue;
            }
            let d: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary)?)?;
            let mut digests = vec![d["manifest_digest"].clone(), d["config_digest"].clone()];
            digests.extend(
                d["layers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|l| l["digest"].clone()),
            );
            for digest in digests {
                let hex = digest
                    .as_str()
                    .and_then(|s| s.strip_prefix("sha256:"))
                    .context("a digest")?;
                let blob = artifacts.join("blobs/sha256").join(hex);
                if !blob.exists() {
                    bail!(
                        "{} references a missing blob {}",
                        summary.display(),
                        blob.display()
                    );
                }
            }
            n += 1;
        }
    }
    Ok(n)
}

#[tokio::test]
#[ignore = "needs the e2e cluster: bash tests/e2e/operator.sh"]
async fn the_operator_builds_environments_through_jobs() -> anyhow::Result<()> {
    let setup = Setup::from_env()?;
    let client = client().await?;
    let c = Cluster {
        builds: Api::namespaced(client.clone(), NS),
        envs: Api::namespaced(client.clone(), NS),
        jobs: Api::namespaced(client.clone(), NS),
        client: client.clone(),
    };
    let mut checks = Checks::default();
    let mut operator = setup.start_operator(1, None)?;

    // 1. Namespace → Kubernetes namespace.
    let team: Namespace = serde_json::from_value(json!({
        "apiVersion": "conda.store/v1alpha1", "kind": "Namespace",
        "metadata": {"name": NS},
        "spec": {"displayName": "Team", "roleBindings": [{"entity": "team/*", "role": "developer"}],
                 "retention": {"keepBuilds": 5}},
    }))?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    apply(&namespaces, &team).await?;
    let kube_namespaces: Api<KubeNamespace> = Api::all(client.clone());
    checks.check(
        "the operator creates the namespace of a conda-store Namespace",
        await_object(
            &kube_namespaces,
            NS,
            60,
            "namespace team",
            |n: Option<&KubeNamespace>| n.is_some(),
        )
        .await,
    );
    checks.check(
        "the Namespace is Ready",
        await_object(
            &namespaces,
            NS,
            30,
            "Namespace Ready",
            |n: Option<&Namespace>| {
                n.and_then(|n| n.status.as_ref())
                    .is_some_and(|s| is_true(&s.conditions, ConditionType::Ready))
            },
        )
        .await,
    );

    // 2. An Environment builds.
    let t = Instant::now();
    apply(
        &c.envs,
        &environment("demo", &setup.channel, &["tool", "liba >=2"]),
    )
    .await?;
    let b1 = c.first_build("demo", 60).await?;
    checks.check("a Build is created for the Environment", Ok(()));
    let build1 = checks.check(
        "the Build completes",
        c.ended_as(&b1, 240, BuildPhase::Completed).await,
    );
    println!(
        "timing: Environment apply -> Build Completed {} s",
        since(t)
    );
    let build1 = build1.context("the first build did not complete; the rest builds on it")?;
    let id1 = id(&build1);
    checks.that("the Build has a numeric id", id1 >= 1, || {
        format!("id {id1}")
    });
    let demo = checks.check(
        "the Environment is Ready with the build current",
        c.env_until("demo", 30, "demo current", move |e| {
            current_build(e) == Some(id1)
        })
        .await,
    );
    if let Some(demo) = &demo {
        checks.that(
            "its Ready condition is True",
            condition_of(demo, ConditionType::Ready)
                .is_some_and(|c| c.status == ConditionStatus::True),
            || format!("{:?}", demo.status),
        );
        let health = argocd_health(&setup, demo).await;
        checks.check(
            "Argo CD's health check (examples/argocd-health.md) reads it as Healthy",
            health.and_then(|h| contains(&h, "Healthy: build")),
        );
    }
    let art1 = setup.artifacts(&b1);
    for a in [
        "conda-lock.yaml",
        "environment.yaml",
        "archive.tar.gz",
        "image.json",
        "logs/solve.log",
    ] {
        let size = std::fs::metadata(art1.join(a))
            .map(|m| m.len())
            .unwrap_or(0);
        checks.that(&format!("artifact {a} is in storage"), size > 0, || {
            format!("{} is missing or empty", art1.join(a).display())
        });
    }
    // The manifest blob of this build's image: only its image.json references it.
    let m1 = std::fs::read(art1.join("image.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|d| {
            d["manifest_digest"]
                .as_str()
                .map(|s| s.trim_start_matches("sha256:").to_string())
        })
        .unwrap_or_default();
    let kinds: Vec<ArtifactKind> = build1
        .status
        .iter()
        .flat_map(|s| s.artifacts.iter().map(|a| a.kind))
        .collect();
    checks.that(
        "the Build lists its artifacts",
        kinds.contains(&ArtifactKind::Archive),
        || format!("{kinds:?}"),
    );
    let lock1 = std::fs::read_to_string(art1.join("conda-lock.yaml")).unwrap_or_default();
    checks.check("the lockfile pins liba 2.0", contains(&lock1, "liba-2.0-"));
    let blobs = setup.state.join("artifacts/blobs/sha256");
    checks.that(
        "image blobs are content-addressed in storage",
        std::fs::read_dir(&blobs).is_ok_and(|mut d| d.next().is_some()),
        || format!("{} is empty", blobs.display()),
    );
    let meta = setup.prefix(&b1).join("conda-meta");
    checks.that(
        "the prefix is installed with conda-meta records",
        std::fs::read_dir(&meta).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("tool-"))
        }),
        || format!("no tool record in {}", meta.display()),
    );
    checks.equal(
        "the environment's current link names the build",
        std::fs::read_link(setup.prefix("demo")).ok(),
        Some(setup.prefix(&b1)),
    );
    let tool = setup.prefix("demo").join("bin/tool");
    let ran = run(&tool.to_string_lossy(), &[]).await;
    checks.check(
        "the package's script runs from the current environment",
        ran.and_then(|out| contains(&out, &format!("prefix: {}", setup.prefix(&b1).display()))),
    );
    checks.equal(
        "every step ran in its own Job, one each",
        c.job_count(&b1).await?,
        BuildStep::ALL.len(),
    );
    let solved = build1
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, ConditionType::Solved))
        .map(|c| c.status.clone());
    checks.equal(
        "the solve step's condition is True",
        solved.as_deref(),
        Some(ConditionStatus::True.as_str()),
    );
    let count = build1
        .status
        .as_ref()
        .and_then(|s| s.package_count)
        .unwrap_or(0);
    checks.that("the Build reports its package count", count >= 2, || {
        format!("packageCount {count}")
    });

    // An Environment given as a lockfile (the first build's) installs exactly those packages.
    let mut locked = Environment::new(
        "locked",
        EnvironmentSpec {
            artifacts: Some(vec![ArtifactKind::Lockfile, ArtifactKind::Yaml]),
            lockfile: Some(lock1.clone()),
            ..EnvironmentSpec::default()
        },
    );
    locked.metadata.namespace = Some(NS.into());
    apply(&c.envs, &locked).await?;
    let bl = c.first_build("locked", 60).await;
    if let Some(bl) = checks.check("a lockfile Environment gets a Build", bl) {
        checks.check(
            "the lockfile Environment's Build completes",
            c.ended_as(&bl, 120, BuildPhase::Completed).await,
        );
        let meta = setup.prefix(&bl).join("conda-meta");
        checks.that(
            "it installed the locked packages",
            std::fs::read_dir(&meta).is_ok_and(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("liba-2.0-"))
            }),
            || format!("no liba 2.0 record in {}", meta.display()),
        );
        let yaml = std::fs::read_to_string(setup.artifacts(&bl).join("environment.yaml"))
            .unwrap_or_default();
        checks.check("its YAML export pins them", contains(&yaml, "liba=2.0"));
    }

    // 3. Reordered dependencies: same Specification, no new Build.
    let applied = apply(
        &c.envs,
        &environment("demo", &setup.channel, &["liba>=2", "tool"]),
    )
    .await?;
    let generation = applied.metadata.generation;
    checks.check(
        "the reordered spec is observed",
        c.env_until("demo", 30, "the new generation observed", move |e| {
            e.status.as_ref().and_then(|s| s.observed_generation) == generation
        })
        .await,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    checks.equal(
        "reordering the dependencies creates no Build",
        c.build_count("demo").await?,
        1,
    );

    // 4. A changed dependency: a second Build; the first stays.
    apply(
        &c.envs,
        &environment("demo", &setup.channel, &["tool", "liba >=2", "libb"]),
    )
    .await?;
    let b2 = wait_for(60, "a second build of demo", || async {
        Ok(c.builds_of("demo")
            .await?
            .into_iter()
            .map(|b| b.name_any())
            .find(|n| *n != b1))
    })
    .await;
    let b2 = checks
        .check("a changed dependency creates a second Build", b2)
        .context("no second build")?;
    let build2 = checks.check(
        "the second Build completes",
        c.ended_as(&b2, 240, BuildPhase::Completed).await,
    );
    let first = c.builds.get(&b1).await?;
    checks.equal(
        "the first Build stays",
        phase(&first),
        Some(BuildPhase::Completed),
    );
    if let Some(build2) = build2 {
        let id2 = id(&build2);
        checks.that("ids increase", id2 > id1, || format!("{id2} after {id1}"));
        checks.check(
            "the second Build becomes current",
            c.env_until("demo", 30, "the second build current", move |e| {
                current_build(e) == Some(id2)
            })
            .await,
        );
        let link = wait_for(10, "the link to follow", || async {
            Ok(
                (std::fs::read_link(setup.prefix("demo")).ok() == Some(setup.prefix(&b2)))
                    .then_some(()),
            )
        })
        .await;
        checks.check("the current link follows", link);
        let pack =
            std::fs::read_to_string(setup.artifacts(&b2).join("logs/pack.log")).unwrap_or_default();
        checks.that(
            "the second build's pack copies package segments the first left in the segment cache",
            cached(&pack, " of ") > 0 && pack.contains("segments from the segment cache"),
            || pack.clone(),
        );
        let image = std::fs::read_to_string(setup.artifacts(&b2).join("logs/image.log"))
            .unwrap_or_default();
        checks.that(
            "and its image copies the layers of the packages the first had",
            cached(&image, " from the layer cache") > 0,
            || image.clone(),
        );
    }

    // 5. Unsolvable: Failed with the solver's message, on the Build and the Environment.
    apply(
        &c.envs,
        &environment("broken", &setup.channel, &["liba >=7"]),
    )
    .await?;
    let bb = c.first_build("broken", 60).await?;
    checks.equal(
        "an unsolvable spec gets a Build",
        c.build_count("broken").await?,
        1,
    );
    if let Some(b) = checks.check(
        "the unsolvable Build fails",
        c.ended_as(&bb, 180, BuildPhase::Failed).await,
    ) {
        checks.check(
            "the Build's message carries the solver's explanation",
            contains(&message(&b), "liba"),
        );
    }
    let broken = c
        .env_until("broken", 30, "broken Failed", |e| {
            condition_of(e, ConditionType::Failed).is_some_and(|c| c.message.contains("liba"))
        })
        .await;
    if let Some(broken) = checks.check("the Environment says Failed with the message", broken) {
        checks.equal(
            "the Environment is not Ready (BuildFailed)",
            condition_of(&broken, ConditionType::Ready).map(|c| c.reason.as_str()),
            Some("BuildFailed"),
        );
        let health = argocd_health(&setup, &broken).await;
        checks.check(
            "Argo CD's health check reads it as Degraded, with the solver's message",
            health.and_then(|h| contains(&h, "Degraded: build")),
        );
    }

    // 6. Invalid spec: a condition, no Build.
    apply(
        &c.envs,
        &environment("invalid", &setup.channel, &["liba >=>= 2"]),
    )
    .await?;
    checks.check(
        "an invalid spec is reported on the Environment",
        c.ready_reason("invalid", "InvalidSpecification").await,
    );
    checks.equal(
        "an invalid spec creates no Build",
        c.build_count("invalid").await?,
        0,
    );

    // 7. Cancel a running build: its Jobs go, it ends Canceled.
    apply(&c.envs, &environment("hanging", &setup.hang, &["liba"])).await?;
    let bh = checks.check(
        "a build that hangs in solve starts",
        c.solving("hanging").await,
    );
    if let Some(bh) = bh {
        c.builds
            .patch(
                &bh,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"cancel": true}})),
            )
            .await?;
        checks.check(
            "cancel ends the Build Canceled",
            c.ended_as(&bh, 30, BuildPhase::Canceled).await,
        );
        let gone = wait_for(30, "its Jobs gone", || async {
            Ok((c.job_count(&bh).await? == 0).then_some(()))
        })
        .await;
        checks.check("cancel deletes its Jobs", gone);
        checks.check(
            "the Environment reports the cancel",
            c.ready_reason("hanging", "BuildCanceled").await,
        );
    }

    // 8. A Job deleted from under a running build: the build fails, clearly.
    apply(&c.envs, &environment("orphan", &setup.hang, &["libb"])).await?;
    if let Some(bo) = checks.check("a second hanging build starts", c.solving("orphan").await) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t = Instant::now();
        let solve = format!("{bo}-{}", BuildStep::Solve.as_str());
        c.jobs.delete(&solve, &DeleteParams::background()).await?;
        wait_for(60, "the Job gone", || async {
            Ok(c.jobs.get_opt(&solve).await?.is_none().then_some(()))
        })
        .await?;
        // The operator checks running Jobs against the API every 30 s, whatever its watch shows.
        let b = checks.check(
            "a deleted Job fails its build",
            c.ended_as(&bo, 120, BuildPhase::Failed).await,
        );
        println!("timing: Job deleted -> build Failed {} s", since(t));
        if let Some(b) = b {
            checks.check(
                "the failure names the deleted Job",
                contains(&message(&b), "deleted before it finished"),
            );
        }
    }

    // 8b. A step whose pod cannot start (its image is gone) fails with the reason, well before
    // the Job's deadline.
    apply(&c.envs, &environment("stuck", &setup.hang, &["liba"])).await?;
    if let Some(bs) = checks.check("a third hanging build starts", c.solving("stuck").await) {
        let sock = var("CONDA_STORE_CONTAINERD_SOCK")?;
        run(
            "ctr",
            &[
                "--address",
                &sock,
                "-n",
                "k8s.io",
                "images",
                "rm",
                &setup.image,
            ],
        )
        .await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
        pods.delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&format!("{}={bs}", labels::BUILD)),
        )
        .await?;
        if let Some(b) = checks.check(
            "a pod that cannot start fails its build",
            c.ended_as(&bs, 240, BuildPhase::Failed).await,
        ) {
            checks.check(
                "the failure names the reason",
                contains(&message(&b), "ErrImageNeverPull"),
            );
        }
        let images = setup.root.join("tests/e2e/images.sh");
        run(
            "bash",
            &[&images.to_string_lossy(), "import", "conda-store"],
        )
        .await?;
    }

    // 9. The operator killed mid-build: the build completes after a restart, without duplicates.
    apply(&c.envs, &environment("restart", &setup.channel, &["tool"])).await?;
    let br = checks.check("a build starts before the kill", c.solving("restart").await);
    operator.start_kill()?;
    operator.wait().await?;
    let t = Instant::now();
    operator = setup.start_operator(2, None)?;
    if let Some(br) = br {
        checks.check(
            "after the restart the build completes",
            c.ended_as(&br, 240, BuildPhase::Completed).await,
        );
        println!("timing: restart -> Completed {} s", since(t));
        checks.equal(
            "no duplicate Build after the restart",
            c.build_count("restart").await?,
            1,
        );
        checks.equal(
            "one Job per step after the restart",
            c.job_count(&br).await?,
            BuildStep::ALL.len(),
        );
    }
    checks.check(
        "the new process holds the leader Lease",
        c.lease_holder("e2e-2", 30).await,
    );

    // 10. An Environment follows its build: 50 Environments at once (lockfile only), and the
    // slowest gap between a build's end and its Environment's Ready.
    let many: Vec<String> = (1..=50).map(|i| format!("many-{i}")).collect();
    for name in &many {
        let mut e = environment(name, &setup.channel, &["liba"]);
        e.spec.artifacts = Some(vec![ArtifactKind::Lockfile]);
        apply(&c.envs, &e).await?;
    }
    let all_ready = wait_for(600, "50 Environments Ready", || async {
        let envs = c.envs.list(&ListParams::default()).await?.items;
        let ready: Vec<Environment> = envs
            .into_iter()
            .filter(|e| e.name_any().starts_with("many-"))
            .filter(|e| {
                condition_of(e, ConditionType::Ready)
                    .is_some_and(|c| c.status == ConditionStatus::True)
            })
            .collect();
        Ok((ready.len() == many.len()).then_some(ready))
    })
    .await;
    if let Some(ready) = checks.check("50 Environments become Ready", all_ready) {
        let ended: BTreeMap<i64, i64> = c
            .builds
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter_map(|b| Some((id(b), b.status.as_ref()?.ended_on.as_ref()?.0.as_second())))
            .collect();
        let mut gaps: Vec<i64> = ready
            .iter()
            .filter_map(|e| {
                let at = condition_of(e, ConditionType::Ready)?
                    .last_transition_time
                    .0
                    .as_second();
                Some(at - ended.get(&current_build(e)?)?)
            })
            .collect();
        gaps.sort();
        let (median, slowest) = (gaps.get(gaps.len() / 2).copied(), gaps.last().copied());
        println!(
            "timing: build end -> Environment Ready over {}: median {} s, slowest {} s (1 s resolution)",
            gaps.len(),
            median.unwrap_or(-1),
            slowest.unwrap_or(-1)
        );
        checks.that(
            "every Environment is Ready within 2 s of its build's end",
            gaps.len() == many.len() && slowest.is_some_and(|s| s <= 2),
            || format!("gaps {gaps:?}"),
        );
    }
    for name in &many {
        c.envs.delete(name, &DeleteParams::default()).await?;
    }

    // A second replica waits while the Lease is held: it never acts.
    let standby_log = setup.state.join("operator-standby.log");
    let read_standby = || std::fs::read_to_string(&standby_log).unwrap_or_default();
    let mut standby = setup.start_operator(3, Some(format!("127.0.0.1:{}", free_port())))?;
    let waiting = wait_for(20, "the standby waiting", || async {
        Ok(read_standby()
            .contains("waiting for the leader Lease")
            .then_some(()))
    })
    .await;
    checks.check("a second replica waits for the Lease", waiting);
    tokio::time::sleep(Duration::from_secs(5)).await;
    checks.that(
        "and does not lead while the first holds it",
        !read_standby().contains("leading"),
        read_standby,
    );
    standby.start_kill()?;
    standby.wait().await?;

    // 10b. What a person and Prometheus see.
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    checks.that(
        "events tell what happened",
        reasons.iter().any(|r| r == "Completed"),
        || format!("{reasons:?}"),
    );
    let metrics = http_get(&setup.metrics()).await.unwrap_or_default();
    checks.check(
        "/metrics counts reconciles and builds",
        contains(&metrics, r#"conda_store_builds{phase="COMPLETED"}"#),
    );
    checks.check(
        "/metrics has step durations",
        contains(
            &metrics,
            r#"conda_store_step_duration_seconds_count{outcome="succeeded",step="solve"}"#,
        ),
    );
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some("system:serviceaccount:conda-store:conda-store-operator".into()),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(NS.into()),
                verb: Some("get".into()),
                resource: Some("secrets".into()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    let allowed = reviews
        .create(&PostParams::default(), &review)
        .await?
        .status
        .map(|s| s.allowed);
    checks.equal(
        "the operator's ServiceAccount may not read Secrets",
        allowed,
        Some(false),
    );
    let port = setup.metrics_port;
    let health = async {
        http_get(&format!("http://127.0.0.1:{port}/healthz")).await?;
        http_get(&format!("http://127.0.0.1:{port}/readyz")).await
    };
    checks.check("/healthz and /readyz answer", health.await);

    // 11. Deleting an Environment removes its builds and their artifacts.
    c.envs.delete("demo", &DeleteParams::default()).await?;
    wait_for(60, "demo deleted", || async {
        Ok(c.envs.get_opt("demo").await?.is_none().then_some(()))
    })
    .await?;
    let gone = wait_for(60, "demo's builds gone", || async {
        Ok((c.build_count("demo").await? == 0).then_some(()))
    })
    .await;
    checks.check("deleting the Environment deletes its Builds", gone);
    let (art2, lock_of) = (setup.artifacts(&b2), |dir: &Path| {
        dir.join("conda-lock.yaml")
    });
    let gone = wait_for(30, "their artifacts gone", || async {
        Ok((!exists(&lock_of(&art1)) && !exists(&lock_of(&art2))).then_some(()))
    })
    .await;
    checks.check("and their artifacts", gone);
    checks.that(
        "and their installed prefixes",
        !exists(&setup.prefix(&b1)),
        || format!("{} remains", setup.prefix(&b1).display()),
    );
    let link = wait_for(30, "the link gone", || async {
        Ok((!exists(&setup.prefix("demo"))).then_some(()))
    })
    .await;
    checks.check("no current link is left dangling", link);
    checks.that(
        "no empty build directory is left in storage",
        !exists(&art1) && !exists(&art2),
        || "a build directory remains".into(),
    );

    // 12. Image blobs no remaining build references are collected (every 10 s here); the
    // blobs of the images that remain stay.
    let stray = blobs.join("f".repeat(64));
    let gone = wait_for(60, "the stray blob gone", || async {
        Ok((!exists(&stray)).then_some(()))
    })
    .await;
    checks.check("a stray blob is collected", gone);
    let gone = wait_for(60, "the manifest blob gone", || async {
        Ok((!m1.is_empty() && !exists(&blobs.join(&m1))).then_some(()))
    })
    .await;
    checks.check("so is the deleted build's image manifest", gone);
    let complete = remaining_images_complete(&setup.state.join("artifacts"));
    if let Some(n) = checks.check("every remaining image keeps all its blobs", complete) {
        println!("{n} remaining images complete");
    }
    let metrics = http_get(&setup.metrics()).await.unwrap_or_default();
    checks.check(
        "the collection is counted",
        contains(&metrics, "conda_store_blobs_deleted_total"),
    );

    // 13. A leader stopped by SIGTERM releases the Lease: a standby leads at its next try
    // (every 2 s), not when the Lease expires (15 s after the last renewal).
    let mut standby = setup.start_operator(4, Some(format!("127.0.0.1:{}", free_port())))?;
    let waiting = wait_for(20, "the standby waiting", || async {
        Ok((read_standby()
            .matches("waiting for the leader Lease")
            .count()
            == 2)
            .then_some(()))
    })
    .await;
    checks.check("a standby waits", waiting);
    let pid = operator.id().context("the leader's pid")?;
    run("kill", &["-TERM", &pid.to_string()]).await?;
    let t = Instant::now();
    checks.check(
        "after SIGTERM the leader's replacement leads within 6 s",
        c.lease_holder("e2e-4", 6).await,
    );
    println!("timing: SIGTERM -> standby leads {} s", since(t));
    operator.wait().await?;
    let log = std::fs::read_to_string(setup.state.join("operator.log")).unwrap_or_default();
    checks.that(
        "the stopped leader said it released the Lease",
        log.contains("leader Lease is released"),
        || log.lines().rev().take(20).collect::<Vec<_>>().join("\n"),
    );
    standby.start_kill()?;
    standby.wait().await?;

    if checks.failed > 0 {
        println!("--- operator log (last 60 lines)");
        let lines: Vec<&str> = log.lines().collect();
        println!("{}", lines[lines.len().saturating_sub(60)..].join("\n"));
    }
    checks.finish();
    Ok(())
}
