"""Connections an attacker or a careless client holds: an idle flood past the
connection cap, slowloris headers, a stalled body. Each must end by itself, the
excess must be refused (503) rather than ignored, and a legitimate client keeps
getting answers meanwhile. Small limits keep every case to a few seconds."""

import socket
import time

import requests

from conftest import PROJECT, USER, start_agent, stop_agent

LIMITS = "[http]\nmax_connections = 40\nheader_timeout = 2\nidle_timeout = 3\nbody_timeout = 2\n"


def legit(agent, timeout=5):
    t0 = time.monotonic()
    r = requests.get(f"{agent.base}/volumes", headers={"X-Auth-Token": f"{USER}:{PROJECT}"}, timeout=timeout)
    return r.status_code, time.monotonic() - t0


def connect(agent):
    s = socket.create_connection(("127.0.0.1", agent.port), timeout=10)
    return s


def closed_within(sock, seconds):
    """True if the peer closes (or answers and closes) within `seconds`."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


def test_an_idle_flood_is_capped_and_drained():
    agent = start_agent(LIMITS)
    flood = []
    try:
        flood = [connect(agent) for _ in range(60)]
        time.sleep(0.3)
        # Over the cap: refused at once with a 503 fault, not left hanging.
        extra = connect(agent)
        extra.settimeout(3)
        reply = extra.recv(4096).decode()
        assert reply.startswith("HTTP/1.1 503") and "serviceUnavailable" in reply, reply
        extra.close()
        # The idle ones are closed after idle_timeout; then a real client is served.
        deadline = time.monotonic() + 8
        while True:
            try:
                code, took = legit(agent, timeout=2)
                if code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "a legitimate client was never served"
            time.sleep(0.2)
        assert sum(closed_within(s, 0.5) for s in flood) >= 40, "idle connections were not closed"
        assert "connection cap reached" in agent.log()
    finally:
        for s in flood:
            s.close()
        stop_agent(agent)


def test_slowloris_headers_are_cut_off():
    agent = start_agent(LIMITS)
    try:
        slow = []
        for _ in range(20):
            s = connect(agent)
            s.sendall(b"GET /v3/volumes HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        t0 = time.monotonic()
        for _ in range(4):  # a header line every second: never a complete request
            for s in slow:
                try:
                    s.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    pass
            code, took = legit(agent)
            assert code == 200 and took < 1, (code, took)
            time.sleep(1)
        assert all(closed_within(s, 2) for s in slow), "slowloris connections still open"
        assert time.monotonic() - t0 < 8
    finally:
        stop_agent(agent)


def test_a_stalled_body_gets_408():
    agent = start_agent(LIMITS)
    try:
        s = connect(agent)
        s.sendall((f"POST /v3/{PROJECT}/volumes HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {USER}:{PROJECT}\r\n"
                   "Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n").encode())
        s.settimeout(6)
        t0 = time.monotonic()
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
        took = time.monotonic() - t0
        assert reply.startswith(b"HTTP/1.1 408") or reply.startswith(b"HTTP/1.1 413"), reply
        assert took < 4, took
        code, _ = legit(agent)
        assert code == 200
        # A body that trickles but never completes is cut off too.
        s = connect(agent)
        s.sendall((f"POST /v3/{PROJECT}/volumes HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {USER}:{PROJECT}\r\n"
                   "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{").encode())
        t0 = time.monotonic()
        s.settimeout(6)
        reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408"), reply
        assert time.monotonic() - t0 < 4
        assert agent.request("GET", "/volumes").json()["volumes"] == [], "nothing was created"
    finally:
        stop_agent(agent)
