//! Configuration: a TOML file (`--config`), overridden by command-line flags. With
//! neither, ember runs the embedded default: the file pool, noauth on loopback,
//! everything under `/var/lib/ember`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the store, the volume files and the snapshots live.
    pub data_dir: PathBuf,
    /// Address of the Cinder API (Cinder's port by default).
    pub listen: SocketAddr,
    /// Host name used in `host@backend#pool` (defaults to the machine's hostname).
    pub host: Option<String>,
    pub availability_zone: String,
    /// Base URL used in links and version documents (else taken from the request).
    pub public_endpoint: Option<String>,
    /// Seconds a user message is kept at least (Cinder's `message_ttl`, 30 days).
    pub message_ttl: u64,
    pub auth: AuthConfig,
    /// The one pool of a single-pool agent (`[pool]`).
    pub pool: PoolConfig,
    /// The pools of an agent with several (`[[pools]]`, each typed like
    /// `[pool]`; Cinder's `enabled_backends`). The first is the default one.
    pub pools: Vec<PoolConfig>,
    pub images: ImagesConfig,
    pub target: TargetConfig,
    pub http: HttpConfig,
    pub quota: QuotaConfig,
    pub copy: CopyConfig,
    /// The other agents this one migrates volumes to and from (`[[peers]]`).
    pub peers: Vec<PeerConfig>,
}

/// `[[peers]]`: another ember agent. Both agents of a pair name each other,
/// with the same token: each proves itself with it on the calls it makes.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's host name: what its volumes' `host@backend#pool` begins with.
    pub name: String,
    /// Its API, e.g. `http://10.0.0.2:8776`.
    pub url: String,
    /// The secret the pair shares (16 characters at least; never logged).
    pub token: String,
    /// Seconds a call to the peer may wait for an answer or for the stream to move.
    #[serde(default = "PeerConfig::default_timeout")]
    pub timeout: u64,
}

impl PeerConfig {
    fn default_timeout() -> u64 {
        30
    }
}

/// The token is never shown, not even in a debug dump of the configuration.
impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `[copy]`: the copy engine (images onto and from volumes, thick clones).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CopyConfig {
    /// Data bytes per second each copy may write at most (0: no limit), so
    /// that image copies leave the disks to the guests.
    pub max_bytes_per_second: u64,
    /// Compress qcow2 uploads (Cinder's `image_compress_on_upload`): smaller
    /// images, slower uploads.
    pub compress_qcow2_uploads: bool,
}

/// `[quota]`: the default quota class (what a project may hold until an admin
/// sets its own limits); -1 is unlimited. Cinder's defaults are 10 volumes, 10
/// snapshots and 1,000 GB; ember's are unlimited, since the pool's capacity check
/// already bounds what one host can promise (README, "Differences").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    pub volumes: i64,
    pub snapshots: i64,
    pub gigabytes: i64,
    pub per_volume_gigabytes: i64,
    pub backups: i64,
    pub backup_gigabytes: i64,
    pub groups: i64,
}

impl QuotaConfig {
    /// Each resource with its default limit, as quota sets name them.
    pub fn limits(&self) -> [(&'static str, i64); 7] {
        [
            ("volumes", self.volumes),
            ("snapshots", self.snapshots),
            ("gigabytes", self.gigabytes),
            ("per_volume_gigabytes", self.per_volume_gigabytes),
            ("backups", self.backups),
            ("backup_gigabytes", self.backup_gigabytes),
            ("groups", self.groups),
        ]
    }
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            volumes: -1,
            snapshots: -1,
            gigabytes: -1,
            per_volume_gigabytes: -1,
            backups: -1,
            backup_gigabytes: -1,
            groups: -1,
        }
    }
}

/// `[http]`: what the API's clients may hold.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Open connections at most; more are answered 503. Default: the open-file
    /// limit less 256 descriptors kept for jobs, devices and the store.
    pub max_connections: Option<usize>,
    /// Seconds a client may take to send a request's headers.
    pub header_timeout: u64,
    /// Seconds a kept-alive connection may sit idle.
    pub idle_timeout: u64,
    /// Seconds a client may take to send a request's body.
    pub body_timeout: u64,
    /// Whether `GET /metrics` answers without a token; otherwise it needs an
    /// admin's. Default: when the API listens on loopback only.
    pub metrics_public: Option<bool>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_connections: None,
            header_timeout: 10,
            idle_timeout: 60,
            body_timeout: 30,
            metrics_public: None,
        }
    }
}

impl HttpConfig {
    /// The connection cap, given the open-file limit.
    pub fn max_connections(&self, open_files: u64) -> usize {
        let room = usize::try_from(open_files.saturating_sub(256)).unwrap_or(usize::MAX).max(16);
        self.max_connections.unwrap_or(room).min(room)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthStrategy {
    /// Cinder's noauth: any token, `user:project`, everyone admin.
    Noauth,
    /// Tokens from `tokens_file`, each with a user, a project and roles.
    Token,
    /// Tokens validated by Keystone v3 (`[auth.keystone]`).
    Keystone,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub strategy: AuthStrategy,
    pub tokens_file: Option<PathBuf>,
    /// Refuse to start when the tokens file is readable by group or others (by
    /// default ember warns and starts).
    pub refuse_readable_tokens_file: bool,
    /// Serve noauth on a non-loopback address anyway (test rigs only).
    pub allow_remote_noauth: bool,
    /// Where and as whom to validate tokens with `strategy = "keystone"`.
    pub keystone: Option<KeystoneConfig>,
}

/// `[auth.keystone]`: the Keystone v3 that issues the cloud's tokens, and the
/// service user ember validates them as (it needs the `admin` or `service` role
/// to read other users' tokens).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeystoneConfig {
    /// Keystone's endpoint, e.g. `http://10.0.0.1:5000` (`/v3` is added).
    pub url: String,
    pub username: String,
    /// Never logged; keep the configuration file mode 600.
    pub password: String,
    pub user_domain_id: String,
    pub project_name: String,
    pub project_domain_id: String,
    /// Seconds a validation (or a refusal) is reused before Keystone is asked
    /// again: the bound on how long a revoked token keeps working.
    pub cache_seconds: u64,
    /// Seconds a call to Keystone may take.
    pub timeout: u64,
    /// Roles an `X-Service-Token` must carry to let an expired user token
    /// through (Cinder's `service_token_roles`).
    pub service_roles: Vec<String>,
}

impl Default for KeystoneConfig {
    fn default() -> Self {
        KeystoneConfig {
            url: String::new(),
            username: String::new(),
            password: String::new(),
            user_domain_id: "default".to_string(),
            project_name: "service".to_string(),
            project_domain_id: "default".to_string(),
            cache_seconds: 60,
            timeout: 10,
            service_roles: vec!["service".to_string()],
        }
    }
}

impl std::fmt::Debug for KeystoneConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystoneConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("user_domain_id", &self.user_domain_id)
            .field("project_name", &self.project_name)
            .field("project_domain_id", &self.project_domain_id)
            .field("cache_seconds", &self.cache_seconds)
            .field("timeout", &self.timeout)
            .field("service_roles", &self.service_roles)
            .finish()
    }
}

/// `[target]`: how volumes are exported.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetConfig {
    /// The protocol of new exports; a volume type's `ember:target_protocol` extra
    /// spec (`iscsi` | `nvmeof`) overrides it.
    pub protocol: ProtocolChoice,
    /// Who serves iSCSI: `auto` picks LIO where configfs has target_core, else tgt.
    pub iscsi: IscsiBackend,
    /// Who serves NVMe-oF/TCP.
    pub nvme: NvmeBackend,
    /// Addresses initiators reach the portals on; the first is `target_portal`,
    /// the others are the secondary portals of multipath.
    pub portal_ips: Vec<std::net::IpAddr>,
    pub iscsi_port: u16,
    pub nvme_port: u16,
    /// IQN of an export: this prefix + `volume-<id>` (Cinder's default prefix).
    pub iqn_prefix: String,
    /// NQN of an export: this prefix + the volume id.
    pub nqn_prefix: String,
    /// `connection_info` format for NVMe-oF (spec §4.3): 1 or 2.
    pub nvme_connection_info: u8,
    pub tgt: TgtConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TgtConfig {
    /// `tgtadm -C`: which tgtd to drive (0, tgtd's default).
    pub control_port: u16,
    /// Start tgtd (detached; ember never stops it) when it is not running.
    pub start_tgtd: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolChoice {
    Iscsi,
    Nvmeof,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IscsiBackend {
    Auto,
    Tgt,
    Lio,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NvmeBackend {
    Auto,
    Nvmet,
    None,
}

impl Default for TargetConfig {
    fn default() -> Self {
        TargetConfig {
            protocol: ProtocolChoice::Iscsi,
            iscsi: IscsiBackend::Auto,
            nvme: NvmeBackend::Auto,
            portal_ips: vec![std::net::IpAddr::from([127, 0, 0, 1])],
            iscsi_port: 3260,
            nvme_port: 4420,
            iqn_prefix: "iqn.2010-10.org.openstack:".to_string(),
            nqn_prefix: "nqn.2010-10.org.openstack:volume-".to_string(),
            nvme_connection_info: 2,
            tgt: TgtConfig::default(),
        }
    }
}

impl Default for TgtConfig {
    fn default() -> Self {
        TgtConfig { control_port: 0, start_tgtd: true }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeClear {
    Zero,
    Discard,
    None,
}

/// `[pool]`: which backend holds the volumes, with that backend's settings only.
/// `backend` picks the variant and defaults to `file`, so configuration files
/// written before the backends had their own types keep working; a key of the
/// other backend is refused by name.
#[derive(Debug, Clone, PartialEq)]
pub enum PoolConfig {
    File(FileConfig),
    Lvm(LvmConfig),
}

/// The file pool: sparse files under the data dir, loop devices when needed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Backend name (the `@backend` part of the host string).
    pub backend_name: String,
    /// Pool name (the `#pool` part).
    pub name: String,
    /// The directory holding `volumes/` and `snapshots/` (the data dir unset);
    /// two file pools of one agent need two.
    pub path: Option<PathBuf>,
    /// How a deleted volume's data is cleared before its file goes.
    pub volume_clear: VolumeClear,
    /// Ask for direct I/O on loop devices (falls back when the filesystem refuses).
    pub direct_io: bool,
    /// Provisioned GiB may reach this multiple of the filesystem size. At 1.0 (the
    /// default) every volume can be written in full without the disk filling up.
    pub max_over_subscription_ratio: f64,
}

/// The LVM pool: thick or thin LVs in a volume group.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LvmConfig {
    pub backend_name: String,
    /// Pool name; the volume group's by default, as Cinder's LVM driver names it.
    pub name: Option<String>,
    pub volume_clear: VolumeClear,
    pub max_over_subscription_ratio: f64,
    /// The volume group ember allocates from (it must exist).
    pub volume_group: String,
    /// Thick LVs, or thin LVs in `thin_pool`.
    pub lvm_type: LvmType,
    /// The thin pool's LV name inside `volume_group`.
    pub thin_pool: String,
    /// Create the thin pool when absent, using this share of the VG (0 < f <= 1).
    pub create_thin_pool: Option<f64>,
    /// A directory holding the lvm.conf ember's LVM commands use (LVM_SYSTEM_DIR);
    /// unset means the host's /etc/lvm.
    pub lvm_system_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LvmType {
    Thick,
    Thin,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("/var/lib/ember"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8776)),
            host: None,
            availability_zone: "nova".to_string(),
            public_endpoint: None,
            message_ttl: 2_592_000,
            auth: AuthConfig::default(),
            pool: PoolConfig::default(),
            pools: Vec::new(),
            images: ImagesConfig::default(),
            target: TargetConfig::default(),
            http: HttpConfig::default(),
            quota: QuotaConfig::default(),
            copy: CopyConfig::default(),
            peers: Vec::new(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            strategy: AuthStrategy::Noauth,
            tokens_file: None,
            refuse_readable_tokens_file: false,
            allow_remote_noauth: false,
            keystone: None,
        }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig::File(FileConfig::default())
    }
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            backend_name: "file".to_string(),
            name: "file".to_string(),
            path: None,
            volume_clear: VolumeClear::Zero,
            direct_io: false,
            max_over_subscription_ratio: 1.0,
        }
    }
}

impl Default for LvmConfig {
    fn default() -> Self {
        LvmConfig {
            backend_name: "lvm".to_string(),
            name: None,
            volume_clear: VolumeClear::Zero,
            max_over_subscription_ratio: 1.0,
            volume_group: "ember".to_string(),
            lvm_type: LvmType::Thick,
            thin_pool: "ember-pool".to_string(),
            create_thin_pool: None,
            lvm_system_dir: None,
        }
    }
}

/// A section typed by its `backend` key (`[pool]`, `[images]`): the key's value
/// (`default` when absent) and the rest of the table as text, parsed again by the
/// caller so an error quotes the offending line and key.
fn by_backend<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
    section: &str,
    default: &str,
) -> Result<(String, String), D::Error> {
    let mut table = toml::Table::deserialize(deserializer)?;
    let backend = match table.remove("backend") {
        None => default.to_string(),
        Some(toml::Value::String(name)) => name,
        Some(other) => {
            return Err(serde::de::Error::custom(format!("[{section}] backend must be a string, not {other}")));
        }
    };
    let text = toml::to_string(&table).map_err(serde::de::Error::custom)?;
    Ok((backend, text))
}

fn typed<E: serde::de::Error>(section: &str, backend: &str, e: toml::de::Error) -> E {
    E::custom(format!("[{section}] with backend = \"{backend}\": {e}"))
}

fn unknown_backend<E: serde::de::Error>(section: &str, backend: &str, known: &str) -> E {
    E::custom(format!("[{section}] backend = \"{backend}\" is not a backend of this ember ({known})"))
}

impl<'de> Deserialize<'de> for PoolConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (backend, text) = by_backend(deserializer, "pool", "file")?;
        match backend.as_str() {
            "file" => toml::from_str(&text).map(PoolConfig::File).map_err(|e| typed("pool", &backend, e)),
            "lvm" => toml::from_str(&text).map(PoolConfig::Lvm).map_err(|e| typed("pool", &backend, e)),
            other => Err(unknown_backend("pool", other, "file, lvm")),
        }
    }
}

/// `[images]`: where images live. `dir` (the default) keeps them under
/// `<data-dir>/images`; `glance` talks to a Glance v2 endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum ImagesConfig {
    Dir(DirImagesConfig),
    Glance(GlanceConfig),
}

/// The `dir` image store.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirImagesConfig {
    /// Where the images and their records are kept (`<data-dir>/images` unset).
    pub path: Option<PathBuf>,
}

/// The `glance` image store: Glance's image API v2.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlanceConfig {
    /// Glance's endpoint, e.g. `http://127.0.0.1:9292` (the `/v2` is added).
    pub url: String,
    /// A token sent as `X-Auth-Token` when the caller's own cannot be used
    /// (noauth callers); unset sends the caller's.
    #[serde(default)]
    pub token: Option<String>,
    /// Seconds a request to Glance may take to answer (not to stream).
    #[serde(default = "GlanceConfig::default_timeout")]
    pub timeout: u64,
}

impl GlanceConfig {
    fn default_timeout() -> u64 {
        30
    }
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig::Dir(DirImagesConfig::default())
    }
}

impl<'de> Deserialize<'de> for ImagesConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (backend, text) = by_backend(deserializer, "images", "dir")?;
        match backend.as_str() {
            "dir" => toml::from_str(&text).map(ImagesConfig::Dir).map_err(|e| typed("images", &backend, e)),
            "glance" => toml::from_str(&text).map(ImagesConfig::Glance).map_err(|e| typed("images", &backend, e)),
            other => Err(unknown_backend("images", other, "dir, glance")),
        }
    }
}

impl PoolConfig {
    pub fn backend_name(&self) -> &str {
        match self {
            PoolConfig::File(c) => &c.backend_name,
            PoolConfig::Lvm(c) => &c.backend_name,
        }
    }

    /// The `#pool` part of the host string.
    pub fn name(&self) -> &str {
        match self {
            PoolConfig::File(c) => &c.name,
            PoolConfig::Lvm(c) => c.name.as_deref().unwrap_or(&c.volume_group),
        }
    }

    pub fn max_over_subscription_ratio(&self) -> f64 {
        match self {
            PoolConfig::File(c) => c.max_over_subscription_ratio,
            PoolConfig::Lvm(c) => c.max_over_subscription_ratio,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })
    }

    /// Refuses settings that would be unsafe or meaningless.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.auth.strategy == AuthStrategy::Noauth
            && !self.listen.ip().is_loopback()
            && !self.auth.allow_remote_noauth
        {
            return Err(ConfigError::Invalid(format!(
                "refusing noauth on non-loopback address {}: anyone reaching it would be admin. \
                 Use [auth] strategy = \"token\", or force it with --allow-remote-noauth",
                self.listen
            )));
        }
        if self.auth.strategy == AuthStrategy::Token && self.auth.tokens_file.is_none() {
            return Err(ConfigError::Invalid("[auth] strategy = \"token\" needs tokens_file".to_string()));
        }
        if self.auth.strategy == AuthStrategy::Keystone {
            let refuse = |why: &str| Err(ConfigError::Invalid(format!("[auth.keystone] {why}")));
            let Some(k) = &self.auth.keystone else {
                return refuse("is needed by [auth] strategy = \"keystone\"");
            };
            if let Err(e) = crate::image::http::Endpoint::parse(&k.url) {
                return refuse(&format!("url: {e}"));
            }
            if k.username.is_empty() || k.password.is_empty() || k.project_name.is_empty() {
                return refuse("needs username, password and project_name (ember's service user)");
            }
            if k.cache_seconds > 3600 {
                return refuse("cache_seconds is at most 3600: it bounds how long a revoked token works");
            }
            if k.timeout == 0 {
                return refuse("timeout must be at least 1 second");
            }
        }
        if !self.pools.is_empty() && self.pool != PoolConfig::default() {
            return Err(ConfigError::Invalid("use either [pool] or [[pools]], not both".to_string()));
        }
        let mut hosts = std::collections::BTreeSet::new();
        let mut dirs = std::collections::BTreeSet::new();
        let section = if self.pools.is_empty() { "[pool]" } else { "[[pools]]" };
        for pool in self.pool_configs() {
            let ratio = pool.max_over_subscription_ratio();
            if ratio.is_nan() || ratio < 1.0 {
                return Err(ConfigError::Invalid(format!(
                    "{section} max_over_subscription_ratio must be at least 1.0"
                )));
            }
            for (what, value) in [("backend_name", pool.backend_name()), ("name", pool.name())] {
                if value.is_empty() || value.contains(['@', '#', '/']) {
                    return Err(ConfigError::Invalid(format!(
                        "{section} {what} must be non-empty without '@', '#' or '/'"
                    )));
                }
            }
            let host = self.volume_host_of(&pool);
            if !hosts.insert(host.clone()) {
                return Err(ConfigError::Invalid(format!("two pools are both {host}: give each its own name")));
            }
            if let PoolConfig::File(f) = &pool {
                let dir = f.path.clone().unwrap_or_else(|| self.data_dir.clone());
                if !dirs.insert(dir.clone()) {
                    return Err(ConfigError::Invalid(format!(
                        "two file pools keep their volumes in {}: give each its own path",
                        dir.display()
                    )));
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for peer in &self.peers {
            let refuse = |why: String| Err(ConfigError::Invalid(format!("[[peers]] {}: {why}", peer.name)));
            if peer.name.is_empty() || peer.name.contains(['@', '#', '/']) {
                return refuse("name must be non-empty without '@', '#' or '/'".to_string());
            }
            if peer.name == self.hostname() {
                return refuse("is this agent's own host name".to_string());
            }
            if !names.insert(peer.name.as_str()) {
                return refuse("named twice".to_string());
            }
            if let Err(e) = crate::image::http::Endpoint::parse(&peer.url) {
                return refuse(format!("url {e}"));
            }
            if peer.token.len() < 16 {
                return refuse("token must be 16 characters at least".to_string());
            }
            if peer.timeout == 0 {
                return refuse("timeout must be at least 1 second".to_string());
            }
        }
        for (what, value) in self.quota.limits() {
            if value < -1 {
                return Err(ConfigError::Invalid(format!("[quota] {what} must be -1 (unlimited) or more")));
            }
        }
        let t = &self.target;
        if t.portal_ips.is_empty() {
            return Err(ConfigError::Invalid("[target] portal_ips must name at least one address".to_string()));
        }
        if !matches!(t.nvme_connection_info, 1 | 2) {
            return Err(ConfigError::Invalid("[target] nvme_connection_info must be 1 or 2".to_string()));
        }
        for (what, prefix) in [("iqn_prefix", &t.iqn_prefix), ("nqn_prefix", &t.nqn_prefix)] {
            if prefix.is_empty() || prefix.contains(['/', ' ']) {
                return Err(ConfigError::Invalid(format!("[target] {what} must be non-empty without '/' or spaces")));
            }
        }
        Ok(())
    }

    pub fn hostname(&self) -> String {
        self.host.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".to_string())
        })
    }

    /// The agent's pools, the default one first.
    pub fn pool_configs(&self) -> Vec<PoolConfig> {
        if self.pools.is_empty() { vec![self.pool.clone()] } else { self.pools.clone() }
    }

    /// `host@backend#pool` of the default pool, as `os-vol-host-attr:host` shows it.
    pub fn volume_host(&self) -> String {
        self.volume_host_of(&self.pool_configs()[0])
    }

    pub fn volume_host_of(&self, pool: &PoolConfig) -> String {
        format!("{}@{}#{}", self.hostname(), pool.backend_name(), pool.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_file_and_rejects_unknown_keys() {
        let cfg: Config = toml::from_str(
            "data_dir = \"/srv/ember\"\nlisten = \"0.0.0.0:8776\"\n[auth]\nstrategy = \"token\"\ntokens_file = \"/etc/ember/tokens.toml\"\n[pool]\nvolume_clear = \"discard\"\n",
        )
        .unwrap();
        assert!(matches!(&cfg.pool, PoolConfig::File(f) if f.volume_clear == VolumeClear::Discard));
        assert!(cfg.validate().is_ok());
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
    }

    #[test]
    fn pool_sections_are_typed_per_backend() {
        let lvm: Config =
            toml::from_str("[pool]\nbackend = \"lvm\"\nvolume_group = \"vg0\"\nlvm_type = \"thin\"\n").unwrap();
        let PoolConfig::Lvm(c) = &lvm.pool else { panic!("{:?}", lvm.pool) };
        assert_eq!((c.volume_group.as_str(), c.lvm_type), ("vg0", LvmType::Thin));
        assert_eq!(lvm.pool.name(), "vg0");
        assert_eq!(lvm.pool.backend_name(), "lvm");
        // Written before the backends had types: no backend means file.
        let old: Config = toml::from_str("[pool]\ndirect_io = true\nmax_over_subscription_ratio = 2.0\n").unwrap();
        assert!(matches!(&old.pool, PoolConfig::File(f) if f.direct_io && f.max_over_subscription_ratio == 2.0));
        // A key of the other backend is refused with the backend named.
        let err = toml::from_str::<Config>("[pool]\nvolume_group = \"vg0\"\n").unwrap_err().to_string();
        assert!(err.contains("backend = \"file\"") && err.contains("volume_group"), "{err}");
        let err = toml::from_str::<Config>("[pool]\nbackend = \"lvm\"\ndirect_io = true\n").unwrap_err().to_string();
        assert!(err.contains("direct_io"), "{err}");
        assert!(toml::from_str::<Config>("[pool]\nbackend = \"zfs\"\n").is_err());
    }

    #[test]
    fn noauth_refused_off_loopback() {
        let mut cfg = Config { listen: "0.0.0.0:8776".parse().unwrap(), ..Config::default() };
        assert!(cfg.validate().is_err());
        cfg.auth.allow_remote_noauth = true;
        assert!(cfg.validate().is_ok());
    }
}
