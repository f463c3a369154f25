"""Limits on what one volume can be made to carry, and on what listings cost.

Cinder bounds each metadata key (255) and value (255; 65,535 for image
metadata) but not how many accumulate: 200 requests of 65 KB image metadata made
one volume's show 13 MB. ember allows 128 items and 256 KiB per kind and volume,
and refuses more with 413, changing nothing.
"""

import concurrent.futures
import time

import requests

from conftest import start_agent, stop_agent, wait_for

MAX_ITEMS, MAX_BYTES = 128, 256 * 1024


def over_limit(r):
    assert r.status_code == 413, r.text
    assert set(r.json()) == {"overLimit"} and "at most 128 items" in r.json()["overLimit"]["message"], r.text


def test_image_metadata_cannot_grow_without_bound(agent):
    vol = agent.create_volume(1)
    big = "x" * 65535
    for i in range(3):
        r = agent.action(vol["id"], {"os-set_image_metadata": {"metadata": {f"k{i}": big}}})
        assert r.status_code == 200, r.text
    before = agent.db_dump()
    over_limit(agent.action(vol["id"], {"os-set_image_metadata": {"metadata": {"k3": big}}}))
    # Replacing a value in place stays within the total.
    r = agent.action(vol["id"], {"os-set_image_metadata": {"metadata": {"k0": "small"}}})
    assert r.status_code == 200, r.text
    # Many small items: the count limit.
    many = {f"m{i}": "v" for i in range(MAX_ITEMS)}
    before = agent.db_dump()
    over_limit(agent.action(vol["id"], {"os-set_image_metadata": {"metadata": many}}))
    assert agent.db_dump() == before, "a refused change wrote something"
    shown = agent.request("GET", f"/volumes/{vol['id']}")
    assert len(shown.content) < 2 * MAX_BYTES, len(shown.content)


def test_volume_metadata_is_bounded_in_count_on_every_path(agent):
    many = {f"m{i}": "v" for i in range(MAX_ITEMS + 1)}
    before = agent.db_dump()
    over_limit(agent.request("POST", "/volumes", {"volume": {"size": 1, "metadata": many}}))
    assert agent.db_dump() == before
    vol = agent.create_volume(1, metadata={f"m{i}": "v" for i in range(MAX_ITEMS - 1)})
    before = agent.db_dump()
    over_limit(agent.request("POST", f"/volumes/{vol['id']}/metadata", {"metadata": {"a": "1", "b": "2"}}))
    over_limit(agent.request("PUT", f"/volumes/{vol['id']}/metadata", {"metadata": many}))
    over_limit(agent.request("PUT", f"/volumes/{vol['id']}", {"volume": {"metadata": many}}))
    assert agent.db_dump() == before
    # Up to the limit is fine, by merge and by replacement.
    r = agent.request("POST", f"/volumes/{vol['id']}/metadata", {"metadata": {"a": "1"}})
    assert r.status_code == 200 and len(r.json()["metadata"]) == MAX_ITEMS, r.text
    r = agent.request("PUT", f"/volumes/{vol['id']}/metadata", {"metadata": {"only": "one"}})
    assert r.status_code == 200 and r.json()["metadata"] == {"only": "one"}, r.text


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith(field + ":")).split()[1])


def test_a_listing_storm_does_not_leave_the_agent_bloated():
    """20 clients listing a 1 MB /volumes/detail at once: each listing's JSON tree
    is a multiple of its text, and glibc keeps what every blocking thread freed.
    Listings now run at most one per core (the rest wait their turn), encoded on
    the thread that built them; memory at the peak and after stays bounded."""
    a = start_agent("[pool]\nmax_over_subscription_ratio = 100.0\n")
    try:
        meta = {f"key{i}": "v" * 250 for i in range(4)}
        for i in range(300):
            r = a.request("POST", "/volumes", {"volume": {"size": 1, "name": f"storm-{i}", "metadata": meta}})
            assert r.status_code == 202, r.text
        wait_for(lambda: all(v["status"] == "available" for v in a.request("GET", "/volumes/detail").json()["volumes"]),
                 timeout=120, what="300 volumes available")
        size = len(a.request("GET", "/volumes/detail").content)
        assert size > 400_000, size
        base = status_kib(a.proc.pid, "VmRSS")

        def lister(_):
            s = requests.Session()
            s.headers.update(a.session.headers)
            for _ in range(3):
                r = s.get(a.base + "/volumes/detail", timeout=120)
                assert r.status_code == 200 and len(r.content) == size
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            list(pool.map(lister, range(20)))
        peak = status_kib(a.proc.pid, "VmHWM")
        time.sleep(3)
        after = status_kib(a.proc.pid, "VmRSS")
        print(f"listing {size} bytes: RSS {base} KiB before, peak {peak}, {after} after")
        assert peak - base < 64 * 1024, (base, peak)
        assert after - base < 24 * 1024, (base, after)
    finally:
        stop_agent(a)
