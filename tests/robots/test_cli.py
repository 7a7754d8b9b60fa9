"""`nezabyt robots`: the admin marks absences and reads the ranking and close reasons from the shell."""
import datetime as dt

from click.testing import CliRunner

from addon.cli import main
from addon.db import unit_of_work
from addon.robots.store import absent_users, add_record
from tests.factories import make_portal


def test_absent_ranking_and_reasons(services, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", services.settings.database_url)
    monkeypatch.setenv("NEZABYT_SECRET_KEY", services.settings.secret_key)
    with unit_of_work(services.sessions) as s:
        pid = make_portal(s, member_id="m-cli", domain="cli.bitrix24.test").id
        at = dt.datetime(2026, 11, 5, 12)
        for doc, user in (("LEAD_1", 5), ("LEAD_2", 5), ("LEAD_3", 6)):
            add_record(s, pid, "assigned", doc, at, user)
        add_record(s, pid, "reached", "LEAD_1", at, 5, "PROCESSED")
        add_record(s, pid, "close_reason", "DEAL_9", at, 5, "Дорого")
    runner = CliRunner()
    answer = runner.invoke(main, ["robots", "absent", "--portal", "cli.bitrix24.test", "--user", "7"])
    assert answer.exit_code == 0, answer.output
    assert "7" in answer.output
    with services.sessions() as s:
        assert absent_users(s, pid) == {7}
    assert runner.invoke(main, ["robots", "absent", "--portal", "m-cli", "--user", "7", "--back"]).exit_code == 0
    with services.sessions() as s:
        assert absent_users(s, pid) == set()
    answer = runner.invoke(main, ["robots", "ranking", "--portal", "m-cli", "--month", "2026-11"])
    assert answer.output.splitlines() == ["user 5: 1/2 = 50%", "user 6: 0/1 = 0%"]
    answer = runner.invoke(main, ["robots", "reasons", "--portal", "m-cli"])
    assert answer.output.strip() == "1\tДорого"
    assert runner.invoke(main, ["robots", "absent", "--portal", "nope", "--user", "1"]).exit_code != 0
