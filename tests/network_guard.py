"""No test reaches the real network: every socket may connect only to this machine (127.0.0.0/8,
::1, a Unix socket). A connection elsewhere fails the test at once with the address it tried,
instead of hanging on a timeout or, worse, talking to a real portal."""
from __future__ import annotations

import ipaddress
import socket

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class NetworkBlocked(ConnectionRefusedError):
    """A test tried to open a connection to an address off this machine."""


def is_local(address) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths (str or bytes), abstract sockets
        return True
    host = address[0]
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).split("%", 1)[0]  # an IPv6 scope id
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost: resolving it would already be the network


def _guarded(original):
    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not is_local(address):
            raise NetworkBlocked(f"tests may not reach the network: connection to {address!r} refused")
        return original(self, address)

    connect.__name__ = original.__name__
    connect.__doc__ = original.__doc__
    return connect


def install() -> None:
    """Guard socket.connect and socket.connect_ex for this process (idempotent)."""
    if getattr(socket.socket.connect, "_nezabyt_guard", False):
        return
    for name in ("connect", "connect_ex"):
        guarded = _guarded(getattr(socket.socket, name))
        guarded._nezabyt_guard = True
        setattr(socket.socket, name, guarded)
