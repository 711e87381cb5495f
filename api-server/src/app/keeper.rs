//! Keeping the SQL index and the revocations in step with the resources and the other replicas.

use super::*;

impl App {
    /// Reads the revoked tokens every replica recorded, every few seconds.
    pub(super) async fn keep_revocations(self: Arc<Self>) {
        loop {
            match self
                .index
                .revoked_tokens(jiff::Timestamp::now().as_second())
                .await
            {
                Ok(jtis) => self.auth.set_revoked(jtis),
                Err(e) => tracing::warn!(error = %e, "reading revoked tokens"),
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }

    /// Revokes the token `jti` (valid until `exp`): refused here at once, by every replica
    /// within seconds.
    pub async fn revoke(&self, jti: &str, exp: i64) -> ApiResult<()> {
        self.index
            .revoke_token(jti, exp, jiff::Timestamp::now().as_second())
            .await?;
        self.auth.revoke_locally(jti);
        Ok(())
    }

    /// Keeps the SQL index up to date: ids for every object, packages of completed builds.
    pub(super) async fn keep_index(self: Arc<Self>) {
        loop {
            let woken = self.changed.notified();
            if let Err(e) = self.sync_index().await {
                tracing::warn!(error = %e, "updating the index");
            }
            let _ = tokio::time::timeout(Duration::from_secs(30), woken).await;
            // Let a burst of changes settle into one pass.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One pass of the index keeper.
    pub async fn sync_index(&self) -> Result<(), ApiError> {
        for ns in self.namespaces.state() {
            self.index.id(Kind::Namespace, &ns.name_any()).await?;
        }
        for env in self.environments.state() {
            self.index.id(Kind::Environment, &key(&*env)).await?;
        }
        for b in self.builds.state() {
            self.index_completed_build(&b).await?;
        }
        Ok(())
    }

    /// Records a completed build's packages from its lockfile, unless they are already: the
    /// keeper does it as builds complete, and a read of the packages that comes first does it
    /// then (it must not find a completed build empty).
    pub async fn index_completed_build(&self, b: &Build) -> Result<(), ApiError> {
        let Some(id) = b.status.as_ref().and_then(|s| s.id) else {
            return Ok(());
        };
        if views::build_phase(b) != BuildPhase::Completed || self.index.build_indexed(id).await? {
            return Ok(());
        }
        let Some(lock) = artifact_key(b, ArtifactKind::Lockfile) else {
            return Ok(());
        };
        let text = match self.storage.get_bytes(&Key::new(&lock)?).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(build = id, error = %e, "reading a lockfile to index");
                return Ok(());
            }
        };
        let text = String::from_utf8_lossy(&text);
        match conda_store_crds::spec::lockfile::parse_lockfile(
            &text,
            &conda_store_crds::spec::error::Location::path("lockfile"),
        ) {
            Ok(lock) => {
                self.index
                    .index_build(
                        id,
                        &b.namespace().unwrap_or_default(),
                        &b.name_any(),
                        &lock.packages,
                    )
                    .await?
            }
            Err(e) => tracing::warn!(build = id, error = %e, "an unreadable lockfile"),
        }
        Ok(())
    }
}
