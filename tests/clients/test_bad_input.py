"""Bad input: every route and every volume action must refuse malformed, ill-typed
or ill-timed requests with the right Cinder fault, and must leave the store alone.

Contract: /work/shared/spec/cinder-volume-actions.md (§1 conventions, §2 resources,
§3 actions). Field schemas follow the upstream request schemas the spec names
(`cinder/api/schemas/*.py`, `cinder/api/validation/parameter_types.py`).

Every case asserts
  * the status code and the fault body `{"<faultName>": {"code": N, "message": "..."}}`
    with the faultName §1.4 assigns to N,
  * `OpenStack-API-Version` / `Vary` on /v3 responses, `x-openstack-request-id: req-...`,
  * that `db_dump()` (every row of every table) and `files()` are unchanged.

The last test is a deterministic generated sweep (>10,000 bodies) of bodies that are
invalid by construction: a valid body per action with one schema-breaking mutation.
"""

import copy
import json
import random
import re
import socket
import string
import time
from collections import Counter, namedtuple

import pytest
import requests

from conftest import PROJECT

MAX_MV = "3.71"
BODY_LIMIT = 114688

FAULT_NAMES = {
    400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
    405: "badMethod", 409: "conflictingRequest", 413: "overLimit",
    415: "badMediaType", 501: "notImplemented", 503: "serviceUnavailable",
}

MALFORMED = "Malformed request body"
NOT_FOUND_VERSION = "The resource could not be found."


def no_such_action(name):
    return (f"There is no such action: {name}. Verify the request body and "
            "Content-Type header and try again.")


def bad_version_format(v):
    return (f"API Version String {v} is of invalid format. "
            "Must be of format MajorNum.MinorNum.")


def not_acceptable(v):
    return (f"Version {v} is not supported by the API. "
            f"Minimum is 3.0 and maximum is {MAX_MV}.")


# Syntactically valid UUIDs that name nothing in the store.
UNKNOWN = "0b3e6a2c-9d4f-4c1e-8f57-2a9d6e1c4b70"
UNKNOWN2 = "5d1c8e7a-3b2f-4a6d-9c0e-7f4b2a1d8e36"
INSTANCE = "7c1f0d2e-8a3b-4c5d-9e6f-0a1b2c3d4e5f"
OTHER_INSTANCE = "1e2d3c4b-5a69-4877-8695-a4b3c2d1e0f9"
IMAGE = "3f2e1d0c-b9a8-4776-8554-4a3b2c1d0e9f"
CONNECTOR = {"initiator": "iqn.1994-05.com.redhat:bad-input", "host": "hv1",
             "ip": "192.0.2.7", "platform": "x86_64", "os_type": "linux",
             "multipath": False, "nqn": "nqn.2014-08.org.nvmexpress:uuid:bad-input"}

CLOSE = {"Connection": "close"}
ANY = object()      # "some valid OpenStack-API-Version value", for version-error responses
NOBODY = object()   # send no body at all


# ------------------------------------------------------------------ assertions

def describe(r):
    req = r.request
    body = req.body
    if isinstance(body, bytes):
        body = body[:300]
    elif isinstance(body, str):
        body = body[:300]
    elif body is not None:
        body = "<stream>"
    return (f"{req.method} {req.url} CT={req.headers.get('Content-Type')} "
            f"MV={req.headers.get('OpenStack-API-Version')} body={body!r}\n"
            f"  -> {r.status_code} {r.headers.get('Content-Type')} {r.text[:400]!r}")


def fault_problems(r, code, message=None, contains=None, v3=True, hdr_version=None):
    """Everything wrong with `r` as the fault for `code`; [] when it is right."""
    errs = []
    if r.status_code != code:
        errs.append(f"status {r.status_code}, expected {code}")
    if r.status_code < 400:
        return errs + ["the request was accepted"]
    ctype = r.headers.get("Content-Type", "")
    if not ctype.startswith("application/json"):
        errs.append(f"Content-Type {ctype!r} is not application/json")
    try:
        body = r.json()
    except ValueError:
        body = None
        errs.append("body is not JSON")
    name = FAULT_NAMES.get(r.status_code, "computeFault")
    if body is not None:
        if not (isinstance(body, dict) and list(body) == [name]):
            errs.append(f"body is not {{{name!r}: {{...}}}}")
        else:
            inner = body[name]
            allowed = {"code", "message"} | ({"retryAfter"} if r.status_code == 413 else set())
            if not isinstance(inner, dict) or not {"code", "message"} <= set(inner) \
                    or not set(inner) <= allowed:
                errs.append(f"fault object keys are not code+message: {inner!r}")
            else:
                if inner["code"] != r.status_code:
                    errs.append(f"fault code {inner['code']!r} != status {r.status_code}")
                msg = inner["message"]
                if not isinstance(msg, str) or not msg.strip():
                    errs.append("fault message is empty")
                elif message is not None and msg != message:
                    errs.append(f"message {msg!r}, expected {message!r}")
                elif contains is not None and contains not in msg:
                    errs.append(f"message {msg!r} does not contain {contains!r}")
    rid = r.headers.get("x-openstack-request-id", "")
    if not rid.startswith("req-"):
        errs.append(f"x-openstack-request-id {rid!r} does not start with req-")
    if v3:
        got = r.headers.get("OpenStack-API-Version")
        if hdr_version is ANY:
            if not got or not re.fullmatch(r"volume 3\.\d+", got):
                errs.append(f"OpenStack-API-Version {got!r} is not 'volume 3.N'")
        elif got != hdr_version:
            errs.append(f"OpenStack-API-Version {got!r}, expected {hdr_version!r}")
        vary = [v.strip().lower() for v in r.headers.get("Vary", "").split(",")]
        if "openstack-api-version" not in vary:
            errs.append(f"Vary {r.headers.get('Vary')!r} lacks OpenStack-API-Version")
    return errs


def header_version(version):
    if version is None:
        return "volume 3.0"
    if version == "latest":
        return f"volume {MAX_MV}"
    return f"volume {version}"


def store_diff(before, after):
    lines = []
    for table in sorted(set(before) | set(after)):
        b, a = set(before.get(table, [])), set(after.get(table, []))
        for row in sorted(b - a)[:5]:
            lines.append(f"  {table} - {row[:300]}")
        for row in sorted(a - b)[:5]:
            lines.append(f"  {table} + {row[:300]}")
    return "\n".join(lines)


def snapshot_state(agent):
    return agent.db_dump(), agent.files()


def assert_unchanged(agent, state, what=""):
    db, files = snapshot_state(agent)
    assert db == state[0], f"store changed by {what}:\n{store_diff(state[0], db)}"
    assert files == state[1], f"volume files changed by {what}: {state[1]} -> {files}"


def settle(agent, quiet=0.3, timeout=20):
    """Wait until no background work changes the store any more."""
    prev = snapshot_state(agent)
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(quiet)
        cur = snapshot_state(agent)
        if cur == prev:
            return
        prev = cur
    raise AssertionError("the store never settled")


def expect(agent, code, method, path, body=NOBODY, *, raw=None, version=None,
           headers=None, message=None, contains=None, v3=True, hdr_version=None):
    """Send one request; assert the fault and that store and files are unchanged."""
    state = snapshot_state(agent)
    r = agent.request(method, path, None if body is NOBODY else body,
                      version=version, raw=raw, headers=headers)
    if hdr_version is None:
        hdr_version = header_version(version)
    errs = fault_problems(r, code, message, contains, v3=v3, hdr_version=hdr_version)
    if errs and r.status_code < 400:
        # accepted by mistake: let its background work finish so that the next
        # test's store comparison is not disturbed by it
        settle(agent)
    assert not errs, "; ".join(errs) + "\n" + describe(r)
    assert_unchanged(agent, state, describe(r))
    return r


# ------------------------------------------------------------------ the world

class World:
    """Volumes in known states, created lazily and once per module.

    Keys usable in path/body templates: avail, snapped, err, attaching, attached,
    maint, ro, snapped_snap, err_snap, creating_snap, creating_snap_vol, vtype,
    vtype_name, attachment, host (the agent's host@backend#pool, quoted), unknown.
    """

    def __init__(self, agent):
        self.agent = agent
        self.ids = {"unknown": UNKNOWN}

    BUILDS = {"avail": "avail", "snapped": "snapped", "snapped_snap": "snapped",
              "err": "err", "err_snap": "err", "attaching": "attaching",
              "attached": "attached", "attachment": "attached", "maint": "maint",
              "ro": "ro", "creating_snap": "creating", "creating_snap_vol": "creating",
              "vtype": "vtype", "vtype_name": "vtype", "gtype": "group", "group": "group", "host": "host"}

    def __getitem__(self, key):
        if key not in self.ids:
            getattr(self, f"_build_{self.BUILDS[key]}")()
            settle(self.agent)
        return self.ids[key]

    # each builder asserts its own steps, so a broken setup says which step broke
    def _post_action(self, vid, body, code=202):
        r = self.agent.action(vid, body)
        assert r.status_code == code, f"setup {body}: {r.status_code} {r.text}"

    def _vol(self, name):
        return self.agent.create_volume(1, name=f"bad-input-{name}")["id"]

    def _build_host(self):
        # for query strings: '#' would start the URL's fragment
        host = self.agent.get_volume(self["avail"])["os-vol-host-attr:host"]
        self.ids["host"] = host.replace("#", "%23")

    def _build_avail(self):
        self.ids["avail"] = self._vol("avail")

    def _build_snapped(self):
        vid = self._vol("snapped")
        self.ids["snapped_snap"] = self.agent.create_snapshot(vid)["id"]
        self.ids["snapped"] = vid

    def _build_err(self):
        vid = self._vol("err")
        self.ids["err_snap"] = self.agent.create_snapshot(vid)["id"]
        self._post_action(vid, {"os-reset_status": {"status": "error"}})
        assert self.agent.get_volume(vid)["status"] == "error"
        self.ids["err"] = vid

    def _build_attaching(self):
        vid = self._vol("attaching")
        self._post_action(vid, {"os-reserve": {}})
        assert self.agent.get_volume(vid)["status"] == "attaching"
        self.ids["attaching"] = vid

    def _build_attached(self):
        vid = self._vol("attached")
        self._post_action(vid, {"os-reserve": None})
        self._post_action(vid, {"os-attach": {"instance_uuid": INSTANCE,
                                              "mountpoint": "/dev/vdb"}})
        vol = self.agent.wait_volume(vid, "in-use")
        assert len(vol["attachments"]) == 1, vol
        self.ids["attachment"] = vol["attachments"][0]["attachment_id"]
        self.ids["attached"] = vid

    def _build_maint(self):
        vid = self._vol("maint")
        self._post_action(vid, {"os-reset_status": {"status": "maintenance"}})
        assert self.agent.get_volume(vid)["status"] == "maintenance"
        self.ids["maint"] = vid

    def _build_ro(self):
        vid = self._vol("ro")
        self._post_action(vid, {"os-update_readonly_flag": {"readonly": True}})
        assert self.agent.get_volume(vid)["metadata"].get("readonly") == "True"
        self.ids["ro"] = vid

    def _build_creating(self):
        vid = self._vol("creating-snap")
        sid = self.agent.create_snapshot(vid)["id"]
        r = self.agent.request("POST", f"/snapshots/{sid}/action",
                               {"os-reset_status": {"status": "creating"}})
        assert r.status_code == 202, r.text
        self.ids["creating_snap_vol"] = vid
        self.ids["creating_snap"] = sid

    def _build_vtype(self):
        r = self.agent.request("POST", "/types",
                               {"volume_type": {"name": "bad-input-type"}})
        assert r.status_code == 200, r.text
        self.ids["vtype"] = r.json()["volume_type"]["id"]
        self.ids["vtype_name"] = "bad-input-type"

    def _build_group(self):
        r = self.agent.request("POST", "/group_types", {"group_type": {"name": "bad-input-gtype"}}, version="3.14")
        assert r.status_code == 202, r.text
        self.ids["gtype"] = r.json()["group_type"]["id"]
        body = {"group": {"group_type": self.ids["gtype"], "volume_types": [self["vtype"]], "name": "bad-input"}}
        r = self.agent.request("POST", "/groups", body, version="3.14")
        assert r.status_code == 202, r.text
        self.ids["group"] = r.json()["group"]["id"]

    def fill(self, template):
        """Substitute "{key}" placeholders in paths and (recursively) in bodies."""
        if isinstance(template, str):
            keys = "|".join(sorted(set(self.BUILDS) | {"unknown"}, key=len, reverse=True))
            return re.sub(r"\{(%s)\}" % keys, lambda m: self[m.group(1)], template)
        if isinstance(template, dict):
            return {self.fill(k): self.fill(v) for k, v in template.items()}
        if isinstance(template, list):
            return [self.fill(v) for v in template]
        return template


@pytest.fixture(scope="module")
def world(agent):
    return World(agent)


# ------------------------------------------------------------------ field model

Field = namedtuple("Field", "types invalid maxlen since loose")
ALL_TYPES = ("string", "integer", "number", "boolean", "null", "array", "object")
SAMPLES = {"string": "x", "integer": 7, "number": 1.5, "boolean": True,
           "null": None, "array": [], "object": {}}


def F(types, invalid=(), maxlen=None, since=None, loose=()):
    """A field: allowed JSON types, values invalid for it (certain 400), optional
    maxLength, the microversion it appears in, and `loose` values that must be
    refused but where 400 vs 404/409 depends on check order (sweep only)."""
    return Field(frozenset(types), list(invalid), maxlen, since, list(loose))


def invalid_values(field):
    out = list(field.invalid)
    out += [SAMPLES[t] for t in ALL_TYPES if t not in field.types]
    if field.maxlen is not None:
        out.append("x" * (field.maxlen + 1))
    return out


BAD_UUIDS = ["abc", "", "1234", UNKNOWN[:-1], UNKNOWN + "0",
             "g" + UNKNOWN[1:], UNKNOWN.replace("-", "_")]
# parameter_types.boolean: JSON booleans or exactly these strings (§3.0); anything
# else, integers included, is refused.
BOOL_INVALID = ["maybe", "", "Y", "T", "tRUE", "true ", "2", "yess", 0, 1, 2]

SIZE = F({"integer", "string"}, [0, -1, 2147483648, 2 ** 64, "abc", "", "0", "-1",
                                  "1.5", " 2", "2147483648", "1e3", "0x10"])
BOOL = F({"boolean", "string"}, BOOL_INVALID)
UUID = F({"string"}, BAD_UUIDS)


def STR(lo, hi, nullable=False):
    return F({"string"} | ({"null"} if nullable else set()),
             [""] if lo >= 1 else [], maxlen=hi)


def ENUM(values, nullable=False, since=None):
    return F({"string"} | ({"null"} if nullable else set()),
             ["bogus", values[0] + "x", " " + values[0]] + ([] if values[0] == "" else [""]),
             since=since)


VOL_STATUS = F({"string", "null"}, ["bogus", "in_use", "available!", "creatin",
                                    "available,error", "s" * 256])
ATTACH_STATUS = F({"string", "null"}, ["attaching", "reserved", "bogus", "attached!"])
MIG_STATUS = F({"string", "null"}, ["bogus", "target:" + UNKNOWN, "migrate"])
IMG_META = F({"object"}, [{"": "v"}, {"bad!key": "v"}, {"a*b": "v"}, {"k" * 256: "v"},
                          {"ключ": "v"}, {"k": 1}, {"k": None}, {"k": []}, {"k": {}},
                          {"k": True}, {"k": "v" * 65536}])
META255 = [{"": "v"}, {"bad!key": "v"}, {"k" * 256: "v"}, {"k": 1}, {"k": []},
           {"k": "v" * 256}, {"k": True}]

Action = namedtuple("Action", "base fields required extras nullable min target version gated")


def A(base, fields, required=(), extras=False, nullable=False, min=None,
      target="avail", version=None, gated=None):
    return Action(base, fields, list(required), extras, nullable, min, target,
                  version, gated or {})


EMPTY = None  # "empty" actions: schema {}; any value is valid (§3.0)

# The 24 actions of §3 plus os-extend_volume_completion. `base` is a valid body,
# `required` lists fields whose absence makes the body invalid, `target` the volume
# explicit cases are sent to (one on which a wrongly accepted body would show in the
# store), `version` the microversion explicit cases use, `gated` fields that are
# invalid below a microversion (name -> (version where allowed, value)).
ACTIONS = {
    "os-extend": A({"new_size": 2}, {"new_size": SIZE}, ["new_size"]),
    "os-reset_status": A(
        {"status": "available"},
        {"status": VOL_STATUS, "attach_status": ATTACH_STATUS,
         "migration_status": MIG_STATUS},
        ["status"]),  # the only field: without it nothing is left to update
    "revert": A(
        {"snapshot_id": "{snapped_snap}"},
        {"snapshot_id": F({"string", "null"}, [None, "abc", "", UNKNOWN])},
        ["snapshot_id"], extras=True, min="3.40", target="snapped", version="3.40"),
    "os-set_image_metadata": A({"metadata": {"image_name": "img"}},
                               {"metadata": IMG_META}, ["metadata"]),
    "os-unset_image_metadata": A({"key": "image_name"}, {"key": STR(1, 255)}, ["key"]),
    "os-show_image_metadata": EMPTY,
    "os-attach": A(
        {"instance_uuid": INSTANCE, "mountpoint": "/dev/vdb", "mode": "rw"},
        {"instance_uuid": UUID, "mountpoint": STR(1, 255),
         "host_name": F({"string"}, maxlen=255), "mode": ENUM(["rw", "ro"])},
        ["instance_uuid", "mountpoint"]),  # anyOf(instance_uuid, host_name)
    "os-detach": A(
        {"attachment_id": None},
        {"attachment_id": F({"string", "null"}, loose=BAD_UUIDS + [UNKNOWN])},
        nullable=True, target="attached"),
    "os-unmanage": EMPTY,
    "os-force_detach": A(
        {"attachment_id": None, "connector": None},
        {"attachment_id": F({"string", "null"}),
         "connector": F({"object", "string", "null"})},
        target="attached"),
    "os-retype": A(
        {"new_type": "{vtype_name}", "migration_policy": "never"},
        {"new_type": F({"string"}, loose=["no-such-type", "t" * 300]),
         "migration_policy": ENUM(["on-demand", "never"], nullable=True)},
        ["new_type"]),
    "os-migrate_volume": A(
        {"host": "otherhost@lvm#pool", "force_host_copy": False, "lock_volume": False},
        {"host": F({"string"}, [None], maxlen=255), "force_host_copy": BOOL,
         "lock_volume": BOOL},
        ["host"],
        # below 3.16 cluster is an unknown key; from 3.16 host and cluster together
        # break "one and only one" -- invalid at every version with host present
        gated={"cluster": ("9.99", "cluster1")}),
    "os-migrate_volume_completion": A(
        {"new_volume": UNKNOWN2, "error": False},
        {"new_volume": F({"string"}, BAD_UUIDS, loose=[UNKNOWN]),
         "error": F({"string", "null", "boolean"})},
        ["new_volume"]),
    "os-force_delete": EMPTY,
    "os-set_bootable": A({"bootable": True}, {"bootable": BOOL}, ["bootable"]),
    "os-volume_upload_image": A(
        {"image_name": "img", "force": False, "disk_format": "raw",
         "container_format": "bare"},
        {"image_name": STR(1, 255), "force": BOOL,
         "disk_format": ENUM(["raw", "vmdk", "vdi", "qcow2", "vhd", "vhdx", "ploop"]),
         "container_format": F({"string", "null"}, maxlen=255),
         "visibility": ENUM(["community", "public", "private", "shared"], since="3.1"),
         "protected": F({"boolean", "string"}, BOOL_INVALID, since="3.1")},
        ["image_name"], version="3.1",
        gated={"visibility": ("3.1", "private"), "protected": ("3.1", False)}),
    "os-reserve": EMPTY,
    "os-unreserve": EMPTY,
    "os-begin_detaching": EMPTY,
    "os-roll_detaching": EMPTY,
    "os-terminate_connection": A(
        {"connector": CONNECTOR}, {"connector": F({"object", "string", "null"})},
        ["connector"], target="attached"),
    "os-initialize_connection": A(
        {"connector": CONNECTOR}, {"connector": F({"object", "string"})}, ["connector"]),
    "os-update_readonly_flag": A({"readonly": True}, {"readonly": BOOL}, ["readonly"]),
    "os-reimage": A(
        {"image_id": IMAGE, "reimage_reserved": False},
        {"image_id": UUID, "reimage_reserved": BOOL}, ["image_id"],
        min="3.68", version="3.68"),
    "os-extend_volume_completion": A(
        {"error": False}, {"error": F({"string", "null", "boolean"})}),
}
EMPTY_ACTIONS = [n for n, a in ACTIONS.items() if a is EMPTY]
SCHEMA_ACTIONS = [n for n, a in ACTIONS.items() if a is not EMPTY]
assert len(ACTIONS) == 25

# Valid bodies, used where the body must pass and something else must fail.
VALID_BODY = {n: ({n: {}} if a is EMPTY else {n: a.base}) for n, a in ACTIONS.items()}
ACTION_VERSION = {n: (None if a is EMPTY else a.version) for n, a in ACTIONS.items()}


def vtuple(v):
    if v is None:
        return (3, 0)
    if v == "latest":
        return (3, 71)
    major, minor = v.split(".")
    return (int(major), int(minor))


# ------------------------------------------------------------------ 1. protocol

ROUTES_FOR_VERSION = [
    ("GET", "/volumes", NOBODY),
    ("GET", "/types", NOBODY),
    ("POST", "/volumes/{avail}/action", {"os-reserve": {}}),
    ("POST", "/volumes", {"volume": {"size": 1}}),
]


@pytest.mark.parametrize("route", ROUTES_FOR_VERSION, ids=lambda r: f"{r[0]}{r[1]}")
@pytest.mark.parametrize("bad", ["3", "3.", "3.01", "abc", "3.0.1", "03.1", "3.1a",
                                 "v3.1", "3.-1"])
def test_version_string_malformed(agent, world, route, bad):
    method, path, body = route
    expect(agent, 400, method, world.fill(path), world.fill(body) if body is not NOBODY else NOBODY,
           version=bad, message=bad_version_format(bad), hdr_version=ANY, headers=CLOSE)


@pytest.mark.parametrize("route", ROUTES_FOR_VERSION, ids=lambda r: f"{r[0]}{r[1]}")
@pytest.mark.parametrize("bad", ["3.72", "4.0", "2.0", "3.100", "1.0"])
def test_version_not_acceptable(agent, world, route, bad):
    method, path, body = route
    expect(agent, 406, method, world.fill(path), world.fill(body) if body is not NOBODY else NOBODY,
           version=bad, message=not_acceptable(bad), hdr_version=ANY, headers=CLOSE)


@pytest.mark.parametrize("header", ["compute 2.1", "3.5", "block-storage"])
def test_version_header_without_volume_entry(agent, world, header):
    # §1.2: a header without a `volume` entry -> 400 (text unverified upstream)
    expect(agent, 400, "POST", f"/volumes/{world['avail']}/action", {"os-reserve": {}},
           headers={"OpenStack-API-Version": header, **CLOSE}, hdr_version=ANY)


@pytest.mark.parametrize("version", [None, "3.0", "3.39"])
def test_revert_below_340_is_404(agent, world, version):
    expect(agent, 404, "POST", f"/volumes/{world['snapped']}/action",
           {"revert": {"snapshot_id": world["snapped_snap"]}}, version=version,
           message=NOT_FOUND_VERSION)


@pytest.mark.parametrize("version", [None, "3.40", "3.67"])
def test_reimage_below_368_is_404(agent, world, version):
    expect(agent, 404, "POST", f"/volumes/{world['avail']}/action",
           {"os-reimage": {"image_id": IMAGE}}, version=version,
           message=NOT_FOUND_VERSION)


UNKNOWN_URLS = [
    "/bogus",
    "/volumes/{avail}/bogus",
    "/volumes/{avail}/action/bogus",
    "/volumes/{avail}/metadata/k/extra",
    "/snapshots/{snapped_snap}/bogus",
    "/types/{vtype}/bogus",
    "/types/{vtype}/extra_specs/k/extra",
]


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("path", UNKNOWN_URLS)
def test_unknown_url_is_json_404(agent, world, path, method):
    body = {"x": 1} if method == "POST" else NOBODY
    expect(agent, 404, method, world.fill(path), body)


@pytest.mark.parametrize("url", ["/bogus", "/v2/volumes", "/v3x/volumes"])
def test_unknown_url_outside_v3_is_json_404(agent, url):
    expect(agent, 404, "GET", agent.root + url, v3=False)


@pytest.mark.parametrize("path,body", [
    ("/volumes", NOBODY),
    ("/volumes/{avail}/action", {"os-reserve": {}}),
    ("/volumes", {"volume": {"size": 1}}),
])
def test_project_mismatch_is_400(agent, world, path, body):
    other = "fedcba9876543210fedcba9876543210"
    assert other != PROJECT
    method = "GET" if body is NOBODY else "POST"
    expect(agent, 400, method, f"{agent.endpoint}/{other}{world.fill(path)}",
           world.fill(body) if body is not NOBODY else NOBODY,
           message="Malformed request url", headers=CLOSE)


def read_response(sock):
    """One HTTP/1.1 response from `sock`: (status, headers dict, body); None if closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in
               (line.split(":", 1) for line in lines[1:] if ":" in line)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


EARLY_REJECTIONS = [
    ("bad-version", "/volumes", "volume 3.1a", "application/json", 400),
    ("version-406", "/volumes", "volume 3.72", "application/json", 406),
    ("no-volume-entry", "/volumes", "compute 2.1", "application/json", 400),
    ("project-mismatch", "/v3/fedcba9876543210fedcba9876543210/volumes", "volume 3.0",
     "application/json", 400),
    ("media-type", "/volumes", "volume 3.0", "text/plain", 415),
    ("unknown-url", "/bogus", "volume 3.0", "application/json", 404),
    ("wrong-method", "/volumes/detail", "volume 3.0", "application/json", 405),
    ("revert-below-3.40", "/volumes/{avail}/action", "volume 3.0", "application/json", 404),
    ("reimage-below-3.68", "/volumes/{avail}/action", "volume 3.67", "application/json", 404),
    ("unknown-volume", f"/volumes/{UNKNOWN}/action", "volume 3.0", "application/json", 404),
]


@pytest.mark.parametrize("case", EARLY_REJECTIONS, ids=lambda c: c[0])
def test_early_rejection_keeps_connection_usable(agent, world, case):
    """A keep-alive client (requests, keystoneauth) sends the headers and the body in
    separate segments. A request refused before its body is read must still leave
    the connection usable for the next request, or announce `Connection: close`;
    closing it silently makes the client's next request fail with a reset."""
    _, path, version, ctype, code = case
    path = world.fill(path)
    if not path.startswith("/v3/"):
        path = f"/v3/{PROJECT}{path}"
    if "action" not in path:
        body = {"volume": {"size": 1}}
    elif case[0].startswith("reimage"):
        body = {"os-reimage": {"image_id": IMAGE}}
    else:
        body = {"revert": {"snapshot_id": UNKNOWN}}
    body = json.dumps(body).encode()
    state = snapshot_state(agent)
    with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as sock:
        sock.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"X-Auth-Token: admin:{PROJECT}\r\nContent-Type: {ctype}\r\n"
                      f"OpenStack-API-Version: {version}\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode())
        time.sleep(0.2)
        sock.sendall(body)
        first = read_response(sock)
        assert first is not None, "connection closed without a response"
        assert first[0] == code, first
        if first[1].get("connection", "").lower() != "close":
            try:
                sock.sendall((f"GET /v3/{PROJECT}/types HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              f"X-Auth-Token: admin:{PROJECT}\r\n\r\n").encode())
                second = read_response(sock)
            except OSError as exc:
                second = exc
            assert isinstance(second, tuple) and second[0] == 200, (
                f"after the {code} the server dropped the keep-alive connection without "
                f"`Connection: close` (next request got {second!r})")
    assert_unchanged(agent, state, f"POST {path}")


WRONG_METHODS = [
    ("DELETE", "/volumes"), ("PUT", "/volumes"), ("PATCH", "/volumes"),
    ("POST", "/volumes/detail"),
    ("POST", "/volumes/{avail}"), ("PATCH", "/volumes/{avail}"),
    ("GET", "/volumes/{avail}/action"), ("PUT", "/volumes/{avail}/action"),
    ("DELETE", "/volumes/{avail}/action"),
    ("DELETE", "/volumes/{avail}/metadata"), ("PATCH", "/volumes/{avail}/metadata"),
    ("POST", "/volumes/{avail}/metadata/k"),
    ("DELETE", "/snapshots"), ("PUT", "/snapshots"), ("POST", "/snapshots/detail"),
    ("POST", "/snapshots/{snapped_snap}"), ("PATCH", "/snapshots/{snapped_snap}"),
    ("GET", "/snapshots/{snapped_snap}/action"),
    ("DELETE", "/snapshots/{snapped_snap}/action"),
    ("DELETE", "/types"), ("PUT", "/types"), ("POST", "/types/{vtype}"),
    ("PATCH", "/types/{vtype}"), ("DELETE", "/types/{vtype}/extra_specs"),
    ("PUT", "/types/{vtype}/extra_specs"), ("POST", "/types/default"),
    ("DELETE", "/manageable_volumes"), ("PUT", "/manageable_volumes"),
    ("DELETE", "/manageable_snapshots"), ("PUT", "/manageable_snapshots"),
    ("POST", "/manageable_snapshots/detail"), ("DELETE", "/os-snapshot-manage"),
    ("POST", "/os-snapshot-manage/detail"),
    ("POST", "/os-quota-sets/" + PROJECT), ("PATCH", "/os-quota-sets/" + PROJECT),
    ("PUT", "/os-quota-sets/" + PROJECT + "/defaults"), ("DELETE", "/os-quota-class-sets/default"),
    ("POST", "/os-quota-class-sets/default"), ("POST", "/limits"), ("DELETE", "/limits"),
    ("PUT", "/os-volume-transfer"), ("DELETE", "/os-volume-transfer"), ("POST", "/os-volume-transfer/detail"),
    ("GET", "/os-volume-transfer/{unknown}/accept"), ("POST", "/snapshots/{snapped_snap}/metadata/k"),
    ("DELETE", "/snapshots/{snapped_snap}/metadata"), ("POST", "/os-availability-zone"),
    ("GET", "/os-services/freeze"), ("POST", "/os-services/thaw"), ("POST", "/os-hosts"),
    ("DELETE", "/os-hosts/somewhere"), ("POST", "/capabilities/somewhere"), ("POST", "/extensions"),
    ("DELETE", "/extensions/os-hosts"), ("PUT", "/qos-specs"), ("POST", "/qos-specs/{unknown}"),
    ("POST", "/qos-specs/{unknown}/associate"), ("GET", "/qos-specs/{unknown}/delete_keys"),
    ("PUT", "/types/{vtype}/encryption"), ("POST", "/types/{vtype}/encryption/provider"),
    ("POST", "/volumes/{avail}/encryption"), ("DELETE", "/volumes/{avail}/encryption/provider"),
    ("PUT", "/group_types"), ("DELETE", "/group_types"), ("POST", "/group_types/default"),
    ("POST", "/group_types/{gtype}"), ("DELETE", "/group_types/{gtype}/group_specs"),
    ("POST", "/group_types/{gtype}/group_specs/k"), ("PUT", "/groups"), ("DELETE", "/groups"),
    ("POST", "/groups/detail"), ("GET", "/groups/action"), ("DELETE", "/groups/{group}"),
    ("POST", "/groups/{group}"), ("GET", "/groups/{group}/action"), ("PUT", "/group_snapshots"),
    ("DELETE", "/group_snapshots"), ("POST", "/group_snapshots/detail"), ("POST", "/group_snapshots/{unknown}"),
    ("GET", "/group_snapshots/{unknown}/action"),
]


@pytest.mark.parametrize("method,path", WRONG_METHODS, ids=lambda x: x)
def test_wrong_method_is_405(agent, world, method, path):
    body = {"x": {}} if method in ("POST", "PUT", "PATCH") else NOBODY
    expect(agent, 405, method, world.fill(path), body,
           version="latest" if "manageable" in path else None)


# Valid bodies: only the media type is wrong, so a server that ignores it would act.
MEDIA_ROUTES = [
    ("POST", "/volumes/{avail}/action", {"os-reserve": {}}),
    ("POST", "/volumes/{avail}/action", {"os-set_bootable": {"bootable": True}}),
    ("POST", "/volumes", {"volume": {"size": 1}}),
    ("PUT", "/volumes/{avail}", {"volume": {"name": "renamed"}}),
    ("POST", "/volumes/{avail}/metadata", {"metadata": {"k": "v"}}),
    ("PUT", "/volumes/{avail}/metadata", {"metadata": {"k": "v"}}),
    ("PUT", "/volumes/{avail}/metadata/k", {"meta": {"k": "v"}}),
    ("POST", "/snapshots", {"snapshot": {"volume_id": "{avail}"}}),
    ("PUT", "/snapshots/{snapped_snap}", {"snapshot": {"name": "renamed"}}),
    ("POST", "/snapshots/{snapped_snap}/action", {"os-reset_status": {"status": "error"}}),
    ("POST", "/types", {"volume_type": {"name": "media-type"}}),
    ("PUT", "/types/{vtype}", {"volume_type": {"description": "d"}}),
    ("POST", "/types/{vtype}/extra_specs", {"extra_specs": {"k": "v"}}),
    ("PUT", "/os-quota-sets/" + PROJECT, {"quota_set": {"volumes": 500}}),
    ("PUT", "/os-quota-class-sets/default", {"quota_class_set": {"volumes": 500}}),
    ("POST", "/os-volume-transfer", {"transfer": {"volume_id": "{avail}"}}),
    ("POST", "/snapshots/{snapped_snap}/metadata", {"metadata": {"k": "v"}}),
    ("PUT", "/os-services/freeze", {"host": "somewhere"}),
    ("POST", "/qos-specs", {"qos_specs": {"name": "media-qos"}}),
    ("POST", "/types/{vtype}/encryption", {"encryption": {"provider": "luks", "control_location": "front-end"}}),
    ("POST", "/group_types", {"group_type": {"name": "media-gtype"}}),
    ("PUT", "/group_types/{gtype}", {"group_type": {"description": "d"}}),
    ("POST", "/group_types/{gtype}/group_specs", {"group_specs": {"k": "v"}}),
    ("POST", "/groups", {"group": {"group_type": "{gtype}", "volume_types": ["{vtype}"]}}),
    ("PUT", "/groups/{group}", {"group": {"name": "renamed"}}),
    ("POST", "/groups/{group}/action", {"reset_status": {"status": "error"}}),
    ("POST", "/groups/action", {"create-from-src": {"source_group_id": "{group}"}}),
    ("POST", "/group_snapshots", {"group_snapshot": {"group_id": "{group}"}}),
    ("POST", "/os-snapshot-manage", {"snapshot": {"volume_id": "{avail}", "ref": {"source-name": "x"}}}),
    ("POST", "/manageable_snapshots", {"snapshot": {"volume_id": "{avail}", "ref": {"source-name": "x"}}}),
    ("POST", "/snapshots/{snapped_snap}/action", {"os-unmanage": None}),
]


@pytest.mark.parametrize("ctype", ["text/plain", "application/xml",
                                   "application/x-www-form-urlencoded"])
@pytest.mark.parametrize("method,path,body", MEDIA_ROUTES, ids=lambda x: str(x)[:40])
def test_unsupported_content_type_is_415(agent, world, method, path, body, ctype):
    expect(agent, 415, method, world.fill(path),
           raw=json.dumps(world.fill(body)).encode(), headers={"Content-Type": ctype})


def padded(body, size):
    data = json.dumps(body).encode()
    assert len(data) <= size
    return data + b" " * (size - len(data))


@pytest.mark.parametrize("method,path,body", [
    ("POST", "/volumes/{avail}/action", {"os-extend": {"new_size": 2}}),
    ("POST", "/volumes/{avail}/action", {"os-reserve": {}}),
    ("POST", "/volumes", {"volume": {"size": 1}}),
    ("PUT", "/volumes/{avail}", {"volume": {"name": "renamed"}}),
    ("POST", "/snapshots", {"snapshot": {"volume_id": "{avail}"}}),
    ("POST", "/types", {"volume_type": {"name": "too-big-type"}}),
    ("PUT", "/os-quota-sets/" + PROJECT, {"quota_set": {"volumes": 500}}),
], ids=lambda x: str(x)[:40])
def test_body_over_limit_is_413(agent, world, method, path, body):
    # a valid body padded with insignificant whitespace to one byte over the limit
    expect(agent, 413, method, world.fill(path), raw=padded(world.fill(body), BODY_LIMIT + 1),
           headers=CLOSE)


def test_body_over_limit_chunked_is_413(agent, world):
    data = padded({"os-extend": {"new_size": 2}}, BODY_LIMIT * 2)

    def chunks():
        for i in range(0, len(data), 8192):
            yield data[i:i + 8192]
    expect(agent, 413, "POST", f"/volumes/{world['avail']}/action", raw=chunks(), headers=CLOSE)


def test_body_at_limit_is_not_413(agent, world):
    # exactly 114688 bytes is allowed: this one then fails validation (size 0) -> 400
    expect(agent, 400, "POST", f"/volumes/{world['avail']}/action",
           raw=padded({"os-extend": {"new_size": 0}}, BODY_LIMIT))


# ------------------------------------------------------------------ 2. action envelopes

MALFORMED_JSON = [
    b"", b" ", b"{", b"}", b"{\"os-extend\": ", b"not json", b"{'os-reserve': {}}",
    b"\xff\xfe", b"{\"os-reserve\": {}}garbage", b"{\"os-reserve\": {},}",
    b"{\"os-reserve\": {}}}", b"{\"os-reserve\" {}}", b"{\"os-reserve\": {\"a\": NaN}}",
    b"{\"os-reserve\": {\"a\": Infinity}}", b"{\"os-reserve\": undefined}",
    b"{\"os-reserve\": {\"a\": \"\xc3\x28\"}}", b"\x00{\"os-reserve\": {}}",
    b"{\"os-reserve\": \"\x01\"}",
]


@pytest.mark.parametrize("raw", MALFORMED_JSON, ids=lambda b: repr(b)[:30])
def test_action_malformed_json(agent, world, raw):
    expect(agent, 400, "POST", f"/volumes/{world['avail']}/action", raw=raw,
           message=MALFORMED)


@pytest.mark.parametrize("raw", [b"[]", b"\"os-reserve\"", b"1", b"null", b"true",
                                 b"[{\"os-reserve\": {}}]", b"[\"os-reserve\"]"],
                         ids=lambda b: repr(b)[:30])
def test_action_body_not_an_object(agent, world, raw):
    expect(agent, 400, "POST", f"/volumes/{world['avail']}/action", raw=raw)


def test_action_empty_object(agent, world):
    expect(agent, 400, "POST", f"/volumes/{world['avail']}/action", {},
           message=MALFORMED)


@pytest.mark.parametrize("name", list(ACTIONS))
def test_action_two_top_level_keys(agent, world, name):
    second = "os-unreserve" if name != "os-unreserve" else "os-reserve"
    body = dict(world.fill(VALID_BODY[name]))
    body[second] = {}
    expect(agent, 400, "POST", f"/volumes/{world['avail']}/action", body,
           version=ACTION_VERSION[name], message=MALFORMED)


@pytest.mark.parametrize("name", ["os-frobnicate", "OS-EXTEND", "os-extend ", " os-reserve",
                                  "os_reserve", "extend", "os-", "", "os-update_snapshot_status",
                                  "os-reset_status\u0000"])
def test_unknown_action(agent, world, name):
    expect(agent, 400, "POST", f"/volumes/{world['avail']}/action", {name: {}},
           message=no_such_action(name))


@pytest.mark.parametrize("name", list(ACTIONS))
@pytest.mark.parametrize("vol", ["unknown", "xxx"])
def test_action_on_unknown_volume(agent, world, name, vol):
    vid = UNKNOWN if vol == "unknown" else vol
    expect(agent, 404, "POST", f"/volumes/{vid}/action", world.fill(VALID_BODY[name]),
           version=ACTION_VERSION[name])


def action_schema_cases():
    """(id, action, body) triples, each invalid by the action's schema alone."""
    cases = []
    for name in SCHEMA_ACTIONS:
        spec = ACTIONS[name]
        inner_bad = ["x", 1, [], True, [spec.base]] + ([] if spec.nullable else [None])
        for v in inner_bad:
            cases.append((f"{name}-inner={json.dumps(v)[:20]}", name, {name: v}))
        if not spec.extras:
            cases.append((f"{name}-unknown-key", name, {name: {**spec.base, "bogus": 1}}))
            cases.append((f"{name}-unknown-key-null", name, {name: {**spec.base, "x-y": None}}))
        for req in spec.required:
            body = {k: v for k, v in spec.base.items() if k != req}
            cases.append((f"{name}-missing-{req}", name, {name: body}))
        for field_name, field in spec.fields.items():
            for bad in invalid_values(field):
                body = {**spec.base, field_name: bad}
                cases.append((f"{name}-{field_name}={json.dumps(bad)[:24]}", name,
                              {name: body}))
    return cases


@pytest.mark.parametrize("case", action_schema_cases(), ids=lambda c: c[0])
def test_action_schema(agent, world, case):
    _, name, body = case
    spec = ACTIONS[name]
    expect(agent, 400, "POST", f"/volumes/{world[spec.target]}/action",
           world.fill(body), version=spec.version)


@pytest.mark.parametrize("case", [
    ("os-volume_upload_image", "visibility", "private", None),
    ("os-volume_upload_image", "protected", False, None),
    ("os-volume_upload_image", "visibility", "public", "3.0"),
    ("os-migrate_volume", "cluster", "cluster1", None),
    ("os-migrate_volume", "cluster", "cluster1", "3.15"),
], ids=lambda c: f"{c[0]}-{c[1]}@{c[3]}")
def test_action_field_below_its_microversion(agent, world, case):
    name, field, value, version = case
    body = {name: {**ACTIONS[name].base, field: value}}
    expect(agent, 400, "POST", f"/volumes/{world['avail']}/action", body, version=version)


def test_action_utf8_overlong_image_metadata_value(agent, world):
    # 40,000 "é" = 80,000 UTF-8 bytes > 65535 (mysql_text), sent as raw UTF-8
    body = {"os-set_image_metadata": {"metadata": {"k": "é" * 40000}}}
    raw = json.dumps(body, ensure_ascii=False).encode()
    assert len(raw) < BODY_LIMIT
    expect(agent, 400, "POST", f"/volumes/{world['avail']}/action", raw=raw)


# ------------------------------------------------------------------ 3. wrong states

S = namedtuple("S", "id target body version code contains")


def st(id, target, body, code=400, contains=None, version=None):
    return S(id, target, body, version, code, contains)


RESERVE_MSG = "Volume status must be available to reserve, but the status is "
DETACH_MSG = ("Unable to detach volume. Volume status must be 'in-use' and "
              "attach_status must be 'attached' to detach.")
RESET_EMPTY_MSG = "Must specify 'status', 'attach_status' or 'migration_status' for update."

STATE_CASES = [
    st("extend-error", "err", {"os-extend": {"new_size": 2}}),
    st("extend-same-size", "avail", {"os-extend": {"new_size": 1}},
       contains="New size for extend must be greater than current size"),
    st("extend-same-size-string", "avail", {"os-extend": {"new_size": "1"}},
       contains="New size for extend must be greater than current size"),
    st("extend-attaching", "attaching", {"os-extend": {"new_size": 2}}),
    st("extend-maintenance", "maint", {"os-extend": {"new_size": 2}}),
    st("extend-in-use-below-3.42", "attached", {"os-extend": {"new_size": 2}}, version="3.41"),
    st("revert-volume-not-available", "err", {"revert": {"snapshot_id": "{err_snap}"}},
       409, version="3.40"),
    st("revert-no-snapshots", "avail", {"revert": {"snapshot_id": UNKNOWN}}, version="3.40"),
    st("revert-not-latest", "snapped", {"revert": {"snapshot_id": UNKNOWN}}, version="3.40"),
    st("revert-other-volumes-snapshot", "snapped", {"revert": {"snapshot_id": "{err_snap}"}},
       version="3.40"),
    st("revert-null", "snapped", {"revert": {"snapshot_id": None}}, version="latest"),
    st("revert-missing-id", "snapped", {"revert": {}}, version="3.40"),
    st("reserve-twice", "attaching", {"os-reserve": {}}, contains=RESERVE_MSG + "attaching."),
    st("reserve-null-twice", "attaching", {"os-reserve": None}, contains=RESERVE_MSG + "attaching."),
    st("reserve-in-use", "attached", {"os-reserve": {}}, contains=RESERVE_MSG + "in-use."),
    st("reserve-error", "err", {"os-reserve": {}}, contains=RESERVE_MSG + "error."),
    st("reserve-maintenance", "maint", {"os-reserve": {}}, contains=RESERVE_MSG + "maintenance."),
    st("begin_detaching-available", "avail", {"os-begin_detaching": {}}, contains=DETACH_MSG),
    st("begin_detaching-attaching", "attaching", {"os-begin_detaching": None}, contains=DETACH_MSG),
    st("begin_detaching-error", "err", {"os-begin_detaching": {}}, contains=DETACH_MSG),
    st("readonly-error", "err", {"os-update_readonly_flag": {"readonly": True}}),
    st("readonly-in-use", "attached", {"os-update_readonly_flag": {"readonly": True}}),
    st("readonly-attaching", "attaching", {"os-update_readonly_flag": {"readonly": "yes"}}),
    st("readonly-maintenance", "maint", {"os-update_readonly_flag": {"readonly": False}}),
    st("unset_image_metadata-missing-key", "avail",
       {"os-unset_image_metadata": {"key": "nosuchkey"}}, 404,
       contains="Glance metadata for volume/snapshot {avail} cannot be found."),
    st("detach-unknown-attachment", "attached", {"os-detach": {"attachment_id": UNKNOWN}}, 409),
    st("detach-unknown-attachment-no-attachments", "avail",
       {"os-detach": {"attachment_id": UNKNOWN}}, 409),
    st("detach-maintenance", "maint", {"os-detach": None}),
    st("force_detach-unknown-attachment", "attached",
       {"os-force_detach": {"attachment_id": UNKNOWN, "connector": None}}, 409),
    st("attach-already-in-use", "attached",
       {"os-attach": {"instance_uuid": OTHER_INSTANCE, "mountpoint": "/dev/vdc"}}),
    st("attach-maintenance", "maint",
       {"os-attach": {"instance_uuid": INSTANCE, "mountpoint": "/dev/vdb"}}),
    st("attach-readonly-rw", "ro",
       {"os-attach": {"instance_uuid": INSTANCE, "mountpoint": "/dev/vdb", "mode": "rw"}}),
    st("attach-readonly-default-mode", "ro",
       {"os-attach": {"host_name": "hv1", "mountpoint": "/dev/vdb"}}),
    st("set_image_metadata-maintenance", "maint",
       {"os-set_image_metadata": {"metadata": {"image_name": "x"}}}),
    st("set_bootable-maintenance", "maint", {"os-set_bootable": {"bootable": True}}),
    st("initialize_connection-maintenance", "maint",
       {"os-initialize_connection": {"connector": CONNECTOR}}),
    st("unmanage-in-use", "attached", {"os-unmanage": {}}),
    st("unmanage-with-snapshots", "snapped", {"os-unmanage": None}),
    st("unmanage-attaching", "attaching", {"os-unmanage": {}}),
    st("unmanage-maintenance", "maint", {"os-unmanage": {}}),
    st("force_delete-attached", "attached", {"os-force_delete": {}}),
    st("force_delete-with-snapshots", "snapped", {"os-force_delete": None}),
    st("reset_status-deleting", "avail", {"os-reset_status": {"status": "deleting"}},
       contains="Cannot reset-state to deleting"),
    st("reset_status-in-use-without-attachments", "avail",
       {"os-reset_status": {"status": "in-use"}}),
    st("reset_status-empty", "avail", {"os-reset_status": {}}, contains=RESET_EMPTY_MSG),
    st("reset_status-all-null", "avail",
       {"os-reset_status": {"status": None, "attach_status": None, "migration_status": None}},
       contains=RESET_EMPTY_MSG),
    st("retype-same-type", "avail", {"os-retype": {"new_type": "__DEFAULT__"}}),
    st("retype-unknown-type", "avail", {"os-retype": {"new_type": "no-such-type"}}, 404),
    st("retype-unknown-type-id", "avail", {"os-retype": {"new_type": UNKNOWN}}, 404),
    st("retype-error", "err", {"os-retype": {"new_type": "{vtype_name}"}}),
    st("retype-attaching", "attaching", {"os-retype": {"new_type": "{vtype}"}}),
    st("retype-maintenance", "maint", {"os-retype": {"new_type": "{vtype_name}"}}),
    st("upload-error", "err", {"os-volume_upload_image": {"image_name": "img"}},
       contains="status must be available"),
    st("upload-attaching", "attaching", {"os-volume_upload_image": {"image_name": "img"}},
       contains="status must be available"),
    st("upload-in-use-without-force", "attached",
       {"os-volume_upload_image": {"image_name": "img"}}, contains="status must be available"),
    st("migrate-with-snapshots", "snapped",
       {"os-migrate_volume": {"host": "otherhost@lvm#pool"}}),
    st("migrate-attaching", "attaching", {"os-migrate_volume": {"host": "otherhost@lvm#pool"}}),
    st("migrate-host-and-cluster", "avail",
       {"os-migrate_volume": {"host": "otherhost@lvm#pool", "cluster": "c1"}},
       contains="One and only one of cluster and host must be set.", version="3.16"),
    st("migrate-neither-host-nor-cluster", "avail", {"os-migrate_volume": {}},
       contains="One and only one of cluster and host must be set.", version="latest"),
    st("migrate_completion-unknown-new-volume", "avail",
       {"os-migrate_volume_completion": {"new_volume": UNKNOWN}}, 404),
]


@pytest.mark.parametrize("case", STATE_CASES, ids=lambda c: c.id)
def test_action_wrong_state(agent, world, case):
    vid = world[case.target]
    expect(agent, case.code, "POST", f"/volumes/{vid}/action", world.fill(case.body),
           version=case.version,
           contains=world.fill(case.contains) if case.contains else None)


# ------------------------------------------------------------------ 4. other routes

R = namedtuple("R", "id method path body version code contains")


def rc(id, method, path, body=NOBODY, code=400, version=None, contains=None):
    return R(id, method, path, body, version, code, contains)


VOLUME_CREATE_BAD = [
    ("missing-volume", {}), ("volume-string", {"volume": "x"}), ("volume-list", {"volume": []}),
    ("volume-null", {"volume": None}), ("extra-top-level", {"volume": {"size": 1}, "bogus": 1}),
    ("size-0", {"volume": {"size": 0}}), ("size--1", {"volume": {"size": -1}}),
    ("size-1.5", {"volume": {"size": 1.5}}), ("size-abc", {"volume": {"size": "abc"}}),
    ("size-'0'", {"volume": {"size": "0"}}), ("size-2^31", {"volume": {"size": 2147483648}}),
    ("size-'2^31'", {"volume": {"size": "2147483648"}}), ("size-true", {"volume": {"size": True}}),
    ("size-list", {"volume": {"size": []}}), ("size-object", {"volume": {"size": {}}}),
    ("size-missing", {"volume": {"name": "x"}}), ("size-null-no-source", {"volume": {"size": None}}),
    ("name-256", {"volume": {"size": 1, "name": "n" * 256}}),
    ("name-int", {"volume": {"size": 1, "name": 1}}),
    ("description-256", {"volume": {"size": 1, "description": "d" * 256}}),
    ("description-int", {"volume": {"size": 1, "description": 1}}),
    ("metadata-string", {"volume": {"size": 1, "metadata": "x"}}),
    ("metadata-list", {"volume": {"size": 1, "metadata": []}}),
    ("snapshot_id-not-uuid", {"volume": {"size": 1, "snapshot_id": "abc"}}),
    ("snapshot_id-int", {"volume": {"size": 1, "snapshot_id": 1}}),
    ("source_volid-not-uuid", {"volume": {"size": 1, "source_volid": "abc"}}),
    ("multiattach-true", {"volume": {"size": 1, "multiattach": True}}),
    ("multiattach-'yes'", {"volume": {"size": 1, "multiattach": "yes"}}),
    ("multiattach-maybe", {"volume": {"size": 1, "multiattach": "maybe"}}),
] + [(f"metadata-{json.dumps(m)[:20]}", {"volume": {"size": 1, "metadata": m}}) for m in META255]

SNAP_CREATE_BAD = [
    ("missing-snapshot", {}), ("snapshot-string", {"snapshot": "x"}),
    ("snapshot-null", {"snapshot": None}), ("missing-volume_id", {"snapshot": {"name": "s"}}),
    ("volume_id-not-uuid", {"snapshot": {"volume_id": "abc"}}),
    ("volume_id-int", {"snapshot": {"volume_id": 1}}),
    ("unknown-key", {"snapshot": {"volume_id": "{avail}", "bogus": 1}}),
    ("extra-top-level", {"snapshot": {"volume_id": "{avail}"}, "bogus": 1}),
    ("name-256", {"snapshot": {"volume_id": "{avail}", "name": "n" * 256}}),
    ("name-int", {"snapshot": {"volume_id": "{avail}", "name": 1}}),
    ("description-int", {"snapshot": {"volume_id": "{avail}", "description": 1}}),
    ("description-256", {"snapshot": {"volume_id": "{avail}", "description": "d" * 256}}),
    ("force-maybe", {"snapshot": {"volume_id": "{avail}", "force": "maybe"}}),
    ("force-2", {"snapshot": {"volume_id": "{avail}", "force": 2}}),
    ("metadata-value-int", {"snapshot": {"volume_id": "{avail}", "metadata": {"k": 1}}}),
    ("metadata-string", {"snapshot": {"volume_id": "{avail}", "metadata": "x"}}),
]

TYPE_CREATE_BAD = [
    ("missing-volume_type", {}), ("volume_type-string", {"volume_type": "x"}),
    ("missing-name", {"volume_type": {"description": "d"}}),
    ("name-empty", {"volume_type": {"name": ""}}), ("name-256", {"volume_type": {"name": "n" * 256}}),
    ("name-int", {"volume_type": {"name": 1}}), ("name-null", {"volume_type": {"name": None}}),
    ("unknown-key", {"volume_type": {"name": "t-bad", "bogus": 1}}),
    ("extra-top-level", {"volume_type": {"name": "t-bad"}, "bogus": 1}),
    ("description-int", {"volume_type": {"name": "t-bad", "description": 1}}),
    ("description-256", {"volume_type": {"name": "t-bad", "description": "d" * 256}}),
    ("extra_specs-string", {"volume_type": {"name": "t-bad", "extra_specs": "x"}}),
    ("extra_specs-value-int", {"volume_type": {"name": "t-bad", "extra_specs": {"k": 1}}}),
    ("extra_specs-empty-key", {"volume_type": {"name": "t-bad", "extra_specs": {"": "v"}}}),
    ("is_public-maybe", {"volume_type": {"name": "t-bad",
                                         "os-volume-type-access:is_public": "maybe"}}),
]

TYPE_UPDATE_BAD = [
    ("missing-volume_type", {}), ("volume_type-string", {"volume_type": "x"}),
    ("unknown-key", {"volume_type": {"bogus": 1}}), ("name-empty", {"volume_type": {"name": ""}}),
    ("name-256", {"volume_type": {"name": "n" * 256}}), ("name-int", {"volume_type": {"name": 1}}),
    ("is_public-maybe", {"volume_type": {"is_public": "maybe"}}),
    ("description-int", {"volume_type": {"description": 1}}),
    ("extra-top-level", {"volume_type": {"description": "d"}, "bogus": 1}),
]

EXTRA_SPECS_BAD = [
    ("missing", {}), ("string", {"extra_specs": "x"}), ("list", {"extra_specs": []}),
    ("extra-top-level", {"extra_specs": {"k": "v"}, "bogus": 1}),
] + [(f"{json.dumps(m)[:20]}", {"extra_specs": m}) for m in META255]

METADATA_BAD = [
    ("missing", {}), ("string", {"metadata": "x"}), ("list", {"metadata": []}),
    ("null", {"metadata": None}), ("meta-instead", {"meta": {"k": "v"}}),
    ("extra-top-level", {"metadata": {"k": "v"}, "bogus": 1}),
] + [(f"{json.dumps(m)[:20]}", {"metadata": m}) for m in META255]

META_KEY_BAD = [
    ("uri-mismatch", {"meta": {"other": "v"}}), ("two-items", {"meta": {"k": "v", "k2": "v"}}),
    ("empty", {"meta": {}}), ("value-int", {"meta": {"k": 1}}), ("missing", {}),
    ("metadata-instead", {"metadata": {"k": "v"}}), ("value-256", {"meta": {"k": "v" * 256}}),
    ("extra-top-level", {"meta": {"k": "v"}, "bogus": 1}),
]

VOLUME_UPDATE_BAD = [
    ("missing-volume", {}), ("volume-string", {"volume": "x"}),
    ("unknown-key", {"volume": {"bogus": 1}}), ("name-256", {"volume": {"name": "n" * 256}}),
    ("name-int", {"volume": {"name": 1}}), ("description-int", {"volume": {"description": 1}}),
    ("metadata-string", {"volume": {"metadata": "x"}}),
    ("metadata-value-int", {"volume": {"metadata": {"k": 1}}}),
    ("extra-top-level", {"volume": {"name": "ok"}, "bogus": 1}),
]

SNAP_UPDATE_BAD = [
    ("missing-snapshot", {}), ("snapshot-string", {"snapshot": "x"}),
    ("unknown-key", {"snapshot": {"bogus": 1}}), ("name-256", {"snapshot": {"name": "n" * 256}}),
    ("name-int", {"snapshot": {"name": 1}}), ("description-int", {"snapshot": {"description": 1}}),
    ("extra-top-level", {"snapshot": {"name": "ok"}, "bogus": 1}),
]

SNAP_ACTION_BAD = [
    ("reset-missing-status", {"os-reset_status": {}}),
    ("reset-status-bogus", {"os-reset_status": {"status": "bogus"}}),
    ("reset-status-empty", {"os-reset_status": {"status": ""}}),
    ("reset-status-int", {"os-reset_status": {"status": 1}}),
    ("reset-status-null", {"os-reset_status": {"status": None}}),
    ("reset-unknown-key", {"os-reset_status": {"status": "error", "bogus": 1}}),
    ("reset-inner-string", {"os-reset_status": "error"}),
    ("reset-inner-null", {"os-reset_status": None}),
    ("two-keys", {"os-reset_status": {"status": "error"}, "os-force_delete": {}}),
    ("empty-object", {}),
]

MANAGE_BAD = [
    ("missing-volume", {}), ("volume-string", {"volume": "x"}),
    ("missing-ref", {"volume": {"host": "ember@file#pool"}}),
    ("ref-int", {"volume": {"host": "ember@file#pool", "ref": 1}}),
    ("bootable-maybe", {"volume": {"host": "ember@file#pool", "ref": {"source-name": "v"},
                                   "bootable": "maybe"}}),
    ("unknown-key", {"volume": {"host": "ember@file#pool", "ref": {"source-name": "v"},
                                "bogus": 1}}),
    ("name-256", {"volume": {"host": "ember@file#pool", "ref": {"source-name": "v"},
                             "name": "n" * 256}}),
    ("host-bad-chars", {"volume": {"host": "bad host!", "ref": {"source-name": "v"}}}),
    ("extra-top-level", {"volume": {"host": "ember@file#pool", "ref": {"source-name": "v"}},
                         "bogus": 1}),
]

SNAP_MANAGE_OK = {"volume_id": "{avail}", "ref": {"source-name": "nosuch"}}
SNAP_MANAGE_BAD = [
    ("missing-snapshot", {}), ("snapshot-string", {"snapshot": "x"}), ("snapshot-null", {"snapshot": None}),
    ("missing-volume_id", {"snapshot": {"ref": {"source-name": "x"}}}),
    ("missing-ref", {"snapshot": {"volume_id": "{avail}"}}),
    ("volume_id-int", {"snapshot": {**SNAP_MANAGE_OK, "volume_id": 1}}),
    ("volume_id-not-uuid", {"snapshot": {**SNAP_MANAGE_OK, "volume_id": "not-a-uuid"}}),
    ("ref-int", {"snapshot": {**SNAP_MANAGE_OK, "ref": 1}}),
    ("ref-list", {"snapshot": {**SNAP_MANAGE_OK, "ref": ["x"]}}),
    ("ref-null", {"snapshot": {**SNAP_MANAGE_OK, "ref": None}}),
    ("ref-empty", {"snapshot": {**SNAP_MANAGE_OK, "ref": {}}}),
    ("ref-source-name-int", {"snapshot": {**SNAP_MANAGE_OK, "ref": {"source-name": 1}}}),
    ("ref-source-id-not-uuid", {"snapshot": {**SNAP_MANAGE_OK, "ref": {"source-id": "x"}}}),
    ("name-int", {"snapshot": {**SNAP_MANAGE_OK, "name": 1}}),
    ("name-256", {"snapshot": {**SNAP_MANAGE_OK, "name": "n" * 256}}),
    ("metadata-string", {"snapshot": {**SNAP_MANAGE_OK, "metadata": "k=v"}}),
    ("metadata-value-int", {"snapshot": {**SNAP_MANAGE_OK, "metadata": {"k": 1}}}),
    ("unknown-key", {"snapshot": {**SNAP_MANAGE_OK, "bogus": 1}}),
    ("host-not-a-key", {"snapshot": {**SNAP_MANAGE_OK, "host": "ember@file#file"}}),
    ("extra-top-level", {"snapshot": SNAP_MANAGE_OK, "bogus": 1}),
    # the volume is checked before the ref (Cinder's create_snapshot_in_db)
    ("volume-in-error", {"snapshot": {**SNAP_MANAGE_OK, "volume_id": "{err}"}}),
    ("volume-maintenance", {"snapshot": {**SNAP_MANAGE_OK, "volume_id": "{maint}"}}),
    ("already-managed", {"snapshot": {"volume_id": "{snapped}", "ref": {"source-name": "snapshot-{snapped_snap}"}}}),
    ("already-managed-by-id", {"snapshot": {"volume_id": "{snapped}", "ref": {"source-id": "{snapped_snap}"}}}),
]
SNAP_MANAGE_PATHS = [("/os-snapshot-manage", None), ("/manageable_snapshots", "3.8"),
                     ("/manageable_snapshots", "latest")]

ROUTE_CASES = (
    [rc(f"volumes-create-{i}", "POST", "/volumes", b) for i, b in VOLUME_CREATE_BAD]
    + [rc("volumes-create-unknown-key-3.53", "POST", "/volumes",
          {"volume": {"size": 1, "bogus": 1}}, version="3.53"),
       rc("volumes-create-unknown-key-latest", "POST", "/volumes",
          {"volume": {"size": 1, "imageref": "x"}}, version="latest"),
       rc("volumes-create-unknown-type", "POST", "/volumes",
          {"volume": {"size": 1, "volume_type": "no-such-type"}}, code=404),
       rc("volumes-create-unknown-snapshot", "POST", "/volumes",
          {"volume": {"snapshot_id": UNKNOWN}}, code=404),
       rc("volumes-create-unknown-source", "POST", "/volumes",
          {"volume": {"source_volid": UNKNOWN}}, code=404)]
    + [rc(f"volumes-update-{i}", "PUT", "/volumes/{avail}", b) for i, b in VOLUME_UPDATE_BAD]
    + [rc(f"volumes-metadata-post-{i}", "POST", "/volumes/{avail}/metadata", b)
       for i, b in METADATA_BAD]
    + [rc(f"volumes-metadata-put-{i}", "PUT", "/volumes/{avail}/metadata", b)
       for i, b in METADATA_BAD]
    + [rc(f"volumes-metadata-key-put-{i}", "PUT", "/volumes/{avail}/metadata/k", b)
       for i, b in META_KEY_BAD]
    + [rc("volumes-metadata-key-get-missing", "GET", "/volumes/{avail}/metadata/nokey", code=404),
       rc("volumes-metadata-key-delete-missing", "DELETE", "/volumes/{avail}/metadata/nokey",
          code=404)]
    + [rc(f"volumes-delete-{t}", "DELETE", f"/volumes/{{{t}}}")
       for t in ("attached", "snapped", "attaching", "maint")]
    + [rc(f"snapshots-create-{i}", "POST", "/snapshots", b) for i, b in SNAP_CREATE_BAD]
    + [rc("snapshots-create-unknown-volume", "POST", "/snapshots",
          {"snapshot": {"volume_id": UNKNOWN}}, code=404),
       rc("snapshots-create-volume-error", "POST", "/snapshots",
          {"snapshot": {"volume_id": "{err}"}}),
       rc("snapshots-create-in-use-no-force", "POST", "/snapshots",
          {"snapshot": {"volume_id": "{attached}"}}),
       rc("snapshots-create-in-use-force-false", "POST", "/snapshots",
          {"snapshot": {"volume_id": "{attached}", "force": False}}),
       rc("snapshots-create-force-false-3.66", "POST", "/snapshots",
          {"snapshot": {"volume_id": "{avail}", "force": False}}, version="3.66"),
       rc("snapshots-create-attaching", "POST", "/snapshots",
          {"snapshot": {"volume_id": "{attaching}", "force": True}}),
       rc("snapshots-create-maintenance", "POST", "/snapshots",
          {"snapshot": {"volume_id": "{maint}", "force": True}})]
    + [rc(f"snapshots-update-{i}", "PUT", "/snapshots/{snapped_snap}", b)
       for i, b in SNAP_UPDATE_BAD]
    + [rc("snapshots-delete-creating", "DELETE", "/snapshots/{creating_snap}")]
    + [rc(f"snapshots-action-{i}", "POST", "/snapshots/{snapped_snap}/action", b)
       for i, b in SNAP_ACTION_BAD]
    + [rc("snapshots-action-unknown", "POST", "/snapshots/{snapped_snap}/action",
          {"os-extend": {"new_size": 2}}, contains=no_such_action("os-extend")),
       rc("snapshots-action-malformed", "POST", "/snapshots/{snapped_snap}/action",
          b"{\"os-force_delete\": ", contains=MALFORMED),
       rc("snapshots-action-list", "POST", "/snapshots/{snapped_snap}/action",
          [{"os-force_delete": {}}])]
    + [rc(f"types-create-{i}", "POST", "/types", b) for i, b in TYPE_CREATE_BAD]
    + [rc(f"types-update-{i}", "PUT", "/types/{vtype}", b) for i, b in TYPE_UPDATE_BAD]
    + [rc(f"types-extra_specs-{i}", "POST", "/types/{vtype}/extra_specs", b)
       for i, b in EXTRA_SPECS_BAD]
    # ember serves manageable_volumes at every microversion (README, "differs on
    # purpose"; upstream: 3.8+), so its bodies are validated at every version
    + [rc(f"manageable-post-{i}@{v}", "POST", "/manageable_volumes", b, version=v)
       for i, b in MANAGE_BAD for v in (None, "3.8", "latest")]
    # upstream (resource_common_manage.py): sort keys are reference|size, dirs asc|desc
    + [rc("manageable-get-bad-sort-key", "GET", "/manageable_volumes?sort_key=bogus",
          version="3.8"),
       rc("manageable-get-bad-sort-dir", "GET", "/manageable_volumes?sort_dir=sideways",
          version="3.8"),
       rc("manageable-detail-bad-sort-key", "GET", "/manageable_volumes/detail?sort_key=id",
          version="latest")]
    + [rc(f"snapshot-manage-{i}-{p}@{v}", "POST", p, b, version=v)
       for i, b in SNAP_MANAGE_BAD for p, v in SNAP_MANAGE_PATHS]
    + [rc(f"snapshot-manage-volume-not-found-{p}@{v}", "POST", p,
          {"snapshot": {**SNAP_MANAGE_OK, "volume_id": UNKNOWN}}, code=404, contains=UNKNOWN)
       for p, v in SNAP_MANAGE_PATHS]
    + [rc(f"snapshot-manage-ref-not-found-{p}@{v}", "POST", p, {"snapshot": SNAP_MANAGE_OK}, code=404,
          contains="'nosuch' not found") for p, v in SNAP_MANAGE_PATHS]
    + [rc("manageable-snapshots-no-host", "GET", "/manageable_snapshots", version="3.8",
          contains="One and only one of cluster and host must be set"),
       rc("manageable-snapshots-cluster", "GET", "/manageable_snapshots/detail?cluster=c", version="3.8"),
       rc("manageable-snapshots-other-host", "GET", "/manageable_snapshots?host=elsewhere", code=404,
          version="3.8"),
       rc("manageable-snapshots-bad-sort-key", "GET", "/manageable_snapshots?host={host}&sort_key=bogus",
          version="3.8"),
       rc("manageable-snapshots-bad-sort-dir", "GET", "/os-snapshot-manage/detail?host={host}&sort_dir=up"),
       rc("manageable-snapshots-bad-limit", "GET", "/manageable_snapshots?host={host}&limit=-1",
          version="3.8"),
       rc("snapshot-unmanage-creating", "POST", "/snapshots/{creating_snap}/action", {"os-unmanage": None},
          contains="must be available or error to unmanage"),
       rc("snapshot-unmanage-unknown", "POST", "/snapshots/{unknown}/action", {"os-unmanage": {}}, code=404)]
)


@pytest.mark.parametrize("case", ROUTE_CASES, ids=lambda c: c.id)
def test_route_bad_input(agent, world, case):
    path = world.fill(case.path)
    kw = {}
    if isinstance(case.body, bytes):
        kw["raw"] = case.body
        body = NOBODY
    else:
        body = world.fill(case.body) if case.body is not NOBODY else NOBODY
    expect(agent, case.code, case.method, path, body, version=case.version,
           contains=case.contains, **kw)


BODY_ROUTES = [
    ("POST", "/volumes", None), ("PUT", "/volumes/{avail}", None),
    ("POST", "/volumes/{avail}/metadata", None), ("PUT", "/volumes/{avail}/metadata", None),
    ("PUT", "/volumes/{avail}/metadata/k", None), ("POST", "/snapshots", None),
    ("PUT", "/snapshots/{snapped_snap}", None), ("POST", "/snapshots/{snapped_snap}/action", None),
    ("POST", "/types", None), ("PUT", "/types/{vtype}", None),
    ("POST", "/types/{vtype}/extra_specs", None), ("POST", "/manageable_volumes", "3.8"),
    ("POST", "/os-snapshot-manage", None), ("POST", "/manageable_snapshots", "3.8"),
    ("PUT", "/os-services/freeze", None), ("PUT", "/os-services/thaw", None),
    ("PUT", "/os-services/set-log", "3.32"), ("POST", "/qos-specs", None),
    ("PUT", "/qos-specs/{unknown}", None), ("PUT", "/qos-specs/{unknown}/delete_keys", None),
    ("POST", "/types/{vtype}/encryption", None), ("PUT", "/types/{vtype}/encryption/provider", None),
]


@pytest.mark.parametrize("method,path,version", BODY_ROUTES, ids=lambda x: str(x))
@pytest.mark.parametrize("raw", [b"{", b"not json", b"{\"a\": 1}}", b"\xff",
                                 b"{\"volume\": {\"size\": NaN}}", b"{\"a\": 1,}"], ids=repr)
def test_route_malformed_json(agent, world, method, path, version, raw):
    expect(agent, 400, method, world.fill(path), raw=raw, version=version, message=MALFORMED)


@pytest.mark.parametrize("method,path,version", BODY_ROUTES, ids=lambda x: str(x))
@pytest.mark.parametrize("raw", [b"", b"[]", b"1", b"null", b"\"x\"", b"true", b"{}"], ids=repr)
def test_route_body_not_an_object_or_empty(agent, world, method, path, version, raw):
    expect(agent, 400, method, world.fill(path), raw=raw, version=version)


UNKNOWN_IDS = [UNKNOWN, "xxx"]

UNKNOWN_ID_ROUTES = [
    ("GET", "/volumes/{id}", NOBODY),
    ("PUT", "/volumes/{id}", {"volume": {"name": "x"}}),
    ("DELETE", "/volumes/{id}", NOBODY),
    ("GET", "/volumes/{id}/metadata", NOBODY),
    ("POST", "/volumes/{id}/metadata", {"metadata": {"k": "v"}}),
    ("PUT", "/volumes/{id}/metadata", {"metadata": {"k": "v"}}),
    ("GET", "/volumes/{id}/metadata/k", NOBODY),
    ("PUT", "/volumes/{id}/metadata/k", {"meta": {"k": "v"}}),
    ("DELETE", "/volumes/{id}/metadata/k", NOBODY),
    ("GET", "/snapshots/{id}", NOBODY),
    ("PUT", "/snapshots/{id}", {"snapshot": {"name": "x"}}),
    ("DELETE", "/snapshots/{id}", NOBODY),
    ("POST", "/snapshots/{id}/action", {"os-reset_status": {"status": "error"}}),
    ("POST", "/snapshots/{id}/action", {"os-force_delete": {}}),
    ("GET", "/types/{id}", NOBODY),
    ("PUT", "/types/{id}", {"volume_type": {"description": "d"}}),
    ("DELETE", "/types/{id}", NOBODY),
    ("GET", "/types/{id}/extra_specs", NOBODY),
    ("POST", "/types/{id}/extra_specs", {"extra_specs": {"k": "v"}}),
]


@pytest.mark.parametrize("ident", UNKNOWN_IDS)
@pytest.mark.parametrize("method,path,body", UNKNOWN_ID_ROUTES,
                         ids=lambda x: "-" if x is NOBODY else str(x)[:30])
def test_unknown_id_is_404(agent, method, path, body, ident):
    expect(agent, 404, method, path.replace("{id}", ident), body)


@pytest.mark.parametrize("path", ["/volumes/{id}", "/volumes/{id}/action"])
def test_unknown_id_project_less_url_is_404(agent, path):
    url = agent.endpoint + path.replace("{id}", UNKNOWN)
    body = {"os-reserve": {}} if path.endswith("action") else NOBODY
    expect(agent, 404, "POST" if body is not NOBODY else "GET", url, body)


# ------------------------------------------------------------------ 5. the sweep

REAL_ACTIONS = set(ACTIONS) | {"os-update_snapshot_status"}
VERSIONS = [None, "3.0", "3.1", "3.16", "3.40", "3.42", "3.53", "3.66", "3.68", MAX_MV, "latest"]
LITERAL = "__ember_bad_input_literal__"
# not JSON at all (RFC 8259): NaN/Infinity literals and other near-misses
BAD_LITERALS = ["NaN", "Infinity", "-Infinity", "nan", "+1", "01", ".5", "1.", "0x10",
                "undefined", "None", "True", "'x'", "1e", "--1", "-", "1e+", "tru"]
# valid JSON numbers, but wrong for every typed field (no field takes a float, and
# every integer field stops at 2147483647 and starts at 1)
BIG_LITERALS = ["1e400", "-1e400", "1" * 400, "1e308", "-1e308", str(2 ** 64),
                str(-2 ** 63 - 1), "1797693134862315700000000000000000000000000000000000"]
HUGE_NUMBERS = [1e308, -1e308, 2 ** 64, -2 ** 63 - 1, 10 ** 30, 1.7976931348623157e308,
                5e-324, -0.0]
# Bytes that can never be valid in ASCII-only JSON text (control characters are
# illegal inside strings and outside them; these others are never valid UTF-8).
GARBAGE = bytes(list(range(0x00, 0x09)) + [0x0b, 0x0c] + list(range(0x0e, 0x20))
                + [0xc0, 0xc1] + list(range(0xf5, 0x100)))
TRAILING = [b"}", b"]", b"x", b",", b"{}", b"\x00", b"null", b"\"\"", b"1"]


def unknown_action_name(rng):
    name = rng.choice(sorted(REAL_ACTIONS))
    candidates = [name.upper(), name + " ", " " + name, name.replace("-", "_"), name[:-1],
                  name + "s", "os-" + "".join(rng.choice(string.ascii_lowercase)
                                              for _ in range(rng.randint(1, 12))),
                  "", "\u00e9" + name, name.replace("os-", "OS-")]
    out = rng.choice(candidates)
    return out if out not in REAL_ACTIONS else "os-nope"


def nested(rng):
    depth = rng.choice([64, 129, 1000, 5000, 20000])
    return "[" * depth + "]" * depth


def random_string(rng, n):
    return "".join(rng.choice(string.ascii_letters) for _ in range(n))


def random_unknown_key(rng, fields):
    key = rng.choice(["bogus", "", " ", "x" * 300, random_string(rng, rng.randint(1, 10)),
                      "New_Size", "__proto__", "ключ"])
    if fields and key in fields:
        key = "bogus"
    if fields:
        for f in fields:  # near-misses of real names are unknown keys too
            if rng.random() < 0.1:
                key = f.upper() if f.upper() != f else f + "_"
    return key


def to_bytes(body, literal=None):
    data = json.dumps(body, allow_nan=False)
    if literal is not None:
        data = data.replace(json.dumps(LITERAL), literal, 1)
    return data.encode()


def byte_mutation(rng, data):
    kind = rng.choice(["truncate", "garbage", "trailing"])
    if kind == "truncate":
        return kind, data[:rng.randrange(0, len(data))]
    if kind == "garbage":
        out = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            out.insert(rng.randrange(0, len(out) + 1), rng.choice(GARBAGE))
        return kind, bytes(out)
    return kind, data + rng.choice(TRAILING)


def mutate_schema_body(rng, name, spec, base, version):
    """One schema-breaking mutation of `{name: base}`; returns (kind, body, literal)."""
    kinds = ["bad_value"] * 6 + ["inner_not_object", "deep_nest", "huge_number", "literal"]
    if not spec.extras:
        kinds += ["unknown_key"] * 2
    if spec.required:
        kinds += ["drop_required"] * 2
    vt = vtuple(version)
    gated = [f for f, (since, _) in spec.gated.items() if vt < vtuple(since)]
    if gated:
        kinds.append("gated_field")
    kind = rng.choice(kinds)
    inner = copy.deepcopy(base)
    typed = [f for f, fld in spec.fields.items()
             if fld.since is None or vt >= vtuple(fld.since)]
    literal = None
    if kind == "bad_value":
        field = rng.choice(typed)
        fld = spec.fields[field]
        choices = invalid_values(fld) + fld.loose
        if fld.maxlen is not None:
            choices.append(random_string(rng, rng.randint(fld.maxlen + 1, fld.maxlen + 400)))
        inner[field] = copy.deepcopy(rng.choice(choices))
        # sometimes break a second field as well (two invalid fields stay invalid)
        others = [f for f in typed if f != field]
        if others and rng.random() < 0.3:
            f2 = rng.choice(others)
            inner[f2] = copy.deepcopy(rng.choice(invalid_values(spec.fields[f2])))
    elif kind == "inner_not_object":
        choices = ["x", 1, 1.5, [], True, [copy.deepcopy(base)], ""]
        if not spec.nullable:
            choices.append(None)
        return kind, {name: rng.choice(choices)}, None
    elif kind in ("deep_nest", "huge_number", "literal"):
        field = rng.choice(typed)
        if kind == "huge_number":
            if rng.random() < 0.5:
                inner[field] = rng.choice(HUGE_NUMBERS)
            else:
                inner[field] = LITERAL
                literal = rng.choice(BIG_LITERALS)
        else:
            inner[field] = LITERAL
            literal = nested(rng) if kind == "deep_nest" else rng.choice(BAD_LITERALS)
    elif kind == "unknown_key":
        key = random_unknown_key(rng, spec.fields)
        inner[key] = rng.choice([1, "x", None, {}, [], True])
    elif kind == "drop_required":
        del inner[rng.choice(spec.required)]
    elif kind == "gated_field":
        f = rng.choice(gated)
        inner[f] = spec.gated[f][1]
    return kind, {name: inner}, literal


def gen_action(rng, world, targets):
    name = rng.choice(list(ACTIONS))
    spec = ACTIONS[name]
    version = rng.choice(VERSIONS)
    target = rng.choice(targets)
    base_inner = {} if spec is EMPTY else world.fill(spec.base)
    kinds = ["second_key", "wrap_list", "unknown_action", "empty_object", "top_not_object",
             "bytes"]
    if spec is not EMPTY:
        kinds += ["schema"] * 24
    kind = rng.choice(kinds)
    literal = None
    body = {name: base_inner}
    if kind == "schema":
        kind, body, literal = mutate_schema_body(rng, name, spec, base_inner, version)
    elif kind == "second_key":
        other = rng.choice([n for n in ACTIONS if n != name] + ["bogus", "volume"])
        body = {name: base_inner, other: rng.choice([{}, None, 1, base_inner])}
    elif kind == "wrap_list":
        body = [body] * rng.randint(1, 2)
    elif kind == "unknown_action":
        body = {unknown_action_name(rng): base_inner}
    elif kind == "empty_object":
        body = {}
    elif kind == "top_not_object":
        body = rng.choice(["os-reserve", 1, None, True, [], 1.5, [name]])
    data = to_bytes(body, literal)
    # envelope errors are 400 whatever the volume and version (§1.1)
    strict = kind in ("literal", "second_key", "wrap_list", "unknown_action",
                      "empty_object", "top_not_object")
    if kind == "bytes" or rng.random() < 0.1:
        bkind, data = byte_mutation(rng, data)
        kind = f"{kind}+{bkind}" if kind != "bytes" else bkind
        strict = True
    allowed = {400, 413} if strict else {400, 404, 409, 413}
    if target in (UNKNOWN, "xxx"):
        allowed.add(404)
    return dict(label=f"{name}/{kind}", method="POST", path=f"/volumes/{target}/action",
                data=data, version=version, allowed=allowed)


def gen_route(rng, world, route):
    """Invalid bodies for POST /volumes, /snapshots, /types and snapshot actions."""
    version = rng.choice(VERSIONS)
    vt = vtuple(version)
    if route == "volumes":
        outer = "volume"
        base = {"size": 1, "name": "sweep", "description": "d", "metadata": {"k": "v"}}
        name_f = F({"string", "null"}, maxlen=255)
        fields = {
            "size": F({"integer", "string"}, SIZE.invalid + [None]),
            "name": name_f, "description": name_f,
            "metadata": F({"object", "null"}, META255),
            "snapshot_id": F({"string", "null"}, BAD_UUIDS, loose=[UNKNOWN]),
            "source_volid": F({"string", "null"}, BAD_UUIDS, loose=[UNKNOWN]),
            # multiattach:true is refused (§2.6); other values are not booleans
            "multiattach": F({"boolean", "string", "null"},
                             [True, "true", "yes", "1", "on", "maybe", 2]),
            "volume_type": F({"string", "null"}, loose=["no-such-type", "t" * 256]),
        }
        unknown_ok = vt >= (3, 53)
        required = ["size"]
        path, allowed = "/volumes", {400, 404, 413}
    elif route == "snapshots":
        outer = "snapshot"
        base = {"volume_id": world["avail"], "name": "s", "description": "d", "force": True,
                "metadata": {"k": "v"}}
        fields = {
            "volume_id": F({"string", "null"}, BAD_UUIDS, loose=[UNKNOWN, None]),
            "name": F({"string", "null"}, maxlen=255),
            "description": F({"string", "null"}, maxlen=255),
            "force": BOOL, "metadata": F({"object", "null"}, META255),
        }
        unknown_ok = True
        required = ["volume_id"]
        path, allowed = "/snapshots", {400, 404, 413}
    elif route == "volume-update":
        outer = "volume"
        base = {"name": "renamed", "description": "d", "metadata": {"k": "v"}}
        fields = {"name": F({"string", "null"}, maxlen=255),
                  "description": F({"string", "null"}, maxlen=255),
                  "metadata": F({"object", "null"}, META255)}
        unknown_ok = True
        required = []
        path, allowed = f"/volumes/{rng.choice([world['avail'], world['err']])}", {400, 413}
    elif route == "types":
        outer = "volume_type"
        base = {"name": "sweep-type", "description": "d", "extra_specs": {"k": "v"},
                "os-volume-type-access:is_public": True}
        fields = {
            "name": F({"string"}, [""], maxlen=255),
            "description": F({"string", "null"}, maxlen=255),
            "extra_specs": F({"object", "null"}, META255),
            "os-volume-type-access:is_public": BOOL,
        }
        unknown_ok = True
        required = ["name"]
        path, allowed = "/types", {400, 413}
    else:  # snapshot actions
        snap = rng.choice([world["snapped_snap"], world["err_snap"], UNKNOWN])
        path, allowed = f"/snapshots/{snap}/action", {400, 404, 413}
        name = rng.choice(["os-reset_status", "os-force_delete"])
        if name == "os-reset_status":
            spec = A({"status": "available"},
                     {"status": F({"string"}, ["bogus", "", "in-use", "s" * 300])}, ["status"])
        else:
            spec = EMPTY
        kind = rng.choice(["second_key", "wrap_list", "unknown_action", "bytes"]
                          + (["schema"] * 6 if spec is not EMPTY else []))
        body = {name: {} if spec is EMPTY else dict(spec.base)}
        literal = None
        if kind == "schema":
            kind, body, literal = mutate_schema_body(rng, name, spec, body[name], version)
        elif kind == "second_key":
            body["os-reserve" if rng.random() < 0.5 else "bogus"] = {}
        elif kind == "wrap_list":
            body = [body]
        elif kind == "unknown_action":
            body = {unknown_action_name(rng): {}}
        data = to_bytes(body, literal)
        if kind == "bytes":
            kind, data = byte_mutation(rng, data)
        return dict(label=f"snapshot-action/{name}/{kind}", method="POST", path=path,
                    data=data, version=version, allowed=allowed)

    spec = A(base, fields, required=required, extras=not unknown_ok)
    kinds = ["schema"] * 8 + ["no_outer", "outer_not_object", "extra_top", "wrap_list", "bytes"]
    kind = rng.choice(kinds)
    literal = None
    if kind == "schema":
        kind, body, literal = mutate_schema_body(rng, outer, spec, base, version)
    elif kind == "no_outer":
        body = {}
    elif kind == "outer_not_object":
        body = {outer: rng.choice(["x", 1, None, [], True, [base]])}
    elif kind == "extra_top":
        body = {outer: base, rng.choice(["bogus", outer + "s", "volumes", "Volume"]): {}}
    elif kind == "wrap_list":
        body = [{outer: base}]
    else:
        body = {outer: base}
    data = to_bytes(body, literal)
    if kind == "bytes":
        kind, data = byte_mutation(rng, data)
    return dict(label=f"{route}/{kind}", method="PUT" if route == "volume-update" else "POST",
                path=path, data=data, version=version, allowed=allowed)


def gen_map(rng, world, route):
    """Invalid bodies for the key/value routes: volume metadata and extra specs."""
    outer, path = {
        "metadata": ("metadata", f"/volumes/{world['avail']}/metadata"),
        "extra_specs": ("extra_specs", f"/types/{world['vtype']}/extra_specs"),
    }[route]
    method = "PUT" if route == "metadata" and rng.random() < 0.5 else "POST"
    kind = rng.choice(["bad_map"] * 6 + ["not_object", "no_outer", "extra_top", "wrap_list",
                                          "bytes"])
    good = {"k": "v", "other": "w"}
    if kind == "bad_map":
        bad = copy.deepcopy(rng.choice(META255))
        body = {outer: {**good, **bad} if rng.random() < 0.5 else bad}
    elif kind == "not_object":
        body = {outer: rng.choice(["x", 1, [], True, 1.5, [good]])}
    elif kind == "no_outer":
        body = rng.choice([{}, {"meta": good}, good])
    elif kind == "extra_top":
        body = {outer: good, "bogus": {}}
    else:
        body = [{outer: good}]
    data = to_bytes(body)
    if kind == "bytes":
        kind, data = byte_mutation(rng, data)
    return dict(label=f"{route}/{kind}", method=method, path=path, data=data,
                version=rng.choice(VERSIONS), allowed={400, 413})


def test_generated_sweep(agent, world):
    """>10,000 invalid-by-construction bodies: all 4xx with a proper fault, the store
    and the volume files untouched, the agent alive and never panicking."""
    targets = [world[k] for k in ("avail", "snapped", "err", "attaching", "attached",
                                  "maint", "ro")] + [UNKNOWN, "xxx"]
    world["creating_snap"], world["vtype"]  # noqa: B018 -- build before the baseline
    settle(agent)
    state = snapshot_state(agent)
    rng = random.Random(20260821)
    plan = (["action"] * 8000 + ["volumes"] * 800 + ["snapshots"] * 800
            + ["types"] * 600 + ["snapshot-action"] * 400 + ["volume-update"] * 400
            + ["metadata"] * 400 + ["extra_specs"] * 300)
    rng.shuffle(plan)

    failures, statuses = [], Counter()
    t0 = time.time()
    for i, what in enumerate(plan):
        if what == "action":
            case = gen_action(rng, world, targets)
        elif what in ("metadata", "extra_specs"):
            case = gen_map(rng, world, what)
        else:
            case = gen_route(rng, world, what)
        try:
            r = agent.request(case["method"], case["path"], raw=case["data"],
                              version=case["version"])
        except requests.RequestException as exc:
            pytest.fail(f"request {i} ({case['label']}) failed: {exc!r}; agent exit "
                        f"{agent.proc.poll()}; body {case['data'][:300]!r}\n"
                        f"{agent.log()[-3000:]}")
        statuses[r.status_code] += 1
        allowed = case["allowed"]
        if len(case["data"]) > BODY_LIMIT:
            allowed = {413}
        errs = [] if r.status_code in allowed else [f"status {r.status_code} not in {sorted(allowed)}"]
        errs += fault_problems(r, r.status_code, v3=True, hdr_version=header_version(case["version"]))
        if errs:
            failures.append((case["label"], r.status_code, "; ".join(errs),
                             f"{case['method']} {case['path']} MV={case['version']} "
                             f"body={case['data'][:200]!r} -> {r.text[:200]!r}"))
    elapsed = time.time() - t0
    print(f"sweep: {len(plan)} requests in {elapsed:.1f}s, statuses {dict(statuses)}")

    assert agent.proc.poll() is None, f"agent died:\n{agent.log()[-3000:]}"
    assert "panicked" not in agent.log(), agent.log()[-5000:]
    if failures:
        by_label = Counter((f[0], f[1]) for f in failures)
        summary = "\n".join(f"  {n:5d}  {label} -> {code}"
                            for (label, code), n in by_label.most_common(40))
        examples = "\n".join(f"  [{f[0]}] {f[2]}\n      {f[3]}" for f in failures[:25])
        pytest.fail(f"{len(failures)}/{len(plan)} bad responses (statuses {dict(statuses)}):\n"
                    f"{summary}\nexamples:\n{examples}")
    assert_unchanged(agent, state, "the generated sweep")
    assert len(plan) >= 10000
    assert elapsed < 120, f"sweep took {elapsed:.0f}s"
