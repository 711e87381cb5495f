//! Manifests: by tag or digest, checked against their digest, in OCI or Docker schema 2 form.

use super::*;

/// Docker's schema 2 form of an OCI manifest: the same config and layers.
pub fn to_docker(manifest: &Value) -> Value {
    let mut m = manifest.clone();
    m["mediaType"] = json!(DOCKER_MANIFEST);
    if let Some(c) = m.get_mut("config") {
        c["mediaType"] = json!("application/vnd.docker.container.image.v1+json");
    }
    if let Some(layers) = m.get_mut("layers").and_then(Value::as_array_mut) {
        for l in layers {
            let gz = l["mediaType"]
                .as_str()
                .is_some_and(|t| t.ends_with("+gzip"));
            l["mediaType"] = json!(if gz {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            } else {
                "application/vnd.docker.image.rootfs.diff.tar"
            });
        }
    }
    if let Some(o) = m.as_object_mut() {
        o.remove("annotations");
        o.remove("artifactType");
    }
    m
}

/// Whether the client takes OCI manifests (no Accept counts as yes).
pub(super) fn accepts_oci(headers: &HeaderMap) -> bool {
    let accept: Vec<&str> = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .collect();
    accept.is_empty()
        || accept.iter().any(|a| *a == OCI_MANIFEST || *a == "*/*")
        || !accept.contains(&DOCKER_MANIFEST)
}

pub async fn manifest(
    State(app): AppState,
    method: Method,
    headers: HeaderMap,
    Path((ns, env, reference)): Path<(String, String, String)>,
) -> RegResult<Response> {
    let caller = caller(&app, &headers).await?;
    let e = repository(&app, &caller, &headers, &ns, &env)?;
    serve_manifest(
        &app,
        &method,
        &headers,
        &e,
        &format!("{ns}/{env}"),
        &reference,
    )
    .await
}

pub(super) async fn serve_manifest(
    app: &App,
    method: &Method,
    headers: &HeaderMap,
    e: &Environment,
    name: &str,
    reference: &str,
) -> RegResult<Response> {
    let builds = imaged_builds(app, e);
    let unknown = || {
        RegistryError::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("{name} has no image {reference}"),
        )
    };
    let stored_digest = if reference == "latest" {
        let current = e
            .status
            .as_ref()
            .and_then(|s| s.current_build)
            .ok_or_else(unknown)?;
        builds
            .iter()
            .find(|(id, _)| *id == current)
            .and_then(|(_, b)| image_digest(b))
            .ok_or_else(unknown)?
    } else if reference.starts_with("sha256:") {
        parse_digest(reference, "MANIFEST_INVALID")?;
        // A digest of one of this repository's images, in either form.
        let mut found = None;
        for (_, b) in &builds {
            let d = image_digest(b).unwrap_or_default();
            if d == reference {
                found = Some(d);
                break;
            }
            if let Some(bytes) = read_blob(app, d.trim_start_matches("sha256:")).await?
                && let Ok(m) = serde_json::from_slice::<Value>(&bytes)
            {
                let docker = serde_json::to_vec(&to_docker(&m)).unwrap_or_default();
                if format!("sha256:{}", hex::encode(Sha256::digest(&docker))) == reference {
                    found = Some(d);
                    break;
                }
            }
        }
        found.ok_or_else(unknown)?
    } else {
        let id: i64 = reference.parse().map_err(|_| unknown())?;
        builds
            .iter()
            .find(|(bid, _)| *bid == id)
            .and_then(|(_, b)| image_digest(b))
            .ok_or_else(unknown)?
    };
    let hex = parse_digest(&stored_digest, "MANIFEST_INVALID")?;
    let stored = read_blob(app, &hex).await?.ok_or_else(unknown)?;
    // Verified on the way out: the stored bytes are what the build recorded.
    if hex::encode(Sha256::digest(&stored)) != hex {
        return Err(RegistryError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "MANIFEST_INVALID",
            "the stored manifest does not match its digest",
        ));
    }
    let wants_docker =
        !accepts_oci(headers) || (reference.starts_with("sha256:") && reference != stored_digest);
    let (body, media_type) = if wants_docker {
        let m: Value = serde_json::from_slice(&stored).map_err(|_| unknown())?;
        (
            bytes::Bytes::from(serde_json::to_vec(&to_docker(&m)).unwrap_or_default()),
            DOCKER_MANIFEST,
        )
    } else {
        (stored, OCI_MANIFEST)
    };
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
    let len = body.len();
    let mut resp = if *method == Method::HEAD {
        Body::empty().into_response()
    } else {
        Body::from(body).into_response()
    };
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(media_type));
    h.insert(CONTENT_LENGTH, len.into());
    h.insert(
        "Docker-Content-Digest",
        HeaderValue::from_str(&digest).expect("ascii"),
    );
    registry_headers(&mut resp);
    Ok(resp)
}
