"""Fixtures that start a real `ember serve` on a temporary data dir and talk to it.

The agent binary comes from $EMBER_BIN, else the newest of target/{release,debug}/ember.
Every test module gets its own agent (module scope), so a test
that breaks the store cannot poison the next module.
"""

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests

import schemas

schemas.install()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A test fails when any response it (or its fixtures) received breaks the
    published response schema of its operation and microversion (schemas.py)."""
    result = yield
    found, schemas.VIOLATIONS[:] = list(schemas.VIOLATIONS), []
    if found:
        raise AssertionError("responses outside the published schemas:\n" + "\n".join(found[:20]))
    return result

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "0123456789abcdef0123456789abcdef"
USER = "admin"


def ember_binary():
    """$EMBER_BIN, else the newer of target/release/ember and target/debug/ember
    (a stale release build must not shadow the debug build just made)."""
    if os.environ.get("EMBER_BIN"):
        return os.environ["EMBER_BIN"]
    built = [ROOT / "target" / p / "ember" for p in ("release", "debug")]
    built = [b for b in built if b.exists()]
    if not built:
        raise RuntimeError("no ember binary: run `cargo build` or set EMBER_BIN")
    return str(max(built, key=lambda b: b.stat().st_mtime))


def free_port(ip="127.0.0.1"):
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def loop_devices():
    """Loop devices whose backing file lies under `prefix` (all of them with None)."""
    out = subprocess.run(["losetup", "-l", "-n", "-O", "NAME,BACK-FILE"],
                         capture_output=True, text=True, check=False).stdout
    return [line.split() for line in out.splitlines() if line.strip()]


class Agent:
    """A running `ember serve` plus helpers to call it with plain HTTP."""

    def __init__(self, data_dir, port, proc, log_path, ip="127.0.0.1"):
        self.data_dir = Path(data_dir)
        self.port = port
        self.proc = proc
        self.log_path = log_path
        self.ip = ip
        self.root = f"http://{ip}:{port}"
        self.endpoint = f"{self.root}/v3"
        self.base = f"{self.root}/v3/{PROJECT}"
        self.session = requests.Session()
        self.session.headers.update({"X-Auth-Token": f"{USER}:{PROJECT}",
                                     "Accept": "application/json"})

    # -- raw HTTP ---------------------------------------------------------
    def request(self, method, path, body=None, version=None, raw=None, headers=None):
        """`path` is relative to /v3/{project}; `raw` sends bytes as they are."""
        h = {}
        if version:
            h["OpenStack-API-Version"] = f"volume {version}"
        if body is not None or raw is not None:
            h["Content-Type"] = "application/json"
        if headers:
            h.update(headers)
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        url = path if path.startswith("http") else self.base + path
        return self.session.request(method, url, data=data, headers=h, timeout=30)

    def action(self, volume_id, body, version=None, raw=None):
        return self.request("POST", f"/volumes/{volume_id}/action", body,
                            version=version, raw=raw)

    # -- helpers ----------------------------------------------------------
    def create_volume(self, size=1, **extra):
        body = {"volume": {"size": size, **extra}}
        r = self.request("POST", "/volumes", body)
        assert r.status_code == 202, r.text
        vol = r.json()["volume"]
        return self.wait_volume(vol["id"], "available")

    def get_volume(self, volume_id, version=None):
        r = self.request("GET", f"/volumes/{volume_id}", version=version)
        assert r.status_code == 200, r.text
        return r.json()["volume"]

    def wait_volume(self, volume_id, status, timeout=60):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            r = self.request("GET", f"/volumes/{volume_id}")
            if status == "deleted" and r.status_code == 404:
                return None
            if r.status_code == 200:
                last = r.json()["volume"]
                if last["status"] == status:
                    return last
                if last["status"].startswith("error") and not status.startswith("error"):
                    raise AssertionError(f"volume {volume_id} went to {last['status']}")
            time.sleep(0.05)
        raise AssertionError(f"volume {volume_id} never reached {status}; last: {last}")

    def create_snapshot(self, volume_id, **extra):
        r = self.request("POST", "/snapshots",
                         {"snapshot": {"volume_id": volume_id, **extra}})
        assert r.status_code == 202, r.text
        return self.wait_snapshot(r.json()["snapshot"]["id"], "available")

    def wait_snapshot(self, snapshot_id, status, timeout=60):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            r = self.request("GET", f"/snapshots/{snapshot_id}")
            if status == "deleted" and r.status_code == 404:
                return None
            if r.status_code == 200:
                last = r.json()["snapshot"]
                if last["status"] == status:
                    return last
            time.sleep(0.05)
        raise AssertionError(f"snapshot {snapshot_id} never reached {status}; last: {last}")

    def volume_file(self, volume_id):
        return self.data_dir / "volumes" / f"volume-{volume_id}"

    def db_dump(self):
        """Every row of every table, for 'nothing changed' assertions."""
        con = sqlite3.connect(f"file:{self.data_dir / 'ember.db'}?mode=ro", uri=True)
        try:
            tables = [r[0] for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
            return {t: sorted(map(repr, con.execute(f"SELECT * FROM {t}"))) for t in tables}
        finally:
            con.close()

    def files(self):
        return sorted(p.name for p in (self.data_dir / "volumes").iterdir())

    def log(self):
        return Path(self.log_path).read_text(errors="replace")


def write_at(path, offset, data):
    """Writes bytes into a volume file and makes them durable, as a guest would."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def read_at(path, offset, n):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(n)


NO_TARGET = '\n[target]\niscsi = "none"\nnvme = "none"\n'


def start_agent(config_text=None, data_dir=None, env=None, ip="127.0.0.1", port=None):
    """Starts `ember serve` on a new data dir (or the one given), on a free port
    of `ip` (or on `port`, once: a peer's configuration names it).

    Unless the configuration has a [target] section, the agent exports nothing
    (so no test starts a tgtd on the host by accident).

    A free port is only free until someone takes it: the agent counts as started
    when its own log says it serves on that port, and one that could not bind is
    started again on another."""
    if data_dir is None:
        data_dir = tempfile.mkdtemp(prefix="ember-test-", dir=os.environ.get("EMBER_TEST_TMP"))
    if config_text is None or "[target]" not in config_text:
        config_text = (config_text or "") + NO_TARGET
    log_path = os.path.join(data_dir, "agent.log")
    fixed = port
    for _ in range(1 if fixed else 5):
        port = fixed or free_port(ip)
        argv = [ember_binary(), "serve", "--data-dir", data_dir, "--listen", f"{ip}:{port}"]
        if config_text is not None:
            cfg = os.path.join(data_dir, "ember.toml")
            Path(cfg).write_text(config_text)
            argv += ["--config", cfg]
        log = open(log_path, "w")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        agent = Agent(data_dir, port, proc, log_path, ip)
        deadline = time.time() + 30
        while time.time() < deadline:
            if proc.poll() is not None:
                if "listen on" in agent.log():
                    break  # the port was taken meanwhile: another one
                raise RuntimeError(f"ember exited with {proc.returncode}:\n{agent.log()}")
            if f"listen={ip}:{port}" in agent.log() or f'"listen":"{ip}:{port}"' in agent.log():
                try:
                    if requests.get(agent.root + "/", timeout=1).status_code == 300:
                        return agent
                except requests.ConnectionError:
                    pass
            time.sleep(0.05)
        else:
            proc.kill()
            raise RuntimeError(f"ember did not answer on {agent.root}:\n{agent.log()}")
    raise RuntimeError("ember could not find a free port in 5 tries")


def stop_agent(agent):
    agent.proc.terminate()
    try:
        agent.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        agent.proc.kill()
        agent.proc.wait()
    assert "panicked" not in agent.log(), agent.log()
    # A clean stop removes the data dir; after a failure it stays for inspection.
    shutil.rmtree(agent.data_dir, ignore_errors=True)


def serve_for_module(config_text=None):
    """An agent for a module's tests: stopped at the end, and no loop device of its
    data dir may outlive it."""
    before = loop_devices()
    a = start_agent(config_text)
    yield a
    stop_agent(a)
    after = loop_devices()
    leaked = [d for d in after if d not in before and a.data_dir.as_posix() in " ".join(d)]
    assert not leaked, f"leaked loop devices: {leaked}"


@pytest.fixture(scope="module")
def agent():
    yield from serve_for_module()


@pytest.fixture
def new_uuid():
    return str(uuid.uuid4())


# -- real clients (test_cinderclient.py, test_openstacksdk.py) -------------------

VENV_BIN = ROOT / ".venv" / "bin"


def make_cinder(agent, version="3.71", project=PROJECT):
    """A python-cinderclient v3 Client in noauth mode (URLs carry the project)."""
    from cinderclient import client
    from cinderclient.contrib import noauth
    from keystoneauth1 import session
    auth = noauth.CinderNoAuthPlugin(user_id=USER, project_id=project,
                                     endpoint=agent.endpoint)
    # A timeout, so that a request the agent never answers fails the test instead
    # of hanging the suite.
    return client.Client(version, session=session.Session(auth=auth, timeout=30))


@pytest.fixture(scope="module")
def cinder(agent):
    return make_cinder(agent)


def cinder_cli_for(agent, home):
    """A runner of the venv's `cinder` CLI against `agent`; returns CompletedProcess."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OS_", "CINDER_", "Cinder_"))}
    env["HOME"] = str(home)

    def run(*args, check=True, version="3.71"):
        argv = [str(VENV_BIN / "cinder"), "--os-auth-type", "noauth",
                "--os-user-id", USER, "--os-project-id", PROJECT,
                "--os-endpoint", agent.endpoint,
                "--os-volume-api-version", version, *map(str, args)]
        p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
        if check:
            assert p.returncode == 0, f"{argv}\nstdout:{p.stdout}\nstderr:{p.stderr}"
        return p
    return run


@pytest.fixture(scope="module")
def cinder_cli(agent, tmp_path_factory):
    """Run the `cinder` CLI of the venv against the agent; returns CompletedProcess."""
    return cinder_cli_for(agent, tmp_path_factory.mktemp("cinder-home"))


def make_sdk(agent):
    """An openstacksdk Connection with auth_type none (no project in URLs,
    token "notused"); clouds.yaml and OS_* variables are not read."""
    import openstack
    return openstack.connect(auth_type="none", auth={"endpoint": agent.endpoint},
                             load_yaml_config=False, load_envvars=False, api_timeout=30)


@pytest.fixture(scope="module")
def sdk(agent, tmp_path_factory):
    cfg = tmp_path_factory.mktemp("sdk-config") / "clouds.yaml"
    cfg.write_text("clouds: {}\n")
    old = os.environ.get("OS_CLIENT_CONFIG_FILE")
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(cfg)
    conn = make_sdk(agent)
    yield conn
    conn.close()
    if old is None:
        os.environ.pop("OS_CLIENT_CONFIG_FILE", None)
    else:
        os.environ["OS_CLIENT_CONFIG_FILE"] = old


def wait_for(predicate, timeout=30, interval=0.05, what="condition"):
    """Poll `predicate` until it returns a truthy value; return that value."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
