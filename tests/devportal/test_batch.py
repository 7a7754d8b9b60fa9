"""`batch` and the PHP query parser it relies on."""
from __future__ import annotations

import requests

from devportal.phpquery import flatten, http_build_query, parse_php_query
from tests.devportal.conftest import rest


def test_parse_php_query_handles_brackets_like_parse_str():
    parsed = parse_php_query("a[]=1&a[]=2&b[c][d]=x&b[c][e][]=y&plain=%D0%AF+z&fields[PHONE][0][VALUE]=%2B7")
    assert parsed == {"a": {"0": "1", "1": "2"}, "b": {"c": {"d": "x", "e": {"0": "y"}}}, "plain": "Я z",
                      "fields": {"PHONE": {"0": {"VALUE": "+7"}}}}
    assert parse_php_query("x=1&x=2") == {"x": "2"}  # later keys win
    assert parse_php_query("a[5]=p&a[]=q") == {"a": {"5": "p", "6": "q"}}  # [] continues after the max index
    assert parse_php_query("[x]=1&filter%5B%3E%3DID%5D=10") == {"filter": {">=ID": "10"}}
    assert parse_php_query("empty=&e[]=") == {"empty": "", "e": {"0": ""}}


def test_flatten_round_trips_through_the_parser():
    data = {"event": "ONCRMCONTACTADD", "data": {"FIELDS": {"ID": 5}}, "auth": {"domain": "x.ru"},
            "list": ["a", "b"]}
    assert parse_php_query(http_build_query(data)) == {
        "event": "ONCRMCONTACTADD", "data": {"FIELDS": {"ID": "5"}}, "auth": {"domain": "x.ru"},
        "list": {"0": "a", "1": "b"}}
    assert ("data[FIELDS][ID]", "5") in flatten(data)


# doc: settings/how-to-call-rest-api/batch.md
def test_batch_result_shape_with_empty_members_as_lists(installed):
    srv, answer, _ = installed
    r = rest(srv, "batch", answer["access_token"], halt=0,
             cmd={"me": "user.current", "n": "crm.contact.list?select[]=ID"})
    body = r.json()
    assert r.status_code == 200 and set(body) == {"result", "time"}
    inner = body["result"]
    assert set(inner) == {"result", "result_error", "result_total", "result_next", "result_time"}
    assert inner["result"]["me"]["ID"] == "1" and inner["result"]["n"] == []
    assert inner["result_error"] == [] and inner["result_next"] == []
    assert inner["result_total"] == {"n": 0}
    assert set(inner["result_time"]["me"]) >= {"start", "finish", "duration", "operating"}


def test_batch_references_errors_and_halt(installed):
    srv, answer, _ = installed
    token = answer["access_token"]
    cmd = {"add": "crm.contact.add?fields[NAME]=Ольга&fields[PHONE][0][VALUE]=%2B7%20900%20000-00-01",
           "get": "crm.contact.get?id=$result[add]",
           "bad": "crm.contact.get?id=999",
           "again": "crm.contact.list?filter[ID]=$result[get][ID]&select[]=NAME&select[]=PHONE"}
    inner = rest(srv, "batch", token, halt=0, cmd=cmd).json()["result"]
    assert inner["result"]["add"] == 1
    assert inner["result"]["get"]["NAME"] == "Ольга"
    assert inner["result"]["get"]["PHONE"][0]["VALUE"] == "+7 900 000-00-01"
    assert inner["result_error"] == {"bad": {"error": "", "error_description": "Not found"}}
    assert inner["result"]["again"][0]["NAME"] == "Ольга"
    halted = rest(srv, "batch", token, halt=1, cmd={"a": "crm.contact.get?id=999", "b": "user.current"}).json()
    assert halted["result"]["result"] == [] and list(halted["result"]["result_error"]) == ["a"]
    # sub-commands are logged, flagged in_batch, and the outer batch too
    logged = [(c["method"], c["in_batch"]) for c in srv.portal.calls[-2:]]
    assert logged == [("crm.contact.get", True), ("batch", False)]


def test_batch_form_encoded_and_list_cmd_gives_list_results(installed):
    srv, answer, _ = installed
    r = requests.post(f"{srv.url}/rest/batch.json", data={
        "auth": answer["access_token"], "halt": "0", "cmd[0]": "user.current", "cmd[1]": "app.info"})
    inner = r.json()["result"]
    assert isinstance(inner["result"], list) and inner["result"][0]["ID"] == "1"
    assert inner["result"][1]["INSTALLED"] is True


# doc: settings/how-to-call-rest-api/batch.md (50 commands at most)
def test_batch_over_50_commands_fails_per_command_with_http_200(installed):
    srv, answer, _ = installed
    cmd = {f"c{i}": f"crm.contact.add?fields[NAME]=n{i}" for i in range(55)}
    r = rest(srv, "batch", answer["access_token"], cmd=cmd)
    assert r.status_code == 200
    inner = r.json()["result"]
    assert len(inner["result"]) == 50
    assert sorted(inner["result_error"]) == [f"c{i}" for i in range(50, 55)]
    assert inner["result_error"]["c50"] == {"error": "ERROR_BATCH_LENGTH_EXCEEDED",
                                            "error_description": "Max batch length exceeded"}
    assert len(srv.portal.records["contact"]) == 50


def test_nested_batch_is_not_allowed(installed):
    srv, answer, _ = installed
    inner = rest(srv, "batch", answer["access_token"], cmd={"x": "batch?cmd[a]=user.current"}).json()["result"]
    assert inner["result_error"]["x"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"
