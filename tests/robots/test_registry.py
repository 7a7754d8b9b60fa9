"""The robots' registry: every robot for leads and deals, with the documented bizproc.robot.add shape, and
each one's module giving its handler and timers."""
import re

from addon.robots.registry import ROBOTS, parse_robot_code, robot_definitions

# doc: api-reference/bizproc/bizproc-robot/bizproc-robot-add.md
TYPES = {"bool", "date", "datetime", "double", "file", "int", "select", "string", "text", "user"}


def test_every_robot_for_both_document_types():
    defs = robot_definitions("https://app.example.com/")
    codes = [d["CODE"] for d in defs]
    assert len(codes) == len(set(codes)) == 2 * len(ROBOTS)
    for d in defs:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", d["CODE"])
        assert d["HANDLER"] == f"https://app.example.com/robots/{d['CODE']}"
        assert d["DOCUMENT_TYPE"] in (["crm", "CCrmDocumentLead", "LEAD"], ["crm", "CCrmDocumentDeal", "DEAL"])
        assert d["CODE"].endswith("_" + d["DOCUMENT_TYPE"][2].lower())
        assert set(d["NAME"]) == {"ru", "en"} and set(d["DESCRIPTION"]) == {"ru", "en"}
        for prop in list(d["PROPERTIES"].values()) + list(d.get("RETURN_PROPERTIES", {}).values()):
            assert set(prop["Name"]) == {"ru", "en"}
            assert prop["Type"] in TYPES and prop["Required"] in ("Y", "N")
            if prop["Type"] == "select":
                assert prop["Options"]
        assert d["USE_SUBSCRIPTION"] == ("Y" if d.get("RETURN_PROPERTIES") else "N")
        assert parse_robot_code(d["CODE"]) is not None


def test_parse_codes():
    assert parse_robot_code("nezabyt_take_in_work_deal") == ("take_in_work", "deal")
    assert parse_robot_code("nezabyt_distribute_lead") == ("distribute", "lead")
    assert parse_robot_code("nezabyt_unknown_lead") is None
    assert parse_robot_code("other_distribute_lead") is None
    assert parse_robot_code("nezabyt_distribute_contact") is None


def test_each_robot_module_declares_itself_and_handles_its_calls():
    from addon.robots.registry import HANDLERS, MODULES, TIMER_HANDLERS

    assert [m.__name__.rsplit(".", 1)[1] for m in MODULES] == [r.key for r in ROBOTS]
    assert set(HANDLERS) == {r.key for r in ROBOTS}
    assert all(callable(h) for h in HANDLERS.values())
    assert TIMER_HANDLERS == {"take_in_work": MODULES[1].fire, "call_cadence": MODULES[5].fire,
                              "appointment_reminder": MODULES[6].fire, "stuck_in_stage": MODULES[9].fire,
                              "stuck_digest": MODULES[9].fire_digest}


def test_the_receiver_reads_the_registry_without_the_portal_client():
    """The web answers a robot call from the registry alone: loading it brings no HTTP client."""
    import subprocess
    import sys

    code = ("import sys, addon.robots.registry\n"
            "print(sorted(m for m in ('addon.bitrix.client', 'addon.bitrix.rest', 'addon.bitrix.batch',"
            " 'fast_bitrix24', 'aiohttp', 'requests', 'addon.robots.run', 'addon.robots.runner') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
