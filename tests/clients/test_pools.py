"""Several pools in one agent (`[[pools]]`, Cinder's `enabled_backends`): each
with its own `host@backend#pool`, listed by get_pools, picked by a volume type's
`volume_backend_name` or by free capacity, with its own files on disk."""

import hashlib
import os
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from cinderclient import exceptions as cexc

from conftest import cinder_cli_for, ember_binary, make_cinder, start_agent, stop_agent, wait_for
from test_messages import small_fs  # noqa: F401 (a fixture)

FAST, SLOW = "node1@fast#a", "node1@slow#b"


def two_pools(data_dir):
    return (f'host = "node1"\n'
            f'[[pools]]\nbackend_name = "fast"\nname = "a"\n'
            f'[[pools]]\nbackend_name = "slow"\nname = "b"\npath = "{data_dir}/pool-b"\n')


@pytest.fixture(scope="module")
def pooled():
    data_dir = tempfile.mkdtemp(prefix="ember-pools-", dir=os.environ.get("EMBER_TEST_TMP"))
    a = start_agent(two_pools(data_dir), data_dir=data_dir)
    yield a
    stop_agent(a)


@pytest.fixture
def cinder(pooled):
    # Per test: one test restarts the agent on another port.
    return make_cinder(pooled)


def pinned_type(cinder, backend):
    t = cinder.volume_types.create(f"on-{backend}-{os.urandom(3).hex()}")
    t.set_keys({"volume_backend_name": backend})
    return t


def host_of(cinder, volume_id):
    return getattr(cinder.volumes.get(volume_id), "os-vol-host-attr:host")


def wait_status(cinder, volume_id, status):
    return wait_for(lambda: (v := cinder.volumes.get(volume_id)).status == status and v,
                    what=f"volume {volume_id} {status}")


def file_in(pooled, pool_dir, volume_id):
    return Path(pool_dir) / "volumes" / f"volume-{volume_id}"


def test_get_pools_lists_every_pool_with_its_backend(pooled, cinder):
    pools = {p.name: p for p in cinder.pools.list(detailed=True)}
    assert set(pools) == {FAST, SLOW}
    assert pools[FAST].volume_backend_name == "fast" and pools[SLOW].volume_backend_name == "slow"
    services = {s.host for s in cinder.services.list(binary="cinder-volume")}
    assert services == {"node1@fast", "node1@slow"}


def test_a_type_pins_its_volumes_to_the_backend_it_names(pooled, cinder):
    slow = pinned_type(cinder, "slow")
    v = wait_status(cinder, cinder.volumes.create(1, volume_type=slow.name).id, "available")
    assert host_of(cinder, v.id) == SLOW
    assert file_in(pooled, pooled.data_dir / "pool-b", v.id).exists()
    assert not file_in(pooled, pooled.data_dir, v.id).exists()
    # Its snapshot, clone and extend stay in its pool.
    snap = cinder.volume_snapshots.create(v.id)
    wait_for(lambda: cinder.volume_snapshots.get(snap.id).status == "available", what="snapshot")
    assert (pooled.data_dir / "pool-b" / "snapshots" / f"snapshot-{snap.id}").exists()
    clone = wait_status(cinder, cinder.volumes.create(1, source_volid=v.id).id, "available")
    assert host_of(cinder, clone.id) == SLOW
    from_snap = wait_status(cinder, cinder.volumes.create(2, snapshot_id=snap.id).id, "available")
    assert host_of(cinder, from_snap.id) == SLOW
    cinder.volumes.extend(clone, 3)
    wait_for(lambda: cinder.volumes.get(clone.id).size == 3, what="extended")
    wait_status(cinder, clone.id, "available")
    assert file_in(pooled, pooled.data_dir / "pool-b", clone.id).stat().st_size == 3 << 30
    for gone in (from_snap, clone):
        cinder.volumes.delete(gone)
        wait_for(lambda: not file_in(pooled, pooled.data_dir / "pool-b", gone.id).exists(), what="file gone")


def test_a_type_no_pool_serves_leaves_the_volume_in_error_with_a_message(pooled, cinder):
    nowhere = pinned_type(cinder, "nowhere")
    v = wait_status(cinder, cinder.volumes.create(1, volume_type=nowhere.name).id, "error")
    msgs = make_cinder(pooled, version="3.3").messages.list()
    assert any(m.resource_uuid == v.id and "No valid backend" in m.user_message for m in msgs)


def test_untyped_volumes_spread_over_the_pools_by_free_capacity(pooled, cinder):
    hosts = []
    for _ in range(4):
        v = wait_status(cinder, cinder.volumes.create(2).id, "available")
        hosts.append(host_of(cinder, v.id))
    assert set(hosts) == {FAST, SLOW}, hosts
    stats = {p.name: p for p in cinder.pools.list(detailed=True)}
    # Each pool counts only what it holds.
    provisioned = sum(p.provisioned_capacity_gb for p in stats.values())
    held = sum(v.size for v in cinder.volumes.list()) + sum(s.size for s in cinder.volume_snapshots.list())
    assert provisioned == held


def test_volumes_keep_their_pool_across_a_restart(pooled, cinder):
    slow = pinned_type(cinder, "slow")
    v = wait_status(cinder, cinder.volumes.create(1, volume_type=slow.name).id, "available")
    pooled.proc.terminate()
    pooled.proc.wait(timeout=20)
    again = start_agent(two_pools(pooled.data_dir), data_dir=str(pooled.data_dir))
    try:
        c = make_cinder(again)
        assert host_of(c, v.id) == SLOW
        c.volumes.delete(v.id)
        wait_for(lambda: not file_in(again, again.data_dir / "pool-b", v.id).exists(), what="file gone")
    finally:
        # The module's fixture stops what runs on this data dir.
        pooled.proc, pooled.port, pooled.root = again.proc, again.port, again.root
        pooled.endpoint, pooled.base = again.endpoint, again.base


def test_manage_takes_a_file_of_the_pool_the_host_names(pooled):
    c = make_cinder(pooled)
    foreign = pooled.data_dir / "pool-b" / "volumes" / "stray"
    with open(foreign, "wb") as f:
        f.truncate(1 << 30)
    listed = {m.reference["source-name"] for m in c.volumes.list_manageable(SLOW, detailed=True)}
    assert "stray" in listed
    r = pooled.request("POST", "/manageable_volumes", {"volume": {"host": SLOW, "ref": {"source-name": "stray"}}})
    assert r.status_code == 202, r.text
    v = pooled.wait_volume(r.json()["volume"]["id"], "available")
    assert v["os-vol-host-attr:host"] == SLOW
    assert file_in(pooled, pooled.data_dir / "pool-b", v["id"]).exists()


@pytest.mark.parametrize("config, why", [
    ('[[pools]]\nname = "a"\n[[pools]]\nname = "b"\n', "give each its own path"),
    ('[[pools]]\nname = "a"\n[[pools]]\nname = "a"\npath = "/tmp/x"\n', "give each its own name"),
    ('[pool]\nname = "a"\n[[pools]]\nname = "b"\n', "either [pool] or [[pools]]"),
    ('[[pools]]\nbackend = "zfs"\n', "not a backend"),
])
def test_pool_configs_that_cannot_work_are_refused_at_start(tmp_path, config, why):
    cfg = tmp_path / "ember.toml"
    cfg.write_text(config)
    p = subprocess.run([ember_binary(), "serve", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:1",
                        "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and why in p.stderr + p.stdout, p.stderr + p.stdout


# -- migration between the pools ------------------------------------------------

MIB = 1 << 20


def pool_file(agent, host, volume_id):
    base = agent.data_dir / "pool-b" if host == SLOW else agent.data_dir
    return base / "volumes" / f"volume-{volume_id}"


def fill(path, pieces):
    """Writes (offset, bytes) pieces into a volume file, durably."""
    with open(path, "r+b") as f:
        for offset, data in pieces:
            f.seek(offset)
            f.write(data)
        f.flush()
        os.fsync(f.fileno())


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MIB):
            h.update(chunk)
    return h.hexdigest()


def on_fast(cinder, size=1):
    fast = pinned_type(cinder, "fast")
    v = wait_status(cinder, cinder.volumes.create(size, volume_type=fast.name).id, "available")
    assert host_of(cinder, v.id) == FAST
    return v


def wait_migrated(cinder, volume_id, want="success"):
    return wait_for(lambda: (v := cinder.volumes.get(volume_id)).migration_status == want
                    and v.status in ("available", "error") and v, timeout=120, what=f"migration {want}")


@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_migrate_moves_the_bytes_verified_and_the_volume_keeps_its_id(pooled, cinder, kind):
    v = on_fast(cinder, size=1)
    src = pool_file(pooled, FAST, v.id)
    if kind == "sparse":
        fill(src, [(0, b"head" * 1024), (300 * MIB, os.urandom(MIB)), ((1 << 30) - 4096, b"tail" * 1024)])
    else:
        fill(src, [(0, os.urandom(64 * MIB))])
    before = digest(src)
    cinder.volumes.set_metadata(v, {"keep": "me"})
    cinder.volumes.migrate_volume(v, SLOW, False, False)
    moved = wait_migrated(cinder, v.id)
    assert moved.status == "available" and host_of(cinder, v.id) == SLOW
    assert moved.metadata == {"keep": "me"}
    dst = pool_file(pooled, SLOW, v.id)
    assert dst.exists() and not src.exists()
    assert digest(dst) == before
    if kind == "sparse":
        assert dst.stat().st_blocks * 512 < 8 * MIB, "the holes crossed as holes"
    # No destination record is left behind, and the pools count the volume once.
    assert not [x for x in cinder.volumes.list() if (x.migration_status or "").startswith("target:")]
    log = pooled.log()
    assert "migration copy verified" in log


def test_retype_on_demand_migrates_and_never_refuses(pooled, cinder):
    v = on_fast(cinder)
    fill(pool_file(pooled, FAST, v.id), [(4096, b"retype" * 100)])
    before = digest(pool_file(pooled, FAST, v.id))
    slow = pinned_type(cinder, "slow")
    with pytest.raises(cexc.BadRequest, match="never"):
        cinder.volumes.retype(v, slow.name, "never")
    assert cinder.volumes.get(v.id).status == "available" and host_of(cinder, v.id) == FAST
    cinder.volumes.retype(v, slow.name, "on-demand")
    done = wait_for(lambda: (x := cinder.volumes.get(v.id)).volume_type == slow.name and x.status == "available"
                    and x, timeout=120, what="retyped")
    assert host_of(cinder, v.id) == SLOW and done.migration_status == "success"
    assert digest(pool_file(pooled, SLOW, v.id)) == before


def test_migrate_refusals_change_nothing(pooled, cinder):
    v = on_fast(cinder)
    before = pooled.db_dump()
    cases = [
        ({"host": "elsewhere@x#y"}, None, "No available service"),
        ({"host": FAST}, None, "current host"),
        ({"host": SLOW, "cluster": "c"}, "3.16", "One and only one"),
        ({"cluster": "c"}, "3.15", "cluster"),
    ]
    for body, version, why in cases:
        r = pooled.action(v.id, {"os-migrate_volume": body}, version=version)
        assert r.status_code == 400 and why in r.text, (body, r.text)
    snap = cinder.volume_snapshots.create(v.id)
    wait_for(lambda: cinder.volume_snapshots.get(snap.id).status == "available", what="snapshot")
    r = pooled.action(v.id, {"os-migrate_volume": {"host": SLOW}})
    assert r.status_code == 400 and "snapshots" in r.text, r.text
    cinder.volume_snapshots.delete(snap)
    wait_for(lambda: not [s for s in cinder.volume_snapshots.list() if s.id == snap.id], what="snapshot gone")
    r = pooled.action(v.id, {"os-attach": {"instance_uuid": str(uuid.uuid4()), "mountpoint": "/dev/vdb"}})
    assert r.status_code == 202, r.text
    r = pooled.action(v.id, {"os-migrate_volume": {"host": SLOW}})
    assert r.status_code == 400 and "attached" in r.text, r.text
    assert host_of(cinder, v.id) == FAST and not pool_file(pooled, SLOW, v.id).exists()
    del before


def test_completion_of_two_volumes_not_migrating_moves_the_attachments(pooled, cinder):
    old, new = on_fast(cinder), on_fast(cinder)
    r = pooled.action(old.id, {"os-attach": {"instance_uuid": str(uuid.uuid4()), "mountpoint": "/dev/vdb"}})
    assert r.status_code == 202, r.text
    r = pooled.action(old.id, {"os-migrate_volume_completion": {"new_volume": new.id}})
    assert r.status_code == 200 and r.json() == {"save_volume_id": new.id}, r.text
    assert cinder.volumes.get(new.id).status == "in-use" and cinder.volumes.get(old.id).status == "available"
    r = pooled.action(old.id, {"os-migrate_volume_completion": {"new_volume": str(uuid.uuid4())}})
    assert r.status_code == 404, r.text
    r = pooled.action(old.id, {"os-migrate_volume_completion": {"new_volume": new.id, "error": True}})
    assert r.status_code == 200 and r.json() == {"save_volume_id": new.id}, r.text


# -- a slow migration: cancelled, and killed mid-copy --------------------------

@pytest.fixture
def throttled():
    data_dir = tempfile.mkdtemp(prefix="ember-pools-", dir=os.environ.get("EMBER_TEST_TMP"))
    config = two_pools(data_dir) + "[copy]\nmax_bytes_per_second = 20971520\n"
    a = start_agent(config, data_dir=data_dir)
    yield a, config
    stop_agent(a)


def migration_job(agent, volume_id):
    r = agent.session.get(f"{agent.root}/ember/v1/jobs", timeout=10)
    assert r.status_code == 200, r.text
    return next((j for j in r.json()["jobs"] if j["volume_id"] == volume_id and j["kind"] == "migrate_volume"
                 and j["copy"] and j["copy"]["bytes_done"] > 0), None)


def test_a_cancelled_migration_leaves_the_source_as_it_was(throttled):
    agent, _ = throttled
    c = make_cinder(agent)
    v = on_fast(c)
    fill(pool_file(agent, FAST, v.id), [(0, os.urandom(200 * MIB))])
    before = digest(pool_file(agent, FAST, v.id))
    c.volumes.migrate_volume(v, SLOW, False, True)
    job = wait_for(lambda: migration_job(agent, v.id), what="the migration copying")
    assert job["copy"]["destination_volume_id"] != v.id
    assert c.volumes.get(job["copy"]["destination_volume_id"]).migration_status == f"target:{v.id}"
    assert c.volumes.get(v.id).status == "maintenance"
    limits = agent.request("GET", "/limits").json()["limits"]["absolute"]
    assert (limits["totalVolumesUsed"], limits["totalGigabytesUsed"]) == (1, 1), "the destination is not counted"
    r = agent.action(v.id, {"os-migrate_volume_completion": {"new_volume": job["copy"]["destination_volume_id"],
                                                             "error": True}})
    assert r.status_code == 200 and r.json() == {"save_volume_id": v.id}, r.text
    back = wait_migrated(c, v.id, "error")
    assert back.status == "available" and host_of(c, v.id) == FAST
    assert digest(pool_file(agent, FAST, v.id)) == before
    wait_for(lambda: not pool_file(agent, SLOW, job["copy"]["destination_volume_id"]).exists(),
             what="the destination's file deleted")
    assert [x.id for x in c.volumes.list()] == [v.id], "no destination record left"


def test_a_migration_killed_mid_copy_resumes_and_completes(throttled):
    agent, config = throttled
    c = make_cinder(agent)
    v = on_fast(c)
    fill(pool_file(agent, FAST, v.id), [(0, os.urandom(200 * MIB)), (900 * MIB, b"late" * 4096)])
    before = digest(pool_file(agent, FAST, v.id))
    c.volumes.migrate_volume(v, SLOW, False, False)
    wait_for(lambda: migration_job(agent, v.id), what="the migration copying")
    agent.proc.kill()
    agent.proc.wait()
    assert pool_file(agent, FAST, v.id).exists(), "the source is kept until its copy is verified"
    again = start_agent(config, data_dir=str(agent.data_dir))
    agent.proc, agent.port, agent.root, agent.endpoint, agent.base = (
        again.proc, again.port, again.root, again.endpoint, again.base)
    c = make_cinder(again)
    moved = wait_migrated(c, v.id)
    assert moved.status == "available" and host_of(c, v.id) == SLOW
    assert digest(pool_file(again, SLOW, v.id)) == before
    assert not pool_file(again, FAST, v.id).exists()
    assert [x.id for x in c.volumes.list()] == [v.id]


def test_the_cinder_cli_migrates_and_retypes_on_demand(pooled, cinder, tmp_path):
    run = cinder_cli_for(pooled, tmp_path)
    v = on_fast(cinder)
    fill(pool_file(pooled, FAST, v.id), [(8192, b"cli" * 1000)])
    before = digest(pool_file(pooled, FAST, v.id))
    run("migrate", v.id, SLOW)
    wait_migrated(cinder, v.id)
    assert host_of(cinder, v.id) == SLOW and digest(pool_file(pooled, SLOW, v.id)) == before
    fast = pinned_type(cinder, "fast")
    run("retype", "--migration-policy", "on-demand", v.id, fast.name)
    wait_for(lambda: (x := cinder.volumes.get(v.id)).volume_type == fast.name and x.status == "available",
             timeout=120, what="retyped back")
    assert host_of(cinder, v.id) == FAST and digest(pool_file(pooled, FAST, v.id)) == before


def test_a_destination_that_fills_up_fails_cleanly_and_the_source_is_untouched(small_fs, tmp_path):
    data_dir = tempfile.mkdtemp(prefix="ember-pools-", dir=os.environ.get("EMBER_TEST_TMP"))
    config = (f'host = "node1"\n[[pools]]\nbackend_name = "fast"\nname = "a"\n'
              f'[[pools]]\nbackend_name = "slow"\nname = "b"\npath = "{small_fs}/b"\n'
              f'max_over_subscription_ratio = 20.0\n')
    agent = start_agent(config, data_dir=data_dir)
    try:
        c = make_cinder(agent)
        v = on_fast(c)
        fill(pool_file(agent, FAST, v.id), [(0, os.urandom(96 * MIB))])
        before = digest(pool_file(agent, FAST, v.id))
        st = os.statvfs(small_fs)
        subprocess.run(["fallocate", "-l", str(st.f_bavail * st.f_frsize - (24 << 20)), str(small_fs / "filler")],
                       check=True, timeout=60)
        c.volumes.migrate_volume(v, SLOW, False, False)
        back = wait_migrated(c, v.id, "error")
        assert back.status == "available" and host_of(c, v.id) == FAST
        assert digest(pool_file(agent, FAST, v.id)) == before, "the source is untouched"
        assert [x.id for x in c.volumes.list()] == [v.id], "no destination record"
        assert list((small_fs / "b" / "volumes").iterdir()) == [], "no destination file"
        msgs = make_cinder(agent, version="3.3").messages.list()
        mine = [m for m in msgs if m.resource_uuid == v.id]
        assert mine and "No space left on device" in mine[0].user_message, agent.log()[-3000:]
    finally:
        stop_agent(agent)
