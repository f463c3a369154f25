"""Several pools in one agent (`[[pools]]`, Cinder's `enabled_backends`): each
with its own `host@backend#pool`, listed by get_pools, picked by a volume type's
`volume_backend_name` or by free capacity, with its own files on disk."""

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import PROJECT, ember_binary, make_cinder, start_agent, stop_agent, wait_for

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


@pytest.fixture(scope="module")
def cinder(pooled):
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
