//! The build steps a Job runs (`conda-store-operator step ...`). Each step reports in its
//! container's termination message (a small JSON the operator reads from the Pod status, so the
//! Job needs no API access) and keeps its log as an artifact; failure exits non-zero with the
//! reason in both.

pub mod image;
pub mod pack;
pub mod solve;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Args;
use conda_store_crds::{Artifact, ArtifactKind};
use conda_store_storage::{ArtifactStore, Key};

pub use conda_store_operator::jobs::StepReport;
use conda_store_storage::args::StorageArgs;

/// Settings every step takes.
#[derive(Debug, Clone, Args)]
pub struct StepArgs {
    /// Storage key prefix of the build's artifacts, e.g. `builds/<namespace>/<build>`.
    #[arg(long, env = "CONDA_STORE_BUILD_KEY")]
    pub build_key: String,
    /// Where the JSON result goes (the container's terminationMessagePath).
    #[arg(
        long,
        env = "CONDA_STORE_TERMINATION_MESSAGE_PATH",
        default_value = "/dev/termination-log"
    )]
    pub termination_message_path: PathBuf,
    /// Artifact storage.
    #[command(flatten)]
    pub storage: StorageArgs,
    /// How long a storage operation that fails with an I/O or backend error is retried (with
    /// backoff) before the step fails: an outage shorter than this costs a build nothing.
    #[arg(long, env = "CONDA_STORE_STORAGE_RETRY_SECONDS", default_value_t = 120)]
    pub storage_retry_seconds: u64,
    /// The step this one follows. Its Job is created with that step's, so the two pods start
    /// at the same time; this one waits until the other stored its marker
    /// (`<build-key>/steps/<step>.done`, written after its outputs) before it begins.
    #[arg(long, env = "CONDA_STORE_STEP_AFTER")]
    pub after: Option<String>,
}

/// The storage key of a step's completion marker.
fn done_key(args: &StepArgs, step: &str) -> anyhow::Result<Key> {
    build_key(args, &format!("steps/{step}.done"))
}

/// Waits until the step `after` has stored its marker.
async fn wait_for(
    store: &dyn ArtifactStore,
    args: &StepArgs,
    after: &str,
    log: &StepLog,
) -> anyhow::Result<()> {
    let key = done_key(args, after)?;
    let mut logged = false;
    loop {
        if store.head(&key).await?.is_some() {
            return Ok(());
        }
        if !logged {
            log.line(format!("waiting for step {after} to finish"));
            logged = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A step's log: printed to stderr as it goes (so `kubectl logs` follows it) and kept for
/// storage.
#[derive(Clone, Default)]
pub struct StepLog(Arc<Mutex<String>>);

impl StepLog {
    /// Records one line.
    pub fn line(&self, text: impl AsRef<str>) {
        let line = format!("{} {}\n", timestamp(), text.as_ref());
        eprint!("{line}");
        if let Ok(mut buf) = self.0.lock() {
            buf.push_str(&line);
        }
    }

    fn contents(&self) -> String {
        self.0.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

fn timestamp() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("[{}.{:03}]", d.as_secs(), d.subsec_millis())
}

/// The storage key `<build_key>/<name>`, validated.
pub fn build_key(args: &StepArgs, name: &str) -> anyhow::Result<Key> {
    Ok(Key::new(&format!(
        "{}/{name}",
        args.build_key.trim_end_matches('/')
    ))?)
}

/// What a step's body returns on success.
pub struct StepOutput {
    /// Artifacts written.
    pub artifacts: Vec<Artifact>,
    /// Figures for the report.
    pub details: serde_json::Value,
}

/// Runs a step's body, then stores its log, writes the termination message and returns the
/// process exit code. Storage trouble while storing the log is reported but does not turn a
/// successful step into a failure (the artifacts are there).
pub async fn run<F, Fut>(name: &str, args: &StepArgs, body: F) -> std::process::ExitCode
where
    F: FnOnce(Arc<dyn ArtifactStore>, StepLog, StepArgs) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<StepOutput>>,
{
    let started = Instant::now();
    let log = StepLog::default();
    log.line(format!("step {name} starting"));
    let store = args.storage.open().map(|inner| {
        let heard = log.clone();
        let policy = conda_store_storage::retry::RetryPolicy {
            max_elapsed: std::time::Duration::from_secs(args.storage_retry_seconds),
            ..Default::default()
        };
        Arc::new(conda_store_storage::retry::Retrying::new(
            inner,
            policy,
            move |m| heard.line(m),
        )) as Arc<dyn ArtifactStore>
    });
    let waited = match (&store, &args.after) {
        (Ok(store), Some(after)) => wait_for(store.as_ref(), args, after, &log).await,
        _ => Ok(()),
    };
    // The step's own time starts when it may begin.
    let started = if args.after.is_some() {
        Instant::now()
    } else {
        started
    };
    let result = match (&store, waited) {
        (Ok(store), Ok(())) => match body(store.clone(), log.clone(), args.clone()).await {
            // The marker after every output: the steps that follow begin when they see it.
            Ok(out) => match done_key(args, name) {
                Ok(key) => store
                    .put_bytes(&key, b"done\n".to_vec().into())
                    .await
                    .map(|_| out)
                    .map_err(|e| anyhow::anyhow!("storing the step's completion marker: {e}")),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        (Ok(_), Err(e)) => Err(e),
        (Err(e), _) => Err(anyhow::anyhow!("{e:#}")),
    };
    let mut report = StepReport {
        step: name.to_string(),
        ok: result.is_ok(),
        message: None,
        artifacts: Vec::new(),
        details: serde_json::Value::Null,
        duration_ms: 0,
    };
    match result {
        Ok(out) => {
            report.artifacts = out.artifacts;
            report.details = out.details;
            log.line(format!("step {name} succeeded"));
        }
        Err(e) => {
            let msg = format!("{e:#}");
            log.line(format!("step {name} failed: {msg}"));
            report.message = Some(msg);
        }
    }
    if let Ok(store) = &store {
        match build_key(args, &format!("logs/{name}.log")) {
            Ok(key) => match store.put_bytes(&key, log.contents().into()).await {
                Ok(info) => report.artifacts.push(Artifact {
                    kind: ArtifactKind::Logs,
                    key: info.key,
                    size: Some(info.size),
                    digest: info.sha256.map(|h| format!("sha256:{h}")),
                }),
                Err(e) => eprintln!("storing the log failed: {e}"),
            },
            Err(e) => eprintln!("storing the log failed: {e:#}"),
        }
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    let message = report.to_termination_message();
    if let Err(e) = std::fs::write(&args.termination_message_path, &message) {
        eprintln!(
            "writing the termination message to {} failed: {e}",
            args.termination_message_path.display()
        );
    }
    println!("{message}");
    if report.ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conda_store_operator::jobs::TERMINATION_MESSAGE_LIMIT;

    #[test]
    fn termination_message_fits_the_kubelet_limit() {
        let report = StepReport {
            step: "solve".into(),
            ok: false,
            message: Some(
                "Cannot solve the request because of: ".to_string() + &"x".repeat(10_000),
            ),
            artifacts: vec![],
            details: serde_json::json!({"big": "y".repeat(5000)}),
            duration_ms: 5,
        };
        let text = report.to_termination_message();
        assert!(text.len() <= TERMINATION_MESSAGE_LIMIT, "{}", text.len());
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .starts_with("Cannot solve the request")
        );
        assert!(v["message"].as_str().unwrap().ends_with("[...]"));
        assert!(v.get("details").is_none());
    }

    #[test]
    fn small_report_is_unchanged() {
        let report = StepReport {
            step: "pack".into(),
            ok: true,
            message: None,
            artifacts: vec![],
            details: serde_json::json!({"files": 3}),
            duration_ms: 1,
        };
        let v: serde_json::Value = serde_json::from_str(&report.to_termination_message()).unwrap();
        assert_eq!(v["details"]["files"], 3);
        assert_eq!(v["ok"], true);
    }
}
