//! The Job of each build step, built from the Build and the configuration alone.
//!
//! Every Job runs this binary's `step` subcommand in the configured image. It reports through
//! its termination message and writes to artifact storage; it gets no Kubernetes API
//! credentials. Names and labels are deterministic, so creating a Job twice is harmless.

use std::collections::BTreeMap;

use clap::ValueEnum;

use conda_store_crds::{Artifact, Build, BuildStep};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, HostPathVolumeSource,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use serde::{Deserialize, Serialize};

use crate::config::{RunArgs, VolumeSpec};
use crate::labels;
use conda_store_storage::args::Backend;

/// What a step's Job needs to know beyond the configuration.
pub struct JobInputs<'a> {
    pub build: &'a Build,
    pub step: BuildStep,
    pub build_id: i64,
    /// The environment's name as people know it (the image's name, the YAML export's).
    pub environment_name: &'a str,
    /// The channel alias from the namespace's policy.
    pub channel_alias: Option<&'a str>,
    /// Whether the specification has a pip section to resolve (the solve Job then gets the
    /// namespace's package and uv caches, for the interpreter the resolver runs).
    pub pip: bool,
}

/// uv's cache of a namespace's pip downloads, beside its prefixes (installs hard-link from it);
/// one per namespace, as an index's credentials may differ between teams.
pub fn uv_cache(envs_dir: &str, namespace: &str) -> String {
    format!("{}/{namespace}/.uv-cache", envs_dir.trim_end_matches('/'))
}

/// The variables that configure pip sections, for the solve and install steps.
fn pip_env(cfg: &RunArgs, namespace: &str) -> Vec<EnvVar> {
    let mut env = vec![env_var(
        "CONDA_STORE_PIP_CACHE",
        &uv_cache(&cfg.envs_dir, namespace),
    )];
    if let Some(url) = &cfg.pip.pip_index_url {
        env.push(env_var("CONDA_STORE_PIP_INDEX_URL", url));
    }
    if !cfg.pip.pip_extra_index_urls.is_empty() {
        env.push(env_var(
            "CONDA_STORE_PIP_EXTRA_INDEX_URLS",
            &cfg.pip.pip_extra_index_urls.join(","),
        ));
    }
    if cfg.pip.pip_allow_build {
        env.push(env_var("CONDA_STORE_PIP_ALLOW_BUILD", "true"));
    }
    env
}

/// The storage key of a build's normalised specification, the solve step's input: written by
/// the operator before the solve Job starts, read by the Job (no size limit but storage's).
pub fn spec_key(namespace: &str, build: &str) -> String {
    format!("{}/specification.json", labels::build_key(namespace, build))
}

/// The package cache of a namespace's installs, as the Jobs see it: one per namespace, beside
/// its prefixes (so installs hard-link from it), shared by that namespace's builds only.
pub fn package_cache(envs_dir: &str, namespace: &str) -> String {
    format!("{}/{namespace}/.pkgs", envs_dir.trim_end_matches('/'))
}

/// The installed prefix of a build, as the Jobs see it.
pub fn prefix_path(envs_dir: &str, namespace: &str, build: &str) -> String {
    format!("{}/{namespace}/{build}", envs_dir.trim_end_matches('/'))
}

/// What one step's Job needs beyond every step's: its subcommand's arguments and variables,
/// the sub-paths of the environments volume it mounts, and whether it writes image blobs.
struct StepNeeds {
    args: Vec<String>,
    env: Vec<EnvVar>,
    envs_subs: Vec<String>,
    blobs: bool,
}

/// The repodata cache's directory, in the environments volume (or in a namespace's directory
/// there, for solves that run tenant code).
const REPODATA_CACHE: &str = ".repodata-cache";

/// The one place that says what each step's Job gets (exhaustive: a new step must say).
fn step_needs(
    i: &JobInputs,
    cfg: &RunArgs,
    namespace: &str,
    build_name: &str,
    prefix: &str,
) -> StepNeeds {
    let envs = cfg.envs_dir.trim_end_matches('/');
    let prefix_sub = format!("{namespace}/{build_name}");
    let none = StepNeeds {
        args: Vec::new(),
        env: Vec::new(),
        envs_subs: Vec::new(),
        blobs: false,
    };
    match i.step {
        // Solve reads its specification from storage and touches no environment; it keeps
        // remote repodata in a cache solve Jobs share (revalidated before each use). Which
        // cache: a pip section's resolver runs the environment's python, code a tenant chose,
        // in this pod; such a solve gets its namespace's own cache, so what that code may
        // write there reaches no other team's solves. The cache of every namespace is mounted
        // only where no tenant code runs.
        BuildStep::Solve => {
            let cache = if i.pip {
                format!("{namespace}/{REPODATA_CACHE}")
            } else {
                REPODATA_CACHE.to_string()
            };
            let mut env = vec![
                env_var(
                    "CONDA_STORE_SPECIFICATION_KEY",
                    &spec_key(namespace, build_name),
                ),
                env_var("CONDA_STORE_REPODATA_CACHE", &format!("{envs}/{cache}")),
            ];
            if let Some(alias) = i.channel_alias {
                env.push(env_var("CONDA_STORE_CHANNEL_ALIAS", alias));
            }
            let mut envs_subs = vec![cache];
            if i.pip {
                // The resolver runs the environment's python, installed from the package cache.
                env.push(env_var(
                    "CONDA_STORE_PKGS_DIR",
                    &package_cache(&cfg.envs_dir, namespace),
                ));
                env.extend(pip_env(cfg, namespace));
                env.push(env_var(
                    "CONDA_STORE_PIP_INTERPRETERS",
                    &format!("{envs}/{namespace}/.pip-python"),
                ));
                envs_subs.push(format!("{namespace}/.pkgs"));
                envs_subs.push(format!("{namespace}/.uv-cache"));
                envs_subs.push(format!("{namespace}/.pip-python"));
            }
            StepNeeds {
                args: vec!["--name".into(), i.environment_name.to_string()],
                env,
                envs_subs,
                ..none
            }
        }
        // Install mounts its namespace's directory, which holds the namespace's package cache
        // beside its prefixes: installs hard-link from the cache, and Linux refuses links
        // across mounts (even of one file system), so the cache and the prefix share a mount.
        BuildStep::Install => StepNeeds {
            args: vec!["--prefix".into(), prefix.to_string()],
            env: std::iter::once(env_var(
                "CONDA_STORE_PKGS_DIR",
                &package_cache(&cfg.envs_dir, namespace),
            ))
            .chain(pip_env(cfg, namespace))
            .collect(),
            envs_subs: vec![namespace.to_string()],
            ..none
        },
        BuildStep::Pack => StepNeeds {
            args: vec![
                "--prefix".into(),
                prefix.to_string(),
                "--format".into(),
                cfg.archive_format
                    .to_possible_value()
                    .expect("every format has a name")
                    .get_name()
                    .to_string(),
            ],
            env: vec![env_var(
                "CONDA_STORE_PACK_CACHE",
                &format!("{envs}/.pack-cache"),
            )],
            envs_subs: vec![prefix_sub, ".pack-cache".into()],
            ..none
        },
        BuildStep::Image => StepNeeds {
            args: vec![
                "--prefix".into(),
                prefix.to_string(),
                "--name".into(),
                i.environment_name.to_string(),
                "--build-id".into(),
                i.build_id.to_string(),
            ],
            env: vec![env_var(
                "CONDA_STORE_IMAGE_CACHE",
                &format!("{envs}/.image-cache"),
            )],
            envs_subs: vec![prefix_sub, ".image-cache".into()],
            blobs: true,
        },
    }
}

/// The Job running `i.step` of `i.build`.
pub fn step_job(i: &JobInputs, cfg: &RunArgs) -> Job {
    let build_name = i.build.metadata.name.clone().unwrap_or_default();
    let namespace = i.build.metadata.namespace.clone().unwrap_or_default();
    let step = i.step.as_str();
    let prefix = prefix_path(&cfg.envs_dir, &namespace, &build_name);

    let mut labels = BTreeMap::from([
        (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
        (labels::BUILD.to_string(), build_name.clone()),
        (labels::STEP.to_string(), step.to_string()),
        (labels::NAMESPACE.to_string(), namespace.clone()),
        (
            labels::BUILD_UID.to_string(),
            i.build.metadata.uid.clone().unwrap_or_default(),
        ),
    ]);
    if let Some(env) = i
        .build
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::ENVIRONMENT))
    {
        labels.insert(labels::ENVIRONMENT.to_string(), env.clone());
    }

    let mut args: Vec<String> = vec!["step".into(), step.into()];
    // A step's Job starts with the one it follows (see `decide::build::next_action`); it
    // waits for that step's completion marker before it begins.
    if let Some(need) = i.step.needs() {
        args.extend(["--after".into(), need.as_str().into()]);
    }
    let mut env = vec![
        env_var(
            "CONDA_STORE_BUILD_KEY",
            &labels::build_key(&namespace, &build_name),
        ),
        env_var("CONDA_STORE_WORK_DIR", "/tmp"),
        env_var("TMPDIR", "/tmp"),
        env_var("HOME", "/tmp"),
    ];
    let what = step_needs(i, cfg, &namespace, &build_name, &prefix);
    args.extend(what.args);
    env.extend(what.env);

    // The step sees only what its build needs of the shared volumes, each a sub-path bind
    // mount: its own prefix and the one cache it uses of the environments volume, its own
    // build's directory (and, for images, the content-addressed blobs) of the artifact store.
    // Never another team's prefixes, artifacts or logs.
    let envs = cfg.envs_dir.trim_end_matches('/');
    let envs_subs = what.envs_subs;
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    let mut mounts = vec![mount("tmp", "/tmp")];
    // What the init container creates (as the Job's user) before the sub-paths are mounted.
    let mut prepare: Vec<(&str, String)> = Vec::new();
    if !envs_subs.is_empty() {
        volumes.push(volume("envs", &cfg.envs_volume));
        for sub in &envs_subs {
            mounts.push(sub_mount("envs", &format!("{envs}/{sub}"), sub));
            prepare.push(("envs", sub.clone()));
        }
    }
    let storage = &cfg.storage;
    match storage.storage {
        Backend::Local => {
            env.push(env_var("CONDA_STORE_STORAGE", "local"));
            let dir = storage.storage_dir.to_string_lossy().into_owned();
            env.push(env_var("CONDA_STORE_STORAGE_DIR", &dir));
            if let Some(v) = &cfg.storage_volume {
                volumes.push(volume("artifacts", v));
                let mut subs = vec![labels::build_key(&namespace, &build_name)];
                if what.blobs {
                    subs.push("blobs".into());
                }
                for sub in subs {
                    let at = format!("{}/{sub}", dir.trim_end_matches('/'));
                    mounts.push(sub_mount("artifacts", &at, &sub));
                    prepare.push(("artifacts", sub));
                }
            }
        }
        Backend::S3 => {
            env.push(env_var("CONDA_STORE_STORAGE", "s3"));
            if let Some(e) = &storage.s3_endpoint {
                env.push(env_var("CONDA_STORE_S3_ENDPOINT", e));
            }
            env.push(env_var("CONDA_STORE_S3_BUCKET", &storage.s3_bucket));
            env.push(env_var("CONDA_STORE_S3_REGION", &storage.s3_region));
            env.push(env_var("CONDA_STORE_S3_PREFIX", &storage.s3_prefix));
            if let Some(secret) = &cfg.s3_secret {
                for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
                    env.push(EnvVar {
                        name: key.into(),
                        value_from: Some(EnvVarSource {
                            secret_key_ref: Some(SecretKeySelector {
                                name: secret.clone(),
                                key: key.into(),
                                optional: Some(false),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                }
            }
        }
    }

    let non_root = cfg.job_user != 0;
    let container = Container {
        name: step.into(),
        image: Some(cfg.job_image.clone()),
        image_pull_policy: Some(cfg.job_image_pull_policy.clone()),
        args: Some(args),
        env: Some(env),
        volume_mounts: Some(mounts),
        termination_message_path: Some("/dev/termination-log".into()),
        termination_message_policy: Some("File".into()),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("100m".into())),
                ("memory".to_string(), Quantity("128Mi".into())),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity(cfg.job_cpu_limit.clone())),
                ("memory".to_string(), Quantity(cfg.job_memory_limit.clone())),
                (
                    "ephemeral-storage".to_string(),
                    Quantity(cfg.job_ephemeral_limit.clone()),
                ),
            ])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(non_root),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            seccomp_profile: Some(runtime_default()),
            ..Default::default()
        }),
        ..Default::default()
    };

    let init_containers = (!prepare.is_empty()).then(|| {
        let mut args = vec!["mkdirs".to_string()];
        let mut init_mounts = Vec::new();
        for name in ["envs", "artifacts"] {
            if prepare.iter().any(|(v, _)| *v == name) {
                init_mounts.push(mount(name, &format!("/prepare/{name}")));
            }
        }
        args.extend(prepare.iter().map(|(v, sub)| format!("/prepare/{v}/{sub}")));
        vec![Container {
            name: "prepare".into(),
            args: Some(args),
            volume_mounts: Some(init_mounts),
            env: None,
            termination_message_path: None,
            termination_message_policy: None,
            ..container.clone()
        }]
    });

    // In a shared job namespace the Build cannot own its Jobs (owners are in the same
    // namespace); its finalizer deletes them instead.
    let shared = cfg.job_namespace.is_some();
    Job {
        metadata: ObjectMeta {
            name: Some(labels::job_name(&namespace, &build_name, step, shared)),
            owner_references: (!shared).then(|| vec![owner(i.build)]),
            namespace: Some(cfg.job_namespace.clone().unwrap_or(namespace)),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(cfg.job_backoff_limit),
            active_deadline_seconds: Some(cfg.job_deadline_seconds),
            ttl_seconds_after_finished: Some(cfg.job_ttl_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    init_containers,
                    containers: vec![container],
                    volumes: Some(volumes),
                    security_context: Some(PodSecurityContext {
                        run_as_user: Some(cfg.job_user),
                        run_as_group: Some(cfg.job_user),
                        fs_group: Some(cfg.job_user),
                        run_as_non_root: Some(non_root),
                        seccomp_profile: Some(runtime_default()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The container runtime's default seccomp profile (Pod Security "restricted" requires one).
fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// The controller owner reference to `build` (deleting the Build deletes its Jobs).
pub fn owner(build: &Build) -> OwnerReference {
    build
        .controller_owner_ref(&())
        .expect("a Build read from the API has a name and uid")
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

fn sub_mount(name: &str, path: &str, sub_path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        sub_path: Some(sub_path.into()),
        ..Default::default()
    }
}

fn volume(name: &str, spec: &VolumeSpec) -> Volume {
    match spec {
        VolumeSpec::HostPath(path) => Volume {
            name: name.into(),
            host_path: Some(HostPathVolumeSource {
                path: path.clone(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            ..Default::default()
        },
        VolumeSpec::Claim(claim) => Volume {
            name: name.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: Some(false),
            }),
            ..Default::default()
        },
    }
}

/// The kubelet keeps at most this many bytes of a termination message.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// What a step reports in its termination message: written by `step ...`, read by the
/// Build reconciler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepReport {
    /// The step's name.
    pub step: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// Why it failed, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Artifacts written.
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    /// Step-specific figures (files, sizes, digests).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
    /// Wall time.
    #[serde(default)]
    pub duration_ms: u64,
}

impl StepReport {
    /// The report as JSON of at most [`TERMINATION_MESSAGE_LIMIT`] bytes: a long message is
    /// shortened (keeping its start, where a solver puts the cause), then the details dropped.
    pub fn to_termination_message(&self) -> String {
        let mut report = self.clone();
        let mut text = serde_json::to_string(&report).unwrap_or_default();
        while text.len() > TERMINATION_MESSAGE_LIMIT {
            if !report.details.is_null() {
                report.details = serde_json::Value::Null;
            } else if let Some(msg) = &mut report.message {
                let excess = text.len() - TERMINATION_MESSAGE_LIMIT + 16;
                let keep = msg.len().saturating_sub(excess);
                let mut cut = keep;
                while !msg.is_char_boundary(cut) {
                    cut -= 1;
                }
                msg.truncate(cut);
                msg.push_str(" [...]");
            } else {
                report
                    .artifacts
                    .truncate(report.artifacts.len().saturating_sub(1));
            }
            text = serde_json::to_string(&report).unwrap_or_default();
        }
        text
    }
}

/// Where a step Job's `prepare` init container would make directories, as this process sees
/// them: `envs` sub-paths under `envs_dir`, `artifacts` ones under `storage_dir`. `None` when
/// the Job has no such container or names a volume this process does not have.
pub fn prepared_dirs(
    job: &Job,
    envs_dir: &str,
    storage_dir: Option<&std::path::Path>,
) -> Option<Vec<std::path::PathBuf>> {
    let pod = job.spec.as_ref()?.template.spec.as_ref()?;
    let init = pod.init_containers.as_ref()?.first()?;
    let args = init.args.as_ref()?;
    if args.first().map(String::as_str) != Some("mkdirs") {
        return None;
    }
    args[1..]
        .iter()
        .map(|a| {
            if let Some(sub) = a.strip_prefix("/prepare/envs/") {
                Some(std::path::Path::new(envs_dir).join(sub))
            } else if let Some(sub) = a.strip_prefix("/prepare/artifacts/") {
                storage_dir.map(|d| d.join(sub))
            } else {
                None
            }
        })
        .collect()
}

/// The Job without its `prepare` init container, once its directories exist: a pod that
/// starts one container instead of two (about a container start on the build's path).
pub fn without_prepare(mut job: Job) -> Job {
    if let Some(pod) = job.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        pod.init_containers = None;
    }
    job
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use conda_store_crds::BuildSpec;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn cfg(extra: &[&str]) -> RunArgs {
        let mut args = vec![
            "x",
            "--job-image=img:1",
            "--envs-volume=hostPath:/srv/envs",
            "--storage-volume=hostPath:/srv/artifacts",
        ];
        args.extend(extra);
        Cli::parse_from(args).run
    }

    fn build() -> Build {
        let mut b = Build::new(
            "env-11111111-1",
            BuildSpec {
                environment: "env".into(),
                specification: "spec-1".into(),
                cancel: false,
            },
        );
        b.metadata.namespace = Some("team".into());
        b.metadata.uid = Some("uid-1".into());
        b.metadata.labels = Some(BTreeMap::from([(labels::ENVIRONMENT.into(), "env".into())]));
        b
    }

    fn container(job: &Job) -> &Container {
        &job.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
    }

    fn env_of(job: &Job, name: &str) -> Option<String> {
        container(job)
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    }

    #[test]
    fn jobs_in_a_shared_namespace_are_named_after_their_build_namespace_and_not_owned() {
        let b = build();
        let job = step_job(
            &JobInputs {
                build: &b,
                step: BuildStep::Install,
                build_id: 12,
                environment_name: "env",
                channel_alias: None,
                pip: false,
            },
            &cfg(&["--job-namespace=conda-store"]),
        );
        assert_eq!(job.metadata.namespace.as_deref(), Some("conda-store"));
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("team.env-11111111-1-install")
        );
        assert!(job.metadata.owner_references.is_none());
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[labels::NAMESPACE], "team");
        assert_eq!(labels[labels::BUILD], "env-11111111-1");
        // The prefix and the artifacts stay the build's.
        assert_eq!(
            env_of(&job, "CONDA_STORE_BUILD_KEY").as_deref(),
            Some("builds/team/env-11111111-1")
        );
    }

    #[test]
    fn solve_job() {
        let b = build();
        let job = step_job(
            &JobInputs {
                build: &b,
                step: BuildStep::Solve,
                build_id: 12,
                environment_name: "My Env",
                channel_alias: Some("http://mirror/"),
                pip: false,
            },
            &cfg(&[]),
        );
        assert_eq!(job.metadata.name.as_deref(), Some("env-11111111-1-solve"));
        assert_eq!(job.metadata.namespace.as_deref(), Some("team"));
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("Build", Some(true))
        );
        assert_eq!(
            container(&job).args.as_ref().unwrap(),
            &["step", "solve", "--name", "My Env"]
        );
        assert_eq!(
            env_of(&job, "CONDA_STORE_BUILD_KEY").as_deref(),
            Some("builds/team/env-11111111-1")
        );
        assert_eq!(
            env_of(&job, "CONDA_STORE_SPECIFICATION_KEY").as_deref(),
            Some("builds/team/env-11111111-1/specification.json")
        );
        assert_eq!(
            env_of(&job, "CONDA_STORE_CHANNEL_ALIAS").as_deref(),
            Some("http://mirror/")
        );
        assert_eq!(
            env_of(&job, "CONDA_STORE_STORAGE").as_deref(),
            Some("local")
        );
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let names: Vec<&str> = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        // The solve step reads and writes storage, and mounts of the environments volume only
        // the repodata cache (see steps_mount_only_their_own_build).
        assert_eq!(names, ["tmp", "envs", "artifacts"]);
        assert_eq!(
            env_of(&job, "CONDA_STORE_REPODATA_CACHE").as_deref(),
            Some("/var/lib/conda-store/envs/.repodata-cache")
        );
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[labels::STEP], "solve");
        assert_eq!(labels[labels::ENVIRONMENT], "env");
    }

    #[test]
    fn install_pack_and_image_use_the_build_prefix() {
        let b = build();
        let c = cfg(&["--envs-dir=/envs/"]);
        for (step, after, extra) in [
            (BuildStep::Install, "solve", vec![]),
            (BuildStep::Pack, "install", vec!["--format", "gzip"]),
            (
                BuildStep::Image,
                "install",
                vec!["--name", "env", "--build-id", "12"],
            ),
        ] {
            let job = step_job(
                &JobInputs {
                    build: &b,
                    step,
                    build_id: 12,
                    environment_name: "env",
                    channel_alias: None,
                    pip: false,
                },
                &c,
            );
            // Each waits for the step it follows (its Job starts with that one's).
            let mut want = vec![
                "step",
                step.as_str(),
                "--after",
                after,
                "--prefix",
                "/envs/team/env-11111111-1",
            ];
            want.extend(extra);
            assert_eq!(container(&job).args.as_ref().unwrap(), &want);
            assert_eq!(env_of(&job, "CONDA_STORE_SPECIFICATION_KEY"), None);
        }
    }

    /// Each step mounts only its own build's prefix and artifacts (and the one cache it uses),
    /// as sub-paths an init container made; never the volumes' roots.
    #[test]
    fn steps_mount_only_their_own_build() {
        let b = build();
        let c = cfg(&["--envs-dir=/envs/", "--storage-dir=/artifacts"]);
        for (step, want) in [
            (
                BuildStep::Solve,
                vec![
                    ("envs", ".repodata-cache"),
                    ("artifacts", "builds/team/env-11111111-1"),
                ],
            ),
            (
                BuildStep::Install,
                vec![
                    ("envs", "team"),
                    ("artifacts", "builds/team/env-11111111-1"),
                ],
            ),
            (
                BuildStep::Pack,
                vec![
                    ("envs", "team/env-11111111-1"),
                    ("envs", ".pack-cache"),
                    ("artifacts", "builds/team/env-11111111-1"),
                ],
            ),
            (
                BuildStep::Image,
                vec![
                    ("envs", "team/env-11111111-1"),
                    ("envs", ".image-cache"),
                    ("artifacts", "builds/team/env-11111111-1"),
                    ("artifacts", "blobs"),
                ],
            ),
        ] {
            let job = step_job(
                &JobInputs {
                    build: &b,
                    step,
                    build_id: 1,
                    environment_name: "env",
                    channel_alias: None,
                    pip: false,
                },
                &c,
            );
            let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
            let mounts: Vec<(String, String, String)> = container(&job)
                .volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .filter(|m| m.name != "tmp")
                .map(|m| {
                    (
                        m.name.clone(),
                        m.sub_path.clone().unwrap_or_default(),
                        m.mount_path.clone(),
                    )
                })
                .collect();
            let got: Vec<(&str, &str)> = mounts
                .iter()
                .map(|(n, s, _)| (n.as_str(), s.as_str()))
                .collect();
            assert_eq!(got, want, "{step:?}");
            for (name, sub, at) in &mounts {
                let root = if name == "envs" {
                    "/envs"
                } else {
                    "/artifacts"
                };
                assert_eq!(*at, format!("{root}/{sub}"), "{step:?}");
            }
            // The init container makes exactly those directories, then the step runs.
            let init = &pod.init_containers.as_ref().unwrap()[0];
            let args = init.args.as_ref().unwrap();
            assert_eq!(args[0], "mkdirs");
            assert_eq!(args.len(), want.len() + 1, "{args:?}");
            for (v, sub) in &want {
                assert!(args.contains(&format!("/prepare/{v}/{sub}")), "{args:?}");
            }
            assert_eq!(init.security_context, container(&job).security_context);
            // Where this process makes them instead (as it sees the volumes), and the Job it
            // then creates: the same pod without the init container.
            let here =
                prepared_dirs(&job, "/envs", Some(std::path::Path::new("/artifacts"))).unwrap();
            let mut want_here: Vec<std::path::PathBuf> = want
                .iter()
                .map(|(v, sub)| std::path::Path::new(&format!("/{v}")).join(sub))
                .collect();
            let mut here_sorted = here.clone();
            here_sorted.sort();
            want_here.sort();
            assert_eq!(here_sorted, want_here, "{step:?}");
            // Without local storage here, the artifacts' directories cannot be made here.
            if want.iter().any(|(v, _)| *v == "artifacts") {
                assert_eq!(prepared_dirs(&job, "/envs", None), None);
            }
            let lean = without_prepare(job.clone());
            let lean_pod = lean.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
            assert!(lean_pod.init_containers.is_none());
            assert_eq!(lean_pod.containers, pod.containers);
            assert_eq!(prepared_dirs(&lean, "/envs", None), None);
        }
    }

    /// A solve with a pip section gets its own namespace's package and uv caches (the resolver
    /// runs the environment's python), and nothing of another namespace or the caches' roots;
    /// a solve without one gets neither. Install finds uv's cache in its namespace's directory.
    #[test]
    fn a_pip_solve_mounts_only_its_namespaces_caches() {
        let b = build();
        let c = cfg(&[
            "--envs-dir=/envs/",
            "--storage-dir=/artifacts",
            "--pip-index-url=https://pypi.example/simple",
        ]);
        let job = |step, pip| {
            step_job(
                &JobInputs {
                    build: &b,
                    step,
                    build_id: 1,
                    environment_name: "env",
                    channel_alias: None,
                    pip,
                },
                &c,
            )
        };
        let envs_subs = |job: &Job| -> Vec<String> {
            container(job)
                .volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .filter(|m| m.name == "envs")
                .map(|m| m.sub_path.clone().unwrap_or_default())
                .collect()
        };
        let solve = job(BuildStep::Solve, true);
        // A pip section's solve runs the environment's python: its namespace's repodata
        // cache, never the one every namespace's solves share.
        assert_eq!(
            env_of(&solve, "CONDA_STORE_REPODATA_CACHE").as_deref(),
            Some("/envs/team/.repodata-cache")
        );
        assert_eq!(
            envs_subs(&solve),
            [
                "team/.repodata-cache",
                "team/.pkgs",
                "team/.uv-cache",
                "team/.pip-python"
            ]
        );
        assert_eq!(
            env_of(&solve, "CONDA_STORE_PIP_CACHE").as_deref(),
            Some("/envs/team/.uv-cache")
        );
        assert_eq!(
            env_of(&solve, "CONDA_STORE_PKGS_DIR").as_deref(),
            Some("/envs/team/.pkgs")
        );
        assert_eq!(
            env_of(&solve, "CONDA_STORE_PIP_INDEX_URL").as_deref(),
            Some("https://pypi.example/simple")
        );
        assert_eq!(
            envs_subs(&job(BuildStep::Solve, false)),
            [".repodata-cache"]
        );
        let install = job(BuildStep::Install, true);
        assert_eq!(envs_subs(&install), ["team"]);
        assert_eq!(
            env_of(&install, "CONDA_STORE_PIP_CACHE").as_deref(),
            Some("/envs/team/.uv-cache")
        );
    }

    #[test]
    fn s3_credentials_come_from_the_secret() {
        let b = build();
        let c = cfg(&[
            "--storage=s3",
            "--s3-endpoint=http://s3:9000",
            "--s3-secret=creds",
        ]);
        let job = step_job(
            &JobInputs {
                build: &b,
                step: BuildStep::Pack,
                build_id: 1,
                environment_name: "env",
                channel_alias: None,
                pip: false,
            },
            &c,
        );
        let env = container(&job).env.as_ref().unwrap();
        let key = env.iter().find(|e| e.name == "AWS_ACCESS_KEY_ID").unwrap();
        let sel = key
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(sel.name, "creds");
        assert_eq!(
            env_of(&job, "CONDA_STORE_S3_ENDPOINT").as_deref(),
            Some("http://s3:9000")
        );
    }

    /// Every step's Job passes Pod Security "restricted" when its volumes are claims (the
    /// chart's default); host paths (single-node development) are the one thing it refuses.
    #[test]
    fn step_jobs_pass_pod_security_restricted() {
        let b = build();
        let claims = Cli::parse_from([
            "x",
            "--job-image=img:1",
            "--envs-volume=pvc:envs",
            "--storage-volume=pvc:artifacts",
            "--job-namespace=conda-store",
        ])
        .run;
        for &step in BuildStep::ALL {
            let inputs = JobInputs {
                build: &b,
                step,
                build_id: 1,
                environment_name: "env",
                channel_alias: None,
                pip: false,
            };
            let job = step_job(&inputs, &claims);
            let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
            assert_eq!(
                crate::pod_security::restricted_violations(pod),
                Vec::<String>::new(),
                "{step:?}"
            );
            let limits = container(&job)
                .resources
                .as_ref()
                .unwrap()
                .limits
                .as_ref()
                .unwrap();
            assert!(limits.contains_key("cpu") && limits.contains_key("memory"));
            let host = step_job(&inputs, &cfg(&[]));
            let pod = host.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
            let v = crate::pod_security::restricted_violations(pod);
            assert!(v.iter().all(|m| m.contains("hostPath")), "{v:?}");
        }
    }

    #[test]
    fn reports_parse() {
        let r: StepReport = serde_json::from_str(
            r#"{"step":"solve","ok":false,"message":"unsolvable","artifacts":[],"details":null,"durationMs":5}"#,
        )
        .unwrap();
        assert!(!r.ok);
        assert_eq!(r.message.as_deref(), Some("unsolvable"));
    }
}
