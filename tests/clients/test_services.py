"""Service and host views an operator uses: freezing the backend, changing log
levels while the agent runs, os-hosts, a backend's capabilities and the list of
extensions, through python-cinderclient and openstacksdk, and refused cleanly
where the request is wrong."""

import time
import uuid

import pytest

from conftest import make_cinder, make_sdk, start_agent, stop_agent, wait_for


@pytest.fixture
def own_agent():
    agent = start_agent()
    yield agent
    stop_agent(agent)


def test_a_frozen_backend_refuses_deletes_and_snapshots_until_it_thaws(own_agent):
    agent = own_agent
    cinder = make_cinder(agent, "3.71")
    vid = agent.create_volume(1)["id"]
    (svc,) = cinder.services.list()
    cinder.services.freeze_host(svc.host)
    (frozen,) = cinder.services.list()
    assert frozen.frozen is True and frozen.status == "disabled" and frozen.disabled_reason == "frozen"
    refused = "Modification operations are not allowed on frozen storage backends"
    for method, path, body in [("DELETE", f"/volumes/{vid}", None),
                               ("POST", "/snapshots", {"snapshot": {"volume_id": vid}}),
                               ("POST", f"/volumes/{vid}/action", {"os-force_delete": None})]:
        r = agent.request(method, path, body)
        assert r.status_code == 400 and refused in r.json()["badRequest"]["message"], (path, r.text)
    assert agent.request("GET", f"/volumes/{vid}").json()["volume"]["status"] == "available", "nothing changed"
    assert agent.request("GET", "/snapshots").json()["snapshots"] == []
    # A new volume finds the backend disabled, as Cinder's scheduler would.
    new = agent.request("POST", "/volumes", {"volume": {"size": 1}}).json()["volume"]["id"]
    agent.wait_volume(new, "error")
    r = agent.request("PUT", "/os-services/freeze", {"host": svc.host})
    assert r.status_code == 400 and "already frozen" in r.text, r.text
    # openstacksdk thaws it; everything works again.
    sdk = make_sdk(agent)
    service = next(sdk.block_storage.services())
    sdk.block_storage.thaw_service(service)
    (thawed,) = cinder.services.list()
    assert thawed.frozen is False and thawed.status == "enabled"
    assert agent.request("DELETE", f"/volumes/{new}").status_code == 202
    sid = agent.request("POST", "/snapshots", {"snapshot": {"volume_id": vid}}).json()["snapshot"]["id"]
    wait_for(lambda: agent.request("GET", f"/snapshots/{sid}").json()["snapshot"]["status"] == "available")
    for body, code in [({"host": "elsewhere@x"}, 400), ({}, 400), ({"host": svc.host, "x": 1}, 400),
                       ({"host": 7}, 400), ({"cluster": "c1"}, 404), ({"host": svc.host}, 400)]:
        r = agent.request("PUT", "/os-services/thaw", body)
        assert r.status_code == code, (body, r.text)


def debug_lines(agent, marker):
    return [line for line in agent.log().splitlines() if marker in line and "DEBUG" in line]


def test_log_levels_change_what_the_running_agent_logs(own_agent):
    agent = own_agent
    cinder = make_cinder(agent, "3.32")
    levels = {(x.binary, x.prefix): x.level for x in cinder.services.get_log_levels("", "", "ember.api")}
    assert levels[("cinder-api", "ember::api")] == "INFO" and levels[("cinder-volume", "ember::api")] == "INFO"
    marker = f"/volumes/{uuid.uuid4()}"
    agent.request("GET", marker)
    cinder.services.set_log_levels("debug", "", "", "ember.api")
    levels = {(x.binary, x.prefix): x.level for x in cinder.services.get_log_levels("cinder-api", "", "ember")}
    assert levels[("cinder-api", "ember::api")] == "DEBUG" and levels[("cinder-api", "ember::manager")] == "INFO"
    agent.request("GET", marker)
    wait_for(lambda: debug_lines(agent, marker), what="a DEBUG line for the request")
    # openstacksdk puts everything back to INFO: the request is no longer logged.
    sdk = make_sdk(agent)
    sdk.block_storage.set_service_log_levels(level="INFO")
    seen = len(debug_lines(agent, marker))
    agent.request("GET", marker)
    time.sleep(0.3)
    assert len(debug_lines(agent, marker)) == seen
    got = list(sdk.block_storage.get_service_log_levels(binary="cinder-volume"))
    assert [g.binary for g in got] == ["cinder-volume"] and set(got[0].levels.values()) == {"INFO"}
    assert cinder.services.get_log_levels("cinder-scheduler", "", "") == [], "no such service here"
    assert cinder.services.get_log_levels("", "another-host", "") == []
    for what, body in [("set-log", {"level": "TRACE"}), ("set-log", {}), ("set-log", {"level": "INFO", "x": 1}),
                       ("set-log", {"level": "INFO", "binary": "nova-compute"}), ("get-log", {"level": "INFO"}),
                       ("get-log", {"prefix": 5})]:
        r = agent.request("PUT", f"/os-services/{what}", body, version="3.32")
        assert r.status_code == 400, (what, body, r.text)
    assert agent.request("PUT", "/os-services/get-log", {}, version="3.31").status_code == 404


def test_os_hosts_capabilities_and_extensions(agent, cinder, sdk):
    vid = agent.create_volume(2)["id"]
    sid = agent.request("POST", "/snapshots", {"snapshot": {"volume_id": vid}}).json()["snapshot"]["id"]
    wait_for(lambda: agent.request("GET", f"/snapshots/{sid}").json()["snapshot"]["status"] == "available")
    (host,) = agent.request("GET", "/os-hosts").json()["hosts"]
    assert host["service"] == "cinder-volume" and host["service-state"] == "enabled" and "@" in host["host_name"]
    assert agent.request("GET", "/os-hosts?zone=elsewhere").json()["hosts"] == []
    usage = agent.request("GET", f"/os-hosts/{host['host_name']}").json()["host"]
    total, *projects = [u["resource"] for u in usage]
    assert total["project"] == "(total)" and int(total["volume_count"]) >= 1 and int(total["snapshot_count"]) >= 1
    assert int(total["total_volume_gb"]) == sum(int(p["total_volume_gb"]) for p in projects)
    assert agent.request("GET", "/os-hosts/nowhere@x").status_code == 404
    r = agent.request("PUT", f"/os-hosts/{host['host_name']}", {"Status": "Disable"})
    assert r.json() == {"host": host["host_name"], "status": "disabled"}
    try:
        assert cinder.services.list()[0].status == "disabled"
    finally:
        r = agent.request("PUT", f"/os-hosts/{host['host_name']}", {"status": "enable"})
        assert r.json()["status"] == "enabled"
    for body in [{"status": "off"}, {"zone": "x"}, {"status": 1}]:
        assert agent.request("PUT", f"/os-hosts/{host['host_name']}", body).status_code == 400, body

    caps = cinder.capabilities.get(host["host_name"])
    assert caps.namespace == f"OS::Storage::Capabilities::{host['host_name']}" and caps.vendor_name == "ember"
    assert set(caps.properties) >= {"thin_provisioning", "qos"}
    assert sdk.block_storage.get_capabilities(host["host_name"]).volume_backend_name == caps.volume_backend_name
    assert agent.request("GET", "/capabilities/nowhere@x").status_code == 404

    aliases = {e.alias for e in sdk.block_storage.extensions()}
    assert {"os-hosts", "os-volume-transfer", "os-quota-sets", "capabilities"} <= aliases
    from cinderclient.v3.contrib import list_extensions
    listed = list_extensions.ListExtManager(cinder).show_all()
    assert {e.alias for e in listed} == aliases
    assert agent.request("GET", "/extensions/os-hosts").json()["extension"]["name"] == "Hosts"
    assert agent.request("GET", "/extensions/nope").status_code == 404
