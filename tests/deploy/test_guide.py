"""docs/deploy.md followed step by step, with the devportal as the portal: make the secret key
the guide's way, run the Procfile's release, web (real gunicorn, serving HTTPS itself in place
of the proxy) and worker (the real `nezabyt worker`), register and install the app with the
guide's addresses and scopes, let an event arrive, and `nezabyt doctor` passes every check."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from addon.doctor.probe import SCOPES
from addon.heartbeat import last_beat
from addon.models import StoredEvent

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "docs" / "deploy.md").read_text()
BIN = Path(sys.executable).parent
EXAMPLE_HOST = "https://nezabyt.example.com"


def guide_scopes() -> list[str]:
    section = GUIDE.split("### Scopes", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"^\| `([a-z_]+)` \|", section, re.M)


def guide_path(field: str) -> str:
    found = re.search(rf"^\| {field} \| `{re.escape(EXAMPLE_HOST)}(/\S*)` \|", GUIDE, re.M)
    assert found, f"the guide has no {field!r} row"
    return found.group(1)


def guide_processes() -> dict[str, str]:
    section = GUIDE.split("## Processes", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| (release|web|worker) \| `([^`]+)` \|", section, re.M))


def guide_key_command() -> list[str]:
    command = re.search(r"`(python -c '[^`]*secrets[^`]*')`", GUIDE).group(1)
    return [sys.executable] + shlex.split(command)[1:]


def test_the_guide_names_the_scopes_doctor_checks_and_the_procfiles_commands():
    assert guide_scopes() == list(SCOPES)
    procfile = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())
    assert guide_processes() == procfile
    assert (guide_path("Handler path"), guide_path("Initial installation path")) == ("/app", "/install")
    readme = (ROOT / "README.md").read_text()
    assert "docs/deploy.md" in readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _healthz(url: str, cert: Path) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=2, verify=str(cert)).status_code == 200
    except requests.RequestException:
        return False


def test_following_the_guide_ends_with_doctor_all_green(services, devportal, tls, tmp_path, monkeypatch):
    cert, key = tls
    port = _free_port()
    public_url = f"https://127.0.0.1:{port}"
    secret = subprocess.run(guide_key_command(), capture_output=True, text=True, check=True).stdout.strip()
    assert len(secret) >= 32
    env = {**os.environ,
           "DATABASE_URL": services.settings.database_url, "NEZABYT_ENV": "production",
           "NEZABYT_SECRET_KEY": secret, "NEZABYT_PUBLIC_URL": public_url,
           "NEZABYT_CLIENT_ID": "local.6a1b2c3d4e5f.12345678", "NEZABYT_CLIENT_SECRET": "guide-client-secret",
           "LOG_FORMAT": "json", "WEB_CONCURRENCY": "1",
           # the devportal stands on 127.0.0.1 and is its own OAuth server
           "NEZABYT_ALLOW_PRIVATE_PORTALS": "1", "NEZABYT_OAUTH_URL": devportal.oauth_url,
           "REQUESTS_CA_BUNDLE": str(cert)}
    processes = guide_processes()

    def command(name: str) -> list[str]:
        argv = shlex.split(processes[name])
        return [str(BIN / argv[0])] + argv[1:]

    release = subprocess.run(command("release"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert release.returncode == 0, release.stderr

    web_log, worker_log = tmp_path / "web.log", tmp_path / "worker.log"
    started: list[subprocess.Popen] = []
    try:
        with web_log.open("w") as out:
            started.append(subprocess.Popen(
                command("web") + ["--bind", f"127.0.0.1:{port}", "--certfile", str(cert), "--keyfile", str(key)],
                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT))
        _wait(lambda: _healthz(public_url, cert) or started[0].poll() is not None, 60, "gunicorn")
        assert started[0].poll() is None, web_log.read_text()
        with worker_log.open("w") as out:
            started.append(subprocess.Popen(command("worker"), env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT))

        # Register and install, as the guide says: its two addresses, its scopes.
        answer = devportal.portal.install_app(public_url, env["NEZABYT_CLIENT_ID"], env["NEZABYT_CLIENT_SECRET"],
                                              scope=",".join(guide_scopes()),
                                              install_path=guide_path("Initial installation path"),
                                              page_path=guide_path("Handler path"))
        assert answer["status_code"] == 200 and "BX24.installFinish()" in answer["answer"], answer["answer"]
        # "create or edit a contact in the portal": an event arrives and the worker processes it
        devportal.portal.act_add("contact", {"NAME": "Клиент из руководства"})
        assert devportal.portal.wait_for_deliveries(timeout=30)

        def processed() -> bool:
            with services.sessions() as s:
                done = s.scalar(select(func.count()).select_from(StoredEvent).where(StoredEvent.processed_at.is_not(None)))
            return bool(done) and last_beat(services) is not None

        _wait(processed, 90, "the worker to process the event")
        doctor = subprocess.run([str(BIN / "nezabyt"), "doctor"], env=env, cwd=ROOT, capture_output=True, text=True,
                                timeout=120)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert doctor.stdout.rstrip().endswith("all checks passed")
        assert "✗" not in doctor.stdout and doctor.stdout.count("✓") == 14
    finally:
        for process in reversed(started):
            _stop(process)

    # The worker logged its event batch as one JSON line.
    lines = [json.loads(line) for line in worker_log.read_text().splitlines() if line.startswith("{")]
    batches = [line for line in lines if line.get("job") == "events"]
    assert batches and batches[0]["processed"] >= 1 and batches[0]["logger"] == "worker.events"
    assert all(line.startswith("{") for line in worker_log.read_text().splitlines() if line.strip())
