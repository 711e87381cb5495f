//! Reconcile scenarios against a mock API server, as kube-rs's `controller-rs` tests its
//! reconcilers: each test runs one reconcile with a client whose requests go to a scripted
//! verifier, which checks every call the reconciler makes, in order, and answers it. Events
//! (advisory) are answered without being checked. No cluster, no network.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use clap::Parser;
use conda_store_crds::{
    DependencyItem, Environment, EnvironmentSpec, Namespace, NamespaceSpec, Policy,
};
use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, store::Writer};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::Ctx;
use crate::config::RunArgs;
use crate::ids::IdAllocator;
use crate::metrics::Metrics;

type Reply = oneshot::Sender<Response<Body>>;

/// The mock API server: the requests the reconciler made, to be checked and answered.
pub struct ApiServer {
    rx: mpsc::UnboundedReceiver<(Request<Body>, Reply)>,
}

/// One request the reconciler made.
pub struct Call {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub body: Value,
    reply: Reply,
}

impl Call {
    /// Answers with `status` and `body`.
    pub fn answer(self, status: u16, body: Value) {
        let resp = Response::builder()
            .status(StatusCode::from_u16(status).expect("a status"))
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&body).expect("JSON")))
            .expect("a response");
        let _ = self.reply.send(resp);
    }

    /// Answers with the object sent back (a create or apply that succeeded).
    pub fn echo(self, status: u16) {
        let body = self.body.clone();
        self.answer(status, body);
    }

    /// Answers with a Kubernetes `Status` error.
    pub fn fail(self, code: u16, reason: &str) {
        self.answer(
            code,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "message": reason, "reason": reason, "code": code}),
        );
    }
}

impl ApiServer {
    /// The next request that is not an Event, which must be `method` on a path starting with
    /// `path`.
    pub async fn expect(&mut self, method: &str, path: &str) -> Call {
        loop {
            let (req, reply) =
                tokio::time::timeout(std::time::Duration::from_secs(5), self.rx.recv())
                    .await
                    .unwrap_or_else(|_| panic!("no request came; expected {method} {path}"))
                    .expect("the client is alive");
            let method_got = req.method().to_string();
            let uri = req.uri().to_string();
            let bytes = req.into_body().collect_bytes().await.expect("a body");
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let call = Call {
                method: method_got,
                uri,
                body,
                reply,
            };
            if call.uri.contains("/events") {
                call.echo(201);
                continue;
            }
            assert!(
                call.method == method && call.uri.starts_with(path),
                "expected {method} {path}, got {} {}",
                call.method,
                call.uri
            );
            return call;
        }
    }

    /// Checks that the reconciler made no request other than Events.
    pub fn nothing_more(&mut self) {
        while let Ok((req, reply)) = self.rx.try_recv() {
            assert!(
                req.uri().to_string().contains("/events"),
                "unexpected {} {}",
                req.method(),
                req.uri()
            );
            drop(reply);
        }
    }
}

/// A client whose requests go to the returned [`ApiServer`].
pub fn mock_client() -> (Client, ApiServer) {
    let (tx, rx) = mpsc::unbounded_channel::<(Request<Body>, Reply)>();
    let service = tower::service_fn(move |req: Request<Body>| {
        let tx = tx.clone();
        async move {
            let (reply, answer) = oneshot::channel();
            tx.send((req, reply))
                .map_err(|_| std::io::Error::other("the mock API server is gone"))?;
            answer
                .await
                .map_err(|_| std::io::Error::other("the request was not answered"))
        }
    });
    (Client::new(service, "default"), ApiServer { rx })
}

/// The caches' writers, to fill them as the watches would.
pub struct Writers {
    pub namespaces: Writer<Namespace>,
    pub environments: Writer<Environment>,
    pub jobs: Writer<k8s_openapi::api::batch::v1::Job>,
    pub builds: Writer<conda_store_crds::Build>,
}

/// A context as `run` builds it, on a mock client, local artifact storage in `dir` and empty
/// caches.
pub fn context(dir: &std::path::Path) -> (Arc<Ctx>, ApiServer, Writers) {
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        run: RunArgs,
    }
    let storage = dir.join("artifacts");
    let args = Args::parse_from([
        "operator",
        "--job-image",
        "conda-store:test",
        "--envs-volume",
        "hostPath:/envs",
        "--storage-dir",
        storage.to_str().expect("UTF-8"),
    ]);
    let (client, api) = mock_client();
    let (namespaces, ns_writer) = reflector::store::<Namespace>();
    let (environments, env_writer) = reflector::store::<Environment>();
    let (builds, builds_writer) = reflector::store();
    let (jobs, jobs_writer) = reflector::store();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        policy: Policy::default(),
        metrics: Metrics::default(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "conda-store-operator".into(),
                instance: Some("test".into()),
            },
        ),
        ids: IdAllocator::new(client, &args.run.operator_namespace),
        store: Arc::new(
            conda_store_storage::LocalStore::new(storage).expect("local artifact storage"),
        ),
        namespaces,
        environments,
        builds,
        jobs,
        known_specs: Mutex::new(Default::default()),
        ensured_namespaces: Mutex::new(Default::default()),
        phases: Mutex::new(Default::default()),
        image_gate: Default::default(),
        prepares_dirs: false,
        cfg: args.run,
    });
    (
        ctx,
        api,
        Writers {
            namespaces: ns_writer,
            environments: env_writer,
            jobs: jobs_writer,
            builds: builds_writer,
        },
    )
}

/// A conda-store Namespace as the API server returns it.
pub fn namespace(name: &str) -> Namespace {
    let mut ns = Namespace::new(name, NamespaceSpec::default());
    ns.metadata.uid = Some(format!("{name}-uid"));
    ns.metadata.generation = Some(1);
    ns
}

/// An Environment `name` of `ns` depending on `deps`, as the API server returns it.
pub fn environment(ns: &str, name: &str, deps: &[&str]) -> Environment {
    let mut env = Environment::new(
        name,
        EnvironmentSpec {
            channels: vec!["https://conda.example/main".into()],
            dependencies: Some(deps.iter().map(|d| DependencyItem::from(*d)).collect()),
            ..Default::default()
        },
    );
    env.metadata.namespace = Some(ns.into());
    env.metadata.uid = Some(format!("{name}-uid"));
    env.metadata.generation = Some(1);
    env.metadata.labels = Some(BTreeMap::new());
    env
}
