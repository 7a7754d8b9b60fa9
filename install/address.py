"""Where an install claim may make the app send requests: https, and a public address only.

An install arrives unauthenticated and names the portal to call back. Without this check the app
would POST to any host and port the request names (127.0.0.1, 169.254.169.254, the office
network). Every address the name resolves to must be public; the local devportal (demo, tests)
is let through by `allow_private_portals`, which also allows plain http.
"""
from __future__ import annotations

import ipaddress
import socket
from typing import Callable, Iterable

Resolver = Callable[..., Iterable[tuple]]


class PortalAddressRefused(Exception):
    """The claimed portal is not an address the app may call (`reason` is for the log only)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def check_portal_address(scheme: str, host: str, port: int | None, allow_private: bool,
                         resolve: Resolver | None = None) -> None:
    """Raise PortalAddressRefused unless the portal may be called at scheme://host:port."""
    if allow_private:
        return
    if scheme != "https":
        raise PortalAddressRefused(f"{scheme} is not https")
    resolve = resolve or socket.getaddrinfo
    try:
        answers = list(resolve(host, port or 443, type=socket.SOCK_STREAM))
    except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
        raise PortalAddressRefused(f"{host} does not resolve: {exc.__class__.__name__}") from exc
    if not answers:
        raise PortalAddressRefused(f"{host} resolves to no address")
    for answer in answers:
        address = _address(answer[4][0])
        if address is None or not is_public(address):
            raise PortalAddressRefused(f"{host} resolves to {answer[4][0]}, not a public address")


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return address.is_global and not (address.is_private or address.is_loopback or address.is_link_local
                                      or address.is_multicast or address.is_reserved or address.is_unspecified)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])  # an IPv6 zone (fe80::1%eth0) is no part of it
    except ValueError:
        return None
