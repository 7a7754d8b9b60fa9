"""The worker against the devportal over many simulated days, with the pure rules as the oracle."""
from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from tests.worker.simulation import Scenario, strip_tag


def compare(sc: Scenario, run_days=None) -> list[str]:
    """Every client's final status (service table and portal) and every transition versus
    `rules.simulate`; returns the differences, at most 20."""
    problems = []
    expected = sc.expected(run_days)
    steps = sc.recorded_steps()
    rows = sc.final_rows()
    portal = sc.portal_statuses()
    for key, (entity, oracle_steps) in sorted(expected.items()):
        row = rows.get(key)
        got = row.status if row is not None else None
        if got != entity.status or portal[key] != entity.status:
            problems.append(f"{key}: table {got}, portal {portal[key]}, rules {entity.status}")
        elif steps.get(key, []) != oracle_steps:
            problems.append(f"{key}: steps {steps.get(key)} != rules {oracle_steps}")
        if len(problems) >= 20:
            break
    return problems


def check_notifications(sc: Scenario) -> None:
    sent = [strip_tag(n["tag"]) for n in sc.sent_notifications()]
    duplicates = [k for k, n in Counter(sent).items() if n > 1]
    assert duplicates == [], duplicates[:10]
    texts = {strip_tag(n["tag"]): n["message"] for n in sc.sent_notifications()}
    digests = {k: v for k, v in texts.items() if k.startswith("digest:")}
    assert set(digests) == set(sc.expected_messages)
    wrong = [k for k in digests if digests[k] != sc.expected_messages[k]]
    assert wrong == [], (wrong[:3], [digests[k] for k in wrong[:1]], [sc.expected_messages[k] for k in wrong[:1]])
    # Every revert told the manager at once, once.
    reverts = Counter((k.split(":")[1], int(k.split(":")[2])) for k in texts if k.startswith("revert:"))
    expected = Counter(key for key, _ in sc.expected_reverts)
    assert reverts == expected
    assert all(log.status == "sent" for log in sc.notification_log())


@pytest.mark.slow
def test_sixty_days_every_transition_equals_the_rules(harness):
    started = time.monotonic()
    sc = Scenario(harness, contacts=2000, companies=300, days=60)
    sc.setup(require_call=True, call_lookback_days=3)
    sc.run()
    assert compare(sc) == []
    check_notifications(sc)
    assert len(sc.expected_reverts) > 10
    assert len(sc.expected_messages) > 100
    print(f"60 days: {time.monotonic() - started:.1f}s, {harness.dp.http_requests} REST requests")


@pytest.mark.slow
def test_sixty_days_with_runs_skipped_on_random_days_end_in_the_same_statuses(harness):
    sc = Scenario(harness, contacts=1000, companies=150, days=60, seed=12, track_digests=False)
    rng = random.Random(5)
    sc.run_days = {d for d in sc.all_days if rng.random() < 0.6}
    sc.setup(require_call=True, call_lookback_days=3)
    sc.run()
    # The same statuses as if the run had happened every day (and the same steps: the rules are
    # schedule-independent, and so is the worker).
    assert compare(sc, run_days=sc.all_days) == []
    sent = Counter(strip_tag(n["tag"]) for n in sc.sent_notifications())
    assert sent and max(sent.values()) == 1
