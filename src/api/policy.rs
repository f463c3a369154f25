//! The policy table (DESIGN decision 11, spec §1.6): every route of the API with
//! the rule that guards it, in Cinder's default policy (`cinder/policies/*.py`,
//! the "new defaults"): admin (`role:admin`), member of the owning project, or
//! reader of it (members read too). A request is matched against this table
//! before any handler runs: a path that is not in it does not exist (404), a
//! method it does not list is 405, a microversion below the route's is 404, and
//! the rule is checked here, once, against the project that owns what the path
//! names. Volume and snapshot actions are routes of their own whose rule comes
//! with each parsed action (`api/actions`).

use axum::http::Method;

use super::auth::Context;
use super::fault::ApiError;
use super::microversion::Version;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `rule:admin_api`.
    Admin,
    /// System admin, or member of the owning project.
    Member,
    /// System admin, or reader (or member) of the owning project.
    Reader,
    /// The rule depends on the body: each action carries its own.
    PerAction,
    /// Any authenticated caller (Cinder checks no rule there).
    Anyone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub name: &'static str,
    pub level: Level,
}

/// Whose project a route's rule is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The caller's own (collections, and types, which no project owns).
    Caller,
    /// The volume, snapshot, message or attachment named by the path segment at
    /// this index (another project's is "not found").
    Volume(usize),
    Snapshot(usize),
    Message(usize),
    Attachment(usize),
    /// A volume type: its project is the caller's, but a private type the
    /// caller's project may not use is "not found".
    VolumeType(usize),
    /// A volume transfer (another project's is "not found").
    Transfer(usize),
    /// A group or group snapshot (another project's is "not found").
    Group(usize),
    GroupSnapshot(usize),
    /// The project named by the path segment itself (quota sets): another
    /// project's is "forbidden", as Cinder's target check answers.
    Project(usize),
}

pub struct Route {
    pub method: Method,
    /// Segments after `/v3[/{project}]/`; `*` matches any one segment.
    pub path: &'static [&'static str],
    pub rule: Rule,
    pub owner: Owner,
    /// The first microversion serving it.
    pub since: (u16, u16),
}

const fn rule(name: &'static str, level: Level) -> Rule {
    Rule { name, level }
}

macro_rules! routes {
    ($( $method:ident [$($seg:literal),*] $name:literal $level:ident $owner:expr, $since:expr; )*) => {
        &[$( Route {
            method: Method::$method,
            path: &[$($seg),*],
            rule: rule($name, Level::$level),
            owner: $owner,
            since: $since,
        } ),*]
    };
}

use Owner::{
    Attachment as A, Caller as C, Group as G, GroupSnapshot as GS, Message as M, Project as P, Snapshot as S,
    Transfer as X, Volume as V, VolumeType as T,
};

const V3: (u16, u16) = (3, 0);

/// Every route ember serves. Order matters where a literal and `*` overlap.
pub const ROUTES: &[Route] = routes![
    GET ["volumes"] "volume:get_all" Reader C, V3;
    POST ["volumes"] "volume:create" Member C, V3;
    GET ["volumes", "detail"] "volume:get_all" Reader C, V3;
    GET ["volumes", "summary"] "volume:get_all" Reader C, (3, 12);
    GET ["volumes", "*"] "volume:get" Reader V(1), V3;
    PUT ["volumes", "*"] "volume:update" Member V(1), V3;
    DELETE ["volumes", "*"] "volume:delete" Member V(1), V3;
    POST ["volumes", "*", "action"] "volume actions" PerAction V(1), V3;
    GET ["volumes", "*", "metadata"] "volume:get_volume_metadata" Reader V(1), V3;
    POST ["volumes", "*", "metadata"] "volume:create_volume_metadata" Member V(1), V3;
    PUT ["volumes", "*", "metadata"] "volume:update_volume_metadata" Member V(1), V3;
    GET ["volumes", "*", "metadata", "*"] "volume:get_volume_metadata" Reader V(1), V3;
    PUT ["volumes", "*", "metadata", "*"] "volume:update_volume_metadata" Member V(1), V3;
    DELETE ["volumes", "*", "metadata", "*"] "volume:delete_volume_metadata" Member V(1), V3;
    GET ["snapshots"] "volume:get_all_snapshots" Reader C, V3;
    POST ["snapshots"] "volume:create_snapshot" Member C, V3;
    GET ["snapshots", "detail"] "volume:get_all_snapshots" Reader C, V3;
    GET ["snapshots", "*"] "volume:get_snapshot" Reader S(1), V3;
    PUT ["snapshots", "*"] "volume:update_snapshot" Member S(1), V3;
    DELETE ["snapshots", "*"] "volume:delete_snapshot" Member S(1), V3;
    POST ["snapshots", "*", "action"] "snapshot actions" PerAction S(1), V3;
    GET ["snapshots", "*", "metadata"] "volume:get_snapshot_metadata" Reader S(1), V3;
    POST ["snapshots", "*", "metadata"] "volume:update_snapshot_metadata" Member S(1), V3;
    PUT ["snapshots", "*", "metadata"] "volume:update_snapshot_metadata" Member S(1), V3;
    GET ["snapshots", "*", "metadata", "*"] "volume:get_snapshot_metadata" Reader S(1), V3;
    PUT ["snapshots", "*", "metadata", "*"] "volume:update_snapshot_metadata" Member S(1), V3;
    DELETE ["snapshots", "*", "metadata", "*"] "volume:delete_snapshot_metadata" Member S(1), V3;
    GET ["types"] "volume_extension:type_get_all" Reader C, V3;
    POST ["types"] "volume_extension:type_create" Admin C, V3;
    GET ["types", "default"] "volume_extension:type_get" Reader C, V3;
    GET ["types", "*"] "volume_extension:type_get" Reader T(1), V3;
    PUT ["types", "*"] "volume_extension:type_update" Admin T(1), V3;
    DELETE ["types", "*"] "volume_extension:type_delete" Admin T(1), V3;
    POST ["types", "*", "action"] "type access actions" PerAction T(1), V3;
    GET ["types", "*", "os-volume-type-access"] "volume_extension:volume_type_access:get_all_for_type" Admin T(1), V3;
    GET ["types", "*", "encryption"] "volume_extension:volume_type_encryption:get" Admin T(1), V3;
    POST ["types", "*", "encryption"] "volume_extension:volume_type_encryption:create" Admin T(1), V3;
    GET ["types", "*", "encryption", "*"] "volume_extension:volume_type_encryption:get" Admin T(1), V3;
    PUT ["types", "*", "encryption", "*"] "volume_extension:volume_type_encryption:update" Admin T(1), V3;
    DELETE ["types", "*", "encryption", "*"] "volume_extension:volume_type_encryption:delete" Admin T(1), V3;
    GET ["volumes", "*", "encryption"] "volume_extension:volume_encryption_metadata" Reader V(1), V3;
    GET ["volumes", "*", "encryption", "*"] "volume_extension:volume_encryption_metadata" Reader V(1), V3;
    GET ["types", "*", "extra_specs"] "volume_extension:types_extra_specs:index" Reader T(1), V3;
    POST ["types", "*", "extra_specs"] "volume_extension:types_extra_specs:create" Admin T(1), V3;
    GET ["types", "*", "extra_specs", "*"] "volume_extension:types_extra_specs:show" Reader T(1), V3;
    PUT ["types", "*", "extra_specs", "*"] "volume_extension:types_extra_specs:update" Admin T(1), V3;
    DELETE ["types", "*", "extra_specs", "*"] "volume_extension:types_extra_specs:delete" Admin T(1), V3;
    // Upstream serves these from 3.8 only; ember at every version, because
    // openstacksdk lists manageable volumes without a microversion (README).
    GET ["manageable_volumes"] "volume_extension:list_manageable" Admin C, V3;
    POST ["manageable_volumes"] "volume_extension:volume_manage" Admin C, V3;
    GET ["manageable_volumes", "detail"] "volume_extension:list_manageable" Admin C, V3;
    POST ["os-volume-manage"] "volume_extension:volume_manage" Admin C, V3;
    GET ["os-volume-manage", "detail"] "volume_extension:list_manageable" Admin C, V3;
    // As manageable_volumes, at every microversion (README).
    GET ["manageable_snapshots"] "snapshot_extension:list_manageable" Admin C, V3;
    POST ["manageable_snapshots"] "snapshot_extension:snapshot_manage" Admin C, V3;
    GET ["manageable_snapshots", "detail"] "snapshot_extension:list_manageable" Admin C, V3;
    GET ["os-snapshot-manage"] "snapshot_extension:list_manageable" Admin C, V3;
    POST ["os-snapshot-manage"] "snapshot_extension:snapshot_manage" Admin C, V3;
    GET ["os-snapshot-manage", "detail"] "snapshot_extension:list_manageable" Admin C, V3;
    GET ["scheduler-stats", "get_pools"] "scheduler_extension:scheduler_stats:get_pools" Admin C, V3;
    GET ["messages"] "message:get_all" Reader C, (3, 3);
    GET ["messages", "*"] "message:get" Reader M(1), (3, 3);
    DELETE ["messages", "*"] "message:delete" Member M(1), (3, 3);
    GET ["attachments"] "volume:attachment_get_all" Reader C, (3, 27);
    POST ["attachments"] "volume:attachment_create" Member C, (3, 27);
    GET ["attachments", "detail"] "volume:attachment_get_all" Reader C, (3, 27);
    GET ["attachments", "*"] "volume:attachment_show" Reader A(1), (3, 27);
    PUT ["attachments", "*"] "volume:attachment_update" Member A(1), (3, 27);
    DELETE ["attachments", "*"] "volume:attachment_delete" Member A(1), (3, 27);
    POST ["attachments", "*", "action"] "volume:attachment_complete" Member A(1), (3, 44);
    GET ["os-quota-sets", "*"] "volume_extension:quotas:show" Reader P(1), V3;
    PUT ["os-quota-sets", "*"] "volume_extension:quotas:update" Admin P(1), V3;
    DELETE ["os-quota-sets", "*"] "volume_extension:quotas:delete" Admin P(1), V3;
    GET ["os-quota-sets", "*", "defaults"] "volume_extension:quotas:show" Reader P(1), V3;
    GET ["os-quota-class-sets", "*"] "volume_extension:quota_classes:get" Admin C, V3;
    PUT ["os-quota-class-sets", "*"] "volume_extension:quota_classes:update" Admin C, V3;
    GET ["limits"] "limits_extension:used_limits" Reader C, V3;
    GET ["os-availability-zone"] "(none)" Anyone C, V3;
    GET ["os-services"] "volume_extension:services:index" Admin C, V3;
    PUT ["os-services", "enable"] "volume_extension:services:update" Admin C, V3;
    PUT ["os-services", "disable"] "volume_extension:services:update" Admin C, V3;
    PUT ["os-services", "disable-log-reason"] "volume_extension:services:update" Admin C, V3;
    PUT ["os-services", "freeze"] "volume:freeze_host" Admin C, V3;
    PUT ["os-services", "thaw"] "volume:thaw_host" Admin C, V3;
    PUT ["os-services", "set-log"] "volume_extension:services:update" Admin C, (3, 32);
    PUT ["os-services", "get-log"] "volume_extension:services:update" Admin C, (3, 32);
    GET ["os-hosts"] "volume_extension:hosts" Admin C, V3;
    GET ["os-hosts", "*"] "volume_extension:hosts" Admin C, V3;
    PUT ["os-hosts", "*"] "volume_extension:hosts" Admin C, V3;
    GET ["capabilities", "*"] "volume_extension:capabilities" Admin C, V3;
    GET ["qos-specs"] "volume_extension:qos_specs_manage:get_all" Admin C, V3;
    POST ["qos-specs"] "volume_extension:qos_specs_manage:create" Admin C, V3;
    GET ["qos-specs", "*"] "volume_extension:qos_specs_manage:get" Admin C, V3;
    PUT ["qos-specs", "*"] "volume_extension:qos_specs_manage:update" Admin C, V3;
    DELETE ["qos-specs", "*"] "volume_extension:qos_specs_manage:delete" Admin C, V3;
    PUT ["qos-specs", "*", "delete_keys"] "volume_extension:qos_specs_manage:delete" Admin C, V3;
    GET ["qos-specs", "*", "associations"] "volume_extension:qos_specs_manage:get_all" Admin C, V3;
    GET ["qos-specs", "*", "associate"] "volume_extension:qos_specs_manage:update" Admin C, V3;
    GET ["qos-specs", "*", "disassociate"] "volume_extension:qos_specs_manage:update" Admin C, V3;
    GET ["qos-specs", "*", "disassociate_all"] "volume_extension:qos_specs_manage:update" Admin C, V3;
    GET ["extensions"] "(none)" Anyone C, V3;
    GET ["extensions", "*"] "(none)" Anyone C, V3;
    GET ["os-volume-transfer"] "volume:get_all_transfers" Reader C, V3;
    POST ["os-volume-transfer"] "volume:create_transfer" Member C, V3;
    GET ["os-volume-transfer", "detail"] "volume:get_all_transfers" Reader C, V3;
    GET ["os-volume-transfer", "*"] "volume:get_transfer" Reader X(1), V3;
    DELETE ["os-volume-transfer", "*"] "volume:delete_transfer" Member X(1), V3;
    POST ["os-volume-transfer", "*", "accept"] "volume:accept_transfer" Member C, V3;
    GET ["volume-transfers"] "volume:get_all_transfers" Reader C, (3, 55);
    POST ["volume-transfers"] "volume:create_transfer" Member C, (3, 55);
    GET ["volume-transfers", "detail"] "volume:get_all_transfers" Reader C, (3, 55);
    GET ["volume-transfers", "*"] "volume:get_transfer" Reader X(1), (3, 55);
    DELETE ["volume-transfers", "*"] "volume:delete_transfer" Member X(1), (3, 55);
    POST ["volume-transfers", "*", "accept"] "volume:accept_transfer" Member C, (3, 55);
    // Group types: Cinder checks no rule to list or show them.
    GET ["group_types"] "(none)" Anyone C, (3, 11);
    POST ["group_types"] "group:group_types:create" Admin C, (3, 11);
    GET ["group_types", "default"] "(none)" Anyone C, (3, 11);
    GET ["group_types", "*"] "(none)" Anyone C, (3, 11);
    PUT ["group_types", "*"] "group:group_types:update" Admin C, (3, 11);
    DELETE ["group_types", "*"] "group:group_types:delete" Admin C, (3, 11);
    GET ["group_types", "*", "group_specs"] "group:group_types_specs:get_all" Admin C, (3, 11);
    POST ["group_types", "*", "group_specs"] "group:group_types_specs:create" Admin C, (3, 11);
    GET ["group_types", "*", "group_specs", "*"] "group:group_types_specs:get" Admin C, (3, 11);
    PUT ["group_types", "*", "group_specs", "*"] "group:group_types_specs:update" Admin C, (3, 11);
    DELETE ["group_types", "*", "group_specs", "*"] "group:group_types_specs:delete" Admin C, (3, 11);
    GET ["groups"] "group:get_all" Reader C, (3, 13);
    POST ["groups"] "group:create" Member C, (3, 13);
    GET ["groups", "detail"] "group:get_all" Reader C, (3, 13);
    POST ["groups", "action"] "group:create" Member C, (3, 14);
    GET ["groups", "*"] "group:get" Reader G(1), (3, 13);
    PUT ["groups", "*"] "group:update" Member G(1), (3, 13);
    POST ["groups", "*", "action"] "group actions" PerAction G(1), (3, 13);
    GET ["group_snapshots"] "group:get_all_group_snapshots" Reader C, (3, 14);
    POST ["group_snapshots"] "group:create_group_snapshot" Member C, (3, 14);
    GET ["group_snapshots", "detail"] "group:get_all_group_snapshots" Reader C, (3, 14);
    GET ["group_snapshots", "*"] "group:get_group_snapshot" Reader GS(1), (3, 14);
    DELETE ["group_snapshots", "*"] "group:delete_group_snapshot" Member GS(1), (3, 14);
    POST ["group_snapshots", "*", "action"] "group:reset_group_snapshot_status" Admin GS(1), (3, 19);
    // Backups answer 501 until they exist, after their rules.
    GET ["backups"] "backup:get_all" Reader C, V3;
    POST ["backups"] "backup:create" Member C, V3;
    GET ["backups", "detail"] "backup:get_all" Reader C, V3;
    GET ["backups", "*"] "backup:get" Reader C, V3;
    DELETE ["backups", "*"] "backup:delete" Member C, V3;
    POST ["backups", "*", "restore"] "backup:restore" Member C, V3;
    POST ["backups", "*", "action"] "volume_extension:backup_admin_actions" Admin C, V3;
];

/// Whether `path` fits `pattern` (`*` stands for any one segment).
pub fn matches(pattern: &[&str], path: &[&str]) -> bool {
    pattern.len() == path.len() && pattern.iter().zip(path).all(|(p, s)| *p == "*" || p == s)
}

/// The route for `method` on `path`: 404 when no route has that path (or it is
/// newer than the request's microversion), 405 when none has that method.
pub fn lookup(method: &Method, path: &[&str], version: Version) -> Result<&'static Route, ApiError> {
    // The first pattern that fits decides which resource the path names
    // (`types/default` before `types/*`); its methods are what the path allows.
    let first = ROUTES.iter().find(|r| matches(r.path, path)).ok_or_else(ApiError::resource_not_found)?;
    let same: Vec<&Route> = ROUTES.iter().filter(|r| r.path == first.path).collect();
    let route = same.into_iter().find(|r| r.method == method).ok_or_else(super::bad_method)?;
    if !version.at_least(route.since.0, route.since.1) {
        return Err(ApiError::resource_not_found());
    }
    Ok(route)
}

/// Whether `ctx` may do what `rule` guards on something of `project`.
pub fn authorize(ctx: &Context, rule: Rule, project: &str) -> Result<(), ApiError> {
    match rule.level {
        Level::Admin => ctx.require_admin(rule.name),
        Level::Member => ctx.require_member(rule.name, project),
        Level::Reader => ctx.require_reader(rule.name, project),
        Level::PerAction | Level::Anyone => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LATEST: Version = Version(3, 71);

    #[test]
    fn every_path_has_its_methods_and_nothing_else() {
        let code = |m: Method, p: &[&str], v| lookup(&m, p, v).map(|r| r.rule.name).map_err(|e| e.status.as_u16());
        assert_eq!(code(Method::GET, &["volumes", "x"], LATEST), Ok("volume:get"));
        assert_eq!(code(Method::PATCH, &["volumes", "x"], LATEST), Err(405));
        assert_eq!(code(Method::GET, &["volumes", "x", "bogus"], LATEST), Err(404));
        assert_eq!(code(Method::GET, &["types", "default"], LATEST), Ok("volume_extension:type_get"));
        assert_eq!(code(Method::DELETE, &["types", "default"], LATEST), Err(405));
        assert_eq!(code(Method::GET, &["messages"], Version(3, 2)), Err(404));
        assert_eq!(code(Method::GET, &["attachments"], Version(3, 27)), Ok("volume:attachment_get_all"));
        assert_eq!(code(Method::POST, &["attachments", "a", "action"], Version(3, 43)), Err(404));
    }

    #[test]
    fn the_table_has_no_duplicates_and_names_every_rule() {
        for (i, a) in ROUTES.iter().enumerate() {
            assert!(!a.rule.name.is_empty());
            for b in &ROUTES[i + 1..] {
                assert!(!(a.method == b.method && a.path == b.path), "{:?} {:?} twice", a.method, a.path);
            }
        }
    }
}
