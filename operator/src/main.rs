//! `conda-store-operator`: the operator binary. It carries the resource definitions, the
//! specification tools, the build steps the Jobs run (`step solve|install|pack|image`) and
//! `unpack` for archives; the controllers (`run`) come with the reconcilers.

mod steps;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use conda_store_crds::Policy;
use conda_store_crds::naming;
use conda_store_crds::spec::normalize_yaml_local;
use serde::Deserialize;

/// conda-store for Kubernetes: the operator.
#[derive(Parser)]
#[command(name = "conda-store-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML (pipe to `kubectl apply -f -`).
    Crds,
    /// Work with environment specifications.
    #[command(subcommand)]
    Spec(SpecCommand),
    /// Run one build step (what a build's Jobs run).
    #[command(subcommand)]
    Step(StepCommand),
    /// Run the controllers (leader-elected), with /metrics, /healthz and /readyz.
    #[command(args_override_self = true)]
    Run(conda_store_operator::config::RunArgs),
    /// Write the generated demo channel (small real packages: liba, libb, tool) into DIR,
    /// for trying the operator where public channels cannot be reached.
    DemoChannel {
        /// The channel directory (created; serve it or use it as a file:// URL).
        dir: PathBuf,
    },
    /// Build an OCI image of plain directories, one layer each, into an OCI layout: how the
    /// project's own image is made where no container daemon runs (see the Dockerfile for the
    /// same image built by docker). Prints the image summary as JSON.
    RootfsImage(RootfsImageArgs),
    /// Relocate an extracted environment archive to where it now is (what its
    /// `bin/conda-unpack` script does).
    Unpack {
        /// The directory the archive was extracted into.
        dir: PathBuf,
    },
    /// Create directories (and their parents) that do not exist yet: what a build Job's init
    /// container runs, as the Job's user, before the step's sub-path mounts need them.
    Mkdirs {
        /// The directories.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// Check every pod template in Kubernetes manifests (YAML, `-` for standard input)
    /// against the Pod Security Standard "restricted"; exits 1 naming each violation.
    CheckPodSecurity {
        /// Manifest files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RootfsImageArgs {
    /// The directories, one layer each, later ones over earlier ones.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// The OCI layout directory to write (created if missing).
    #[arg(long)]
    layout: PathBuf,
    /// The tag in the layout's index.json.
    #[arg(long)]
    tag: String,
    /// The full reference `ctr images import` names the image by.
    #[arg(long)]
    reference: Option<String>,
    /// The entrypoint, one argument per flag.
    #[arg(long)]
    entrypoint: Vec<String>,
    /// The user the image runs as (`uid:gid`).
    #[arg(long)]
    user: Option<String>,
    /// An environment variable `NAME=VALUE` (repeatable).
    #[arg(long = "env", value_parser = parse_key_value)]
    env: Vec<(String, String)>,
    /// A label `NAME=VALUE` (repeatable).
    #[arg(long = "label", value_parser = parse_key_value)]
    labels: Vec<(String, String)>,
    /// gzip level of the layers (1: fastest, 9: smallest).
    #[arg(long, default_value_t = conda_store_engine::image::DEFAULT_COMPRESSION_LEVEL,
          value_parser = clap::value_parser!(u32).range(0..=9))]
    compression_level: u32,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

#[derive(Subcommand)]
enum StepCommand {
    /// Solve the specification into a conda-lock lockfile and the YAML export, and store them.
    Solve {
        #[command(flatten)]
        solve: steps::solve::SolveArgs,
        #[command(flatten)]
        step: steps::StepArgs,
    },
    /// Install the build's stored lockfile into its prefix.
    Install {
        #[command(flatten)]
        install: steps::solve::InstallArgs,
        #[command(flatten)]
        step: steps::StepArgs,
    },
    /// Pack the installed prefix into a relocatable archive and store it.
    Pack {
        #[command(flatten)]
        pack: steps::pack::PackArgs,
        #[command(flatten)]
        step: steps::StepArgs,
    },
    /// Build an OCI image of the installed prefix and store its blobs.
    Image {
        #[command(flatten)]
        image: steps::image::ImageArgs,
        #[command(flatten)]
        step: steps::StepArgs,
    },
}

#[derive(Subcommand)]
enum SpecCommand {
    /// Validate and normalise an environment.yaml; print the normalised spec and its sha256 as
    /// JSON, or every error with its line and exit 1.
    Normalize {
        /// The environment.yaml file; `-` reads standard input.
        file: PathBuf,
        /// A policy (YAML or JSON: allowedChannels, defaultChannels, defaultPackages,
        /// requiredPackages, channelAlias) to apply.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Print the Kubernetes object name derived from a conda-store namespace or environment name.
    Name {
        /// The conda-store name.
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = match with_config_file(std::env::args().collect()) {
        Ok(argv) => Cli::parse_from(argv),
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `run --config FILE` (or `CONDA_STORE_CONFIG`): the file's settings go in front of the
/// command line's flags, which override them. Done on the raw arguments, before parsing, so
/// that settings required by `run` may come from the file alone.
fn with_config_file(mut argv: Vec<String>) -> anyhow::Result<Vec<String>> {
    let Some(at) = argv.iter().position(|a| a == "run") else {
        return Ok(argv);
    };
    let rest = &argv[at + 1..];
    let from_flag = rest.iter().enumerate().find_map(|(i, a)| {
        if a == "--config" {
            rest.get(i + 1).cloned()
        } else {
            a.strip_prefix("--config=").map(str::to_string)
        }
    });
    let Some(path) = from_flag.or_else(|| std::env::var("CONDA_STORE_CONFIG").ok()) else {
        return Ok(argv);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the config file {path}"))?;
    let extra = conda_store_operator::config::file_args(&text)
        .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    argv.splice(at + 1..at + 1, extra);
    Ok(argv)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => {
            conda_store_runtime::init_logs(args.log_json, "info,kube=warn");
            conda_store_engine::tls::ensure_crypto_provider();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(conda_store_operator::controller::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DemoChannel { dir } => {
            conda_store_engine::channel::write_test_channel(&dir)
                .with_context(|| format!("writing the demo channel into {}", dir.display()))?;
            emit(&format!("{}\n", dir.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::RootfsImage(args) => {
            let mut options = conda_store_engine::image::RootfsImageOptions::new(args.tag);
            options.reference = args.reference;
            options.entrypoint = args.entrypoint;
            options.user = args.user;
            options.env = args.env;
            options.labels = args.labels.into_iter().collect();
            options.compression_level = args.compression_level;
            let summary =
                conda_store_engine::image::build_rootfs_image(&args.dirs, &args.layout, &options)
                    .with_context(|| format!("building the image into {}", args.layout.display()))?;
            emit(&format!("{}\n", serde_json::to_string(&summary)?))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Mkdirs { dirs } => {
            for d in dirs {
                std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckPodSecurity { files } => {
            let mut bad = 0;
            let mut pods = 0;
            for f in files {
                let text = if f.as_os_str() == "-" {
                    std::io::read_to_string(std::io::stdin())?
                } else {
                    std::fs::read_to_string(&f)
                        .with_context(|| format!("reading {}", f.display()))?
                };
                for doc in serde_yaml::Deserializer::from_str(&text) {
                    let doc = serde_json::Value::deserialize(doc)
                        .with_context(|| format!("{}: not YAML", f.display()))?;
                    for (name, spec) in conda_store_operator::pod_security::pod_specs(&doc) {
                        pods += 1;
                        let spec: k8s_openapi::api::core::v1::PodSpec =
                            serde_json::from_value(spec)
                                .with_context(|| format!("{name}: not a pod spec"))?;
                        for v in conda_store_operator::pod_security::restricted_violations(&spec) {
                            println!("{name}: {v}");
                            bad += 1;
                        }
                    }
                }
            }
            println!("{pods} pod templates checked, {bad} violations of \"restricted\"");
            Ok(if bad == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Crds => {
            let all: String = conda_store_crds::crds()
                .iter()
                .map(|(_, crd)| conda_store_crds::crd_yaml(crd))
                .collect();
            emit(&all)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Spec(SpecCommand::Normalize { file, policy }) => {
            let text = read_input(&file)?;
            let policy: Policy = match policy {
                Some(p) => serde_yaml::from_str(&read_input(&p)?)
                    .with_context(|| format!("reading policy {}", p.display()))?,
                None => Policy::default(),
            };
            match normalize_yaml_local(&text, &policy) {
                Ok(spec) => {
                    let out = serde_json::json!({ "sha256": spec.sha256(), "spec": spec });
                    emit(&format!("{}\n", serde_json::to_string_pretty(&out)?))?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(errors) => {
                    for e in errors.iter() {
                        eprintln!("{}: {e}", file.display());
                    }
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Step(step) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            Ok(runtime.block_on(async move {
                match step {
                    StepCommand::Solve { solve, step } => {
                        steps::run("solve", &step, |store, log, args| {
                            steps::solve::run_solve(solve, args, store, log)
                        })
                        .await
                    }
                    StepCommand::Install { install, step } => {
                        steps::run("install", &step, |store, log, args| {
                            steps::solve::run_install(install, args, store, log)
                        })
                        .await
                    }
                    StepCommand::Pack { pack, step } => {
                        steps::run("pack", &step, |store, log, args| {
                            steps::pack::run(pack, args, store, log)
                        })
                        .await
                    }
                    StepCommand::Image { image, step } => {
                        steps::run("image", &step, |store, log, args| {
                            steps::image::run(image, args, store, log)
                        })
                        .await
                    }
                }
            }))
        }
        Command::Unpack { dir } => match conda_store_engine::pack::unpack(&dir) {
            Ok(s) => {
                emit(&format!(
                    "relocated {} from {} to {}: {} files rewritten\n",
                    dir.display(),
                    s.old_prefix,
                    s.new_prefix,
                    s.rewritten
                ))?;
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Spec(SpecCommand::Name { name }) => match naming::object_name(&name) {
            Ok(n) => {
                emit(&format!("{n}\n"))?;
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::FAILURE)
            }
        },
    }
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn emit(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

fn read_input(path: &PathBuf) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// A step added to the table in `crds` without its subcommand would compile and then fail
    /// in every Job: each step must be a `step` subcommand of the same name.
    #[test]
    fn every_build_step_has_its_subcommand() {
        let cli = Cli::command();
        let step = cli.find_subcommand("step").expect("the step subcommand");
        for s in conda_store_crds::BuildStep::ALL {
            assert!(
                step.find_subcommand(s.as_str()).is_some(),
                "no `step {}` subcommand",
                s.as_str()
            );
        }
        assert_eq!(
            step.get_subcommands().count(),
            conda_store_crds::BuildStep::ALL.len(),
            "a step subcommand that no build step runs"
        );
    }
}
