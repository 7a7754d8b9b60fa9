"""The devportal's domain move (settings/how-to-call-rest-api/change-domen.md): after the admin
changes the portal's address, every request to the old one answers 302 to the same path at the
new one; a client that follows the 302 as a browser does (POST turned GET) loses the body."""
from __future__ import annotations

import pytest
import requests

from devportal.server import DevPortalServer


@pytest.fixture
def moved():
    with DevPortalServer(limits=False) as srv:
        srv.portal.register_app("http://127.0.0.1:9", "local.test", "secret")
        old = srv.portal.base_url
        srv.portal.move_domain(f"localhost:{srv.port}")
        yield srv, old


def test_the_old_address_answers_302_to_the_same_path_at_the_new_one(moved):
    srv, old = moved
    token = srv.portal.issue_tokens(1)["access_token"]
    answer = requests.post(f"{old}/rest/profile.json?x=1", json={"auth": token}, allow_redirects=False, timeout=5)
    assert answer.status_code == 302
    assert answer.headers["Location"] == f"http://localhost:{srv.port}/rest/profile.json?x=1"
    at_new = requests.post(answer.headers["Location"], json={"auth": token}, timeout=5)
    assert at_new.status_code == 200 and at_new.json()["result"]["ID"] == "1"


def test_a_post_followed_as_a_browser_follows_it_loses_its_body(moved):
    srv, old = moved
    token = srv.portal.issue_tokens(1)["access_token"]
    followed = requests.post(f"{old}/rest/profile.json", json={"auth": token}, timeout=5)  # 302 → GET, no body
    assert followed.history and followed.history[0].status_code == 302
    assert followed.status_code == 401 and followed.json()["error"] == "NO_AUTH_FOUND"


def test_after_a_move_the_portal_speaks_of_its_new_domain(moved):
    srv, _ = moved
    portal = srv.portal
    assert portal.domain == f"localhost:{srv.port}" and portal.old_domains == {f"127.0.0.1:{srv.port}"}
    block = portal.auth_block(1)
    assert block["domain"] == portal.domain and block["client_endpoint"] == f"http://localhost:{srv.port}/rest/"
    status, info = portal.app_info_for_token(block["access_token"])
    assert status == 200 and info["result"]["install"]["domain"] == portal.domain
    # The control API and the authorization server stay where they are (they are not the portal's).
    assert requests.get(f"http://127.0.0.1:{srv.port}/_dev/state", timeout=5).json()["domain"] == portal.domain


def test_moving_to_the_same_or_no_domain_is_refused(moved):
    srv, _ = moved
    with pytest.raises(ValueError):
        srv.portal.move_domain(srv.portal.domain)
    with pytest.raises(ValueError):
        srv.portal.move_domain("")
