"""openstacksdk (block_storage v3 proxy, keystoneauth `none` plugin) against a
running `ember serve`. See spec §6 and §7.2.

The SDK discovers versions itself (GET /v3, GET /v3/), sends X-Auth-Token
"notused", puts no project segment in URLs and sends
`OpenStack-API-Version: volume 3.71` (3.65 for snapshots) on every call.
"""

import os
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from openstack import exceptions as oexc

from conftest import read_at, wait_for, write_at

GiB = 1 << 30
ADMIN_MD = ("readonly", "attached_mode")


# -- helpers ----------------------------------------------------------------------

def bs(sdk):
    return sdk.block_storage


def wait_vol(sdk, vid, status, timeout=60):
    last = None
    deadline = time.time() + timeout
    while time.time() < deadline:
        last = bs(sdk).get_volume(vid)
        if last.status == status:
            return last
        if last.status.startswith("error") and not status.startswith("error"):
            raise AssertionError(f"volume {vid} went to {last.status}")
        time.sleep(0.05)
    raise AssertionError(f"volume {vid} never reached {status}; last {last.status}")


def wait_vol_gone(sdk, vid, timeout=60):
    def gone():
        try:
            bs(sdk).get_volume(vid)
            return False
        except oexc.NotFoundException:
            return True
    wait_for(gone, timeout, what=f"volume {vid} gone")


def wait_snap(sdk, sid, status, timeout=60):
    def reached():
        s = bs(sdk).get_snapshot(sid)
        assert s.status != "error", f"snapshot {sid} went to error"
        return s if s.status == status else None
    return wait_for(reached, timeout, what=f"snapshot {sid} {status}")


def wait_snap_gone(sdk, sid, timeout=60):
    def gone():
        try:
            bs(sdk).get_snapshot(sid)
            return False
        except oexc.NotFoundException:
            return True
    wait_for(gone, timeout, what=f"snapshot {sid} gone")


def mk_volume(sdk, size=1, **kw):
    v = bs(sdk).create_volume(size=size, **kw)
    assert v.status == "creating"
    return wait_vol(sdk, v.id, "available")


def mk_snapshot(sdk, vid, **kw):
    s = bs(sdk).create_snapshot(volume_id=vid, **kw)
    assert s.status == "creating"
    return wait_snap(sdk, s.id, "available")


def user_md(v):
    return {k: val for k, val in (v.metadata or {}).items() if k not in ADMIN_MD}


def raw_status(exc_info):
    return exc_info.value.status_code


@pytest.fixture
def vol(sdk):
    v = mk_volume(sdk, name=f"sdk-{uuid.uuid4().hex[:8]}")
    yield v
    try:
        cur = bs(sdk).get_volume(v.id)
    except oexc.NotFoundException:
        return
    if cur.status != "deleting":
        try:
            bs(sdk).reset_volume_status(v.id, "available", "detached", None)
            bs(sdk).delete_volume(v.id, cascade=True)
        except oexc.SDKException:
            pass


# -- discovery / versions ------------------------------------------------------------

def test_version_discovery(agent, sdk):
    data = bs(sdk).get_endpoint_data()
    assert data.min_microversion == (3, 0)
    assert data.max_microversion == (3, 71)
    assert bs(sdk).get_api_major_version() == (3, 0)
    r = requests.get(agent.root + "/", timeout=10)
    assert r.status_code == 300
    r = requests.get(agent.endpoint + "/", headers={"X-Auth-Token": "notused"}, timeout=10)
    assert r.status_code == 200 and r.json()["versions"][0]["id"] == "v3.0"


# -- volumes -----------------------------------------------------------------------

def test_volume_crud(agent, sdk):
    name = f"crud-{uuid.uuid4().hex[:8]}"
    v = bs(sdk).create_volume(size=1, name=name, description="d", metadata={"a": "1"})
    assert v.status == "creating" and v.size == 1
    v = wait_vol(sdk, v.id, "available")
    assert v.name == name and v.description == "d"
    assert v.volume_type == "__DEFAULT__"
    assert v.availability_zone == "nova"
    assert v.is_bootable is False
    assert v.is_multiattach is False
    assert v.host.endswith("@file#file")
    assert user_md(v) == {"a": "1"}
    assert v.volume_type_id  # 3.63+
    assert agent.volume_file(v.id).stat().st_size == GiB

    assert v.id in [x.id for x in bs(sdk).volumes()]
    assert v.id in [x.id for x in bs(sdk).volumes(details=False)]
    assert [x.id for x in bs(sdk).volumes(name=name)] == [v.id]
    assert bs(sdk).find_volume(name).id == v.id

    bs(sdk).update_volume(v, name=name + "-x", description="d2")
    v2 = bs(sdk).get_volume(v.id)
    assert (v2.name, v2.description) == (name + "-x", "d2")

    bs(sdk).delete_volume(v)
    wait_vol_gone(sdk, v.id)
    assert not agent.volume_file(v.id).exists()


def test_project_scoping(agent, sdk, vol):
    """The SDK's token is "notused" and its URLs have no project: its volumes belong
    to project "notused". A volume of another project is hidden from its list but
    visible with all_projects, and by id."""
    assert vol.project_id == "notused"
    r = agent.request("POST", "/volumes", {"volume": {"size": 1, "name": "other-project"}})
    assert r.status_code == 202, r.text
    theirs = r.json()["volume"]["id"]
    agent.wait_volume(theirs, "available")
    assert theirs not in [x.id for x in bs(sdk).volumes()]
    assert vol.id in [x.id for x in bs(sdk).volumes()]
    assert theirs in [x.id for x in bs(sdk).volumes(all_projects=True)]
    got = bs(sdk).get_volume(theirs)
    assert got.project_id == agent.base.rsplit("/", 1)[1]
    bs(sdk).delete_volume(theirs)
    wait_vol_gone(sdk, theirs)


@pytest.fixture
def three_volumes(sdk):
    made = [mk_volume(sdk, name=f"page-{i}").id for i in range(3)]
    yield made
    for vid in made:
        bs(sdk).delete_volume(vid)
    for vid in made:
        wait_vol_gone(sdk, vid)


def next_link(agent, query):
    r = requests.get(agent.endpoint + "/volumes/detail?" + query,
                     headers={"X-Auth-Token": "notused"}, timeout=10)
    assert r.status_code == 200, r.text
    nxt = [link["href"] for link in r.json()["volumes_links"] if link["rel"] == "next"]
    assert len(nxt) == 1, r.json().get("volumes_links")
    return r.json(), nxt[0]


def test_pagination_follows_next_links(sdk, three_volumes):
    """volumes(limit=1) makes the SDK follow `volumes_links` rel=next page by page."""
    everything = sorted(x.id for x in bs(sdk).volumes())
    paged = [x.id for x in bs(sdk).volumes(limit=1)]
    assert len(paged) == len(set(paged)), paged
    assert sorted(paged) == everything and set(three_volumes) <= set(paged)


def test_links_have_no_project_for_projectless_request(agent, three_volumes):
    """Upstream (cinder/api/common.py _get_project_id_in_url) puts the project into
    self/next links only when the request URL had one; the SDK's URLs have none."""
    body, nxt = next_link(agent, "limit=1")
    assert urlsplit(nxt).path == "/v3/volumes/detail", nxt
    vol = body["volumes"][0]
    self_link = [link["href"] for link in vol["links"] if link["rel"] == "self"][0]
    assert urlsplit(self_link).path == f"/v3/volumes/{vol['id']}", self_link


def test_next_link_keeps_query_parameters(agent, three_volumes):
    """Upstream builds the next link from a copy of request.params plus marker, so
    filters, sort and all_tenants carry over to the following pages."""
    _, nxt = next_link(agent, "limit=1&sort=name:asc&all_tenants=1&status=available")
    q = parse_qs(urlsplit(nxt).query)
    assert q.get("sort") == ["name:asc"], nxt
    assert q.get("all_tenants") == ["1"] and q.get("status") == ["available"], nxt
    assert q.get("limit") == ["1"] and len(q.get("marker", [])) == 1, nxt


def test_volume_metadata(sdk, vol):
    got = bs(sdk).set_volume_metadata(vol, k1="v1", k2="v2")
    assert user_md(got) == {"k1": "v1", "k2": "v2"}
    assert user_md(bs(sdk).fetch_volume_metadata(vol)) == {"k1": "v1", "k2": "v2"}
    bs(sdk).delete_volume_metadata(vol, keys=["k1"])
    assert user_md(bs(sdk).get_volume(vol.id)) == {"k2": "v2"}
    with pytest.raises(oexc.NotFoundException):
        bs(sdk).delete_volume_metadata(vol, keys=["nope"])


def test_list_unknown_name_or_status_is_empty(sdk, vol):
    assert list(bs(sdk).volumes(name="no-such-" + uuid.uuid4().hex)) == []
    assert list(bs(sdk).volumes(status="no-such-status")) == []
    assert vol.id in [x.id for x in bs(sdk).volumes(status="available")]


@pytest.mark.parametrize("size", [0, -1, "abc", None])
def test_create_bad_size_400(sdk, size):
    with pytest.raises(oexc.BadRequestException):
        bs(sdk).create_volume(size=size)


def test_create_missing_references_404(sdk):
    with pytest.raises(oexc.NotFoundException):
        bs(sdk).create_volume(size=1, volume_type="no-such-" + uuid.uuid4().hex[:6])
    with pytest.raises(oexc.NotFoundException):
        bs(sdk).create_volume(size=1, snapshot_id=str(uuid.uuid4()))
    with pytest.raises(oexc.NotFoundException):
        bs(sdk).create_volume(size=1, source_volume_id=str(uuid.uuid4()))


def test_random_uuid_404(sdk):
    rid = str(uuid.uuid4())
    p = bs(sdk)
    calls = [
        lambda: p.get_volume(rid),
        lambda: p.update_volume(rid, name="x"),
        lambda: p.delete_volume(rid, ignore_missing=False),
        lambda: p.extend_volume(rid, 2),
        lambda: p.reserve_volume(rid),
        lambda: p.unreserve_volume(rid),
        lambda: p.attach_volume(rid, "/dev/vdb", instance=str(uuid.uuid4())),
        lambda: p.reset_volume_status(rid, "error", None, None),
        lambda: p.set_volume_bootable_status(rid, True),
        lambda: p.get_snapshot(rid),
        lambda: p.create_snapshot(volume_id=rid),
        lambda: p.delete_snapshot(rid, ignore_missing=False),
    ]
    for call in calls:
        with pytest.raises(oexc.NotFoundException):
            call()


# -- snapshots ----------------------------------------------------------------------

def test_snapshot_crud(agent, sdk, vol):
    s = bs(sdk).create_snapshot(volume_id=vol.id, name="s1", description="d1",
                                metadata={"m": "1"})
    assert s.status == "creating"
    s = wait_snap(sdk, s.id, "available")
    assert s.size == 1 and s.volume_id == vol.id and s.name == "s1"
    assert s.progress == "100%"
    assert s.metadata == {"m": "1"}
    assert (agent.data_dir / "snapshots" / f"snapshot-{s.id}").exists()
    assert s.id in [x.id for x in bs(sdk).snapshots()]
    assert s.id in [x.id for x in bs(sdk).snapshots(details=False)]
    bs(sdk).update_snapshot(s, name="s1b", description="d2")
    s2 = bs(sdk).get_snapshot(s.id)
    assert (s2.name, s2.description) == ("s1b", "d2")
    with pytest.raises(oexc.BadRequestException):
        bs(sdk).delete_volume(vol)  # has a snapshot, no cascade
    bs(sdk).delete_snapshot(s)
    wait_snap_gone(sdk, s.id)
    assert not (agent.data_dir / "snapshots" / f"snapshot-{s.id}").exists()


def test_snapshot_reset_status_and_force_delete(agent, sdk, vol):
    s = mk_snapshot(sdk, vol.id)
    bs(sdk).reset_snapshot_status(s, "error")
    assert bs(sdk).get_snapshot(s.id).status == "error"
    bs(sdk).reset_snapshot_status(s, "creating")
    with pytest.raises(oexc.BadRequestException):
        bs(sdk).delete_snapshot(s)
    bs(sdk).delete_snapshot(s, force=True)  # {"os-force_delete": null}
    wait_snap_gone(sdk, s.id)
    assert not (agent.data_dir / "snapshots" / f"snapshot-{s.id}").exists()


def test_snapshot_of_in_use_volume(sdk, vol):
    # Snapshot requests go out at microversion 3.65, where force=false still matters.
    bs(sdk).attach_volume(vol, "/dev/vdb", instance=str(uuid.uuid4()))
    wait_vol(sdk, vol.id, "in-use")
    with pytest.raises(oexc.BadRequestException):
        bs(sdk).create_snapshot(volume_id=vol.id, is_forced=False)
    s = bs(sdk).create_snapshot(volume_id=vol.id, is_forced=True)
    wait_snap(sdk, s.id, "available")
    bs(sdk).delete_snapshot(s)
    wait_snap_gone(sdk, s.id)
    att = bs(sdk).get_volume(vol.id).attachments[0]
    bs(sdk).detach_volume(vol, att["attachment_id"])
    wait_vol(sdk, vol.id, "available")


def test_cascade_delete(agent, sdk):
    v = mk_volume(sdk)
    s = mk_snapshot(sdk, v.id)
    bs(sdk).delete_volume(v, cascade=True)
    wait_vol_gone(sdk, v.id)
    wait_snap_gone(sdk, s.id)
    assert not agent.volume_file(v.id).exists()
    assert not (agent.data_dir / "snapshots" / f"snapshot-{s.id}").exists()


# -- volume types ---------------------------------------------------------------------

def test_volume_types(sdk):
    p = bs(sdk)
    assert "__DEFAULT__" in [t.name for t in p.types()]
    default = p.find_type("__DEFAULT__", ignore_missing=False)
    assert default.name == "__DEFAULT__"

    name = f"type-{uuid.uuid4().hex[:8]}"
    # Scoped keys: the scheduler's capabilities filter ignores them.
    t = p.create_type(name=name, description="a type", extra_specs={"note:k1": "v1"})
    assert t.name == name
    assert p.get_type(t.id).extra_specs == {"note:k1": "v1"}
    p.update_type_extra_specs(t, **{"note:k2": "v2"})
    assert p.get_type(t.id).extra_specs == {"note:k1": "v1", "note:k2": "v2"}
    p.delete_type_extra_specs(t, ["note:k1"])
    assert p.get_type(t.id).extra_specs == {"note:k2": "v2"}
    p.update_type(t, description="changed")
    assert p.get_type(t.id).description == "changed"
    assert p.find_type(name).id == t.id

    v = mk_volume(sdk, volume_type=name)
    assert v.volume_type == name and v.volume_type_id == t.id
    # a type in use cannot be deleted
    with pytest.raises(oexc.HttpException) as e:
        p.delete_type(t)
    assert raw_status(e) == 400
    p.delete_volume(v)
    wait_vol_gone(sdk, v.id)
    p.delete_type(t)
    with pytest.raises(oexc.NotFoundException):
        p.get_type(t.id)
    assert default.id in [x.id for x in p.types()]


# -- actions --------------------------------------------------------------------------

def test_reset_status(sdk, vol):
    for st in ("error", "available", "maintenance"):
        bs(sdk).reset_volume_status(vol, st, None, None)
        assert bs(sdk).get_volume(vol.id).status == st
    bs(sdk).reset_volume_status(vol, "available", None, None)
    with pytest.raises(oexc.BadRequestException):
        bs(sdk).reset_volume_status(vol, None, None, None)  # {"os-reset_status": {}}
    with pytest.raises(oexc.BadRequestException):
        bs(sdk).reset_volume_status(vol, "deleting", None, None)
    with pytest.raises(oexc.BadRequestException):
        bs(sdk).reset_volume_status(vol, None, "bogus", None)
    bs(sdk).reset_volume_status(vol, None, None, "error")
    assert bs(sdk).get_volume(vol.id).migration_status == "error"
    bs(sdk).reset_volume_status(vol, None, None, "none")
    assert bs(sdk).get_volume(vol.id).migration_status is None


def test_image_metadata(sdk, vol):
    md = {"image_id": str(uuid.uuid4()), "image_name": "cirros",
          "kernel_id": str(uuid.uuid4()), "ramdisk_id": str(uuid.uuid4())}
    bs(sdk).set_volume_image_metadata(vol, **md)
    assert bs(sdk).get_volume(vol.id).volume_image_metadata == md
    bs(sdk).delete_volume_image_metadata(vol, keys=["ramdisk_id"])
    left = {k: v for k, v in md.items() if k != "ramdisk_id"}
    assert bs(sdk).get_volume(vol.id).volume_image_metadata == left
    with pytest.raises(oexc.NotFoundException):
        bs(sdk).delete_volume_image_metadata(vol, keys=["ramdisk_id"])


def test_attach_detach(sdk, vol):
    server = str(uuid.uuid4())
    bs(sdk).attach_volume(vol, "/dev/vdc", instance=server)
    v = wait_vol(sdk, vol.id, "in-use")
    assert len(v.attachments) == 1
    att = v.attachments[0]
    assert att["server_id"] == server and att["device"] == "/dev/vdc"
    assert att["volume_id"] == vol.id
    with pytest.raises(oexc.BadRequestException):
        bs(sdk).attach_volume(vol, "/dev/vdd", instance=str(uuid.uuid4()))
    # detach with an attachment id that does not exist → 409 (bug #2004555 guard)
    with pytest.raises(oexc.ConflictException):
        bs(sdk).detach_volume(vol, str(uuid.uuid4()))
    bs(sdk).detach_volume(vol, att["attachment_id"])
    v = wait_vol(sdk, vol.id, "available")
    assert v.attachments == []

    bs(sdk).attach_volume(vol, "/dev/sdc", host_name="node-7")
    v = wait_vol(sdk, vol.id, "in-use")
    assert v.attachments[0]["host_name"] == "node-7"
    bs(sdk).detach_volume(vol, v.attachments[0]["attachment_id"])
    wait_vol(sdk, vol.id, "available")


def test_reserve_unreserve(sdk, vol):
    bs(sdk).reserve_volume(vol)
    assert bs(sdk).get_volume(vol.id).status == "attaching"
    with pytest.raises(oexc.BadRequestException):
        bs(sdk).reserve_volume(vol)
    bs(sdk).unreserve_volume(vol)
    assert bs(sdk).get_volume(vol.id).status == "available"


def test_begin_abort_detaching(sdk, vol):
    with pytest.raises(oexc.BadRequestException):
        bs(sdk).begin_volume_detaching(vol)
    bs(sdk).attach_volume(vol, "/dev/vdb", instance=str(uuid.uuid4()))
    v = wait_vol(sdk, vol.id, "in-use")
    bs(sdk).begin_volume_detaching(vol)
    assert bs(sdk).get_volume(vol.id).status == "detaching"
    bs(sdk).abort_volume_detaching(vol)
    assert bs(sdk).get_volume(vol.id).status == "in-use"
    bs(sdk).detach_volume(vol, v.attachments[0]["attachment_id"])
    wait_vol(sdk, vol.id, "available")


def test_bootable_and_readonly(sdk, vol):
    bs(sdk).set_volume_bootable_status(vol, True)
    assert bs(sdk).get_volume(vol.id).is_bootable is True
    bs(sdk).set_volume_bootable_status(vol, False)
    assert bs(sdk).get_volume(vol.id).is_bootable is False
    bs(sdk).set_volume_readonly(vol, True)
    assert bs(sdk).get_volume(vol.id).metadata["readonly"] == "True"
    bs(sdk).set_volume_readonly(vol, False)
    assert bs(sdk).get_volume(vol.id).metadata["readonly"] == "False"
    bs(sdk).reset_volume_status(vol, "maintenance", None, None)
    with pytest.raises(oexc.BadRequestException):
        bs(sdk).set_volume_bootable_status(vol, True)
    with pytest.raises(oexc.BadRequestException):
        bs(sdk).set_volume_readonly(vol, True)
    bs(sdk).reset_volume_status(vol, "available", None, None)


@pytest.mark.parametrize("status", ["creating", "attaching", "error", "maintenance"])
def test_force_delete_delete_query(agent, sdk, vol, status):
    """delete_volume(force=True) → DELETE /v3/volumes/{id}?cascade=False&force=True (≥3.23)."""
    bs(sdk).reset_volume_status(vol, status, None, None)
    bs(sdk).delete_volume(vol, force=True)
    wait_vol_gone(sdk, vol.id)
    assert not agent.volume_file(vol.id).exists()


def test_force_delete_action(agent, sdk, vol):
    """Volume.force_delete sends {"os-force_delete": null}."""
    bs(sdk).reset_volume_status(vol, "error", None, None)
    bs(sdk).get_volume(vol.id).force_delete(bs(sdk))
    wait_vol_gone(sdk, vol.id)
    assert not agent.volume_file(vol.id).exists()


def test_force_delete_refused(sdk, vol):
    s = mk_snapshot(sdk, vol.id)
    with pytest.raises(oexc.BadRequestException):
        bs(sdk).delete_volume(vol, force=True)
    bs(sdk).delete_snapshot(s)
    wait_snap_gone(sdk, s.id)
    bs(sdk).attach_volume(vol, "/dev/vdb", instance=str(uuid.uuid4()))
    v = wait_vol(sdk, vol.id, "in-use")
    with pytest.raises(oexc.BadRequestException):
        bs(sdk).delete_volume(vol, force=True)
    bs(sdk).detach_volume(vol, v.attachments[0]["attachment_id"])
    wait_vol(sdk, vol.id, "available")


def test_unmanage_manage(agent, sdk, vol):
    host = vol.host
    old_file = agent.volume_file(vol.id)
    bs(sdk).unmanage_volume(vol)
    wait_vol_gone(sdk, vol.id)
    assert old_file.exists()
    ref = {"source-name": f"volume-{vol.id}"}
    found = [m for m in bs(sdk).manageable_volumes(host=host) if m.reference == ref]
    assert len(found) == 1 and found[0].safe_to_manage is True and found[0].size == 1
    found = [m for m in bs(sdk).manageable_volumes(details=True, host=host) if m.reference == ref]
    assert len(found) == 1

    # POST /v3/manageable_volumes (3.8+)
    new = bs(sdk).manage_volume(host=host, ref=ref, name="managed-sdk")
    assert new.id and new.id != vol.id
    assert new.status in ("creating", "available")  # "managing" is shown as "creating"
    new = wait_vol(sdk, new.id, "available")
    assert new.size == 1 and new.name == "managed-sdk"
    assert new.volume_type == "__DEFAULT__" and new.host == host
    assert new.availability_zone == "nova"
    assert agent.volume_file(new.id).exists() and not old_file.exists()
    found = [m for m in bs(sdk).manageable_volumes(host=host)
             if m.reference == {"source-name": f"volume-{new.id}"}]
    assert len(found) == 1 and found[0].safe_to_manage is False
    with pytest.raises(oexc.NotFoundException):
        bs(sdk).manage_volume(host=host, ref={"source-name": f"volume-{uuid.uuid4()}"})
    bs(sdk).delete_volume(new)
    wait_vol_gone(sdk, new.id)


def test_extend(agent, sdk, vol):
    bs(sdk).extend_volume(vol, 2)
    wait_for(lambda: (lambda v: v.size == 2 and v.status == "available")(bs(sdk).get_volume(vol.id)),
             what="extend")
    assert agent.volume_file(vol.id).stat().st_size == 2 * GiB
    for bad in (0, "abc", None, 2):
        with pytest.raises(oexc.BadRequestException):
            bs(sdk).extend_volume(vol, bad)


def test_revert_to_snapshot(agent, sdk, vol):
    path = agent.volume_file(vol.id)
    data = os.urandom(8192)
    write_at(path, 4096, data)
    snap = mk_snapshot(sdk, vol.id)
    write_at(path, 4096, bytes(len(data)))
    write_at(path, 100 * 1024 * 1024, b"junk after snapshot")
    bs(sdk).revert_volume_to_snapshot(vol, snap)
    wait_vol(sdk, vol.id, "available")
    wait_snap(sdk, snap.id, "available")
    assert read_at(path, 4096, len(data)) == data
    assert read_at(path, 100 * 1024 * 1024, 19) == bytes(19)
    # extend, then revert → 400
    bs(sdk).extend_volume(vol, 2)
    wait_for(lambda: bs(sdk).get_volume(vol.id).size == 2, what="extend")
    wait_vol(sdk, vol.id, "available")
    with pytest.raises(oexc.BadRequestException):
        bs(sdk).revert_volume_to_snapshot(vol, snap)
    bs(sdk).delete_snapshot(snap)
    wait_snap_gone(sdk, snap.id)


def test_retype_never(sdk):
    p = bs(sdk)
    t1 = p.create_type(name=f"rt1-{uuid.uuid4().hex[:6]}")
    t2 = p.create_type(name=f"rt2-{uuid.uuid4().hex[:6]}")
    v = mk_volume(sdk, volume_type=t1.name)
    p.retype_volume(v, t2)  # sends the type id, policy never
    after = wait_for(lambda: (lambda x: x if x.volume_type == t2.name and x.status == "available"
                              else None)(p.get_volume(v.id)), what="retype")
    assert after.id == v.id and after.host == v.host and after.size == v.size
    assert after.volume_type_id == t2.id
    assert after.migration_status is None
    with pytest.raises(oexc.BadRequestException):
        p.retype_volume(v, t2)
    with pytest.raises(oexc.NotFoundException):
        p.retype_volume(v, str(uuid.uuid4()))
    # an in-use volume retypes too (same backend) and stays in-use
    p.attach_volume(v, "/dev/vdb", instance=str(uuid.uuid4()))
    att = wait_vol(sdk, v.id, "in-use").attachments[0]
    p.retype_volume(v, t1)
    wait_for(lambda: (lambda x: x.volume_type == t1.name and x.status == "in-use")(p.get_volume(v.id)),
             what="in-use retype")
    p.detach_volume(v, att["attachment_id"])
    wait_vol(sdk, v.id, "available")
    p.delete_volume(v)
    wait_vol_gone(sdk, v.id)
    p.delete_type(t1)
    p.delete_type(t2)


def test_retype_needing_migration(sdk, vol):
    p = bs(sdk)
    t = p.create_type(name=f"far-{uuid.uuid4().hex[:6]}",
                      extra_specs={"volume_backend_name": "some-other-backend"})
    # No pool of this agent serves that backend: refused either way.
    with pytest.raises(oexc.BadRequestException, match="No pool"):
        p.retype_volume(vol, t, migration_policy="on-demand")
    with pytest.raises(oexc.BadRequestException):
        p.retype_volume(vol, t, migration_policy="never")
    v = p.get_volume(vol.id)
    assert v.volume_type == "__DEFAULT__" and v.status == "available"
    p.delete_type(t)


# -- later-increment actions through the SDK: valid request → 501 --------------------

CONNECTOR = {"initiator": "iqn.1994-05.com.redhat:abc", "host": "node2", "ip": "192.0.2.5",
             "platform": "x86_64", "os_type": "linux", "multipath": False}


def test_init_without_a_target_is_400_and_terminate_is_a_no_op(sdk, vol):
    """This module's agent serves no target; the export path is in test_exports_tgt.py."""
    with pytest.raises(oexc.HttpException) as e:
        bs(sdk).init_volume_attachment(vol, CONNECTOR)
    assert raw_status(e) == 400
    bs(sdk).terminate_volume_attachment(vol, CONNECTOR)
    assert bs(sdk).get_volume(vol.id).status == "available"


def test_force_detach_of_an_attached_volume(sdk, vol):
    bs(sdk).attach_volume(vol, "/dev/vdb", instance=str(uuid.uuid4()))
    v = wait_vol(sdk, vol.id, "in-use")
    bs(sdk).detach_volume(vol, v.attachments[0]["attachment_id"], force=True, connector=CONNECTOR)
    v = wait_vol(sdk, vol.id, "available")
    assert v.attachments == []


def test_upload_to_image_runs_and_restores_the_status(sdk, vol):
    """The bytes are checked in test_images.py; here the SDK's call and the end state."""
    bs(sdk).upload_volume_to_image(vol, "img", disk_format="raw", container_format="bare")
    wait_vol(sdk, vol.id, "available")


def test_migrate_volume_refused(sdk, vol):
    """A single-backend agent has no destination: 400 (or 501 once migration lands
    with a known destination); never 2xx, and nothing changes."""
    with pytest.raises(oexc.HttpException) as e:
        bs(sdk).migrate_volume(vol, host="otherhost@lvm#pool")
    assert raw_status(e) in (400, 501)
    v = bs(sdk).get_volume(vol.id)
    assert v.status == "available" and v.migration_status is None and v.host == vol.host


def test_migrate_completion_of_volumes_not_migrating(sdk, vol):
    """Nova's swap recorded: the attachments (none here) move to the new volume."""
    other = mk_volume(sdk)
    bs(sdk).complete_volume_migration(vol, other.id)
    assert bs(sdk).get_volume(other.id).status == "available"
    bs(sdk).delete_volume(other)
    wait_vol_gone(sdk, other.id)


def test_extend_in_use(sdk, vol):
    bs(sdk).attach_volume(vol, "/dev/vdb", instance=str(uuid.uuid4()))
    v = wait_vol(sdk, vol.id, "in-use")
    bs(sdk).extend_volume(vol, 2)  # sent at 3.71 ≥ 3.42
    assert wait_vol(sdk, vol.id, "in-use").size == 2
    bs(sdk).detach_volume(vol, v.attachments[0]["attachment_id"])
    wait_vol(sdk, vol.id, "available")
