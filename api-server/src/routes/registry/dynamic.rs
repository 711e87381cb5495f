//! Dynamic images, as conda-store had them: a pull of `conda-store-dynamic/<spec>/<spec>...`
//! builds an Environment of those packages once and serves its image.

use super::*;

/// The Namespace of dynamic images (`<host>/conda-store-dynamic/<spec>/<spec>...`).
pub const DYNAMIC_NAMESPACE: &str = "conda-store-dynamic";

/// The match specs a dynamic image name asks for: one per segment, with conda-store's
/// `.gt.` `.ge.` `.lt.` `.le.` `.eq.` for the operators (`numpy.ge.1.26` is `numpy>=1.26`),
/// canonical and sorted.
pub fn dynamic_specs(segments: &[&str]) -> Result<Vec<String>, String> {
    if segments.is_empty() {
        return Err("name at least one package".into());
    }
    let mut specs = Vec::new();
    for seg in segments {
        // Registry path components: lowercase letters, digits, `.`, `_`, `-`.
        if !seg.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            || !seg
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        {
            return Err(format!("{seg:?} is not a package spec of a registry name"));
        }
        let spec = seg
            .replacen(".ge.", ">=", 1)
            .replacen(".le.", "<=", 1)
            .replacen(".gt.", ">", 1)
            .replacen(".lt.", "<", 1)
            .replacen(".eq.", "==", 1);
        let canonical = conda_store_crds::spec::normalize::canonical_match_spec(&spec)
            .map_err(|e| format!("{seg:?}: {e}"))?;
        specs.push(canonical);
    }
    specs.sort();
    specs.dedup();
    Ok(specs)
}

/// The Environment object name of a dynamic image: the same specs, the same environment.
pub fn dynamic_name(specs: &[String]) -> String {
    format!(
        "dyn-{}",
        &hex::encode(Sha256::digest(specs.join("\n").as_bytes()))[..16]
    )
}

/// `GET /v2/conda-store-dynamic/<spec>/.../(manifests/<ref> | blobs/<digest> | tags/list)`:
/// creates (or reuses) the Environment of those packages in the `conda-store-dynamic`
/// Namespace and answers once its build has an image, waiting on changes for a bounded time.
pub async fn dynamic(
    State(app): AppState,
    method: Method,
    headers: HeaderMap,
    Path(rest): Path<String>,
    params: Params,
) -> RegResult<Response> {
    enum Want {
        Manifest(String),
        Blob(String),
        Tags,
    }
    let (name, want) = if let Some((n, r)) = rest.rsplit_once("/manifests/") {
        (n, Want::Manifest(r.to_string()))
    } else if let Some((n, d)) = rest.rsplit_once("/blobs/") {
        (n, Want::Blob(d.to_string()))
    } else if let Some(n) = rest.strip_suffix("/tags/list") {
        (n, Want::Tags)
    } else {
        return Err(unknown().await);
    };
    let segments: Vec<&str> = name.split('/').collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return Err(RegistryError::new(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            "empty or relative name segment",
        ));
    }
    let specs = dynamic_specs(&segments)
        .map_err(|e| RegistryError::new(StatusCode::BAD_REQUEST, "NAME_INVALID", e))?;
    let env_obj = dynamic_name(&specs);
    let repo = format!("{DYNAMIC_NAMESPACE}/{name}");
    let caller = caller(&app, &headers).await?;
    let ns = app.namespace(DYNAMIC_NAMESPACE).ok_or_else(|| {
        RegistryError::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!(
                "dynamic images are not enabled here: there is no Namespace {DYNAMIC_NAMESPACE}"
            ),
        )
    })?;
    let ns_obj = ns.name_any();
    let existing = app
        .environments
        .get(&ObjectRef::new(&env_obj).within(&ns_obj));
    let needed = if existing.is_some() {
        Permission::EnvironmentRead
    } else {
        Permission::EnvironmentCreate
    };
    if !app.may(&caller, needed, &ns_obj, Some(&env_obj)) {
        return Err(if caller.authenticated() {
            RegistryError::new(
                StatusCode::FORBIDDEN,
                "DENIED",
                format!(
                    "{} may not {} in {DYNAMIC_NAMESPACE}",
                    caller.entity(),
                    needed.as_str()
                ),
            )
        } else {
            unauthorized(
                &headers,
                Some(&format!("repository:{repo}:pull")),
                "authentication required",
            )
        });
    }
    if existing.is_none() {
        let api: kube::Api<Environment> = kube::Api::namespaced(app.client.clone(), &ns_obj);
        // Server-side apply of the typed resource: what it sets is spelled by the types.
        let mut env = Environment::new(
            &env_obj,
            conda_store_crds::EnvironmentSpec {
                name: Some(env_obj.clone()),
                description: Some(format!("dynamic image {repo}")),
                dependencies: Some(
                    specs
                        .iter()
                        .map(|s| conda_store_crds::DependencyItem::from(s.as_str()))
                        .collect(),
                ),
                artifacts: Some(vec![ArtifactKind::Lockfile, ArtifactKind::Image]),
                ..Default::default()
            },
        );
        env.metadata.namespace = Some(ns_obj.clone());
        let patch = serde_json::to_value(&env).map_err(|e| {
            RegistryError::new(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", e.to_string())
        })?;
        api.patch(
            &env_obj,
            &kube::api::PatchParams::apply(super::super::environments::FIELD_MANAGER),
            &kube::api::Patch::Apply(&patch),
        )
        .await
        .map_err(|e| {
            RegistryError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                e.to_string(),
            )
        })?;
    }
    // Until its current build has an image, or it failed, or the wait is over.
    let answer = app
        .wait_for(app.dynamic_wait, || {
            let e = app
                .environments
                .get(&ObjectRef::new(&env_obj).within(&ns_obj))?;
            let status = e.status.clone().unwrap_or_default();
            if status.current_build.is_some() && !imaged_builds(&app, &e).is_empty() {
                return Some(Ok(e));
            }
            if matches!(
                status.phase,
                Some(
                    conda_store_crds::EnvironmentPhase::Failed
                        | conda_store_crds::EnvironmentPhase::Invalid
                )
            ) {
                let why = conda_store_crds::find_condition(
                    &status.conditions,
                    conda_store_crds::ConditionType::Failed,
                )
                .map(|c| c.message.clone())
                .unwrap_or_default();
                return Some(Err(RegistryError::new(
                    StatusCode::NOT_FOUND,
                    "MANIFEST_UNKNOWN",
                    format!("the build of {repo} failed: {why}"),
                )));
            }
            None
        })
        .await;
    let env = match answer {
        Some(found) => found?,
        None => {
            return Err(RegistryError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                format!(
                    "{repo} is still building after {} s; pull again later",
                    app.dynamic_wait.as_secs()
                ),
            ));
        }
    };
    match want {
        Want::Manifest(reference) => {
            serve_manifest(&app, &method, &headers, &env, &repo, &reference).await
        }
        Want::Blob(digest) => serve_blob(&app, &method, &headers, &env, &digest).await,
        Want::Tags => serve_tags(&app, &env, &repo, &params),
    }
}

#[cfg(test)]
mod dynamic_tests {
    use super::*;

    /// The applied object carries no status (server-side apply of a null status would claim
    /// the field) and the types' field names.
    #[test]
    fn the_applied_environment_is_the_typed_resource() {
        let env = Environment::new("x", conda_store_crds::EnvironmentSpec::default());
        let v = serde_json::to_value(&env).unwrap();
        assert!(v.get("status").is_none(), "{v}");
        assert_eq!(v["apiVersion"], "conda.store/v1alpha1");
        assert_eq!(v["kind"], "Environment");
    }

    #[test]
    fn names_become_specs_and_one_environment() {
        let a = dynamic_specs(&["numpy.ge.1.26", "pandas", "scipy.lt.2"]).unwrap();
        assert_eq!(a, ["numpy>=1.26", "pandas", "scipy<2"]);
        let b = dynamic_specs(&["pandas", "scipy.lt.2", "numpy.ge.1.26"]).unwrap();
        assert_eq!(dynamic_name(&a), dynamic_name(&b));
        assert!(dynamic_name(&a).len() <= 40);
        assert!(dynamic_specs(&[]).is_err());
        assert!(dynamic_specs(&["bad!!"]).is_err());
        assert!(dynamic_specs(&["Numpy"]).is_err());
    }
}
