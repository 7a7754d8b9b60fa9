"""What happens when a client is lost (DESIGN §1 "LOST"): open it to everyone, transfer it to a
user, a round-robin pool or the manager's supervisor, and who is told. Pure: the company's
structure (departments, heads, active users) is passed in as an `Org`."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from addon.options import Options


@dataclass(frozen=True)
class Department:
    id: int
    parent_id: int | None
    head_id: int | None


@dataclass
class Org:
    """The portal's structure as `department.get` and `user.get` describe it."""

    departments: dict[int, Department] = field(default_factory=dict)
    user_departments: dict[int, list[int]] = field(default_factory=dict)  # user → UF_DEPARTMENT
    active_users: set[int] = field(default_factory=set)

    @classmethod
    def from_rows(cls, departments: Iterable[dict[str, Any]], users: Iterable[dict[str, Any]]) -> "Org":
        """From the rows of `department.get` ({ID, PARENT, UF_HEAD}) and `user.get`
        ({ID, ACTIVE, UF_DEPARTMENT}); ids arrive as strings, an absent head as "0" or ""."""
        depts = {}
        for row in departments:
            dept_id = _id(row.get("ID"))
            if dept_id is not None:
                depts[dept_id] = Department(dept_id, _id(row.get("PARENT")), _id(row.get("UF_HEAD")))
        user_departments: dict[int, list[int]] = {}
        active: set[int] = set()
        for row in users:
            user_id = _id(row.get("ID"))
            if user_id is None:
                continue
            raw = row.get("UF_DEPARTMENT") or []
            raw = raw if isinstance(raw, (list, tuple)) else [raw]
            user_departments[user_id] = [i for i in (_id(v) for v in raw) if i is not None]
            if row.get("ACTIVE") in (True, "Y", "true", "1", 1):
                active.add(user_id)
        return cls(departments=depts, user_departments=user_departments, active_users=active)


def _id(value: Any) -> int | None:
    try:
        n = int(value)
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


@dataclass(frozen=True)
class LossPlan:
    open_to_all: bool
    new_assignee: int | None  # None: the client stays with its manager
    notify_manager: bool
    supervisor_id: int | None  # the supervisor to tell; None: nobody (off, or none found)
    next_pool_cursor: int


def find_supervisor(org: Org, user_id: int | None) -> int | None:
    """The head of the user's department; when the user heads it (or the head is missing or
    inactive), the head of the parent department, walking up to the root. A user in several
    departments: the first one that yields a supervisor, in the order the portal lists them."""
    if user_id is None:
        return None
    for dept_id in org.user_departments.get(user_id, []):
        seen: set[int] = set()
        dept = org.departments.get(dept_id)
        while dept is not None and dept.id not in seen:  # a cycle in bad data must not hang the run
            seen.add(dept.id)
            head = dept.head_id
            if head is not None and head != user_id and head in org.active_users:
                return head
            dept = org.departments.get(dept.parent_id) if dept.parent_id is not None else None
    return None


def next_in_pool(pool: tuple[int, ...] | list[int], cursor: int, org: Org,
                 exclude: int | None) -> tuple[int | None, int]:
    """Round robin: the first active pool member at or after `cursor` other than `exclude`;
    returns (member, the cursor for the next loss). Nobody eligible: (None, cursor unchanged)."""
    n = len(pool)
    if n == 0:
        return None, cursor
    start = cursor % n
    for k in range(n):
        i = (start + k) % n
        member = pool[i]
        if member != exclude and member in org.active_users:
            return member, (i + 1) % n
    return None, cursor


def loss_plan(opts: Options, manager_id: int | None, org: Org, pool_cursor: int = 0) -> LossPlan:
    """The actions for one client of `manager_id` that has just become LOST.

    transfer "user": to `opts.transfer_user_id` unless that is the manager or inactive;
    "pool": round robin from `pool_cursor`, skipping inactive users and the manager;
    "supervisor": to `find_supervisor`. The supervisor is told when notify_supervisor_on_loss."""
    supervisor = find_supervisor(org, manager_id)
    assignee: int | None = None
    cursor = pool_cursor
    if opts.transfer_mode == "user":
        uid = opts.transfer_user_id
        if uid is not None and uid != manager_id and uid in org.active_users:
            assignee = uid
    elif opts.transfer_mode == "pool":
        assignee, cursor = next_in_pool(opts.transfer_pool, pool_cursor, org, manager_id)
    elif opts.transfer_mode == "supervisor":
        assignee = supervisor
    return LossPlan(
        open_to_all=opts.open_to_all_on_loss,
        new_assignee=assignee,
        notify_manager=opts.notify_manager_on_loss and manager_id is not None,
        supervisor_id=supervisor if opts.notify_supervisor_on_loss else None,
        next_pool_cursor=cursor,
    )
