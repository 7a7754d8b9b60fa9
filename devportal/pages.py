"""The devportal's human pages: the CRM lists, the app in an iframe, placements, and the BX24.js shim."""
from __future__ import annotations

from werkzeug.wrappers import Request, Response


def handle_page(portal, request: Request) -> Response:
    return Response("not found", status=404)
