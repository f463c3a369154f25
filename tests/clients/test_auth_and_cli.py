"""Token auth and policy (spec §1.6), noauth's guard rails, and the command line."""

import json
import os
import shutil
import subprocess
import textwrap

import pytest
import requests

from conftest import ember_binary, free_port, start_agent, stop_agent, wait_for

P1 = "11111111111111111111111111111111"
P2 = "22222222222222222222222222222222"
TOKENS = {
    "admin": ("admin-token-0123456789", "root", P1, ["admin"]),
    "alice": ("alice-token-0123456789", "alice", P1, ["member"]),
    "rita": ("rita-token-01234567890", "rita", P1, ["reader"]),
    "bob": ("bob-token-012345678901", "bob", P2, ["member"]),
}


@pytest.fixture(scope="module")
def token_agent(tmp_path_factory):
    d = tmp_path_factory.mktemp("tokens")
    tokens = d / "tokens.toml"
    tokens.write_text("".join(
        f'[[tokens]]\ntoken = "{t}"\nuser_id = "{u}"\nproject_id = "{p}"\nroles = {r!r}\n\n'.replace("'", '"')
        for t, u, p, r in TOKENS.values()))
    agent = start_agent(f'[auth]\nstrategy = "token"\ntokens_file = "{tokens}"\n')
    yield agent
    stop_agent(agent)


def call(agent, who, method, path, body=None, version=None):
    headers = {"Accept": "application/json"}
    if who:
        headers["X-Auth-Token"] = TOKENS[who][0]
    if version:
        headers["OpenStack-API-Version"] = f"volume {version}"
    return requests.request(method, agent.endpoint + path, json=body, headers=headers, timeout=30)


def fault(r, code, name):
    assert r.status_code == code, r.text
    assert set(r.json()) == {name}, r.text
    assert r.json()[name]["code"] == code


def test_missing_or_unknown_token_is_401(token_agent):
    fault(call(token_agent, None, "GET", "/volumes"), 401, "unauthorized")
    r = requests.get(token_agent.endpoint + "/volumes", headers={"X-Auth-Token": "nope"}, timeout=10)
    fault(r, 401, "unauthorized")
    # The version documents need no token.
    assert requests.get(token_agent.root + "/", timeout=10).status_code == 300


def test_member_owns_reader_reads_other_project_sees_404(token_agent):
    r = call(token_agent, "alice", "POST", "/volumes", {"volume": {"size": 1, "name": "a"}})
    assert r.status_code == 202, r.text
    vid = r.json()["volume"]["id"]
    assert r.json()["volume"]["user_id"] == "alice"
    assert "os-vol-host-attr:host" not in r.json()["volume"], "admin-only field shown to a member"
    wait_for(lambda: call(token_agent, "alice", "GET", f"/volumes/{vid}").json()["volume"]["status"] == "available",
             what="volume available")

    # The reader of the project sees it but may not change it.
    assert call(token_agent, "rita", "GET", f"/volumes/{vid}").status_code == 200
    fault(call(token_agent, "rita", "POST", f"/volumes/{vid}/action", {"os-reserve": None}), 403, "forbidden")
    fault(call(token_agent, "rita", "DELETE", f"/volumes/{vid}"), 403, "forbidden")

    # Another project's member gets 404, not 403, and an empty list.
    fault(call(token_agent, "bob", "GET", f"/volumes/{vid}"), 404, "itemNotFound")
    fault(call(token_agent, "bob", "POST", f"/volumes/{vid}/action", {"os-reserve": None}), 404, "itemNotFound")
    assert call(token_agent, "bob", "GET", "/volumes").json()["volumes"] == []
    assert call(token_agent, "bob", "GET", "/volumes?all_tenants=1").json()["volumes"] == []

    # Admin-only actions: 403 for the member, fine for the admin.
    reset = {"os-reset_status": {"status": "error"}}
    fault(call(token_agent, "alice", "POST", f"/volumes/{vid}/action", reset), 403, "forbidden")
    assert call(token_agent, "admin", "POST", f"/volumes/{vid}/action", reset).status_code == 202
    listed = call(token_agent, "admin", "GET", "/volumes/detail?all_tenants=1").json()["volumes"]
    assert [v["id"] for v in listed] == [vid]
    assert listed[0]["os-vol-host-attr:host"].count("@") == 1

    # A URL naming another project than the token's is malformed.
    r = requests.get(f"{token_agent.root}/v3/{P2}/volumes", headers={"X-Auth-Token": TOKENS["alice"][0]}, timeout=10)
    fault(r, 400, "badRequest")
    assert r.json()["badRequest"]["message"] == "Malformed request url"

    # Member deletes its own volume.
    assert call(token_agent, "admin", "POST", f"/volumes/{vid}/action",
                {"os-reset_status": {"status": "available"}}).status_code == 202
    assert call(token_agent, "alice", "DELETE", f"/volumes/{vid}").status_code == 202


def test_types_are_admin_managed(token_agent):
    body = {"volume_type": {"name": "gold"}}
    fault(call(token_agent, "alice", "POST", "/types", body), 403, "forbidden")
    r = call(token_agent, "admin", "POST", "/types", body)
    assert r.status_code == 200, r.text
    assert call(token_agent, "alice", "GET", "/types/default").json()["volume_type"]["name"] == "__DEFAULT__"


def test_noauth_without_token_answers_204_with_the_token_to_use(agent):
    r = requests.get(agent.endpoint + "/volumes", headers={"X-Auth-User": "joe", "X-Auth-Project-Id": "abc"},
                     timeout=10)
    assert r.status_code == 204
    assert r.headers["X-Auth-Token"] == "joe:abc"
    assert r.headers["X-Server-Management-Url"].endswith("/v3")


def run_ember(*args, timeout=20):
    return subprocess.run([ember_binary(), *args], capture_output=True, text=True, timeout=timeout)


def test_noauth_refused_on_a_non_loopback_address(tmp_path):
    r = run_ember("serve", "--data-dir", str(tmp_path), "--listen", f"0.0.0.0:{free_port()}")
    assert r.returncode != 0
    assert "refusing noauth on non-loopback address" in r.stderr
    assert not (tmp_path / "ember.db").exists(), "nothing may be created before refusing"


def test_bad_config_is_refused_with_the_reason(tmp_path):
    cfg = tmp_path / "ember.toml"
    cfg.write_text("[pool]\nvolume_clear = \"shred\"\n")
    r = run_ember("serve", "--config", str(cfg), "--data-dir", str(tmp_path / "d"))
    assert r.returncode != 0 and "volume_clear" in r.stderr, r.stderr
    cfg.write_text(textwrap.dedent("""\
        [auth]
        strategy = "token"
    """))
    r = run_ember("serve", "--config", str(cfg), "--data-dir", str(tmp_path / "d"))
    assert r.returncode != 0 and "tokens_file" in r.stderr, r.stderr


def test_version_and_doctor(tmp_path):
    r = run_ember("version")
    assert r.returncode == 0 and r.stdout.startswith("ember ") and "3.71" in r.stdout
    r = run_ember("doctor", "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 0
    lines = {line.split()[0]: line for line in r.stdout.splitlines() if line.strip()}
    expected = "ok" if os.path.exists("/dev/loop-control") else "MISSING"
    assert lines["loop"].split()[1] == expected, r.stdout
    assert lines["libblkid"].split()[1] == "ok", r.stdout
    assert lines["data"].split()[2] == "ok", r.stdout
    # The host has no configfs: asking for nvmet explicitly cannot work, and says how to fix it.
    cfg = tmp_path / "nvmet.toml"
    cfg.write_text('[target]\nnvme = "nvmet"\niscsi = "none"\n')
    r = run_ember("doctor", "--config", str(cfg), "--data-dir", str(tmp_path / "d"), "--json")
    report = json.loads(r.stdout)
    by_name = {c["name"]: c for c in report["checks"]}
    configfs_there = os.path.isdir("/sys/kernel/config/nvmet")
    assert report["healthy"] is configfs_there and (r.returncode == 0) is configfs_there, r.stdout + r.stderr
    if not configfs_there:
        assert by_name["nvmet"]["required"] and by_name["nvmet"]["fix"] == "modprobe nvmet", by_name["nvmet"]
    assert "iscsi" not in by_name and "tgtd" not in by_name, "iscsi = none asks for nothing"
    # An LVM pool on a volume group this host does not have.
    cfg.write_text('[pool]\nbackend = "lvm"\nvolume_group = "no-such-vg"\n[target]\niscsi = "none"\nnvme = "none"\n')
    r = run_ember("doctor", "--config", str(cfg), "--data-dir", str(tmp_path / "d"))
    assert r.returncode != 0, r.stdout
    vg = next(line for line in r.stdout.splitlines() if line.startswith("volume group"))
    assert "MISSING" in vg and "vgcreate no-such-vg" in vg, vg


def test_sigterm_exits_even_with_a_stuck_client():
    """A client that sent headers and never its body must not hold the agent up."""
    import socket
    import time

    agent = start_agent()
    try:
        stuck = socket.create_connection(("127.0.0.1", agent.port))
        stuck.sendall(b"POST /v3/volumes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"X-Auth-Token: a:b\r\nContent-Length: 100\r\n\r\n{")
        time.sleep(0.2)
        started = time.time()
        agent.proc.terminate()
        agent.proc.wait(timeout=30)
        assert agent.proc.returncode == 0, agent.log()
        assert time.time() - started < 20
        stuck.close()
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
        shutil.rmtree(agent.data_dir, ignore_errors=True)


def test_one_ember_per_data_dir():
    first = start_agent()
    try:
        r = run_ember("serve", "--data-dir", str(first.data_dir), "--listen", f"127.0.0.1:{free_port()}")
        assert r.returncode != 0, r.stderr
        assert f"in use by another ember (pid {first.proc.pid})" in r.stderr, r.stderr
        assert first.request("GET", "/volumes").status_code == 200, "the first one is untouched"
    finally:
        stop_agent(first)


def test_the_data_dir_is_private_whatever_the_umask(tmp_path):
    import stat
    data = tmp_path / "data"
    (data / "volumes").mkdir(parents=True)
    leftover = data / "volumes" / "volume-old"
    leftover.write_bytes(b"tenant bytes")
    os.chmod(data, 0o755)
    os.chmod(leftover, 0o644)
    old = os.umask(0o022)
    try:
        agent = start_agent(data_dir=str(data))
    finally:
        os.umask(old)
    try:
        vol = agent.create_volume(1)
        snap = agent.create_snapshot(vol["id"])
        mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)
        assert mode(data) == 0o700 and mode(data / "volumes") == 0o700 and mode(data / "snapshots") == 0o700
        for f in [agent.volume_file(vol["id"]), data / "snapshots" / f"snapshot-{snap['id']}", leftover,
                  data / "ember.db", data / "ember.db-wal", data / "ember.lock"]:
            assert mode(f) == 0o600, f"{f} is {oct(mode(f))}"
        assert "tightened permissions" in agent.log()
    finally:
        stop_agent(agent)


def test_a_readable_tokens_file_is_warned_about_or_refused_and_syntax_errors_hide_the_line(tmp_path):
    secret = "s3cret-token-never-printed"
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[[tokens]]\ntoken = "{secret}-aaaa"\nuser_id = "u"\nproject_id = "p"\nroles = ["member"]\n')
    os.chmod(tokens, 0o644)
    cfg = f'[auth]\nstrategy = "token"\ntokens_file = "{tokens}"\n'
    agent = start_agent(cfg)
    try:
        assert "readable by others" in agent.log(), agent.log()
    finally:
        stop_agent(agent)
    config = tmp_path / "refuse.toml"
    config.write_text(cfg.replace('[auth]\n', '[auth]\nrefuse_readable_tokens_file = true\n'))
    r = run_ember("serve", "--config", str(config), "--data-dir", str(tmp_path / "d1"))
    assert r.returncode != 0 and "chmod 600" in r.stderr, r.stderr
    os.chmod(tokens, 0o600)
    tokens.write_text(f'[[tokens]]\ntoken = "{secret}\nuser_id = "u"\n')
    config.write_text(cfg)
    r = run_ember("serve", "--config", str(config), "--data-dir", str(tmp_path / "d2"))
    assert r.returncode != 0 and "line 2" in r.stderr, r.stderr
    assert secret not in r.stderr, r.stderr
