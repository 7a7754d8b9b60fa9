"""Nezabyt against the devportal's protocol rules (b24restdocs): each test fails on code that
ignores the rule."""
from __future__ import annotations

import json

import pytest

from tests.install.test_end_to_end import install


# doc: api-reference/bizproc/bizproc-robot/bizproc-robot-add.md (FILTER, AUTH_USER_ID)
def test_each_designer_offers_one_robot_of_each_name_the_one_for_its_document_type(services, devportal,
                                                                                   app_server):
    install(devportal, app_server)
    dp = devportal.portal
    for document_type in ("lead", "deal"):
        shown = dp.robots_shown(document_type)
        assert shown and all(r["CODE"].endswith(f"_{document_type}") for r in shown)
        names = [json.dumps(r["NAME"], sort_keys=True, ensure_ascii=False) for r in shown]
        assert len(names) == len(set(names))
    with pytest.raises(KeyError):
        dp.run_robot("nezabyt_distribute_lead", "deal", 1)
