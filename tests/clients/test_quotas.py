"""Quotas and limits (os-quota-sets, os-quota-class-sets, GET /limits): shown,
updated and deleted through python-cinderclient and openstacksdk, enforced on
create, manage-free paths (snapshot, extend, retype) with Cinder's 413 texts, and
refused with 400 where the request is wrong. Each test uses a project of its own,
so usage starts at zero."""

import uuid

import pytest
import requests

from conftest import USER, make_cinder, make_sdk, wait_for


def project():
    return uuid.uuid4().hex


class As:
    """Raw HTTP as a noauth caller (admin) of `project`."""

    def __init__(self, agent, project):
        self.agent, self.project = agent, project
        self.s = requests.Session()
        self.s.headers.update({"X-Auth-Token": f"{USER}:{project}", "Accept": "application/json"})

    def req(self, method, path, body=None):
        return self.s.request(method, f"{self.agent.endpoint}/{self.project}{path}", json=body, timeout=30)

    def volume(self, size=1, **extra):
        r = self.req("POST", "/volumes", {"volume": {"size": size, **extra}})
        if r.status_code == 202:
            vid = r.json()["volume"]["id"]
            wait_for(lambda: self.req("GET", f"/volumes/{vid}").json()["volume"]["status"] == "available",
                     what="volume available")
        return r


def over(r, text):
    assert r.status_code == 413, r.text
    assert text in r.json()["overLimit"]["message"], r.text


def test_defaults_usage_and_client_views(agent):
    p = project()
    cinder = make_cinder(agent, project=p)
    q = cinder.quotas.get(p)
    assert q.volumes == -1 and q.gigabytes == -1 and q.per_volume_gigabytes == -1
    assert getattr(q, "volumes___DEFAULT__") == -1, "per-type quotas for every type"
    As(agent, p).volume(2)
    used = cinder.quotas.get(p, usage=True)
    assert used.volumes == {"limit": -1, "in_use": 1, "reserved": 0}
    assert used.gigabytes["in_use"] == 2 and getattr(used, "gigabytes___DEFAULT__")["in_use"] == 2
    assert cinder.quotas.defaults(p).snapshots == -1
    limits = cinder.limits.get().absolute
    by_name = {x.name: x.value for x in limits}
    assert by_name["totalVolumesUsed"] == 1 and by_name["totalGigabytesUsed"] == 2, by_name
    assert by_name["maxTotalVolumes"] == -1

    sdk = make_sdk(agent)
    shown = sdk.block_storage.get_quota_set(p, usage=True)
    assert shown.usage["volumes"] == 1, shown
    sdk.block_storage.update_quota_set(p, volumes=7)
    assert sdk.block_storage.get_quota_set(p).volumes == 7
    sdk.block_storage.revert_quota_set(p)
    assert sdk.block_storage.get_quota_set(p).volumes == -1


def test_volume_and_gigabyte_quotas_are_enforced_with_cinders_texts(agent):
    p = project()
    me = As(agent, p)
    cinder = make_cinder(agent, project=p)
    cinder.quotas.update(p, volumes=2, gigabytes=3, per_volume_gigabytes=3)
    assert me.volume(1).status_code == 202
    over(me.volume(4), "Requested volume size 4G is larger than maximum allowed limit 3G.")
    over(me.volume(3, name="x"), "Requested volume or snapshot exceeds allowed gigabytes quota. Requested 3G, "
                                 "quota is 3G and 1G has been consumed.")
    second = me.volume(1).json()["volume"]["id"]
    before = agent.db_dump()
    over(me.volume(1), "Maximum number of volumes allowed (2) exceeded for quota 'volumes'.")
    assert agent.db_dump() == before, "a refused create wrote something"
    # Extend counts the growth; snapshots count their size into gigabytes.
    over(me.req("POST", f"/volumes/{second}/action", {"os-extend": {"new_size": 4}}),
         "Requested volume size 4G is larger than maximum allowed limit 3G.")
    over(me.req("POST", f"/volumes/{second}/action", {"os-extend": {"new_size": 3}}),
         "Requested volume or snapshot exceeds allowed gigabytes quota. Requested 2G, quota is 3G and 2G")
    snap = me.req("POST", "/snapshots", {"snapshot": {"volume_id": second}})
    assert snap.status_code == 202, snap.text
    sid = snap.json()["snapshot"]["id"]
    wait_for(lambda: me.req("GET", f"/snapshots/{sid}").json()["snapshot"]["status"] == "available",
             what="snapshot available")
    over(me.req("POST", f"/volumes/{second}/action", {"os-extend": {"new_size": 2}}),
         "Requested volume or snapshot exceeds allowed gigabytes quota. Requested 1G, quota is 3G and 3G")
    cinder.quotas.update(p, gigabytes=10, snapshots=1)
    over(me.req("POST", "/snapshots", {"snapshot": {"volume_id": second}}),
         "Maximum number of snapshots allowed (1) exceeded for quota 'snapshots'.")
    # A limit below what is in use is refused; -1 lifts it.
    r = me.req("PUT", f"/os-quota-sets/{p}", {"quota_set": {"volumes": 1}})
    assert r.status_code == 400 and "Current usage is 2 and the requested limit is 1" in r.text, r.text
    cinder.quotas.update(p, volumes=-1)
    assert me.volume(1).status_code == 202
    # Delete: back to the default class.
    cinder.quotas.delete(p)
    assert cinder.quotas.get(p).gigabytes == -1


def test_per_type_quotas_hold_on_create_and_retype(agent):
    p = project()
    me = As(agent, p)
    name = f"gold-{uuid.uuid4().hex[:6]}"
    assert me.req("POST", "/types", {"volume_type": {"name": name}}).status_code == 200
    r = me.req("PUT", f"/os-quota-sets/{p}", {"quota_set": {f"volumes_{name}": 1}})
    assert r.status_code == 200 and r.json()["quota_set"][f"volumes_{name}"] == 1, r.text
    assert me.volume(1, volume_type=name).status_code == 202
    over(me.volume(1, volume_type=name), f"Maximum number of volumes allowed (1) exceeded for quota 'volumes_{name}'.")
    plain = me.volume(1).json()["volume"]["id"]
    over(me.req("POST", f"/volumes/{plain}/action", {"os-retype": {"new_type": name}}),
         f"exceeded for quota 'volumes_{name}'")


def test_the_default_class_applies_to_projects_without_their_own(agent):
    p = project()
    cinder = make_cinder(agent, project=p)
    try:
        cinder.quota_classes.update("default", volumes=1)
        assert cinder.quota_classes.get("default").volumes == 1
        assert cinder.quotas.get(p).volumes == 1 and cinder.quotas.defaults(p).volumes == 1
        me = As(agent, p)
        assert me.volume(1).status_code == 202
        over(me.volume(1), "Maximum number of volumes allowed (1) exceeded for quota 'volumes'.")
    finally:
        cinder.quota_classes.update("default", volumes=-1)


@pytest.mark.parametrize("body,text", [
    ({"quota_set": {"bogus": 1}}, "Bad key(s) in quota set: bogus"),
    ({"quota_set": {"volumes": "many"}}, "volumes must be an integer."),
    ({"quota_set": {"volumes": -2}}, "volumes must be >= -1"),
    ({"quota_set": {"volumes": 2 ** 31}}, "volumes must be <= 2147483647"),
    ({"quota_set": {"volumes": None}}, "volumes must be an integer."),
    ({"quota_set": {}}, "does not have enough properties"),
    ({"quota_set": []}, ""),
    ({"quota": {"volumes": 1}}, ""),
    ({"quota_set": {"volumes": 1}, "extra": 1}, ""),
])
def test_bad_quota_updates_are_refused_and_change_nothing(agent, body, text):
    p = project()
    me = As(agent, p)
    before = agent.db_dump()
    r = me.req("PUT", f"/os-quota-sets/{p}", body)
    assert r.status_code == 400 and text in r.text, r.text
    as_class = {("quota_class_set" if k == "quota_set" else k): v for k, v in body.items()}
    r = me.req("PUT", "/os-quota-class-sets/default", as_class)
    assert r.status_code == 400, r.text
    assert agent.db_dump() == before
    assert me.req("GET", f"/os-quota-sets/{p}?usage=maybe").status_code == 400
    assert me.req("POST", f"/os-quota-sets/{p}", {"quota_set": {"volumes": 1}}).status_code == 405
