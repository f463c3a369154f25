"""User messages (/v3/messages, 3.3+): why asynchronous work ended in error.

The device failure is real: the data dir is a small ext4 filesystem on a loop
device, filled from outside ember before a dense clone copies, so the copy hits
ENOSPC. `cinder message-list` must then say so.
"""

import os
import subprocess
import uuid

import pytest

from conftest import PROJECT, USER, cinder_cli_for, start_agent, stop_agent, write_at


def sh(*argv):
    subprocess.run(argv, check=True, capture_output=True, timeout=120)


@pytest.fixture
def small_fs(tmp_path):
    """A 320 MiB ext4 mounted at tmp_path/mnt, unmounted (and its loop device
    released) whatever the test did."""
    if os.geteuid() != 0:
        pytest.fail("needs root to loop-mount a filesystem (scripts/test runs this tier as root)")
    image, mnt = tmp_path / "fs.img", tmp_path / "mnt"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(320 << 20)
    sh("mkfs.ext4", "-q", "-F", str(image))
    sh("mount", "-o", "loop", str(image), str(mnt))
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False, timeout=60)


def test_a_clone_that_runs_out_of_space_is_explained_by_message_list(small_fs, tmp_path):
    data_dir = small_fs / "ember"
    data_dir.mkdir()
    agent = start_agent("[pool]\nmax_over_subscription_ratio = 20.0\n", data_dir=str(data_dir))
    try:
        src = agent.create_volume(1)
        chunk = os.urandom(1 << 20)
        for mib in range(96):
            write_at(agent.volume_file(src["id"]), mib << 20, chunk)
        # Someone else fills the filesystem: 24 MiB stay free, the clone needs 96.
        st = os.statvfs(data_dir)
        filler = small_fs / "filler"
        sh("fallocate", "-l", str(st.f_bavail * st.f_frsize - (24 << 20)), str(filler))

        r = agent.request("POST", "/volumes", {"volume": {"source_volid": src["id"]}})
        assert r.status_code == 202, r.text
        clone = r.json()["volume"]["id"]
        request_id = r.headers["x-openstack-request-id"]
        agent.wait_volume(clone, "error")

        cli = cinder_cli_for(agent, tmp_path)
        listed = cli("message-list").stdout
        assert clone in listed and "No space left on device" in listed, listed
        assert "VOLUME_VOLUME_008_012" in listed, listed
        # Below 3.3 there are no messages.
        assert cli("message-list", version="3.2", check=False).returncode != 0

        r = agent.request("GET", "/messages", version="3.3")
        assert r.status_code == 200, r.text
        [msg] = [m for m in r.json()["messages"] if m.get("resource_uuid") == clone]
        assert msg["request_id"] == request_id
        assert msg["resource_type"] == "VOLUME" and msg["message_level"] == "ERROR"
        assert msg["user_message"].startswith("create volume from backend storage:Driver failed to create the volume.")
        assert str(data_dir) not in msg["user_message"], "no paths in user messages"
        assert set(msg) == {"id", "event_id", "user_message", "message_level", "created_at", "guaranteed_until",
                            "request_id", "links", "resource_type", "resource_uuid"}, msg
        shown = cli("message-show", msg["id"]).stdout
        assert request_id in shown and msg["guaranteed_until"] in shown, shown

        # Nothing of the failed copy is left, and ember works again once space is back.
        assert agent.files() == [f"volume-{src['id']}"], agent.files()
        os.unlink(filler)
        again = agent.create_volume(source_volid=src["id"])
        cli("message-delete", msg["id"])
        assert agent.request("GET", f"/messages/{msg['id']}", version="3.3").status_code == 404
        for vol in (clone, again["id"], src["id"]):
            assert agent.request("DELETE", f"/volumes/{vol}").status_code == 202
            agent.wait_volume(vol, "deleted")
    finally:
        stop_agent(agent)


def test_messages_api_bad_input(agent):
    """Unknown ids, wrong methods, filters and microversions answer Cinder's faults."""
    missing = str(uuid.uuid4())
    assert agent.request("GET", "/messages").status_code == 404, "3.0 has no messages"
    assert agent.request("GET", "/messages", version="3.2").status_code == 404
    r = agent.request("GET", f"/messages/{missing}", version="3.3")
    assert r.status_code == 404 and "itemNotFound" in r.json(), r.text
    assert agent.request("DELETE", f"/messages/{missing}", version="3.3").status_code == 404
    assert agent.request("PUT", "/messages", {"x": 1}, version="3.3").status_code == 405
    assert agent.request("POST", f"/messages/{missing}", {}, version="3.3").status_code == 405
    r = agent.request("GET", "/messages?bogus=1", version="3.31")
    assert r.status_code == 400 and "bogus" in r.text, r.text
    assert agent.request("GET", "/messages?bogus=1", version="3.30").status_code == 200, "filters from 3.31"
    assert agent.request("GET", "/messages?limit=x", version="3.5").status_code == 400
    assert agent.request("GET", "/messages?limit=-1", version="3.5").status_code == 400
    # The URL form without a project works too.
    r = agent.session.get(f"{agent.endpoint}/messages", headers={"OpenStack-API-Version": "volume 3.3",
                                                                  "X-Auth-Token": f"{USER}:{PROJECT}"})
    assert r.status_code == 200 and isinstance(r.json()["messages"], list), r.text
