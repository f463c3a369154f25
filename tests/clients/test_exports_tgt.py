"""iSCSI exports through tgt, end to end on the host: python-cinderclient asks for
a connection, real userspace initiators (qemu-io's iscsi driver, libiscsi's
iscsi-inq, iscsi-readcapacity16 and iscsi-perf) use what it answers.

The test harness owns one tgtd (its own control port and portal, so a tgtd of the
host is never touched) and stops it at the end; ember never stops tgtd. Each agent
gets its own IQN prefix, so one agent's reconciliation never sees another's
exports as its own.
"""

import os
import re
import signal
import subprocess
import time
import uuid

import pytest
import requests

from conftest import (cinder_cli_for, free_port, make_cinder, make_sdk, read_at, serve_for_module,
                      start_agent, stop_agent, wait_for, write_at)

HOST1 = "iqn.1994-05.com.example:host1"
HOST2 = "iqn.1994-05.com.example:host2"


def tgtadm(control, *args, check=True):
    p = subprocess.run(["tgtadm", "-C", str(control), "--lld", "iscsi", *args],
                       capture_output=True, text=True, timeout=30)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def stop_tgtd(control):
    """Deletes every target and account of that tgtd, then stops it."""
    listing = tgtadm(control, "--op", "show", "--mode", "target", check=False).stdout
    for tid in re.findall(r"^Target (\d+):", listing, re.M):
        tgtadm(control, "--op", "delete", "--mode", "target", "--tid", tid, "--force", check=False)
    accounts = tgtadm(control, "--op", "show", "--mode", "account", check=False).stdout.splitlines()[1:]
    for user in (a.strip() for a in accounts if a.strip()):
        tgtadm(control, "--op", "delete", "--mode", "account", "--user", user, check=False)
    subprocess.run(["tgtadm", "-C", str(control), "--op", "delete", "--mode", "system"],
                   capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def tgtd():
    """(control port, iSCSI port) of a tgtd of the tests' own, on loopback."""
    if os.geteuid() != 0:
        pytest.fail("tgtd needs root (scripts/test runs this tier as root)")
    control, port = 40 + os.getpid() % 50, free_port()
    subprocess.run(["tgtd", "-C", str(control), "--iscsi", f"portal=127.0.0.1:{port}"], check=True, timeout=30)
    wait_for(lambda: subprocess.run(["tgtadm", "-C", str(control), "--op", "show", "--mode", "system"],
                                    capture_output=True).returncode == 0, what="tgtd")
    yield control, port
    stop_tgtd(control)


def tgt_config(control, port, start_tgtd=False, extra=""):
    prefix = f"iqn.2010-10.org.ember-test:p{uuid.uuid4().hex[:8]}-"
    return (f'[target]\niscsi = "tgt"\nnvme = "none"\niscsi_port = {port}\niqn_prefix = "{prefix}"\n{extra}'
            f'[target.tgt]\ncontrol_port = {control}\nstart_tgtd = {str(start_tgtd).lower()}\n')


@pytest.fixture(scope="module")
def tgt_agent(tgtd):
    yield from serve_for_module(tgt_config(*tgtd))


@pytest.fixture(scope="module")
def sdk_for_tgt(tgt_agent, tmp_path_factory):
    cfg = tmp_path_factory.mktemp("sdk-config") / "clouds.yaml"
    cfg.write_text("clouds: {}\n")
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(cfg)
    conn = make_sdk(tgt_agent)
    yield conn
    conn.close()


def targets(control):
    """{iqn: {"tid", "backing", "acls", "accounts"}} of tgtd's listing."""
    out, cur, section = {}, None, None
    for line in tgtadm(control, "--op", "show", "--mode", "target").stdout.splitlines():
        m = re.match(r"^Target (\d+): (\S+)", line)
        if m:
            cur = out[m.group(2)] = {"tid": m.group(1), "backing": [], "acls": [], "accounts": []}
            continue
        s = line.strip()
        if s in ("Account information:", "ACL information:", "LUN information:"):
            section = s
        elif s.startswith("Backing store path:") and not s.endswith("None"):
            cur["backing"].append(s.split(": ", 1)[1])
        elif section == "ACL information:" and s:
            cur["acls"].append(s)
        elif section == "Account information:" and s:
            cur["accounts"].append(s)
    return out


def qemu_io(data, initiator, *commands, secret=None, user=None):
    """qemu-io on the export of `data` (connection_info data); returns (rc, output)."""
    user = user or data["auth_username"]
    secret = secret if secret is not None else data["auth_password"]
    host, port = data["target_portal"].rsplit(":", 1)
    opts = (f"driver=iscsi,transport=tcp,portal={host}:{port},target={data['target_iqn']},"
            f"lun={data['target_lun']},user={user},password-secret=sec0,initiator-name={initiator}")
    argv = ["qemu-io", "--object", f"secret,id=sec0,data={secret}", "--image-opts", opts]
    for c in commands:
        argv += ["-c", c]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr


def iscsi_url(data):
    return (f"iscsi://{data['auth_username']}%{data['auth_password']}@{data['target_portal']}/"
            f"{data['target_iqn']}/{data['target_lun']}")


def capacity(data, initiator):
    p = subprocess.run(["iscsi-readcapacity16", "-s", "-i", initiator, iscsi_url(data)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    return int(p.stdout.strip())


def connector(initiator, **extra):
    return {"initiator": initiator, "host": "hv1", "ip": "127.0.0.1", "platform": "x86_64",
            "os_type": "linux", "multipath": False, **extra}


def test_legacy_flow_with_cinderclient_and_real_initiators(tgt_agent, tgtd):
    control, port = tgtd
    cinder = make_cinder(tgt_agent)
    vol = tgt_agent.create_volume(1)
    cinder.volumes.reserve(vol["id"])
    info = cinder.volumes.initialize_connection(vol["id"], connector(HOST1))
    assert info["driver_volume_type"] == "iscsi"
    data = info["data"]
    assert data["target_portal"] == f"127.0.0.1:{port}" and data["target_lun"] == 1
    assert data["target_iqn"].endswith(f"volume-{vol['id']}") and data["volume_id"] == vol["id"]
    assert data["auth_method"] == "CHAP" and len(data["auth_username"]) == 20 and len(data["auth_password"]) == 16
    assert data["access_mode"] == "rw" and data["target_discovered"] is False
    listed = targets(control)[data["target_iqn"]]
    assert listed["acls"] == [HOST1], listed
    assert listed["accounts"] == [data["auth_username"]]

    # A pattern through the export lands in the volume, and reads back through it.
    rc, out = qemu_io(data, HOST1, "write -P 0xa7 1M 2M", "read -P 0xa7 1M 2M")
    assert rc == 0 and "read 2097152/2097152" in out, out
    assert read_at(tgt_agent.volume_file(vol["id"]), 1 << 20, 4096) == b"\xa7" * 4096
    # ...and what the volume holds reads through it.
    write_at(tgt_agent.volume_file(vol["id"]), 8 << 20, b"\x3c" * 65536)
    rc, out = qemu_io(data, HOST1, "read -P 0x3c 8M 64k")
    assert rc == 0 and "read 65536/65536" in out, out

    # A wrong secret, and an initiator that was not admitted, are refused.
    rc, out = qemu_io(data, HOST1, "read 0 4k", secret="x" * 16)
    assert rc != 0 and "Authentication failure" in out, out
    rc, out = qemu_io(data, HOST2, "read 0 4k")
    assert rc != 0, out

    cinder.volumes.attach(vol["id"], "11111111-2222-3333-4444-555555555555", "/dev/vdb")
    assert tgt_agent.get_volume(vol["id"])["status"] == "in-use"
    cinder.volumes.begin_detaching(vol["id"])
    cinder.volumes.terminate_connection(vol["id"], connector(HOST1))
    rc, out = qemu_io(data, HOST1, "read 0 4k")
    assert rc != 0, "terminate removes access"
    assert targets(control)[data["target_iqn"]]["acls"] == []
    cinder.volumes.detach(vol["id"])
    assert data["target_iqn"] not in targets(control), "the last detach removes the export"
    assert tgt_agent.get_volume(vol["id"])["status"] == "available"
    assert tgtadm(control, "--op", "show", "--mode", "account").stdout.splitlines()[1:] == []
    cinder.volumes.delete(vol["id"])
    tgt_agent.wait_volume(vol["id"], "deleted")


def test_a_types_front_end_qos_and_encryption_reach_the_hypervisor(tgt_agent, tgtd):
    cinder = make_cinder(tgt_agent)
    q = cinder.qos_specs.create(f"fe-{uuid.uuid4().hex[:8]}", {
        "consumer": "front-end", "total_iops_sec_per_gb": "100", "total_iops_sec_per_gb_min": "500",
        "read_bytes_sec": "1048576"})
    vtype = cinder.volume_types.create(f"qos-{uuid.uuid4().hex[:8]}")
    cinder.qos_specs.associate(q, vtype.id)
    cinder.volume_encryption_types.create(vtype, {"provider": "luks", "control_location": "front-end"})
    plain = tgt_agent.create_volume(1)
    vol = tgt_agent.request("POST", "/volumes", {"volume": {"size": 8, "volume_type": vtype.name}}).json()["volume"]
    tgt_agent.wait_volume(vol["id"], "available")
    try:
        data = cinder.volumes.initialize_connection(vol["id"], connector(HOST1))["data"]
        assert data["qos_specs"] == {"total_iops_sec": 800, "read_bytes_sec": "1048576"}, data["qos_specs"]
        assert data["encrypted"] is True
        plain_data = cinder.volumes.initialize_connection(plain["id"], connector(HOST1))["data"]
        assert plain_data["qos_specs"] is None and plain_data["encrypted"] is False
        # The attachment flow carries the same.
        att = tgt_agent.request("POST", "/attachments", {"attachment": {
            "volume_uuid": vol["id"], "instance_uuid": str(uuid.uuid4()), "connector": connector(HOST2)}},
            version="3.54").json()["attachment"]
        assert att["connection_info"]["qos_specs"]["total_iops_sec"] == 800
        tgt_agent.request("DELETE", f"/attachments/{att['id']}", version="3.54")
    finally:
        for v in (vol, plain):
            cinder.volumes.terminate_connection(v["id"], connector(HOST1))
            cinder.volumes.delete(v["id"])


def test_the_chap_secret_stays_out_of_logs_and_views(tgtd, tmp_path):
    control, port = tgtd
    # A debug log shows every request: the CHAP secret must still not appear in it.
    os.environ["EMBER_LOG"] = "debug"
    try:
        agent = start_agent(tgt_config(control, port))
    finally:
        del os.environ["EMBER_LOG"]
    try:
        vol = agent.create_volume(1)
        r = agent.action(vol["id"], {"os-initialize_connection": {"connector": connector(HOST1)}})
        assert r.status_code == 200, r.text
        data = r.json()["connection_info"]["data"]
        shown = cinder_cli_for(agent, tmp_path)("show", vol["id"]).stdout
        assert data["auth_username"] not in shown and data["auth_password"] not in shown, shown
        assert agent.action(vol["id"], {"os-terminate_connection": {"connector": connector(HOST1)}}).status_code == 202
        assert agent.action(vol["id"], {"os-detach": {}}).status_code == 202
        log = agent.log()
        assert "DEBUG" in log, "the agent did not log at debug level"
        assert data["auth_password"] not in log, "the CHAP secret is in the agent's log"
        assert data["target_iqn"] not in targets(control)
    finally:
        stop_agent(agent)


def test_online_extend_is_seen_under_continuous_reads(tgt_agent, tgtd):
    """tgtd learns a new size only by reopening its backing device, and it closes
    the old one without draining the commands its I/O threads are running: a read
    in that instant can fail (MEDIUM ERROR; about 1 resize in 8 under QD16 random
    reads here). So the reader ignores errors (-n) and the test bounds them: at
    most one queue's worth, the session survives, and reads go on at the new size.
    LIO and nvmet resize with no error at all (the VM tier checks that)."""
    vol = tgt_agent.create_volume(1)
    r = tgt_agent.action(vol["id"], {"os-initialize_connection": {"connector": connector(HOST1)}})
    data = r.json()["connection_info"]["data"]
    assert capacity(data, HOST1) == 1 << 30
    # The volume is in use by a hypervisor: attach bookkeeping, then a reader runs.
    r = tgt_agent.action(vol["id"], {"os-attach": {"instance_uuid": str(uuid.uuid4()), "mountpoint": "/dev/vdb"}})
    assert r.status_code == 202, r.text
    reader = subprocess.Popen(["iscsi-perf", "-n", "-i", HOST1, "-m", "4", "-b", "64", iscsi_url(data)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1)
        r = tgt_agent.action(vol["id"], {"os-extend": {"new_size": 2}})
        assert r.status_code == 400, "in-use extend needs 3.42"
        r = tgt_agent.action(vol["id"], {"os-extend": {"new_size": 2}}, version="3.42")
        assert r.status_code == 202, r.text
        done = tgt_agent.wait_volume(vol["id"], "in-use")
        assert done["size"] == 2
        wait_for(lambda: capacity(data, HOST1) == 2 << 30, timeout=10, what="the new size through the export")
        time.sleep(2)
    finally:
        reader.send_signal(signal.SIGINT)
        out = reader.communicate(timeout=30)[0]
    assert "connected to" in out and "finished" in out, out
    failed = len(re.findall(r"failed", out))
    assert failed <= 4, f"{failed} failed reads:\n{out}"
    assert not re.search(r"reconnect|ABORTED", out), out
    last = re.findall(r"iops current (\d+)", out)
    assert last and int(last[-1]) > 0, f"reads stopped after the resize:\n{out}"
    r = tgt_agent.action(vol["id"], {"os-force_detach": {"connector": None}})
    assert r.status_code == 202, r.text


def test_kill_9_during_reads_and_reconcile_after_tgtd_lost_everything(tgtd):
    control, port = tgtd
    cfg = tgt_config(control, port)
    agent = start_agent(cfg)
    again = None
    try:
        vol = agent.create_volume(1)
        r = agent.action(vol["id"], {"os-initialize_connection": {"connector": connector(HOST1)}})
        data = r.json()["connection_info"]["data"]
        before = targets(control)[data["target_iqn"]]
        reader = subprocess.Popen(["iscsi-perf", "-i", HOST1, "-m", "4", "-b", "64", iscsi_url(data)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(1)
            agent.proc.kill()  # kill -9: tgtd serves on
            agent.proc.wait()
            time.sleep(1)
            again = start_agent(cfg, data_dir=str(agent.data_dir))
            time.sleep(1)
        finally:
            reader.send_signal(signal.SIGINT)
            out = reader.communicate(timeout=30)[0]
        assert "finished" in out and not re.search(r"fail|error|reconnect", out, re.I), out
        assert targets(control)[data["target_iqn"]] == before, "a restart leaves a good export alone"
        # The restarted agent's first reconciliation pass finds nothing to repair.
        metric = lambda name: next((float(line.split()[-1]) for line in
                                    requests.get(f"{again.root}/metrics", timeout=10).text.splitlines()
                                    if line.startswith(name + " ")), 0.0)
        wait_for(lambda: metric("ember_reconcile_runs_total") >= 1, timeout=20, what="the first reconciliation")
        time.sleep(0.5)
        assert metric("ember_reconcile_drift_total") == 0 and "export reconciled" not in again.log(), again.log()

        # tgtd lost everything (restarted, or cleared by hand): the agent builds the
        # export again at its next start, same name and credentials, with its initiator.
        tgtadm(control, "--op", "delete", "--mode", "target", "--tid", before["tid"], "--force")
        tgtadm(control, "--op", "delete", "--mode", "account", "--user", data["auth_username"])
        again.proc.kill()
        again.proc.wait()
        again = start_agent(cfg, data_dir=str(agent.data_dir))
        wait_for(lambda: targets(control).get(data["target_iqn"], {}).get("acls") == [HOST1], timeout=20,
                 what="the export rebuilt with its initiator")
        rebuilt = targets(control)[data["target_iqn"]]
        assert rebuilt["acls"] == [HOST1] and rebuilt["accounts"] == [data["auth_username"]], rebuilt
        rc, out = qemu_io(data, HOST1, "write -P 0x11 0 64k", "read -P 0x11 0 64k")
        assert rc == 0, out
        r = again.action(vol["id"], {"os-force_detach": {}})
        assert r.status_code == 202, r.text
        assert data["target_iqn"] not in targets(control)
    finally:
        stop_agent(again or agent)


def test_bad_connectors_and_states_leave_the_target_as_it_was(tgt_agent, tgtd):
    control, _ = tgtd
    vol = tgt_agent.create_volume(1)
    before = targets(control)
    bad = [
        ({"os-initialize_connection": {"connector": {"host": "h"}}}, 400),
        ({"os-initialize_connection": {"connector": {"initiator": ""}}}, 400),
        ({"os-initialize_connection": {"connector": {"initiator": 7}}}, 400),
        ({"os-initialize_connection": {"connector": {"nqn": "nqn.2014-08.org.x:h"}}}, 400),
        ({"os-initialize_connection": {"connector": "iqn.x"}}, 400),
        ({"os-initialize_connection": {"connector": None}}, 400),
        ({"os-initialize_connection": {}}, 400),
        ({"os-initialize_connection": {"connector": {"initiator": HOST1}, "x": 1}}, 400),
        ({"os-terminate_connection": {}}, 400),
        ({"os-terminate_connection": {"connector": 5}}, 400),
        ({"os-force_detach": {"connector": 5}}, 400),
    ]
    for body, code in bad:
        r = tgt_agent.action(vol["id"], body)
        assert r.status_code == code, (body, r.text)
    r = tgt_agent.action(str(uuid.uuid4()), {"os-initialize_connection": {"connector": connector(HOST1)}})
    assert r.status_code == 404
    r = tgt_agent.action(vol["id"], {"os-reset_status": {"status": "maintenance"}})
    assert r.status_code == 202
    r = tgt_agent.action(vol["id"], {"os-initialize_connection": {"connector": connector(HOST1)}})
    assert r.status_code == 400 and "maintenance" in r.text, r.text
    assert targets(control) == before
    r = tgt_agent.action(vol["id"], {"os-reset_status": {"status": "available"}})
    assert r.status_code == 202


def test_ember_starts_tgtd_when_none_runs(tmp_path):
    """The embedded default on a host without systemd: ember starts tgtd (in its
    own process group, so it outlives ember) and never stops it."""
    if os.geteuid() != 0:
        pytest.fail("tgtd needs root")
    control, port = 90 + os.getpid() % 9, free_port()
    stop_tgtd(control)
    agent_config = tgt_config(control, port, start_tgtd=True)
    agent = start_agent(agent_config)
    data_dir = str(agent.data_dir)
    try:
        assert "starting tgtd" in agent.log()
        vol = agent.create_volume(1)
        r = agent.action(vol["id"], {"os-initialize_connection": {"connector": connector(HOST1)}})
        assert r.status_code == 200, r.text
        data = r.json()["connection_info"]["data"]
        assert capacity(data, HOST1) == 1 << 30
        agent.proc.terminate()
        agent.proc.wait(timeout=20)
        alive = subprocess.run(["tgtadm", "-C", str(control), "--op", "show", "--mode", "system"],
                               capture_output=True)
        assert alive.returncode == 0, "tgtd stopped with ember"
        assert capacity(data, HOST1) == 1 << 30, "the export serves on without ember"
        # Back again: the export is the agent's to take down.
        agent = start_agent(agent_config, data_dir=data_dir)
        r = agent.action(vol["id"], {"os-force_detach": {}})
        assert r.status_code == 202, r.text
        assert data["target_iqn"] not in targets(control)
    finally:
        stop_agent(agent)
        stop_tgtd(control)


# -- the attachments API (3.27+): how Nova attaches ----------------------------------

def cli_table(out):
    """| key | value | rows of a cinder CLI table as a dict."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] not in ("Property", ""):
            rows[cells[0]] = cells[1]
    return rows


def test_attachment_commands_of_the_cinder_cli(tgt_agent, tgtd, tmp_path):
    control, _ = tgtd
    cli = cinder_cli_for(tgt_agent, tmp_path)
    vol = tgt_agent.create_volume(1)
    server = str(uuid.uuid4())
    # Reserve first (Nova's boot from volume), connect later.
    reserved = cli_table(cli("attachment-create", vol["id"], server).stdout)
    att = reserved["id"]
    assert reserved["status"] == "reserved", reserved
    assert tgt_agent.get_volume(vol["id"])["status"] == "reserved"
    out = cli("attachment-update", att, "--initiator", HOST1, "--host", "hv1", "--ip", "127.0.0.1",
              "--mountpoint", "/dev/vdb").stdout
    assert "target_iqn" in out and "attaching" in out, out
    iqn = f"volume-{vol['id']}"
    [name] = [n for n in targets(control) if n.endswith(iqn)]
    assert targets(control)[name]["acls"] == [HOST1]
    assert tgt_agent.get_volume(vol["id"])["status"] == "attaching"
    cli("attachment-complete", att)
    shown = cli_table(cli("attachment-show", att).stdout)
    assert shown["status"] == "attached" and shown["volume_id"] == vol["id"], shown
    v = tgt_agent.get_volume(vol["id"])
    assert (v["status"], v["attachments"][0]["attachment_id"]) == ("in-use", att)
    listed = cli("attachment-list").stdout
    assert att in listed and server in listed, listed
    # The export serves the attachment's host.
    r = tgt_agent.request("GET", f"/attachments/{att}", version="3.27")
    info = r.json()["attachment"]["connection_info"]
    assert info["driver_volume_type"] == "iscsi" and info["attachment_id"] == att, info
    assert capacity(info, HOST1) == 1 << 30
    cli("attachment-delete", att)
    assert name not in targets(control), "the last attachment takes the export with it"
    assert tgt_agent.get_volume(vol["id"])["status"] == "available"
    assert tgt_agent.request("GET", f"/attachments/{att}", version="3.27").status_code == 404


def test_openstacksdk_attachment_calls_and_two_hosts(tgt_agent, tgtd, sdk_for_tgt):
    control, _ = tgtd
    bs = sdk_for_tgt.block_storage
    vol = tgt_agent.create_volume(1)
    # Two attachments of one volume from one host (a live migration's shape).
    a1 = bs.create_attachment(vol["id"], connector=connector(HOST1), instance=str(uuid.uuid4()))
    assert a1.status == "attaching" and a1.connection_info["target_lun"] == 1
    bs.complete_attachment(a1.id)
    got = bs.get_attachment(a1.id)
    assert got.status == "attached"
    # The sdk's noauth token names no project: an admin lists every project's.
    ids = [a.id for a in bs.attachments(all_tenants=True)]
    assert a1.id in ids, ids
    # A second host on a volume that is not multiattach is refused (409), and the
    # attachment that failed says so.
    a2 = bs.create_attachment(vol["id"], instance=a1.instance)
    assert a2.status == "reserved"
    r = tgt_agent.request("PUT", f"/attachments/{a2.id}",
                          {"attachment": {"connector": connector(HOST2, host="hv2")}}, version="3.27")
    assert r.status_code == 409, r.text
    assert targets(control)[a1.connection_info["target_iqn"]]["acls"] == [HOST1]
    bs.delete_attachment(a2.id)
    bs.delete_attachment(a1.id)
    assert not any(n.endswith(f"volume-{vol['id']}") for n in targets(control))
    assert tgt_agent.get_volume(vol["id"])["status"] == "available"


def test_attachments_bad_input(tgt_agent, tgtd):
    control, _ = tgtd
    vol = tgt_agent.create_volume(1)
    before = targets(control)
    assert tgt_agent.request("GET", "/attachments", version="3.26").status_code == 404
    assert tgt_agent.request("POST", "/attachments", {"attachment": {"volume_uuid": vol["id"]}},
                             version="3.26").status_code == 404
    bad_bodies = [
        {},
        {"attachment": {}},
        {"attachment": {"volume_uuid": "nope"}},
        {"attachment": {"volume_uuid": vol["id"], "bogus": 1}},
        {"attachment": {"volume_uuid": vol["id"], "connector": "iqn.x"}},
        {"attachment": {"volume_uuid": vol["id"], "connector": {"host": "h"}}},
        {"attachment": {"volume_uuid": vol["id"], "instance_uuid": "not-a-uuid"}},
        {"attachment": {"volume_uuid": vol["id"], "mode": "rw"}},  # mode only from 3.54
        {"attachment": {"volume_uuid": vol["id"]}, "extra": 1},
    ]
    for body in bad_bodies:
        r = tgt_agent.request("POST", "/attachments", body, version="3.53")
        assert r.status_code == 400, (body, r.text)
    r = tgt_agent.request("POST", "/attachments", {"attachment": {"volume_uuid": vol["id"], "mode": "wo"}},
                          version="3.54")
    assert r.status_code == 400, r.text
    r = tgt_agent.request("POST", "/attachments", {"attachment": {"volume_uuid": str(uuid.uuid4())}},
                          version="3.27")
    assert r.status_code == 404, r.text
    r = tgt_agent.request("POST", "/attachments", raw=b"{not json", version="3.27")
    assert r.status_code == 400, r.text
    missing = str(uuid.uuid4())
    for method, path, body in [("GET", f"/attachments/{missing}", None),
                               ("PUT", f"/attachments/{missing}", {"attachment": {"connector": connector(HOST1)}}),
                               ("DELETE", f"/attachments/{missing}", None),
                               ("POST", f"/attachments/{missing}/action", {"os-complete": {}})]:
        r = tgt_agent.request(method, path, body, version="3.44")
        assert r.status_code == 404, (method, path, r.text)
    assert tgt_agent.request("PATCH", "/attachments", {"x": 1}, version="3.27").status_code == 405
    assert tgt_agent.request("GET", "/attachments?bogus=1", version="3.27").status_code == 400
    # A reserved attachment: bad updates and a complete below 3.44.
    r = tgt_agent.request("POST", "/attachments", {"attachment": {"volume_uuid": vol["id"]}}, version="3.27")
    assert r.status_code == 200, r.text
    att = r.json()["attachment"]["id"]
    for body in [{"attachment": {}}, {"attachment": {"connector": {}}}, {"attachment": {"connector": 5}},
                 {"attachment": {"connector": {"host": "h"}}}, {"attachment": {"connector": connector(HOST1)}, "x": 1}]:
        r = tgt_agent.request("PUT", f"/attachments/{att}", body, version="3.27")
        assert r.status_code == 400, (body, r.text)
    assert tgt_agent.request("POST", f"/attachments/{att}/action", {"os-complete": {}}, version="3.43").status_code == 404
    assert tgt_agent.request("POST", f"/attachments/{att}/action", {"bogus": {}}, version="3.44").status_code == 400
    # A second reservation of a reserved, non-multiattach volume is refused.
    r = tgt_agent.request("POST", "/attachments", {"attachment": {"volume_uuid": vol["id"]}}, version="3.27")
    assert r.status_code == 400, r.text
    assert targets(control) == before, "nothing was built by refused requests"
    assert tgt_agent.request("DELETE", f"/attachments/{att}", version="3.27").status_code == 200
    assert tgt_agent.get_volume(vol["id"])["status"] == "available"
