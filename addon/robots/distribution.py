"""Handing an item to the next manager of a pool, shared by `distribute` and `take_in_work`: the pool
from the robot's properties, the portal's active and absent users, the open loads or the monthly
ranking, and the pool's cursor, row-locked so two workers never hand out the same turn."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from addon.robots import logic
from addon.robots.calls import prop_list, prop_str, prop_users
from addon.robots.store import absent_users, get_state, put_state, ranking_weights_for

if TYPE_CHECKING:  # the web's receiver reads the robots' registry; the portal client loads only in the worker
    from addon.robots.run import Run


def pool_of(run: Run, props: dict) -> list[int]:
    """The pool: the listed users, then the members of the listed departments (by ID)."""
    pool = prop_users(props.get("users"))
    departments = {int(d) for d in prop_list(props.get("departments")) if d.isdigit()}
    if departments:
        for user_id, row in sorted(run.users().items()):
            if departments & {int(d) for d in (row.get("UF_DEPARTMENT") or [])}:
                pool.append(user_id)
    return list(dict.fromkeys(pool))


def open_loads(run: Run, document_type: str, users: list[int]) -> dict[int, int]:
    """Each user's open items of this type: one batch of counting list calls."""
    flt = {"CLOSED": "N"} if document_type == "deal" else {"STATUS_SEMANTIC_ID": "P"}
    commands = {str(u): (f"crm.{document_type}.list", {"filter": {**flt, "ASSIGNED_BY_ID": u}, "select": ["ID"]})
                for u in users}
    answer = run.client.batch(commands)
    loads = {}
    for u in users:
        total = answer.total.get(str(u))
        if total is None:
            rows = answer.results.get(str(u)) or []
            total = len(rows)
        loads[u] = int(total)
    return loads


def choose_manager(run: Run, document_type: str, props: dict, exclude: Iterable[int] = ()) -> int | None:
    """Pick the next manager of the pool and move the pool's cursor (row-locked, so two workers never
    hand out the same turn)."""
    mode = prop_str(props.get("mode")) or "round_robin"
    if mode not in logic.MODES:
        mode = "round_robin"
    # Portal reads first: the pool's row lock (and, on SQLite, the write lock) is held only briefly.
    pool = pool_of(run, props)
    absent = set(prop_users(props.get("absent"))) | absent_users(run.session, run.portal_id)
    active = set(run.users())
    candidates = logic.eligible_managers(pool, active, absent, exclude)
    loads = open_loads(run, document_type, candidates) if mode == "least_loaded" and candidates else None
    weights = None
    if mode == "ranking":
        month = f"{run.local_now.year:04d}-{run.local_now.month:02d}"
        weights = ranking_weights_for(run.session, run.portal_id, month, run.ctx.tz, document_type)
    name = prop_str(props.get("pool")) or "default"
    key = f"pool:{document_type}:{name}"[:128]
    state = logic.PoolState.from_dict(get_state(run.session, run.portal_id, key, lock=True))
    chosen, new_state = logic.distribute(mode, pool, active, state, absent=absent, exclude=exclude,
                                         loads=loads, weights=weights)
    if chosen is not None:
        put_state(run.session, run.portal_id, key, new_state.to_dict())
    return chosen
