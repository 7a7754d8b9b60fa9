"""Headless Chromium (Debian's package) driven by Playwright, for tests that open the app inside
the devportal's portal pages like an admin would."""
from __future__ import annotations

import pytest

from tests.ui.conftest import fast_devportal  # noqa: F401  (the devportal with its limits off)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="ru-RU")
    page = context.new_page()
    yield page
    context.close()
