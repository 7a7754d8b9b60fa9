"""Fixtures for the devportal tests: a running devportal with an installed app, and a tiny app peer."""
from __future__ import annotations

import threading

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from devportal.server import DevPortalServer


class AppPeer:
    """A minimal add-on on 127.0.0.1 that records every POST it gets (installer, events, robots)."""

    def __init__(self, answer: str = "<script>BX24.installFinish();</script>"):
        self.received: list[tuple[str, dict, dict]] = []
        self.answer = answer
        self.on_post = None
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def _wsgi(self, environ, start_response):
        request = Request(environ)
        form = request.form.to_dict(flat=True)
        self.received.append((request.path, request.args.to_dict(), form))
        if self.on_post is not None:
            self.on_post(request.path, form)
        return Response(self.answer, content_type="text/html")(environ, start_response)

    def posts(self, path: str) -> list[dict]:
        return [form for p, _, form in self.received if p == path]

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def app_peer():
    peer = AppPeer().start()
    yield peer
    peer.stop()


@pytest.fixture
def devportal():
    """A running devportal with default limits (2/s, burst 50)."""
    with DevPortalServer() as srv:
        yield srv


@pytest.fixture
def fast_portal():
    """A running devportal with limits off."""
    with DevPortalServer(limits=False) as srv:
        yield srv


@pytest.fixture
def installed(fast_portal, app_peer):
    """(server, install answer, app peer): an app installed and finished on a limits-off portal."""
    answer = fast_portal.portal.install_app(app_peer.url, "local.test.1", "secret-1")
    return fast_portal, answer, app_peer


def rest(srv, method: str, token: str | None = None, **params):
    """A raw JSON REST call; returns the requests.Response."""
    body = dict(params)
    if token is not None:
        body["auth"] = token
    return requests.post(f"{srv.url}/rest/{method}", json=body, timeout=10)
