-- The gateway's SQL index: what does not belong in etcd. Portable SQL (SQLite and PostgreSQL).

-- Numeric ids of namespaces, environments and specifications, stable across restarts.
CREATE TABLE entity_id (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    id BIGINT NOT NULL,
    PRIMARY KEY (kind, key),
    UNIQUE (kind, id)
);

-- Channels seen in builds' lockfiles.
CREATE TABLE channel (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    last_update TEXT
);

-- Packages (one per channel, subdir, name, version and build string).
CREATE TABLE package (
    id BIGINT PRIMARY KEY,
    channel_id BIGINT NOT NULL REFERENCES channel (id),
    subdir TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    build TEXT NOT NULL,
    url TEXT NOT NULL,
    sha256 TEXT,
    md5 TEXT,
    UNIQUE (channel_id, subdir, name, version, build)
);
CREATE INDEX package_name ON package (name);

-- Builds whose lockfile was indexed, and their packages.
CREATE TABLE build (
    id BIGINT PRIMARY KEY,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    indexed_on TEXT NOT NULL
);
CREATE TABLE build_package (
    build_id BIGINT NOT NULL REFERENCES build (id) ON DELETE CASCADE,
    package_id BIGINT NOT NULL REFERENCES package (id),
    PRIMARY KEY (build_id, package_id)
);
