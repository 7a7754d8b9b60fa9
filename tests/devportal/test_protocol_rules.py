"""The devportal fails a client where a real portal would (b24restdocs): robots shown only where
their FILTER allows, and the other protocol rules the add-on must survive."""
from __future__ import annotations

import pytest

from tests.devportal.conftest import rest


def _robot(srv, token, peer, code, filter_=None):
    params = dict(CODE=code, HANDLER=f"{peer.url}/robots/{code}", AUTH_USER_ID=1, NAME={"ru": "Распределить"},
                  DOCUMENT_TYPE=["crm", "CCrmDocumentDeal", "DEAL"])
    if filter_ is not None:
        params["FILTER"] = filter_
    assert rest(srv, "bizproc.robot.add", token, **params).json()["result"] is True


# doc: api-reference/bizproc/bizproc-robot/bizproc-robot-add.md (FILTER)
def test_a_robot_shows_only_for_the_document_types_its_filter_includes(installed):
    srv, answer, peer = installed
    token = answer["access_token"]
    _robot(srv, token, peer, "everywhere")
    _robot(srv, token, peer, "deals_only", {"INCLUDE": [["crm", "CCrmDocumentDeal"]]})
    _robot(srv, token, peer, "not_leads", {"EXCLUDE": [["crm", "CCrmDocumentLead"]]})
    _robot(srv, token, peer, "box_only", {"INCLUDE": ["box"]})
    assert {r["CODE"] for r in srv.portal.robots_shown("deal")} == {"everywhere", "deals_only", "not_leads"}
    assert {r["CODE"] for r in srv.portal.robots_shown("lead")} == {"everywhere"}
    with pytest.raises(KeyError):
        srv.portal.run_robot("deals_only", "lead", 1)
