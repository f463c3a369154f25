"""Every response the client suites receive from ember, checked against the Block
Storage API's published response schemas: tempest's
`tempest/lib/api_schema/response/volume/` (closed objects, per microversion band),
with tempest's own validator and format checker, chosen the way tempest's volume
clients choose them (`schema_versions_info`).

`install()` wraps requests' transport, which cinderclient, openstacksdk (both
through keystoneauth) and the raw-HTTP tests share; `conftest.py` fails a test
that received a response outside its schema. Only successful answers are checked,
as tempest does; operations tempest publishes no schema for pass unchecked
(`UNCHECKED` lists them, so the gap is visible).
"""

import copy
import json
import re
import threading
from urllib.parse import parse_qs, urlsplit

import jsonschema
import requests
from tempest.lib.api_schema.response.volume import (
    limits, manage_snapshot, manage_volume, messages, quota_classes, quotas, scheduler_stats, snapshots, versions, volume_types,
    volumes)
from tempest.lib.api_schema.response.volume import (
    capabilities, encryption_types, extensions, group_snapshots, group_types, groups, hosts, qos, services, transfers)
from tempest.lib.api_schema.response.volume.v3_7 import services as services_37
from tempest.lib.api_schema.response.volume.v3_55 import transfers as transfers_355
from tempest.lib.api_schema.response.volume.v3_57 import transfers as transfers_357
from tempest.lib.api_schema.response.volume.v3_61 import volumes as volumes_361
from tempest.lib.api_schema.response.volume.v3_63 import volumes as volumes_363
from tempest.lib.api_schema.response.volume.v3_64 import volumes as volumes_364
from tempest.lib.api_schema.response.volume.v3_65 import volumes as volumes_365
from tempest.lib.api_schema.response.volume.v3_69 import volumes as volumes_369
from tempest.lib.common.jsonschema_validator import FORMAT_CHECKER, JSONSCHEMA_VALIDATOR

# tempest's volumes_client.schema_versions_info: (first minor, module).
VOLUME_BANDS = [(0, volumes), (61, volumes_361), (63, volumes_363), (64, volumes_364), (65, volumes_365),
                (69, volumes_369)]


# Other families with microversion bands, by the path's first segment (tempest's
# services client from 3.7, its v3 transfers client: 3.55, then 3.57).
BANDS = {"os-services": [(0, services), (7, services_37)],
         "volume-transfers": [(0, transfers_355), (57, transfers_357)]}


def with_project_id(schema, key, minor):
    """Cinder shows a group's and a group snapshot's project to admins from 3.58
    (GROUP_GROUPSNAPSHOT_PROJECT_ID); tempest's schemas predate it and are
    closed, so from 3.58 the field is allowed (the suites call as an admin)."""
    if minor < 58:
        return schema
    schema = copy.deepcopy(schema)
    body = schema["response_body"]["properties"][key]
    item = body["items"] if body.get("type") == "array" else body
    item["properties"]["project_id"] = {"type": "string"}
    return schema


def group_snapshot_summaries():
    """Cinder's group snapshot summary view (`views/group_snapshots.py`) carries
    group_type_id in `GET /group_snapshots` as in create (the CG migration added
    it to `summary`, which both use); tempest's list schema and the api-ref sample
    predate it. ember answers what Cinder's code does: the field is allowed here."""
    schema = copy.deepcopy(group_snapshots.list_group_snapshots_no_detail)
    item = schema["response_body"]["properties"]["group_snapshots"]["items"]
    item["properties"]["group_type_id"] = {"type": "string", "format": "uuid"}
    return schema


def band_module(bands, minor):
    return [m for first, m in bands if minor >= first][-1]


def volume_schema(name, minor):
    module = band_module(VOLUME_BANDS, minor)
    if name == "update_volume":
        # The base defines update as create answering 200; the band modules copy
        # the base's update instead of deriving it from their own create, which
        # would refuse the band's fields on update. Derived here as the base does.
        schema = copy.deepcopy(module.create_volume)
        schema["status_code"] = [200]
        return schema
    # A band module defines only what changed; the rest is the base's.
    return getattr(module, name, None) or getattr(volumes, name)


def band_fields(minor):
    """What the volume view gains in the band of `minor` over the base schema."""
    band = volume_schema("create_volume", minor)["response_body"]["properties"]["volume"]["properties"]
    base = volumes.create_volume["response_body"]["properties"]["volume"]["properties"]
    return {k: v for k, v in band.items() if k not in base or band[k] != base[k]}


def manage_schema(minor):
    """tempest's manage_volume has no bands; Cinder answers it with the same v3
    view as create, so it gains the same fields."""
    schema = copy.deepcopy(manage_volume.manage_volume)
    schema["response_body"]["properties"]["volume"] = copy.deepcopy(volumes.common_show_volume)
    schema["response_body"]["properties"]["volume"]["properties"].update(band_fields(minor))
    return schema


# tempest's snapshot schemas have no microversion bands (their TODOs say so), but
# Cinder's v3 snapshot view adds these to show, detail, create and update (not
# to the summary list), each from its microversion (cinder/api/v3/views/snapshots.py).
SNAPSHOT_BANDS = [(14, "group_snapshot_id", {"type": ["string", "null"], "format": "uuid"}),
                  (41, "user_id", {"type": "string"}),
                  (65, "consumes_quota", {"type": "boolean"})]


def snapshot_schema(schema, minor):
    if schema is snapshots.list_snapshots_no_detail:
        return schema
    schema = copy.deepcopy(schema)
    props = schema.get("response_body", {}).get("properties", {})
    target = props.get("snapshot") or props.get("snapshots", {}).get("items")
    if target:
        for first, key, field in SNAPSHOT_BANDS:
            if minor >= first:
                target["properties"][key] = field
                target["required"].append(key)
    return schema


VOLUME_ACTIONS = {
    "os-attach": "attach_volume", "os-set_bootable": "set_bootable_volume", "os-detach": "detach_volume",
    "os-terminate_connection": "terminate_connection", "os-reserve": "reserve_volume",
    "os-unreserve": "unreserve_volume", "os-extend": "extend_volume", "os-reset_status": "reset_volume_status",
    "os-update_readonly_flag": "update_volume_readonly", "os-force_delete": "force_delete_volume",
    "os-retype": "retype_volume", "os-force_detach": "force_detach_volume",
    "os-set_image_metadata": "update_volume_image_metadata",
    "os-unset_image_metadata": "delete_volume_image_metadata",
    "os-show_image_metadata": "show_volume_image_metadata", "os-unmanage": "unmanage_volume",
}
SNAPSHOT_ACTIONS = {
    "os-reset_status": "reset_snapshot_status", "os-force_delete": "force_delete_snapshot",
    "os-update_snapshot_status": "update_snapshot_status", "os-unmanage": "unmanage_snapshot",
}
TYPE_ACTIONS = {"addProjectAccess": "add_type_access", "removeProjectAccess": "remove_type_access"}
UNCHECKED = ["os-initialize_connection", "os-begin_detaching", "os-roll_detaching", "revert",
             "os-volume_upload_image", "os-migrate_volume", "os-migrate_volume_completion", "os-reimage",
             "os-extend_volume_completion", "attachments (no published schema)", "GET /types/default",
             "PUT /os-services/set-log", "PUT /os-services/get-log", "PUT /os-hosts/{host}", "GET /extensions/{alias}",
             "GET /volumes/{id}/encryption[/{key}]"]

ID = r"[^/]+"
# (method, path after /v3[/project], how to name the schema: a name, or a function
# of (body, query) for actions and flags)
ROUTES = [
    ("GET", r"volumes", "list_volumes_no_detail"),
    ("GET", r"volumes/detail", "list_volumes_with_detail"),
    ("GET", r"volumes/summary", "show_volume_summary"),
    ("POST", r"volumes", "create_volume"),
    ("GET", rf"volumes/{ID}", "show_volume"),
    ("PUT", rf"volumes/{ID}", "update_volume"),
    ("DELETE", rf"volumes/{ID}", "delete_volume"),
    ("POST", rf"volumes/{ID}/action", lambda body, q: VOLUME_ACTIONS.get(next(iter(body), None))),
    ("POST", rf"volumes/{ID}/metadata", "create_volume_metadata"),
    ("GET", rf"volumes/{ID}/metadata", "show_volume_metadata"),
    ("PUT", rf"volumes/{ID}/metadata", "update_volume_metadata"),
    ("GET", rf"volumes/{ID}/metadata/{ID}", "show_volume_metadata_item"),
    ("PUT", rf"volumes/{ID}/metadata/{ID}", "update_volume_metadata_item"),
    ("DELETE", rf"volumes/{ID}/metadata/{ID}", "delete_volume_metadata_item"),
    ("GET", r"snapshots", snapshots.list_snapshots_no_detail),
    ("GET", r"snapshots/detail", snapshots.list_snapshots_with_detail),
    ("POST", r"snapshots", snapshots.create_snapshot),
    ("GET", rf"snapshots/{ID}/metadata", snapshots.show_snapshot_metadata),
    ("POST", rf"snapshots/{ID}/metadata", snapshots.create_snapshot_metadata),
    ("PUT", rf"snapshots/{ID}/metadata", snapshots.update_snapshot_metadata),
    ("GET", rf"snapshots/{ID}/metadata/{ID}", snapshots.show_snapshot_metadata_item),
    ("PUT", rf"snapshots/{ID}/metadata/{ID}", snapshots.update_snapshot_metadata_item),
    ("DELETE", rf"snapshots/{ID}/metadata/{ID}", snapshots.delete_snapshot_metadata_item),
    ("GET", rf"snapshots/{ID}", snapshots.show_snapshot),
    ("PUT", rf"snapshots/{ID}", snapshots.update_snapshot),
    ("DELETE", rf"snapshots/{ID}", snapshots.delete_snapshot),
    ("POST", rf"snapshots/{ID}/action",
     lambda body, q: getattr(snapshots, SNAPSHOT_ACTIONS.get(next(iter(body), None), ""), None)),
    ("GET", r"types", volume_types.list_volume_types),
    ("POST", r"types", volume_types.create_volume_type),
    ("GET", rf"types/(?!default$){ID}", volume_types.show_volume_type),
    ("PUT", rf"types/{ID}", volume_types.update_volume_types),
    ("DELETE", rf"types/{ID}", volume_types.delete_volume_type),
    ("POST", rf"types/{ID}/action",
     lambda body, q: getattr(volume_types, TYPE_ACTIONS.get(next(iter(body), None), ""), None)),
    ("GET", rf"types/{ID}/os-volume-type-access", volume_types.list_type_access),
    ("GET", rf"types/{ID}/encryption", encryption_types.show_encryption_type),
    ("POST", rf"types/{ID}/encryption", encryption_types.create_encryption_type),
    ("GET", rf"types/{ID}/encryption/{ID}", encryption_types.show_encryption_specs_item),
    ("PUT", rf"types/{ID}/encryption/{ID}", encryption_types.update_encryption_type),
    ("DELETE", rf"types/{ID}/encryption/{ID}", encryption_types.delete_encryption_type),
    ("GET", rf"types/{ID}/extra_specs", volume_types.list_volume_types_extra_specs),
    ("POST", rf"types/{ID}/extra_specs", volume_types.create_volume_types_extra_specs),
    ("GET", rf"types/{ID}/extra_specs/{ID}", volume_types.show_volume_types_extra_specs),
    ("PUT", rf"types/{ID}/extra_specs/{ID}", volume_types.update_volume_type_extra_specs),
    ("DELETE", rf"types/{ID}/extra_specs/{ID}", volume_types.delete_volume_types_extra_specs),
    ("GET", r"messages", messages.list_messages),
    ("GET", rf"messages/{ID}", messages.show_message),
    ("DELETE", rf"messages/{ID}", messages.delete_message),
    ("GET", r"scheduler-stats/get_pools",
     lambda body, q: scheduler_stats.get_pools_with_detail
     if q.get("detail", ["false"])[0].lower() in ("true", "1", "yes", "on", "y", "t")
     else scheduler_stats.get_pools_no_detail),
    ("GET", rf"os-quota-sets/{ID}",
     lambda body, q: quotas.show_quota_set_usage
     if q.get("usage", ["false"])[0].lower() in ("true", "1", "yes", "on", "y", "t") else quotas.show_quota_set),
    ("GET", rf"os-quota-sets/{ID}/defaults", quotas.show_quota_set),
    ("PUT", rf"os-quota-sets/{ID}", quotas.update_quota_set),
    ("DELETE", rf"os-quota-sets/{ID}", quotas.delete_quota_set),
    ("GET", rf"os-quota-class-sets/{ID}", quota_classes.show_quota_classes),
    ("PUT", rf"os-quota-class-sets/{ID}", quota_classes.update_quota_classes),
    ("GET", r"limits", limits.show_limits),
    ("GET", r"os-services", "list_services"),
    ("PUT", r"os-services/enable", "enable_service"),
    ("PUT", r"os-services/disable", "disable_service"),
    ("PUT", r"os-services/disable-log-reason", "disable_log_reason"),
    ("PUT", r"os-services/freeze", "freeze_host"),
    ("PUT", r"os-services/thaw", "thaw_host"),
    ("GET", r"os-hosts", hosts.list_hosts),
    ("GET", rf"os-hosts/{ID}", hosts.show_host),
    ("GET", rf"capabilities/{ID}", capabilities.show_backend_capabilities),
    ("GET", r"extensions", extensions.list_extensions),
    ("POST", r"qos-specs", qos.show_qos),
    ("GET", r"qos-specs", qos.list_qos),
    ("GET", rf"qos-specs/{ID}", qos.show_qos),
    ("PUT", rf"qos-specs/{ID}", qos.set_qos_key),
    ("DELETE", rf"qos-specs/{ID}", qos.delete_qos),
    ("PUT", rf"qos-specs/{ID}/delete_keys", qos.unset_qos_key),
    ("GET", rf"qos-specs/{ID}/associations", qos.show_association_qos),
    ("GET", rf"qos-specs/{ID}/associate", qos.associate_qos),
    ("GET", rf"qos-specs/{ID}/disassociate", qos.disassociate_qos),
    ("GET", rf"qos-specs/{ID}/disassociate_all", qos.disassociate_all_qos),
    ("POST", r"os-volume-transfer", transfers.create_volume_transfer),
    ("GET", r"os-volume-transfer", transfers.list_volume_transfers_no_detail),
    ("GET", r"os-volume-transfer/detail", transfers.list_volume_transfers_with_detail),
    ("GET", rf"os-volume-transfer/{ID}", transfers.show_volume_transfer),
    ("DELETE", rf"os-volume-transfer/{ID}", transfers.delete_volume_transfer),
    ("POST", rf"os-volume-transfer/{ID}/accept", transfers.accept_volume_transfer),
    ("POST", r"volume-transfers", "create_volume_transfer"),
    ("GET", r"volume-transfers", "list_volume_transfers_no_detail"),
    ("GET", r"volume-transfers/detail", "list_volume_transfers_with_detail"),
    ("GET", rf"volume-transfers/{ID}", "show_volume_transfer"),
    ("DELETE", rf"volume-transfers/{ID}", "delete_volume_transfer"),
    ("POST", rf"volume-transfers/{ID}/accept", "accept_volume_transfer"),
    ("GET", r"group_types", group_types.list_group_types),
    ("POST", r"group_types", group_types.create_group_type),
    ("GET", r"group_types/default", group_types.show_default_group_type),
    ("GET", rf"group_types/(?!default$){ID}", group_types.show_group_type),
    ("PUT", rf"group_types/{ID}", group_types.update_group_type),
    ("DELETE", rf"group_types/{ID}", group_types.delete_group_type),
    ("GET", rf"group_types/{ID}/group_specs", group_types.list_group_type_specs),
    ("POST", rf"group_types/{ID}/group_specs", group_types.create_or_update_group_type_specs),
    ("GET", rf"group_types/{ID}/group_specs/{ID}", group_types.show_group_type_specs_item),
    ("PUT", rf"group_types/{ID}/group_specs/{ID}", group_types.update_group_type_specs_item),
    ("DELETE", rf"group_types/{ID}/group_specs/{ID}", group_types.delete_group_type_specs_item),
    ("GET", r"groups", groups.list_groups_no_detail),
    ("POST", r"groups", groups.create_group),
    ("GET", r"groups/detail", ("groups", groups.list_groups_with_detail)),
    ("POST", r"groups/action", groups.create_group_from_source),
    ("GET", rf"groups/(?!detail$){ID}", ("group", groups.show_group)),
    ("PUT", rf"groups/{ID}", groups.update_group),
    ("POST", rf"groups/{ID}/action",
     lambda body, q: groups.reset_group_status if "reset_status" in body else groups.delete_group),
    ("GET", r"group_snapshots", group_snapshot_summaries()),
    ("POST", r"group_snapshots", group_snapshots.create_group_snapshot),
    ("GET", r"group_snapshots/detail", ("group_snapshots", group_snapshots.list_group_snapshots_with_detail)),
    ("GET", rf"group_snapshots/(?!detail$){ID}", ("group_snapshot", group_snapshots.show_group_snapshot)),
    ("DELETE", rf"group_snapshots/{ID}", group_snapshots.delete_group_snapshot),
    ("POST", rf"group_snapshots/{ID}/action", group_snapshots.reset_group_snapshot_status),
    ("POST", r"os-volume-manage", "manage_volume"),
    ("POST", r"manageable_volumes", "manage_volume"),
    # Cinder answers snapshot manage with its contrib (v2) snapshot view at every
    # microversion, which is what tempest's closed manage_snapshot describes.
    ("POST", r"os-snapshot-manage", manage_snapshot.manage_snapshot),
    ("POST", r"manageable_snapshots", manage_snapshot.manage_snapshot),
]

VIOLATIONS = []
_lock = threading.Lock()


def schema_for(method, url, body, version):
    parts = urlsplit(url)
    path = parts.path.rstrip("/") if parts.path != "/" else "/"
    if method == "GET" and path == "/":
        return versions.list_versions
    m = re.fullmatch(r"/v3(?:/([0-9a-f-]{32,36}))?(?:/(.*))?", path)
    if not m:
        return None
    rest = m.group(2)
    if rest is None:
        return versions.volume_api_version_details if method == "GET" else None
    query = parse_qs(parts.query)
    for route_method, pattern, schema in ROUTES:
        if route_method == method and re.fullmatch(pattern, rest):
            if callable(schema) and not isinstance(schema, dict):
                schema = schema(body if isinstance(body, dict) else {}, query)
            if isinstance(schema, tuple):
                return with_project_id(schema[1], schema[0], version[1])
            if schema == "manage_volume":
                return manage_schema(version[1])
            family = pattern.split("/")[0]
            if isinstance(schema, str) and family in BANDS:
                return getattr(band_module(BANDS[family], version[1]), schema)
            if isinstance(schema, str):
                return volume_schema(schema, version[1])
            if pattern.startswith("snapshots") and schema:
                return snapshot_schema(schema, version[1])
            return schema
    return None


def check(response):
    """Records how `response` departs from its published schema, if it does."""
    request = response.request
    version = (3, 0)
    header = response.headers.get("OpenStack-API-Version", "")
    if header.startswith("volume "):
        major, minor = header.split()[1].split(".")
        version = (int(major), int(minor))
    try:
        sent = json.loads(request.body) if request.body else {}
    except (ValueError, TypeError, RecursionError):
        sent = {}  # the bad-input sweep's bodies; their answers are faults anyway
    schema = schema_for(request.method, request.url, sent, version)
    if schema is None or not (200 <= response.status_code < 400):
        return
    if "x-server-management-url" in response.headers:
        return  # noauth's answer to a request without a token, not the operation's
    where = f"{request.method} {urlsplit(request.url).path} at {version[0]}.{version[1]} -> {response.status_code}"
    problem = None
    if response.status_code not in schema["status_code"]:
        problem = f"status {response.status_code}, the schema allows {schema['status_code']}"
    elif schema.get("response_body"):
        try:
            jsonschema.validate(response.json(), schema["response_body"], cls=JSONSCHEMA_VALIDATOR,
                                format_checker=FORMAT_CHECKER)
        except jsonschema.ValidationError as e:
            problem = f"{e.message} at {'/'.join(map(str, e.absolute_path)) or 'the top'}"
        except ValueError:
            problem = "the body is not JSON"
    elif response.content:
        problem = f"a body where the schema has none: {response.content[:200]!r}"
    if problem:
        with _lock:
            VIOLATIONS.append(f"{where}: {problem}")


def install():
    original = requests.adapters.HTTPAdapter.send

    def send(self, request, *args, **kwargs):
        response = original(self, request, *args, **kwargs)
        host = urlsplit(request.url).hostname or ""
        if host.startswith("127."):
            check(response)
        return response

    requests.adapters.HTTPAdapter.send = send
