"""A real Glance image service (glance 33.0.0 from PyPI) on loopback, for tests.

Plain functions, no pytest fixtures:

    g = start_glance(tmp_path / "glance")
    ... requests against g.url + "/v2/images" ...
    stop_glance(g)

Glance runs unauthenticated (paste flavor "" = the unauthenticated-context
pipeline) with the legacy policy defaults, a sqlite database and the file
store, under uwsgi (glance-api refuses to run standalone). The venv is
ROOT/.venv-glance, built by scripts/install-deps from tests/glance-requirements.txt.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-glance"

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


@dataclass
class Glance:
    url: str  # "http://127.0.0.1:PORT"
    proc: subprocess.Popen  # the uwsgi master
    state: Path  # the state directory given to start_glance
    images_dir: Path  # where the file store keeps image data (one file per image id)
    log_paths: tuple  # uwsgi's output, glance's log file

    def log(self) -> str:
        """The text of the uwsgi and glance logs (missing files are skipped)."""
        parts = []
        for p in self.log_paths:
            try:
                text = Path(p).read_text(errors="replace")
            except FileNotFoundError:
                continue
            parts.append(f"==> {p} <==\n{text}")
        return "\n".join(parts)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_config(state: Path) -> Path:
    etc = state / "glance" / "etc"
    logdir = state / "glance" / "log"
    images = state / "images"
    for d in (etc, logdir, images):
        d.mkdir(parents=True, exist_ok=True)
    paste = etc / "glance-api-paste.ini"
    shutil.copyfile(VENV / "etc" / "glance" / "glance-api-paste.ini", paste)
    conf = etc / "glance-api.conf"
    conf.write_text(
        f"""[DEFAULT]
workers = 1
log_file = {logdir / "api.log"}

[database]
connection = sqlite:///{state / "glance.db"}

[glance_store]
stores = file
default_store = file
filesystem_store_datadir = {images}

[paste_deploy]
flavor =
config_file = {paste}

[oslo_policy]
enforce_new_defaults = false
enforce_scope = false
"""
    )
    return conf


def _env() -> dict:
    env = dict(os.environ)
    # Do not let the test venv leak into Glance's venv.
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def start_glance(state_dir) -> Glance:
    """Configure, db_sync and start Glance under uwsgi; return once GET /v2/images is 200."""
    if not (VENV / "bin" / "uwsgi").exists():
        raise RuntimeError(f"{VENV} has no uwsgi: run scripts/install-deps")
    state = Path(state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    conf = _write_config(state)
    env = _env()
    uwsgi_log = state / "glance" / "log" / "uwsgi.log"
    api_log = state / "glance" / "log" / "api.log"

    t0 = time.monotonic()
    sync = subprocess.run(
        [str(VENV / "bin" / "glance-manage"), "--config-file", str(conf), "db_sync"],
        env=env,
        cwd=state,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    db_sync_seconds = time.monotonic() - t0
    (state / "glance" / "log" / "db_sync.log").write_text(sync.stdout)
    if sync.returncode != 0:
        raise RuntimeError(f"glance-manage db_sync failed ({sync.returncode}):\n{sync.stdout}")

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env["OS_GLANCE_CONFIG_DIR"] = str(conf.parent)
    out = open(uwsgi_log, "ab")
    try:
        proc = subprocess.Popen(
            [
                str(VENV / "bin" / "uwsgi"),
                "--http-socket", f"127.0.0.1:{port}",
                "--module", "glance.wsgi.api:application",
                "--master", "--processes", "1", "--threads", "4",
                "--die-on-term",
                "--http-chunked-input", "--http-auto-chunked",
                "--enable-threads",
            ],
            env=env,
            cwd=state,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        out.close()
    g = Glance(url=url, proc=proc, state=state, images_dir=state / "images",
               log_paths=(uwsgi_log, api_log))
    g.db_sync_seconds = db_sync_seconds

    t1 = time.monotonic()
    deadline = t1 + READY_TIMEOUT
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"uwsgi exited with {proc.returncode} before Glance was ready:\n{g.log()}")
        try:
            r = requests.get(f"{url}/v2/images", timeout=5)
            if r.status_code == 200:
                g.ready_seconds = time.monotonic() - t1
                return g
            last = f"HTTP {r.status_code}: {r.text[:500]}"
        except requests.RequestException as e:
            last = repr(e)
        time.sleep(0.2)
    stop_glance(g)
    raise RuntimeError(f"Glance at {url} not ready after {READY_TIMEOUT:.0f} s (last: {last}):\n{g.log()}")


def stop_glance(g: Glance) -> None:
    """SIGTERM the uwsgi master (which stops its worker), SIGKILL the group after 15 s; wait."""
    proc = g.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    # A worker left behind by a master that died first: its session is the master's pid.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
