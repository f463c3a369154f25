"""The Debian package and the service protocol: what `scripts/build-deb` puts in
the .deb (paths, modes, conffile, maintainer scripts, a unit systemd accepts, a
binary that runs), and ember speaking systemd's notify protocol (READY after it
serves, WATCHDOG pings, STOPPING at SIGTERM) to a real AF_UNIX datagram socket,
as systemd's NOTIFY_SOCKET is. The systemd cycle itself runs in the test VM."""

import os
import signal
import socket
import subprocess
import time

import pytest
import requests

from conftest import ROOT, start_agent, stop_agent


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    path = os.environ.get("EMBER_DEB")
    if not path:
        path = subprocess.run([os.path.join(ROOT, "scripts/build-deb")], check=True, capture_output=True, text=True,
                              timeout=1800).stdout.strip().splitlines()[-1]
        path = os.path.join(ROOT, path)
    root = tmp_path_factory.mktemp("deb")
    subprocess.run(["dpkg-deb", "-x", path, str(root)], check=True, timeout=60)
    return path, root


def test_the_package_holds_what_a_host_needs(deb):
    path, root = deb
    listing = subprocess.run(["dpkg-deb", "-c", path], check=True, capture_output=True, text=True).stdout
    entries = {line.split()[-1].lstrip("."): line.split()[0] for line in listing.splitlines()}
    assert entries["/usr/bin/ember"] == "-rwxr-xr-x"
    for f in ["/etc/ember/ember.toml", "/lib/systemd/system/ember.service", "/usr/lib/tmpfiles.d/ember.conf",
              "/lib/udev/rules.d/60-ember.rules", "/lib/udev/rules.d/57-ember-lvm.rules"]:
        assert entries[f] == "-rw-r--r--", f
    info = subprocess.run(["dpkg-deb", "-I", path], check=True, capture_output=True, text=True).stdout
    assert "Package: ember" in info and "Depends:" in info
    conffiles = subprocess.run(["dpkg-deb", "--ctrl-tarfile", path], check=True, capture_output=True).stdout
    assert b"conffiles" in conffiles and b"postinst" in conffiles
    tmpfiles = (root / "usr/lib/tmpfiles.d/ember.conf").read_text()
    assert "d /var/lib/ember 0700 root root" in tmpfiles
    version = subprocess.run([str(root / "usr/bin/ember"), "version"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0 and version.stdout.startswith("ember "), version
    # The commented configuration is valid as shipped: the doctor reads it.
    doctor = subprocess.run([str(root / "usr/bin/ember"), "doctor", "--config", str(root / "etc/ember/ember.toml"),
                             "--data-dir", str(root / "state"), "--json"], capture_output=True, text=True, timeout=60)
    assert '"checks"' in doctor.stdout, doctor.stderr


def test_the_unit_is_one_systemd_accepts(deb, tmp_path):
    _, root = deb
    unit = (root / "lib/systemd/system/ember.service").read_text()
    for line in ["Type=notify", "KillMode=process", "Restart=on-failure", "WatchdogSec=", "OOMScoreAdjust=-",
                 "LimitNOFILE=", "CapabilityBoundingSet=", "After=network-online.target"]:
        assert line in unit, line
    check = tmp_path / "ember-check.service"
    check.write_text(unit.replace("/usr/bin/ember", str(root / "usr/bin/ember")))
    r = subprocess.run(["systemd-analyze", "verify", str(check)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def test_ember_speaks_the_notify_protocol(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    agent = start_agent(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    try:
        got = []
        deadline = time.time() + 30
        while "READY=1" not in got or got.count("WATCHDOG=1") < 2:
            assert time.time() < deadline, got
            got.append(sock.recv(4096).decode())
        assert requests.get(f"{agent.root}/healthz", timeout=10).status_code == 200, "ready means serving"
        agent.proc.send_signal(signal.SIGTERM)
        while "STOPPING=1" not in got:
            got.append(sock.recv(4096).decode())
        assert agent.proc.wait(timeout=30) == 0
    finally:
        if agent.proc.poll() is None:
            stop_agent(agent)
        sock.close()
