"""What happens when a client is lost (DESIGN §1 "LOST"): open it to everyone, transfer it to a
user, a round-robin pool or the manager's supervisor, and who is told. Pure: the company's
structure (departments, heads, active users) is passed in as an `Org`."""
from __future__ import annotations

from dataclasses import dataclass, field

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
