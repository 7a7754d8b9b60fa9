"""Where an install claim may send the app: https and public addresses only (the resolver patched)."""
from __future__ import annotations

import dataclasses
import socket

import pytest
import responses
from sqlalchemy import func, select

from addon.models import Portal
from install.address import PortalAddressRefused, check_portal_address


def resolver(*addresses):
    calls = []

    def resolve(host, port, type=0):
        calls.append((host, port))
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses]
    resolve.calls = calls
    return resolve


PUBLIC = ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")
NOT_PUBLIC = ("10.0.0.5", "172.16.3.4", "192.168.1.10", "127.0.0.1", "127.8.8.8", "::1", "169.254.169.254",
              "fe80::1%eth0", "224.0.0.1", "ff02::1", "240.0.0.1", "0.0.0.0", "::", "100.64.0.1", "fc00::1",
              "::ffff:127.0.0.1", "::ffff:10.1.2.3", "198.18.0.1")


@pytest.mark.parametrize("address", PUBLIC)
def test_a_public_address_over_https_passes(address):
    resolve = resolver(address)
    check_portal_address("https", "acme.bitrix24.ru", None, allow_private=False, resolve=resolve)
    assert resolve.calls == [("acme.bitrix24.ru", 443)]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_private_loopback_link_local_multicast_reserved_and_unspecified_are_refused(address):
    with pytest.raises(PortalAddressRefused):
        check_portal_address("https", "acme.bitrix24.ru", None, allow_private=False, resolve=resolver(address))


def test_every_resolved_address_must_be_public():
    with pytest.raises(PortalAddressRefused):
        check_portal_address("https", "acme.bitrix24.ru", 443, allow_private=False,
                             resolve=resolver("93.184.216.34", "10.0.0.1"))


def test_plain_http_is_refused_before_any_lookup():
    resolve = resolver("93.184.216.34")
    with pytest.raises(PortalAddressRefused):
        check_portal_address("http", "acme.bitrix24.ru", None, allow_private=False, resolve=resolve)
    assert resolve.calls == []


def test_a_name_that_does_not_resolve_is_refused():
    def resolve(host, port, type=0):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(PortalAddressRefused):
        check_portal_address("https", "nowhere.invalid", None, allow_private=False, resolve=resolve)


def test_the_devportal_switch_lets_private_addresses_and_http_through():
    resolve = resolver("127.0.0.1")
    check_portal_address("http", "127.0.0.1", 8700, allow_private=True, resolve=resolve)
    assert resolve.calls == []  # nothing to check


# --- through the installer -------------------------------------------------------------------------

def install_form(**over):
    return {"member_id": "m-evil", "AUTH_ID": "forged-access", "REFRESH_ID": "forged-refresh",
            "AUTH_EXPIRES": "-7200", "SERVER_ENDPOINT": "https://portal.example.com/rest/", **over}


@pytest.fixture
def strict(services):
    """The app as deployed: private portals not allowed."""
    services.settings = dataclasses.replace(services.settings, allow_private_portals=False)
    return services


@pytest.fixture
def web(strict):
    from addon.web import create_app

    return create_app(strict).test_client()


@responses.activate  # no request may leave: any would fail as unmocked
@pytest.mark.parametrize("address", ["10.0.0.5", "127.0.0.1", "169.254.169.254", "::1"])
def test_an_install_naming_a_private_address_is_refused_without_a_request(strict, web, monkeypatch, caplog,
                                                                         address):
    monkeypatch.setattr("install.address.socket.getaddrinfo", resolver(address))
    page = web.post("/install?DOMAIN=portal.example.com&PROTOCOL=1", data=install_form())
    event = web.post("/install", data={
        "event": "ONAPPINSTALL", "auth[member_id]": "m-evil", "auth[domain]": "portal.example.com",
        "auth[client_endpoint]": "https://portal.example.com/rest/", "auth[access_token]": "forged",
        "auth[server_endpoint]": "https://portal.example.com/rest/", "auth[application_token]": "x"})
    for answer in (page, event):
        assert answer.status_code == 400
        assert answer.get_json()["error_description"] == ("the portal's address is not allowed: a Bitrix24 portal "
                                                          "is reached over https at a public address")
    assert len(responses.calls) == 0
    assert "not a public address" in caplog.text  # refused for its address, not for a failed lookup
    with strict.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Portal)) == 0


@responses.activate
def test_an_install_over_plain_http_is_refused(strict, web, monkeypatch):
    monkeypatch.setattr("install.address.socket.getaddrinfo", resolver("93.184.216.34"))
    answer = web.post("/install?DOMAIN=portal.example.com&PROTOCOL=0", data=install_form())
    assert answer.status_code == 400 and len(responses.calls) == 0


@responses.activate
def test_a_public_https_portal_goes_on_to_the_authorization_server(strict, web, monkeypatch):
    monkeypatch.setattr("install.address.socket.getaddrinfo", resolver("93.184.216.34"))
    oauth = strict.settings.oauth_url
    responses.get(f"{oauth}rest/app.info", json={"error": "invalid_token", "error_description": "x"}, status=401)
    answer = web.post("/install?DOMAIN=portal.example.com&PROTOCOL=1", data=install_form())
    assert answer.status_code == 401
    assert [c.request.url.split("?")[0] for c in responses.calls] == [f"{oauth}rest/app.info"]
