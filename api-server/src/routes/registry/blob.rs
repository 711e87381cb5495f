//! Blobs: served only through a repository whose images reference them, with ranges.

use super::*;

/// Parses `bytes=START-[END]`.
pub(super) fn parse_range(v: &str) -> Option<ByteRange> {
    let spec = v.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start = a.trim().parse().ok()?;
    let end = match b.trim() {
        "" => None,
        e => Some(e.parse().ok()?),
    };
    if end.is_some_and(|e| e < start) {
        return None;
    }
    Some(ByteRange { start, end })
}

pub async fn blob(
    State(app): AppState,
    method: Method,
    headers: HeaderMap,
    Path((ns, env, digest)): Path<(String, String, String)>,
) -> RegResult<Response> {
    let caller = caller(&app, &headers).await?;
    let e = repository(&app, &caller, &headers, &ns, &env)?;
    serve_blob(&app, &method, &headers, &e, &digest).await
}

/// Digest → the digests its manifest references (config and layers). Manifests are
/// content-addressed, so an entry never goes stale; the map is only bounded.
type ManifestRefs = std::sync::Mutex<std::collections::HashMap<String, Arc<Vec<String>>>>;
static MANIFEST_REFS: std::sync::OnceLock<ManifestRefs> = std::sync::OnceLock::new();
const MANIFEST_REFS_MAX: usize = 4096;

/// The blobs (hex digests) the images of `env` are made of: each imaged build's manifest,
/// its config and its layers. Only these may be pulled through the repository: storage is
/// shared by every team, and a digest alone proves nothing about who may read it.
async fn repository_blobs(app: &App, env: &Environment) -> RegResult<Vec<String>> {
    let refs = MANIFEST_REFS.get_or_init(Default::default);
    let mut out = Vec::new();
    for (_, b) in imaged_builds(app, env) {
        let Some(d) = image_digest(&b) else { continue };
        let Ok(hex) = parse_digest(&d, "MANIFEST_INVALID") else {
            continue;
        };
        let known = refs.lock().expect("not poisoned").get(&hex).cloned();
        let listed = match known {
            Some(l) => l,
            None => {
                let Some(bytes) = read_blob(app, &hex).await? else {
                    continue;
                };
                if hex::encode(Sha256::digest(&bytes)) != hex {
                    continue;
                }
                let m: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let mut l: Vec<String> = Vec::new();
                let mut push = |v: &Value| {
                    if let Some(h) = v["digest"].as_str().and_then(|d| d.strip_prefix("sha256:")) {
                        l.push(h.to_string());
                    }
                };
                push(&m["config"]);
                m["layers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .for_each(&mut push);
                let l = Arc::new(l);
                let mut map = refs.lock().expect("not poisoned");
                if map.len() >= MANIFEST_REFS_MAX {
                    map.clear();
                }
                map.insert(hex.clone(), l.clone());
                l
            }
        };
        out.push(hex);
        out.extend(listed.iter().cloned());
    }
    Ok(out)
}

pub(super) async fn serve_blob(
    app: &App,
    method: &Method,
    headers: &HeaderMap,
    env: &Environment,
    digest: &str,
) -> RegResult<Response> {
    let hex = parse_digest(digest, "DIGEST_INVALID")?;
    let key = Key::new(&format!("blobs/sha256/{hex}")).map_err(|e| {
        RegistryError::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", e.to_string())
    })?;
    let unknown = || {
        RegistryError::new(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            format!("blob {digest} is not known"),
        )
    };
    // A blob no image of this repository references answers as a missing one (HEAD too), so
    // the registry is no oracle for what other teams' images hold.
    if !repository_blobs(app, env).await?.contains(&hex) {
        return Err(unknown());
    }
    let unavailable = |e: conda_store_storage::StorageError| match e {
        conda_store_storage::StorageError::NotFound(_) => unknown(),
        e => RegistryError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            e.to_string(),
        ),
    };
    let info = app
        .storage
        .head(&key)
        .await
        .map_err(unavailable)?
        .ok_or_else(unknown)?;
    if let Some(url) = app
        .storage
        .presign_get(&key, std::time::Duration::from_secs(600))
        .await
        .map_err(unavailable)?
    {
        let mut resp = (StatusCode::TEMPORARY_REDIRECT, [(LOCATION, url)]).into_response();
        resp.headers_mut().insert(
            "Docker-Content-Digest",
            HeaderValue::from_str(digest).expect("ascii"),
        );
        registry_headers(&mut resp);
        return Ok(resp);
    }
    let range = match headers.get(RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) => Some(parse_range(v).ok_or_else(|| {
            RegistryError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UNKNOWN",
                format!("range {v:?} is not valid"),
            )
        })?),
        None => None,
    };
    if let Some(r) = range
        && r.resolve(info.size).is_none()
    {
        let mut resp = RegistryError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UNKNOWN",
            "range past the end",
        )
        .into_response();
        resp.headers_mut().insert(
            CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes */{}", info.size)).expect("ascii"),
        );
        return Ok(resp);
    }
    let mut resp = if method == Method::HEAD {
        let mut r = Body::empty().into_response();
        r.headers_mut().insert(CONTENT_LENGTH, info.size.into());
        r
    } else {
        let read = app.storage.get(&key, range).await.map_err(unavailable)?;
        let len = read.len;
        let total = read.total;
        let mut r = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
            read.body,
            STREAM_CHUNK,
        ))
        .into_response();
        r.headers_mut().insert(CONTENT_LENGTH, len.into());
        if let Some(rng) = range {
            let (s, e) = rng.resolve(total).expect("checked");
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            r.headers_mut().insert(
                CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {s}-{e}/{total}")).expect("ascii"),
            );
        }
        r
    };
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        "Docker-Content-Digest",
        HeaderValue::from_str(digest).expect("ascii"),
    );
    registry_headers(&mut resp);
    Ok(resp)
}
