"""The demo's web app in a child process of its own (werkzeug on 127.0.0.1), ended with the demo."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import click
from werkzeug.serving import WSGIRequestHandler, make_server

from addon.config import Settings
from addon.services import build_services
from addon.web import create_app


class DemoApp:
    """The web app (`addon.web.create_app`) served by werkzeug on 127.0.0.1 in a child process, so
    storing the portal's events does not compete with the worker and the devportal for one
    interpreter lock (a production deployment runs it under gunicorn)."""

    def __init__(self, settings):
        self.settings = settings
        self.url = ""
        self._proc = None

    def start(self) -> "DemoApp":
        env = dict(os.environ, DATABASE_URL=self.settings.database_url,
                   NEZABYT_SECRET_KEY=self.settings.secret_key, NEZABYT_CLIENT_ID=self.settings.client_id,
                   NEZABYT_CLIENT_SECRET=self.settings.client_secret, **self.settings.security_environment())
        self._proc = subprocess.Popen([sys.executable, "-c", "from demo.app import serve_app; serve_app()"],
                                      env=env, stdout=subprocess.PIPE, text=True)
        line = self._proc.stdout.readline()
        if not line:
            raise click.ClickException("the web app did not start")
        self.url = json.loads(line)["url"]
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except Exception:  # noqa: BLE001 — a stuck child is killed
                self._proc.kill()
                self._proc.wait(timeout=5)
            self._proc.stdout.close()
            self._proc = None


def serve_app(host: str = "127.0.0.1") -> None:
    """The child process of DemoApp: bind a free port, tell the parent the URL, serve until ended."""

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args, **kwargs):
            pass

    holder = {}
    server = make_server(host, 0, lambda env, sr: holder["app"](env, sr), threaded=True, request_handler=Quiet)
    url = f"http://{host}:{server.server_port}"
    # The app's public URL (where the portal sends events) is this server's URL.
    services = build_services(Settings.from_env(public_url=url))
    holder["app"] = create_app(services)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="demo-app-watch", daemon=True).start()
    print(json.dumps({"url": url}), flush=True)
    try:
        server.serve_forever()
    finally:
        services.dispose()


def _exit_with_parent(parent: int) -> None:
    """The demo's web app must not outlive the demo, however the demo ended (even SIGKILL)."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)
