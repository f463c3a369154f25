"""Generic volume groups through python-cinderclient (and plain HTTP where the
client has no call): group types and specs (3.11), groups of volumes (3.13),
group snapshots (3.14), groups made from a group snapshot or another group with
the data carried over, delete with delete-volumes, reset_status, and the
requests Cinder refuses, which change nothing."""

import uuid

import pytest
from cinderclient import exceptions as cexc

from conftest import make_cinder, read_at, wait_for, write_at

V = "3.71"


@pytest.fixture(scope="module")
def cinder(agent):
    return make_cinder(agent, V)


@pytest.fixture(scope="module")
def vtypes(agent):
    """Two volume types for group members, and one no group here allows."""
    ids = []
    for name in ("grp-a", "grp-b", "grp-other"):
        r = agent.request("POST", "/types", {"volume_type": {"name": name}})
        assert r.status_code == 200, r.text
        ids.append(r.json()["volume_type"]["id"])
    return ids


@pytest.fixture(scope="module")
def gtype(agent, cinder):
    return cinder.group_types.create("gt-" + uuid.uuid4().hex[:8], description="for groups")


def wait_group(agent, gid, status, version=V):
    def reached():
        r = agent.request("GET", f"/groups/{gid}", version=version)
        if status == "deleted":
            return r.status_code == 404
        return r.status_code == 200 and r.json()["group"]["status"] == status
    wait_for(reached, timeout=60, what=f"group {gid} {status}")


def wait_group_snapshot(agent, gsid, status):
    def reached():
        r = agent.request("GET", f"/group_snapshots/{gsid}", version=V)
        if status == "deleted":
            return r.status_code == 404
        return r.status_code == 200 and r.json()["group_snapshot"]["status"] == status
    wait_for(reached, timeout=60, what=f"group snapshot {gsid} {status}")


def new_group(agent, cinder, gtype, vtypes, name="g"):
    g = cinder.groups.create(gtype.id, f"{vtypes[0]},{vtypes[1]}", name=name)
    wait_group(agent, g.id, "available")
    return g


def member(agent, gid, vtype, size=1):
    r = agent.request("POST", "/volumes", {"volume": {"size": size, "group_id": gid, "volume_type": vtype}},
                      version=V)
    assert r.status_code == 202, r.text
    return agent.wait_volume(r.json()["volume"]["id"], "available")


def test_group_type_crud_and_specs(agent, cinder):
    name = "gt-" + uuid.uuid4().hex[:8]
    t = cinder.group_types.create(name, description="d", is_public=True)
    assert t.name == name and t.is_public and t.description == "d"
    assert name in [x.name for x in cinder.group_types.list()]
    t.set_keys({"consistent_group_snapshot_enabled": "<is> False", "k": "v"})
    assert t.get_keys() == {"consistent_group_snapshot_enabled": "<is> False", "k": "v"}
    r = agent.request("PUT", f"/group_types/{t.id}/group_specs/k", {"k": "w"}, version=V)
    assert r.status_code == 200 and r.json() == {"k": "w"}, r.text
    assert agent.request("GET", f"/group_types/{t.id}/group_specs/k", version=V).json() == {"k": "w"}
    t.unset_keys(["k"])
    r = agent.request("GET", f"/group_types/{t.id}/group_specs/k", version=V)
    assert r.status_code == 404 and "has no specs with key k" in r.text, r.text
    renamed = cinder.group_types.update(t, name=name + "-r", description="e", is_public=False)
    assert renamed.name == name + "-r" and not renamed.is_public
    # Without is_public only public types are listed; cinderclient asks for all
    # (is_public=None) or by visibility.
    plain = agent.request("GET", "/group_types", version=V).json()["group_types"]
    assert name + "-r" not in [x["name"] for x in plain]
    assert name + "-r" in [x.name for x in cinder.group_types.list()]
    assert name + "-r" in [x.name for x in cinder.group_types.list(is_public=False)]
    # Name clash 409, unknown 404, the default group type is not configured.
    r = agent.request("POST", "/group_types", {"group_type": {"name": name + "-r"}}, version=V)
    assert r.status_code == 409 and "already exists" in r.text, r.text
    assert agent.request("GET", f"/group_types/{uuid.uuid4()}", version=V).status_code == 404
    assert agent.request("GET", "/group_types/default", version=V).status_code == 404
    assert agent.request("GET", "/group_types", version="3.10").status_code == 404
    cinder.group_types.delete(t)
    assert agent.request("GET", f"/group_types/{t.id}", version=V).status_code == 404


def test_a_group_of_two_volumes_gains_and_loses_members(agent, cinder, gtype, vtypes):
    g = new_group(agent, cinder, gtype, vtypes, name="two")
    shown = cinder.groups.get(g.id)
    assert shown.group_type == gtype.id and shown.volume_types == vtypes[:2] and shown.status == "available"
    a, b = member(agent, g.id, vtypes[0]), member(agent, g.id, vtypes[1])
    assert agent.get_volume(a["id"], version=V)["group_id"] == g.id
    assert "group_id" not in agent.get_volume(a["id"], version="3.12")
    listed = agent.request("GET", f"/groups/{g.id}?list_volume=true", version=V).json()["group"]
    assert sorted(listed["volumes"]) == sorted([a["id"], b["id"]])
    by_filter = agent.request("GET", f"/volumes?group_id={g.id}", version=V).json()["volumes"]
    assert sorted(v["id"] for v in by_filter) == sorted([a["id"], b["id"]])
    # Cinder takes the group at any microversion, and consistencygroup_id names one too.
    r = agent.request("POST", "/volumes", {"volume": {"size": 1, "consistencygroup_id": g.id,
                                                      "volume_type": vtypes[0]}}, version="3.0")
    assert r.status_code == 202, r.text
    c = agent.wait_volume(r.json()["volume"]["id"], "available")
    assert agent.get_volume(c["id"], version=V)["group_id"] == g.id
    cinder.groups.update(g, remove_volumes=c["id"])
    assert agent.request("DELETE", f"/volumes/{c['id']}").status_code == 202
    # Neither retyped nor migrated while in a group (Cinder expects group_id None).
    r = agent.action(a["id"], {"os-retype": {"new_type": vtypes[1]}}, version=V)
    assert r.status_code == 400 and "group" in r.text, r.text
    r = agent.action(a["id"], {"os-migrate_volume": {"host": "elsewhere@x#y"}}, version=V)
    assert r.status_code == 400 and "group" in r.text, r.text
    # A member cannot be deleted on its own (Cinder: "must not ... belong to a group").
    r = agent.request("DELETE", f"/volumes/{a['id']}")
    assert r.status_code == 400 and "group" in r.text, r.text
    # Out and back in, by cinderclient's comma-separated ids.
    cinder.groups.update(g, remove_volumes=a["id"])
    assert agent.get_volume(a["id"], version=V)["group_id"] is None
    loose = agent.create_volume(volume_type=vtypes[0])
    cinder.groups.update(g, add_volumes=f"{a['id']},{loose['id']}", name="renamed")
    assert cinder.groups.get(g.id).name == "renamed"
    ids = agent.request("GET", f"/groups/{g.id}?list_volume=True", version=V).json()["group"]["volumes"]
    assert sorted(ids) == sorted([a["id"], b["id"], loose["id"]])
    assert g.id in [x.id for x in cinder.groups.list()]
    # Sorted and paged as Cinder's lists; an unknown sort key is refused.
    names = [x["name"] for x in agent.request("GET", "/groups/detail?sort=name:asc", version=V).json()["groups"]]
    assert names == sorted(names)
    assert len(agent.request("GET", "/groups?limit=1", version=V).json()["groups"]) == 1
    r = agent.request("GET", "/group_snapshots?sort=bogus", version=V)
    assert r.status_code == 400 and "Invalid sort key bogus" in r.text, r.text
    # Delete without delete-volumes: refused while it has volumes.
    r = agent.request("POST", f"/groups/{g.id}/action", {"delete": {}}, version=V)
    assert r.status_code == 400 and "delete-volumes flag is required" in r.text, r.text
    cinder.groups.delete(g, delete_volumes=True)
    wait_group(agent, g.id, "deleted")
    for vid in (a["id"], b["id"], loose["id"]):
        agent.wait_volume(vid, "deleted")


def test_group_snapshot_and_groups_made_from_sources_carry_the_data(agent, cinder, gtype, vtypes):
    g = new_group(agent, cinder, gtype, vtypes, name="src")
    a, b = member(agent, g.id, vtypes[0]), member(agent, g.id, vtypes[1], size=2)
    write_at(agent.volume_file(a["id"]), 4096, b"alpha-bytes")
    write_at(agent.volume_file(b["id"]), 1 << 20, b"bravo-bytes")
    gs = cinder.group_snapshots.create(g.id, name="gs")
    wait_group_snapshot(agent, gs.id, "available")
    shown = cinder.group_snapshots.get(gs.id)
    assert shown.group_id == g.id and shown.group_type_id == gtype.id
    snaps = [s for s in agent.request("GET", "/snapshots/detail", version=V).json()["snapshots"]
             if s["group_snapshot_id"] == gs.id]
    assert sorted(s["volume_id"] for s in snaps) == sorted([a["id"], b["id"]])
    assert all(s["status"] == "available" for s in snaps)
    # A snapshot of a group snapshot is not deleted on its own.
    r = agent.request("DELETE", f"/snapshots/{snaps[0]['id']}")
    assert r.status_code == 400 and "must not be part of a group" in r.text, r.text
    r = agent.request("POST", f"/snapshots/{snaps[0]['id']}/action", {"os-unmanage": None})
    assert r.status_code == 400 and "must not be part of a group" in r.text, "nor unmanaged on its own"
    # Writes after the group snapshot are not in the group made from it.
    write_at(agent.volume_file(a["id"]), 4096, b"later-bytes")
    for source in ({"group_snapshot_id": gs.id}, {"source_group_id": g.id}):
        made = cinder.groups.create_from_src(source.get("group_snapshot_id"), source.get("source_group_id"),
                                             name="copy")
        wait_group(agent, made["id"], "available")
        copy = agent.request("GET", f"/groups/{made['id']}?list_volume=true", version=V).json()["group"]
        assert copy["volume_types"] == vtypes[:2]
        assert copy["group_snapshot_id"] == source.get("group_snapshot_id")
        assert copy["source_group_id"] == source.get("source_group_id")
        vols = [agent.get_volume(v, version=V) for v in copy["volumes"]]
        assert sorted(v["size"] for v in vols) == [1, 2] and all(v["group_id"] == made["id"] for v in vols)
        by_size = {v["size"]: v["id"] for v in vols}
        expected_a = b"alpha-bytes" if "group_snapshot_id" in source else b"later-bytes"
        assert read_at(agent.volume_file(by_size[1]), 4096, 11) == expected_a
        assert read_at(agent.volume_file(by_size[2]), 1 << 20, 11) == b"bravo-bytes"
        cinder.groups.delete(made["id"], delete_volumes=True)
        wait_group(agent, made["id"], "deleted")
    # A group with a group snapshot cannot be deleted; the group snapshot can.
    r = agent.request("POST", f"/groups/{g.id}/action", {"delete": {"delete-volumes": True}}, version=V)
    assert r.status_code == 400 and "existing snapshots" in r.text, r.text
    cinder.group_snapshots.delete(gs)
    wait_group_snapshot(agent, gs.id, "deleted")
    for s in snaps:
        agent.wait_snapshot(s["id"], "deleted")
    cinder.groups.delete(g, delete_volumes=True)
    wait_group(agent, g.id, "deleted")


def test_reset_status_of_groups_and_group_snapshots(agent, cinder, gtype, vtypes):
    g = new_group(agent, cinder, gtype, vtypes, name="reset")
    cinder.groups.reset_state(g, "error")
    assert cinder.groups.get(g.id).status == "error"
    r = agent.request("POST", f"/groups/{g.id}/action", {"reset_status": {"status": "bogus"}}, version=V)
    assert r.status_code == 400 and "is invalid" in r.text, r.text
    r = agent.request("POST", f"/groups/{g.id}/action", {"reset_status": {"status": "available"}}, version="3.19")
    assert r.status_code == 400 and "no such action" in r.text, r.text
    cinder.groups.reset_state(g, "available")
    gs = cinder.group_snapshots.create(g.id, name="empty")
    wait_group_snapshot(agent, gs.id, "available")
    assert [x.id for x in cinder.group_snapshots.list(detailed=False) if x.id == gs.id] == [gs.id]
    assert [x.status for x in cinder.group_snapshots.list() if x.id == gs.id] == ["available"]
    cinder.group_snapshots.reset_state(gs, "error")
    assert cinder.group_snapshots.get(gs.id).status == "error"
    r = agent.request("POST", f"/group_snapshots/{gs.id}/action", {"reset_status": {"status": "x"}}, version=V)
    assert r.status_code == 400, r.text
    r = agent.request("POST", f"/group_snapshots/{gs.id}/action", {"reset_status": {"status": "error"}},
                      version="3.18")
    assert r.status_code == 404, r.text
    cinder.group_snapshots.delete(gs)
    wait_group_snapshot(agent, gs.id, "deleted")
    # A type in use is not deleted (Cinder answers 400 for GroupTypeInUse).
    r = agent.request("DELETE", f"/group_types/{gtype.id}", version=V)
    assert r.status_code == 400 and "still in use" in r.text, r.text
    cinder.groups.delete(g)
    wait_group(agent, g.id, "deleted")


def test_groups_quota(agent, cinder, gtype, vtypes):
    project = agent.base.rsplit("/", 1)[1]
    assert agent.request("PUT", f"/os-quota-sets/{project}", {"quota_set": {"groups": 0}}).status_code == 200
    try:
        with pytest.raises(cexc.ClientException) as e:
            cinder.groups.create(gtype.id, vtypes[0], name="over")
        assert e.value.code == 413 and "groups" in str(e.value)
    finally:
        agent.request("PUT", f"/os-quota-sets/{project}", {"quota_set": {"groups": -1}})


@pytest.fixture
def fixed(agent, cinder, gtype, vtypes):
    """A group with one member, a loose volume of each kind, and a group snapshot."""
    g = new_group(agent, cinder, gtype, vtypes, name="fixed")
    inside = member(agent, g.id, vtypes[0])
    other = agent.create_volume(volume_type=vtypes[2])
    loose = agent.create_volume(volume_type=vtypes[1])
    ids = {"g": g.id, "in": inside["id"], "other": other["id"], "loose": loose["id"],
           "gt": gtype.id, "vt": vtypes[0], "vt_other": vtypes[2], "new": str(uuid.uuid4())}
    yield ids
    for vid in (other["id"], loose["id"]):
        agent.request("DELETE", f"/volumes/{vid}")
    agent.request("POST", f"/groups/{g.id}/action", {"delete": {"delete-volumes": True}}, version=V)
    wait_group(agent, g.id, "deleted")


BAD = [
    ("POST", "/groups", {"group": {"volume_types": ["{vt}"]}}, 400, "'group_type' is a required property"),
    ("POST", "/groups", {"group": {"group_type": "{gt}"}}, 400, "'volume_types' is a required property"),
    ("POST", "/groups", {"group": {"group_type": "{gt}", "volume_types": []}}, 400, "too short"),
    ("POST", "/groups", {"group": {"group_type": "{gt}", "volume_types": "x"}}, 400, "not of type 'array'"),
    ("POST", "/groups", {"group": {"group_type": "{gt}", "volume_types": ["{vt}"], "x": 1}}, 400, "'x' was"),
    ("POST", "/groups", {"group": {"group_type": "{new}", "volume_types": ["{vt}"]}}, 404, "could not be found"),
    ("POST", "/groups", {"group": {"group_type": "{gt}", "volume_types": ["{new}"]}}, 404, "could not be found"),
    ("POST", "/groups", {"group": {"group_type": "{gt}", "volume_types": ["{vt}"], "availability_zone": "mars"}},
     400, "Availability zone 'mars' is invalid"),
    ("POST", "/groups", {"group": {"group_type": 5, "volume_types": ["{vt}"]}}, 400, "not of type 'string'"),
    ("PUT", "/groups/{g}", {"group": {}}, 400, "no valid name"),
    ("PUT", "/groups/{g}", {"group": {"bogus": 1}}, 400, "'bogus' was"),
    ("PUT", "/groups/{g}", {"group": {"add_volumes": "{other}"}}, 400, "is not supported by the group"),
    ("PUT", "/groups/{g}", {"group": {"add_volumes": "{new}"}}, 400, "cannot be found"),
    ("PUT", "/groups/{g}", {"group": {"remove_volumes": "{loose}"}}, 400, "not in the group"),
    ("PUT", "/groups/{g}", {"group": {"add_volumes": "{loose}", "remove_volumes": "{loose}"}}, 400,
     "both add and remove"),
    ("PUT", "/groups/{new}", {"group": {"name": "x"}}, 404, "could not be found"),
    ("POST", "/groups/{g}/action", {"delete": {"delete-volumes": "perhaps"}}, 400, "not a valid boolean"),
    ("POST", "/groups/{g}/action", {"delete": {}}, 400, "delete-volumes flag is required"),
    ("POST", "/groups/{g}/action", {"explode": {}}, 400, "no such action"),
    ("POST", "/groups/{g}/action", {"reset_status": {}}, 400, "'status' is a required property"),
    ("POST", "/groups/{new}/action", {"delete": {}}, 404, "could not be found"),
    ("POST", "/groups/action", {"create-from-src": {}}, 400, "Either 'group_snapshot_id' or 'source_group_id'"),
    ("POST", "/groups/action", {"create-from-src": {"group_snapshot_id": "{new}"}}, 404, "could not be found"),
    ("POST", "/groups/action", {"create-from-src": {"source_group_id": "{new}"}}, 404, "could not be found"),
    ("POST", "/groups/action", {"create-from-src": {"source_group_id": "nope"}}, 400, "is not a 'uuid'"),
    ("POST", "/group_snapshots", {"group_snapshot": {}}, 400, "'group_id' is a required property"),
    ("POST", "/group_snapshots", {"group_snapshot": {"group_id": "{new}"}}, 404, "could not be found"),
    ("POST", "/group_snapshots", {"group_snapshot": {"group_id": "{g}", "zzz": 1}}, 400, "'zzz' was"),
    ("DELETE", "/group_snapshots/{new}", None, 404, "could not be found"),
    ("POST", "/group_types", {"group_type": {}}, 400, "'name' is a required property"),
    ("POST", "/group_types", {"group_type": {"name": "x", "is_public": "maybe"}}, 400, "not a valid boolean"),
    ("POST", "/group_types", {"group_type": {"name": "x", "group_specs": {"k": 1}}}, 400, "not of type 'string'"),
    ("PUT", "/group_types/{gt}", {"group_type": {}}, 400, "Specify group type name, description"),
    ("PUT", "/group_types/{gt}", {"group_type": {"name": " "}}, 400, "can not be empty"),
    ("PUT", "/group_types/{gt}/group_specs/a", {"b": "1"}, 400, "mismatch"),
    ("PUT", "/group_types/{gt}/group_specs/a", {"a": "1", "b": "2"}, 400, "too many items"),
    ("DELETE", "/group_types/{gt}/group_specs/absent", None, 404, "has no specs with key absent"),
    ("DELETE", "/group_types/{new}", None, 404, "could not be found"),
    ("POST", "/volumes", {"volume": {"size": 1, "group_id": "{g}"}}, 400, "volume_type must be provided"),
    ("POST", "/volumes", {"volume": {"size": 1, "group_id": "{g}", "volume_type": "{vt_other}"}}, 400,
     "requested type must be supported by this group"),
    ("POST", "/volumes", {"volume": {"size": 1, "group_id": "{new}", "volume_type": "{vt}"}}, 404,
     "could not be found"),
    ("POST", "/volumes", {"volume": {"size": 1, "consistencygroup_id": "{new}", "volume_type": "{vt}"}}, 404,
     "could not be found"),
    ("DELETE", "/volumes/{in}", None, 400, "group"),
]


def fill(o, ids):
    if isinstance(o, dict):
        return {fill(k, ids): fill(v, ids) for k, v in o.items()}
    if isinstance(o, list):
        return [fill(x, ids) for x in o]
    if isinstance(o, str):
        for k, v in ids.items():
            o = o.replace("{" + k + "}", v)
    return o


@pytest.mark.parametrize("method,path,body,code,text", BAD, ids=[f"{b[0]} {b[1]} {b[4][:30]}" for b in BAD])
def test_bad_group_requests_change_nothing(agent, fixed, method, path, body, code, text):
    before = agent.db_dump()
    r = agent.request(method, fill(path, fixed), fill(body, fixed) if body is not None else None, version=V)
    assert r.status_code == code, r.text
    assert text.lower() in r.text.lower(), r.text
    fault = r.json()
    assert list(fault) in (["badRequest"], ["itemNotFound"], ["conflictingRequest"]), fault
    assert agent.db_dump() == before


def test_malformed_group_bodies_and_old_microversions(agent, fixed):
    for path in ("/groups", "/group_snapshots", "/group_types", f"/groups/{fixed['g']}/action"):
        r = agent.request("POST", path, raw=b"{not json", version=V)
        assert r.status_code == 400, r.text
    assert agent.request("GET", "/groups", version="3.12").status_code == 404
    assert agent.request("GET", "/group_snapshots", version="3.13").status_code == 404
    r = agent.request("POST", "/groups/action", {"create-from-src": {"source_group_id": fixed["g"]}},
                      version="3.13")
    assert r.status_code == 404, r.text
    # A group snapshot of a group whose member is busy is refused.
    agent.request("POST", f"/volumes/{fixed['in']}/action", {"os-reset_status": {"status": "error"}})
    before = agent.db_dump()
    r = agent.request("POST", "/group_snapshots", {"group_snapshot": {"group_id": fixed["g"]}}, version=V)
    assert r.status_code == 400 and "must be available or in-use" in r.text, r.text
    assert agent.db_dump() == before
    agent.request("POST", f"/volumes/{fixed['in']}/action", {"os-reset_status": {"status": "available"}})


def test_openstacksdk_drives_groups_too(agent, vtypes):
    from conftest import make_sdk
    bs = make_sdk(agent).block_storage
    gt = bs.create_group_type(name="sdk-" + uuid.uuid4().hex[:8], group_specs={"k": "v"})
    assert bs.get_group_type(gt.id).group_specs == {"k": "v"}
    g = bs.create_group(name="sdk-group", group_type=gt.id, volume_types=[vtypes[0]])
    wait_group(agent, g.id, "available")
    assert bs.get_group(g.id).volume_types == [vtypes[0]]
    assert g.id in [x.id for x in bs.groups()]
    vol = member(agent, g.id, vtypes[0])
    gs = bs.create_group_snapshot(group_id=g.id, name="sdk-gs")
    wait_group_snapshot(agent, gs.id, "available")
    assert bs.get_group_snapshot(gs.id).group_id == g.id
    made = bs.create_group_from_source(group_snapshot_id=gs.id, source_group_id=None, name="sdk-copy")
    wait_group(agent, made.id, "available")
    bs.reset_group_status(made, "error")
    assert bs.get_group(made.id).status == "error"
    bs.delete_group(made, delete_volumes=True)
    wait_group(agent, made.id, "deleted")
    bs.delete_group_snapshot(gs)
    wait_group_snapshot(agent, gs.id, "deleted")
    bs.delete_group(g, delete_volumes=True)
    wait_group(agent, g.id, "deleted")
    agent.wait_volume(vol["id"], "deleted")
    bs.delete_group_type(gt)
    assert agent.request("GET", f"/group_types/{gt.id}", version=V).status_code == 404
