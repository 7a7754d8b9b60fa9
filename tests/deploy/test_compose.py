"""compose.yaml and the Dockerfile stay in step with the Procfile and the package: the compose
file is parsed and checked here always, and `docker compose config` validates it where docker
and its compose plugin are installed."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("release", "web", "worker")
COMPOSE_ENV = {"POSTGRES_PASSWORD": "0123456789abcdef", "NEZABYT_SECRET_KEY": "k" * 48,
               "NEZABYT_CLIENT_ID": "local.0123456789.00000000", "NEZABYT_CLIENT_SECRET": "secret",
               "NEZABYT_DOMAIN": "nezabyt.example.com"}


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name.strip(): command.strip() for name, command in (line.split(":", 1) for line in lines if line.strip())}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_the_app_services_run_the_procfiles_commands(compose):
    services = compose["services"]
    assert set(procfile()) == set(APP_SERVICES)
    for name, command in procfile().items():
        ours = services[name]["command"]
        assert (shlex.split(ours) if isinstance(ours, str) else ours) == shlex.split(command), name


def test_the_stack_is_postgresql_release_web_worker_and_a_tls_proxy(compose):
    services = compose["services"]
    assert set(services) == {"db", "release", "web", "worker", "proxy"}
    assert services["db"]["image"].startswith("postgres:")
    assert services["proxy"]["image"].startswith("caddy:")
    # Only the proxy is reachable from outside; it passes requests to web.
    published = {name for name, s in services.items() if s.get("ports")}
    assert published == {"proxy"}
    assert "--to web:8000" in services["proxy"]["command"]
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql+psycopg://") and "@db:5432/" in env["DATABASE_URL"]
        assert env["NEZABYT_PUBLIC_URL"].startswith("https://")
        assert env["NEZABYT_ENV"] == "production"
        assert ":?" in env["NEZABYT_SECRET_KEY"]  # no start without a key
    for name in ("web", "worker"):  # migrations first, once
        assert services[name]["depends_on"]["release"]["condition"] == "service_completed_successfully"
    assert services["release"]["restart"] == "no"


def test_the_dockerfile_builds_on_python_slim_and_copies_every_package():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\s*$", text, re.M)
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = set(re.findall(r"^COPY (\S+) \./", text, re.M))
    assert {p.rstrip("*") for p in packages} <= copied
    assert "gunicorn.conf.py" in text and re.search(r"^USER (?!root)\w+", text, re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def _compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _compose_plugin(), reason="docker's compose plugin is not installed here")
def test_docker_compose_config_accepts_the_file():
    import os

    result = subprocess.run(["docker", "compose", "-f", str(ROOT / "compose.yaml"), "config", "--quiet"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env={**os.environ, **COMPOSE_ENV})
    assert result.returncode == 0, result.stderr
    missing = subprocess.run(["docker", "compose", "-f", str(ROOT / "compose.yaml"), "config", "--quiet"],
                             capture_output=True, text=True, timeout=60, cwd=ROOT,
                             env={k: v for k, v in os.environ.items() if k not in COMPOSE_ENV})
    assert missing.returncode != 0
    assert "POSTGRES_PASSWORD" in missing.stderr or "NEZABYT_" in missing.stderr
