//! `conda-store-operator`: the operator binary. It carries the resource definitions, the
//! specification tools, the build steps the Jobs run (`step solve|install|pack|image`) and
//! `unpack` for archives; the controllers (`run`) come with the reconcilers.

mod steps;
mod storage_args;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use conda_store_crds::Policy;
use conda_store_crds::naming;
use conda_store_crds::spec::normalize_yaml;

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
    /// Relocate an extracted environment archive to where it now is (what its
    /// `bin/conda-unpack` script does).
    Unpack {
        /// The directory the archive was extracted into.
        dir: PathBuf,
    },
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
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
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
            match normalize_yaml(&text, &policy) {
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
