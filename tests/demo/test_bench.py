"""The benchmark suite checks itself: its arithmetic on the devportal's call log, its report, and
each scenario run end to end at a tiny size on SQLite (the real sizes run in bench/run_all.py)."""
from __future__ import annotations

import pytest

from bench.harness import rate_floor_seconds, rest_figures
from bench.run_all import render, status_mix_svg, verdict


def test_rest_figures_count_requests_commands_writes_and_the_floor():
    calls = [{"method": "batch"}] + [{"method": "crm.contact.update", "in_batch": True}] * 50 + \
        [{"method": "batch"}] + [{"method": "crm.contact.update", "in_batch": True}] * 20 + \
        [{"method": "im.notify.system.add", "in_batch": True}] * 2 + [{"method": "crm.contact.get", "in_batch": True}] + \
        [{"method": "department.get"}, {"method": "user.get", "error": "QUERY_LIMIT_EXCEEDED"}]
    f = rest_figures(calls)
    assert f["http_requests"] == 4
    assert f["commands"] == 50 + 20 + 2 + 1 + 2
    assert f["writes"] == 72 and f["floor"] == 2
    assert f["errors"] == 1
    assert f["by_method"] == {"batch": 2, "department.get": 1, "user.get": 1}


def test_rate_floor_and_verdicts():
    assert rate_floor_seconds(40) == 0.0
    assert rate_floor_seconds(250) == 100.0
    assert verdict(20, 25, at_most=True) == "met"
    assert verdict(30, 25, at_most=True) == "**missed by 20%**"
    assert verdict(500, 1000, at_most=False) == "**missed by 50%**"


def test_status_mix_chart_has_a_bar_per_day_and_a_legend():
    report = {"first_day": "2026-03-01", "last_day": "2026-03-03",
              "status_mix_at_start": {"HOT": 10, "COLD": 5},
              "status_mix_by_day": [{"HOT": 8, "WARM": 2, "COLD": 5}, {"HOT": 7, "WARM": 2, "COLD": 4, "LOST": 2}]}
    svg = status_mix_svg(report)
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert svg.count("<title>day 2:") == 6  # one segment per status, empty ones included
    assert "Пропал (LOST)" in svg and "day 2: Пропал 2" in svg
    assert status_mix_svg({"status_mix_by_day": []}) == ""


def test_report_says_by_how_much_a_goal_is_missed():
    results = {"daily_run": {"http_requests": 204, "calls_floor": 201, "calls_ratio": 1.015, "run_seconds": 106.6,
                             "rate_floor_seconds": 77.0, "time_ratio": 1.384, "plan_seconds": 18.3,
                             "send_seconds": 86.7, "pace_floor_seconds": 88.3, "worker_maxrss_mb": 120.0,
                             "add_on_pace": {"rps": 1.8, "burst": 45}, "due": 10029, "tracked": 100000,
                             "decayed": 10029, "writes_sent": 10029, "messages_sent": 13, "writes": 10042,
                             "by_method": {"batch": 202}, "rest_errors": 0, "process_seconds": 107.4,
                             "memory_method": "getrusage", "database": "PostgreSQL"},
               "events_burst": {"error": "exit 1: boom"}}
    text = render(results, {"nproc": "2", "free_h": "Mem: 23Gi"}, __import__("datetime").datetime(2026, 11, 22),
                  600.0, quick=False)
    assert "| 204 / 201 = 1.015x | ≤ 1.02x | met |" in text
    assert "**missed by 26%**" in text and "1.38x the rate-limit floor" in text
    assert "Worker peak memory" not in text.split("## Where")[1]  # 120 MB is within the goal
    assert "`events_burst`: exit 1: boom" in text


@pytest.mark.slow
def test_events_burst_bench_at_a_tiny_size(tmp_path):
    from bench.events_burst import run

    r = run(f"sqlite:///{tmp_path / 'b.sqlite3'}", events=60, contacts=120)
    assert r["events_stored"] == r["events_processed"] == 60 and r["events_failed"] == 0
    assert 1 <= r["ours_http_requests"] <= 3
    assert r["naive_http_requests"] == 60


@pytest.mark.slow
def test_bulkload_bench_at_a_tiny_size(tmp_path):
    from bench.bulkload import run

    r = run(f"sqlite:///{tmp_path / 'b.sqlite3'}", rows=230)
    assert r["applied"] == r["in_portal"] == r["tracked"] == 230 and r["lost"] == 0
    assert r["http_requests"] == r["calls_floor"] == 5


@pytest.mark.slow
def test_daily_run_bench_at_a_tiny_size(tmp_path):
    from bench.daily_run import run

    r = run(f"sqlite:///{tmp_path / 'b.sqlite3'}", contacts=600)
    assert r["due"] > 0 and r["decayed"] == r["due"] == r["writes_sent"]
    assert r["calls_floor"] <= r["http_requests"] <= r["calls_floor"] + 3  # + department.get, user.get
    assert r["rest_errors"] == 0 and r["worker_maxrss_mb"] > 10
