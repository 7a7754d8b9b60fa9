"""Who may see and change what: the portal confirms the user, the page token carries the session,
admins edit, everyone else reads; tampered and expired tokens are refused."""
from __future__ import annotations

from werkzeug.datastructures import MultiDict

from addon.models import PortalSettings
from addon.options import Options
from settings_ui.access import PAGE_TOKEN_MAX_AGE, AccessDenied, PageTokens, PageUser

from .conftest import ADMIN_AUTH, MANAGER_AUTH, open_app, page_token
from .test_settings import settings_form


def test_admin_opens_the_settings_page(client, portal, portal_auth):
    response = open_app(client)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'id="settings-form"' in html and 'id="save-btn"' in html
    assert "Настройки" in html  # Russian by default
    assert "//api.bitrix24.com/api/v1/" in html  # a real portal loads the CDN BX24.js
    assert "X-Frame-Options" not in response.headers
    assert response.headers["Content-Security-Policy"] == "frame-ancestors https://acme.bitrix24.ru"
    assert not response.headers.getlist("Set-Cookie")  # iframes get no third-party cookies


def test_english_when_the_portal_says_en(client, portal, portal_auth):
    html = open_app(client, lang="en").get_data(as_text=True)
    assert "Settings" in html and "Bulk load" in html


def test_unknown_token_or_portal_is_refused(client, portal, portal_auth):
    assert open_app(client, auth="forged").status_code == 403
    response = client.post("/app", data={"AUTH_ID": ADMIN_AUTH, "member_id": "someone-else"})
    assert response.status_code == 403
    assert "Доступ запрещён" in response.get_data(as_text=True)


def test_manager_gets_a_read_only_page(client, portal, portal_auth):
    html = open_app(client, auth=MANAGER_AUTH).get_data(as_text=True)
    assert 'id="readonly-note"' in html
    assert 'id="save-btn"' not in html and 'id="pane-import"' not in html


def test_manager_cannot_change_anything_server_side(client, services, portal, portal_auth):
    token = page_token(open_app(client, auth=MANAGER_AUTH))
    form = settings_form(Options(time_zone="Europe/Moscow", require_call=True), token)
    for url, data in (("/ui/settings", form), ("/ui/settings/preview", form), ("/ui/index", {"t": token}),
                      ("/ui/import/1/apply", {"t": token})):
        response = client.post(url, data=MultiDict(data))
        assert response.status_code == 403, url
    with services.sessions() as session:
        row = session.get(PortalSettings, portal)
        assert row.version == 1 and row.data["require_call"] is False


def test_tampered_token_is_refused(client, services, portal, portal_auth):
    token = page_token(open_app(client, auth=MANAGER_AUTH))
    # Flip the payload to claim admin rights: the signature no longer matches.
    import base64
    import json

    payload, rest = token.split(".", 1)
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["is_admin"] = True
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=") + "." + rest
    response = client.post("/ui/settings", data=MultiDict(settings_form(Options(require_call=True), forged)))
    assert response.status_code == 403
    assert "подделан" in response.get_data(as_text=True)
    assert client.post("/ui/index", headers={"X-Nezabyt-Token": token + "x"}).status_code == 403
    assert client.post("/ui/page", data={"tab": "settings"}).status_code == 403  # no token at all


def test_expired_token_is_refused(client, clock, services, portal, portal_auth):
    token = page_token(open_app(client))
    assert client.post("/ui/page", data={"t": token, "tab": "dashboard"}).status_code == 200
    clock.now += PAGE_TOKEN_MAX_AGE + 1
    response = client.post("/ui/settings", data=MultiDict(settings_form(Options(require_call=True), token)))
    assert response.status_code == 403
    assert "истёк" in response.get_data(as_text=True)
    with services.sessions() as session:
        assert session.get(PortalSettings, portal).version == 1


def test_page_tokens_round_trip_and_expire():
    now = [1_000_000.0]
    tokens = PageTokens("k", clock=lambda: now[0])
    user = PageUser(portal_id=3, user_id=9, is_admin=False, lang="en", domain="127.0.0.1:8700")
    token = tokens.issue(user)
    assert tokens.read(token) == user
    assert user.bx24_script == "//127.0.0.1:8700/bx24.js"  # the devportal serves its own shim
    now[0] += PAGE_TOKEN_MAX_AGE + 1
    try:
        tokens.read(token)
    except AccessDenied as exc:
        assert exc.reason == "expired"
    else:
        raise AssertionError("an expired token was accepted")
    other = PageTokens("another-secret", clock=lambda: 1_000_000.0)
    try:
        other.read(token)
    except AccessDenied as exc:
        assert exc.reason == "tampered"
    else:
        raise AssertionError("a token signed with another key was accepted")
