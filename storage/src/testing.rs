//! Test support (feature `testing`): a real S3-compatible server on loopback.
//!
//! moto's server (`moto[server]` from PyPI, installed by `scripts/install-test-deps.sh` into a
//! cached virtualenv) started on a free 127.0.0.1 port and stopped on drop.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::S3Config;

/// A running S3 server, stopped on drop.
pub struct S3Server {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl S3Server {
    /// Starts the server (`CONDA_STORE_MOTO_SERVER`, else the virtualenv under
    /// `CONDA_STORE_CACHE` or `~/.cache/conda-store-k8s`) and waits until it listens.
    ///
    /// # Panics
    /// When the server is not installed or does not listen within 30 s: tests need it.
    pub fn start() -> S3Server {
        let bin = std::env::var("CONDA_STORE_MOTO_SERVER").unwrap_or_else(|_| {
            let cache = std::env::var("CONDA_STORE_CACHE").unwrap_or_else(|_| {
                format!(
                    "{}/.cache/conda-store-k8s",
                    std::env::var("HOME").unwrap_or_default()
                )
            });
            format!("{cache}/venv/bin/moto_server")
        });
        assert!(
            std::path::Path::new(&bin).exists(),
            "no S3 server at {bin}: run scripts/install-test-deps.sh (scripts/test.sh does)"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // This machine's CA bundle variable breaks some clients talking plain HTTP.
            .env_remove("AWS_CA_BUNDLE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "S3 server did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        S3Server { child, port }
    }

    /// A configuration for `bucket` on this server (5 MiB parts, so tests reach multipart).
    pub fn config(&self, bucket: &str) -> S3Config {
        S3Config {
            endpoint: Some(format!("http://127.0.0.1:{}", self.port)),
            bucket: bucket.into(),
            prefix: "artifacts".into(),
            access_key: "test".into(),
            secret_key: "test".into(),
            part_size: 5 * 1024 * 1024,
            ..S3Config::default()
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
