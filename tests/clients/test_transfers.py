"""Volume transfers between projects (os-volume-transfer; volume-transfers at
3.55 with no_snapshots): offered by the owner, accepted by another project with
the auth key through python-cinderclient and openstacksdk, within the
acceptor's quotas, and refused cleanly where the request is wrong."""

import uuid

import pytest
import requests

from conftest import USER, make_cinder, make_sdk, wait_for


def as_project(agent, project):
    s = requests.Session()
    s.headers.update({"X-Auth-Token": f"{USER}:{project}", "Accept": "application/json"})

    def req(method, path, body=None, version=None):
        headers = {"OpenStack-API-Version": f"volume {version}"} if version else {}
        return s.request(method, f"{agent.endpoint}/{project}{path}", json=body, headers=headers, timeout=30)
    return req


def new_volume(req, size=1):
    vid = req("POST", "/volumes", {"volume": {"size": size}}).json()["volume"]["id"]
    wait_for(lambda: req("GET", f"/volumes/{vid}").json()["volume"]["status"] == "available", what="available")
    return vid


@pytest.mark.parametrize("version", ["3.0", "3.71"])
def test_a_volume_moves_to_the_accepting_project_with_its_snapshots(agent, version):
    giver, taker = uuid.uuid4().hex, uuid.uuid4().hex
    g, t = as_project(agent, giver), as_project(agent, taker)
    vid = new_volume(g)
    sid = g("POST", "/snapshots", {"snapshot": {"volume_id": vid}}).json()["snapshot"]["id"]
    wait_for(lambda: g("GET", f"/snapshots/{sid}").json()["snapshot"]["status"] == "available", what="snapshot")
    cinder_g, cinder_t = make_cinder(agent, version, project=giver), make_cinder(agent, version, project=taker)
    offer = cinder_g.transfers.create(vid, name="move-me")
    assert len(offer.auth_key) == 16 and offer.volume_id == vid
    assert g("GET", f"/volumes/{vid}").json()["volume"]["status"] == "awaiting-transfer"
    assert [x.id for x in cinder_g.transfers.list()] == [offer.id]
    assert cinder_t.transfers.list() == [], "another project does not list the offer"
    # A wrong key changes nothing.
    r = t("POST", f"/os-volume-transfer/{offer.id}/accept", {"accept": {"auth_key": "x" * 16}})
    assert r.status_code == 400 and "invalid auth key" in r.text, r.text
    cinder_t.transfers.accept(offer.id, offer.auth_key)
    moved = t("GET", f"/volumes/{vid}").json()["volume"]
    assert moved["status"] == "available" and moved["user_id"] == USER
    assert moved["os-vol-tenant-attr:tenant_id"] == taker
    assert vid not in [v["id"] for v in g("GET", "/volumes").json()["volumes"]], "the giver lost it"
    assert t("GET", f"/snapshots/{sid}").status_code == 200, "its snapshot moved along"
    assert cinder_g.transfers.list() == []
    # The taker may use it as its own: delete it with its snapshot.
    assert t("DELETE", f"/volumes/{vid}?cascade=true").status_code == 202


def test_no_snapshots_delete_and_quota_of_the_acceptor(agent):
    giver, taker = uuid.uuid4().hex, uuid.uuid4().hex
    g, t = as_project(agent, giver), as_project(agent, taker)
    vid = new_volume(g, size=2)
    sdk = make_sdk(agent)
    r = g("POST", "/volume-transfers", {"transfer": {"volume_id": vid, "no_snapshots": True}}, version="3.57")
    assert r.status_code == 202, r.text
    offer = r.json()["transfer"]
    assert offer["no_snapshots"] is True and offer["source_project_id"] == giver and offer["accepted"] is False
    # Withdrawn: the volume is available again, the transfer gone.
    assert g("DELETE", f"/volume-transfers/{offer['id']}", version="3.55").status_code == 202
    assert g("GET", f"/volumes/{vid}").json()["volume"]["status"] == "available"
    assert g("GET", f"/volume-transfers/{offer['id']}", version="3.55").status_code == 404
    # The acceptor's quota holds: 1 GB left, the volume is 2.
    again = g("POST", "/os-volume-transfer", {"transfer": {"volume_id": vid, "name": None}}).json()["transfer"]
    assert t("PUT", f"/os-quota-sets/{taker}", {"quota_set": {"gigabytes": 1}}).status_code == 200
    r = t("POST", f"/os-volume-transfer/{again['id']}/accept", {"accept": {"auth_key": again["auth_key"]}})
    assert r.status_code == 413 and "gigabytes quota" in r.text, r.text
    assert g("GET", f"/volumes/{vid}").json()["volume"]["status"] == "awaiting-transfer"
    t("PUT", f"/os-quota-sets/{taker}", {"quota_set": {"gigabytes": -1}})
    assert sdk.block_storage.get_transfer(again["id"]).volume_id == vid
    r = t("POST", f"/os-volume-transfer/{again['id']}/accept", {"accept": {"auth_key": again["auth_key"]}})
    assert r.status_code == 202 and r.json()["transfer"]["volume_id"] == vid, r.text


@pytest.mark.parametrize("body,code", [
    ({"transfer": {}}, 400),
    ({"transfer": {"volume_id": "not-a-uuid"}}, 400),
    ({"transfer": {"volume_id": str(uuid.uuid4())}}, 404),
    ({"transfer": {"volume_id": "{vid}", "bogus": 1}}, 400),
    ({"transfer": {"volume_id": "{vid}", "no_snapshots": True}}, 400),
    ({"transfer": {"volume_id": "{vid}", "name": 5}}, 400),
    ({"volume_id": "{vid}"}, 400),
])
def test_bad_transfer_requests_change_nothing(agent, body, code):
    g = as_project(agent, uuid.uuid4().hex)
    vid = new_volume(g)
    fill = lambda o: ({k: fill(v) for k, v in o.items()} if isinstance(o, dict)
                      else (vid if o == "{vid}" else o))
    before = agent.db_dump()
    r = g("POST", "/os-volume-transfer", fill(body))
    assert r.status_code == code, r.text
    assert agent.db_dump() == before
    r = g("POST", f"/os-volume-transfer/{uuid.uuid4()}/accept", {"accept": {"auth_key": "k"}})
    assert r.status_code == 404, r.text
    r = g("POST", f"/os-volume-transfer/{uuid.uuid4()}/accept", {"accept": {}})
    assert r.status_code == 400, r.text
    assert g("GET", "/volume-transfers", version="3.54").status_code == 404
    # A volume in use or already offered cannot be offered.
    g("POST", "/os-volume-transfer", {"transfer": {"volume_id": vid}})
    r = g("POST", "/os-volume-transfer", {"transfer": {"volume_id": vid}})
    assert r.status_code == 400 and "status must be available" in r.text, r.text
