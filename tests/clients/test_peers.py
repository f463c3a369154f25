"""Migration between two agents (`[[peers]]`): agent A on 127.0.0.1 and agent B
on 127.0.0.2, each with its own data dir, naming each other with a shared
token. A volume migrated from A to `node-b@...` is streamed, verified by B,
adopted by B under its own id, and gone from A; failures (kill -9 of either
side, a cut network, a wrong token, an unreachable peer) leave the source as
it was, with a user message, and no destination behind on B."""

import os
import socket
import struct
import tempfile
import threading
from pathlib import Path

import pytest
import requests

from conftest import cinder_cli_for, free_port, make_cinder, start_agent, stop_agent, wait_for
from test_pools import digest, fill

MIB = 1 << 20
TOKEN = "pair-token-" + "0123456789abcdef"
A_IP, B_IP = "127.0.0.1", "127.0.0.2"
A_EXTRA = "[pool]\nmax_over_subscription_ratio = 1000.0\n[copy]\nmax_bytes_per_second = 41943040\n"


def config(host, peer, url, token=TOKEN, extra=""):
    return (f'host = "{host}"\n{extra}'
            f'[[peers]]\nname = "{peer}"\nurl = "{url}"\ntoken = "{token}"\ntimeout = 20\n')


class Side:
    """One agent of the pair, restartable on the same address (its peer's
    configuration names it)."""

    def __init__(self, ip, config_text):
        self.ip, self.port = ip, free_port(ip)
        self.config = config_text
        self.data_dir = tempfile.mkdtemp(prefix="ember-peer-", dir=os.environ.get("EMBER_TEST_TMP"))
        self.agent = None

    @property
    def url(self):
        return f"http://{self.ip}:{self.port}"

    def start(self, config_text=None):
        self.agent = start_agent((config_text or self.config)(self), data_dir=self.data_dir, ip=self.ip,
                                 port=self.port)
        self.cinder = make_cinder(self.agent)
        return self

    def kill(self):
        self.agent.proc.kill()
        self.agent.proc.wait()

    def file(self, volume_id):
        return Path(self.data_dir) / "volumes" / f"volume-{volume_id}"

    def volume(self, volume_id):
        r = self.agent.request("GET", f"/volumes/{volume_id}")
        assert r.status_code in (200, 404), r.text
        return r.json()["volume"] if r.status_code == 200 else None

    def records(self):
        return sorted(v.id for v in self.cinder.volumes.list())


@pytest.fixture(scope="module")
def pair():
    """A (throttled to 40 MiB/s, so a copy can be caught in flight) and B."""
    a, b = Side(A_IP, None), Side(B_IP, None)
    # A over-subscribes (it holds volumes larger than its disk); B does not, so
    # such a volume does not fit B: a full destination.
    a.config = lambda s: config("node-a", "node-b", b.url, extra=A_EXTRA)
    # B's pool has a backend name of its own: a type naming it is one only B serves.
    b.config = lambda s: config("node-b", "node-a", a.url, extra='[pool]\nbackend_name = "on-b"\n')
    a.start(), b.start()
    yield a, b
    for side in (a, b):
        assert TOKEN not in side.agent.log(), "the token is never logged"
    for side in (a, b):
        stop_agent(side.agent)


def b_host(b):
    (pool,) = b.cinder.pools.list()
    assert pool.name.startswith("node-b@")
    return pool.name


def new_volume(side, pieces, size=1, **extra):
    v = side.cinder.volumes.create(size, **extra)
    wait_for(lambda: side.cinder.volumes.get(v.id).status == "available", what="volume available")
    fill(side.file(v.id), pieces)
    return side.cinder.volumes.get(v.id), digest(side.file(v.id))


def wait_adopted(a, b, volume_id, timeout=120):
    """A's record gone, B's available with migration_status success."""
    def done():
        there = b.volume(volume_id)
        return a.volume(volume_id) is None and there and there["status"] == "available" and there
    return wait_for(done, timeout=timeout, what="the volume adopted by the peer")


def wait_failed(a, volume_id, timeout=60):
    return wait_for(lambda: (v := a.volume(volume_id)) and v["migration_status"] == "error"
                    and v["status"] == "available" and v, timeout=timeout, what="the migration failed")


def message_for(side, volume_id):
    msgs = [m for m in make_cinder(side.agent, version="3.3").messages.list() if m.resource_uuid == volume_id]
    assert msgs, "a user message says why"
    return msgs[-1].user_message


def job_copying(a, volume_id):
    r = a.agent.session.get(f"{a.url}/ember/v1/jobs", timeout=10)
    assert r.status_code == 200, r.text
    return next((j for j in r.json()["jobs"] if j["volume_id"] == volume_id and j["kind"] == "migrate_to_peer"
                 and j["copy"] and j["copy"]["bytes_done"] > 0), None)


def streaming(a, b, pieces):
    """A volume of `pieces` on A, its migration to B under way: (volume, digest, job)."""
    v, before = new_volume(a, pieces)
    a.cinder.volumes.migrate_volume(v, b_host(b), False, False)
    job = wait_for(lambda: job_copying(a, v.id), what="the stream under way")
    return v, before, job


def targets_on(b):
    return [v for v in b.cinder.volumes.list() if (v.migration_status or "").startswith("target:")]


@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_a_volume_migrates_to_a_peer_and_keeps_its_id_bytes_and_metadata(pair, kind):
    a, b = pair
    pieces = ([(0, b"head" * 1024), (300 * MIB, os.urandom(MIB)), ((1 << 30) - 4096, b"tail" * 1024)]
              if kind == "sparse" else [(0, os.urandom(32 * MIB))])
    v, before = new_volume(a, pieces, name=f"moving-{kind}", metadata={"owner": "team-x"})
    host = b_host(b)
    a.cinder.volumes.migrate_volume(v, host, False, False)
    moved = wait_adopted(a, b, v.id)
    assert (moved["migration_status"], moved["name"], moved["metadata"]) == ("success", f"moving-{kind}",
                                                                              {"owner": "team-x"})
    assert moved["os-vol-host-attr:host"] == host and moved["size"] == 1
    assert digest(b.file(v.id)) == before, "B holds exactly the bytes A had"
    assert not a.file(v.id).exists(), "A gave the source up"
    if kind == "sparse":
        assert os.stat(b.file(v.id)).st_blocks * 512 < 8 * MIB, "the holes stayed holes"
    assert v.id not in a.records() and not targets_on(b), "no leftover record on either side"
    # The volume is B's now: B deletes it.
    b.cinder.volumes.delete(v.id)
    wait_for(lambda: b.volume(v.id) is None and not b.file(v.id).exists(), what="deleted on B")


def test_the_statuses_at_each_step_and_the_cinder_cli(pair, tmp_path):
    a, b = pair
    v, before = new_volume(a, [(0, os.urandom(120 * MIB))])
    run = cinder_cli_for(a.agent, tmp_path)
    run("migrate", v.id, b_host(b))
    job = wait_for(lambda: job_copying(a, v.id), what="the stream under way")
    source = a.volume(v.id)
    assert (source["status"], source["migration_status"]) == ("maintenance", "migrating")
    dest_id = job["copy"]["destination_volume_id"]
    dest = b.volume(dest_id)
    assert (dest["status"], dest["migration_status"]) == ("creating", f"target:{v.id}")
    limits = b.agent.request("GET", "/limits").json()["limits"]["absolute"]
    assert limits["totalVolumesUsed"] == 0, "a destination is not counted on B"
    wait_adopted(a, b, v.id)
    assert b.volume(dest_id) is None and digest(b.file(v.id)) == before
    b.cinder.volumes.delete(v.id)


def test_refusals_leave_the_source_as_it_was(pair):
    a, b = pair
    plain, _ = new_volume(a, [(0, b"x" * 4096)])
    snapped, _ = new_volume(a, [(0, b"y" * 4096)])
    snap = a.cinder.volume_snapshots.create(snapped.id)
    wait_for(lambda: a.cinder.volume_snapshots.get(snap.id).status == "available", what="snapshot")
    for volume, body, why in [
        (plain, {"host": "node-z@file#file"}, "unknown host"),
        (snapped, {"host": b_host(b)}, "a volume with snapshots"),
        (plain, {"host": b_host(b), "cluster": "node-b@file"}, "host and cluster"),
    ]:
        before = a.agent.db_dump()
        r = a.agent.action(volume.id, {"os-migrate_volume": body}, version="3.16")
        assert r.status_code == 400, (why, r.text)
        assert a.agent.db_dump() == before, why
    assert not targets_on(b)


def test_a_peer_that_refuses_the_credential_or_cannot_be_reached_fails_cleanly(pair):
    a, b = pair
    closed = free_port(B_IP)
    a.kill()
    wrong = lambda s: (config("node-a", "node-b", b.url, token="wrong-token-0123456789") +
                       f'[[peers]]\nname = "node-d"\nurl = "http://{B_IP}:{closed}"\ntoken = "{TOKEN}"\n')
    a.start(wrong)
    try:
        for host, says in [(b_host(b), "refused this agent's credential"), ("node-d@file#file", "could not be reached")]:
            v, before = new_volume(a, [(0, b"keep" * 1024)])
            a.cinder.volumes.migrate_volume(v, host, False, False)
            wait_failed(a, v.id)
            assert says in message_for(a, v.id), message_for(a, v.id)
            assert digest(a.file(v.id)) == before and not targets_on(b)
            a.cinder.volumes.delete(v.id)
        assert "a peer call without a valid peer credential refused" in b.agent.log()
    finally:
        a.kill()
        a.start()


def test_a_peer_without_room_refuses_and_the_source_stays(pair):
    a, b = pair
    (pool,) = b.cinder.pools.list(detailed=True)
    size = int(pool.total_capacity_gb) + 10
    v = a.cinder.volumes.create(size)
    wait_for(lambda: a.cinder.volumes.get(v.id).status == "available", what="volume available")
    fill(a.file(v.id), [(0, b"big" * 1024)])
    a.cinder.volumes.migrate_volume(v, b_host(b), False, False)
    wait_failed(a, v.id)
    says = message_for(a, v.id)
    assert "peer node-b refused" in says and "exceeds the capacity" in says, says
    with open(a.file(v.id), "rb") as f:
        assert f.read(3072) == b"big" * 1024, "the source is untouched"
    assert not targets_on(b)
    a.cinder.volumes.delete(v.id)


def test_a_migration_to_a_peer_cancelled_while_it_streams_leaves_the_source(pair):
    a, b = pair
    v, before, job = streaming(a, b, [(0, os.urandom(160 * MIB))])
    r = a.agent.session.delete(f"{a.url}/ember/v1/jobs/{job['id']}", timeout=10)
    assert r.status_code == 202, r.text
    wait_failed(a, v.id)
    assert "cancelled" in message_for(a, v.id), message_for(a, v.id)
    assert digest(a.file(v.id)) == before
    wait_for(lambda: not targets_on(b), what="the destination deleted on B")
    a.cinder.volumes.delete(v.id)


def test_a_source_killed_mid_stream_resumes_and_completes(pair):
    a, b = pair
    v, before, job = streaming(a, b, [(0, os.urandom(160 * MIB)), (900 * MIB, b"late" * 4096)])
    a.kill()
    assert a.file(v.id).exists(), "the source is kept until the peer verified its copy"
    assert len(targets_on(b)) == 1, "B holds the destination meanwhile"
    a.start()
    wait_adopted(a, b, v.id)
    assert digest(b.file(v.id)) == before and not a.file(v.id).exists()
    assert not targets_on(b)
    b.cinder.volumes.delete(v.id)


def test_a_peer_killed_mid_stream_leaves_the_source_and_cleans_up_at_its_restart(pair):
    a, b = pair
    v, before, job = streaming(a, b, [(0, os.urandom(160 * MIB))])
    dest_id = job["copy"]["destination_volume_id"]
    b.kill()
    wait_failed(a, v.id)
    assert "broke" in message_for(a, v.id) or "reached" in message_for(a, v.id), message_for(a, v.id)
    assert digest(a.file(v.id)) == before
    assert b.file(dest_id).exists(), "B died holding the destination"
    b.start()
    # B's reconciliation at start asks A: the job failed with its source kept.
    wait_for(lambda: b.volume(dest_id) is None and not b.file(dest_id).exists(), what="the orphan deleted")
    # The source migrates again once the peer is back.
    a.cinder.volumes.migrate_volume(v, b_host(b), False, False)
    wait_adopted(a, b, v.id)
    assert digest(b.file(v.id)) == before
    b.cinder.volumes.delete(v.id)


class Proxy:
    """A loopback TCP relay to `target` whose connections can be cut (reset)
    at once, as a network failure would; new connections pass again after."""

    def __init__(self, target):
        self.target = target
        self.server = socket.create_server((A_IP, 0))
        self.port = self.server.getsockname()[1]
        self.live = []
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.live += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.relay, args=(src, dst), daemon=True).start()

    @staticmethod
    def relay(src, dst):
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def cut(self):
        with self.lock:
            live, self.live = self.live, []
        for s in live:
            # shutdown wakes the relay blocked on it (close alone would not).
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()

    def close(self):
        self.server.close()
        self.cut()


def test_a_network_cut_mid_stream_fails_cleanly_and_leaves_no_destination(pair):
    a, b = pair
    proxy = Proxy((B_IP, b.port))
    a.kill()
    a.start(lambda s: config("node-a", "node-b", f"http://{A_IP}:{proxy.port}", extra=A_EXTRA))
    try:
        v, before, _ = streaming(a, b, [(0, os.urandom(160 * MIB))])
        proxy.cut()
        wait_failed(a, v.id)
        assert "broke" in message_for(a, v.id), message_for(a, v.id)
        assert digest(a.file(v.id)) == before
        # A asked B to delete the destination once the network was back.
        wait_for(lambda: not targets_on(b), what="no destination left on B")
        assert [p for p in (Path(b.data_dir) / "volumes").iterdir()] == []
    finally:
        a.kill()
        proxy.close()
        a.start()


def peer_call(b, method, path, body=None, name="node-a", token=TOKEN, raw=None):
    headers = {"Content-Type": "application/json"}
    if name is not None:
        headers["X-Ember-Peer"] = name
    if token is not None:
        headers["X-Ember-Peer-Token"] = token
    data = raw if raw is not None else (None if body is None else __import__("json").dumps(body))
    return requests.request(method, f"{b.url}/ember/v1/peer/{path}", data=data, headers=headers, timeout=10)


def test_peer_calls_need_the_peer_credential_and_refuse_bad_input(pair):
    a, b = pair
    v, _ = new_volume(b, [(0, b"b's own" * 100)])
    before = b.agent.db_dump()
    for name, token in [(None, None), ("node-a", None), ("node-a", "x" * len(TOKEN)), ("node-z", TOKEN),
                        ("node-a", TOKEN + "x")]:
        r = peer_call(b, "DELETE", f"volumes/{v.id}", name=name, token=token)
        assert r.status_code == 401, (name, r.text)
    # A Cinder caller (noauth: an admin) is no peer either.
    r = b.agent.session.delete(f"{b.url}/ember/v1/peer/volumes/{v.id}", timeout=10)
    assert r.status_code == 401, r.text
    destination = {"id": "d" * 8, "source_id": "s" * 8, "job": 1, "host": b_host(b), "size": 1,
                   "project_id": "p", "user_id": "u", "name": None, "description": None,
                   "volume_type": "__DEFAULT__", "bootable": False, "created_at": "2026-01-01T00:00:00.000000",
                   "metadata": {}, "admin_metadata": {}, "image_metadata": {}}
    for body, raw, code in [
        (None, b"{not json", 400),
        ({"volume": {**destination, "surprise": 1}}, None, 400),
        ({"volume": {k: x for k, x in destination.items() if k != "host"}}, None, 400),
        ({"volume": {**destination, "size": "one"}}, None, 400),
        ({"volume": {**destination, "host": "node-b@nowhere#x"}}, None, 400),
        ({"volume": {**destination, "volume_type": "no-such-type"}}, None, 400),
        ({"volume": {**destination, "source_id": v.id}}, None, 409),
    ]:
        r = peer_call(b, "POST", "volumes", body, raw=raw)
        assert r.status_code == code, (body, r.text)
    # B's own volume is no peer's destination: not deleted, adopted or written.
    assert peer_call(b, "DELETE", f"volumes/{v.id}").status_code == 409
    assert peer_call(b, "POST", f"volumes/{v.id}/adopt", {"source_id": "s"}).status_code == 404
    assert peer_call(b, "PUT", f"volumes/{v.id}/data", raw=b"E").status_code == 404
    assert peer_call(b, "GET", "jobs/123456").status_code == 404
    assert peer_call(b, "PATCH", "volumes").status_code == 405
    assert peer_call(b, "GET", "nothing").status_code == 404
    assert b.agent.db_dump() == before, "nothing changed on B"
    b.cinder.volumes.delete(v.id)


def test_a_stream_cut_short_or_malformed_is_never_a_short_copy(pair):
    a, b = pair
    destination = {"id": "cafe0000-0000-4000-8000-000000000001", "source_id": "cafe0000-0000-4000-8000-00000000000f",
                   "job": 1, "host": b_host(b), "size": 1, "project_id": "p", "user_id": "u", "name": None,
                   "description": None, "volume_type": "__DEFAULT__", "bootable": False,
                   "created_at": "2026-01-01T00:00:00.000000", "metadata": {}, "admin_metadata": {},
                   "image_metadata": {}}
    r = peer_call(b, "POST", "volumes", {"volume": destination})
    assert r.status_code == 201, r.text
    assert peer_call(b, "POST", "volumes", {"volume": destination}).status_code == 201, "a repeat is done"
    frame = b"D" + struct.pack(">QI", 0, 5) + b"hello"
    for raw in [frame, frame + b"Q", b"D" + struct.pack(">QI", (1 << 30) - 2, 5) + b"hello" + b"E"]:
        r = peer_call(b, "PUT", f"volumes/{destination['id']}/data", raw=raw)
        assert r.status_code == 500 and "Writing the destination failed" in r.text, r.text
    r = peer_call(b, "PUT", f"volumes/{destination['id']}/data", raw=frame + b"E")
    assert r.status_code == 200 and r.json()["data_bytes"] > 0, r.text
    assert peer_call(b, "DELETE", f"volumes/{destination['id']}").status_code == 204
    assert b.volume(destination["id"]) is None and not b.file(destination["id"]).exists()
    assert peer_call(b, "DELETE", f"volumes/{destination['id']}").status_code == 204, "a repeat is done"


def test_a_retype_to_a_type_only_the_peer_serves_migrates_on_demand_and_never_refuses(pair):
    a, b = pair
    backend = b_host(b).split("@")[1].split("#")[0]
    name = f"on-peer-{os.urandom(3).hex()}"
    for side in (a, b):
        t = side.cinder.volume_types.create(name)
        t.set_keys({"volume_backend_name": backend, "multiattach": "<is> True"})
    v, before = new_volume(a, [(4096, b"retyped" * 500)], metadata={"k": "v"})
    assert backend not in {p.volume_backend_name for p in a.cinder.pools.list(detailed=True)}
    before_db = a.agent.db_dump()
    r = a.agent.action(v.id, {"os-retype": {"new_type": name, "migration_policy": "never"}})
    assert r.status_code == 400 and "never" in r.text, r.text
    assert a.agent.db_dump() == before_db
    a.cinder.volumes.retype(v, name, "on-demand")
    moved = wait_adopted(a, b, v.id)
    assert moved["volume_type"] == name and moved["multiattach"] is True and moved["metadata"] == {"k": "v"}
    assert digest(b.file(v.id)) == before
    b.cinder.volumes.delete(v.id)
