//! The channel catalog: the repodata of the channels the configuration names, indexed into the
//! SQL index, so that `GET /api/v1/package/?search=` finds any package of them (conda-store-ui's
//! package picker) and `GET /api/v1/channel/` lists them, as conda-store's
//! `conda_indexed_channels` do.
//!
//! Incremental: each subdir's `repodata.json` is fetched (over HTTP with its ETag, so an
//! unchanged channel costs one 304; or read from a `file://` channel), parsed off the async
//! runtime keeping only the fields the catalog shows, and only packages not indexed yet are
//! inserted, [`BATCH`] rows per transaction: a channel of hundreds of thousands of records never
//! holds the database (SQLite has one writer) for long, and the gateway answers throughout.
//! Only configured channels are fetched (see `routes::solve` for why the gateway fetches no
//! tenant's URL).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::app::App;

/// Rows inserted per transaction.
pub const BATCH: usize = 2_000;

/// One package of a channel's repodata, as the catalog keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogPackage {
    pub name: String,
    pub version: String,
    pub build: String,
    /// The package file's name (`<name>-<version>-<build>.conda`).
    pub file_name: String,
    pub md5: Option<String>,
    pub sha256: Option<String>,
}

#[derive(Deserialize)]
struct Record {
    name: String,
    version: String,
    build: String,
    #[serde(default)]
    md5: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
}

/// Only what the catalog needs: serde skips every other field without keeping it.
#[derive(Deserialize)]
struct RepoData {
    #[serde(default)]
    packages: HashMap<String, Record>,
    #[serde(default, rename = "packages.conda")]
    conda: HashMap<String, Record>,
}

/// Reads a `repodata.json`.
pub fn parse_repodata(bytes: &[u8]) -> Result<Vec<CatalogPackage>, serde_json::Error> {
    let data: RepoData = serde_json::from_slice(bytes)?;
    let mut out: Vec<CatalogPackage> = data
        .packages
        .into_iter()
        .chain(data.conda)
        .map(|(file_name, r)| CatalogPackage {
            name: r.name,
            version: r.version,
            build: r.build,
            file_name,
            md5: r.md5,
            sha256: r.sha256,
        })
        .collect();
    out.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    Ok(out)
}

/// What to index and how often.
#[derive(Debug, Clone)]
pub struct CatalogConfig {
    /// Channel URLs (names are expanded with the channel alias).
    pub channels: Vec<String>,
    /// Subdirs of each.
    pub subdirs: Vec<String>,
    /// Time between two passes (zero: none).
    pub interval: Duration,
}

/// Why a subdir could not be indexed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("fetching {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("{url} is not repodata: {source}")]
    Parse {
        url: String,
        source: serde_json::Error,
    },
    #[error("indexing {url}: {source}")]
    Index { url: String, source: sqlx::Error },
}

/// The URL of a configured channel: names become `<alias>/<name>`.
pub fn channel_url(channel: &str, alias: Option<&str>) -> String {
    let c = channel.trim_end_matches('/');
    if c.contains("://") {
        c.to_string()
    } else {
        format!(
            "{}/{c}",
            alias
                .unwrap_or("https://conda.anaconda.org")
                .trim_end_matches('/')
        )
    }
}

/// Indexes the channels every `interval`, forever.
pub async fn run(app: Arc<App>, cfg: CatalogConfig) {
    let mut etags: HashMap<String, String> = HashMap::new();
    let client = conda_store_engine::http::client();
    loop {
        for channel in &cfg.channels {
            let channel = channel_url(channel, app.policy.channel_alias.as_deref());
            for subdir in &cfg.subdirs {
                let started = Instant::now();
                match index_subdir(&app, &client, &mut etags, &channel, subdir).await {
                    Ok(Some(n)) => tracing::info!(
                        channel,
                        subdir,
                        added = n,
                        seconds = started.elapsed().as_secs_f64(),
                        "channel indexed"
                    ),
                    Ok(None) => tracing::debug!(channel, subdir, "channel unchanged"),
                    Err(e) => tracing::warn!(error = %e, "channel catalog"),
                }
            }
        }
        tokio::time::sleep(cfg.interval).await;
    }
}

/// Indexes one subdir: the number of packages added, `None` when unchanged since last time.
pub async fn index_subdir(
    app: &App,
    client: &reqwest::Client,
    etags: &mut HashMap<String, String>,
    channel: &str,
    subdir: &str,
) -> Result<Option<usize>, CatalogError> {
    let url = format!("{channel}/{subdir}/repodata.json");
    let fetch = |message: String| CatalogError::Fetch {
        url: url.clone(),
        message,
    };
    let bytes = if let Some(path) = url.strip_prefix("file://") {
        let path = url::Url::parse(&url)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .unwrap_or_else(|| path.into());
        tokio::fs::read(&path)
            .await
            .map_err(|e| fetch(e.to_string()))?
    } else {
        let mut req = client.get(&url);
        if let Some(tag) = etags.get(&url) {
            req = req.header(reqwest::header::IF_NONE_MATCH, tag);
        }
        let resp = req.send().await.map_err(|e| {
            fetch(conda_store_engine::http::describe(
                &e,
                &[channel.to_string()],
            ))
        })?;
        if resp.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(fetch(format!("HTTP {}", resp.status())));
        }
        let tag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.bytes().await.map_err(|e| fetch(e.to_string()))?;
        if let Some(tag) = tag {
            etags.insert(url.clone(), tag);
        }
        bytes.to_vec()
    };
    let parsed = tokio::task::spawn_blocking(move || parse_repodata(&bytes))
        .await
        .map_err(|e| fetch(e.to_string()))?
        .map_err(|source| CatalogError::Parse {
            url: url.clone(),
            source,
        })?;
    let added = app
        .index
        .add_channel_packages(channel, subdir, &parsed)
        .await
        .map_err(|source| CatalogError::Index {
            url: url.clone(),
            source,
        })?;
    Ok(Some(added))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repodata_keeps_what_the_catalog_shows() {
        let json = br#"{
            "info": {"subdir": "noarch"},
            "packages": {"a-1-0.tar.bz2": {"name": "a", "version": "1", "build": "0",
                "build_number": 0, "depends": ["b"], "md5": "m", "sha256": "s", "size": 3}},
            "packages.conda": {"b-2-py_1.conda": {"name": "b", "version": "2", "build": "py_1",
                "depends": [], "license": "MIT"}},
            "removed": []
        }"#;
        let p = parse_repodata(json).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].file_name, "a-1-0.tar.bz2");
        assert_eq!(p[0].md5.as_deref(), Some("m"));
        assert_eq!(p[1].name, "b");
        assert_eq!(p[1].sha256, None);
        assert!(parse_repodata(b"{\"packages\": 3}").is_err());
    }

    #[test]
    fn channel_names_expand_with_the_alias() {
        assert_eq!(
            channel_url("conda-forge", None),
            "https://conda.anaconda.org/conda-forge"
        );
        assert_eq!(
            channel_url("bio", Some("https://mirror.example/")),
            "https://mirror.example/bio"
        );
        assert_eq!(channel_url("http://h:1/c/", None), "http://h:1/c");
    }
}
