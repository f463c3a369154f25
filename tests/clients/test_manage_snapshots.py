"""Snapshot manage and unmanage through python-cinderclient and openstacksdk on the
file pool: a snapshot unmanaged keeps its file, is listed by manageable_snapshots,
and is managed back under a new id with its bytes; and the ways manage refuses.

On the file pool a snapshot file records no origin (README): the request names
the volume, and the file must be of the volume's size.
"""

import hashlib
import uuid

import pytest
from cinderclient import exceptions as cexc
from openstack import exceptions as oexc

from conftest import make_cinder, read_at, wait_for, write_at


def snap_file(agent, sid):
    return agent.data_dir / "snapshots" / f"snapshot-{sid}"


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snap_status(c, sid):
    try:
        return c.volume_snapshots.get(sid).status
    except cexc.NotFound:
        return None


def wait_snap(c, sid, status):
    wait_for(lambda: snap_status(c, sid) == status, 60, what=f"snapshot {sid} {status}")
    return c.volume_snapshots.get(sid) if status else None


@pytest.fixture
def vol(cinder, agent):
    v = agent.create_volume(1, name="snapmanage")
    yield cinder.volumes.get(v["id"])
    try:
        for s in cinder.volume_snapshots.list(search_opts={"volume_id": v["id"]}):
            cinder.volume_snapshots.delete(s)
            wait_snap(cinder, s.id, None)
        cinder.volumes.delete(v["id"])
    except cexc.NotFound:
        pass


def host_of(v):
    return getattr(v, "os-vol-host-attr:host")


def test_cinderclient_unmanage_list_manage_back(agent, cinder, vol):
    write_at(agent.volume_file(vol.id), 8192, b"snapshot bytes")
    s = agent.create_snapshot(vol.id, name="orig")
    path = snap_file(agent, s["id"])
    before = digest(path)
    write_at(agent.volume_file(vol.id), 8192, b"changed after!")

    resp, _ = cinder.volume_snapshots.unmanage(s["id"])
    assert resp.status_code == 202
    wait_snap(cinder, s["id"], None)
    assert path.exists() and digest(path) == before

    host = host_of(vol)
    ref = {"source-name": f"snapshot-{s['id']}"}
    listing = cinder.volume_snapshots.list_manageable(host)  # detailed by default
    entry = [m for m in listing if m.reference == ref]
    assert len(entry) == 1, [m.reference for m in listing]
    e = entry[0]
    assert (e.size, e.safe_to_manage, e.reason_not_safe, e.cinder_id) == (1, True, None, None)
    assert e.source_reference is None  # a file records no origin
    summary = make_cinder(agent, version="3.8").volume_snapshots.list_manageable(host, detailed=False)
    assert [m for m in summary if m.reference == ref][0].safe_to_manage is True

    # cinderclient's manage() posts to /os-snapshot-manage
    new = cinder.volume_snapshots.manage(vol.id, ref, name="managed", description="back",
                                         metadata={"k": "v"})
    assert new.id != s["id"] and new.status in ("creating", "available")
    new = wait_snap(cinder, new.id, "available")
    assert (new.name, new.description, new.metadata, new.size, new.volume_id) == (
        "managed", "back", {"k": "v"}, 1, vol.id)
    assert not path.exists() and digest(snap_file(agent, new.id)) == before

    listing = cinder.volume_snapshots.list_manageable(host)
    entry = [m for m in listing if m.reference == {"source-name": f"snapshot-{new.id}"}]
    assert len(entry) == 1 and entry[0].safe_to_manage is False and entry[0].cinder_id == new.id
    assert entry[0].reason_not_safe == "already managed"
    with pytest.raises(cexc.BadRequest):
        cinder.volume_snapshots.manage(vol.id, {"source-name": f"snapshot-{new.id}"})

    # the bytes are the snapshot's: a revert puts them back
    c40 = make_cinder(agent, version="3.40")
    c40.volumes.revert_to_snapshot(vol, new)
    wait_for(lambda: cinder.volumes.get(vol.id).status == "available", 60, what="revert")
    assert read_at(agent.volume_file(vol.id), 8192, 14) == b"snapshot bytes"


def test_manage_refusals_change_nothing(agent, cinder, vol):
    other = agent.create_volume(2, name="bigger")
    s = agent.create_snapshot(vol.id)
    cinder.volume_snapshots.unmanage(s["id"])
    wait_snap(cinder, s["id"], None)
    ref = {"source-name": f"snapshot-{s['id']}"}
    state = (agent.db_dump(), sorted(p.name for p in (agent.data_dir / "snapshots").iterdir()))
    # a file of another size is no snapshot of that volume
    with pytest.raises(cexc.BadRequest) as e:
        cinder.volume_snapshots.manage(other["id"], ref)
    assert "holds 1 GiB" in str(e.value)
    with pytest.raises(cexc.NotFound):
        cinder.volume_snapshots.manage(vol.id, {"source-name": "snapshot-nosuch"})
    with pytest.raises(cexc.NotFound):
        cinder.volume_snapshots.manage(str(uuid.uuid4()), ref)
    with pytest.raises(cexc.BadRequest):
        cinder.volume_snapshots.manage(vol.id, ref, metadata="not a map")
    assert state == (agent.db_dump(), sorted(p.name for p in (agent.data_dir / "snapshots").iterdir()))
    # by source-id: the id it had
    new = cinder.volume_snapshots.manage(vol.id, {"source-id": s["id"]})
    wait_snap(cinder, new.id, "available")
    cinder.volumes.delete(other["id"])


def test_unmanage_needs_a_settled_snapshot(agent, vol):
    # who may unmanage is test_policy.py's (admin only)
    s = agent.create_snapshot(vol.id)
    r = agent.request("POST", f"/snapshots/{s['id']}/action", {"os-reset_status": {"status": "creating"}})
    assert r.status_code == 202
    r = agent.request("POST", f"/snapshots/{s['id']}/action", {"os-unmanage": {}})
    assert r.status_code == 400 and "badRequest" in r.json(), r.text
    agent.request("POST", f"/snapshots/{s['id']}/action", {"os-reset_status": {"status": "available"}})


def test_openstacksdk_unmanage_manage(agent, sdk, vol):
    bs = sdk.block_storage
    s = agent.create_snapshot(vol.id)
    before = digest(snap_file(agent, s["id"]))
    bs.unmanage_snapshot(s["id"])
    wait_for(lambda: bs.find_snapshot(s["id"], ignore_missing=True) is None, 60, what="unmanaged")
    ref = {"source-name": f"snapshot-{s['id']}"}
    host = bs.get_volume(vol.id).host
    found = [m for m in bs.manageable_snapshots(details=True, host=host) if m.reference == ref]
    assert len(found) == 1 and found[0].safe_to_manage is True and found[0].size == 1
    new = bs.manage_snapshot(volume_id=vol.id, ref=ref, name="sdk-managed")
    assert new.id and new.id != s["id"]
    wait_for(lambda: bs.get_snapshot(new.id).status == "available", 60, what="managed")
    got = bs.get_snapshot(new.id)
    assert (got.name, got.volume_id, got.size) == ("sdk-managed", vol.id, 1)
    assert digest(snap_file(agent, new.id)) == before
    with pytest.raises(oexc.NotFoundException):
        bs.manage_snapshot(volume_id=vol.id, ref={"source-name": "snapshot-gone"})
