"""The three image paths against a real Glance (glance-api 33.0.0 from PyPI under
uwsgi, file store, SQLite, no Keystone; tests/clients/glance.py), with the agent
configured `[images] backend = "glance"`. Bytes are compared with qemu-img's
conversion of the same image, and with what Glance stored."""

import hashlib
import os
import uuid
from pathlib import Path

import pytest
import requests
from cinderclient import exceptions as cexc

from conftest import make_cinder, start_agent, stop_agent, wait_for, write_at
from glance import start_glance, stop_glance
from test_images import MiB, assert_volume_holds, hostile, images, jobs, reference, wait_status  # noqa: F401


@pytest.fixture(scope="module")
def glance(tmp_path_factory):
    g = start_glance(tmp_path_factory.mktemp("glance"))
    yield g
    stop_glance(g)


@pytest.fixture(scope="module")
def agent(glance):
    a = start_agent(f'[images]\nbackend = "glance"\nurl = "{glance.url}"\ntimeout = 30\n'
                    "[copy]\nmax_bytes_per_second = 67108864\n")
    yield a
    stop_agent(a)


@pytest.fixture(scope="module")
def cinder(agent):
    return make_cinder(agent)


def put_image(glance, path, disk_format, refused_ok=False, **fields):
    """An image uploaded to Glance the way its own clients do it; None where
    Glance's own format inspection refused it (and `refused_ok`)."""
    body = {"name": f"t-{Path(path).name}", "disk_format": disk_format, "container_format": "bare", **fields}
    r = requests.post(f"{glance.url}/v2/images", json=body, timeout=30)
    assert r.status_code == 201, r.text
    image_id = r.json()["id"]
    with open(path, "rb") as f:
        r = requests.put(f"{glance.url}/v2/images/{image_id}/file", data=f,
                         headers={"Content-Type": "application/octet-stream"}, timeout=60)
    if refused_ok and r.status_code == 415:
        return None
    assert r.status_code == 204, r.text
    return image_id


def glance_image(glance, image_id):
    r = requests.get(f"{glance.url}/v2/images/{image_id}", timeout=30)
    return r.json() if r.status_code == 200 else None


@pytest.mark.parametrize("kind", ["raw", "qcow2", "compressed"])
def test_create_from_a_glance_image_is_byte_exact(agent, cinder, glance, images, kind):
    fmt = "raw" if kind == "raw" else "qcow2"
    image_id = put_image(glance, images[kind], fmt)
    vol = wait_status(cinder, cinder.volumes.create(1, imageRef=image_id).id, "available")
    assert vol.bootable == "true"
    meta = vol.volume_image_metadata
    assert meta["image_id"] == image_id and meta["disk_format"] == fmt
    assert meta["checksum"] == hashlib.md5(Path(images[kind]).read_bytes()).hexdigest()
    assert_volume_holds(agent, vol.id, reference(images[kind], fmt))


def test_reimage_from_glance(agent, cinder, glance, images):
    vol = wait_status(cinder, cinder.volumes.create(1).id, "available")
    write_at(agent.volume_file(vol.id), 300 * MiB, b"old data")
    image_id = put_image(glance, images["zero-clusters"], "qcow2")
    make_cinder(agent, version="3.68").volumes.reimage(vol, image_id)
    wait_for(lambda: getattr(cinder.volumes.get(vol.id), "volume_image_metadata", {}).get("image_id") == image_id,
             what="reimaged")
    wait_status(cinder, vol.id, "available")
    assert_volume_holds(agent, vol.id, reference(images["zero-clusters"], "qcow2"))


def test_upload_to_glance_then_create(agent, cinder, glance, images):
    source = put_image(glance, images["qcow2"], "qcow2")
    vol = wait_status(cinder, cinder.volumes.create(1, imageRef=source).id, "available")
    r = agent.action(vol.id, {"os-volume_upload_image": {"image_name": "to-glance", "disk_format": "raw",
                                                         "visibility": "private"}}, version="3.1")
    assert r.status_code == 202, r.text
    image_id = r.json()["os-volume_upload_image"]["image_id"]
    image = wait_for(lambda: (i := glance_image(glance, image_id)) and i["status"] == "active" and i,
                     what="the uploaded image active in Glance")
    wait_status(cinder, vol.id, "available")
    volume_bytes = Path(agent.volume_file(vol.id)).read_bytes()
    stored = (glance.images_dir / image_id).read_bytes()
    assert stored == volume_bytes
    assert image["size"] == len(volume_bytes) and image["checksum"] == hashlib.md5(stored).hexdigest()
    assert image["os_hash_value"] == hashlib.sha512(stored).hexdigest()
    assert image["visibility"] == "private" and image["name"] == "to-glance"
    again = wait_status(cinder, cinder.volumes.create(1, imageRef=image_id).id, "available")
    assert_volume_holds(agent, again.id, reference(images["qcow2"], "qcow2"))


def test_a_cancelled_upload_leaves_no_image_in_glance(agent, cinder, glance, images):
    source = put_image(glance, images["dense"], "raw")
    vol = wait_status(cinder, cinder.volumes.create(1, imageRef=source).id, "available")
    r = agent.action(vol.id, {"os-volume_upload_image": {"image_name": "cancelled"}})
    assert r.status_code == 202, r.text
    image_id = r.json()["os-volume_upload_image"]["image_id"]
    job = wait_for(lambda: next((j for j in jobs(agent) if j["volume_id"] == vol.id and j["copy"]
                                 and j["copy"]["bytes_done"] > 0), None), what="the upload copying")
    assert agent.session.delete(f"{agent.root}/ember/v1/jobs/{job['id']}", timeout=10).status_code == 202
    wait_status(cinder, vol.id, "available")
    wait_for(lambda: glance_image(glance, image_id) is None, what="the half-made image deleted from Glance")


def test_glance_refusals(agent, cinder, glance, images, tmp_path):
    vol = wait_status(cinder, cinder.volumes.create(1).id, "available")
    rc = make_cinder(agent, version="3.68")
    with pytest.raises(cexc.NotFound):
        rc.volumes.reimage(vol, str(uuid.uuid4()))
    queued = requests.post(f"{glance.url}/v2/images", json={"name": "q", "disk_format": "raw",
                                                              "container_format": "bare"}, timeout=30).json()["id"]
    with pytest.raises(cexc.BadRequest, match="not active"):
        rc.volumes.reimage(vol, queued)
    # Each hostile image is refused: by Glance's own format inspection when it
    # is uploaded, or else by ember before anything changes.
    reached = []
    for why, (path, fmt) in hostile(images, tmp_path).items():
        image_id = put_image(glance, path, fmt, refused_ok=True)
        if image_id is None:
            continue
        reached.append(why)
        before = agent.db_dump()
        with pytest.raises(cexc.BadRequest, match="Invalid image"):
            cinder.volumes.create(1, imageRef=image_id)
        assert agent.db_dump() == before, why
    # Glance 33 passes the damaged tables through; ember must catch those.
    assert {"truncated", "L1 entry outside the file"} <= set(reached), reached
    assert cinder.volumes.get(vol.id).status == "available"
