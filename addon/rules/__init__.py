"""The pure status rules of Nezabyt (DESIGN §1): the ladder, calls, manual changes, deals, loss
actions, digests and the reference simulation. No I/O, no clock: days are parameters."""
from .digest import (
    DIGEST_KINDS, DigestItem, Message, build_messages, entity_link, entity_url, feed_item,
    feed_text, format_date, item_key, item_text, items_for_steps, revert_item, template_preview,
    timeline_text, warning_item,
)
from .ladder import (
    CAUSES, Entity, Step, Verdict, apply_deals, apply_manual_change, base_date,
    check_manual_change, classify_change, dates, days_for, decay_through, due_date, entity_of,
    handle_manual_change, is_terminal, new_entity, next_status, normalize_status, record_call, reject_manual_change, revert_step,
    revert_target, row_values, rule_code, set_status, should_warn, warn_date,
)
from .loss import (
    Department, LossPlan, Org, find_supervisor, loss_plan, next_in_pool,
)
from .replay import Replay, late_call
from .simulation import (
    EVENT_KINDS, apply_event, simulate,
)

__all__ = [
    "CAUSES", "DIGEST_KINDS", "Department", "DigestItem", "EVENT_KINDS", "Entity", "LossPlan",
    "Message", "Org", "Replay", "Step", "Verdict", "apply_deals", "apply_event", "apply_manual_change",
    "base_date", "build_messages", "check_manual_change",
    "classify_change", "dates", "days_for", "decay_through", "due_date", "entity_link",
    "entity_of", "entity_url", "feed_item", "feed_text", "find_supervisor", "format_date", "handle_manual_change", "is_terminal", "item_key",
    "item_text", "items_for_steps", "late_call", "loss_plan", "new_entity", "next_in_pool", "next_status",
    "normalize_status", "record_call", "reject_manual_change", "revert_item", "revert_step", "revert_target",
    "row_values", "rule_code", "set_status", "should_warn", "simulate",
    "template_preview", "timeline_text", "warn_date", "warning_item",
]
