"""`AppServer`: the real Flask app (`create_app(services)`) served on 127.0.0.1 with a free port in
a background thread, so the devportal can POST installs, events and robot calls to it."""
from __future__ import annotations

import threading

from werkzeug.serving import make_server


class AppServer:
    def __init__(self, services, host: str = "127.0.0.1", port: int = 0, set_public_url: bool = True):
        self.services = services
        self.set_public_url = set_public_url
        self.host = host
        self.port = port
        self.app = None
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("AppServer is not started")
        return f"http://{self.host}:{self._server.server_port}"

    def start(self) -> "AppServer":
        import dataclasses

        from addon.web import create_app

        # Bind first: the app's public URL (where the portal sends events) is this server's URL.
        self._server = make_server(self.host, self.port, self._dispatch, threaded=True)
        if self.set_public_url:
            self.services.settings = dataclasses.replace(self.services.settings, public_url=self.url)
        self.app = create_app(self.services)
        self._thread = threading.Thread(target=self._server.serve_forever, name="nezabyt-app-server", daemon=True)
        self._thread.start()
        return self

    def _dispatch(self, environ, start_response):
        return self.app(environ, start_response)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "AppServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
