//! Support for the Rust end-to-end tests. The cluster, the node, the image and the channels
//! are provisioned in bash (`tests/e2e/cluster.sh`, `operator.sh`), as projects that do this
//! well keep it; the checks are Rust, on the typed resources, so a renamed condition, phase or
//! field fails to compile instead of failing a long cluster run.
//!
//! The tests are `#[ignore]`d: `cargo test --workspace` has no cluster. The scripts run them
//! with `--ignored` and the variables below.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The field manager of everything the tests apply.
pub const MANAGER: &str = "conda-store-e2e";

/// A variable the provisioning script sets.
pub fn var(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is not set (run the test through its script in tests/e2e)")
    })
}

/// A path variable.
pub fn path(name: &str) -> anyhow::Result<PathBuf> {
    var(name).map(PathBuf::from)
}

/// A client for the cluster (`KUBECONFIG`, the admin's).
pub async fn client() -> anyhow::Result<Client> {
    Client::try_default()
        .await
        .context("a client from KUBECONFIG")
}

/// Counted checks, as `tests/e2e/checks.sh` counts them: each prints `ok` or `FAIL` with its
/// name and the reason, and the run goes on, so one failure shows every other result too.
#[derive(Debug, Default)]
pub struct Checks {
    pub passed: usize,
    pub failed: usize,
}

impl Checks {
    /// Records the result of the check `name`.
    pub fn check<T>(&mut self, name: &str, result: anyhow::Result<T>) -> Option<T> {
        match result {
            Ok(v) => {
                self.passed += 1;
                println!("ok   {name}");
                Some(v)
            }
            Err(e) => {
                self.failed += 1;
                println!("FAIL {name}\n{e:#}");
                None
            }
        }
    }

    /// Records that `got` equals `want`.
    pub fn equal<T: PartialEq + std::fmt::Debug>(&mut self, name: &str, got: T, want: T) {
        let r = if got == want {
            Ok(())
        } else {
            Err(anyhow::anyhow!("expected {want:?}, got {got:?}"))
        };
        self.check(name, r);
    }

    /// Records that `cond` holds; `why` says what was seen when it does not.
    pub fn that(&mut self, name: &str, cond: bool, why: impl FnOnce() -> String) {
        let r = if cond {
            Ok(())
        } else {
            Err(anyhow::anyhow!(why()))
        };
        self.check(name, r);
    }

    /// The closing line; fails the test when a check failed.
    pub fn finish(&self) {
        println!("e2e: {} passed, {} failed", self.passed, self.failed);
        assert_eq!(self.failed, 0, "{} e2e checks failed", self.failed);
    }
}

/// Polls `probe` until it gives a value, for at most `secs` seconds.
pub async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = None;
    loop {
        match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = Some(e),
        }
        if Instant::now() >= deadline {
            let why = last
                .map(|e| format!(" (last error: {e:#})"))
                .unwrap_or_default();
            bail!("timed out after {secs} s waiting for {what}{why}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits (watching, not polling) until the object `name` meets `cond`, for at most `secs`
/// seconds; the object as it was then.
pub async fn await_object<K>(
    api: &Api<K>,
    name: &str,
    secs: u64,
    what: &str,
    cond: impl Condition<K>,
) -> anyhow::Result<K>
where
    K: Resource + Clone + std::fmt::Debug + DeserializeOwned + Send + 'static,
{
    let found = tokio::time::timeout(
        Duration::from_secs(secs),
        await_condition(api.clone(), name, cond),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timed out after {secs} s waiting for {what}"))?
    .with_context(|| format!("watching {name}"))?;
    found.with_context(|| format!("{name} was deleted while waiting for {what}"))
}

/// Server-side applies `obj` (which names itself) as the tests' field manager.
pub async fn apply<K>(api: &Api<K>, obj: &K) -> anyhow::Result<K>
where
    K: Resource + Clone + std::fmt::Debug + DeserializeOwned + Serialize,
{
    let name = obj
        .meta()
        .name
        .clone()
        .context("an object to apply has a name")?;
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .with_context(|| format!("applying {name}"))
}

/// A plain HTTP/1.0 GET of `url` (`http://host:port/path`) on loopback: the body.
pub async fn http_get(url: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").context("an http:// URL")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = tokio::net::TcpStream::connect(host)
        .await
        .with_context(|| format!("connecting to {host}"))?;
    s.write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        bail!("GET {url}: {status}");
    }
    Ok(body.to_string())
}

/// How long since `t`, in seconds with one decimal, for the timing lines.
pub fn since(t: Instant) -> String {
    format!("{:.1}", t.elapsed().as_secs_f64())
}
