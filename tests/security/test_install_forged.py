"""A forged install, end to end: a second local HTTP server plays the attacker's "portal". It answers
app.info (naming our client id) and profile (ADMIN) itself, and names itself as SERVER_ENDPOINT. It
must receive no request — above all none with the app's client secret — and no portal is stored,
whether private addresses are refused (as deployed) or allowed (the devportal's switch)."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading

import pytest
import requests
from sqlalchemy import func, select
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from addon.models import PORTAL_NEEDS_REAUTH, Portal
from worker.jobs import run_once


class Attacker:
    """A "portal" that says yes to everything, and remembers every request it got."""

    def __init__(self, client_id: str):
        self.client_id = client_id
        self.requests: list[dict] = []
        self.expired = False  # answer every REST call with expired_token (to provoke a refresh)
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.domain = f"127.0.0.1:{self._server.server_port}"
        self.url = f"http://{self.domain}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def _wsgi(self, environ, start_response):
        request = Request(environ)
        self.requests.append({"method": request.method, "path": request.path,
                              "query": request.query_string.decode(), "body": request.get_data(as_text=True)})
        return self._answer(request.path)(environ, start_response)

    def _answer(self, path: str) -> Response:
        def reply(body, status=200):
            return Response(json.dumps(body), status=status, content_type="application/json")

        if "oauth/token" in path:
            return reply({"access_token": "attacker-access", "refresh_token": "attacker-refresh", "expires_in": 3600,
                          "client_endpoint": f"{self.url}/rest/"})
        if self.expired:
            return reply({"error": "expired_token", "error_description": "The access token provided has expired."},
                         401)
        method = path.rsplit("/", 1)[-1].removesuffix(".json")
        results = {
            "app.info": {"ID": 1, "CODE": self.client_id, "CLIENT_ID": self.client_id, "client_id": self.client_id,
                         "INSTALLED": True, "STATUS": "L", "install": {"member_id": "m-evil", "domain": self.domain}},
            "profile": {"ID": "1", "ADMIN": True, "NAME": "Admin"},
            "server.time": "2026-03-02T09:00:00+03:00",
            "scope": ["crm", "user", "placement", "bizproc"],
        }
        return reply({"result": results.get(method, []), "time": {}})

    def start(self) -> "Attacker":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def saw_secret(self, secret: str) -> bool:
        return any(secret in r["query"] or secret in r["body"] for r in self.requests)


@pytest.fixture
def attacker(services):
    server = Attacker(services.settings.client_id).start()
    yield server
    server.stop()


def forged_installs(attacker: Attacker) -> list[tuple[str, dict, dict]]:
    """(path, query, form) of every forged install variant: the installer page over http and
    https, the ONAPPINSTALL event at /install and at /events."""
    page = {"member_id": "m-evil", "AUTH_ID": "forged-access", "REFRESH_ID": "forged-refresh",
            "AUTH_EXPIRES": "-7200", "SERVER_ENDPOINT": f"{attacker.url}/rest/", "status": "L"}
    event = {"event": "ONAPPINSTALL", "auth[member_id]": "m-evil", "auth[domain]": attacker.domain,
             "auth[client_endpoint]": f"{attacker.url}/rest/", "auth[server_endpoint]": f"{attacker.url}/rest/",
             "auth[access_token]": "forged-access", "auth[refresh_token]": "forged-refresh",
             "auth[expires_in]": "-7200", "auth[application_token]": "forged-app-token", "data[VERSION]": "1"}
    return [("/install", {"DOMAIN": attacker.domain, "PROTOCOL": "0"}, page),
            ("/install", {"DOMAIN": attacker.domain, "PROTOCOL": "1"}, page),
            ("/install", {}, event),
            ("/events", {}, event)]


def portals(services) -> int:
    with services.sessions() as session:
        return session.scalar(select(func.count()).select_from(Portal))


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@pytest.mark.parametrize("allow_private", [False, True], ids=["as-deployed", "private-portals-allowed"])
def test_a_forged_install_gets_no_secret_no_request_and_stores_nothing(services, app_server, attacker,
                                                                      allow_private):
    services.settings = dataclasses.replace(services.settings, allow_private_portals=allow_private)
    answers = [requests.post(f"{app_server.url}{path}", params=query, data=form, timeout=15)
               for path, query, form in forged_installs(attacker)]
    # As deployed the address itself is refused (400); with private portals allowed, Bitrix24's
    # authorization server does not know the token (401). Either way one text, nothing echoed.
    assert {a.status_code for a in answers} == ({400} if not allow_private else {401})
    for answer in answers:
        assert answer.headers["Content-Type"] == "application/json"
        assert "Traceback" not in answer.text and attacker.url not in answer.text
    assert portals(services) == 0
    run_once(services, now())  # the worker, once: nothing to refresh, nobody to call
    assert attacker.requests == []
    assert not attacker.saw_secret(services.settings.client_secret)
    assert portals(services) == 0


def test_the_proof_is_asked_of_the_authorization_server_not_of_the_claimed_portal(services, app_server, attacker):
    """With private portals allowed, the claimed portal is never the one asked whether its token
    is real: the authorization server of the settings is."""
    query, form = forged_installs(attacker)[0][1:]
    answer = requests.post(f"{app_server.url}/install", params=query, data=form, timeout=15)
    assert answer.status_code == 401
    assert answer.json()["error_description"] == ("the portal did not confirm the install: open the app from the "
                                                  "portal and try again")
    assert attacker.requests == []


def test_a_genuine_token_of_another_app_is_refused(services, app_server, attacker):
    """A token Bitrix24 really issued, but to another app (the attacker's own, on a portal the
    attacker controls): app.info at the authorization server names another client_id."""
    from devportal.server import DevPortalServer

    with DevPortalServer(limits=False) as other:
        tokens = other.portal.register_app("http://127.0.0.1:9", "local.attacker.app", "attacker-secret")
        for domain, member_id in ((other.domain, other.portal.member_id), (attacker.domain, "m-evil")):
            form = {"member_id": member_id, "AUTH_ID": tokens["access_token"], "REFRESH_ID": tokens["refresh_token"],
                    "AUTH_EXPIRES": "3600", "SERVER_ENDPOINT": f"{attacker.url}/rest/"}
            answer = requests.post(f"{app_server.url}/install", params={"DOMAIN": domain, "PROTOCOL": "0"},
                                   data=form, timeout=15)
            assert answer.status_code == 401
        assert [c for c in other.portal.calls if c["method"] == "profile"] == []  # refused before asking it
    assert attacker.requests == [] and portals(services) == 0


def test_our_token_for_another_portal_is_refused(services, app_server, devportal, attacker):
    """Our app's real token from one portal, claimed for another domain (the attacker's)."""
    s = services.settings
    tokens = devportal.portal.register_app(app_server.url, s.client_id, s.client_secret)
    form = {"member_id": devportal.portal.member_id, "AUTH_ID": tokens["access_token"],
            "REFRESH_ID": tokens["refresh_token"], "AUTH_EXPIRES": "3600", "SERVER_ENDPOINT": f"{attacker.url}/rest/"}
    answer = requests.post(f"{app_server.url}/install", params={"DOMAIN": attacker.domain, "PROTOCOL": "0"},
                           data=form, timeout=15)
    assert answer.status_code == 401
    assert attacker.requests == [] and portals(services) == 0


def test_a_stored_forged_portal_never_gets_the_secret_when_its_token_is_refreshed(services, attacker):
    """Even a portal row that names the attacker (as an older version stored it) is refreshed only at
    the authorization server of the settings: the attacker answers expired_token to every call, the
    worker refreshes, and the refresh is refused there (the refresh token is not Bitrix24's)."""
    from tests.install.conftest import make_portal

    attacker.expired = True
    portal_id = make_portal(services, member_id="m-evil", domain=attacker.domain,
                            client_endpoint=f"{attacker.url}/rest/", server_endpoint=f"{attacker.url}/rest/")
    from addon.bitrix.client import PortalClient
    from addon.bitrix.errors import PortalAuthError

    with pytest.raises(PortalAuthError):
        PortalClient(services, portal_id).call("profile")
    run_once(services, now())
    with services.sessions() as session:
        portal = session.get(Portal, portal_id)
        # refused by the authorization server (the attacker would have answered with new tokens)
        assert portal.status == PORTAL_NEEDS_REAUTH
        assert portal.status_reason.startswith("token refresh refused: invalid_")
    assert attacker.requests, "the stored portal's own REST calls do reach it"
    assert not any("oauth" in r["path"] for r in attacker.requests)
    assert not attacker.saw_secret(services.settings.client_secret)
    assert not attacker.saw_secret("refresh-1")  # nor the stored refresh token


def test_an_open_and_a_closed_port_get_the_same_answer(services, app_server, attacker):
    """Nothing tells the claimant whether something listens at the address it named."""
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    answers = []
    for domain in (attacker.domain, closed):
        form = {"member_id": "m-evil", "AUTH_ID": "forged", "REFRESH_ID": "forged", "AUTH_EXPIRES": "-7200",
                "SERVER_ENDPOINT": f"http://{domain}/rest/"}
        answer = requests.post(f"{app_server.url}/install", params={"DOMAIN": domain, "PROTOCOL": "0"}, data=form,
                               timeout=15)
        answers.append((answer.status_code, answer.json()))
    assert answers[0] == answers[1]
    assert attacker.requests == []


def test_the_user_client_and_the_refresh_follow_no_redirect():
    """A redirect could steer a user's token, or the client secret, to an address nobody checked."""
    import responses as mocked

    from addon.config import Settings
    from addon.bitrix.client import user_client
    from addon.bitrix.errors import PortalError
    from addon.bitrix.tokens import _ask_auth_server, token_url

    with mocked.RequestsMock() as rsps:
        rsps.post("https://acme.bitrix24.ru/rest/profile.json", status=307,
                  headers={"Location": "http://169.254.169.254/latest/meta-data/"})
        with pytest.raises(PortalError) as refused:
            user_client("https://acme.bitrix24.ru/rest/", "user-token").call("profile")
        assert refused.value.http_status == 307
        settings = Settings.from_env({"DATABASE_URL": "sqlite://", "NEZABYT_SECRET_KEY": "k" * 32})
        rsps.get(token_url(settings.oauth_url), status=302, headers={"Location": "http://10.0.0.1/steal"})
        answer = _ask_auth_server(settings, "refresh-1")
        assert answer["_http_status"] == 302
        assert [c.request.url.split("?")[0] for c in rsps.calls] == [
            "https://acme.bitrix24.ru/rest/profile.json", "https://oauth.bitrix.info/oauth/token/"]
