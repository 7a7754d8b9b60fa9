"""The worker's handling of a struggling portal, with a stand-in client that answers like PortalClient."""
import datetime as dt

from sqlalchemy import select

from addon.db import unit_of_work
from addon.models import StoredEvent
from addon.bitrix.batch import BatchResult
from addon.bitrix.errors import PortalError
from addon.robots.runner import process_robot_calls
from tests.factories import make_event, make_portal, make_robot_call


class StrugglingPortal:
    """get_many answers 503 for every item, as PortalClient does when the portal is overloaded."""

    def __init__(self):
        self.batches = []

    def get_many(self, method, ids, id_param="id"):
        return {int(i): PortalError("SERVER_UNAVAILABLE", "503 storm", 503, method) for i in ids}

    def batch(self, commands, halt=False):
        self.batches.append(commands)
        return BatchResult()


class GonePortal(StrugglingPortal):
    def get_many(self, method, ids, id_param="id"):
        return {int(i): PortalError("", "Not found", None, method) for i in ids}


def store_call(services) -> int:
    with unit_of_work(services.sessions) as s:
        portal = make_portal(s)
        make_robot_call(s, portal.id, "nezabyt_distribute_lead", "LEAD_7", "tok", properties={"users": ["user_5"]},
                        dedupe_key="robot:unit")
        return portal.id


def test_an_overloaded_portal_leaves_the_call_for_later(services):
    pid = store_call(services)
    now = dt.datetime(2026, 11, 2, 9, 0)
    assert process_robot_calls(services, pid, now, client=StrugglingPortal()) == 0
    with services.sessions() as s:
        event = s.scalars(select(StoredEvent)).one()
        # a passing refusal spends none of the call's attempts: it waits for the portal
        assert event.processed_at is None and event.attempts == 0 and "503" in event.error


def test_a_deleted_item_is_answered_and_the_call_done(services):
    pid = store_call(services)
    client = GonePortal()
    assert process_robot_calls(services, pid, dt.datetime(2026, 11, 2, 9, 0), client=client) == 1
    replies = [c for batch in client.batches for c in batch.values() if c[0] == "bizproc.event.send"]
    assert replies == [("bizproc.event.send", {"event_token": "tok", "return_values": {},
                                               "log_message": "the item no longer exists"})]


class FlakySender(StrugglingPortal):
    """Reads work; the first batch of writes meets a 503, later ones go through."""

    def __init__(self):
        super().__init__()
        self.fail = True

    def get_many(self, method, ids, id_param="id"):
        return {int(i): {"ID": str(i), "TITLE": "Лид", "STATUS_ID": "NEW"} for i in ids}

    def call_envelope(self, method, params=None):
        return {"result": [{"ID": "5", "ACTIVE": True, "NAME": "Иван", "UF_DEPARTMENT": [1]}]}

    def batch(self, commands, halt=False):
        self.batches.append(commands)
        if self.fail:
            self.fail = False
            return BatchResult(errors={k: PortalError("QUERY_LIMIT_EXCEEDED", "", 503, m) for k, (m, _) in
                                       commands.items()})
        return BatchResult(results={k: True for k in commands})


def test_writes_cut_short_by_the_portal_are_sent_on_the_next_pass(services):
    pid = store_call(services)
    client = FlakySender()
    now = dt.datetime(2026, 11, 2, 9, 0)
    assert process_robot_calls(services, pid, now, client=client) == 1
    sent_first = len(client.batches)
    assert process_robot_calls(services, pid, now, client=client) == 0  # no new call, but the rest goes out
    methods = [m for batch in client.batches[sent_first:] for (m, _) in batch.values()]
    assert "crm.lead.update" in methods and "bizproc.event.send" in methods
    assert process_robot_calls(services, pid, now, client=client) == 0
    assert len([b for b in client.batches if any(m == "crm.lead.update" for m, _ in b.values())]) == 2


def test_the_robots_pass_visits_only_portals_with_robot_work(services):
    """robots_all runs every minute: it visits the portals with stored calls or unsent robot writes,
    found in one query, not every active portal (a thousand portals would be a thousand leases)."""
    from addon.models import Lease, Outbox
    from addon.robots.run import ROBOT_PENDING
    from addon.robots.runner import portals_with_robot_work
    from worker.jobs import robots_all

    calling = store_call(services)
    with unit_of_work(services.sessions) as s:
        quiet, unsent = make_portal(s).id, make_portal(s).id
        make_event(s, quiet)  # a plain event is the event job's, not the robots'
        s.add(Outbox(portal_id=unsent, key="robot:left", method="bizproc.event.send", params={}, status=ROBOT_PENDING))
    assert portals_with_robot_work(services) == sorted([calling, unsent])
    robots_all(services, dt.datetime(2026, 3, 2, 9))
    with services.sessions() as s:
        visited = set(s.scalars(select(Lease.portal_id).where(Lease.kind == "robots")))
    assert visited == {calling, unsent}
