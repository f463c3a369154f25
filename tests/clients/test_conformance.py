"""Response shapes and request handling exactly as Cinder's, where the client
libraries are lenient and stricter consumers are not. Every response of every
client suite is also checked against the published schemas (schemas.py, through
conftest.py); these tests pin the defects that check found, and the ones no
schema covers (routing, sorting, markers, scheduling)."""

import uuid

import pytest

from conftest import wait_for

EXTENSION_FIELDS = {"os-vol-tenant-attr:tenant_id", "os-vol-host-attr:host", "os-vol-mig-status-attr:migstat",
                    "os-vol-mig-status-attr:name_id"}


@pytest.mark.parametrize("version", ["3.0", "3.71"])
def test_volume_create_and_update_answer_the_plain_view(agent, version):
    r = agent.request("POST", "/volumes", {"volume": {"size": 1}}, version=version)
    assert r.status_code == 202, r.text
    vid = r.json()["volume"]["id"]
    assert not EXTENSION_FIELDS & set(r.json()["volume"]), r.json()
    agent.wait_volume(vid, "available")
    r = agent.request("PUT", f"/volumes/{vid}", {"volume": {"name": "renamed"}}, version=version)
    assert r.status_code == 200 and not EXTENSION_FIELDS & set(r.json()["volume"]), r.text
    shown = agent.get_volume(vid, version=version)
    assert EXTENSION_FIELDS <= set(shown), "show keeps the extensions' fields"
    if version == "3.71":
        assert {"volume_type_id", "consumes_quota", "cluster_name"} <= set(r.json()["volume"])


def test_type_create_and_update_views(agent):
    name = f"shape-{uuid.uuid4().hex[:8]}"
    r = agent.request("POST", "/types", {"volume_type": {"name": name}})
    created = r.json()["volume_type"]
    assert "qos_specs_id" not in created and created["os-volume-type-access:is_public"] is True, created
    r = agent.request("PUT", f"/types/{created['id']}", {"volume_type": {"description": "d"}})
    updated = r.json()["volume_type"]
    assert not {"qos_specs_id", "os-volume-type-access:is_public"} & set(updated), updated
    shown = agent.request("GET", f"/types/{created['id']}").json()["volume_type"]
    assert {"qos_specs_id", "os-volume-type-access:is_public"} <= set(shown), shown


def test_snapshot_views_create_update_summary_detail(agent):
    vol = agent.create_volume(1)
    extended = {"os-extended-snapshot-attributes:progress", "os-extended-snapshot-attributes:project_id"}
    r = agent.request("POST", "/snapshots", {"snapshot": {"volume_id": vol["id"]}}, version="3.71")
    assert r.status_code == 202 and not extended & set(r.json()["snapshot"]), r.text
    assert {"user_id", "group_snapshot_id", "consumes_quota"} <= set(r.json()["snapshot"])
    sid = r.json()["snapshot"]["id"]
    agent.wait_snapshot(sid, "available")
    r = agent.request("PUT", f"/snapshots/{sid}", {"snapshot": {"name": "s"}})
    assert r.status_code == 200 and not extended & set(r.json()["snapshot"]), r.text
    summary = agent.request("GET", "/snapshots", version="3.71").json()["snapshots"]
    assert all(set(s) == {"id", "created_at", "updated_at", "name", "description", "volume_id", "status", "size",
                          "metadata"} for s in summary), summary
    detail = agent.request("GET", "/snapshots/detail", version="3.71").json()["snapshots"]
    assert all(extended | {"user_id"} <= set(s) for s in detail)


def test_trailing_slashes_name_nothing(agent):
    for method in ("GET", "PUT", "DELETE"):
        r = agent.request(method, "/volumes/", {"volume": {}} if method == "PUT" else None)
        assert r.status_code == 404 and "itemNotFound" in r.json(), (method, r.text)
    assert agent.request("GET", agent.root + "/v3/").status_code == 200, "the version document keeps its slash"


def test_sorting_markers_and_null_volume_ids(agent):
    vol = agent.create_volume(1)
    snap = agent.wait_snapshot(agent.create_snapshot(vol["id"])["id"], "available")
    r = agent.request("GET", "/snapshots?sort_key=display_name")
    assert r.status_code == 200, r.text
    for path in ("/snapshots?sort_key=bogus", "/volumes?sort_key=bogus", "/volumes?sort=bogus:asc"):
        r = agent.request("GET", path.replace("?", "?name=nothing-matches&", 1))
        assert r.status_code == 400 and "Invalid sort key" in r.text, (path, r.text)
    missing = str(uuid.uuid4())
    for path in ("/snapshots", "/volumes", "/volumes/detail", "/snapshots/detail"):
        r = agent.request("GET", f"{path}?marker={missing}")
        assert r.status_code == 404 and f"Marker {missing} could not be found." in r.text, (path, r.text)
    r = agent.request("GET", f"/snapshots?limit=1&marker={snap['id']}")
    assert r.status_code == 200, r.text
    r = agent.request("POST", "/snapshots", {"snapshot": {"volume_id": None}})
    assert r.status_code == 404 and "Volume None could not be found." in r.text, r.text


@pytest.mark.parametrize("spec", [{"storage_protocol": "nope"}, {"volume_backend_name": "not-this-one"},
                                  {"capabilities:multiattach": "<is> False"}, {"no_such_capability": "1"}])
def test_a_type_no_pool_satisfies_leaves_the_volume_in_error_with_a_message(agent, spec):
    name = f"unplaceable-{uuid.uuid4().hex[:8]}"
    r = agent.request("POST", "/types", {"volume_type": {"name": name, "extra_specs": spec}})
    assert r.status_code == 200, r.text
    before = agent.files()
    r = agent.request("POST", "/volumes", {"volume": {"size": 1, "volume_type": name}})
    assert r.status_code == 202, r.text
    vid = r.json()["volume"]["id"]
    agent.wait_volume(vid, "error")
    assert agent.files() == before, "an unplaceable volume got storage"
    messages = agent.request("GET", "/messages", version="3.3").json()["messages"]
    mine = [m for m in messages if m.get("resource_uuid") == vid]
    assert mine and mine[0]["event_id"] == "VOLUME_VOLUME_001_003", messages
    assert "No valid backend was found" in mine[0]["user_message"], mine
    assert f"{next(iter(spec))}={next(iter(spec.values()))}" in mine[0]["user_message"], mine
    r = agent.request("DELETE", f"/volumes/{vid}")
    assert r.status_code == 202, r.text
    wait_for(lambda: agent.request("GET", f"/volumes/{vid}").status_code == 404, what="deleted")


def test_a_type_the_pool_satisfies_is_placed(agent):
    caps = agent.request("GET", "/scheduler-stats/get_pools?detail=true").json()["pools"][0]["capabilities"]
    name = f"placeable-{uuid.uuid4().hex[:8]}"
    spec = {"volume_backend_name": caps["volume_backend_name"], "storage_protocol": "<or> FC <or> iSCSI",
            "thin_provisioning_support": "<is> True", "ember:target_protocol": "iscsi"}
    agent.request("POST", "/types", {"volume_type": {"name": name, "extra_specs": spec}})
    vol = agent.request("POST", "/volumes", {"volume": {"size": 1, "volume_type": name}}).json()["volume"]
    agent.wait_volume(vol["id"], "available")


def test_snapshot_metadata_through_both_clients(agent, cinder, sdk):
    vol = agent.create_volume(1)
    snap = agent.wait_snapshot(agent.create_snapshot(vol["id"], metadata={"a": "1"})["id"], "available")
    s = cinder.volume_snapshots.get(snap["id"])
    cinder.volume_snapshots.set_metadata(s, {"b": "2"})
    assert cinder.volume_snapshots.get(snap["id"]).metadata == {"a": "1", "b": "2"}
    cinder.volume_snapshots.delete_metadata(s, ["a"])
    assert cinder.volume_snapshots.get(snap["id"]).metadata == {"b": "2"}
    cinder.volume_snapshots.update_all_metadata(s, {"c": "3"})
    assert agent.request("GET", f"/snapshots/{snap['id']}/metadata").json() == {"metadata": {"c": "3"}}
    assert agent.request("GET", f"/snapshots/{snap['id']}/metadata/c").json() == {"meta": {"c": "3"}}
    r = agent.request("PUT", f"/snapshots/{snap['id']}/metadata/c", {"meta": {"c": "4"}})
    assert r.status_code == 200 and r.json() == {"meta": {"c": "4"}}, r.text
    sdk.block_storage.set_snapshot_metadata(snap["id"], d="5")
    assert sdk.block_storage.get_snapshot(snap["id"]).metadata == {"c": "4", "d": "5"}
    sdk.block_storage.delete_snapshot_metadata(snap["id"], keys=["d"])
    assert agent.request("GET", f"/snapshots/{snap['id']}/metadata").json() == {"metadata": {"c": "4"}}
    # Bad input changes nothing.
    before = agent.db_dump()
    for method, path, body, code in [
        ("GET", "/metadata/absent", None, 404), ("DELETE", "/metadata/absent", None, 404),
        ("PUT", "/metadata/c", {"meta": {"x": "1"}}, 400), ("PUT", "/metadata/c", {"meta": {"c": "1", "x": "2"}}, 400),
        ("POST", "/metadata", {"metadata": {"k": 5}}, 400), ("POST", "/metadata", {"meta": {"k": "v"}}, 400),
        ("PUT", "/metadata", {"metadata": {"": "v"}}, 400), ("POST", "/metadata", {"metadata": {"k": "v" * 256}}, 400),
        ("POST", "/metadata", {"metadata": {f"m{i}": "v" for i in range(129)}}, 413),
        ("DELETE", "/metadata", None, 405),
    ]:
        r = agent.request(method, f"/snapshots/{snap['id']}{path}", body)
        assert r.status_code == code, (method, path, r.text)
    r = agent.request("GET", f"/snapshots/{uuid.uuid4()}/metadata")
    assert r.status_code == 404, r.text
    assert agent.db_dump() == before


def test_volume_summary_availability_zones_and_backups(agent, cinder):
    agent.create_volume(2, metadata={"tier": "gold"})
    r = agent.request("GET", "/volumes/summary", version="3.36")
    summary = r.json()["volume-summary"]
    assert summary["total_count"] >= 1 and summary["total_size"] >= 2 and "gold" in summary["metadata"]["tier"]
    assert "metadata" not in agent.request("GET", "/volumes/summary", version="3.12").json()["volume-summary"]
    assert agent.request("GET", "/volumes/summary", version="3.11").status_code == 404
    assert cinder.volumes.summary(all_tenants=False)["volume-summary"]["total_count"] >= 1
    zones = cinder.availability_zones.list()
    assert [(z.zoneName, z.zoneState) for z in zones] == [("nova", {"available": True})]
    for method, path in [("GET", "/backups"), ("GET", "/backups/detail"), ("POST", "/backups")]:
        r = agent.request(method, path, {"backup": {"volume_id": str(uuid.uuid4())}} if method == "POST" else None)
        assert r.status_code == 501 and "backups are not supported yet" in r.text, r.text


@pytest.mark.parametrize("version", ["3.0", "3.71"])
def test_os_services_list_and_a_disabled_service_takes_no_new_volumes(agent, version):
    from conftest import make_cinder
    cinder = make_cinder(agent, version)
    (svc,) = cinder.services.list()
    assert svc.binary == "cinder-volume" and svc.status == "enabled" and svc.state == "up" and "@" in svc.host
    assert cinder.services.list(binary="cinder-scheduler") == []
    try:
        r = cinder.services.disable_log_reason(svc.host, "cinder-volume", "disk swap")
        assert r.status == "disabled" and r.disabled_reason == "disk swap"
        assert cinder.services.list()[0].disabled_reason == "disk swap"
        r = agent.request("POST", "/volumes", {"volume": {"size": 1}})
        vid = r.json()["volume"]["id"]
        agent.wait_volume(vid, "error")
        messages = agent.request("GET", "/messages", version="3.3").json()["messages"]
        assert any(m.get("resource_uuid") == vid and "disabled (disk swap)" in m["user_message"] for m in messages)
        agent.request("DELETE", f"/volumes/{vid}")
    finally:
        assert cinder.services.enable(svc.host, "cinder-volume").status == "enabled"
    agent.create_volume(1)
    for what, body, code in [("enable", {"host": "elsewhere@x", "binary": "cinder-volume"}, 404),
                             ("disable", {"host": svc.host, "binary": "cinder-backup"}, 404),
                             ("disable", {"host": svc.host}, 400),
                             ("disable", {"host": svc.host, "binary": "cinder-volume", "x": 1}, 400),
                             ("disable-log-reason", {"host": svc.host, "binary": "cinder-volume"}, 400),
                             ("bogus", {"host": svc.host, "binary": "cinder-volume"}, 404)]:
        r = agent.request("PUT", f"/os-services/{what}", body)
        assert r.status_code == code, (what, body, r.text)
    assert cinder.services.list()[0].status == "enabled"


def test_update_snapshot_status_reports_an_outside_snapshot(agent, cinder):
    vid = agent.create_volume(1)["id"]
    sid = agent.request("POST", "/snapshots", {"snapshot": {"volume_id": vid}}).json()["snapshot"]["id"]
    wait_for(lambda: agent.request("GET", f"/snapshots/{sid}").json()["snapshot"]["status"] == "available")
    snap = cinder.volume_snapshots.get(sid)

    def status():
        s = agent.request("GET", f"/snapshots/{sid}").json()["snapshot"]
        return s["status"], s["os-extended-snapshot-attributes:progress"]

    r = agent.request("POST", f"/snapshots/{sid}/action", {"os-update_snapshot_status": {"status": "error"}})
    assert r.status_code == 400 and "status available not allowed" in r.text, r.text
    cinder.volume_snapshots.reset_state(snap, "creating")
    cinder.volume_snapshots.update_snapshot_status(snap, {"status": "creating", "progress": "40%"})
    assert status() == ("creating", "40%")
    for body in [{"status": "deleting"}, {"status": "available", "progress": "101%"},
                 {"status": "available", "progress": "40"}, {"status": "available", "progress": 40},
                 {"status": "available", "x": 1}, {"progress": "50%"}, {"status": 1}]:
        r = agent.request("POST", f"/snapshots/{sid}/action", {"os-update_snapshot_status": body})
        assert r.status_code == 400, (body, r.text)
    assert status() == ("creating", "40%"), "nothing changed"
    cinder.volume_snapshots.update_snapshot_status(snap, {"status": "available", "progress": "100%"})
    assert status() == ("available", "100%")
    r = agent.request("POST", f"/snapshots/{uuid.uuid4()}/action", {"os-update_snapshot_status": {"status": "error"}})
    assert r.status_code == 404
