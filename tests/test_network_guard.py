"""The suite's network guard: a socket to this machine connects, one to anywhere else fails at once."""
from __future__ import annotations

import socket

import pytest
import requests

from tests.network_guard import NetworkBlocked, is_local


def test_loopback_connects():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        with socket.create_connection(server.getsockname(), timeout=2):
            pass
    finally:
        server.close()


@pytest.mark.parametrize("address", [("10.255.255.1", 443), ("93.184.216.34", 80), ("2001:db8::1", 443, 0, 0)])
def test_an_address_off_this_machine_is_refused_at_once(address):
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family) as sock, pytest.raises(NetworkBlocked, match="may not reach the network"):
        sock.connect(address)


def test_a_library_call_to_a_real_host_fails_with_the_reason():
    with pytest.raises(requests.exceptions.ConnectionError, match="may not reach the network"):
        requests.get("http://93.184.216.34/", timeout=2)


@pytest.mark.parametrize("address,local", [
    (("127.0.0.5", 80), True), (("::1", 80, 0, 0), True), (("localhost", 80), True),
    ("/tmp/pg.sock", True), (("192.168.1.1", 80), False), (("example.com", 80), False),
])
def test_what_counts_as_this_machine(address, local):
    assert is_local(address) is local
