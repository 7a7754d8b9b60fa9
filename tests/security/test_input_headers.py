"""Headers of every answer: the app's pages are framed by their portal's own address alone
(Bitrix24's docs: frame-ancestors with the portal's address), every answer is nosniff and sends
no referrer, the receivers' fast path included."""
from __future__ import annotations

import json

import pytest

from addon.models import Portal
from addon.web import create_app
from settings_ui.access import PAGE_TOKEN_MAX_AGE
from settings_ui.page_auth import frame_sources
from tests.install.conftest import make_portal
from tests.install.test_intake import event_form
from tests.ui.conftest import (  # noqa: F401
    MANAGER_AUTH,
    MEMBER_ID,
    app,
    client,
    clock,
    open_app,
    page_token,
    portal,
    portal_auth,
)

PORTAL_ONLY = "frame-ancestors https://acme.bitrix24.ru"


def safe(response) -> bool:
    return (response.headers.get("X-Content-Type-Options") == "nosniff"
            and response.headers.get("Referrer-Policy") == "no-referrer")


def test_frame_sources():
    assert frame_sources("acme.bitrix24.ru") == "https://acme.bitrix24.ru"
    assert frame_sources("127.0.0.1:8123") == "http://127.0.0.1:8123 https://127.0.0.1:8123"  # the devportal
    for domain in (None, "", "evil.test; script-src *", "*", "a b", "https://x.test"):
        assert frame_sources(domain) == "'none'"


def test_the_app_pages_are_framed_by_their_portal_only(client, portal, portal_auth):
    opened = open_app(client)
    token = page_token(opened)
    card = client.post("/placement/CRM_CONTACT_DETAIL_TAB?DOMAIN=evil.test&PROTOCOL=1&LANG=ru",
                       data={"AUTH_ID": MANAGER_AUTH, "member_id": MEMBER_ID,
                             "PLACEMENT_OPTIONS": json.dumps({"ID": "5"})})
    answers = [opened, card, client.post("/ui/page", data={"t": token, "tab": "import"}),
               client.get(f"/ui/import/template.csv?t={token}"),
               client.post("/ui/debug", data={"t": token, "entity_id": "5"})]
    for answer in answers:
        assert answer.status_code == 200
        assert answer.headers["Content-Security-Policy"] == PORTAL_ONLY  # never the claimed DOMAIN
        assert "X-Frame-Options" not in answer.headers and safe(answer)


def test_refusals_inside_the_portal_stay_framed_by_it_and_others_by_none(client, clock, portal, portal_auth):
    token = page_token(open_app(client))
    bad_auth = client.post("/app?DOMAIN=acme.bitrix24.ru&PROTOCOL=1&LANG=ru",
                           data={"AUTH_ID": "wrong", "member_id": MEMBER_ID})
    manager = client.post("/ui/settings", data={"t": page_token(open_app(client, auth=MANAGER_AUTH))})
    assert (bad_auth.status_code, manager.status_code) == (403, 403)
    assert bad_auth.headers["Content-Security-Policy"] == manager.headers["Content-Security-Policy"] == PORTAL_ONLY
    clock.now += PAGE_TOKEN_MAX_AGE + 1
    expired = client.post("/ui/page", data={"t": token})
    assert expired.status_code == 403 and "истёк" in expired.get_data(as_text=True)
    assert expired.headers["Content-Security-Policy"] == PORTAL_ONLY
    for refused in (client.post("/ui/page", data={"t": token[:-3] + "abc"}),
                    client.post("/app", data={"AUTH_ID": "x", "member_id": "no-such-portal"}),
                    client.get("/app")):
        assert refused.status_code == 403
        assert refused.headers["Content-Security-Policy"] == "frame-ancestors 'none'" and safe(refused)


@pytest.fixture
def web(services):
    make_portal(services)
    return create_app(services).test_client()


def test_every_answer_of_the_app_is_nosniff_and_sends_no_referrer(web):
    answers = {
        "fast path": web.post("/events", data=event_form()),
        "fast path refusal": web.post("/events", data=event_form(token="forged")),
        "flask route": web.post("/events", data=event_form(ts="2"), content_type="multipart/form-data"),
        "robot": web.post("/robots/nezabyt_nothing_lead", data={}),
        "health": web.get("/healthz"),
        "not found": web.get("/no-such-page"),
        "static": web.get("/ui/static/nezabyt.css"),
    }
    for answer in answers.values():
        answer.close()  # the static file's
    assert [k for k, answer in answers.items() if not safe(answer)] == []
    assert [answers[k].status_code for k in ("fast path", "fast path refusal", "robot", "not found")] == [
        200, 401, 404, 404]


def test_the_real_app_frames_its_pages_by_the_portal_too(services, portal, portal_auth):
    with services.sessions() as session:
        domain = session.get(Portal, portal).domain
    answer = open_app(create_app(services).test_client())
    assert answer.headers["Content-Security-Policy"] == f"frame-ancestors https://{domain}" and safe(answer)
