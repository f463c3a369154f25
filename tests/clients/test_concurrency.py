"""Conditional updates under real concurrency: many callers race for the same
transition and exactly one wins, with the store left consistent."""

import threading

import requests

from conftest import PROJECT, USER


def race(agent, volume_id, body, n=24, version=None):
    """Fires `n` identical actions at once; returns the status codes."""
    barrier = threading.Barrier(n)
    codes = [None] * n

    def one(i):
        s = requests.Session()
        headers = {"X-Auth-Token": f"{USER}:{PROJECT}", "Content-Type": "application/json"}
        if version:
            headers["OpenStack-API-Version"] = f"volume {version}"
        barrier.wait()
        r = s.post(f"{agent.base}/volumes/{volume_id}/action", json=body, headers=headers, timeout=30)
        codes[i] = r.status_code

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return codes


def test_one_reserve_wins(agent):
    vol = agent.create_volume()
    codes = race(agent, vol["id"], {"os-reserve": None})
    assert sorted(set(codes)) == [202, 400], codes
    assert codes.count(202) == 1, codes
    assert agent.get_volume(vol["id"])["status"] == "attaching"


def test_one_extend_wins_and_the_size_is_right(agent):
    vol = agent.create_volume()
    codes = race(agent, vol["id"], {"os-extend": {"new_size": 2}})
    assert codes.count(202) == 1, codes
    assert set(codes) <= {202, 400}, codes
    done = agent.wait_volume(vol["id"], "available")
    assert done["size"] == 2
    assert agent.volume_file(vol["id"]).stat().st_size == 2 << 30


def test_one_attach_of_a_plain_volume_wins(agent):
    vol = agent.create_volume()
    n = 16
    barrier = threading.Barrier(n)
    codes = [None] * n

    def one(i):
        barrier.wait()
        body = {"os-attach": {"instance_uuid": f"00000000-0000-0000-0000-{i:012d}", "mountpoint": "/dev/vdb"}}
        codes[i] = requests.post(f"{agent.base}/volumes/{vol['id']}/action", json=body, timeout=30,
                                 headers={"X-Auth-Token": f"{USER}:{PROJECT}"}).status_code

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes.count(202) == 1, codes
    got = agent.get_volume(vol["id"])
    assert got["status"] == "in-use" and len(got["attachments"]) == 1


def test_deletes_race_with_snapshots(agent):
    """A snapshot racing a delete: either the snapshot is refused or the delete is;
    never a deleted volume with a live snapshot."""
    for _ in range(5):
        vol = agent.create_volume()
        results = {}

        def snap():
            results["snap"] = agent.request("POST", "/snapshots", {"snapshot": {"volume_id": vol["id"]}})

        def delete():
            results["delete"] = agent.request("DELETE", f"/volumes/{vol['id']}")

        ts = [threading.Thread(target=snap), threading.Thread(target=delete)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        s, d = results["snap"].status_code, results["delete"].status_code
        assert (s, d) in {(202, 400), (400, 202), (404, 202)}, (s, d, results["snap"].text, results["delete"].text)
        if d == 202:
            agent.wait_volume(vol["id"], "deleted")
        else:
            agent.wait_snapshot(results["snap"].json()["snapshot"]["id"], "available")
