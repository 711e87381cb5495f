//! conda-store's views of the resources, with the numeric ids the SQL index hands out.

use super::*;

impl App {
    /// The id of an object of `kind` keyed `key`, handed out when first needed.
    pub async fn id(&self, kind: Kind, key: &str) -> ApiResult<i64> {
        Ok(self.index.id(kind, key).await?)
    }

    /// The namespace view of the Namespace object `ns`.
    pub async fn namespace_view(&self, ns: &Namespace) -> ApiResult<views::NamespaceView> {
        Ok(views::namespace(
            ns,
            self.id(Kind::Namespace, &ns.name_any()).await?,
        ))
    }

    /// The environment id of a Build.
    pub async fn environment_id_of(&self, b: &Build) -> ApiResult<i64> {
        self.id(
            Kind::Environment,
            &format!(
                "{}/{}",
                b.namespace().unwrap_or_default(),
                b.spec.environment
            ),
        )
        .await
    }

    /// The view of a Build, with its specification.
    pub async fn build_view(&self, b: &Build, with_spec: bool) -> ApiResult<views::BuildView> {
        let env_id = self.environment_id_of(b).await?;
        let spec = if with_spec {
            let ns = b.namespace().unwrap_or_default();
            match self
                .specifications
                .get(&ObjectRef::new(&b.spec.specification).within(&ns))
            {
                Some(s) => {
                    let id = self
                        .id(Kind::Specification, &format!("{ns}/{}", s.name_any()))
                        .await?;
                    let env_name = self
                        .environment_of(b)
                        .map(|e| views::environment_name(&e))
                        .unwrap_or_else(|| b.spec.environment.clone());
                    Some(views::specification(&s, id, &env_name))
                }
                None => None,
            }
        } else {
            None
        };
        Ok(views::build(b, env_id, spec))
    }

    /// The view of an Environment (with its current build when `full`).
    pub async fn environment_view(
        &self,
        env: &Environment,
        full: bool,
    ) -> ApiResult<views::EnvironmentView> {
        let ns_obj = env.namespace().unwrap_or_default();
        let ns_view = match self.namespaces.get(&ObjectRef::new(&ns_obj)) {
            Some(ns) => self.namespace_view(&ns).await?,
            None => views::NamespaceView {
                id: self.id(Kind::Namespace, &ns_obj).await?,
                name: ns_obj,
                metadata_: Default::default(),
                role_mappings: Vec::new(),
            },
        };
        let id = self.id(Kind::Environment, &key(env)).await?;
        let current = match (full, env.status.as_ref().and_then(|s| s.current_build)) {
            (true, Some(bid)) => match self.build(bid) {
                Some(b) => Some(self.build_view(&b, false).await?),
                None => None,
            },
            _ => None,
        };
        Ok(views::environment(env, id, ns_view, current))
    }
}
