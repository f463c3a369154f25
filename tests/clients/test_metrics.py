"""Observability of a running agent: /healthz and /readyz, /metrics parsed by
prometheus_client's OpenMetrics parser with counters that move as requests and
jobs happen, /metrics closed to all but admins where configured, and JSON log
lines that name the request, the job and the volume, and never a secret."""

import json
import uuid

import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import start_agent, stop_agent, wait_for

PROJECT = "cccccccccccccccccccccccccccccc01"


def scrape(agent, headers=None):
    r = requests.get(f"{agent.root}/metrics", headers=headers or {}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/openmetrics-text")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


def test_health_readiness_and_wrong_methods(agent):
    assert requests.get(f"{agent.root}/healthz", timeout=10).json() == {"status": "ok"}
    ready = requests.get(f"{agent.root}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["ready"] is True, ready.text
    assert ready.json()["checks"] == {"store": "ok", "pool": "ok"}, "no target backend configured here"
    for path in ("healthz", "readyz", "metrics"):
        assert requests.post(f"{agent.root}/{path}", timeout=10).status_code == 405
    assert requests.get(f"{agent.root}/metricsx", timeout=10).status_code == 404


def test_counters_move_with_requests_and_jobs(agent):
    before = scrape(agent)
    vid = agent.create_volume(1)["id"]
    agent.request("GET", f"/volumes/{vid}")
    agent.request("GET", f"/volumes/{uuid.uuid4()}")
    after = scrape(agent)

    def grew(name, by=1, **labels):
        return value(after, name, **labels) - value(before, name, **labels) >= by

    assert grew("ember_http_requests_total", method="POST", route="volumes", status="202")
    assert grew("ember_http_requests_total", method="GET", route="volumes/*", status="200")
    assert grew("ember_http_requests_total", method="GET", route="volumes/*", status="404")
    assert not any(vid in str(labels) for _, labels in after), "ids never become label values"
    assert grew("ember_http_request_duration_seconds_count", method="POST", route="volumes")
    assert grew("ember_jobs_finished_total", kind="create_volume", outcome="done")
    assert value(after, "ember_jobs_running", kind="create_volume") == 0
    assert grew("ember_job_duration_seconds_count", kind="create_volume")
    assert grew("ember_store_commit_seconds_count")
    assert value(after, "ember_volumes", status="available") >= 1
    assert value(after, "ember_volumes", status="error_restoring") == 0, "every status is there"
    assert value(after, "ember_pool_bytes", which="total") > 0
    assert value(after, "ember_pool_bytes", which="provisioned") >= 1 << 30
    # A clone copies bytes.
    agent.request("PUT", f"/volumes/{vid}", {"volume": {"name": "src"}})
    with open(agent.volume_file(vid), "r+b") as f:
        f.write(b"\x5a" * (1 << 20))
    clone = agent.request("POST", "/volumes", {"volume": {"size": 1, "source_volid": vid}}).json()["volume"]["id"]
    agent.wait_volume(clone, "available")
    assert value(scrape(agent), "ember_copied_bytes_total") - value(after, "ember_copied_bytes_total") >= 1 << 20


def test_metrics_need_an_admin_where_configured_and_logs_are_json(tmp_path):
    admin, member = "metrics-admin-token-01", "metrics-member-token-1"
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[[tokens]]\ntoken = "{admin}"\nuser_id = "root"\nproject_id = "{PROJECT}"\nroles = ["admin"]\n\n'
                      f'[[tokens]]\ntoken = "{member}"\nuser_id = "mia"\nproject_id = "{PROJECT}"\nroles = ["member"]\n')
    tokens.chmod(0o600)
    agent = start_agent(f'[auth]\nstrategy = "token"\ntokens_file = "{tokens}"\n[http]\nmetrics_public = false\n',
                        env={"EMBER_LOG_FORMAT": "json", "EMBER_LOG": "debug"})
    try:
        assert requests.get(f"{agent.root}/metrics", timeout=10).status_code == 401
        assert requests.get(f"{agent.root}/metrics", headers={"X-Auth-Token": member}, timeout=10).status_code == 403
        assert scrape(agent, {"X-Auth-Token": admin})
        assert requests.get(f"{agent.root}/healthz", timeout=10).status_code == 200, "health needs no token"
        s = requests.Session()
        s.headers.update({"X-Auth-Token": admin})
        vid = s.post(f"{agent.endpoint}/{PROJECT}/volumes", json={"volume": {"size": 1}}, timeout=30).json()["volume"]["id"]
        wait_for(lambda: s.get(f"{agent.endpoint}/{PROJECT}/volumes/{vid}", timeout=30).json()["volume"]["status"]
                 == "available", what="available")
        lines = [json.loads(line) for line in agent.log().splitlines() if line.strip()]
        assert all({"timestamp", "level", "target"} <= set(line) for line in lines)
        answered = [line for line in lines if line["fields"].get("message") == "answered"]
        assert answered and all(line["span"]["name"] == "request" and line["span"]["request_id"].startswith("req-")
                                and line["span"]["path"].startswith("/") for line in answered), answered[:3]
        done = [line for line in lines if line.get("fields", {}).get("message") == "job done"]
        assert done and done[0]["span"]["volume"] == vid and done[0]["span"]["action"] == "create_volume", done
        assert "job" in done[0]["span"] and done[0]["span"]["request_id"].startswith("req-")
        text = agent.log()
        assert admin not in text and member not in text, "tokens are never logged"
    finally:
        stop_agent(agent)
