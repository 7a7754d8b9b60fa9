"""A many-day simulation of a portal's life against the devportal, with the pure rules as the
oracle: managers call, change statuses (with and without a call), open and close deals, add
clients; the worker drains events and runs the daily run; the clock moves day by day.

The managers' actions depend only on the random seed and the day, never on what the worker did,
so two runs of a scenario (every day, or with skipped runs) see exactly the same actions.
"""
from __future__ import annotations

import datetime as dt
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select

from addon import rules
from addon.engine import STATUS_FIELD, entity_title
from addon.models import NotificationLog, StatusHistory, TrackedEntity
from tests.worker.conftest import DAY0, Harness, at

STATUS_CHOICES = ("NEW", "HOT", "WARM", "COLD", "LOST")
INITIAL_WEIGHTS = (("NEW", 3), ("HOT", 4), ("WARM", 4), ("COLD", 3), ("LOST", 1), (None, 1))

Key = tuple[str, int]


@dataclass
class Scenario:
    h: Harness
    contacts: int = 2000
    companies: int = 300
    days: int = 60
    seed: int = 11
    calls_per_day: int = 12
    manual_per_day: int = 8
    deals_opened_per_day: int = 3
    deals_closed_per_day: int = 2
    new_per_day: int = 1
    run_days: set[dt.date] | None = None  # None: every day
    track_digests: bool = True
    # filled while running
    initial: dict[Key, rules.Entity] = field(default_factory=dict)
    events: dict[Key, list] = field(default_factory=lambda: defaultdict(list))
    created: dict[Key, dt.date] = field(default_factory=dict)
    open_deals: dict[int, Key] = field(default_factory=dict)
    open_count: dict[Key, int] = field(default_factory=lambda: defaultdict(int))
    expected_messages: dict[str, str] = field(default_factory=dict)  # digest key -> text
    expected_reverts: list[tuple[Key, dt.date]] = field(default_factory=list)
    oracle: dict[Key, rules.Entity] = field(default_factory=dict)

    @property
    def all_days(self) -> list[dt.date]:
        return [DAY0 + dt.timedelta(days=i) for i in range(self.days)]

    @property
    def last_day(self) -> dt.date:
        return self.all_days[-1]

    def runs_on(self, day: dt.date) -> bool:
        return self.run_days is None or day in self.run_days

    # --- setup ---------------------------------------------------------------------------
    def setup(self, **options) -> None:
        h = self.h
        seeded = h.dp.seed(departments=3, managers=12, contacts=self.contacts, companies=self.companies,
                           months_of_calls=1, calls_per_client=0.5, deals=0, rng_seed=self.seed)
        self.managers = seeded["manager_ids"]
        h.install(**options)
        self.opts = h.options()
        rng = random.Random(self.seed)
        codes = [c for c, w in INITIAL_WEIGHTS for _ in range(w)]
        for kind, n in (("contact", self.contacts), ("company", self.companies)):
            for eid in range(1, n + 1):
                code = rng.choice(codes)
                if code is not None:
                    h.put_status(kind, eid, code, at(DAY0 - dt.timedelta(days=rng.randint(0, 80)), 10))
        h.reindex(at(DAY0, 8))
        with h.services.sessions() as s:
            for row in s.scalars(select(TrackedEntity).where(TrackedEntity.portal_id == h.portal_id)):
                if row.status is not None:
                    self.initial[(row.entity_type, row.entity_id)] = rules.entity_of(row)
        self.oracle = dict(self.initial)
        self.org = rules.Org.from_rows(h.dp.departments.values(), h.dp.users.values())
        self.names = {int(u["ID"]): f"{u['NAME']} {u['LAST_NAME']}".strip() for u in h.dp.users.values()}
        self.prev_run: dt.date | None = None

    def tracked(self) -> list[Key]:
        return sorted(set(self.initial) | set(self.created))

    def manager_of(self, key: Key) -> int:
        return int(self.h.dp.records[key[0]][key[1]]["ASSIGNED_BY_ID"])

    def title_of(self, key: Key) -> str:
        return entity_title(key[0], self.h.dp.records[key[0]][key[1]])

    # --- one day -------------------------------------------------------------------------
    def run(self) -> None:
        for day in self.all_days:
            self.day(day)

    def day(self, day: dt.date) -> None:
        h = self.h
        if self.runs_on(day):
            h.clock(at(day, 9))
            h.drain(at(day, 9))
            h.daily(at(day, 9))
            if self.track_digests:
                self._oracle_run(day)
        h.clock(at(day, 12))
        self._act(day)
        h.clock(at(day, 18))
        h.drain(at(day, 18))

    def _act(self, day: dt.date) -> None:
        h = self.h
        rng = random.Random(self.seed * 1000 + (day - DAY0).days)
        keys = self.tracked()
        touched: set[Key] = set()
        # Deals first in the plan (the worker applies a client's calls, then deals, then the card).
        todo: dict[Key, list] = defaultdict(list)
        closable = [d for d, k in sorted(self.open_deals.items())]
        rng.shuffle(closable)
        for deal_id in closable[:self.deals_closed_per_day]:
            key = self.open_deals[deal_id]
            if key in touched:
                continue
            touched.add(key)
            todo[key].append(("close", deal_id, rng.random() < 0.5))
        for key in rng.sample(keys, self.deals_opened_per_day):
            if key in touched:
                continue
            touched.add(key)
            todo[key].append(("open",))
        manual = [k for k in rng.sample(keys, self.manual_per_day * 2) if k not in touched][:self.manual_per_day]
        calls = rng.sample(keys, self.calls_per_day)
        for i, key in enumerate(manual):
            if i % 2 == 0:
                calls.append(key)  # half the changes come with a call the same day
        for key in calls:
            h.dp.act_call(key[0], key[1], user_id=self.manager_of(key))
            self.events[key].append((day, "call", {}))
        for key, actions in sorted(todo.items()):
            for action in actions:
                if action[0] == "open":
                    field_name = "CONTACT_ID" if key[0] == "contact" else "COMPANY_ID"
                    deal_id = h.dp.act_add("deal", {"TITLE": "Сделка", field_name: key[1], "STAGE_ID": "NEW"},
                                           user_id=self.manager_of(key))
                    self.open_deals[deal_id] = key
                    self.open_count[key] += 1
                    self.events[key].append((day, "deal", {"open_deals": self.open_count[key], "outcome": None}))
                else:
                    _, deal_id, won = action
                    h.dp.act_close_deal(deal_id, won=won, user_id=self.manager_of(key))
                    del self.open_deals[deal_id]
                    self.open_count[key] -= 1
                    self.events[key].append((day, "deal", {"open_deals": self.open_count[key],
                                                           "outcome": "won" if won else "lost"}))
        for key in manual:
            code = rng.choice(STATUS_CHOICES)
            h.manager_sets(key[0], key[1], code, user_id=self.manager_of(key))
            self.events[key].append((day, "manual", {"status": code}))
        for _ in range(self.new_per_day):
            manager = rng.choice(self.managers)
            cid = h.dp.act_add("contact", {"NAME": "Клиент", "LAST_NAME": f"Новый{day.toordinal()}",
                                           "ASSIGNED_BY_ID": manager}, user_id=manager)
            key = ("contact", cid)
            self.created[key] = day
            self.events[key].append((day, "new", {}))
        if self.track_digests:
            self._oracle_events(day)

    # --- the incremental oracle (for the digests) -------------------------------------------
    def _oracle_run(self, day: dt.date) -> None:
        items: list[rules.DigestItem] = []
        cursor = 0
        for key in self.tracked():
            e = self.oracle.get(key)
            if e is None:
                continue
            e, steps = rules.decay_through(self.opts, e, day)
            self.oracle[key] = e
            manager = self.manager_of(key)
            plan = None
            if steps and steps[-1].to_status == "LOST":
                plan = rules.loss_plan(self.opts, manager, self.org, cursor)
                cursor = plan.next_pool_cursor
            items += rules.items_for_steps(self.opts, steps, entity_type=key[0], entity_id=key[1],
                                           title=self.title_of(key), manager_id=manager, plan=plan)
            w = rules.warning_item(self.opts, e, day, entity_type=key[0], entity_id=key[1], title=self.title_of(key),
                                   manager_id=manager, last_run_on=self.prev_run)
            if w is not None:
                items.append(w)
        for m in rules.build_messages(self.opts, day, items, self.names):
            self.expected_messages[m.key] = m.text
        self.prev_run = day

    def _oracle_events(self, day: dt.date) -> None:
        for key, evs in self.events.items():
            for d, kind, data in evs:
                if d != day:
                    continue
                e = self.oracle.get(key, rules.Entity(status=None, status_set_on=None))
                e, steps = rules.apply_event(self.opts, e, d, kind, data)
                self.oracle[key] = e
                if any(s.cause == "revert" for s in steps):
                    self.expected_reverts.append((key, d))

    # --- checks ----------------------------------------------------------------------------
    def expected(self, run_days=None) -> dict[Key, tuple[rules.Entity, list[rules.Step]]]:
        run_days = self.all_days if run_days is None else run_days
        out = {}
        for key in self.tracked():
            initial = self.initial.get(key, rules.Entity(status=None, status_set_on=None))
            out[key] = rules.simulate(self.opts, initial, self.events.get(key, []), run_days, self.last_day)
        return out

    def recorded_steps(self) -> dict[Key, list[rules.Step]]:
        out: dict[Key, list[rules.Step]] = defaultdict(list)
        with self.h.services.sessions() as s:
            for ln in s.scalars(select(StatusHistory).where(StatusHistory.portal_id == self.h.portal_id,
                                                            StatusHistory.cause != "index")
                                .order_by(StatusHistory.id)):
                out[(ln.entity_type, ln.entity_id)].append(rules.Step(ln.from_status, ln.to_status, ln.changed_on,
                                                                      ln.cause))
        return out

    def final_rows(self) -> dict[Key, TrackedEntity]:
        with self.h.services.sessions() as s:
            return {(r.entity_type, r.entity_id): r for r in s.scalars(
                select(TrackedEntity).where(TrackedEntity.portal_id == self.h.portal_id))}

    def portal_statuses(self) -> dict[Key, str | None]:
        return {key: self.h.portal_status(*key) for key in self.tracked()}

    def sent_notifications(self) -> list[dict]:
        return list(self.h.dp.notifications)

    def notification_log(self) -> list[NotificationLog]:
        with self.h.services.sessions() as s:
            return list(s.scalars(select(NotificationLog).where(NotificationLog.portal_id == self.h.portal_id)))


def strip_tag(tag: str) -> str:
    """The devportal stores TAG as MP|<md5(client_id)[:5]>|<our key>."""
    return tag.split("|", 2)[2] if tag and tag.startswith("MP|") else tag


def prepare(h, seed=21, contacts=500, companies=50):
    """A seeded, installed, indexed portal whose clients are due at random on DAY0."""
    h.dp.seed(departments=3, managers=9, contacts=contacts, companies=companies, months_of_calls=0, deals=0, rng_seed=seed)
    h.install()
    rng = random.Random(seed)
    for kind, n in (("contact", contacts), ("company", companies)):
        for eid in range(1, n + 1):
            code = rng.choice(("NEW", "HOT", "WARM", "COLD"))
            h.put_status(kind, eid, code, at(DAY0 - dt.timedelta(days=rng.randint(0, 100)), 10))
    h.reindex(at(DAY0, 8))
    h.clock(at(DAY0, 9, 30))


def outcome(h):
    statuses = {(k, i): h.portal_status(k, i) for k in ("contact", "company") for i in h.dp.records[k]}
    notes = {n["tag"].split("|", 2)[2]: n["message"] for n in h.dp.notifications}
    return statuses, notes


def writes_per_client(h) -> Counter:
    return Counter((c["method"], str(c["params"].get("id"))) for c in h.calls(in_batch=True)
                   if c["method"].endswith(".update") and STATUS_FIELD in str(c["params"]))


def worker_env(services) -> dict:
    s = services.settings
    return {**os.environ, "DATABASE_URL": s.database_url, "NEZABYT_SECRET_KEY": s.secret_key,
            "NEZABYT_CLIENT_ID": s.client_id, "NEZABYT_CLIENT_SECRET": s.client_secret,
            "NEZABYT_PUBLIC_URL": s.public_url, "NEZABYT_PORTAL_RPS": "1000", "NEZABYT_PORTAL_BURST": "1000"}
