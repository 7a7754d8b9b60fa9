"""An install is one unit: when the registration manifest fails, the portal is put back as it was
(a new one removed, a known one with its previous tokens and state) and the answer is a clear
status, never an unhandled 500; ONAPPINSTALL without its auth is a 400."""
from __future__ import annotations

import pytest
import requests
from sqlalchemy import func, select

from addon.models import Portal, PortalSettings
from addon.bitrix.errors import PortalError


def portal_rows(services) -> list[Portal]:
    with services.sessions() as session:
        return list(session.scalars(select(Portal)))


def settings_rows(services) -> int:
    with services.sessions() as session:
        return session.scalar(select(func.count()).select_from(PortalSettings))


def tokens_of(services, portal: Portal) -> tuple[str | None, str | None]:
    return services.cipher.decrypt(portal.access_token_enc), services.cipher.decrypt(portal.refresh_token_enc)


@pytest.fixture
def failing_manifest(monkeypatch, services):
    """The portal fails the manifest's last step (robots), after events, placements and fields were
    applied: a half-done manifest. Records the portal's status while the manifest runs."""
    seen = []

    def fail(registered, definitions, applied, report):
        with services.sessions() as session:
            seen.extend(p.status for p in session.scalars(select(Portal)))
        raise PortalError("ERROR_CORE", "the portal refused the robot", 400, "bizproc.robot.add")

    monkeypatch.setattr("install.manifest_apply.robot_commands", fail)
    return seen


def test_a_new_portal_whose_manifest_fails_is_not_stored(services, devportal, app_server, failing_manifest):
    s = services.settings
    answer = devportal.portal.install_app(app_server.url, s.client_id, s.client_secret)
    assert answer["status_code"] == 502
    assert "try the install again" in answer["answer"] and "Traceback" not in answer["answer"]
    assert failing_manifest == ["installing"]  # never active while it was being set up
    assert portal_rows(services) == [] and settings_rows(services) == 0


def test_a_known_portal_keeps_its_tokens_and_state_when_a_reinstall_fails(services, devportal, app_server,
                                                                         monkeypatch):
    s = services.settings
    first = devportal.portal.install_app(app_server.url, s.client_id, s.client_secret)
    assert first["status_code"] == 200
    devportal.portal.wait_for_deliveries(10)
    [before] = portal_rows(services)
    assert before.status == "active"

    def fail(*args, **kwargs):
        raise PortalError("QUERY_LIMIT_EXCEEDED", "Too many requests", 503, "event.get")

    monkeypatch.setattr("install.manifest_apply.apply_manifest", fail)
    monkeypatch.setattr("install.manifest_apply.manifest_key", lambda version, fingerprint: "another version")
    again = devportal.portal.install_app(app_server.url, s.client_id, s.client_secret)
    assert again["status_code"] == 503 and "try the install again" in again["answer"]  # busy: a clear retry
    [after] = portal_rows(services)
    assert tokens_of(services, after) == tokens_of(services, before) != (again["access_token"], again["refresh_token"])
    assert (after.status, after.expires_at, after.client_endpoint, after.installed_at) == (
        before.status, before.expires_at, before.client_endpoint, before.installed_at)


def test_an_uninstalled_portal_stays_uninstalled_when_its_reinstall_fails(services, devportal, app_server,
                                                                          failing_manifest):
    from addon.db import unit_of_work
    from tests.install.conftest import make_portal

    s = services.settings
    devportal.portal.register_app(app_server.url, s.client_id, s.client_secret)

    portal_id = make_portal(services, member_id=devportal.portal.member_id, domain=devportal.domain,
                            client_endpoint=devportal.portal.rest_endpoint)
    with unit_of_work(services.sessions) as session:
        portal = session.get(Portal, portal_id)
        portal.status, portal.status_reason = "uninstalled", "the app was uninstalled from the portal"
        portal.access_token_enc = portal.refresh_token_enc = None
    answer = devportal.portal.install_app(app_server.url, s.client_id, s.client_secret)
    assert answer["status_code"] == 502
    [after] = portal_rows(services)
    assert (after.status, after.access_token_enc, after.refresh_token_enc) == ("uninstalled", None, None)


def test_an_unexpected_failure_is_undone_and_answered_with_a_message(services, devportal, app_server, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("LIST")

    monkeypatch.setattr("install.manifest_apply.apply_manifest", broken)
    s = services.settings
    answer = devportal.portal.install_app(app_server.url, s.client_id, s.client_secret)
    assert answer["status_code"] == 500
    assert "nothing was changed" in answer["answer"]
    assert portal_rows(services) == []


@pytest.mark.parametrize("path", ["/install", "/events"])
@pytest.mark.parametrize("form", [{"event": "ONAPPINSTALL"}, {"event": "ONAPPINSTALL", "auth": "x"},
                                  {"event": "onappinstall", "auth[domain]": "x"}])
def test_onappinstall_without_its_auth_is_a_400(services, app_server, path, form):
    answer = requests.post(f"{app_server.url}{path}", data=form, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["error"] == "bad_request" and "Traceback" not in answer.text
    assert portal_rows(services) == []
