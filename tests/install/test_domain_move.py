"""A portal that changes its address (settings/how-to-call-rest-api/change-domen.md): the old one
answers 302 and a POST must be sent again, body and token intact, to the new one. Nezabyt follows
it for single calls and for batches (aiohttp would follow it as a GET without the body), keeps the
new address, and lets the same portal (its member_id) re-install from its new domain once
Bitrix24's authorization server confirms both; a claim the authorization server does not confirm
still moves nothing."""
from __future__ import annotations

import requests
from sqlalchemy import func, select

from addon.bitrix.client import PortalClient
from addon.models import Portal, PortalSettings
from addon.engine import STATUS_FIELD
from worker.jobs import drain_and_run


def install(devportal, app_server) -> int:
    s = app_server.services.settings
    answer = devportal.portal.install_app(app_server.url, s.client_id, s.client_secret)
    assert answer["status_code"] == 200, answer["answer"]
    with app_server.services.sessions() as session:
        return session.scalars(select(Portal.id)).one()


def stored_address(services, portal_id) -> tuple[str, str]:
    with services.sessions() as session:
        portal = session.get(Portal, portal_id)
        return portal.domain, portal.client_endpoint


def test_a_batch_to_the_old_address_is_sent_again_whole_at_the_new_one(services, devportal, app_server):
    portal_id = install(devportal, app_server)
    dp = devportal.portal
    first = dp.act_add("contact", {"NAME": "Анна"})
    second = dp.act_add("contact", {"NAME": "Борис"})
    new_domain = f"localhost:{devportal.port}"
    dp.move_domain(new_domain)
    start = len(dp.calls)
    with PortalClient(services, portal_id) as client:
        result = client.batch({"a": ("crm.contact.get", {"id": first}), "b": ("crm.contact.get", {"id": second}),
                               "c": ("crm.contact.update", {"id": first, "fields": {"COMMENTS": "после переезда"}})})
    assert result.errors == {}
    assert (result.results["a"]["NAME"], result.results["b"]["NAME"], result.results["c"]) == ("Анна", "Борис", True)
    assert dp.records["contact"][first]["COMMENTS"] == "после переезда"
    assert [c["method"] for c in dp.calls[start:] if not c["in_batch"]] == ["batch"]  # run once, at the new address
    assert stored_address(services, portal_id) == (new_domain, f"http://{new_domain}/rest/")


def test_the_worker_keeps_writing_after_the_portal_moved(services, devportal, app_server):
    portal_id = install(devportal, app_server)
    dp = devportal.portal
    contact = dp.act_add("contact", {"NAME": "Вера"})
    dp.move_domain(f"localhost:{devportal.port}")
    dp.act_call("contact", contact, user_id=1)  # its event carries the new domain
    assert dp.wait_for_deliveries(timeout=30)
    drain_and_run(services, now=dp.now())
    assert dp.records["contact"][contact].get(STATUS_FIELD)  # the status written at the new address
    assert stored_address(services, portal_id)[0] == dp.domain
    assert [c for c in dp.calls if c["error"]] == []


def test_the_same_portal_reinstalls_from_its_new_domain_and_keeps_its_settings(services, devportal, app_server):
    portal_id = install(devportal, app_server)
    with services.sessions() as session:
        row = session.get(PortalSettings, portal_id)
        row.data = {**row.data, "notify_time": "07:30"}
        session.commit()
    dp = devportal.portal
    dp.move_domain(f"localhost:{devportal.port}")
    s = services.settings
    again = dp.install_app(app_server.url, s.client_id, s.client_secret)
    assert again["status_code"] == 200, again["answer"]  # before: 403 "registered from another domain"
    with services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Portal)) == 1
        portal = session.get(Portal, portal_id)
        assert (portal.domain, portal.client_endpoint, portal.status) == (dp.domain, dp.rest_endpoint, "active")
        assert session.get(PortalSettings, portal_id).data["notify_time"] == "07:30"


def test_a_known_member_id_claimed_from_a_domain_bitrix24_does_not_confirm_moves_nothing(services, devportal,
                                                                                      app_server):
    portal_id = install(devportal, app_server)
    before = stored_address(services, portal_id)
    dp = devportal.portal
    tokens = dp.issue_tokens(1)
    # The portal's real token and member_id, claimed for another address: the authorization server
    # names the portal's own domain, so the claim is refused before the claimed host is asked.
    form = {"member_id": dp.member_id, "AUTH_ID": tokens["access_token"], "REFRESH_ID": tokens["refresh_token"],
            "AUTH_EXPIRES": "3600", "SERVER_ENDPOINT": dp.auth_endpoint}
    answer = requests.post(f"{app_server.url}/install", params={"DOMAIN": "localhost:9", "PROTOCOL": "0"},
                           data=form, timeout=15)
    assert answer.status_code == 401
    assert stored_address(services, portal_id) == before


def test_the_settings_page_opens_right_after_the_move(services, devportal, app_server):
    """The admin opens the app from the portal's new address before the worker has called it: the
    stored address answers 302, the app's own client follows it and keeps the new one, and the
    admin's token is checked there (never sent after a redirect itself)."""
    portal_id = install(devportal, app_server)
    dp = devportal.portal
    dp.move_domain(f"localhost:{devportal.port}")
    page = requests.post(f"{app_server.url}/app", params=dp.page_query(),
                         data=dp.page_form(dp.issue_tokens(1), "DEFAULT", {}), timeout=30)
    assert page.status_code == 200 and "Не забыт" in page.text
    assert stored_address(services, portal_id) == (dp.domain, dp.rest_endpoint)
    user_calls = [c for c in dp.calls if c["method"] in ("user.current", "user.admin")]
    assert user_calls and all(c["error"] is None for c in user_calls)
