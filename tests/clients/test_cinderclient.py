"""python-cinderclient (library and `cinder` CLI) against a running `ember serve`
in noauth mode. See spec §6 (tempest checklist) and §7.1 (how cinderclient talks).

The library client is built as in spec §7.1: CinderNoAuthPlugin with an endpoint,
so every URL carries /v3/<project>/...; the CLI uses --os-endpoint, so its URLs
carry no project segment and it discovers versions with GET / (300).
"""

import os
import re
import time
import uuid

import pytest
import requests
from cinderclient import client as cinder_client_mod
from cinderclient import exceptions as cexc

from conftest import PROJECT, USER, make_cinder, read_at, wait_for, write_at

GiB = 1 << 30
HOST_RE = re.compile(r"^.+@file#file$")
ADMIN_MD = ("readonly", "attached_mode")


# -- helpers ----------------------------------------------------------------------

def wait_vol(c, vid, status, timeout=60):
    last = None
    deadline = time.time() + timeout
    while time.time() < deadline:
        last = c.volumes.get(vid)
        if last.status == status:
            return last
        if last.status.startswith("error") and not status.startswith("error"):
            raise AssertionError(f"volume {vid} went to {last.status}")
        time.sleep(0.05)
    raise AssertionError(f"volume {vid} never reached {status}; last {last.status}")


def wait_vol_gone(c, vid, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            v = c.volumes.get(vid)
        except cexc.NotFound:
            return
        # after the 202 the volume shows its transitional status until it is gone
        assert v.status in ("deleting", "unmanaging"), v.status
        time.sleep(0.05)
    raise AssertionError(f"volume {vid} still exists")


def wait_snap(c, sid, status, timeout=60):
    last = None
    deadline = time.time() + timeout
    while time.time() < deadline:
        last = c.volume_snapshots.get(sid)
        if last.status == status:
            return last
        assert last.status != "error", f"snapshot {sid} went to error"
        time.sleep(0.05)
    raise AssertionError(f"snapshot {sid} never reached {status}; last {last.status}")


def wait_snap_gone(c, sid, timeout=60):
    def gone():
        try:
            c.volume_snapshots.get(sid)
            return False
        except cexc.NotFound:
            return True
    wait_for(gone, timeout, what=f"snapshot {sid} gone")


def mk_volume(c, size=1, **kw):
    v = c.volumes.create(size, **kw)
    assert v.status == "creating"
    return wait_vol(c, v.id, "available")


def mk_snapshot(c, vid, **kw):
    s = c.volume_snapshots.create(vid, **kw)
    assert s.status == "creating"
    return wait_snap(c, s.id, "available")


def user_md(v):
    return {k: val for k, val in v.metadata.items() if k not in ADMIN_MD}


def host_of(v):
    return getattr(v, "os-vol-host-attr:host")


@pytest.fixture
def vol(cinder):
    """A fresh available 1 GiB volume, deleted afterwards if it still exists."""
    v = mk_volume(cinder, name=f"cc-{uuid.uuid4().hex[:8]}")
    yield v
    try:
        cur = cinder.volumes.get(v.id)
    except cexc.NotFound:
        return
    if cur.status not in ("deleting",):
        try:
            cinder.volumes.reset_state(v.id, "available", attach_status="detached")
            cinder.volumes.delete(v.id, cascade=True)
        except cexc.ClientException:
            pass


# -- versions -----------------------------------------------------------------------

def test_versions_documents(agent, cinder):
    r = requests.get(agent.root + "/", timeout=10)
    assert r.status_code == 300
    entry = r.json()["versions"][0]
    for key in ("status", "updated", "id", "links", "min_version", "version", "media-types"):
        assert key in entry, key
    assert entry["version"] == "3.71" and entry["min_version"] == "3.0"
    r = requests.get(agent.endpoint + "/", headers={"X-Auth-Token": f"{USER}:{PROJECT}"}, timeout=10)
    assert r.status_code == 200
    assert r.json()["versions"][0]["id"] == "v3.0"
    # cinderclient's own discovery (used by the CLI to negotiate the microversion)
    lo, hi = cinder_client_mod.get_server_version(agent.endpoint)
    assert (lo.get_string(), hi.get_string()) == ("3.0", "3.71")
    # services.server_api_version(): GET "" on the root URL
    versions = cinder.services.server_api_version()
    assert [(v.version, v.min_version) for v in versions] == [("3.71", "3.0")]


# -- volumes CRUD -------------------------------------------------------------------

def test_volume_create_show_list_update_delete(agent, cinder):
    name = f"crud-{uuid.uuid4().hex[:8]}"
    v = cinder.volumes.create(1, name=name, description="first", metadata={"a": "1"})
    assert v.status == "creating"
    assert v.size == 1
    v = wait_vol(cinder, v.id, "available")
    assert v.name == name and v.description == "first"
    assert v.volume_type == "__DEFAULT__"
    assert v.availability_zone == "nova"
    assert v.bootable == "false"
    assert v.attachments == []
    assert user_md(v) == {"a": "1"}
    assert HOST_RE.match(host_of(v)), host_of(v)
    assert getattr(v, "os-vol-tenant-attr:tenant_id") == PROJECT
    assert v.user_id == USER
    f = agent.volume_file(v.id)
    assert f.exists() and f.stat().st_size == GiB

    # list (summary and detail) and filters
    assert v.id in [x.id for x in cinder.volumes.list(detailed=False)]
    detail = [x for x in cinder.volumes.list() if x.id == v.id]
    assert len(detail) == 1 and detail[0].size == 1
    by_name = cinder.volumes.list(search_opts={"name": name})
    assert [x.id for x in by_name] == [v.id]

    # update
    cinder.volumes.update(v, name=name + "-x", description="second")
    v2 = cinder.volumes.get(v.id)
    assert (v2.name, v2.description) == (name + "-x", "second")

    # delete
    cinder.volumes.delete(v)
    wait_vol_gone(cinder, v.id)
    assert not f.exists()
    assert v.id not in [x.id for x in cinder.volumes.list()]


def test_volume_metadata(agent, cinder, vol):
    cinder.volumes.set_metadata(vol, {"k1": "v1", "k2": "v2"})
    assert user_md(cinder.volumes.get(vol.id)) == {"k1": "v1", "k2": "v2"}
    # at >= 3.15 cinderclient deletes a key by GET metadata + PUT the rest with If-Match
    cinder.volumes.delete_metadata(vol, ["k1"])
    assert user_md(cinder.volumes.get(vol.id)) == {"k2": "v2"}
    cinder.volumes.update_all_metadata(vol, {"x": "y", "z": "w"})
    assert user_md(cinder.volumes.get(vol.id)) == {"x": "y", "z": "w"}
    # at 3.0 it sends DELETE /volumes/{id}/metadata/{key}
    c30 = make_cinder(agent, "3.0")
    c30.volumes.delete_metadata(vol, ["z"])
    assert user_md(cinder.volumes.get(vol.id)) == {"x": "y"}
    with pytest.raises(cexc.NotFound):
        c30.volumes.delete_metadata(vol, ["nope"])


def test_metadata_etag_from_315(agent, cinder, vol):
    """cinderclient >= 3.15 deletes metadata keys by GET metadata, then PUT of the
    remaining keys with `If-Match: <Etag of the GET>`. Upstream (cinder/api/v3/
    volume_metadata.py, mv ETAGS = 3.15) answers GET with an Etag header (md5 of the
    body) and PUT with a stale If-Match with 412. Not in the spec; this is what
    gives cinderclient's read-modify-write its lost-update protection."""
    cinder.volumes.set_metadata(vol, {"a": "1"})
    r = agent.request("GET", f"/volumes/{vol.id}/metadata", version="3.15")
    assert r.status_code == 200 and r.json()["metadata"] == {"a": "1"}
    etag = r.headers.get("Etag")
    assert etag, f"no Etag on GET metadata at 3.15: {dict(r.headers)}"
    r = agent.request("PUT", f"/volumes/{vol.id}/metadata", {"metadata": {"a": "2"}},
                      version="3.15", headers={"If-Match": "0" * 32})
    assert r.status_code == 412, (r.status_code, r.text)
    assert user_md(cinder.volumes.get(vol.id)) == {"a": "1"}
    r = agent.request("PUT", f"/volumes/{vol.id}/metadata", {"metadata": {"a": "2"}},
                      version="3.15", headers={"If-Match": etag})
    assert r.status_code == 200, r.text
    assert user_md(cinder.volumes.get(vol.id)) == {"a": "2"}


def test_project_scoping(agent, cinder):
    """Volumes belong to the caller's project; list is filtered by it unless an admin
    asks for all_tenants; GET by id works across projects for an admin."""
    other = make_cinder(agent, project="fedcba9876543210fedcba9876543210")
    theirs = other.volumes.create(1, name="theirs")
    wait_vol(other, theirs.id, "available")
    assert getattr(other.volumes.get(theirs.id), "os-vol-tenant-attr:tenant_id") == \
        "fedcba9876543210fedcba9876543210"
    assert theirs.id not in [x.id for x in cinder.volumes.list()]
    assert theirs.id in [x.id for x in cinder.volumes.list(search_opts={"all_tenants": 1})]
    assert cinder.volumes.get(theirs.id).id == theirs.id
    other.volumes.delete(theirs)
    wait_vol_gone(other, theirs.id)


def test_list_limit_marker_sort(cinder):
    prefix = f"pg-{uuid.uuid4().hex[:6]}-"
    made = [mk_volume(cinder, name=prefix + str(i)) for i in range(3)]
    mine = lambda vols: [v.name for v in vols if v.name and v.name.startswith(prefix)]
    assert mine(cinder.volumes.list(sort="name:asc")) == [prefix + "0", prefix + "1", prefix + "2"]
    assert mine(cinder.volumes.list(sort="name:desc")) == [prefix + "2", prefix + "1", prefix + "0"]
    assert len(cinder.volumes.list(limit=1)) == 1
    first = cinder.volumes.list(limit=1, sort="name:desc")[0]
    after = cinder.volumes.list(marker=first.id, sort="name:desc")
    assert first.id not in [v.id for v in after]
    assert len(after) == len(cinder.volumes.list()) - 1
    for v in made:
        cinder.volumes.delete(v)
    for v in made:
        wait_vol_gone(cinder, v.id)


def test_list_metadata_filter(cinder):
    """`cinder list --metadata k=v` / search_opts={"metadata": {...}}: cinderclient
    sends ?metadata=<python dict repr>, which upstream parses with ast.literal_eval
    and matches against user metadata (all given pairs must match)."""
    tag = uuid.uuid4().hex[:8]
    hit = mk_volume(cinder, metadata={"tag": tag, "x": "1"})
    miss = mk_volume(cinder, metadata={"tag": "other"})
    got = [v.id for v in cinder.volumes.list(search_opts={"metadata": {"tag": tag}})]
    assert got == [hit.id]
    assert cinder.volumes.list(search_opts={"metadata": {"tag": tag, "x": "2"}}) == []
    for v in (hit, miss):
        cinder.volumes.delete(v)
        wait_vol_gone(cinder, v.id)


def test_list_unknown_name_or_status_is_empty(cinder, vol):
    assert cinder.volumes.list(search_opts={"name": "no-such-" + uuid.uuid4().hex}) == []
    assert cinder.volumes.list(search_opts={"status": "no-such-status"}) == []
    assert vol.id in [x.id for x in cinder.volumes.list(search_opts={"status": "available"})]


@pytest.mark.parametrize("size", [0, -1, "abc", None, 1.5])
def test_create_bad_size_400(cinder, size):
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.create(size)


def test_create_availability_zone(cinder):
    v = mk_volume(cinder, availability_zone="nova")
    assert v.availability_zone == "nova"
    cinder.volumes.delete(v)
    wait_vol_gone(cinder, v.id)
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.create(1, availability_zone="elsewhere")


def test_create_missing_references_404(cinder):
    with pytest.raises(cexc.NotFound):
        cinder.volumes.create(1, volume_type="no-such-type-" + uuid.uuid4().hex[:6])
    with pytest.raises(cexc.NotFound):
        cinder.volumes.create(1, snapshot_id=str(uuid.uuid4()))
    with pytest.raises(cexc.NotFound):
        cinder.volumes.create(1, source_volid=str(uuid.uuid4()))


def test_random_uuid_404(cinder):
    rid = str(uuid.uuid4())
    calls = [
        lambda: cinder.volumes.get(rid),
        lambda: cinder.volumes.update(rid, name="x"),
        lambda: cinder.volumes.delete(rid),
        lambda: cinder.volumes.extend(rid, 2),
        lambda: cinder.volumes.reserve(rid),
        lambda: cinder.volumes.unreserve(rid),
        lambda: cinder.volumes.attach(rid, str(uuid.uuid4()), "/dev/vdb"),
        lambda: cinder.volumes.detach(rid),
        lambda: cinder.volumes.reset_state(rid, "error"),
        lambda: cinder.volumes.set_bootable(rid, True),
        lambda: cinder.volumes.force_delete(rid),
        lambda: cinder.volume_snapshots.get(rid),
        lambda: cinder.volume_snapshots.create(rid),
        lambda: cinder.volume_snapshots.delete(rid),
    ]
    for call in calls:
        with pytest.raises(cexc.NotFound):
            call()


# -- snapshots ------------------------------------------------------------------------

def test_snapshot_crud(agent, cinder, vol):
    s = cinder.volume_snapshots.create(vol.id, name="snap1", description="d1")
    assert s.status == "creating" and s.volume_id == vol.id
    s = wait_snap(cinder, s.id, "available")
    assert s.size == 1 and s.name == "snap1" and s.description == "d1"
    assert getattr(s, "os-extended-snapshot-attributes:progress") == "100%"
    assert getattr(s, "os-extended-snapshot-attributes:project_id") == PROJECT
    assert (agent.data_dir / "snapshots" / f"snapshot-{s.id}").exists()
    assert s.id in [x.id for x in cinder.volume_snapshots.list()]
    assert s.id in [x.id for x in cinder.volume_snapshots.list(detailed=False)]
    cinder.volume_snapshots.update(s, name="snap1b", description="d2")
    s2 = cinder.volume_snapshots.get(s.id)
    assert (s2.name, s2.description) == ("snap1b", "d2")
    # a volume with a snapshot cannot be deleted without cascade
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.delete(vol)
    cinder.volume_snapshots.delete(s)
    wait_snap_gone(cinder, s.id)
    assert not (agent.data_dir / "snapshots" / f"snapshot-{s.id}").exists()


def test_snapshot_reset_status_and_force_delete(agent, cinder, vol):
    """POST /snapshots/{id}/action: os-reset_status and os-force_delete (admin)."""
    s = mk_snapshot(cinder, vol.id)
    cinder.volume_snapshots.reset_state(s, "creating")
    assert cinder.volume_snapshots.get(s.id).status == "creating"
    with pytest.raises(cexc.BadRequest):  # delete needs available or error
        cinder.volume_snapshots.delete(s)
    cinder.volume_snapshots.reset_state(s, "error")
    assert cinder.volume_snapshots.get(s.id).status == "error"
    cinder.volume_snapshots.reset_state(s, "creating")
    cinder.volume_snapshots.delete(s, force=True)  # {"os-force_delete": null}
    wait_snap_gone(cinder, s.id)
    assert not (agent.data_dir / "snapshots" / f"snapshot-{s.id}").exists()
    with pytest.raises(cexc.NotFound):
        cinder.volume_snapshots.reset_state(str(uuid.uuid4()), "error")


@pytest.mark.parametrize("status", ["error", "maintenance"])
def test_snapshot_of_volume_in_bad_status_400(cinder, vol, status):
    cinder.volumes.reset_state(vol, status)
    with pytest.raises(cexc.BadRequest):
        cinder.volume_snapshots.create(vol.id)
    cinder.volumes.reset_state(vol, "available")
    assert not [s for s in cinder.volume_snapshots.list() if s.volume_id == vol.id]


def test_snapshot_of_in_use_volume_force(agent, cinder, vol):
    c30 = make_cinder(agent, "3.0")
    cinder.volumes.attach(vol, str(uuid.uuid4()), "/dev/vdb")
    wait_vol(cinder, vol.id, "in-use")
    with pytest.raises(cexc.BadRequest):
        c30.volume_snapshots.create(vol.id, force=False)
    snaps = [c30.volume_snapshots.create(vol.id, force=True) for _ in range(3)]
    for s in snaps:
        wait_snap(cinder, s.id, "available")
    # delete in mixed order
    for s in (snaps[1], snaps[0], snaps[2]):
        cinder.volume_snapshots.delete(s)
    for s in snaps:
        wait_snap_gone(cinder, s.id)
    cinder.volumes.detach(vol)
    wait_vol(cinder, vol.id, "available")


def test_create_from_snapshot_and_clone_copy_data(agent, cinder, vol):
    data = b"SNAP-DATA-" + os.urandom(1000)
    write_at(agent.volume_file(vol.id), 12345, data)
    snap = mk_snapshot(cinder, vol.id)
    from_snap = cinder.volumes.create(2, snapshot_id=snap.id)
    from_snap = wait_vol(cinder, from_snap.id, "available")
    assert from_snap.snapshot_id == snap.id and from_snap.size == 2
    assert agent.volume_file(from_snap.id).stat().st_size == 2 * GiB
    assert read_at(agent.volume_file(from_snap.id), 12345, len(data)) == data
    # size may be omitted (null) with a source: it takes the snapshot's size
    sized = wait_vol(cinder, cinder.volumes.create(None, snapshot_id=snap.id).id, "available")
    assert sized.size == 1
    clone = wait_vol(cinder, cinder.volumes.create(1, source_volid=vol.id).id, "available")
    assert clone.source_volid == vol.id
    assert read_at(agent.volume_file(clone.id), 12345, len(data)) == data
    for v in (from_snap, sized, clone):
        cinder.volumes.delete(v)
        wait_vol_gone(cinder, v.id)
    cinder.volume_snapshots.delete(snap)
    wait_snap_gone(cinder, snap.id)


def test_cascade_delete(agent, cinder):
    v = mk_volume(cinder)
    s1 = mk_snapshot(cinder, v.id)
    s2 = mk_snapshot(cinder, v.id)
    cinder.volumes.delete(v, cascade=True)
    wait_vol_gone(cinder, v.id)
    for s in (s1, s2):
        wait_snap_gone(cinder, s.id)
        assert not (agent.data_dir / "snapshots" / f"snapshot-{s.id}").exists()
    assert not agent.volume_file(v.id).exists()


# -- volume types ----------------------------------------------------------------------

def test_volume_types(cinder):
    default = cinder.volume_types.default()
    assert default.name == "__DEFAULT__"
    assert "__DEFAULT__" in [t.name for t in cinder.volume_types.list()]

    name = f"type-{uuid.uuid4().hex[:8]}"
    t = cinder.volume_types.create(name, description="a type")
    assert t.name == name and t.is_public is True
    assert name in [x.name for x in cinder.volume_types.list()]
    assert cinder.volume_types.get(t.id).name == name

    # Scoped keys: Cinder's capabilities filter ignores them, so the type's
    # volumes still find the pool (an unscoped key the pool lacks would not).
    t.set_keys({"note:k1": "v1", "note:k2": "v2"})
    assert t.get_keys() == {"note:k1": "v1", "note:k2": "v2"}
    t.unset_keys(["note:k1"])
    assert cinder.volume_types.get(t.id).get_keys() == {"note:k2": "v2"}

    cinder.volume_types.update(t, description="changed")
    assert cinder.volume_types.get(t.id).description == "changed"

    v = mk_volume(cinder, volume_type=name)
    assert v.volume_type == name
    v_by_id = mk_volume(cinder, volume_type=t.id)
    assert v_by_id.volume_type == name
    for x in (v, v_by_id):
        cinder.volumes.delete(x)
        wait_vol_gone(cinder, x.id)

    cinder.volume_types.delete(t)
    with pytest.raises(cexc.NotFound):
        cinder.volume_types.get(t.id)


# -- actions ---------------------------------------------------------------------------

def test_reset_status(cinder, vol):
    for st in ("error", "available", "maintenance"):
        cinder.volumes.reset_state(vol, st)
        assert cinder.volumes.get(vol.id).status == st
    cinder.volumes.reset_state(vol, "available")
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.reset_state(vol, "deleting")
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.reset_state(vol, "not-a-status")
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.reset_state(vol, None)  # empty body → 400
    # in-use without attachments → 400
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.reset_state(vol, "in-use")
    cinder.volumes.reset_state(vol, None, migration_status="migrating")
    assert cinder.volumes.get(vol.id).migration_status == "migrating"
    cinder.volumes.reset_state(vol, None, migration_status="none")
    assert cinder.volumes.get(vol.id).migration_status is None
    assert cinder.volumes.get(vol.id).status == "available"


def test_image_metadata(cinder, vol):
    md = {"image_id": str(uuid.uuid4()), "image_name": "cirros",
          "kernel_id": str(uuid.uuid4()), "ramdisk_id": str(uuid.uuid4())}
    resp, body = cinder.volumes.set_image_metadata(vol, md)
    assert resp.status_code == 200
    assert body["metadata"] == md
    assert cinder.volumes.get(vol.id).volume_image_metadata == md
    resp, body = cinder.volumes.set_image_metadata(vol, {"extra": "x"})
    assert body["metadata"] == dict(md, extra="x")  # merged, nothing removed

    cinder.volumes.delete_image_metadata(vol, ["ramdisk_id"])
    resp, body = cinder.volumes.show_image_metadata(vol)
    assert resp.status_code == 200
    expected = {k: v for k, v in md.items() if k != "ramdisk_id"}
    expected["extra"] = "x"
    assert body["metadata"] == expected
    with pytest.raises(cexc.NotFound):
        cinder.volumes.delete_image_metadata(vol, ["ramdisk_id"])

    cinder.volumes.reset_state(vol, "maintenance")
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.set_image_metadata(vol, {"a": "b"})
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.delete_image_metadata(vol, ["extra"])
    cinder.volumes.reset_state(vol, "available")


def test_attach_detach(cinder, vol):
    server = str(uuid.uuid4())
    resp, _ = cinder.volumes.attach(vol, server, "/dev/vdc")
    assert resp.status_code == 202
    v = wait_vol(cinder, vol.id, "in-use")
    assert len(v.attachments) == 1
    a = v.attachments[0]
    assert a["device"] == "/dev/vdc"
    assert a["server_id"] == server
    assert a["id"] == vol.id and a["volume_id"] == vol.id
    assert a["attachment_id"]
    assert v.metadata.get("attached_mode") == "rw"
    # non-multiattach volume already in-use → 400
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.attach(vol, str(uuid.uuid4()), "/dev/vdd")
    # attached volume cannot be deleted or force-deleted
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.delete(vol)
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.force_delete(vol)
    resp, _ = cinder.volumes.detach(vol)
    assert resp.status_code == 202
    v = wait_vol(cinder, vol.id, "available")
    assert v.attachments == []
    assert "attached_mode" not in v.metadata

    # host attach with an explicit attachment id on detach
    cinder.volumes.attach(vol, None, "/dev/sdb", host_name="node-1")
    v = wait_vol(cinder, vol.id, "in-use")
    att = v.attachments[0]
    assert att["server_id"] is None
    assert att["host_name"] == "node-1"
    cinder.volumes.detach(vol, att["attachment_id"])
    assert wait_vol(cinder, vol.id, "available").attachments == []


def test_legacy_nova_attach_flow(cinder, vol):
    """reserve → attach → begin_detaching → detach, as Nova's legacy flow does."""
    server = str(uuid.uuid4())
    cinder.volumes.reserve(vol)
    assert cinder.volumes.get(vol.id).status == "attaching"
    cinder.volumes.attach(vol, server, "/dev/vdb")
    v = wait_vol(cinder, vol.id, "in-use")
    assert v.attachments[0]["server_id"] == server
    cinder.volumes.begin_detaching(vol)
    assert cinder.volumes.get(vol.id).status == "detaching"
    cinder.volumes.detach(vol, v.attachments[0]["attachment_id"])
    v = wait_vol(cinder, vol.id, "available")
    assert v.attachments == []


def test_reset_attach_status_detached_clears_attachments(cinder, vol):
    cinder.volumes.attach(vol, str(uuid.uuid4()), "/dev/vdb")
    wait_vol(cinder, vol.id, "in-use")
    cinder.volumes.reset_state(vol, "error")
    assert cinder.volumes.get(vol.id).status == "error"
    cinder.volumes.reset_state(vol, None, attach_status="detached")
    v = cinder.volumes.get(vol.id)
    assert v.attachments == [] and v.status == "available"
    assert "attached_mode" not in v.metadata


def test_attach_in_maintenance_400(cinder, vol):
    cinder.volumes.reset_state(vol, "maintenance")
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.attach(vol, str(uuid.uuid4()), "/dev/vdb")
    cinder.volumes.reset_state(vol, "available")


def test_reserve_unreserve(cinder, vol):
    resp, _ = cinder.volumes.reserve(vol)
    assert resp.status_code == 202
    assert cinder.volumes.get(vol.id).status == "attaching"
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.reserve(vol)
    cinder.volumes.unreserve(vol)
    assert cinder.volumes.get(vol.id).status == "available"
    # unreserve of an available volume is a silent no-op
    resp, _ = cinder.volumes.unreserve(vol)
    assert resp.status_code == 202
    assert cinder.volumes.get(vol.id).status == "available"


def test_begin_and_roll_detaching(cinder, vol):
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.begin_detaching(vol)
    cinder.volumes.attach(vol, str(uuid.uuid4()), "/dev/vdb")
    wait_vol(cinder, vol.id, "in-use")
    resp, _ = cinder.volumes.begin_detaching(vol)
    assert resp.status_code == 202
    assert cinder.volumes.get(vol.id).status == "detaching"
    resp, _ = cinder.volumes.roll_detaching(vol)
    assert resp.status_code == 202
    assert cinder.volumes.get(vol.id).status == "in-use"
    # roll_detaching outside detaching: no-op
    cinder.volumes.roll_detaching(vol)
    assert cinder.volumes.get(vol.id).status == "in-use"
    cinder.volumes.detach(vol)
    wait_vol(cinder, vol.id, "available")


def test_set_bootable(cinder, vol):
    resp, _ = cinder.volumes.set_bootable(vol, True)
    assert resp.status_code == 200
    assert cinder.volumes.get(vol.id).bootable == "true"
    cinder.volumes.set_bootable(vol, "False")
    assert cinder.volumes.get(vol.id).bootable == "false"
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.set_bootable(vol, "maybe")


def test_readonly_volume_attaches_ro(cinder, vol):
    cinder.volumes.update_readonly_flag(vol, True)
    cinder.volumes.attach(vol, str(uuid.uuid4()), "/dev/vdb", mode="ro")
    v = wait_vol(cinder, vol.id, "in-use")
    assert v.metadata["attached_mode"] == "ro" and v.metadata["readonly"] == "True"
    cinder.volumes.detach(vol)
    wait_vol(cinder, vol.id, "available")
    cinder.volumes.update_readonly_flag(vol, False)


def test_update_readonly_flag(cinder, vol):
    resp, _ = cinder.volumes.update_readonly_flag(vol, True)
    assert resp.status_code == 202
    assert cinder.volumes.get(vol.id).metadata["readonly"] == "True"
    # read-only volume cannot be attached rw
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.attach(vol, str(uuid.uuid4()), "/dev/vdb", mode="rw")
    cinder.volumes.update_readonly_flag(vol, False)
    assert cinder.volumes.get(vol.id).metadata["readonly"] == "False"
    cinder.volumes.reset_state(vol, "error")
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.update_readonly_flag(vol, True)
    cinder.volumes.reset_state(vol, "available")


@pytest.mark.parametrize("status", ["creating", "attaching", "error", "maintenance"])
def test_force_delete_from_status(agent, cinder, vol, status):
    cinder.volumes.reset_state(vol, status)
    assert cinder.volumes.get(vol.id).status == status
    resp, _ = cinder.volumes.force_delete(vol)
    assert resp.status_code == 202
    wait_vol_gone(cinder, vol.id)
    assert not agent.volume_file(vol.id).exists()


def test_force_delete_with_snapshot_400(cinder, vol):
    s = mk_snapshot(cinder, vol.id)
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.force_delete(vol)
    cinder.volume_snapshots.delete(s)
    wait_snap_gone(cinder, s.id)


def test_unmanage_and_manage_back(agent, cinder, vol):
    old_file = agent.volume_file(vol.id)
    host = host_of(vol)
    resp, _ = cinder.volumes.unmanage(vol)
    assert resp.status_code == 202
    wait_vol_gone(cinder, vol.id)
    assert vol.id not in [x.id for x in cinder.volumes.list()]
    assert old_file.exists(), "unmanage must keep the backing file"

    listing = cinder.volumes.list_manageable(host)
    entries = [m for m in listing if m.reference == {"source-name": f"volume-{vol.id}"}]
    assert len(entries) == 1, [m.reference for m in listing]
    assert entries[0].safe_to_manage is True
    assert entries[0].size == 1

    # cinderclient's manage() posts to /os-volume-manage
    new = cinder.volumes.manage(host, {"source-name": f"volume-{vol.id}"}, name="managed")
    assert new.id != vol.id
    assert new.status in ("creating", "available")  # "managing" is shown as "creating"
    new = wait_vol(cinder, new.id, "available")
    assert new.size == 1 and new.name == "managed"
    assert new.volume_type == "__DEFAULT__"
    assert new.availability_zone == "nova"
    assert host_of(new) == host
    assert agent.volume_file(new.id).exists()
    assert not old_file.exists()

    listing = cinder.volumes.list_manageable(host)
    entry = [m for m in listing if m.reference == {"source-name": f"volume-{new.id}"}]
    assert len(entry) == 1 and entry[0].safe_to_manage is False and entry[0].cinder_id == new.id
    # managing an already managed volume fails
    with pytest.raises(cexc.ClientException) as e:
        cinder.volumes.manage(host, {"source-name": f"volume-{new.id}"})
    assert e.value.code == 400
    cinder.volumes.delete(new)
    wait_vol_gone(cinder, new.id)


def test_unmanage_with_snapshot_400(cinder, vol):
    s = mk_snapshot(cinder, vol.id)
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.unmanage(vol)
    cinder.volume_snapshots.delete(s)
    wait_snap_gone(cinder, s.id)


def test_extend(agent, cinder, vol):
    resp, _ = cinder.volumes.extend(vol, 2)
    assert resp.status_code == 202
    v = wait_for(lambda: (lambda x: x if x.status == "available" and x.size == 2 else None)(
        cinder.volumes.get(vol.id)), what="extend to 2")
    assert v.size == 2
    st = agent.volume_file(vol.id).stat()
    assert st.st_size == 2 * GiB
    assert st.st_blocks * 512 < 64 * 1024 * 1024, "extend must keep the file sparse"
    for bad in (0, "abc", None, 2, 1, -3):
        with pytest.raises(cexc.BadRequest):
            cinder.volumes.extend(vol, bad)
    assert cinder.volumes.get(vol.id).size == 2


def test_extend_with_snapshot(agent, cinder, vol):
    s = mk_snapshot(cinder, vol.id)
    cinder.volumes.extend(vol, 3)
    wait_for(lambda: cinder.volumes.get(vol.id).size == 3, what="size 3")
    assert wait_vol(cinder, vol.id, "available").size == 3
    assert agent.volume_file(vol.id).stat().st_size == 3 * GiB
    cinder.volume_snapshots.delete(s)
    wait_snap_gone(cinder, s.id)


def test_extend_not_available_400(cinder, vol):
    cinder.volumes.reserve(vol)
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.extend(vol, 2)
    cinder.volumes.unreserve(vol)


def test_extend_in_use_below_342_400(agent, cinder, vol):
    c341 = make_cinder(agent, "3.41")
    cinder.volumes.attach(vol, str(uuid.uuid4()), "/dev/vdb")
    wait_vol(cinder, vol.id, "in-use")
    with pytest.raises(cexc.BadRequest):
        c341.volumes.extend(vol, 2)
    assert cinder.volumes.get(vol.id).size == 1
    # from 3.42 an in-use volume extends online and stays in use
    cinder.volumes.extend(vol, 2)
    done = wait_vol(cinder, vol.id, "in-use")
    assert done.size == 2
    assert agent.volume_file(vol.id).stat().st_size == 2 << 30
    cinder.volumes.detach(vol)
    wait_vol(cinder, vol.id, "available")


def test_revert_to_snapshot(agent, cinder, vol):
    path = agent.volume_file(vol.id)
    original = b"ORIGINAL-" + os.urandom(4087)
    write_at(path, 0, original)
    write_at(path, 512 * 1024 * 1024, original)
    snap = mk_snapshot(cinder, vol.id)
    snap_file = agent.data_dir / "snapshots" / f"snapshot-{snap.id}"
    assert read_at(snap_file, 0, len(original)) == original
    write_at(path, 0, b"X" * len(original))
    write_at(path, 512 * 1024 * 1024, b"Y" * len(original))
    assert read_at(path, 0, len(original)) != original

    resp, _ = cinder.volumes.revert_to_snapshot(vol, snap)
    assert resp.status_code == 202
    wait_vol(cinder, vol.id, "available")
    wait_snap(cinder, snap.id, "available")
    assert read_at(path, 0, len(original)) == original
    assert read_at(path, 512 * 1024 * 1024, len(original)) == original
    assert cinder.volumes.get(vol.id).size == 1
    assert cinder.volume_snapshots.get(snap.id).status == "available"  # snapshot survives

    # only the latest snapshot can be used
    snap2 = mk_snapshot(cinder, vol.id)
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.revert_to_snapshot(vol, snap)
    # revert is not available below 3.40
    c339 = make_cinder(agent, "3.39")
    with pytest.raises(cexc.NotFound):
        c339.volumes.api.client.post(f"/volumes/{vol.id}/action",
                                     body={"revert": {"snapshot_id": snap2.id}})
    # extend then revert → 400
    cinder.volumes.extend(vol, 2)
    wait_for(lambda: cinder.volumes.get(vol.id).size == 2, what="size 2")
    wait_vol(cinder, vol.id, "available")
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.revert_to_snapshot(vol, snap2)
    for s in (snap2, snap):
        cinder.volume_snapshots.delete(s)
        wait_snap_gone(cinder, s.id)


def test_revert_conflicting_status_409(cinder, vol):
    snap = mk_snapshot(cinder, vol.id)
    cinder.volumes.reset_state(vol, "error")
    with pytest.raises(cexc.ClientException) as e:  # cinderclient has no class for 409
        cinder.volumes.revert_to_snapshot(vol, snap)
    assert e.value.code == 409
    cinder.volumes.reset_state(vol, "available")
    cinder.volume_snapshots.delete(snap)
    wait_snap_gone(cinder, snap.id)


def test_retype_never(cinder, vol):
    t1 = cinder.volume_types.create(f"rt1-{uuid.uuid4().hex[:6]}")
    t2 = cinder.volume_types.create(f"rt2-{uuid.uuid4().hex[:6]}")
    v = mk_volume(cinder, volume_type=t1.name)
    before = cinder.volumes.get(v.id)
    resp, _ = cinder.volumes.retype(v, t2.name, "never")
    assert resp.status_code == 202
    after = wait_for(lambda: (lambda x: x if x.volume_type == t2.name and x.status == "available"
                              else None)(cinder.volumes.get(v.id)), what="retype")
    assert after.id == before.id
    assert host_of(after) == host_of(before)
    assert after.size == before.size and after.name == before.name
    assert after.migration_status is None
    assert getattr(after, "os-vol-mig-status-attr:migstat") is None
    # same type again → 400; unknown type → 404
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.retype(v, t2.name, "never")
    with pytest.raises(cexc.NotFound):
        cinder.volumes.retype(v, "no-such-type-" + uuid.uuid4().hex[:6], "never")
    # by id works too
    cinder.volumes.retype(v, t1.id, "never")
    wait_for(lambda: cinder.volumes.get(v.id).volume_type == t1.name, what="retype back")
    wait_vol(cinder, v.id, "available")
    cinder.volumes.delete(v)
    wait_vol_gone(cinder, v.id)
    for t in (t1, t2):
        cinder.volume_types.delete(t)


def test_retype_needing_migration(cinder, vol):
    """A type bound to a backend no pool of this agent serves: refused with 400
    whatever the policy (test_pools.py migrates to one that is served); the
    volume keeps its type and status."""
    t = cinder.volume_types.create(f"far-{uuid.uuid4().hex[:6]}")
    t.set_keys({"volume_backend_name": "some-other-backend"})
    with pytest.raises(cexc.BadRequest, match="No pool"):
        cinder.volumes.retype(vol, t.name, "on-demand")
    with pytest.raises(cexc.BadRequest):
        cinder.volumes.retype(vol, t.name, "never")
    v = cinder.volumes.get(vol.id)
    assert v.volume_type == vol.volume_type and v.status == "available"
    # a type naming this backend is a plain same-backend retype
    same = cinder.volume_types.create(f"near-{uuid.uuid4().hex[:6]}")
    same.set_keys({"volume_backend_name": "file"})
    cinder.volumes.retype(vol, same.name, "on-demand")
    wait_for(lambda: cinder.volumes.get(vol.id).volume_type == same.name, what="retype")
    wait_vol(cinder, vol.id, "available")
    cinder.volume_types.delete(t)


# -- connections without a target, migration without a destination ----------------------

def test_initialize_connection_without_a_target_is_400(cinder, vol):
    """This module's agent serves no target ([target] iscsi = "none"): the
    connection is refused with the reason, and nothing changes. The export path
    itself is in test_exports_tgt.py."""
    connector = {"initiator": "iqn.1994-05.com.redhat:abc", "host": "node2",
                 "ip": "192.0.2.5", "platform": "x86_64", "os_type": "linux", "multipath": False}
    with pytest.raises(cexc.BadRequest) as e:
        cinder.volumes.initialize_connection(vol, connector)
    assert "serves no iscsi target" in str(e.value)
    assert cinder.volumes.get(vol.id).status == "available"


def test_terminate_connection_without_an_export_is_a_no_op(cinder, vol):
    cinder.volumes.terminate_connection(vol, {"initiator": "iqn.1994-05.com.redhat:abc"})
    assert cinder.volumes.get(vol.id).status == "available"


def test_migrate_volume_501(cinder, vol):
    with pytest.raises(cexc.ClientException) as e:
        cinder.volumes.migrate_volume(vol, "otherhost@lvm#pool", False, False)
    assert e.value.code in (400, 501)  # 400 when the destination is unknown


# -- image and migration actions, raw HTTP: bad body → 400

CONNECTOR = {"initiator": "iqn.1994-05.com.redhat:abc", "host": "node2", "ip": "192.0.2.5",
             "platform": "x86_64", "os_type": "linux", "multipath": False}


def assert_501(r):
    assert r.status_code == 501, (r.status_code, r.text)
    fault = r.json()["notImplemented"]
    assert fault["code"] == 501 and fault["message"]


def assert_400(r):
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.json()["badRequest"]["code"] == 400


CONNECTION = [
    # (action, valid inner body, [invalid inner bodies], what the valid one answers here)
    ("os-initialize_connection", {"connector": CONNECTOR},
     [{}, {"connector": None}, {"connector": CONNECTOR, "bogus": 1}], 400),  # no target here
    ("os-terminate_connection", {"connector": CONNECTOR},
     [{}, {"connector": CONNECTOR, "bogus": 1}], 202),
    ("os-force_detach", {"attachment_id": None, "connector": None},
     [{"attachment_id": 12}, {"bogus": 1}], 202),
]


@pytest.mark.parametrize("action,valid,invalid,code", CONNECTION, ids=[x[0] for x in CONNECTION])
def test_connection_action_raw(agent, cinder, vol, action, valid, invalid, code):
    for bad in invalid:
        assert_400(agent.action(vol.id, {action: bad}))
    r = agent.action(vol.id, {action: valid})
    assert r.status_code == code, r.text
    v = cinder.volumes.get(vol.id)
    assert v.status == "available" and v.attachments == []
    r = agent.action(str(uuid.uuid4()), {action: valid})
    assert r.status_code == 404 and r.json()["itemNotFound"]["code"] == 404, r.text


LATER = [
    # (action, valid inner body, [invalid inner bodies], microversion)
    ("os-volume_upload_image", {"image_name": "img", "disk_format": "raw",
                                "container_format": "bare"},
     [{}, {"image_name": ""}, {"image_name": "img", "disk_format": "exe"},
      {"image_name": "img", "visibility": "public"}], None),
    ("os-reimage", {"image_id": "6f1c4c1e-3b2a-4a11-9a43-0b8d9d0c2f11"},
     [{}, {"image_id": "not-a-uuid"}, {"image_id": "6f1c4c1e-3b2a-4a11-9a43-0b8d9d0c2f11",
                                       "reimage_reserved": "maybe"}], "3.68"),
]


@pytest.mark.parametrize("action,valid,invalid,mv", LATER, ids=[x[0] for x in LATER])
def test_image_action_raw(agent, cinder, vol, action, valid, invalid, mv):
    """Bad bodies are 400; the valid upload runs (test_images.py checks its bytes),
    the valid reimage names no image in the store: 404."""
    for bad in invalid:
        assert_400(agent.action(vol.id, {action: bad}, version=mv))
    r = agent.action(vol.id, {action: valid}, version=mv)
    if action == "os-reimage":
        assert r.status_code == 404 and "Image" in r.json()["itemNotFound"]["message"], r.text
    else:
        assert r.status_code == 202, r.text
        wait_vol(cinder, vol.id, "available")
    v = cinder.volumes.get(vol.id)
    assert v.status == "available" and v.attachments == []
    r = agent.action(str(uuid.uuid4()), {action: valid}, version=mv)
    assert r.status_code == 404 and r.json()["itemNotFound"]["code"] == 404, r.text


def test_extend_volume_id_none_404(agent):
    r = agent.action("None", {"os-extend": {"new_size": 2}})
    assert r.status_code == 404, r.text


def test_reimage_below_368_404(agent, vol):
    r = agent.action(vol.id, {"os-reimage": {"image_id": str(uuid.uuid4())}}, version="3.67")
    assert r.status_code == 404, r.text


def test_migrate_raw(agent, cinder, vol):
    assert_400(agent.action(vol.id, {"os-migrate_volume": {}}))  # host required below 3.16
    assert_400(agent.action(vol.id, {"os-migrate_volume": {"host": "h@b#p", "cluster": "c"}},
                            version="3.16"))  # only one of host/cluster
    assert_400(agent.action(vol.id, {"os-migrate_volume": {"host": "h@b#p",
                                                           "force_host_copy": "maybe"}}))
    r = agent.action(vol.id, {"os-migrate_volume": {"host": "otherhost@lvm#pool"}})
    assert r.status_code == 400 and "No available service named 'otherhost@lvm#pool'" in r.text, r.text
    assert cinder.volumes.get(vol.id).migration_status is None


def test_migrate_completion_raw(agent, cinder, vol):
    other = mk_volume(cinder)
    assert_400(agent.action(vol.id, {"os-migrate_volume_completion": {}}))
    assert_400(agent.action(vol.id, {"os-migrate_volume_completion": {"new_volume": "nope"}}))
    r = agent.action(vol.id, {"os-migrate_volume_completion": {"new_volume": str(uuid.uuid4())}})
    assert r.status_code == 404, r.text
    # Neither migrating: Nova's swap recorded, the new volume's id saved.
    r = agent.action(vol.id, {"os-migrate_volume_completion": {"new_volume": other.id}})
    assert r.status_code == 200 and r.json() == {"save_volume_id": other.id}, r.text
    cinder.volumes.delete(other)
    wait_vol_gone(cinder, other.id)


def test_extend_in_use_raw(agent, cinder, vol):
    cinder.volumes.attach(vol, str(uuid.uuid4()), "/dev/vdb")
    wait_vol(cinder, vol.id, "in-use")
    assert_400(agent.action(vol.id, {"os-extend": {"new_size": "abc"}}, version="3.42"))
    assert_400(agent.action(vol.id, {"os-extend": {"new_size": 1}}, version="3.42"))
    assert_400(agent.action(vol.id, {"os-extend": {"new_size": 2}}, version="3.41"))
    r = agent.action(vol.id, {"os-extend": {"new_size": 2}}, version="3.42")
    assert r.status_code == 202, r.text
    assert wait_vol(cinder, vol.id, "in-use").size == 2
    cinder.volumes.detach(vol)
    assert wait_vol(cinder, vol.id, "available").size == 2


# -- the `cinder` CLI (version discovery via GET /, project-less URLs) -------------------

def cli_field(out, field):
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] == field:
            return cells[1]
    raise AssertionError(f"no field {field} in:\n{out}")


def test_cli_create_list_extend_show_delete(agent, cinder_cli):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    out = cinder_cli("create", "--name", name, "1").stdout
    vid = cli_field(out, "id")
    assert cli_field(out, "size") == "1"
    wait_for(lambda: cli_field(cinder_cli("show", vid).stdout, "status") == "available",
             what="cli volume available")
    listing = cinder_cli("list").stdout
    assert vid in listing and name in listing
    cinder_cli("extend", vid, "2")
    wait_for(lambda: (lambda o: cli_field(o, "size") == "2" and cli_field(o, "status") == "available")(
        cinder_cli("show", vid).stdout), what="cli extend")
    assert agent.volume_file(vid).stat().st_size == 2 * GiB
    # a failing command exits non-zero and names the error
    bad = cinder_cli("extend", vid, "1", check=False)
    assert bad.returncode != 0 and "400" in bad.stderr
    cinder_cli("delete", vid)
    wait_for(lambda: cinder_cli("show", vid, check=False).returncode != 0, what="cli delete")


def test_cli_reset_state_bootable_readonly_force_delete(agent, cinder_cli, cinder):
    out = cinder_cli("create", "1").stdout
    vid = cli_field(out, "id")
    wait_vol(cinder, vid, "available")
    cinder_cli("set-bootable", vid, "true")
    assert cli_field(cinder_cli("show", vid).stdout, "bootable") == "true"
    cinder_cli("readonly-mode-update", vid, "true")
    assert cinder.volumes.get(vid).metadata["readonly"] == "True"
    cinder_cli("reset-state", "--state", "error", vid)
    assert cli_field(cinder_cli("show", vid).stdout, "status") == "error"
    cinder_cli("force-delete", vid)
    wait_vol_gone(cinder, vid)
    assert not agent.volume_file(vid).exists()


def test_cli_types_and_snapshots(cinder_cli, cinder):
    assert "__DEFAULT__" in cinder_cli("type-list").stdout
    assert "__DEFAULT__" in cinder_cli("type-default").stdout
    vid = cli_field(cinder_cli("create", "1").stdout, "id")
    wait_vol(cinder, vid, "available")
    sid = cli_field(cinder_cli("snapshot-create", "--name", "clisnap", vid).stdout, "id")
    wait_snap(cinder, sid, "available")
    assert sid in cinder_cli("snapshot-list").stdout
    cinder_cli("snapshot-delete", sid)
    wait_snap_gone(cinder, sid)
    cinder_cli("delete", vid)
    wait_vol_gone(cinder, vid)


def test_cli_types_retype_image_metadata_revert(agent, cinder_cli, cinder):
    tname = f"clitype-{uuid.uuid4().hex[:6]}"
    cinder_cli("type-create", tname)
    cinder_cli("type-key", tname, "set", "color=blue")
    assert "color" in cinder_cli("extra-specs-list").stdout
    name = f"clivol-{uuid.uuid4().hex[:6]}"
    vid = cli_field(cinder_cli("create", "--name", name, "1").stdout, "id")
    wait_vol(cinder, vid, "available")
    # the CLI finds volumes by name too (GET by id → 404, then list ?name=)
    assert cli_field(cinder_cli("show", name).stdout, "id") == vid
    cinder_cli("retype", name, tname)
    wait_for(lambda: cinder.volumes.get(vid).volume_type == tname, what="cli retype")
    wait_vol(cinder, vid, "available")
    cinder_cli("image-metadata", vid, "set", "image_name=cirros", "os_distro=cirros")
    out = cinder_cli("image-metadata-show", vid).stdout
    assert "image_name" in out and "os_distro" in out
    cinder_cli("image-metadata", vid, "unset", "os_distro")
    assert cinder.volumes.get(vid).volume_image_metadata == {"image_name": "cirros"}

    path = agent.volume_file(vid)
    write_at(path, 0, b"cli-original")
    sid = cli_field(cinder_cli("snapshot-create", vid).stdout, "id")
    wait_snap(cinder, sid, "available")
    write_at(path, 0, b"cli-changed!")
    cinder_cli("revert-to-snapshot", sid)
    wait_vol(cinder, vid, "available")
    wait_snap(cinder, sid, "available")
    assert read_at(path, 0, 12) == b"cli-original"
    cinder_cli("delete", "--cascade", vid)
    wait_vol_gone(cinder, vid)
    wait_snap_gone(cinder, sid)
    cinder_cli("type-delete", tname)
    assert tname not in cinder_cli("type-list").stdout


def test_cli_version_discovery(cinder_cli):
    out = cinder_cli("version-list").stdout
    assert "3.71" in out and "3.0" in out
