//! Durable state in SQLite: WAL journal, `synchronous=FULL`, foreign keys on.
//!
//! Every transaction that writes starts with `BEGIN IMMEDIATE`, so a read-check-write
//! sequence inside it cannot interleave with another writer; on top of that, status
//! updates are compare-and-set (`WHERE status = <the status read>`), as Cinder's
//! conditional updates are. The schema is versioned with `PRAGMA user_version` and
//! upgraded at open by the ordered `MIGRATIONS`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use crate::model::{
    Attachment, Chap, Export, Group, GroupSnapshot, GroupType, Job, JobSpec, JobState, Message, MessageResource,
    QosSpecs, Snapshot, SnapshotStatus, Transfer, TypeEncryption, Volume, VolumeStatus, VolumeType, now,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("schema version {found} is newer than this ember understands ({known})")]
    TooNew { found: i64, known: i64 },
    #[error("{kind} {id} changed status concurrently (expected {expected})")]
    StaleStatus { kind: &'static str, id: String, expected: String },
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// Ordered schema migrations; index + 1 is the schema version they produce.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE volume_types (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT,
    is_public INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL
);
CREATE TABLE volume_type_extra_specs (
    type_id TEXT NOT NULL REFERENCES volume_types(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (type_id, key)
);
CREATE TABLE volumes (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    name TEXT,
    description TEXT,
    size INTEGER NOT NULL,
    status TEXT NOT NULL,
    previous_status TEXT,
    attach_status TEXT NOT NULL,
    migration_status TEXT,
    volume_type_id TEXT NOT NULL REFERENCES volume_types(id),
    availability_zone TEXT NOT NULL,
    bootable INTEGER NOT NULL DEFAULT 0,
    multiattach INTEGER NOT NULL DEFAULT 0,
    snapshot_id TEXT,
    source_volid TEXT,
    host TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT
);
CREATE INDEX volumes_project ON volumes(project_id);
-- kind: 'user' (metadata), 'admin' (readonly, attached_mode), 'image' (glance metadata)
CREATE TABLE volume_metadata (
    volume_id TEXT NOT NULL REFERENCES volumes(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (volume_id, kind, key)
);
CREATE TABLE attachments (
    id TEXT PRIMARY KEY,
    volume_id TEXT NOT NULL REFERENCES volumes(id) ON DELETE CASCADE,
    instance_uuid TEXT,
    attached_host TEXT,
    mountpoint TEXT,
    attach_status TEXT NOT NULL,
    attach_mode TEXT NOT NULL,
    attach_time TEXT
);
CREATE TABLE snapshots (
    id TEXT PRIMARY KEY,
    volume_id TEXT NOT NULL REFERENCES volumes(id),
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    name TEXT,
    description TEXT,
    status TEXT NOT NULL,
    volume_size INTEGER NOT NULL,
    progress TEXT NOT NULL,
    volume_type_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT
);
CREATE INDEX snapshots_volume ON snapshots(volume_id);
CREATE TABLE snapshot_metadata (
    snapshot_id TEXT NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, key)
);
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    volume_id TEXT,
    snapshot_id TEXT,
    args TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"#,
    // 2: typed jobs (a JSON JobSpec) with their step, state and failure; user messages.
    // Rows of the first schema are translated; one that does not fit keeps a spec
    // that will not decode, so it fails loudly at start instead of running wrongly.
    r#"
CREATE TABLE jobs_v2 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    volume_id TEXT,
    snapshot_id TEXT,
    state TEXT NOT NULL DEFAULT 'running',
    step INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    request_id TEXT NOT NULL DEFAULT '',
    project_id TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    finished_at TEXT
);
INSERT INTO jobs_v2 (id, kind, spec, volume_id, snapshot_id, project_id, created_at)
SELECT id, kind,
    CASE kind
    WHEN 'create_volume' THEN json_object('kind', kind, 'volume', volume_id,
        'size_gib', json_extract(args, '$.size'),
        'source', CASE
            WHEN json_extract(args, '$.source.snapshot') IS NOT NULL
                THEN json_object('type', 'snapshot', 'id', json_extract(args, '$.source.snapshot'))
            WHEN json_extract(args, '$.source.volume') IS NOT NULL
                THEN json_object('type', 'volume', 'id', json_extract(args, '$.source.volume'))
            ELSE json_object('type', 'blank') END)
    WHEN 'delete_volume' THEN json_object('kind', kind, 'volume', volume_id,
        'snapshots', json(COALESCE(json_extract(args, '$.snapshots'), '[]')))
    WHEN 'extend_volume' THEN json_object('kind', kind, 'volume', volume_id,
        'new_size_gib', json_extract(args, '$.new_size'))
    WHEN 'revert_volume' THEN json_object('kind', kind, 'volume', volume_id, 'snapshot', snapshot_id)
    WHEN 'create_snapshot' THEN json_object('kind', kind, 'snapshot', snapshot_id, 'volume', volume_id)
    WHEN 'delete_snapshot' THEN json_object('kind', kind, 'snapshot', snapshot_id, 'volume', volume_id)
    WHEN 'unmanage_volume' THEN json_object('kind', kind, 'volume', volume_id)
    WHEN 'manage_volume' THEN json_object('kind', kind, 'volume', volume_id,
        'source_name', json_extract(args, '$.name'))
    WHEN 'retype_volume' THEN json_object('kind', kind, 'volume', volume_id,
        'new_type', json_extract(args, '$.new_type_id'))
    ELSE json_object('kind', kind, 'untranslated_args', args) END,
    volume_id, snapshot_id,
    COALESCE((SELECT project_id FROM volumes WHERE volumes.id = jobs.volume_id), ''),
    created_at
FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_v2 RENAME TO jobs;
CREATE INDEX jobs_running ON jobs(id) WHERE state = 'running';
CREATE INDEX jobs_volume ON jobs(volume_id);
CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_uuid TEXT,
    event_id TEXT NOT NULL,
    message_level TEXT NOT NULL,
    user_message TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX messages_project ON messages(project_id, created_at);
"#,
    // 3: exports (the desired state the target layer reconciles) and the initiators
    // each admits; attachments remember their connector.
    r#"
CREATE TABLE exports (
    volume_id TEXT PRIMARY KEY REFERENCES volumes(id) ON DELETE CASCADE,
    backend TEXT NOT NULL,
    target_name TEXT NOT NULL UNIQUE,
    lun INTEGER NOT NULL,
    chap_username TEXT,
    chap_secret TEXT,
    host_key TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE export_acls (
    volume_id TEXT NOT NULL REFERENCES exports(volume_id) ON DELETE CASCADE,
    initiator TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (volume_id, initiator)
);
ALTER TABLE attachments ADD COLUMN detach_time TEXT;
ALTER TABLE attachments ADD COLUMN connector TEXT;
ALTER TABLE attachments ADD COLUMN initiator TEXT;
"#,
    // 4: the projects a private volume type is shared with; the provisioned GiB
    // (volumes plus snapshots) kept by triggers, so a create's capacity check reads
    // one row instead of summing every volume.
    r#"
CREATE TABLE volume_type_access (
    type_id TEXT NOT NULL REFERENCES volume_types(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (type_id, project_id)
);
CREATE TABLE provisioned (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    gib INTEGER NOT NULL
);
INSERT INTO provisioned (id, gib) VALUES (1,
    (SELECT COALESCE(SUM(size), 0) FROM volumes) + (SELECT COALESCE(SUM(volume_size), 0) FROM snapshots));
CREATE TRIGGER provisioned_volume_insert AFTER INSERT ON volumes
    BEGIN UPDATE provisioned SET gib = gib + NEW.size WHERE id = 1; END;
CREATE TRIGGER provisioned_volume_delete AFTER DELETE ON volumes
    BEGIN UPDATE provisioned SET gib = gib - OLD.size WHERE id = 1; END;
CREATE TRIGGER provisioned_volume_resize AFTER UPDATE OF size ON volumes
    BEGIN UPDATE provisioned SET gib = gib - OLD.size + NEW.size WHERE id = 1; END;
CREATE TRIGGER provisioned_snapshot_insert AFTER INSERT ON snapshots
    BEGIN UPDATE provisioned SET gib = gib + NEW.volume_size WHERE id = 1; END;
CREATE TRIGGER provisioned_snapshot_delete AFTER DELETE ON snapshots
    BEGIN UPDATE provisioned SET gib = gib - OLD.volume_size WHERE id = 1; END;
CREATE TRIGGER provisioned_snapshot_resize AFTER UPDATE OF volume_size ON snapshots
    BEGIN UPDATE provisioned SET gib = gib - OLD.volume_size + NEW.volume_size WHERE id = 1; END;
"#,
    // 5: quotas: a project's own limits, and the quota classes ('default') over
    // the configured defaults. What is in use is counted from the resources.
    r#"
CREATE TABLE quotas (
    project_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    hard_limit INTEGER NOT NULL,
    PRIMARY KEY (project_id, resource)
);
CREATE TABLE quota_classes (
    class_name TEXT NOT NULL,
    resource TEXT NOT NULL,
    hard_limit INTEGER NOT NULL,
    PRIMARY KEY (class_name, resource)
);
CREATE INDEX snapshots_project ON snapshots(project_id);
"#,
    // 6: volume transfers offered and not yet accepted.
    r#"
CREATE TABLE transfers (
    id TEXT PRIMARY KEY,
    volume_id TEXT NOT NULL UNIQUE REFERENCES volumes(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    name TEXT,
    auth_key TEXT NOT NULL,
    no_snapshots INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
"#,
    // 7: whether an admin disabled the volume service (os-services), and why.
    r#"
CREATE TABLE service_state (
    binary TEXT PRIMARY KEY,
    disabled INTEGER NOT NULL,
    disabled_reason TEXT,
    updated_at TEXT NOT NULL
);
"#,
    // 8: whether an admin froze the backend (os-services/freeze): no deletes and
    // no snapshots until it thaws.
    r#"
ALTER TABLE service_state ADD COLUMN frozen INTEGER NOT NULL DEFAULT 0;
"#,
    // 9: QoS specs, and the one a volume type points at.
    r#"
CREATE TABLE qos_specs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    consumer TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE qos_spec_values (
    qos_id TEXT NOT NULL REFERENCES qos_specs(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (qos_id, key)
);
ALTER TABLE volume_types ADD COLUMN qos_specs_id TEXT REFERENCES qos_specs(id);
"#,
    // 10: a volume type's encryption (the hypervisor encrypts).
    r#"
CREATE TABLE type_encryption (
    type_id TEXT PRIMARY KEY REFERENCES volume_types(id) ON DELETE CASCADE,
    encryption_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    control_location TEXT NOT NULL,
    cipher TEXT,
    key_size INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT
);
"#,
    // 11: generic volume groups: group types and their specs, groups (with the
    // volume types their members may have), group snapshots; a volume's group and
    // a snapshot's group snapshot.
    r#"
CREATE TABLE group_types (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT,
    is_public INTEGER NOT NULL
);
CREATE TABLE group_type_specs (
    group_type_id TEXT NOT NULL REFERENCES group_types(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (group_type_id, key)
);
CREATE TABLE groups (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    name TEXT,
    description TEXT,
    status TEXT NOT NULL,
    group_type_id TEXT NOT NULL REFERENCES group_types(id),
    availability_zone TEXT NOT NULL,
    group_snapshot_id TEXT,
    source_group_id TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE group_volume_types (
    group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    volume_type_id TEXT NOT NULL REFERENCES volume_types(id),
    position INTEGER NOT NULL,
    PRIMARY KEY (group_id, volume_type_id)
);
CREATE TABLE group_snapshots (
    id TEXT PRIMARY KEY,
    group_id TEXT NOT NULL REFERENCES groups(id),
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    name TEXT,
    description TEXT,
    status TEXT NOT NULL,
    group_type_id TEXT NOT NULL REFERENCES group_types(id),
    created_at TEXT NOT NULL
);
ALTER TABLE volumes ADD COLUMN group_id TEXT REFERENCES groups(id);
ALTER TABLE snapshots ADD COLUMN group_snapshot_id TEXT REFERENCES group_snapshots(id);
CREATE INDEX volumes_group ON volumes(group_id);
CREATE INDEX snapshots_group_snapshot ON snapshots(group_snapshot_id);
"#,
    // 9: the provisioned GiB per pool (`host@backend#pool`), since an agent may
    // run several: a snapshot counts on its volume's pool, and a volume whose
    // host changes (a migration's identity swap) takes its GiB along.
    r#"
DROP TRIGGER provisioned_volume_insert;
DROP TRIGGER provisioned_volume_delete;
DROP TRIGGER provisioned_volume_resize;
DROP TRIGGER provisioned_snapshot_insert;
DROP TRIGGER provisioned_snapshot_delete;
DROP TRIGGER provisioned_snapshot_resize;
DROP TABLE provisioned;
CREATE TABLE provisioned (
    host TEXT PRIMARY KEY,
    gib INTEGER NOT NULL
);
INSERT INTO provisioned (host, gib)
    SELECT host, SUM(gib) FROM (
        SELECT host, size AS gib FROM volumes
        UNION ALL
        SELECT v.host, s.volume_size FROM snapshots s JOIN volumes v ON v.id = s.volume_id)
    GROUP BY host;
CREATE TRIGGER provisioned_volume_insert AFTER INSERT ON volumes BEGIN
    INSERT INTO provisioned (host, gib) VALUES (NEW.host, NEW.size)
        ON CONFLICT (host) DO UPDATE SET gib = gib + excluded.gib;
END;
CREATE TRIGGER provisioned_volume_delete AFTER DELETE ON volumes
    BEGIN UPDATE provisioned SET gib = gib - OLD.size WHERE host = OLD.host; END;
CREATE TRIGGER provisioned_volume_resize AFTER UPDATE OF size, host ON volumes BEGIN
    UPDATE provisioned SET gib = gib - OLD.size WHERE host = OLD.host;
    INSERT INTO provisioned (host, gib) VALUES (NEW.host, NEW.size)
        ON CONFLICT (host) DO UPDATE SET gib = gib + excluded.gib;
END;
CREATE TRIGGER provisioned_snapshot_insert AFTER INSERT ON snapshots BEGIN
    UPDATE provisioned SET gib = gib + NEW.volume_size
        WHERE host = (SELECT host FROM volumes WHERE id = NEW.volume_id);
END;
CREATE TRIGGER provisioned_snapshot_delete AFTER DELETE ON snapshots BEGIN
    UPDATE provisioned SET gib = gib - OLD.volume_size
        WHERE host = (SELECT host FROM volumes WHERE id = OLD.volume_id);
END;
CREATE TRIGGER provisioned_snapshot_resize AFTER UPDATE OF volume_size ON snapshots BEGIN
    UPDATE provisioned SET gib = gib - OLD.volume_size + NEW.volume_size
        WHERE host = (SELECT host FROM volumes WHERE id = NEW.volume_id);
END;
"#,
];

/// The schema version this ember writes.
fn schema_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// One writer connection, and read connections beside it: in WAL mode a read
/// transaction sees the last commit and neither waits for a writer (nor its
/// fsync) nor makes one wait.
pub struct Store {
    path: std::path::PathBuf,
    writer: Mutex<Connection>,
    /// Idle read connections; more are opened when all are in use.
    readers: Mutex<Vec<Connection>>,
    /// Dropping it stops the checkpoint thread.
    _checkpointer: std::sync::mpsc::Sender<()>,
}

/// How many idle read connections are kept open (each holds its page cache).
const IDLE_READERS: usize = 8;

/// A read connection's page cache, KiB (SQLite's default is 2 MiB).
const READER_CACHE_KIB: i64 = 1024;

/// WAL checkpoints run on their own connection and thread, so no request pays for
/// copying the log into the database file (SQLite's automatic checkpoint would run
/// inside whichever commit crosses the threshold).
fn spawn_checkpointer(path: &Path) -> Result<std::sync::mpsc::Sender<()>, StoreError> {
    let conn =
        Connection::open(path).map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("ember-checkpoint".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(std::time::Duration::from_millis(500))
            {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
                }
            }
        })
        .map_err(|e| StoreError::Corrupt(format!("start checkpoint thread: {e}")))?;
    Ok(stop)
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open { path: path.display().to_string(), source };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000; \
             PRAGMA wal_autocheckpoint=0;",
        )
        .map_err(open_err)?;
        let store = Store {
            path: path.to_path_buf(),
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
            _checkpointer: spawn_checkpointer(path)?,
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = schema_version();
        if found > known {
            return Err(StoreError::TooNew { found, known });
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(found).unwrap_or(0)) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i64::try_from(index + 1).unwrap_or(i64::MAX))?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A read connection: `query_only`, so a write slipped into `read` fails
    /// instead of racing the writer.
    fn open_reader(&self) -> Result<Connection, StoreError> {
        let open_err = |source| StoreError::Open { path: self.path.display().to_string(), source };
        let conn = Connection::open(&self.path).map_err(open_err)?;
        conn.execute_batch(&format!(
            "PRAGMA query_only=ON; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000; \
             PRAGMA cache_size=-{READER_CACHE_KIB};"
        ))
        .map_err(open_err)?;
        Ok(conn)
    }

    /// Runs `f` in a read transaction on a read connection: a snapshot of the
    /// last commit, taken without waiting for the writer.
    pub fn read<T, E: From<StoreError>>(&self, f: impl FnOnce(&Tx) -> Result<T, E>) -> Result<T, E> {
        let idle = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => self.open_reader()?,
        };
        let value = {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred).map_err(StoreError::from)?;
            f(&Tx(tx))
        };
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if readers.len() < IDLE_READERS {
            readers.push(conn);
        }
        value
    }

    /// Runs `f` in an immediate write transaction, committed only if `f` succeeds.
    pub fn write<T, E: From<StoreError>>(&self, f: impl FnOnce(&Tx) -> Result<T, E>) -> Result<T, E> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(StoreError::from)?;
        let tx = Tx(tx);
        let value = f(&tx)?;
        let started = std::time::Instant::now();
        tx.0.commit().map_err(StoreError::from)?;
        crate::metrics::metrics().commit_seconds.observe(started.elapsed().as_secs_f64());
        Ok(value)
    }
}

pub struct Tx<'c>(rusqlite::Transaction<'c>);

const VOLUME_COLUMNS: &str = "id, project_id, user_id, name, description, size, status, previous_status, \
     attach_status, migration_status, volume_type_id, availability_zone, bootable, multiattach, \
     snapshot_id, source_volid, host, created_at, updated_at, group_id";

const ATTACHMENT_COLUMNS: &str = "id, volume_id, instance_uuid, attached_host, mountpoint, attach_status, \
     attach_mode, attach_time, detach_time, connector, initiator";

fn attachment_from_row(r: &Row) -> rusqlite::Result<Attachment> {
    Ok(Attachment {
        id: r.get(0)?,
        volume_id: r.get(1)?,
        instance_uuid: r.get(2)?,
        attached_host: r.get(3)?,
        mountpoint: r.get(4)?,
        attach_status: parse(r.get(5)?)?,
        attach_mode: parse(r.get(6)?)?,
        attach_time: r.get(7)?,
        detach_time: r.get(8)?,
        connector: r.get(9)?,
        initiator: r.get(10)?,
    })
}

const EXPORT_COLUMNS: &str = "volume_id, backend, target_name, lun, chap_username, chap_secret, host_key, created_at";

fn export_from_row(r: &Row) -> rusqlite::Result<Export> {
    let username: Option<String> = r.get(4)?;
    let secret: Option<String> = r.get(5)?;
    Ok(Export {
        volume_id: r.get(0)?,
        backend: parse(r.get(1)?)?,
        target_name: r.get(2)?,
        lun: r.get(3)?,
        chap: username.zip(secret).map(|(username, secret)| Chap { username, secret }),
        host_key: r.get(6)?,
        created_at: r.get(7)?,
    })
}

const SNAPSHOT_COLUMNS: &str = "id, volume_id, project_id, user_id, name, description, status, \
     volume_size, progress, volume_type_id, created_at, updated_at, group_snapshot_id";

fn parse<T: std::str::FromStr<Err = String>>(text: String) -> rusqlite::Result<T> {
    text.parse()
        .map_err(|e: String| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into()))
}

fn parse_opt<T: std::str::FromStr<Err = String>>(text: Option<String>) -> rusqlite::Result<Option<T>> {
    text.map(parse).transpose()
}

fn volume_from_row(row: &Row) -> rusqlite::Result<Volume> {
    Ok(Volume {
        id: row.get(0)?,
        project_id: row.get(1)?,
        user_id: row.get(2)?,
        name: row.get(3)?,
        description: row.get(4)?,
        size: row.get(5)?,
        status: parse(row.get(6)?)?,
        previous_status: parse_opt(row.get(7)?)?,
        attach_status: parse(row.get(8)?)?,
        migration_status: parse_opt(row.get(9)?)?,
        volume_type_id: row.get(10)?,
        availability_zone: row.get(11)?,
        bootable: row.get(12)?,
        multiattach: row.get(13)?,
        snapshot_id: row.get(14)?,
        source_volid: row.get(15)?,
        host: row.get(16)?,
        created_at: row.get(17)?,
        updated_at: row.get(18)?,
        group_id: row.get(19)?,
        metadata: BTreeMap::new(),
        admin_metadata: BTreeMap::new(),
        image_metadata: BTreeMap::new(),
        attachments: Vec::new(),
    })
}

fn snapshot_from_row(row: &Row) -> rusqlite::Result<Snapshot> {
    Ok(Snapshot {
        id: row.get(0)?,
        volume_id: row.get(1)?,
        project_id: row.get(2)?,
        user_id: row.get(3)?,
        name: row.get(4)?,
        description: row.get(5)?,
        status: parse(row.get(6)?)?,
        volume_size: row.get(7)?,
        progress: row.get(8)?,
        volume_type_id: row.get(9)?,
        created_at: row.get(10)?,
        updated_at: row.get(11)?,
        group_snapshot_id: row.get(12)?,
        metadata: BTreeMap::new(),
    })
}

/// Which of a volume's key/value sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKind {
    User,
    Admin,
    Image,
}

impl MetaKind {
    fn as_str(self) -> &'static str {
        match self {
            MetaKind::User => "user",
            MetaKind::Admin => "admin",
            MetaKind::Image => "image",
        }
    }
}

impl Tx<'_> {
    // ---- volumes -------------------------------------------------------------

    pub fn volume(&self, id: &str) -> Result<Option<Volume>, StoreError> {
        let sql = format!("SELECT {VOLUME_COLUMNS} FROM volumes WHERE id = ?1");
        let found = self.0.prepare_cached(&sql)?.query_row([id], volume_from_row).optional()?;
        found.map(|v| self.fill_volume(v)).transpose()
    }

    /// All volumes, optionally of one project, oldest first.
    pub fn volumes(&self, project_id: Option<&str>) -> Result<Vec<Volume>, StoreError> {
        let sql = format!(
            "SELECT {VOLUME_COLUMNS} FROM volumes WHERE (?1 IS NULL OR project_id = ?1) ORDER BY created_at, rowid"
        );
        let mut stmt = self.0.prepare_cached(&sql)?;
        let mut out: Vec<Volume> = stmt.query_map([project_id], volume_from_row)?.collect::<Result<_, _>>()?;
        // Metadata and attachments in one query each, not two per volume.
        let index: std::collections::HashMap<String, usize> =
            out.iter().enumerate().map(|(i, v)| (v.id.clone(), i)).collect();
        let mut stmt = self.0.prepare_cached(
            "SELECT m.volume_id, m.kind, m.key, m.value FROM volume_metadata m JOIN volumes v ON v.id = m.volume_id \
             WHERE (?1 IS NULL OR v.project_id = ?1)",
        )?;
        let rows = stmt.query_map([project_id], |r| Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))?;
        for row in rows {
            let (volume_id, entry) = row?;
            if let Some(&i) = index.get(&volume_id) {
                put_meta(&mut out[i], entry)?;
            }
        }
        for a in self.all_attachments(project_id)? {
            if let Some(&i) = index.get(&a.volume_id) {
                out[i].attachments.push(a);
            }
        }
        Ok(out)
    }

    fn fill_volume(&self, mut v: Volume) -> Result<Volume, StoreError> {
        let mut stmt = self.0.prepare_cached("SELECT kind, key, value FROM volume_metadata WHERE volume_id = ?1")?;
        let rows = stmt.query_map([&v.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        for row in rows {
            put_meta(&mut v, row?)?;
        }
        v.attachments = self.attachments(&v.id)?;
        Ok(v)
    }

    pub fn insert_volume(&self, v: &Volume) -> Result<(), StoreError> {
        self.0.execute(
            &format!(
                "INSERT INTO volumes ({VOLUME_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)"
            ),
            params![
                v.id, v.project_id, v.user_id, v.name, v.description, v.size, v.status.as_str(),
                v.previous_status.map(VolumeStatus::as_str), v.attach_status.as_str(),
                v.migration_status.as_ref().map(ToString::to_string), v.volume_type_id,
                v.availability_zone, v.bootable, v.multiattach, v.snapshot_id, v.source_volid, v.host,
                v.created_at, v.updated_at, v.group_id
            ],
        )?;
        for (kind, map) in
            [(MetaKind::User, &v.metadata), (MetaKind::Admin, &v.admin_metadata), (MetaKind::Image, &v.image_metadata)]
        {
            self.set_volume_meta(&v.id, kind, map, false)?;
        }
        Ok(())
    }

    /// Writes the scalar fields of `new` if the stored status is still `expected`
    /// (compare-and-set); metadata and attachments have their own calls.
    pub fn update_volume(&self, expected: VolumeStatus, new: &Volume) -> Result<(), StoreError> {
        let changed = self.0.execute(
            "UPDATE volumes SET name = ?3, description = ?4, size = ?5, status = ?6, previous_status = ?7, \
             attach_status = ?8, migration_status = ?9, volume_type_id = ?10, bootable = ?11, \
             multiattach = ?12, host = ?13, updated_at = ?14, project_id = ?15, user_id = ?16, \
             availability_zone = ?17 WHERE id = ?1 AND status = ?2",
            params![
                new.id,
                expected.as_str(),
                new.name,
                new.description,
                new.size,
                new.status.as_str(),
                new.previous_status.map(VolumeStatus::as_str),
                new.attach_status.as_str(),
                new.migration_status.as_ref().map(ToString::to_string),
                new.volume_type_id,
                new.bootable,
                new.multiattach,
                new.host,
                now(),
                new.project_id,
                new.user_id,
                new.availability_zone
            ],
        )?;
        if changed == 1 {
            Ok(())
        } else {
            Err(StoreError::StaleStatus { kind: "volume", id: new.id.clone(), expected: expected.to_string() })
        }
    }

    pub fn delete_volume(&self, id: &str) -> Result<(), StoreError> {
        self.0.execute("DELETE FROM volumes WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Merges (or with `replace`, replaces) one of the volume's key/value sets.
    pub fn set_volume_meta(
        &self,
        volume_id: &str,
        kind: MetaKind,
        map: &BTreeMap<String, String>,
        replace: bool,
    ) -> Result<(), StoreError> {
        if replace {
            self.0.execute(
                "DELETE FROM volume_metadata WHERE volume_id = ?1 AND kind = ?2",
                params![volume_id, kind.as_str()],
            )?;
        }
        let mut stmt = self.0.prepare_cached(
            "INSERT INTO volume_metadata (volume_id, kind, key, value) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (volume_id, kind, key) DO UPDATE SET value = excluded.value",
        )?;
        for (key, value) in map {
            stmt.execute(params![volume_id, kind.as_str(), key, value])?;
        }
        self.touch_volume(volume_id)
    }

    /// Removes one key; false when it was not there.
    pub fn delete_volume_meta(&self, volume_id: &str, kind: MetaKind, key: &str) -> Result<bool, StoreError> {
        let n = self.0.execute(
            "DELETE FROM volume_metadata WHERE volume_id = ?1 AND kind = ?2 AND key = ?3",
            params![volume_id, kind.as_str(), key],
        )?;
        if n > 0 {
            self.touch_volume(volume_id)?;
        }
        Ok(n > 0)
    }

    fn touch_volume(&self, volume_id: &str) -> Result<(), StoreError> {
        self.0.execute("UPDATE volumes SET updated_at = ?2 WHERE id = ?1", params![volume_id, now()])?;
        Ok(())
    }

    // ---- attachments -----------------------------------------------------------

    pub fn attachments(&self, volume_id: &str) -> Result<Vec<Attachment>, StoreError> {
        let sql = format!("SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE volume_id = ?1 ORDER BY rowid");
        let mut stmt = self.0.prepare_cached(&sql)?;
        let rows = stmt.query_map([volume_id], attachment_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every attachment of every volume (a project's with Some), oldest first.
    pub fn all_attachments(&self, project_id: Option<&str>) -> Result<Vec<Attachment>, StoreError> {
        let sql = format!(
            "SELECT {} FROM attachments a JOIN volumes v ON v.id = a.volume_id \
             WHERE (?1 IS NULL OR v.project_id = ?1) ORDER BY a.rowid",
            ATTACHMENT_COLUMNS.split(", ").map(|c| format!("a.{c}")).collect::<Vec<_>>().join(", ")
        );
        let mut stmt = self.0.prepare_cached(&sql)?;
        let rows = stmt.query_map([project_id], attachment_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn attachment(&self, id: &str) -> Result<Option<Attachment>, StoreError> {
        let sql = format!("SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE id = ?1");
        Ok(self.0.prepare_cached(&sql)?.query_row([id], attachment_from_row).optional()?)
    }

    pub fn upsert_attachment(&self, a: &Attachment) -> Result<(), StoreError> {
        self.0.execute(
            &format!(
                "INSERT INTO attachments ({ATTACHMENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                 ON CONFLICT (id) DO UPDATE SET instance_uuid = excluded.instance_uuid, \
                 attached_host = excluded.attached_host, mountpoint = excluded.mountpoint, \
                 attach_status = excluded.attach_status, attach_mode = excluded.attach_mode, \
                 attach_time = excluded.attach_time, detach_time = excluded.detach_time, \
                 connector = excluded.connector, initiator = excluded.initiator"
            ),
            params![
                a.id,
                a.volume_id,
                a.instance_uuid,
                a.attached_host,
                a.mountpoint,
                a.attach_status.as_str(),
                a.attach_mode.as_str(),
                a.attach_time,
                a.detach_time,
                a.connector,
                a.initiator
            ],
        )?;
        Ok(())
    }

    pub fn delete_attachment(&self, id: &str) -> Result<(), StoreError> {
        self.0.execute("DELETE FROM attachments WHERE id = ?1", [id])?;
        Ok(())
    }

    // ---- snapshots -------------------------------------------------------------

    pub fn snapshot(&self, id: &str) -> Result<Option<Snapshot>, StoreError> {
        let sql = format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE id = ?1");
        let found = self.0.prepare_cached(&sql)?.query_row([id], snapshot_from_row).optional()?;
        found.map(|s| self.fill_snapshot(s)).transpose()
    }

    /// Snapshots of a project (all with None), or of one volume; newest last.
    pub fn snapshots(&self, project_id: Option<&str>, volume_id: Option<&str>) -> Result<Vec<Snapshot>, StoreError> {
        let sql = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE (?1 IS NULL OR project_id = ?1) \
             AND (?2 IS NULL OR volume_id = ?2) ORDER BY created_at, rowid"
        );
        let mut stmt = self.0.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![project_id, volume_id], snapshot_from_row)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(self.fill_snapshot(row?)?);
        }
        Ok(out)
    }

    fn fill_snapshot(&self, mut s: Snapshot) -> Result<Snapshot, StoreError> {
        let mut stmt = self.0.prepare_cached("SELECT key, value FROM snapshot_metadata WHERE snapshot_id = ?1")?;
        let rows = stmt.query_map([&s.id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        s.metadata = rows.collect::<Result<_, _>>()?;
        Ok(s)
    }

    pub fn insert_snapshot(&self, s: &Snapshot) -> Result<(), StoreError> {
        self.0.execute(
            &format!(
                "INSERT INTO snapshots ({SNAPSHOT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ),
            params![
                s.id,
                s.volume_id,
                s.project_id,
                s.user_id,
                s.name,
                s.description,
                s.status.as_str(),
                s.volume_size,
                s.progress,
                s.volume_type_id,
                s.created_at,
                s.updated_at,
                s.group_snapshot_id
            ],
        )?;
        self.set_snapshot_meta(&s.id, &s.metadata)
    }

    /// Compare-and-set on the snapshot's status, like `update_volume`.
    pub fn update_snapshot(&self, expected: SnapshotStatus, new: &Snapshot) -> Result<(), StoreError> {
        let changed = self.0.execute(
            "UPDATE snapshots SET name = ?3, description = ?4, status = ?5, progress = ?6, \
             volume_type_id = ?7, updated_at = ?8 WHERE id = ?1 AND status = ?2",
            params![
                new.id,
                expected.as_str(),
                new.name,
                new.description,
                new.status.as_str(),
                new.progress,
                new.volume_type_id,
                now()
            ],
        )?;
        if changed == 1 {
            Ok(())
        } else {
            Err(StoreError::StaleStatus { kind: "snapshot", id: new.id.clone(), expected: expected.to_string() })
        }
    }

    pub fn set_snapshot_meta(&self, snapshot_id: &str, map: &BTreeMap<String, String>) -> Result<(), StoreError> {
        let mut stmt = self.0.prepare_cached(
            "INSERT INTO snapshot_metadata (snapshot_id, key, value) VALUES (?1, ?2, ?3) \
             ON CONFLICT (snapshot_id, key) DO UPDATE SET value = excluded.value",
        )?;
        for (key, value) in map {
            stmt.execute(params![snapshot_id, key, value])?;
        }
        Ok(())
    }

    /// False when the snapshot had no such key.
    pub fn delete_snapshot_meta(&self, snapshot_id: &str, key: &str) -> Result<bool, StoreError> {
        let n = self
            .0
            .execute("DELETE FROM snapshot_metadata WHERE snapshot_id = ?1 AND key = ?2", params![snapshot_id, key])?;
        Ok(n > 0)
    }

    pub fn clear_snapshot_meta(&self, snapshot_id: &str) -> Result<(), StoreError> {
        self.0.execute("DELETE FROM snapshot_metadata WHERE snapshot_id = ?1", [snapshot_id])?;
        Ok(())
    }

    pub fn delete_snapshot(&self, id: &str) -> Result<(), StoreError> {
        self.0.execute("DELETE FROM snapshots WHERE id = ?1", [id])?;
        Ok(())
    }

    // ---- key/value specs of types and QoS specs ---------------------------------------

    pub fn specs(&self, of: Specs, owner: &str) -> Result<BTreeMap<String, String>, StoreError> {
        let (table, column) = of.table();
        let mut stmt = self.0.prepare_cached(&format!("SELECT key, value FROM {table} WHERE {column} = ?1"))?;
        let rows = stmt.query_map([owner], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Sets `specs` (each key added or overwritten; the others stay).
    pub fn set_specs(&self, of: Specs, owner: &str, specs: &BTreeMap<String, String>) -> Result<(), StoreError> {
        let (table, column) = of.table();
        let mut stmt = self.0.prepare_cached(&format!(
            "INSERT INTO {table} ({column}, key, value) VALUES (?1, ?2, ?3) \
             ON CONFLICT ({column}, key) DO UPDATE SET value = excluded.value"
        ))?;
        for (key, value) in specs {
            stmt.execute(params![owner, key, value])?;
        }
        Ok(())
    }

    /// False when there was no such key.
    pub fn delete_spec(&self, of: Specs, owner: &str, key: &str) -> Result<bool, StoreError> {
        let (table, column) = of.table();
        let n =
            self.0.execute(&format!("DELETE FROM {table} WHERE {column} = ?1 AND key = ?2"), params![owner, key])?;
        Ok(n > 0)
    }

    // ---- volume types ------------------------------------------------------------

    /// The type of a `TYPE_COLUMNS` row, with its extra specs.
    fn with_specs(&self, mut t: VolumeType) -> Result<VolumeType, StoreError> {
        t.extra_specs = self.specs(Specs::VolumeType, &t.id)?;
        Ok(t)
    }

    /// A type by id, or else by name.
    pub fn volume_type(&self, id_or_name: &str) -> Result<Option<VolumeType>, StoreError> {
        let sql = format!(
            "SELECT {TYPE_COLUMNS} FROM volume_types WHERE id = ?1 \
             UNION ALL SELECT {TYPE_COLUMNS} FROM volume_types WHERE name = ?1 LIMIT 1"
        );
        let row = self.0.prepare_cached(&sql)?.query_row([id_or_name], type_from_row).optional()?;
        row.map(|t| self.with_specs(t)).transpose()
    }

    pub fn volume_types(&self) -> Result<Vec<VolumeType>, StoreError> {
        let sql = format!("SELECT {TYPE_COLUMNS} FROM volume_types ORDER BY created_at, rowid");
        let rows: Vec<VolumeType> =
            self.0.prepare_cached(&sql)?.query_map([], type_from_row)?.collect::<Result<_, _>>()?;
        rows.into_iter().map(|t| self.with_specs(t)).collect()
    }

    /// Type id → name of every type (without their extra specs).
    pub fn volume_type_names(&self) -> Result<BTreeMap<String, String>, StoreError> {
        let mut stmt = self.0.prepare_cached("SELECT id, name FROM volume_types")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Inserts or rewrites a type's row (extra specs are merged separately).
    pub fn save_volume_type(&self, t: &VolumeType) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT INTO volume_types (id, name, description, is_public, created_at) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, description = excluded.description, \
             is_public = excluded.is_public",
            params![t.id, t.name, t.description, t.is_public, now()],
        )?;
        Ok(())
    }

    pub fn delete_volume_type(&self, id: &str) -> Result<(), StoreError> {
        self.0.execute("DELETE FROM volume_types WHERE id = ?1", [id])?;
        Ok(())
    }

    /// The projects a private type is shared with.
    pub fn type_access(&self, type_id: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.0.prepare_cached(
            "SELECT project_id FROM volume_type_access WHERE type_id = ?1 ORDER BY created_at, rowid",
        )?;
        let rows = stmt.query_map([type_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn has_type_access(&self, type_id: &str, project_id: &str) -> Result<bool, StoreError> {
        Ok(self.0.query_row(
            "SELECT EXISTS (SELECT 1 FROM volume_type_access WHERE type_id = ?1 AND project_id = ?2)",
            [type_id, project_id],
            |r| r.get(0),
        )?)
    }

    /// False when the project already had access.
    pub fn add_type_access(&self, type_id: &str, project_id: &str) -> Result<bool, StoreError> {
        let n = self.0.execute(
            "INSERT INTO volume_type_access (type_id, project_id, created_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT DO NOTHING",
            params![type_id, project_id, now()],
        )?;
        Ok(n > 0)
    }

    /// False when the project had no access.
    pub fn remove_type_access(&self, type_id: &str, project_id: &str) -> Result<bool, StoreError> {
        let n = self
            .0
            .execute("DELETE FROM volume_type_access WHERE type_id = ?1 AND project_id = ?2", [type_id, project_id])?;
        Ok(n > 0)
    }

    // ---- type encryption ------------------------------------------------------------

    pub fn type_encryption(&self, type_id: &str) -> Result<Option<TypeEncryption>, StoreError> {
        Ok(self
            .0
            .query_row(
                "SELECT type_id, encryption_id, provider, control_location, cipher, key_size, created_at, \
                 updated_at FROM type_encryption WHERE type_id = ?1",
                [type_id],
                |r| {
                    Ok(TypeEncryption {
                        type_id: r.get(0)?,
                        encryption_id: r.get(1)?,
                        provider: r.get(2)?,
                        control_location: r.get(3)?,
                        cipher: r.get(4)?,
                        key_size: r.get(5)?,
                        created_at: r.get(6)?,
                        updated_at: r.get(7)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn save_type_encryption(&self, e: &TypeEncryption) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT INTO type_encryption (type_id, encryption_id, provider, control_location, cipher, key_size, \
             created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (type_id) DO UPDATE SET provider = excluded.provider, \
             control_location = excluded.control_location, cipher = excluded.cipher, \
             key_size = excluded.key_size, updated_at = excluded.updated_at",
            params![
                e.type_id,
                e.encryption_id,
                e.provider,
                e.control_location,
                e.cipher,
                e.key_size,
                e.created_at,
                e.updated_at
            ],
        )?;
        Ok(())
    }

    pub fn delete_type_encryption(&self, type_id: &str) -> Result<(), StoreError> {
        self.0.execute("DELETE FROM type_encryption WHERE type_id = ?1", [type_id])?;
        Ok(())
    }

    // ---- QoS specs ------------------------------------------------------------------

    pub fn insert_qos(&self, q: &QosSpecs) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT INTO qos_specs (id, name, consumer, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![q.id, q.name, q.consumer.as_str(), q.created_at],
        )?;
        self.set_specs(Specs::Qos, &q.id, &q.specs)
    }

    /// Sets the consumer and replaces the specs.
    pub fn update_qos(&self, q: &QosSpecs) -> Result<(), StoreError> {
        self.0.execute("UPDATE qos_specs SET consumer = ?2 WHERE id = ?1", params![q.id, q.consumer.as_str()])?;
        self.0.execute("DELETE FROM qos_spec_values WHERE qos_id = ?1", [&q.id])?;
        self.set_specs(Specs::Qos, &q.id, &q.specs)
    }

    /// Every QoS spec (one by id with Some), newest first.
    pub fn qos_specs(&self, id: Option<&str>) -> Result<Vec<QosSpecs>, StoreError> {
        let mut stmt = self.0.prepare_cached(
            "SELECT id, name, consumer, created_at FROM qos_specs WHERE ?1 IS NULL OR id = ?1 \
             ORDER BY created_at DESC, rowid DESC",
        )?;
        let rows: Vec<(String, String, String, String)> =
            stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(id, name, consumer, created_at)| {
                let specs = self.specs(Specs::Qos, &id)?;
                let consumer = consumer.parse().map_err(StoreError::Corrupt)?;
                Ok(QosSpecs { id, name, consumer, specs, created_at })
            })
            .collect()
    }

    pub fn qos_name_taken(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.0.query_row("SELECT EXISTS (SELECT 1 FROM qos_specs WHERE name = ?1)", [name], |r| r.get(0))?)
    }

    pub fn delete_qos(&self, id: &str) -> Result<(), StoreError> {
        self.0.execute("UPDATE volume_types SET qos_specs_id = NULL WHERE qos_specs_id = ?1", [id])?;
        self.0.execute("DELETE FROM qos_specs WHERE id = ?1", [id])?;
        Ok(())
    }

    /// (type id, type name) of every type pointing at the QoS specs.
    pub fn qos_associations(&self, id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt =
            self.0.prepare_cached("SELECT id, name FROM volume_types WHERE qos_specs_id = ?1 ORDER BY name")?;
        let rows = stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Points the type at the QoS specs (None: at none).
    pub fn set_type_qos(&self, type_id: &str, qos_id: Option<&str>) -> Result<(), StoreError> {
        self.0.execute("UPDATE volume_types SET qos_specs_id = ?2 WHERE id = ?1", params![type_id, qos_id])?;
        Ok(())
    }

    // ---- services -------------------------------------------------------------------

    /// A service's admin state; None if never changed.
    pub fn service_state(&self, binary: &str) -> Result<Option<ServiceState>, StoreError> {
        Ok(self
            .0
            .query_row(
                "SELECT disabled, disabled_reason, frozen, updated_at FROM service_state WHERE binary = ?1",
                [binary],
                |r| {
                    Ok(ServiceState {
                        disabled: r.get(0)?,
                        disabled_reason: r.get(1)?,
                        frozen: r.get(2)?,
                        updated_at: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn set_service_state(&self, binary: &str, state: &ServiceState) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT INTO service_state (binary, disabled, disabled_reason, frozen, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (binary) DO UPDATE SET disabled = excluded.disabled, \
             disabled_reason = excluded.disabled_reason, frozen = excluded.frozen, updated_at = excluded.updated_at",
            params![binary, state.disabled, state.disabled_reason, state.frozen, state.updated_at],
        )?;
        Ok(())
    }

    // ---- transfers ------------------------------------------------------------------

    pub fn insert_transfer(&self, t: &Transfer) -> Result<(), StoreError> {
        self.0.execute(
            &format!("INSERT INTO transfers ({TRANSFER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
            params![t.id, t.volume_id, t.project_id, t.user_id, t.name, t.auth_key, t.no_snapshots, t.created_at],
        )?;
        Ok(())
    }

    pub fn transfer(&self, id: &str) -> Result<Option<Transfer>, StoreError> {
        let sql = format!("SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id = ?1");
        Ok(self.0.prepare_cached(&sql)?.query_row([id], transfer_from_row).optional()?)
    }

    /// Every open transfer (a project's with Some), oldest first.
    pub fn transfers(&self, project_id: Option<&str>) -> Result<Vec<Transfer>, StoreError> {
        let sql = format!(
            "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE (?1 IS NULL OR project_id = ?1) ORDER BY created_at, rowid"
        );
        let mut stmt = self.0.prepare_cached(&sql)?;
        let rows = stmt.query_map([project_id], transfer_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn delete_transfer(&self, id: &str) -> Result<(), StoreError> {
        self.0.execute("DELETE FROM transfers WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Gives a snapshot to another project (a transfer's accept).
    pub fn move_snapshot(&self, id: &str, project_id: &str, user_id: &str) -> Result<(), StoreError> {
        self.0.execute(
            "UPDATE snapshots SET project_id = ?2, user_id = ?3, updated_at = ?4 WHERE id = ?1",
            params![id, project_id, user_id, now()],
        )?;
        Ok(())
    }

    // ---- groups --------------------------------------------------------------------

    /// A group type by id, or else by name.
    pub fn group_type(&self, id_or_name: &str) -> Result<Option<GroupType>, StoreError> {
        let sql =
            format!("SELECT {GROUP_TYPE_COLUMNS} FROM group_types WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC");
        let found = self.0.prepare_cached(&sql)?.query_row([id_or_name], group_type_from_row).optional()?;
        found.map(|t| self.fill_group_type(t)).transpose()
    }

    /// Every group type, by name.
    pub fn group_types(&self) -> Result<Vec<GroupType>, StoreError> {
        let sql = format!("SELECT {GROUP_TYPE_COLUMNS} FROM group_types ORDER BY name");
        let mut stmt = self.0.prepare_cached(&sql)?;
        let rows = stmt.query_map([], group_type_from_row)?.collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(|t| self.fill_group_type(t)).collect()
    }

    fn fill_group_type(&self, mut t: GroupType) -> Result<GroupType, StoreError> {
        t.group_specs = self.specs(Specs::GroupType, &t.id)?;
        Ok(t)
    }

    /// Inserts or updates the type's scalar fields (its specs have their own calls).
    pub fn save_group_type(&self, t: &GroupType) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT INTO group_types (id, name, description, is_public) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, description = excluded.description, \
             is_public = excluded.is_public",
            params![t.id, t.name, t.description, t.is_public],
        )?;
        Ok(())
    }

    pub fn delete_group_type(&self, id: &str) -> Result<(), StoreError> {
        self.0.execute("DELETE FROM group_types WHERE id = ?1", [id])?;
        Ok(())
    }

    /// How many groups a project has (its `groups` quota usage).
    pub fn group_count(&self, project_id: &str) -> Result<i64, StoreError> {
        Ok(self.0.query_row("SELECT COUNT(*) FROM groups WHERE project_id = ?1", [project_id], |r| r.get(0))?)
    }

    pub fn group_type_in_use(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.0.query_row("SELECT EXISTS (SELECT 1 FROM groups WHERE group_type_id = ?1)", [id], |r| r.get(0))?)
    }

    pub fn group(&self, id: &str) -> Result<Option<Group>, StoreError> {
        let sql = format!("SELECT {GROUP_COLUMNS} FROM groups WHERE id = ?1");
        let found = self.0.prepare_cached(&sql)?.query_row([id], group_from_row).optional()?;
        found.map(|g| self.fill_group(g)).transpose()
    }

    /// A project's groups (all with None), oldest first.
    pub fn groups(&self, project_id: Option<&str>) -> Result<Vec<Group>, StoreError> {
        let sql = format!(
            "SELECT {GROUP_COLUMNS} FROM groups WHERE (?1 IS NULL OR project_id = ?1) ORDER BY created_at, rowid"
        );
        let mut stmt = self.0.prepare_cached(&sql)?;
        let rows = stmt.query_map([project_id], group_from_row)?.collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(|g| self.fill_group(g)).collect()
    }

    fn fill_group(&self, mut g: Group) -> Result<Group, StoreError> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT volume_type_id FROM group_volume_types WHERE group_id = ?1 ORDER BY position")?;
        g.volume_types = stmt.query_map([&g.id], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok(g)
    }

    pub fn insert_group(&self, g: &Group) -> Result<(), StoreError> {
        self.0.execute(
            &format!("INSERT INTO groups ({GROUP_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
            params![
                g.id,
                g.project_id,
                g.user_id,
                g.name,
                g.description,
                g.status.as_str(),
                g.group_type_id,
                g.availability_zone,
                g.group_snapshot_id,
                g.source_group_id,
                g.created_at
            ],
        )?;
        let mut stmt = self.0.prepare_cached(
            "INSERT INTO group_volume_types (group_id, volume_type_id, position) VALUES (?1, ?2, ?3)",
        )?;
        for (position, type_id) in g.volume_types.iter().enumerate() {
            stmt.execute(params![g.id, type_id, i64::try_from(position).unwrap_or(i64::MAX)])?;
        }
        Ok(())
    }

    /// Compare-and-set of the group's name, description and status.
    pub fn update_group(&self, expected: crate::model::GroupStatus, new: &Group) -> Result<(), StoreError> {
        let changed = self.0.execute(
            "UPDATE groups SET name = ?3, description = ?4, status = ?5 WHERE id = ?1 AND status = ?2",
            params![new.id, expected.as_str(), new.name, new.description, new.status.as_str()],
        )?;
        if changed == 1 {
            Ok(())
        } else {
            Err(StoreError::StaleStatus { kind: "group", id: new.id.clone(), expected: expected.to_string() })
        }
    }

    pub fn delete_group(&self, id: &str) -> Result<(), StoreError> {
        self.0.execute("DELETE FROM groups WHERE id = ?1", [id])?;
        Ok(())
    }

    /// The ids of the group's volumes, oldest first.
    pub fn group_volume_ids(&self, group_id: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt =
            self.0.prepare_cached("SELECT id FROM volumes WHERE group_id = ?1 ORDER BY created_at, rowid")?;
        let rows = stmt.query_map([group_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Puts a volume into a group, or (None) out of its group.
    pub fn set_volume_group(&self, volume_id: &str, group_id: Option<&str>) -> Result<(), StoreError> {
        self.0.execute(
            "UPDATE volumes SET group_id = ?2, updated_at = ?3 WHERE id = ?1",
            params![volume_id, group_id, now()],
        )?;
        Ok(())
    }

    pub fn group_snapshot(&self, id: &str) -> Result<Option<GroupSnapshot>, StoreError> {
        let sql = format!("SELECT {GROUP_SNAPSHOT_COLUMNS} FROM group_snapshots WHERE id = ?1");
        Ok(self.0.prepare_cached(&sql)?.query_row([id], group_snapshot_from_row).optional()?)
    }

    /// A project's group snapshots (all with None), or one group's; oldest first.
    pub fn group_snapshots(
        &self,
        project_id: Option<&str>,
        group_id: Option<&str>,
    ) -> Result<Vec<GroupSnapshot>, StoreError> {
        let sql = format!(
            "SELECT {GROUP_SNAPSHOT_COLUMNS} FROM group_snapshots WHERE (?1 IS NULL OR project_id = ?1) \
             AND (?2 IS NULL OR group_id = ?2) ORDER BY created_at, rowid"
        );
        let mut stmt = self.0.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![project_id, group_id], group_snapshot_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn insert_group_snapshot(&self, g: &GroupSnapshot) -> Result<(), StoreError> {
        self.0.execute(
            &format!(
                "INSERT INTO group_snapshots ({GROUP_SNAPSHOT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            params![
                g.id,
                g.group_id,
                g.project_id,
                g.user_id,
                g.name,
                g.description,
                g.status.as_str(),
                g.group_type_id,
                g.created_at
            ],
        )?;
        Ok(())
    }

    /// Compare-and-set of a group snapshot's status.
    pub fn set_group_snapshot_status(
        &self,
        id: &str,
        expected: crate::model::GroupSnapshotStatus,
        status: crate::model::GroupSnapshotStatus,
    ) -> Result<(), StoreError> {
        let changed = self.0.execute(
            "UPDATE group_snapshots SET status = ?3 WHERE id = ?1 AND status = ?2",
            params![id, expected.as_str(), status.as_str()],
        )?;
        if changed == 1 {
            Ok(())
        } else {
            Err(StoreError::StaleStatus { kind: "group snapshot", id: id.to_string(), expected: expected.to_string() })
        }
    }

    pub fn delete_group_snapshot(&self, id: &str) -> Result<(), StoreError> {
        self.0.execute("DELETE FROM group_snapshots WHERE id = ?1", [id])?;
        Ok(())
    }

    /// The snapshots taken for a group snapshot, oldest first.
    pub fn group_snapshot_members(&self, group_snapshot_id: &str) -> Result<Vec<Snapshot>, StoreError> {
        let sql =
            format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE group_snapshot_id = ?1 ORDER BY created_at, rowid");
        let mut stmt = self.0.prepare_cached(&sql)?;
        let rows = stmt.query_map([group_snapshot_id], snapshot_from_row)?.collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(|s| self.fill_snapshot(s)).collect()
    }

    // ---- quotas -------------------------------------------------------------------

    /// The limits set for `project` (`quotas`) or a class (`quota_classes`).
    pub fn quota_limits(&self, table: QuotaTable, owner: &str) -> Result<BTreeMap<String, i64>, StoreError> {
        let (sql, _) = table.sql();
        let mut stmt = self.0.prepare_cached(&format!("SELECT resource, hard_limit FROM {sql} = ?1"))?;
        let rows = stmt.query_map([owner], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_quota_limit(
        &self,
        table: QuotaTable,
        owner: &str,
        resource: &str,
        limit: i64,
    ) -> Result<(), StoreError> {
        let (_, insert) = table.sql();
        self.0.execute(insert, params![owner, resource, limit])?;
        Ok(())
    }

    /// Forgets a project's own limits (it falls back to the default class).
    pub fn delete_project_quotas(&self, project_id: &str) -> Result<(), StoreError> {
        self.0.execute("DELETE FROM quotas WHERE project_id = ?1", [project_id])?;
        Ok(())
    }

    /// (volume type id, count, GiB) of a project's volumes, or of its snapshots.
    pub fn quota_usage(&self, project_id: &str, of: QuotaCounted) -> Result<Vec<TypeUsage>, StoreError> {
        let sql = match of {
            QuotaCounted::Volumes => {
                // A migration's destination record is the same volume again:
                // not counted twice (Cinder reserves no quota for it either).
                "SELECT volume_type_id, COUNT(*), COALESCE(SUM(size), 0) FROM volumes WHERE project_id = ?1 \
                 AND (migration_status IS NULL OR migration_status NOT LIKE 'target:%') GROUP BY volume_type_id"
            }
            QuotaCounted::Snapshots => {
                "SELECT volume_type_id, COUNT(*), COALESCE(SUM(volume_size), 0) FROM snapshots \
                 WHERE project_id = ?1 GROUP BY volume_type_id"
            }
        };
        let mut stmt = self.0.prepare_cached(sql)?;
        let rows =
            stmt.query_map([project_id], |r| Ok(TypeUsage { type_id: r.get(0)?, count: r.get(1)?, gib: r.get(2)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many volumes have each status.
    pub fn volume_status_counts(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        let mut stmt = self.0.prepare_cached("SELECT status, COUNT(*) FROM volumes GROUP BY status")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Per project: (volumes, their GiB, snapshots, their GiB), by project id.
    pub fn project_usage(&self) -> Result<Vec<ProjectUsage>, StoreError> {
        let mut stmt = self.0.prepare_cached(
            "SELECT project_id, SUM(v), SUM(vg), SUM(s), SUM(sg) FROM ( \
               SELECT project_id, 1 AS v, size AS vg, 0 AS s, 0 AS sg FROM volumes \
               UNION ALL SELECT project_id, 0, 0, 1, volume_size FROM snapshots) \
             GROUP BY project_id ORDER BY project_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ProjectUsage {
                project_id: r.get(0)?,
                volumes: r.get(1)?,
                volume_gib: r.get(2)?,
                snapshots: r.get(3)?,
                snapshot_gib: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// GiB promised to volumes and snapshots in all pools (migration 9's
    /// triggers keep it per pool).
    pub fn provisioned_gib(&self) -> Result<i64, StoreError> {
        Ok(self.0.query_row("SELECT COALESCE(SUM(gib), 0) FROM provisioned", [], |r| r.get(0))?)
    }

    /// GiB promised to volumes and snapshots in the pool `host@backend#pool`.
    pub fn provisioned_gib_on(&self, host: &str) -> Result<i64, StoreError> {
        Ok(self.0.query_row("SELECT COALESCE(SUM(gib), 0) FROM provisioned WHERE host = ?1", [host], |r| r.get(0))?)
    }

    pub fn volume_type_in_use(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.0.query_row(
            "SELECT EXISTS (SELECT 1 FROM volumes WHERE volume_type_id = ?1) \
             OR EXISTS (SELECT 1 FROM group_volume_types WHERE volume_type_id = ?1)",
            [id],
            |r| r.get(0),
        )?)
    }

    // ---- exports ---------------------------------------------------------------

    pub fn export(&self, volume_id: &str) -> Result<Option<Export>, StoreError> {
        let sql = format!("SELECT {EXPORT_COLUMNS} FROM exports WHERE volume_id = ?1");
        Ok(self.0.prepare_cached(&sql)?.query_row([volume_id], export_from_row).optional()?)
    }

    pub fn exports(&self) -> Result<Vec<Export>, StoreError> {
        let sql = format!("SELECT {EXPORT_COLUMNS} FROM exports ORDER BY created_at, rowid");
        let mut stmt = self.0.prepare_cached(&sql)?;
        let rows = stmt.query_map([], export_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn insert_export(&self, e: &Export) -> Result<(), StoreError> {
        self.0.execute(
            &format!("INSERT INTO exports ({EXPORT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
            params![
                e.volume_id,
                e.backend.as_str(),
                e.target_name,
                e.lun,
                e.chap.as_ref().map(|c| &c.username),
                e.chap.as_ref().map(|c| &c.secret),
                e.host_key,
                e.created_at
            ],
        )?;
        Ok(())
    }

    /// Removes the export and the initiators it admits.
    pub fn delete_export(&self, volume_id: &str) -> Result<bool, StoreError> {
        Ok(self.0.execute("DELETE FROM exports WHERE volume_id = ?1", [volume_id])? > 0)
    }

    /// The initiators the volume's export admits, in the order they were added.
    pub fn export_acls(&self, volume_id: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt =
            self.0.prepare_cached("SELECT initiator FROM export_acls WHERE volume_id = ?1 ORDER BY rowid")?;
        let rows = stmt.query_map([volume_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Admits `initiator`; false when it was admitted already.
    pub fn add_export_acl(&self, volume_id: &str, initiator: &str) -> Result<bool, StoreError> {
        let n = self.0.execute(
            "INSERT INTO export_acls (volume_id, initiator, created_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (volume_id, initiator) DO NOTHING",
            params![volume_id, initiator, now()],
        )?;
        Ok(n > 0)
    }

    pub fn remove_export_acl(&self, volume_id: &str, initiator: &str) -> Result<bool, StoreError> {
        let n = self.0.execute(
            "DELETE FROM export_acls WHERE volume_id = ?1 AND initiator = ?2",
            params![volume_id, initiator],
        )?;
        Ok(n > 0)
    }

    // ---- jobs ------------------------------------------------------------------

    /// Journals a job as `running`, with the request that asked for it.
    pub fn insert_job(&self, spec: &JobSpec, request_id: &str, project_id: &str) -> Result<Job, StoreError> {
        let text = serde_json::to_string(spec).map_err(|e| StoreError::Corrupt(format!("encode job: {e}")))?;
        self.0.execute(
            "INSERT INTO jobs (kind, spec, volume_id, snapshot_id, request_id, project_id, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![spec.kind(), text, spec.volume(), spec.snapshot(), request_id, project_id, now()],
        )?;
        Ok(Job {
            id: self.0.last_insert_rowid(),
            spec: spec.clone(),
            step: 0,
            request_id: request_id.to_string(),
            project_id: project_id.to_string(),
            resumed: false,
        })
    }

    /// Records that the job's first `step` steps are complete.
    pub fn set_job_step(&self, id: i64, step: usize) -> Result<(), StoreError> {
        let step = i64::try_from(step).map_err(|_| StoreError::Corrupt(format!("job {id}: step {step}")))?;
        self.0.execute("UPDATE jobs SET step = ?2 WHERE id = ?1 AND state = 'running'", params![id, step])?;
        Ok(())
    }

    /// Ends a running job (a cancelled one keeps its state and reason).
    pub fn end_job(&self, id: i64, state: JobState, last_error: Option<&str>) -> Result<(), StoreError> {
        self.0.execute(
            "UPDATE jobs SET state = ?2, last_error = COALESCE(?3, last_error), finished_at = ?4 \
             WHERE id = ?1 AND state = 'running'",
            params![id, state.as_str(), last_error, now()],
        )?;
        Ok(())
    }

    /// The state of a job's row (None once pruned).
    pub fn job_state(&self, id: i64) -> Result<Option<JobState>, StoreError> {
        let state: Option<String> =
            self.0.query_row("SELECT state FROM jobs WHERE id = ?1", [id], |r| r.get(0)).optional()?;
        state.map(|s| s.parse().map_err(StoreError::Corrupt)).transpose()
    }

    /// Whether a job is still working on the snapshot.
    pub fn snapshot_has_running_job(&self, snapshot_id: &str) -> Result<bool, StoreError> {
        Ok(self.0.query_row(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE snapshot_id = ?1 AND state = 'running')",
            [snapshot_id],
            |r| r.get(0),
        )?)
    }

    /// Cancels every unfinished job of a volume (an admin reset overrides them).
    pub fn cancel_jobs_of(&self, volume_id: &str, reason: &str) -> Result<(), StoreError> {
        self.0.execute(
            "UPDATE jobs SET state = 'cancelled', last_error = ?2, finished_at = ?3 \
             WHERE volume_id = ?1 AND state = 'running'",
            params![volume_id, reason, now()],
        )?;
        Ok(())
    }

    /// The unfinished jobs, oldest first, as stored: decoding is the caller's, so a
    /// row that does not decode can be reported rather than skipped.
    pub fn running_jobs(&self) -> Result<Vec<JobRow>, StoreError> {
        let mut stmt =
            self.0.prepare(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'running' ORDER BY id"))?;
        let rows = stmt.query_map([], job_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One job, whatever its state, with how it stands (the jobs resource).
    pub fn job(&self, id: i64) -> Result<Option<JobStatus>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS}, {JOB_STATUS_COLUMNS} FROM jobs WHERE id = ?1");
        self.0.query_row(&sql, [id], job_status).optional().map_err(StoreError::from)
    }

    /// The unfinished jobs, oldest first, with how they stand.
    pub fn running_job_statuses(&self) -> Result<Vec<JobStatus>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS}, {JOB_STATUS_COLUMNS} FROM jobs WHERE state = 'running' ORDER BY id");
        let mut stmt = self.0.prepare(&sql)?;
        let rows = stmt.query_map([], job_status)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Removes ended jobs that finished before `before` (an ISO timestamp).
    pub fn prune_jobs(&self, before: &str) -> Result<usize, StoreError> {
        Ok(self.0.execute("DELETE FROM jobs WHERE state != 'running' AND finished_at < ?1", [before])?)
    }

    // ---- messages --------------------------------------------------------------

    pub fn insert_message(&self, m: &Message) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT INTO messages (id, project_id, request_id, resource_type, resource_uuid, event_id, \
             message_level, user_message, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                m.id,
                m.project_id,
                m.request_id,
                m.resource_type.as_str(),
                m.resource_uuid,
                m.event_id,
                m.message_level,
                m.user_message,
                m.created_at,
                m.expires_at
            ],
        )?;
        Ok(())
    }

    /// Messages of a project (all with None), oldest first.
    pub fn messages(&self, project_id: Option<&str>) -> Result<Vec<Message>, StoreError> {
        let mut stmt = self.0.prepare_cached(
            "SELECT id, project_id, request_id, resource_type, resource_uuid, event_id, message_level, \
             user_message, created_at, expires_at FROM messages WHERE (?1 IS NULL OR project_id = ?1) \
             ORDER BY created_at, rowid",
        )?;
        let rows = stmt.query_map([project_id], message_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn message(&self, id: &str) -> Result<Option<Message>, StoreError> {
        let mut stmt = self.0.prepare_cached(
            "SELECT id, project_id, request_id, resource_type, resource_uuid, event_id, message_level, \
             user_message, created_at, expires_at FROM messages WHERE id = ?1",
        )?;
        Ok(stmt.query_row([id], message_from_row).optional()?)
    }

    pub fn delete_message(&self, id: &str) -> Result<(), StoreError> {
        self.0.execute("DELETE FROM messages WHERE id = ?1", [id])?;
        Ok(())
    }

    /// (state, last_error) of every job row, oldest first.
    #[cfg(test)]
    pub fn job_history(&self) -> Result<Vec<(JobState, Option<String>)>, StoreError> {
        let mut stmt = self.0.prepare("SELECT state, last_error FROM jobs ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((parse(r.get(0)?)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Raw SQL, for tests that must write what no code path writes (a corrupt row).
    #[cfg(test)]
    pub fn execute_raw(&self, sql: &str) -> Result<(), StoreError> {
        Ok(self.0.execute_batch(sql)?)
    }

    /// Removes messages whose guarantee ended before `now` (an ISO timestamp).
    pub fn reap_messages(&self, now: &str) -> Result<usize, StoreError> {
        Ok(self.0.execute("DELETE FROM messages WHERE expires_at < ?1", [now])?)
    }
}

const GROUP_TYPE_COLUMNS: &str = "id, name, description, is_public";

fn group_type_from_row(r: &Row) -> rusqlite::Result<GroupType> {
    Ok(GroupType {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        is_public: r.get(3)?,
        group_specs: BTreeMap::new(),
    })
}

const GROUP_COLUMNS: &str = "id, project_id, user_id, name, description, status, group_type_id, \
     availability_zone, group_snapshot_id, source_group_id, created_at";

fn group_from_row(r: &Row) -> rusqlite::Result<Group> {
    Ok(Group {
        id: r.get(0)?,
        project_id: r.get(1)?,
        user_id: r.get(2)?,
        name: r.get(3)?,
        description: r.get(4)?,
        status: parse(r.get(5)?)?,
        group_type_id: r.get(6)?,
        volume_types: Vec::new(),
        availability_zone: r.get(7)?,
        group_snapshot_id: r.get(8)?,
        source_group_id: r.get(9)?,
        created_at: r.get(10)?,
    })
}

const GROUP_SNAPSHOT_COLUMNS: &str =
    "id, group_id, project_id, user_id, name, description, status, group_type_id, created_at";

fn group_snapshot_from_row(r: &Row) -> rusqlite::Result<GroupSnapshot> {
    Ok(GroupSnapshot {
        id: r.get(0)?,
        group_id: r.get(1)?,
        project_id: r.get(2)?,
        user_id: r.get(3)?,
        name: r.get(4)?,
        description: r.get(5)?,
        status: parse(r.get(6)?)?,
        group_type_id: r.get(7)?,
        created_at: r.get(8)?,
    })
}

const TRANSFER_COLUMNS: &str = "id, volume_id, project_id, user_id, name, auth_key, no_snapshots, created_at";

fn transfer_from_row(r: &Row) -> rusqlite::Result<Transfer> {
    Ok(Transfer {
        id: r.get(0)?,
        volume_id: r.get(1)?,
        project_id: r.get(2)?,
        user_id: r.get(3)?,
        name: r.get(4)?,
        auth_key: r.get(5)?,
        no_snapshots: r.get(6)?,
        created_at: r.get(7)?,
    })
}

const TYPE_COLUMNS: &str = "id, name, description, is_public, qos_specs_id, \
    EXISTS (SELECT 1 FROM type_encryption e WHERE e.type_id = volume_types.id)";

/// A `TYPE_COLUMNS` row, extra specs not yet read.
fn type_from_row(r: &rusqlite::Row) -> rusqlite::Result<VolumeType> {
    Ok(VolumeType {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        is_public: r.get(3)?,
        qos_specs_id: r.get(4)?,
        encrypted: r.get(5)?,
        extra_specs: BTreeMap::new(),
    })
}

/// The key/value tables one row owns: a volume type's extra specs, a group
/// type's group specs, a QoS spec's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Specs {
    VolumeType,
    GroupType,
    Qos,
}

impl Specs {
    /// (table, owner column).
    fn table(self) -> (&'static str, &'static str) {
        match self {
            Specs::VolumeType => ("volume_type_extra_specs", "type_id"),
            Specs::GroupType => ("group_type_specs", "group_type_id"),
            Specs::Qos => ("qos_spec_values", "qos_id"),
        }
    }
}

/// An admin's settings of a service (`os-services`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceState {
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    pub frozen: bool,
    pub updated_at: String,
}

/// What one project holds on this host (`os-hosts/{host}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectUsage {
    pub project_id: String,
    pub volumes: i64,
    pub volume_gib: i64,
    pub snapshots: i64,
    pub snapshot_gib: i64,
}

/// What `quota_usage` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaCounted {
    Volumes,
    Snapshots,
}

/// How many of a project's volumes (or snapshots) have one type, and their GiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeUsage {
    pub type_id: String,
    pub count: i64,
    pub gib: i64,
}

/// Where quota limits live: a project's own, or a quota class's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaTable {
    Project,
    Class,
}

impl QuotaTable {
    /// (`FROM … WHERE owner` clause, upsert statement).
    fn sql(self) -> (&'static str, &'static str) {
        match self {
            QuotaTable::Project => (
                "quotas WHERE project_id",
                "INSERT INTO quotas (project_id, resource, hard_limit) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (project_id, resource) DO UPDATE SET hard_limit = excluded.hard_limit",
            ),
            QuotaTable::Class => (
                "quota_classes WHERE class_name",
                "INSERT INTO quota_classes (class_name, resource, hard_limit) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (class_name, resource) DO UPDATE SET hard_limit = excluded.hard_limit",
            ),
        }
    }
}

/// One `(kind, key, value)` row of `volume_metadata` into its volume.
fn put_meta(v: &mut Volume, (kind, key, value): (String, String, String)) -> Result<(), StoreError> {
    let map = match kind.as_str() {
        "user" => &mut v.metadata,
        "admin" => &mut v.admin_metadata,
        "image" => &mut v.image_metadata,
        other => return Err(StoreError::Corrupt(format!("metadata kind {other}"))),
    };
    map.insert(key, value);
    Ok(())
}

fn message_from_row(r: &Row) -> rusqlite::Result<Message> {
    Ok(Message {
        id: r.get(0)?,
        project_id: r.get(1)?,
        request_id: r.get(2)?,
        resource_type: parse::<MessageResource>(r.get(3)?)?,
        resource_uuid: r.get(4)?,
        event_id: r.get(5)?,
        message_level: r.get(6)?,
        user_message: r.get(7)?,
        created_at: r.get(8)?,
        expires_at: r.get(9)?,
    })
}

/// A job row as stored, before its spec is decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub id: i64,
    pub kind: String,
    pub spec: String,
    pub volume_id: Option<String>,
    pub snapshot_id: Option<String>,
    pub step: i64,
    pub request_id: String,
    pub project_id: String,
}

/// The columns `job_row` reads, in its order.
const JOB_COLUMNS: &str = "id, kind, spec, volume_id, snapshot_id, step, request_id, project_id";

fn job_row(r: &rusqlite::Row) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        spec: r.get(2)?,
        volume_id: r.get(3)?,
        snapshot_id: r.get(4)?,
        step: r.get(5)?,
        request_id: r.get(6)?,
        project_id: r.get(7)?,
    })
}

/// The columns `job_status` reads after `JOB_COLUMNS`.
const JOB_STATUS_COLUMNS: &str = "state, last_error, created_at, finished_at";

fn job_status(r: &rusqlite::Row) -> rusqlite::Result<JobStatus> {
    Ok(JobStatus {
        row: job_row(r)?,
        state: r.get(8)?,
        last_error: r.get(9)?,
        created_at: r.get(10)?,
        finished_at: r.get(11)?,
    })
}

/// A job row with its state, failure and times.
#[derive(Debug, Clone, PartialEq)]
pub struct JobStatus {
    pub row: JobRow,
    pub state: String,
    pub last_error: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

impl JobRow {
    /// The job, if its spec decodes strictly; otherwise why not.
    pub fn decode(&self) -> Result<Job, String> {
        let spec: JobSpec = serde_json::from_str(&self.spec)
            .map_err(|e| format!("job {} ({}): spec does not decode: {e}", self.id, self.kind))?;
        let step = usize::try_from(self.step).map_err(|_| format!("job {}: negative step {}", self.id, self.step))?;
        Ok(Job {
            id: self.id,
            spec,
            step,
            request_id: self.request_id.clone(),
            project_id: self.project_id.clone(),
            resumed: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("ember-store-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        (Store::open(&dir.join("ember.db")).unwrap(), dir)
    }

    #[test]
    fn migrations_are_idempotent_and_versioned() {
        let (store, dir) = temp_store();
        drop(store);
        let store = Store::open(&dir.join("ember.db")).unwrap();
        let version: i64 =
            store.read(|tx| Ok::<_, StoreError>(tx.0.query_row("PRAGMA user_version", [], |r| r.get(0))?)).unwrap();
        assert_eq!(version, schema_version());
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The provisioned counter follows every insert, resize and delete of volumes
    /// and snapshots.
    #[test]
    fn provisioned_gib_is_kept_by_the_triggers() {
        let (store, dir) = temp_store();
        let exec = |sql: &str| store.write(|tx| tx.execute_raw(sql)).unwrap();
        let provisioned = || store.read(|tx| tx.provisioned_gib()).unwrap();
        exec(
            "INSERT INTO volume_types (id, name, created_at) VALUES ('t', 'T', 'x'); \
             INSERT INTO volumes (id, project_id, user_id, size, status, attach_status, volume_type_id, \
               availability_zone, host, created_at) VALUES ('v1', 'p', 'u', 3, 'available', 'detached', 't', \
               'nova', 'h', 'x'), ('v2', 'p', 'u', 5, 'available', 'detached', 't', 'nova', 'h', 'x');",
        );
        assert_eq!(provisioned(), 8);
        exec(
            "INSERT INTO snapshots (id, volume_id, project_id, user_id, status, volume_size, progress, \
               volume_type_id, created_at) VALUES ('s', 'v1', 'p', 'u', 'available', 3, '100%', 't', 'x');",
        );
        assert_eq!(provisioned(), 11);
        exec("UPDATE volumes SET size = 7, status = 'available' WHERE id = 'v2'");
        assert_eq!(provisioned(), 13);
        let on = |host: &str| store.read(|tx| tx.provisioned_gib_on(host)).unwrap();
        assert_eq!((on("h"), on("g")), (13, 0));
        // A migration's identity swap moves a volume to another pool.
        exec("UPDATE volumes SET host = 'g' WHERE id = 'v2'");
        assert_eq!((on("h"), on("g"), provisioned()), (6, 7, 13));
        exec("DELETE FROM snapshots; DELETE FROM volumes WHERE id = 'v1'");
        assert_eq!((on("h"), on("g"), provisioned()), (0, 7, 7));
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A read neither waits for a writer that holds its transaction (and its
    /// fsync) nor sees what it has not committed; it sees the commit right after.
    #[test]
    fn reads_run_beside_an_open_write() {
        let (store, dir) = temp_store();
        let store = std::sync::Arc::new(store);
        let (entered, wait_entered) = std::sync::mpsc::channel();
        let (release, wait_release) = std::sync::mpsc::channel::<()>();
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || {
                store
                    .write(|tx| {
                        tx.execute_raw("INSERT INTO volume_types (id, name, created_at) VALUES ('t', 'T', 'x')")?;
                        entered.send(()).unwrap();
                        wait_release.recv().unwrap();
                        Ok::<_, StoreError>(())
                    })
                    .unwrap()
            })
        };
        wait_entered.recv().unwrap();
        let (read_done, read_result) = std::sync::mpsc::channel();
        let reader = {
            let store = store.clone();
            std::thread::spawn(move || read_done.send(store.read(|tx| tx.volume_type("T")).unwrap()).unwrap())
        };
        let seen = read_result.recv_timeout(std::time::Duration::from_secs(5));
        release.send(()).unwrap();
        reader.join().unwrap();
        let seen = seen.expect("the read waited for the writer to commit");
        assert!(seen.is_none(), "an uncommitted write is seen");
        let refused = store.read(|tx| tx.execute_raw("DELETE FROM volume_types"));
        assert!(refused.is_err(), "a read connection refuses writes");
        writer.join().unwrap();
        assert!(store.read(|tx| tx.volume_type("T")).unwrap().is_some(), "the commit is seen at once");
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A journal written by the first schema is translated into typed specs; a row
    /// that does not fit stays undecodable (and fails loudly at start).
    #[test]
    fn first_schema_jobs_become_typed_specs() {
        let dir = std::env::temp_dir().join(format!("ember-store-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ember.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute_batch(
                "INSERT INTO volume_types (id, name, created_at) VALUES ('t', '__DEFAULT__', 'x'); \
                 INSERT INTO volumes (id, project_id, user_id, size, status, attach_status, volume_type_id, \
                   availability_zone, host, created_at) VALUES ('v', 'p', 'u', 1, 'creating', 'detached', 't', \
                   'nova', 'h@b#p', 'x'); \
                 INSERT INTO jobs (kind, volume_id, snapshot_id, args, created_at) VALUES \
                   ('create_volume', 'v', NULL, '{\"size\": 2, \"source\": {\"snapshot\": \"s\"}}', 'x'), \
                   ('delete_volume', 'v', NULL, '{\"snapshots\": [\"s1\", \"s2\"]}', 'x'), \
                   ('revert_volume', 'v', 's', '{}', 'x'), \
                   ('extend_volume', 'v', NULL, '{}', 'x'), \
                   ('explode', 'v', NULL, '{}', 'x');",
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let rows = store.read(|tx| tx.running_jobs()).unwrap();
        let decoded: Vec<_> = rows.iter().map(JobRow::decode).collect();
        let spec = |i: usize| decoded[i].as_ref().unwrap().spec.clone();
        use crate::model::VolumeSource;
        assert_eq!(
            spec(0),
            JobSpec::CreateVolume {
                volume: "v".into(),
                size_gib: 2,
                source: VolumeSource::Snapshot { id: "s".into() }
            }
        );
        assert_eq!(spec(1), JobSpec::DeleteVolume { volume: "v".into(), snapshots: vec!["s1".into(), "s2".into()] });
        assert_eq!(spec(2), JobSpec::RevertVolume { volume: "v".into(), snapshot: "s".into() });
        assert!(decoded[3].is_err(), "an extend without its size must not decode: {:?}", decoded[3]);
        assert!(decoded[4].is_err(), "an unknown kind must not decode");
        assert!(rows.iter().all(|r| r.project_id == "p"));
        assert_eq!(store.read(|tx| tx.provisioned_gib()).unwrap(), 1, "migrations 4 and 9 count existing volumes");
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
