//! A static file server on loopback for tests and benchmarks: serves a directory (a channel,
//! a PEP 503 index) over HTTP/1.1 with keep-alive, `ETag`/`If-None-Match` and
//! `Last-Modified`/`If-Modified-Since` revalidation and a configurable `Cache-Control`, and
//! records what it served, so a test can tell a download from a `304` and count requests.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One response the server gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
}

/// The running server; stops when dropped.
pub struct StaticServer {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Served>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StaticServer {
    /// Serves `root` on 127.0.0.1 (a free port), every response with `Cache-Control:
    /// cache_control` (`max-age=0` makes clients revalidate each time).
    pub async fn start(root: &Path, cache_control: &str) -> std::io::Result<StaticServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (root, cc, served) = (
            Arc::new(root.to_path_buf()),
            Arc::new(cache_control.to_string()),
            log.clone(),
        );
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (root, cc, served) = (root.clone(), cc.clone(), served.clone());
                tokio::spawn(async move {
                    let _ = connection(stream, &root, &cc, &served).await;
                });
            }
        });
        Ok(StaticServer { addr, log, task })
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// What it served so far.
    pub fn served(&self) -> Vec<Served> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Forgets what it served.
    pub fn clear(&self) {
        if let Ok(mut l) = self.log.lock() {
            l.clear();
        }
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The file under `root` a request path names, if it stays inside `root`.
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let rel = Path::new(path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let mut full = root.join(rel);
    if full.is_dir() {
        full = full.join("index.html");
    }
    full.is_file().then_some(full)
}

/// What a file is, by its name: package indexes (PEP 503) are read as HTML pages.
fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

async fn connection(
    stream: TcpStream,
    root: &Path,
    cache_control: &str,
    log: &Mutex<Vec<Served>>,
) -> std::io::Result<()> {
    let mut stream = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if stream.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let line = line.trim_end().to_string();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let mut parts = request_line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
        );
        let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let file = resolve(root, &path);
        // The status, the body, the headers beyond the length, and the length (a HEAD answer
        // carries the length the GET body would have).
        let (status, body, extra, length) = match (&method[..], file) {
            ("GET" | "HEAD", Some(file)) => {
                let meta = tokio::fs::metadata(&file).await?;
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| jiff::Timestamp::try_from(t).ok())
                    .unwrap_or_default();
                let etag = format!("\"{:x}-{:x}\"", meta.len(), mtime.as_nanosecond());
                let last_modified = mtime.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string();
                let extra = format!(
                    "ETag: {etag}\r\nLast-Modified: {last_modified}\r\nCache-Control: {cache_control}\r\nContent-Type: {}\r\n",
                    content_type(&file)
                );
                let fresh = match header("if-none-match") {
                    Some(tags) => tags.split(',').any(|t| t.trim() == etag),
                    None => header("if-modified-since") == Some(last_modified.as_str()),
                };
                if fresh {
                    (304, Vec::new(), extra, 0)
                } else if method == "HEAD" {
                    (200, Vec::new(), extra, meta.len())
                } else {
                    let body = tokio::fs::read(&file).await?;
                    let length = body.len() as u64;
                    (200, body, extra, length)
                }
            }
            ("GET" | "HEAD", None) => {
                let body = b"not found".to_vec();
                let length = body.len() as u64;
                (404, body, String::new(), length)
            }
            _ => (405, Vec::new(), String::new(), 0),
        };
        let reason = match status {
            200 => "OK",
            304 => "Not Modified",
            404 => "Not Found",
            _ => "Method Not Allowed",
        };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Length: {length}\r\n{extra}{}\r\n",
            if close { "Connection: close\r\n" } else { "" }
        );
        let w = stream.get_mut();
        w.write_all(head.as_bytes()).await?;
        if method != "HEAD" {
            w.write_all(&body).await?;
        }
        w.flush().await?;
        if let Ok(mut l) = log.lock() {
            l.push(Served {
                method,
                path,
                status,
                bytes: body.len() as u64,
            });
        }
        if close {
            return Ok(());
        }
    }
}
