//! A channel over HTTPS (a loopback server with its own CA): TLS works with rustls and ring, and
//! the certificate is verified against the trust store `SSL_CERT_FILE` names. One test in its
//! own binary, since it sets that variable for the process.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conda_store_engine::channel::write_test_channel;
use conda_store_engine::install::install_lockfile;
use conda_store_engine::lockfile::write_lockfile;
use conda_store_engine::solve::{SolveRequest, solve};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a certificate for 127.0.0.1 signed by it.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=conda-store test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
}

struct HttpsServer(Child);

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve_https(root: &Path, certs: &Path) -> (HttpsServer, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = format!(
        "import http.server, ssl, functools\n\
         h = functools.partial(http.server.SimpleHTTPRequestHandler, directory={root:?})\n\
         s = http.server.ThreadingHTTPServer(('127.0.0.1', {port}), h)\n\
         c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
         c.load_cert_chain({cert:?}, {key:?})\n\
         s.socket = c.wrap_socket(s.socket, server_side=True)\n\
         s.serve_forever()\n",
        root = root.to_str().unwrap(),
        cert = certs.join("server.pem").to_str().unwrap(),
        key = certs.join("server.key").to_str().unwrap(),
    );
    let child = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "https server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (HttpsServer(child), port)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_channel_over_https_solves_and_installs() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    certificates(&certs);
    write_test_channel(&dir.path().join("channels/demo")).unwrap();
    let (_server, port) = serve_https(&dir.path().join("channels"), &certs);
    let request = SolveRequest {
        channels: vec![format!("https://127.0.0.1:{port}/demo")],
        specs: vec!["tool".into()],
        platforms: vec!["linux-64".into()],
        ..Default::default()
    };

    // Not trusted yet: the system store does not know the test CA.
    let err = solve(&request).await.unwrap_err().to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("certificate"), "the cause is named: {err}");

    // SAFETY: this test binary has this one test; nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("SSL_CERT_FILE", certs.join("ca.pem")) };
    let solution = solve(&request).await.unwrap();
    let lock = write_lockfile(&solution).unwrap();
    let prefix = dir.path().join("envs/tls");
    let summary = install_lockfile(&lock, "linux-64", &prefix, &dir.path().join("pkgs"))
        .await
        .unwrap();
    assert_eq!(summary.operations, 3);
    assert!(prefix.join("bin/tool").exists());
}
