//! The SQL index (sqlx; SQLite embedded, PostgreSQL in production, chosen by the URL): numeric
//! ids of namespaces, environments and specifications, the packages of each build (from its
//! lockfile) and the channel and package catalog built from them.
//!
//! Ids are handed out once and kept in memory: lists read them without a query.

use std::collections::HashMap;
use std::sync::RwLock;

use conda_store_crds::spec::lockfile::LockedPackage;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Row};

/// What the index holds ids for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Keyed by the Namespace object name.
    Namespace,
    /// Keyed by `<kubernetes namespace>/<environment object name>`.
    Environment,
    /// Keyed by `<kubernetes namespace>/<specification object name>`.
    Specification,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "namespace",
            Kind::Environment => "environment",
            Kind::Specification => "specification",
        }
    }
}

/// A package of a build, as the catalog lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRow {
    /// Package id.
    pub id: i64,
    /// Channel id.
    pub channel_id: i64,
    /// Channel URL.
    pub channel: String,
    /// Subdir.
    pub subdir: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Build string.
    pub build: String,
    /// Where the package file is.
    pub url: String,
    /// sha256 of the file.
    pub sha256: Option<String>,
    /// md5 of the file.
    pub md5: Option<String>,
}

/// Which packages a catalog listing shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct PackageFilter<'a> {
    /// A substring of the name (the whole name with `exact`).
    pub search: Option<&'a str>,
    pub exact: bool,
    /// A build string pattern (SQL `LIKE`).
    pub build: Option<&'a str>,
    /// One row per package name.
    pub distinct_names: bool,
}

/// The index.
pub struct Index {
    pool: AnyPool,
    postgres: bool,
    ids: RwLock<HashMap<(Kind, String), i64>>,
}

/// The migrations, embedded.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Index {
    /// Connects (creating an SQLite file when missing) and migrates.
    pub async fn open(url: &str) -> Result<Index, sqlx::Error> {
        install_default_drivers();
        let postgres = url.starts_with("postgres");
        let url =
            if url.starts_with("sqlite:") && !url.contains("mode=") && !url.contains(":memory:") {
                format!("{url}{}mode=rwc", if url.contains('?') { "&" } else { "?" })
            } else {
                url.to_string()
            };
        // One connection for SQLite: it has one writer anyway, and `:memory:` is per connection.
        let max = if postgres { 8 } else { 1 };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .connect(&url)
            .await?;
        MIGRATOR.run(&pool).await?;
        let index = Index {
            pool,
            postgres,
            ids: RwLock::new(HashMap::new()),
        };
        index.load_ids().await?;
        Ok(index)
    }

    /// Records that the token `jti` (valid until `exp`) is revoked, and forgets revocations of
    /// tokens that have expired by `now` (they are refused as expired anyway). The clean-up is
    /// done here, on the rare write, not on the reads every replica makes every few seconds.
    pub async fn revoke_token(&self, jti: &str, exp: i64, now: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO revoked_token (jti, exp) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(exp)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM revoked_token WHERE exp <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The revoked tokens that have not expired by `now`.
    pub async fn revoked_tokens(&self, now: i64) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query("SELECT jti FROM revoked_token WHERE exp > $1")
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| r.try_get(0)).collect()
    }

    /// Whether the index is on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    async fn load_ids(&self) -> Result<(), sqlx::Error> {
        let rows = sqlx::query("SELECT kind, key, id FROM entity_id")
            .fetch_all(&self.pool)
            .await?;
        let mut ids = self.ids.write().expect("not poisoned");
        for r in rows {
            let kind: String = r.try_get(0)?;
            let kind = match kind.as_str() {
                "namespace" => Kind::Namespace,
                "environment" => Kind::Environment,
                "specification" => Kind::Specification,
                _ => continue,
            };
            ids.insert((kind, r.try_get(1)?), r.try_get(2)?);
        }
        Ok(())
    }

    /// The id of `key` if it has one already.
    pub fn cached_id(&self, kind: Kind, key: &str) -> Option<i64> {
        self.ids
            .read()
            .expect("not poisoned")
            .get(&(kind, key.to_string()))
            .copied()
    }

    /// The id of `key`, handing out the next free one the first time. Safe with several
    /// gateways on one database: a lost race retries.
    pub async fn id(&self, kind: Kind, key: &str) -> Result<i64, sqlx::Error> {
        if let Some(id) = self.cached_id(kind, key) {
            return Ok(id);
        }
        for _ in 0..20 {
            let found = sqlx::query("SELECT id FROM entity_id WHERE kind = $1 AND key = $2")
                .bind(kind.as_str())
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
            if let Some(row) = found {
                let id: i64 = row.try_get(0)?;
                self.ids
                    .write()
                    .expect("not poisoned")
                    .insert((kind, key.to_string()), id);
                return Ok(id);
            }
            let inserted = sqlx::query(
                "INSERT INTO entity_id (kind, key, id) \
                 SELECT $1, $2, COALESCE(MAX(id), 0) + 1 FROM entity_id WHERE kind = $1 \
                 ON CONFLICT DO NOTHING",
            )
            .bind(kind.as_str())
            .bind(key)
            .execute(&self.pool)
            .await;
            match inserted {
                Ok(_) => {}
                // Another gateway took the same id between MAX and INSERT: try again.
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {}
                Err(e) => return Err(e),
            }
        }
        Err(sqlx::Error::Protocol(format!(
            "no id could be allocated for {} {key}",
            kind.as_str()
        )))
    }

    /// Whether the build's packages are indexed.
    pub async fn build_indexed(&self, build_id: i64) -> Result<bool, sqlx::Error> {
        Ok(sqlx::query("SELECT 1 FROM build WHERE id = $1")
            .bind(build_id)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Records the packages of a build from its lockfile (conda packages only), in one
    /// transaction; a second call for the same build does nothing.
    pub async fn index_build(
        &self,
        build_id: i64,
        namespace: &str,
        name: &str,
        packages: &[LockedPackage],
    ) -> Result<(), sqlx::Error> {
        let now = jiff::Timestamp::now().to_string();
        let mut tx = self.pool.begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO build (id, namespace, name, indexed_on) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(build_id)
        .bind(namespace)
        .bind(name)
        .bind(&now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            return tx.commit().await;
        }
        for p in packages.iter().filter(|p| p.manager == "conda") {
            let Some(parts) = split_url(&p.url, &p.name, &p.version) else {
                continue;
            };
            sqlx::query(
                "INSERT INTO channel (id, name, last_update) \
                 SELECT COALESCE(MAX(id), 0) + 1, $1, $2 FROM channel WHERE true \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&parts.channel)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            let channel_id: i64 = sqlx::query("SELECT id FROM channel WHERE name = $1")
                .bind(&parts.channel)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            sqlx::query(
                "INSERT INTO package (id, channel_id, subdir, name, version, build, url, sha256, md5) \
                 SELECT COALESCE(MAX(id), 0) + 1, $1, $2, $3, $4, $5, $6, $7, $8 FROM package WHERE true \
                 ON CONFLICT DO NOTHING",
            )
            .bind(channel_id)
            .bind(&parts.subdir)
            .bind(&p.name)
            .bind(&p.version)
            .bind(&parts.build)
            .bind(&p.url)
            .bind(p.sha256.as_deref())
            .bind(p.md5.as_deref())
            .execute(&mut *tx)
            .await?;
            let package_id: i64 = sqlx::query(
                "SELECT id FROM package WHERE channel_id = $1 AND subdir = $2 AND name = $3 \
                 AND version = $4 AND build = $5",
            )
            .bind(channel_id)
            .bind(&parts.subdir)
            .bind(&p.name)
            .bind(&p.version)
            .bind(&parts.build)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
            sqlx::query(
                "INSERT INTO build_package (build_id, package_id) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(build_id)
            .bind(package_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Adds the packages of one subdir of a channel's repodata that the index does not hold
    /// yet, [`crate::catalog::BATCH`] per transaction (the lock is held briefly, the runtime
    /// yields between batches), and marks the channel updated. Returns how many were added.
    pub async fn add_channel_packages(
        &self,
        channel: &str,
        subdir: &str,
        packages: &[crate::catalog::CatalogPackage],
    ) -> Result<usize, sqlx::Error> {
        let now = jiff::Timestamp::now().to_string();
        sqlx::query(
            "INSERT INTO channel (id, name, last_update) \
             SELECT COALESCE(MAX(id), 0) + 1, $1, $2 FROM channel WHERE true \
             ON CONFLICT DO NOTHING",
        )
        .bind(channel)
        .bind(&now)
        .execute(&self.pool)
        .await?;
        let channel_id: i64 = sqlx::query("SELECT id FROM channel WHERE name = $1")
            .bind(channel)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        let held: std::collections::HashSet<(String, String, String)> = sqlx::query(
            "SELECT name, version, build FROM package WHERE channel_id = $1 AND subdir = $2",
        )
        .bind(channel_id)
        .bind(subdir)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<Result<_, sqlx::Error>>()?;
        let fresh: Vec<&crate::catalog::CatalogPackage> = packages
            .iter()
            .filter(|p| !held.contains(&(p.name.clone(), p.version.clone(), p.build.clone())))
            .collect();
        // Rows per statement: 9 parameters each, under SQLite's oldest limit of 999.
        const ROWS: usize = 100;
        for batch in fresh.chunks(crate::catalog::BATCH) {
            let mut tx = self.pool.begin().await?;
            let mut next: i64 = sqlx::query("SELECT COALESCE(MAX(id), 0) + 1 FROM package")
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            for rows in batch.chunks(ROWS) {
                let values: Vec<String> = (0..rows.len())
                    .map(|i| {
                        let b = i * 9;
                        format!(
                            "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                            b + 1,
                            b + 2,
                            b + 3,
                            b + 4,
                            b + 5,
                            b + 6,
                            b + 7,
                            b + 8,
                            b + 9
                        )
                    })
                    .collect();
                let sql = format!(
                    "INSERT INTO package (id, channel_id, subdir, name, version, build, url, \
                     sha256, md5) VALUES {} ON CONFLICT DO NOTHING",
                    values.join(", ")
                );
                let mut q = sqlx::query(&sql);
                for p in rows {
                    q = q
                        .bind(next)
                        .bind(channel_id)
                        .bind(subdir)
                        .bind(&p.name)
                        .bind(&p.version)
                        .bind(&p.build)
                        .bind(format!("{channel}/{subdir}/{}", p.file_name))
                        .bind(p.sha256.as_deref())
                        .bind(p.md5.as_deref());
                    next += 1;
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await?;
            tokio::task::yield_now().await;
        }
        sqlx::query("UPDATE channel SET last_update = $1 WHERE id = $2")
            .bind(&now)
            .bind(channel_id)
            .execute(&self.pool)
            .await?;
        Ok(fresh.len())
    }

    /// Forgets a deleted build.
    pub async fn forget_build(&self, build_id: i64) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM build_package WHERE build_id = $1")
            .bind(build_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM build WHERE id = $1")
            .bind(build_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// The packages of a build, by name.
    pub async fn build_packages(&self, build_id: i64) -> Result<Vec<PackageRow>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "{PACKAGE_SELECT} JOIN build_package bp ON bp.package_id = p.id \
             WHERE bp.build_id = $1 ORDER BY p.name, p.version, p.build"
        ))
        .bind(build_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(package_row).collect()
    }

    /// The ids of the builds holding a package named `name` (any version).
    pub async fn builds_with(&self, name: &str) -> Result<Vec<i64>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT DISTINCT bp.build_id FROM build_package bp \
             JOIN package p ON p.id = bp.package_id WHERE p.name = $1",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| r.try_get(0)).collect()
    }

    /// Channels: id, name, last update.
    pub async fn channels(&self) -> Result<Vec<(i64, String, Option<String>)>, sqlx::Error> {
        let rows = sqlx::query("SELECT id, name, last_update FROM channel ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// One page of the packages whose name contains `search` (or equals it with `exact`),
    /// optionally one per distinct name, ordered by name, version, build (`descending`
    /// reverses it), and how many there are in all. Paged in SQL: the catalog may hold every
    /// package of conda-forge.
    pub async fn packages(
        &self,
        filter: &PackageFilter<'_>,
        offset: usize,
        limit: usize,
        descending: bool,
    ) -> Result<(Vec<PackageRow>, usize), sqlx::Error> {
        let pattern = match (filter.search, filter.exact) {
            (Some(s), true) => s.to_string(),
            (Some(s), false) => format!("%{}%", s.replace(['%', '_'], "")),
            (None, _) => "%".into(),
        };
        let build = filter
            .build
            .map(str::to_string)
            .unwrap_or_else(|| "%".into());
        let op = if filter.exact && filter.search.is_some() {
            "="
        } else {
            "LIKE"
        };
        let mut cond = format!("p.name {op} $1 AND p.build LIKE $2");
        if filter.distinct_names {
            // The first row of each name in the listing's order.
            cond.push_str(&format!(
                " AND p.id IN (SELECT MIN(q.id) FROM package q WHERE q.name {} $1 \
                 AND q.build LIKE $2 GROUP BY q.name)",
                op
            ));
        }
        let count: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM package p WHERE {cond}"))
            .bind(&pattern)
            .bind(&build)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        let dir = if descending { "DESC" } else { "ASC" };
        let rows = sqlx::query(&format!(
            "{PACKAGE_SELECT} WHERE {cond} \
             ORDER BY p.name {dir}, p.version {dir}, p.build {dir}, p.id {dir} LIMIT $3 OFFSET $4"
        ))
        .bind(&pattern)
        .bind(&build)
        .bind(limit as i64)
        .bind(offset as i64)
        .fetch_all(&self.pool)
        .await?;
        let out: Vec<PackageRow> = rows.iter().map(package_row).collect::<Result<_, _>>()?;
        Ok((out, count as usize))
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await.is_ok()
    }
}

const PACKAGE_SELECT: &str = "SELECT p.id, p.channel_id, c.name, p.subdir, p.name, p.version, \
     p.build, p.url, p.sha256, p.md5 FROM package p JOIN channel c ON c.id = p.channel_id";

fn package_row(r: &sqlx::any::AnyRow) -> Result<PackageRow, sqlx::Error> {
    Ok(PackageRow {
        id: r.try_get(0)?,
        channel_id: r.try_get(1)?,
        channel: r.try_get(2)?,
        subdir: r.try_get(3)?,
        name: r.try_get(4)?,
        version: r.try_get(5)?,
        build: r.try_get(6)?,
        url: r.try_get(7)?,
        sha256: r.try_get(8)?,
        md5: r.try_get(9)?,
    })
}

/// Channel, subdir and build string of a package URL
/// (`<channel>/<subdir>/<name>-<version>-<build>.conda`).
#[derive(Debug, PartialEq, Eq)]
pub struct UrlParts {
    /// The channel URL.
    pub channel: String,
    /// The subdir.
    pub subdir: String,
    /// The build string.
    pub build: String,
}

/// Splits a package URL; `None` when it does not name the package's file.
pub fn split_url(url: &str, name: &str, version: &str) -> Option<UrlParts> {
    let (rest, file) = url.rsplit_once('/')?;
    let (channel, subdir) = rest.rsplit_once('/')?;
    // Subdirs are `noarch` or `<os>-<arch>`.
    if subdir != "noarch" && !subdir.contains('-') {
        return None;
    }
    let stem = file
        .strip_suffix(".conda")
        .or_else(|| file.strip_suffix(".tar.bz2"))?;
    let build = stem.strip_prefix(&format!("{name}-{version}-"))?;
    Some(UrlParts {
        channel: channel.to_string(),
        subdir: subdir.to_string(),
        build: build.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_urls_split() {
        assert_eq!(
            split_url("file:///c/linux-64/liba-2.0-h1_0.conda", "liba", "2.0"),
            Some(UrlParts {
                channel: "file:///c".into(),
                subdir: "linux-64".into(),
                build: "h1_0".into()
            })
        );
        assert_eq!(
            split_url(
                "https://x/conda-forge/noarch/tool-1-py_0.tar.bz2",
                "tool",
                "1"
            )
            .unwrap()
            .channel,
            "https://x/conda-forge"
        );
        assert_eq!(split_url("https://x/liba-2.0-0.conda", "liba", "2.0"), None);
        assert_eq!(
            split_url("https://x/c/noarch/other-1-0.conda", "liba", "1"),
            None
        );
    }
}
