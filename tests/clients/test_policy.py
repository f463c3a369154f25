"""The policy table (spec §1.6, `src/api/policy.rs`) against Cinder's default
policy: every route and every volume action, called by an admin, a member and a
reader of the project that owns the resources, a token with no role in it, and a
member of another project.

The oracle is written here, from `cinder/policies/*.py` (the new defaults), not
read from ember: admin rules need the admin role, member rules a member of the
owning project, reader rules a reader or member of it; another project's
resources are "not found" (404), never "forbidden". A request the policy lets
through must get past it: its body is valid as far as the policy is concerned
and fails (or succeeds harmlessly) after, so "allowed" is anything but 403 and
the owner-hiding 404. Destructive requests get a fresh resource for each caller.
The routes walked are compared with the table in `src/api/policy.rs`, so a route
added without a rule, or a rule without a case here, fails this test.
"""

import re
import uuid
from pathlib import Path

import pytest
import requests

from conftest import ROOT, start_agent, stop_agent, wait_for

P1 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1"
P2 = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2"
TOKENS = {
    "admin": ("policy-admin-token-0001", "root", P1, ["admin"]),
    "member": ("policy-member-token-001", "mia", P1, ["member"]),
    "reader": ("policy-reader-token-001", "rex", P1, ["reader"]),
    "norole": ("policy-norole-token-001", "nob", P1, []),
    "other": ("policy-other-token-0001", "oto", P2, ["member"]),
}
ADMIN, MEMBER, READER, ANYONE = "admin", "member", "reader", "anyone"
PROBE = {"x-policy-probe": 1}
CONNECTOR = {"initiator": "iqn.1993-08.org.debian:01:policy", "host": "hv1", "ip": "127.0.0.1"}


def expected(level, who, owned):
    """What Cinder's default policy answers `who` for a rule of `level` on a
    resource of P1 (`owned`), on P1 itself (`owned == "project"`: quota sets,
    where another project is forbidden, not hidden) or on the caller's own
    collection."""
    if who == "admin" or level == ANYONE:
        return "allowed"
    if who == "other" and owned == "project":
        return "forbidden"
    if who == "other" and owned:
        return "hidden"
    if level == ADMIN or who == "norole" or (level == MEMBER and who == "reader"):
        return "forbidden"
    return "allowed"


class Api:
    def __init__(self, agent):
        self.agent = agent

    def call(self, who, method, path, body=None, version="3.71"):
        headers = {"X-Auth-Token": TOKENS[who][0], "Accept": "application/json",
                   "OpenStack-API-Version": f"volume {version}"}
        return requests.request(method, self.agent.endpoint + path, json=body, headers=headers, timeout=30)

    def ok(self, method, path, body=None, version="3.71", who="admin"):
        r = self.call(who, method, path, body, version)
        assert r.status_code in (200, 202, 204), f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def volume(self, status="available", **extra):
        vid = self.ok("POST", "/volumes", {"volume": {"size": 1, **extra}})["volume"]["id"]
        wait_for(lambda: self.ok("GET", f"/volumes/{vid}")["volume"]["status"] == "available",
                 what="volume available")
        if status != "available":
            self.ok("POST", f"/volumes/{vid}/action", {"os-reset_status": {"status": status}})
        return vid

    def snapshot(self, vid):
        sid = self.ok("POST", "/snapshots", {"snapshot": {"volume_id": vid}})["snapshot"]["id"]
        wait_for(lambda: self.ok("GET", f"/snapshots/{sid}")["snapshot"]["status"] == "available",
                 what="snapshot available")
        return sid

    def volume_type(self, **extra):
        name = f"t-{uuid.uuid4().hex[:8]}"
        return self.ok("POST", "/types", {"volume_type": {"name": name, **extra}})["volume_type"]["id"]

    def attachment(self):
        vid = self.volume()
        body = {"attachment": {"volume_uuid": vid, "instance_uuid": str(uuid.uuid4())}}
        return self.ok("POST", "/attachments", body, version="3.27")["attachment"]["id"]

    def transfer(self):
        vid = self.volume()
        return self.ok("POST", "/os-volume-transfer", {"transfer": {"volume_id": vid}})["transfer"]["id"]

    def group_type(self):
        name = f"gt-{uuid.uuid4().hex[:8]}"
        body = {"group_type": {"name": name, "group_specs": {"a": "b"}}}
        return self.ok("POST", "/group_types", body, version="3.11")["group_type"]["id"]

    def group(self, group_type):
        body = {"group": {"group_type": group_type, "volume_types": ["__DEFAULT__"], "name": "p"}}
        return self.ok("POST", "/groups", body, version="3.13")["group"]["id"]

    def group_snapshot(self, group):
        body = {"group_snapshot": {"group_id": group, "name": "p"}}
        return self.ok("POST", "/group_snapshots", body, version="3.14")["group_snapshot"]["id"]

    def message(self):
        """A real user message: a clone whose source file vanished fails."""
        src = self.volume()
        self.agent.volume_file(src).unlink()
        clone = self.ok("POST", "/volumes", {"volume": {"source_volid": src}})["volume"]["id"]
        wait_for(lambda: self.ok("GET", f"/volumes/{clone}")["volume"]["status"] == "error", what="clone error")
        found = [m for m in self.ok("GET", "/messages", version="3.3")["messages"]
                 if m.get("resource_uuid") == clone]
        assert found, "the failed clone left no message"
        return found[0]["id"]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    tokens = tmp_path_factory.mktemp("policy") / "tokens.toml"
    tokens.write_text("".join(
        f'[[tokens]]\ntoken = "{t}"\nuser_id = "{u}"\nproject_id = "{p}"\nroles = [{", ".join(map(repr, r))}]\n\n'
        .replace("'", '"') for t, u, p, r in TOKENS.values()))
    tokens.chmod(0o600)
    agent = start_agent(f'[auth]\nstrategy = "token"\ntokens_file = "{tokens}"\n')
    yield Api(agent)
    stop_agent(agent)


@pytest.fixture(scope="module")
def shared(api):
    """Resources of P1 the non-destructive cases share."""
    vid = api.volume(metadata={"k": "v"})
    ids = {"vol": vid, "snap": api.snapshot(vid), "type": api.volume_type(extra_specs={"a": "b"}),
           "att": api.attachment(), "msg": api.message(), "err": api.volume(status="error"),
           "proj": P1, "cls": "default", "new": str(uuid.uuid4()), "xfer": api.transfer(),
           "gtype": api.group_type()}
    ids["grp"] = api.group(ids["gtype"])
    ids["gsnap"] = api.group_snapshot(ids["grp"])
    return ids


# (method, path, level, owned, body, version, fresh): `path` names resources as
# {vol}, {snap}, {type}, {att}, {msg}; `fresh` names the kind of resource a
# destructive case needs anew for each caller.
ROUTES = [
    ("GET", "/volumes", READER, False, None, "3.0", None),
    ("POST", "/volumes", MEMBER, False, PROBE, "3.0", None),
    ("GET", "/volumes/detail", READER, False, None, "3.0", None),
    ("GET", "/volumes/{vol}", READER, True, None, "3.0", None),
    ("PUT", "/volumes/{vol}", MEMBER, True, PROBE, "3.0", None),
    ("DELETE", "/volumes/{vol}", MEMBER, True, None, "3.0", "vol"),
    ("GET", "/volumes/{vol}/metadata", READER, True, None, "3.0", None),
    ("POST", "/volumes/{vol}/metadata", MEMBER, True, PROBE, "3.0", None),
    ("PUT", "/volumes/{vol}/metadata", MEMBER, True, PROBE, "3.0", None),
    ("GET", "/volumes/{vol}/metadata/k", READER, True, None, "3.0", None),
    ("PUT", "/volumes/{vol}/metadata/k", MEMBER, True, PROBE, "3.0", None),
    ("DELETE", "/volumes/{vol}/metadata/absent", MEMBER, True, None, "3.0", None),
    ("GET", "/snapshots", READER, False, None, "3.0", None),
    ("POST", "/snapshots", MEMBER, False, PROBE, "3.0", None),
    ("GET", "/snapshots/detail", READER, False, None, "3.0", None),
    ("GET", "/snapshots/{snap}", READER, True, None, "3.0", None),
    ("PUT", "/snapshots/{snap}", MEMBER, True, PROBE, "3.0", None),
    ("DELETE", "/snapshots/{snap}", MEMBER, True, None, "3.0", "snap"),
    ("POST", "/snapshots/{snap}/action", ADMIN, True, {"os-reset_status": {"status": "available"}}, "3.0", None),
    ("POST", "/snapshots/{snap}/action", ADMIN, True, {"os-force_delete": {}}, "3.0", "snap"),
    ("POST", "/snapshots/{snap}/action", MEMBER, True, {"os-update_snapshot_status": {"status": "error"}}, "3.0",
     None),
    ("POST", "/snapshots/{snap}/action", ADMIN, True, {"os-unmanage": None}, "3.0", "snap"),
    ("GET", "/types", READER, False, None, "3.0", None),
    ("POST", "/types", ADMIN, False, PROBE, "3.0", None),
    ("GET", "/types/default", READER, False, None, "3.62", None),
    ("GET", "/types/{type}", READER, False, None, "3.0", None),
    ("PUT", "/types/{type}", ADMIN, False, PROBE, "3.0", None),
    ("DELETE", "/types/{type}", ADMIN, False, None, "3.0", "type"),
    ("POST", "/types/{type}/action", ADMIN, False, {"addProjectAccess": PROBE}, "3.0", None),
    ("POST", "/types/{type}/action", ADMIN, False, {"removeProjectAccess": PROBE}, "3.0", None),
    ("GET", "/types/{type}/os-volume-type-access", ADMIN, False, None, "3.0", None),
    ("GET", "/types/{type}/encryption", ADMIN, False, None, "3.0", None),
    ("POST", "/types/{type}/encryption", ADMIN, False, PROBE, "3.0", None),
    ("GET", "/types/{type}/encryption/k", ADMIN, False, None, "3.0", None),
    ("PUT", "/types/{type}/encryption/k", ADMIN, False, PROBE, "3.0", None),
    ("DELETE", "/types/{type}/encryption/k", ADMIN, False, None, "3.0", None),
    ("GET", "/volumes/{vol}/encryption", READER, True, None, "3.0", None),
    ("GET", "/volumes/{vol}/encryption/k", READER, True, None, "3.0", None),
    ("GET", "/types/{type}/extra_specs", READER, False, None, "3.0", None),
    ("POST", "/types/{type}/extra_specs", ADMIN, False, PROBE, "3.0", None),
    ("GET", "/types/{type}/extra_specs/multiattach", READER, False, None, "3.0", None),
    ("PUT", "/types/{type}/extra_specs/a", ADMIN, False, PROBE, "3.0", None),
    ("DELETE", "/types/{type}/extra_specs/absent", ADMIN, False, None, "3.0", None),
    ("GET", "/manageable_volumes", ADMIN, False, None, "3.8", None),
    ("POST", "/manageable_volumes", ADMIN, False, PROBE, "3.8", None),
    ("GET", "/manageable_volumes/detail", ADMIN, False, None, "3.8", None),
    ("POST", "/os-volume-manage", ADMIN, False, PROBE, "3.0", None),
    ("GET", "/os-volume-manage/detail", ADMIN, False, None, "3.0", None),
    ("GET", "/manageable_snapshots", ADMIN, False, None, "3.8", None),
    ("POST", "/manageable_snapshots", ADMIN, False, PROBE, "3.8", None),
    ("GET", "/manageable_snapshots/detail", ADMIN, False, None, "3.8", None),
    ("GET", "/os-snapshot-manage", ADMIN, False, None, "3.0", None),
    ("POST", "/os-snapshot-manage", ADMIN, False, PROBE, "3.0", None),
    ("GET", "/os-snapshot-manage/detail", ADMIN, False, None, "3.0", None),
    ("GET", "/scheduler-stats/get_pools", ADMIN, False, None, "3.0", None),
    ("GET", "/messages", READER, False, None, "3.3", None),
    ("GET", "/messages/{msg}", READER, True, None, "3.3", None),
    ("DELETE", "/messages/{msg}", MEMBER, True, None, "3.3", "msg"),
    ("GET", "/attachments", READER, False, None, "3.27", None),
    ("POST", "/attachments", MEMBER, False, PROBE, "3.27", None),
    ("GET", "/attachments/detail", READER, False, None, "3.27", None),
    ("GET", "/attachments/{att}", READER, True, None, "3.27", None),
    ("PUT", "/attachments/{att}", MEMBER, True, PROBE, "3.27", None),
    ("DELETE", "/attachments/{att}", MEMBER, True, None, "3.27", "att"),
    ("POST", "/attachments/{att}/action", MEMBER, True, PROBE, "3.44", None),
    ("GET", "/os-quota-sets/{proj}", READER, "project", None, "3.0", None),
    ("PUT", "/os-quota-sets/{proj}", ADMIN, "project", PROBE, "3.0", None),
    ("DELETE", "/os-quota-sets/{proj}", ADMIN, "project", None, "3.0", None),
    ("GET", "/os-quota-sets/{proj}/defaults", READER, "project", None, "3.0", None),
    ("GET", "/os-quota-class-sets/{cls}", ADMIN, False, None, "3.0", None),
    ("PUT", "/os-quota-class-sets/{cls}", ADMIN, False, PROBE, "3.0", None),
    ("GET", "/limits", READER, False, None, "3.0", None),
    ("GET", "/volumes/summary", READER, False, None, "3.12", None),
    ("GET", "/snapshots/{snap}/metadata", READER, True, None, "3.0", None),
    ("POST", "/snapshots/{snap}/metadata", MEMBER, True, PROBE, "3.0", None),
    ("PUT", "/snapshots/{snap}/metadata", MEMBER, True, PROBE, "3.0", None),
    ("GET", "/snapshots/{snap}/metadata/k", READER, True, None, "3.0", None),
    ("PUT", "/snapshots/{snap}/metadata/k", MEMBER, True, PROBE, "3.0", None),
    ("DELETE", "/snapshots/{snap}/metadata/absent", MEMBER, True, None, "3.0", None),
    ("GET", "/os-availability-zone", ANYONE, False, None, "3.0", None),
    ("GET", "/os-services", ADMIN, False, None, "3.0", None),
    ("PUT", "/os-services/enable", ADMIN, False, PROBE, "3.0", None),
    ("PUT", "/os-services/disable", ADMIN, False, PROBE, "3.0", None),
    ("PUT", "/os-services/disable-log-reason", ADMIN, False, PROBE, "3.0", None),
    ("PUT", "/os-services/freeze", ADMIN, False, PROBE, "3.0", None),
    ("PUT", "/os-services/thaw", ADMIN, False, PROBE, "3.0", None),
    ("PUT", "/os-services/set-log", ADMIN, False, PROBE, "3.32", None),
    ("PUT", "/os-services/get-log", ADMIN, False, PROBE, "3.32", None),
    ("GET", "/os-hosts", ADMIN, False, None, "3.0", None),
    ("GET", "/os-hosts/absent", ADMIN, False, None, "3.0", None),
    ("PUT", "/os-hosts/absent", ADMIN, False, PROBE, "3.0", None),
    ("GET", "/capabilities/absent", ADMIN, False, None, "3.0", None),
    ("GET", "/qos-specs", ADMIN, False, None, "3.0", None),
    ("POST", "/qos-specs", ADMIN, False, PROBE, "3.0", None),
    ("GET", "/qos-specs/{new}", ADMIN, False, None, "3.0", None),
    ("PUT", "/qos-specs/{new}", ADMIN, False, PROBE, "3.0", None),
    ("DELETE", "/qos-specs/{new}", ADMIN, False, None, "3.0", None),
    ("PUT", "/qos-specs/{new}/delete_keys", ADMIN, False, PROBE, "3.0", None),
    ("GET", "/qos-specs/{new}/associations", ADMIN, False, None, "3.0", None),
    ("GET", "/qos-specs/{new}/associate", ADMIN, False, None, "3.0", None),
    ("GET", "/qos-specs/{new}/disassociate", ADMIN, False, None, "3.0", None),
    ("GET", "/qos-specs/{new}/disassociate_all", ADMIN, False, None, "3.0", None),
    ("GET", "/extensions", ANYONE, False, None, "3.0", None),
    ("GET", "/extensions/absent", ANYONE, False, None, "3.0", None),
    ("GET", "/os-volume-transfer", READER, False, None, "3.0", None),
    ("POST", "/os-volume-transfer", MEMBER, False, PROBE, "3.0", None),
    ("GET", "/os-volume-transfer/detail", READER, False, None, "3.0", None),
    ("GET", "/os-volume-transfer/{xfer}", READER, True, None, "3.0", None),
    ("DELETE", "/os-volume-transfer/{xfer}", MEMBER, True, None, "3.0", "xfer"),
    ("POST", "/os-volume-transfer/{xfer}/accept", MEMBER, False, PROBE, "3.0", None),
    ("GET", "/volume-transfers", READER, False, None, "3.55", None),
    ("POST", "/volume-transfers", MEMBER, False, PROBE, "3.55", None),
    ("GET", "/volume-transfers/detail", READER, False, None, "3.55", None),
    ("GET", "/volume-transfers/{xfer}", READER, True, None, "3.55", None),
    ("DELETE", "/volume-transfers/{xfer}", MEMBER, True, None, "3.55", "xfer"),
    ("POST", "/volume-transfers/{xfer}/accept", MEMBER, False, PROBE, "3.55", None),
    ("GET", "/group_types", ANYONE, False, None, "3.11", None),
    ("POST", "/group_types", ADMIN, False, PROBE, "3.11", None),
    ("GET", "/group_types/default", ANYONE, False, None, "3.11", None),
    ("GET", "/group_types/{gtype}", ANYONE, False, None, "3.11", None),
    ("PUT", "/group_types/{gtype}", ADMIN, False, PROBE, "3.11", None),
    ("DELETE", "/group_types/{gtype}", ADMIN, False, None, "3.11", "gtype"),
    ("GET", "/group_types/{gtype}/group_specs", ADMIN, False, None, "3.11", None),
    ("POST", "/group_types/{gtype}/group_specs", ADMIN, False, PROBE, "3.11", None),
    ("GET", "/group_types/{gtype}/group_specs/a", ADMIN, False, None, "3.11", None),
    ("PUT", "/group_types/{gtype}/group_specs/a", ADMIN, False, PROBE, "3.11", None),
    ("DELETE", "/group_types/{gtype}/group_specs/absent", ADMIN, False, None, "3.11", None),
    ("GET", "/groups", READER, False, None, "3.13", None),
    ("POST", "/groups", MEMBER, False, PROBE, "3.13", None),
    ("GET", "/groups/detail", READER, False, None, "3.13", None),
    ("POST", "/groups/action", MEMBER, False, PROBE, "3.14", None),
    ("GET", "/groups/{grp}", READER, True, None, "3.13", None),
    ("PUT", "/groups/{grp}", MEMBER, True, PROBE, "3.13", None),
    ("POST", "/groups/{grp}/action", MEMBER, True, {"delete": {"delete-volumes": True}}, "3.13", "grp"),
    ("POST", "/groups/{grp}/action", ADMIN, True, {"reset_status": {"status": "available"}}, "3.20", None),
    ("GET", "/group_snapshots", READER, False, None, "3.14", None),
    ("POST", "/group_snapshots", MEMBER, False, PROBE, "3.14", None),
    ("GET", "/group_snapshots/detail", READER, False, None, "3.14", None),
    ("GET", "/group_snapshots/{gsnap}", READER, True, None, "3.14", None),
    ("DELETE", "/group_snapshots/{gsnap}", MEMBER, True, None, "3.14", "gsnap"),
    ("POST", "/group_snapshots/{gsnap}/action", ADMIN, True, {"reset_status": {"status": "available"}}, "3.19",
     None),
    ("GET", "/backups", READER, False, None, "3.0", None),
    ("POST", "/backups", MEMBER, False, PROBE, "3.0", None),
    ("GET", "/backups/detail", READER, False, None, "3.0", None),
    ("GET", "/backups/{new}", READER, False, None, "3.0", None),
    ("DELETE", "/backups/{new}", MEMBER, False, None, "3.0", None),
    ("POST", "/backups/{new}/restore", MEMBER, False, PROBE, "3.0", None),
    ("POST", "/backups/{new}/action", ADMIN, False, {"os-reset_status": {"status": "error"}}, "3.0", None),
]

# Volume actions, on a volume in `error` (so what the policy lets through is then
# refused by the action's own preconditions, or is harmless), or a fresh one.
NEW = str(uuid.uuid4())
ACTIONS = [
    ({"os-extend": {"new_size": 5}}, MEMBER, "3.0", None),
    ({"revert": {"snapshot_id": NEW}}, MEMBER, "3.40", None),
    ({"os-retype": {"new_type": "__DEFAULT__"}}, MEMBER, "3.0", None),
    ({"os-set_image_metadata": {"metadata": {"x": "y"}}}, MEMBER, "3.0", None),
    ({"os-unset_image_metadata": {"key": "absent"}}, MEMBER, "3.0", None),
    ({"os-show_image_metadata": None}, READER, "3.0", None),
    ({"os-set_bootable": {"bootable": False}}, MEMBER, "3.0", None),
    ({"os-update_readonly_flag": {"readonly": False}}, MEMBER, "3.0", None),
    ({"os-volume_upload_image": {"image_name": "i", "disk_format": "raw", "container_format": "bare"}},
     MEMBER, "3.0", None),
    ({"os-volume_upload_image": {"image_name": "i", "disk_format": "raw", "container_format": "bare",
                                 "visibility": "public"}}, ADMIN, "3.1", None),
    ({"os-reimage": {"image_id": NEW}}, MEMBER, "3.68", None),
    ({"os-initialize_connection": {"connector": CONNECTOR}}, MEMBER, "3.0", None),
    ({"os-terminate_connection": {"connector": CONNECTOR}}, MEMBER, "3.0", None),
    ({"os-attach": {"instance_uuid": NEW, "mountpoint": "/dev/vdb"}}, MEMBER, "3.0", None),
    ({"os-detach": {}}, MEMBER, "3.0", None),
    ({"os-force_detach": {}}, ADMIN, "3.0", None),
    ({"os-reserve": None}, MEMBER, "3.0", None),
    ({"os-unreserve": None}, MEMBER, "3.0", None),
    ({"os-begin_detaching": None}, MEMBER, "3.0", None),
    ({"os-roll_detaching": None}, MEMBER, "3.0", None),
    ({"os-reset_status": {"status": "error"}}, ADMIN, "3.0", None),
    ({"os-force_delete": None}, ADMIN, "3.0", "vol"),
    ({"os-unmanage": None}, ADMIN, "3.0", "vol"),
    ({"os-migrate_volume": {"host": "nowhere@x#y"}}, ADMIN, "3.0", None),
    ({"os-migrate_volume_completion": {"new_volume": NEW}}, ADMIN, "3.0", None),
    ({"os-extend_volume_completion": {"error": False}}, ADMIN, "3.71", None),
]


def outcome(r, owned_ids):
    """'forbidden', 'hidden' (the owner's resource is not found) or 'allowed'."""
    assert r.status_code not in (401, 405) and (r.status_code < 500 or r.status_code == 501), f"{r.status_code} {r.text}"
    if r.status_code == 403:
        assert set(r.json()) == {"forbidden"} and "Policy doesn't allow" in r.json()["forbidden"]["message"], r.text
        return "forbidden"
    if r.status_code == 404:
        message = r.json()["itemNotFound"]["message"]
        if "could not be found" in message and any(i in message for i in owned_ids):
            return "hidden"
    return "allowed"


def fresh(api, kind, shared):
    return {"vol": api.volume, "snap": lambda: api.snapshot(shared["vol"]), "type": api.volume_type,
            "att": api.attachment, "msg": api.message, "xfer": api.transfer, "gtype": api.group_type,
            "grp": lambda: api.group(shared["gtype"]), "gsnap": lambda: api.group_snapshot(shared["grp"])}[kind]()


def table_routes():
    """(method, pattern) of every route in src/api/policy.rs."""
    text = (Path(ROOT) / "src/api/policy.rs").read_text()
    table = text[text.index("pub const ROUTES"):text.index("];", text.index("pub const ROUTES"))]
    found = set()
    for method, segs in re.findall(r'^\s*(GET|POST|PUT|DELETE) \[([^\]]*)\]', table, re.M):
        found.add((method, "/" + "/".join(re.findall(r'"([^"]*)"', segs))))
    return found


def pattern(path):
    return re.sub(r"/(\{\w+\}|k|a|absent|multiattach)(?=/|$)", "/*", path)


def test_every_route_of_the_table_is_walked():
    walked = {(m, pattern(p)) for m, p, *_ in ROUTES} | {("POST", "/volumes/*/action")}
    assert walked == table_routes(), (walked ^ table_routes())


@pytest.mark.parametrize("method,path,level,owned,body,version,kind", ROUTES,
                         ids=[f"{r[0]} {r[1]} {next(iter(r[4] or {'': 0}))}" for r in ROUTES])
def test_route_policy_matches_cinder_defaults(api, shared, method, path, level, owned, body, version, kind):
    owned_ids = [shared[k] for k in ("vol", "snap", "att", "msg", "xfer", "grp", "gsnap")]
    got = {}
    for who in TOKENS:
        ids = dict(shared)
        if kind and expected(level, who, owned) == "allowed":
            ids[kind] = fresh(api, kind, shared)
            owned_ids.append(ids[kind])
        r = api.call(who, method, path.format(**ids), body, version)
        got[who] = outcome(r, owned_ids)
    want = {who: expected(level, who, owned) for who in TOKENS}
    assert got == want


@pytest.mark.parametrize("body,level,version,kind", ACTIONS, ids=[f"{next(iter(a[0]))} {a[2]}" for a in ACTIONS])
def test_volume_action_policy_matches_cinder_defaults(api, shared, body, level, version, kind):
    got = {}
    for who in TOKENS:
        vid = api.volume(status="error") if kind and expected(level, who, True) == "allowed" else shared["err"]
        r = api.call(who, "POST", f"/volumes/{vid}/action", body, version)
        got[who] = outcome(r, [vid])
    assert got == {who: expected(level, who, True) for who in TOKENS}


def test_listings_and_creates_need_the_project_role(api, shared):
    """The defects this table fixed: a no-role token listed every volume of the
    project with its metadata, and readers or no-role tokens created volumes
    (clones of the project's volumes too)."""
    for path in ("/volumes", "/volumes/detail", "/snapshots", "/snapshots/detail"):
        assert outcome(api.call("norole", "GET", path), []) == "forbidden", path
        assert api.call("reader", "GET", path).status_code == 200
    for who in ("reader", "norole"):
        for body in ({"volume": {"size": 1}}, {"volume": {"source_volid": shared["vol"]}}):
            r = api.call(who, "POST", "/volumes", body)
            assert outcome(r, []) == "forbidden", (who, body, r.text)
    listed = api.call("member", "GET", "/volumes/detail").json()["volumes"]
    assert any(v["id"] == shared["vol"] and v["metadata"] == {"k": "v"} for v in listed)


def test_a_private_type_needs_access_granted(api):
    pt = api.volume_type(**{"os-volume-type-access:is_public": False,
                            "extra_specs": {"secret_backend": "x", "multiattach": "<is> False"}})
    listed = lambda who, q="": [t["id"] for t in api.call(who, "GET", f"/types{q}").json()["volume_types"]]
    hidden = lambda r: r.status_code == 404 and pt in r.json()["itemNotFound"]["message"]

    # Not shared: neither listed nor shown nor usable, for members of P1 or P2.
    for who in ("member", "reader", "other"):
        assert pt not in listed(who)
        assert hidden(api.call(who, "GET", f"/types/{pt}")), who
        assert hidden(api.call(who, "GET", f"/types/{pt}/extra_specs")), who
    r = api.call("member", "POST", "/volumes", {"volume": {"size": 1, "volume_type": pt}})
    assert r.status_code == 404, r.text
    mine = api.call("member", "POST", "/volumes", {"volume": {"size": 1}}).json()["volume"]["id"]
    wait_for(lambda: api.ok("GET", f"/volumes/{mine}")["volume"]["status"] == "available", what="available")
    r = api.call("member", "POST", f"/volumes/{mine}/action", {"os-retype": {"new_type": pt}})
    assert r.status_code == 404, r.text

    # Admins list private types on request (cinderclient's type-list asks is_public=None).
    assert pt not in listed("admin") and pt in listed("admin", "?is_public=None")
    assert pt in listed("admin", "?is_public=false") and all(
        not t["is_public"] for t in api.call("admin", "GET", "/types?is_public=false").json()["volume_types"])

    # Shared with P1: listed, shown (only the user-visible extra specs), usable.
    assert api.ok("GET", f"/types/{pt}/os-volume-type-access") == {"volume_type_access": []}
    api.ok("POST", f"/types/{pt}/action", {"addProjectAccess": {"project": P1}})
    r = api.call("admin", "POST", f"/types/{pt}/action", {"addProjectAccess": {"project": P1}})
    assert r.status_code == 409, r.text
    assert api.ok("GET", f"/types/{pt}/os-volume-type-access") == {
        "volume_type_access": [{"volume_type_id": pt, "project_id": P1}]}
    assert pt in listed("member") and pt in listed("reader") and pt not in listed("other")
    shown = api.call("member", "GET", f"/types/{pt}").json()["volume_type"]
    assert shown["extra_specs"] == {"multiattach": "<is> False"}, shown
    assert api.call("member", "GET", f"/types/{pt}/extra_specs").json() == {
        "extra_specs": {"multiattach": "<is> False"}}
    assert api.call("member", "GET", f"/types/{pt}/extra_specs/secret_backend").status_code == 404
    assert api.ok("GET", f"/types/{pt}")["volume_type"]["extra_specs"]["secret_backend"] == "x"
    r = api.call("member", "POST", "/volumes", {"volume": {"size": 1, "volume_type": pt}})
    assert r.status_code == 202, r.text
    assert hidden(api.call("other", "GET", f"/types/{pt}"))
    r = api.call("other", "POST", "/volumes", {"volume": {"size": 1, "volume_type": pt}})
    assert r.status_code == 404, r.text

    # Revoked: hidden again; a second removal is 404.
    api.ok("POST", f"/types/{pt}/action", {"removeProjectAccess": {"project": P1}})
    r = api.call("admin", "POST", f"/types/{pt}/action", {"removeProjectAccess": {"project": P1}})
    assert r.status_code == 404 and "combination" in r.text, r.text
    assert hidden(api.call("member", "GET", f"/types/{pt}"))

    # Public types have no access list.
    default = api.ok("GET", "/types/default", version="3.62")["volume_type"]["id"]
    r = api.call("admin", "POST", f"/types/{default}/action", {"addProjectAccess": {"project": P2}})
    assert r.status_code == 400 and "public volume type" in r.text, r.text
    assert api.call("admin", "GET", f"/types/{default}/os-volume-type-access").status_code == 404
    for bad in ({"addProjectAccess": {}}, {"addProjectAccess": {"project": 5}},
                {"addProjectAccess": {"project": P2, "x": 1}}, {"nope": {"project": P2}},
                {"addProjectAccess": {"project": P2}, "removeProjectAccess": {"project": P2}}):
        r = api.call("admin", "POST", f"/types/{pt}/action", bad)
        assert r.status_code == 400, (bad, r.text)
    assert api.ok("GET", f"/types/{pt}/os-volume-type-access") == {"volume_type_access": []}


def test_the_jobs_resource_follows_its_own_table(api, shared):
    """/ember/v1/jobs (src/api/jobs.rs ROUTES): readers and members list and show
    their project's jobs, another project's are hidden, only admins cancel."""
    table = (ROOT / "src" / "api" / "jobs.rs").read_text()
    assert re.findall(r'\("(GET|DELETE)", &\[([^\]]*)\]', table) == [
        ("GET", '"jobs"'), ("GET", '"jobs", "*"'), ("DELETE", '"jobs", "*"')], "a route without a case here"
    root = api.agent.root + "/ember/v1"

    def call(who, method, path):
        return requests.request(method, root + path, headers={"X-Auth-Token": TOKENS[who][0]}, timeout=30)
    # A finished job of P1: the create of the shared volume.
    job = max(j for j in range(1, 200) if call("admin", "GET", f"/jobs/{j}").status_code == 200)
    for who in ("admin", "member", "reader"):
        assert call(who, "GET", "/jobs").status_code == 200, who
        r = call(who, "GET", f"/jobs/{job}")
        assert r.status_code == 200 and r.json()["job"]["project_id"] == P1, (who, r.text)
    assert call("other", "GET", f"/jobs/{job}").status_code == 404
    assert call("other", "GET", "/jobs").json()["jobs"] == []
    assert call("norole", "GET", "/jobs").status_code == 403
    for who in ("member", "reader", "other", "norole"):
        assert call(who, "DELETE", f"/jobs/{job}").status_code == 403, who
    assert call("admin", "DELETE", f"/jobs/{job}").status_code == 409  # done: nothing to cancel
    assert requests.get(root + "/jobs", timeout=30).status_code == 401
