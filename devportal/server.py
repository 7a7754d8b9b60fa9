"""The devportal's HTTP server: a lean WSGI app (REST, OAuth, ctl, pages) on a threaded werkzeug server."""
from __future__ import annotations

import json
import selectors
import threading
from datetime import datetime
from urllib.parse import urlencode

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from devportal.ctl import handle_ctl
from devportal.oauth import auth_server_app_info, auth_server_token
from devportal.pages import handle_page
from devportal.phpquery import parse_php_query
from devportal.portal import DevPortal
from devportal.rest import handle_http

JSON = "application/json; charset=utf-8"
_CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
         "Access-Control-Allow-Headers": "Content-Type, Authorization", "Access-Control-Max-Age": "600"}


class _QuietHandler(WSGIRequestHandler):
    """No per-request log line: the devportal serves hundreds a second."""

    def log_request(self, *args, **kwargs):
        pass


def _json_default(value):
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def json_response(body, status: int = 200) -> Response:
    return Response(json.dumps(body, ensure_ascii=False, default=_json_default), status=status, mimetype=None,
                    content_type=JSON)


def request_params(request: Request) -> dict:
    """Query string, PHP-bracket form or JSON body, merged like PHP's $_REQUEST."""
    params = parse_php_query(request.query_string) if request.query_string else {}
    if request.method == "POST":
        ctype = request.mimetype
        if ctype == "application/json":
            data = request.get_data()
            if data:
                try:
                    body = json.loads(data)
                except ValueError:
                    body = {}
                if isinstance(body, dict):
                    params.update(body)
        elif ctype == "multipart/form-data":
            params.update(parse_php_query(urlencode(list(request.form.items(multi=True)))))
        else:
            data = request.get_data()
            if data:
                params.update(parse_php_query(data))
    return params


class DevPortalApp:
    """WSGI callable over one DevPortal."""

    def __init__(self, portal: DevPortal):
        self.portal = portal

    def __call__(self, environ, start_response):
        request = Request(environ)
        response = self.dispatch(request)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        path = request.path
        moved = None if path.startswith(("/_dev/", "/auth/")) else self.portal.moved_location(
            request.host, request.full_path.rstrip("?"))
        if moved is not None:
            # The portal's old address after a domain change: every request, POST included, is told
            # where it lives now; a client that follows a 302 as browsers do loses a POST's body.
            return Response(f'<a href="{moved}">moved</a>', status=302, headers={"Location": moved},
                            content_type="text/html; charset=utf-8")
        if path.startswith("/rest/"):
            return self.rest(request, path[6:])
        if path in ("/oauth/token/", "/oauth/token"):
            status, body = self.portal.refresh(request_params(request))
            return json_response(body, status)
        if path.startswith("/auth/"):
            return self.auth_server(request, path[len("/auth"):])
        if path.startswith("/_dev/"):
            return handle_ctl(self.portal, request, path[6:])
        return handle_page(self.portal, request)

    def auth_server(self, request: Request, path: str) -> Response:
        """Bitrix24's authorization server (oauth.bitrix.info) for every devportal of the process:
        /auth/oauth/token/ (refresh) and /auth/rest/app.info."""
        if path.rstrip("/") == "/oauth/token":
            status, body = auth_server_token(request_params(request))
        elif path.rstrip("/") in ("/rest/app.info", "/rest/app.info.json"):
            status, body = auth_server_app_info(request_params(request))
        else:
            status, body = 404, {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}
        return json_response(body, status)

    def rest(self, request: Request, method: str) -> Response:
        if request.method == "OPTIONS":  # CORS preflight of BX24.js calls from the app's frame
            return Response(status=204, headers=_CORS)
        method = method.strip("/")
        bearer = None
        header = request.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            bearer = header[7:].strip()
        status, body = handle_http(self.portal, method, request_params(request), bearer)
        response = json_response(body, status)
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response


class DevPortalServer:
    """A running devportal on 127.0.0.1: `start()`, `url`, `domain`, `portal`, `stop()`."""

    def __init__(self, rps: float = 2.0, burst: int = 50, limits: bool = True, token_ttl: int = 3600,
                 tz: str = "Europe/Moscow", operating_limit: float = 480.0, member_id: str | None = None,
                 clock=None, port: int = 0, host: str = "127.0.0.1", latency_ms: int = 0,
                 license: str = "ru_project"):
        self.portal = DevPortal(rps=rps, burst=burst, limits=limits, token_ttl=token_ttl, tz=tz,
                                operating_limit=operating_limit, member_id=member_id, clock=clock,
                                latency_ms=latency_ms, license=license)
        self.host = host
        self.port = port
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def domain(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def oauth_url(self) -> str:
        """What the add-on's NEZABYT_OAUTH_URL is against the devportal (https://oauth.bitrix.info/
        against real Bitrix24). Known once bound: `bind()` or `start()` first."""
        return f"{self.url}/auth/"

    def bind(self) -> "DevPortalServer":
        """Open the listening socket (port 0 picks a free one) and tell the portal its URL."""
        if self._server is None:
            self._server = make_server(self.host, self.port, DevPortalApp(self.portal), threaded=True,
                                       request_handler=_QuietHandler)
            self._server.daemon_threads = True
            self.port = self._server.server_port
            self.portal.bind_url(self.url)
        return self

    def start(self) -> "DevPortalServer":
        """Serve on a background thread."""
        self.bind()
        # a short poll interval keeps stop() quick: tests start and stop many portals
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="devportal-http", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the foreground (the CLI, a benchmark's child process)."""
        self.bind()
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()
            self.portal.close()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.portal.close()

    def __enter__(self) -> "DevPortalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def loopback_address(index: int) -> str:
    """The index-th portal's own address: 127.0.0.2, 127.0.0.3, ... 127.0.1.2, ... (Linux routes the
    whole of 127.0.0.0/8 to the loopback interface, so no setup is needed)."""
    if not 0 <= index < 250 * 256:
        raise ValueError(f"no loopback address for portal {index}")
    return f"127.0.{index // 250}.{index % 250 + 2}"


class DevPortalFleet:
    """Many portals on one devportal: each its own DevPortal (data, tokens, clock, leaky bucket,
    faults) on its own loopback address and one shared port, so each has a domain of its own
    (127.0.0.7:8700) as real portals do; one thread accepts for all of them and each request is
    served on a thread of its own (the injected latency waits there, not in the accept loop).

    `portals` are DevPortalServer-like views (portal, url, domain, host, port) in address order."""

    def __init__(self, count: int, port: int = 0, latency_ms: int = 0, **options):
        self._selector = selectors.DefaultSelector()
        self.portals: list[DevPortalServer] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            for index in range(int(count)):
                view = DevPortalServer(port=port, host=loopback_address(index), latency_ms=latency_ms, **options)
                view.bind()
                port = view.port  # the first bind picks a free port; every address shares it
                view._server.socket.setblocking(False)
                self._selector.register(view._server.socket, selectors.EVENT_READ, view._server)
                self.portals.append(view)
        except BaseException:
            self.close()
            raise
        self.port = port

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.05):
                key.data._handle_request_noblock()  # accept, then a thread per connection

    def start(self) -> "DevPortalFleet":
        self._thread = threading.Thread(target=self._accept_loop, name="devportal-fleet", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        try:
            self._accept_loop()
        finally:
            self.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.close()

    def close(self) -> None:
        for view in self.portals:
            if view._server is not None:
                try:
                    self._selector.unregister(view._server.socket)
                except (KeyError, ValueError):
                    pass
                view._server.server_close()
                view._server = None
            view.portal.close()
        self._selector.close()

    def __enter__(self) -> "DevPortalFleet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_in_child(conn, **options) -> None:
    """Target for a child process: a devportal with a registered app; sends (url, admin token), then serves."""
    srv = DevPortalServer(**options).bind()
    token = srv.portal.register_app("http://127.0.0.1:9", "local.bench", "bench-secret")["access_token"]
    conn.send((srv.url, token))
    conn.close()
    srv.serve_forever()
