"""Attach an ember volume the way a hypervisor does, with os-brick from PyPI:
read this host's connector properties, ask ember for connection_info, connect,
write and read back through the device os-brick returns, disconnect, and give
the connection back. Run as root inside the test VM by tests/vm.rs:

    python tests/vm_osbrick.py ENDPOINT PROJECT VOLUME_ID...

ENDPOINT is ember's /v3 URL. Prints one JSON line per volume with the timings;
exits non-zero on any failure. One process for every volume: importing os-brick
and oslo under software emulation costs more than the attaches.
"""

import json
import mmap
import os
import sys
import time

import requests
from oslo_config import cfg

import os_brick
from os_brick import privileged
from os_brick.initiator import connector as brick


def main():
    endpoint, project, volumes = sys.argv[1], sys.argv[2], sys.argv[3:]
    # As root without sudo: privileged calls run in this process (shared/vm/FACTS.md).
    os.makedirs("/run/osbrick-locks", exist_ok=True)
    cfg.CONF([], project="ember-vm-test", default_config_files=[])
    cfg.CONF.set_override("lock_path", "/run/osbrick-locks", group="oslo_concurrency")
    os_brick.setup(cfg.CONF)
    privileged.default.set_client_mode(False)

    props = brick.get_connector_properties(None, "127.0.0.1", multipath=False, enforce_multipath=False)
    session = requests.Session()
    session.headers.update({"X-Auth-Token": f"admin:{project}", "Content-Type": "application/json"})
    for volume_id in volumes:
        attach(session, f"{endpoint}/{project}/volumes/{volume_id}/action", props)


def attach(session, url, props):
    started = time.monotonic()
    r = session.post(url, json={"os-initialize_connection": {"connector": props}}, timeout=60)
    r.raise_for_status()
    info = r.json()["connection_info"]
    initialized = time.monotonic()

    conn = brick.InitiatorConnector.factory(info["driver_volume_type"].upper(), None,
                                            use_multipath=False, device_scan_attempts=10)
    device = conn.connect_volume(info["data"])
    connected = time.monotonic()
    path = device["path"]

    # 1 MiB pattern with O_DIRECT (page-aligned buffers from mmap), read back.
    pattern = mmap.mmap(-1, 1 << 20)
    pattern.write(os.urandom(1 << 20))
    back = mmap.mmap(-1, 1 << 20)
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    try:
        assert os.pwritev(fd, [pattern], 4 << 20) == 1 << 20
        os.fsync(fd)
        assert os.preadv(fd, [back], 4 << 20) == 1 << 20
    finally:
        os.close(fd)
    assert back[:] == pattern[:], "read back differs from what was written"

    conn.disconnect_volume(info["data"], device)
    disconnected = time.monotonic()
    r = session.post(url, json={"os-terminate_connection": {"connector": props}}, timeout=60)
    r.raise_for_status()
    r = session.post(url, json={"os-detach": {}}, timeout=60)
    r.raise_for_status()
    print(json.dumps({
        "protocol": info["driver_volume_type"],
        "path": path,
        "initialize_s": round(initialized - started, 3),
        "connect_s": round(connected - initialized, 3),
        "disconnect_s": round(disconnected - connected, 3),
    }))


if __name__ == "__main__":
    main()
