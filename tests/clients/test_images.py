"""The image data path against a running agent with the `dir` image store:
create from image, reimage (3.68) and upload to image through python-cinderclient,
its CLI and openstacksdk; every volume compared byte for byte with
`qemu-img convert -O raw` of the same image (the independent reference); hostile
images refused with 400 before any status moves; progress and cancellation
through /ember/v1/jobs; kill -9 in the middle of a copy.

Images get into the store with `ember image import` (the operator's way), or, for
images the importer would refuse, by writing the documented record by hand."""

import hashlib
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from cinderclient import exceptions as cexc

from conftest import (PROJECT, ember_binary, make_cinder, start_agent, stop_agent, wait_for, write_at,
                      cinder_cli_for, loop_devices)

MiB = 1 << 20
GiB = 1 << 30
# 64 MiB per second: a 48 MiB dense image takes ~0.75 s, long enough to watch
# and to kill, short enough for the suite.
RATE = 64 * MiB
CONFIG = f"[copy]\nmax_bytes_per_second = {RATE}\n"


def run(*argv, **kw):
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Reference images made with qemu-img / qemu-io, and their raw conversions."""
    d = tmp_path_factory.mktemp("images")
    raw = d / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(40 * MiB)
        f.seek(MiB + 4321)
        f.write(os.urandom(3 * MiB))
        f.seek(30 * MiB)
        f.write(b"ember" * 100_000)
    out = {"raw": raw}
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, d / "v3.qcow2")
    out["qcow2"] = d / "v3.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", raw, d / "compressed.qcow2")
    out["compressed"] = d / "compressed.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "compat=0.10,cluster_size=4096", raw,
        d / "v2small.qcow2")
    out["v2-4k-clusters"] = d / "v2small.qcow2"
    # Zero clusters over data (v3 only) and a hole punched by discard.
    zeros = d / "zeros.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, zeros)
    run("qemu-io", "-f", "qcow2", "-c", f"write -z {MiB} {2 * MiB}", "-c", f"discard {30 * MiB} {MiB}", zeros)
    out["zero-clusters"] = zeros
    # A dense image for the copies that must take a while.
    dense = d / "dense.raw"
    dense.write_bytes(os.urandom(48 * MiB))
    out["dense"] = dense
    return out


def reference(path, fmt):
    """The image's guest bytes, by qemu-img."""
    if fmt == "raw":
        return Path(path).read_bytes()
    out = Path(str(path) + ".ref")
    if not out.exists():
        run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", path, out)
    return out.read_bytes()


def import_image(agent, path, *extra):
    p = run(ember_binary(), "image", "import", "--data-dir", agent.data_dir, path, "--json", *extra)
    return json.loads(p.stdout)


def put_record(agent, data_path, disk_format, **fields):
    """An image written into the store by hand (README "Images": the record format),
    for images `ember image import` refuses."""
    store = agent.data_dir / "images"
    store.mkdir(exist_ok=True)
    image_id = str(uuid.uuid4())
    data = Path(data_path).read_bytes()
    (store / image_id).write_bytes(data)
    record = {
        "id": image_id, "name": f"hand-{disk_format}", "status": "active", "disk_format": disk_format,
        "container_format": "bare", "size": len(data), "virtual_size": None,
        "checksum": hashlib.md5(data).hexdigest(), "os_hash_algo": "sha512",
        "os_hash_value": hashlib.sha512(data).hexdigest(), "min_disk": 0, "min_ram": 0,
        "visibility": "public", "protected": False, "owner": "admin",
        "created_at": "2026-12-04T00:00:00Z", "updated_at": "2026-12-04T00:00:00Z", "properties": {},
    }
    record.update(fields)
    (store / f"{image_id}.json").write_text(json.dumps(record))
    return image_id


def assert_volume_holds(agent, volume_id, want):
    """The volume file starts with `want` and holds nothing but holes or zeros after."""
    path = agent.volume_file(volume_id)
    with open(path, "rb") as f:
        got = f.read(len(want))
        assert got == want, f"volume {volume_id} differs from the image's reference bytes"
        try:
            at = os.lseek(f.fileno(), len(want), os.SEEK_DATA)
        except OSError:
            return  # only holes after the image
        f.seek(at)
        while chunk := f.read(8 * MiB):
            assert chunk.count(0) == len(chunk), f"non-zero bytes after the image at {at}"


@pytest.fixture(scope="module")
def agent():
    before = loop_devices()
    a = start_agent(CONFIG)
    yield a
    stop_agent(a)
    leaked = [d for d in loop_devices() if d not in before and a.data_dir.as_posix() in " ".join(d)]
    assert not leaked, f"leaked loop devices: {leaked}"


@pytest.fixture(scope="module")
def cinder(agent):
    return make_cinder(agent)


def wait_status(cinder, vid, status, timeout=60):
    return wait_for(lambda: (v := cinder.volumes.get(vid)).status == status and v, timeout=timeout,
                    what=f"volume {vid} {status}")


@pytest.mark.parametrize("kind", ["raw", "qcow2", "compressed", "v2-4k-clusters", "zero-clusters"])
def test_create_from_image_is_byte_exact(agent, cinder, images, kind):
    fmt = "raw" if kind == "raw" else "qcow2"
    record = import_image(agent, images[kind], "--name", kind)
    assert record["status"] == "active" and record["disk_format"] == fmt
    assert record["virtual_size"] == 40 * MiB
    vol = cinder.volumes.create(1, imageRef=record["id"], name=f"from-{kind}")
    vol = wait_status(cinder, vol.id, "available")
    assert vol.bootable == "true"
    assert vol.volume_image_metadata["image_id"] == record["id"]
    assert vol.volume_image_metadata["disk_format"] == fmt
    assert vol.volume_image_metadata["checksum"] == hashlib.md5(Path(images[kind]).read_bytes()).hexdigest()
    assert_volume_holds(agent, vol.id, reference(images[kind], fmt))
    # Sparse stays sparse: the volume holds about what the image's data is.
    assert os.stat(agent.volume_file(vol.id)).st_blocks * 512 < 8 * MiB
    cinder.volumes.delete(vol)


def test_cinder_cli_creates_from_image_and_reimages(agent, images, tmp_path):
    cli = cinder_cli_for(agent, tmp_path)
    record = import_image(agent, images["qcow2"])
    out = cli("create", "--image", record["id"], "--name", "cli-image", "1").stdout
    vid = next(line.split("|")[2].strip() for line in out.splitlines() if line.startswith("| id "))
    c = make_cinder(agent)
    wait_status(c, vid, "available")
    assert_volume_holds(agent, vid, reference(images["qcow2"], "qcow2"))
    other = import_image(agent, images["compressed"])
    cli("reimage", vid, other["id"], version="3.68")
    wait_for(lambda: getattr(c.volumes.get(vid), "volume_image_metadata", {}).get("image_id") == other["id"], what="reimage")
    wait_status(c, vid, "available")
    assert_volume_holds(agent, vid, reference(images["compressed"], "qcow2"))
    out = cli("upload-to-image", "--disk-format", "qcow2", vid, "cli-upload").stdout
    image_id = next(line.split("|")[2].strip() for line in out.splitlines() if line.startswith("| image_id "))
    wait_for(lambda: show_image(agent, image_id)["status"] == "active", what="the CLI's upload active")
    wait_status(c, vid, "available")
    run("qemu-img", "compare", "-f", "qcow2", "-F", "raw", agent.data_dir / "images" / image_id,
        agent.volume_file(vid))


def test_reimage_replaces_every_byte_and_the_metadata(agent, cinder, images):
    vol = cinder.volumes.create(1, name="reimaged")
    wait_status(cinder, vol.id, "available")
    # Old data inside and past the image's range must be gone afterwards.
    write_at(agent.volume_file(vol.id), 2 * MiB, b"\xee" * MiB)
    write_at(agent.volume_file(vol.id), 500 * MiB, b"old tenant data")
    record = import_image(agent, images["raw"])
    rc = make_cinder(agent, version="3.68")
    rc.volumes.reimage(vol, record["id"])
    wait_for(lambda: getattr(rc.volumes.get(vol.id), "volume_image_metadata", {}).get("image_id") == record["id"], what="metadata")
    v = wait_status(rc, vol.id, "available")
    assert v.bootable == "true"
    assert_volume_holds(agent, vol.id, reference(images["raw"], "raw"))


def test_upload_then_create_gives_the_same_bytes(agent, cinder, images):
    record = import_image(agent, images["qcow2"])
    vol = wait_status(cinder, cinder.volumes.create(1, imageRef=record["id"]).id, "available")
    r = agent.action(vol.id, {"os-volume_upload_image": {"image_name": "uploaded", "disk_format": "raw",
                                                         "container_format": "bare"}}, version="3.1")
    assert r.status_code == 202, r.text
    body = r.json()["os-volume_upload_image"]
    assert set(body) == {"id", "updated_at", "status", "display_description", "size", "volume_type", "image_id",
                         "container_format", "disk_format", "image_name", "protected", "visibility"}
    assert (body["id"], body["status"], body["size"]) == (vol.id, "uploading", 1)
    assert (body["image_name"], body["disk_format"], body["visibility"]) == ("uploaded", "raw", "private")
    image = wait_for(lambda: (i := show_image(agent, body["image_id"]))["status"] == "active" and i, what="active")
    wait_status(cinder, vol.id, "available")
    stored = (agent.data_dir / "images" / body["image_id"]).read_bytes()
    assert stored == Path(agent.volume_file(vol.id)).read_bytes()
    assert image["size"] == GiB and image["checksum"] == hashlib.md5(stored).hexdigest()
    assert image["os_hash_algo"] == "sha512" and image["os_hash_value"] == hashlib.sha512(stored).hexdigest()
    again = wait_status(cinder, cinder.volumes.create(1, imageRef=body["image_id"]).id, "available")
    assert_volume_holds(agent, again.id, reference(images["qcow2"], "qcow2"))


def test_upload_as_qcow2_is_a_clean_image_of_the_volume(agent, cinder, images):
    """ember writes qcow2 itself; qemu-img (the reference) checks the image and
    compares it with the volume's bytes."""
    record = import_image(agent, images["zero-clusters"])
    vol = wait_status(cinder, cinder.volumes.create(1, imageRef=record["id"]).id, "available")
    r = agent.action(vol.id, {"os-volume_upload_image": {"image_name": "as-qcow2", "disk_format": "qcow2"}})
    assert r.status_code == 202, r.text
    body = r.json()["os-volume_upload_image"]
    assert body["disk_format"] == "qcow2"
    image = wait_for(lambda: (i := show_image(agent, body["image_id"]))["status"] == "active" and i, what="active")
    wait_status(cinder, vol.id, "available")
    stored = agent.data_dir / "images" / body["image_id"]
    run("qemu-img", "check", "-f", "qcow2", stored)
    run("qemu-img", "compare", "-f", "qcow2", "-F", "raw", stored, agent.volume_file(vol.id))
    assert image["virtual_size"] == GiB and image["size"] < 8 * MiB, image
    assert not list((agent.data_dir / "tmp").glob("*")), "the scratch file stayed"
    again = wait_status(cinder, cinder.volumes.create(1, imageRef=body["image_id"]).id, "available")
    assert_volume_holds(agent, again.id, reference(images["zero-clusters"], "qcow2"))
    r = agent.action(vol.id, {"os-volume_upload_image": {"image_name": "x", "disk_format": "vmdk"}})
    assert r.status_code == 400 and "vmdk" in r.text, r.text
    assert cinder.volumes.get(vol.id).status == "available"


def show_image(agent, image_id):
    return json.loads(run(ember_binary(), "image", "show", "--data-dir", agent.data_dir, image_id).stdout)


def test_openstacksdk_creates_from_image_and_uploads(agent, images):
    from conftest import make_sdk
    sdk = make_sdk(agent)
    record = import_image(agent, images["raw"])
    vol = sdk.block_storage.create_volume(size=1, image_id=record["id"], name="sdk-image")
    vol = sdk.block_storage.wait_for_status(vol, "available", failures=["error"], wait=60)
    assert_volume_holds(agent, vol.id, reference(images["raw"], "raw"))
    sdk.block_storage.upload_volume_to_image(vol, "sdk-upload", disk_format="raw", container_format="bare")
    sdk.block_storage.wait_for_status(sdk.block_storage.get_volume(vol.id), "available", wait=60)
    names = run(ember_binary(), "image", "list", "--data-dir", agent.data_dir).stdout
    assert "sdk-upload" in names
    sdk.close()


def hostile(images, tmp):
    """Images that must be refused, each with why."""
    base = images["qcow2"]
    out = {}
    backing = tmp / "backing.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", backing)
    out["backing file"] = (backing, "qcow2")
    datafile = tmp / "datafile.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={tmp / 'external.raw'}", datafile, "16M")
    out["external data file"] = (datafile, "qcow2")
    huge = tmp / "huge.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", huge, "64T")
    out["virtual size beyond the volume"] = (huge, "qcow2")
    data = bytearray(Path(base).read_bytes())
    trunc = tmp / "truncated.qcow2"
    trunc.write_bytes(bytes(data[:len(data) // 3]))
    out["truncated"] = (trunc, "qcow2")
    # The L1 table's first entry pointed far outside the file.
    l1 = int.from_bytes(data[40:48], "big")
    bad = bytearray(data)
    bad[l1:l1 + 8] = (0x8000_0000_0000_0000 | (1 << 40)).to_bytes(8, "big")
    (tmp / "l1-outside.qcow2").write_bytes(bytes(bad))
    out["L1 entry outside the file"] = (tmp / "l1-outside.qcow2", "qcow2")
    out["qcow2 declared raw"] = (base, "raw")
    out["raw declared qcow2"] = (images["raw"], "qcow2")
    out["unsupported format"] = (images["raw"], "vmdk")
    return out


def test_hostile_images_are_refused_before_anything_changes(agent, cinder, images, tmp_path):
    vol = wait_status(cinder, cinder.volumes.create(1, name="target").id, "available")
    write_at(agent.volume_file(vol.id), 0, b"keep me")
    rc = make_cinder(agent, version="3.68")
    for why, (path, fmt) in hostile(images, tmp_path).items():
        image_id = put_record(agent, path, fmt)
        before = agent.db_dump()
        with pytest.raises(cexc.BadRequest, match="Invalid image"):
            rc.volumes.reimage(vol, image_id)
        with pytest.raises(cexc.BadRequest, match="Invalid image"):
            cinder.volumes.create(1, imageRef=image_id)
        assert agent.db_dump() == before, f"{why}: the store changed"
        assert cinder.volumes.get(vol.id).status == "available", why
    assert Path(agent.volume_file(vol.id)).read_bytes()[:7] == b"keep me"
    assert "panicked" not in agent.log()


def test_image_checks(agent, cinder, images):
    vol = wait_status(cinder, cinder.volumes.create(1).id, "available")
    rc = make_cinder(agent, version="3.68")
    with pytest.raises(cexc.NotFound):
        rc.volumes.reimage(vol, str(uuid.uuid4()))
    big_min_disk = put_record(agent, images["raw"], "raw", min_disk=5)
    with pytest.raises(cexc.BadRequest, match="min_disk"):
        rc.volumes.reimage(vol, big_min_disk)
    nova = put_record(agent, images["raw"], "raw", properties={"block_device_mapping": "[]", "bdm_v2": "True"})
    with pytest.raises(cexc.BadRequest, match="volume-backed"):
        rc.volumes.reimage(vol, nova)
    queued = put_record(agent, images["raw"], "raw", status="queued")
    with pytest.raises(cexc.BadRequest, match="not active"):
        rc.volumes.reimage(vol, queued)
    r = agent.request("POST", "/volumes", {"volume": {"imageRef": put_record(agent, images["raw"], "raw")}})
    assert r.status_code == 400 and "size" in r.text, r.text
    r = agent.request("POST", "/volumes", {"volume": {"size": 1, "imageRef": "not-a-uuid"}})
    assert r.status_code == 400, r.text
    assert cinder.volumes.get(vol.id).status == "available"


def jobs(agent):
    r = agent.session.get(f"{agent.root}/ember/v1/jobs", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["jobs"]


def test_progress_is_visible_and_an_admin_cancels(agent, cinder, images):
    record = import_image(agent, images["dense"])
    vol = wait_status(cinder, cinder.volumes.create(1).id, "available")
    make_cinder(agent, version="3.68").volumes.reimage(vol, record["id"])
    job = wait_for(lambda: next((j for j in jobs(agent) if j["volume_id"] == vol.id and j["copy"]
                                 and j["copy"]["bytes_done"] > 0), None), what="a running copy")
    assert job["kind"] == "reimage" and job["state"] == "running"
    assert job["copy"]["image_id"] == record["id"] and job["copy"]["bytes_total"] == GiB
    assert 0 < job["copy"]["bytes_done"] < GiB and job["copy"]["rate_bytes_per_second"] > 0
    assert cinder.volumes.get(vol.id).status == "downloading"
    r = agent.session.delete(f"{agent.root}/ember/v1/jobs/{job['id']}", timeout=10)
    assert r.status_code == 202, r.text
    wait_status(cinder, vol.id, "error")
    shown = agent.session.get(f"{agent.root}/ember/v1/jobs/{job['id']}", timeout=10).json()["job"]
    assert shown["state"] == "failed" and "cancel" in shown["last_error"]
    msgs = make_cinder(agent, version="3.5").messages.list()
    assert any(m.resource_uuid == vol.id and "cancelled" in m.user_message for m in msgs)
    # Reimage is the retry: the volume comes back whole.
    make_cinder(agent, version="3.68").volumes.reimage(vol, record["id"])
    wait_status(cinder, vol.id, "available")
    assert_volume_holds(agent, vol.id, Path(images["dense"]).read_bytes())
    r = agent.session.delete(f"{agent.root}/ember/v1/jobs/{job['id']}", timeout=10)
    assert r.status_code == 409, r.text
    assert agent.session.get(f"{agent.root}/ember/v1/jobs/999999", timeout=10).status_code == 404
    assert agent.session.put(f"{agent.root}/ember/v1/jobs/1", timeout=10).status_code == 405


def kill_while_copying(a, volume_id):
    """kill -9 once the volume's copy has written something; the agent restarted."""
    wait_for(lambda: any(j["volume_id"] == volume_id and j["copy"] and j["copy"]["bytes_done"] > 0
                         for j in jobs(a)), what="a copy under way")
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    return start_agent(CONFIG, data_dir=str(a.data_dir))


def test_kill_during_reimage_and_upload_ends_cleanly(images):
    """kill -9 in the middle of each copy; after the restart the reimage is in
    error (retry by reimaging again), the upload's volume is available again and
    its half-made image is gone."""
    a = start_agent(CONFIG)
    try:
        c = make_cinder(a)
        record = import_image(a, images["dense"])
        target = wait_status(c, c.volumes.create(1).id, "available")
        make_cinder(a, version="3.68").volumes.reimage(target, record["id"])
        a = kill_while_copying(a, target.id)
        c = make_cinder(a)
        wait_status(c, target.id, "error")
        msgs = make_cinder(a, version="3.5").messages.list()
        assert any(m.resource_uuid == target.id and "restart" in m.user_message for m in msgs)
        make_cinder(a, version="3.68").volumes.reimage(target, record["id"])
        wait_status(c, target.id, "available")
        assert_volume_holds(a, target.id, Path(images["dense"]).read_bytes())

        r = a.action(target.id, {"os-volume_upload_image": {"image_name": "half"}})
        assert r.status_code == 202, r.text
        image_id = r.json()["os-volume_upload_image"]["image_id"]
        a = kill_while_copying(a, target.id)
        c = make_cinder(a)
        wait_status(c, target.id, "available")
        leftovers = [p.name for p in (a.data_dir / "images").iterdir() if p.name.startswith(image_id)]
        assert leftovers == [], leftovers
        assert not any(a.data_dir.as_posix() in " ".join(d) for d in loop_devices())
    finally:
        stop_agent(a)
