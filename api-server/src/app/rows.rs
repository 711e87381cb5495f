//! The list rows (ids and names resolved), rebuilt once per change the watches see.

use super::*;

/// The names list rows are made with, gathered once per rebuild: with a thousand
/// environments, per-item lookups in the caches would cost a scan each.
struct Names {
    /// Namespace object name → (conda name, role bindings).
    namespaces: HashMap<String, (String, Vec<RoleBinding>)>,
    /// (Kubernetes namespace, Environment object name) → conda name.
    environments: HashMap<(String, String), String>,
}

impl Names {
    fn of(app: &App) -> Names {
        Names {
            namespaces: app
                .namespaces
                .state()
                .iter()
                .map(|n| {
                    (
                        n.name_any(),
                        (views::namespace_name(n), n.spec.role_bindings.clone()),
                    )
                })
                .collect(),
            environments: app
                .environments
                .state()
                .iter()
                .map(|e| {
                    (
                        (e.namespace().unwrap_or_default(), e.name_any()),
                        views::environment_name(e),
                    )
                })
                .collect(),
        }
    }

    /// The conda name of the Namespace object `ns`.
    fn namespace_name<'a>(&'a self, ns: &'a str) -> &'a str {
        self.namespaces.get(ns).map_or(ns, |(n, _)| n.as_str())
    }

    /// The conda name of an Environment object (its object name when unknown).
    fn environment_name<'a>(&'a self, ns: &str, env: &'a str) -> &'a str {
        self.environments
            .get(&(ns.to_string(), env.to_string()))
            .map_or(env, String::as_str)
    }
}

/// An environment as lists need it.
pub struct EnvRow {
    /// Numeric id.
    pub id: i64,
    /// The object.
    pub env: Arc<Environment>,
    /// Its Kubernetes namespace (the Namespace object name).
    pub ns: String,
    /// Its namespace's conda name.
    pub ns_name: String,
    /// Its conda name.
    pub name: String,
    /// Its list view (made once per change, serialised by every list request).
    pub view: views::EnvironmentView,
}

/// A build (with an id) as lists need it.
pub struct BuildRow {
    /// Numeric id.
    pub id: i64,
    /// Its environment's id.
    pub env_id: i64,
    /// The object.
    pub build: Arc<Build>,
    /// Its Kubernetes namespace.
    pub ns: String,
    /// Its namespace's conda name.
    pub ns_name: String,
    /// Its environment's conda name.
    pub env_name: String,
    /// Its list view.
    pub view: views::BuildView,
}

/// Every environment and build, sorted by id, with names and ids resolved: rebuilt once per
/// change, shared by every list request until the next.
pub struct Rows {
    /// Environments by id.
    pub envs: Vec<EnvRow>,
    /// Builds by id.
    pub builds: Vec<BuildRow>,
    /// Namespace object name → role bindings.
    pub bindings: HashMap<String, Vec<RoleBinding>>,
    /// Build id → its index in `builds`.
    pub build_index: HashMap<i64, usize>,
}

impl App {
    /// The list rows of the current generation.
    pub async fn rows(&self) -> ApiResult<Arc<Rows>> {
        let mut slot = self.rows.lock().await;
        let generation = self.generation.load(Ordering::Relaxed);
        if let Some((g, rows)) = slot.as_ref()
            && *g == generation
        {
            return Ok(rows.clone());
        }
        let snap = Names::of(self);
        let mut envs = Vec::new();
        for env in self.environments.state() {
            let ns = env.namespace().unwrap_or_default();
            envs.push(EnvRow {
                id: self.id(Kind::Environment, &key(&*env)).await?,
                view: self.environment_view(&env, false).await?,
                ns_name: snap.namespace_name(&ns).to_string(),
                name: views::environment_name(&env),
                ns,
                env,
            });
        }
        envs.sort_by_key(|e| e.id);
        let mut builds = Vec::new();
        for b in self.builds.state() {
            let Some(id) = b.status.as_ref().and_then(|s| s.id) else {
                continue;
            };
            let ns = b.namespace().unwrap_or_default();
            let env_id = self.environment_id_of(&b).await?;
            builds.push(BuildRow {
                id,
                env_id,
                view: views::build(&b, env_id, None),
                ns_name: snap.namespace_name(&ns).to_string(),
                env_name: snap.environment_name(&ns, &b.spec.environment).to_string(),
                ns,
                build: b,
            });
        }
        builds.sort_by_key(|b| b.id);
        let build_index = builds.iter().enumerate().map(|(i, b)| (b.id, i)).collect();
        let rows = Arc::new(Rows {
            envs,
            builds,
            bindings: snap
                .namespaces
                .into_iter()
                .map(|(k, (_, b))| (k, b))
                .collect(),
            build_index,
        });
        *slot = Some((generation, rows.clone()));
        Ok(rows)
    }
}
