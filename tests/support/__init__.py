"""Test helpers shared by every part's tests (the app served on a real port)."""
from tests.support.app_server import AppServer

__all__ = ["AppServer"]
