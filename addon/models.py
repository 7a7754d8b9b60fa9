"""The storage schema (SQLAlchemy 2 declarative models); Alembic migrations mirror it."""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def naive_utc(moment: dt.datetime) -> dt.datetime:
    """How instants are stored: naive UTC (an aware moment converted, a naive one taken as UTC)."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None)


# Portal status values
PORTAL_ACTIVE = "active"
PORTAL_NEEDS_REAUTH = "needs_reauth"
PORTAL_UNINSTALLED = "uninstalled"
# Stored by an install whose registration manifest is not applied yet (the worker leaves it alone).
PORTAL_INSTALLING = "installing"


class Portal(Base):
    """One installed Bitrix24 portal. Tokens are stored only encrypted (addon.crypto)."""

    __tablename__ = "portal"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[str] = mapped_column(String(64), unique=True)
    domain: Mapped[str] = mapped_column(String(255), index=True)
    client_endpoint: Mapped[str] = mapped_column(String(512))
    server_endpoint: Mapped[str] = mapped_column(String(512))
    application_token_enc: Mapped[str | None] = mapped_column(Text)
    access_token_enc: Mapped[str | None] = mapped_column(Text)
    refresh_token_enc: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    scope: Mapped[str] = mapped_column(String(1024), default="")
    status: Mapped[str] = mapped_column(String(32), default=PORTAL_ACTIVE)
    status_reason: Mapped[str | None] = mapped_column(Text)
    language: Mapped[str] = mapped_column(String(8), default="ru")
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")
    installed_by_user_id: Mapped[int | None] = mapped_column(Integer)
    installed_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    uninstalled_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # Reconcile watermarks: the newest DATE_MODIFY / LAST_UPDATED seen by a reconcile pass.
    entity_watermark: Mapped[dt.datetime | None] = mapped_column(DateTime)
    activity_watermark: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # A method parked after 429 OPERATION_TIME_LIMIT: {method: unix time it may run again}.
    parked_methods: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The app VERSION the portal last reported (ONAPPINSTALL/ONAPPUPDATE data, app.info) and the key
    # of the manifest applied under it ("<version>:<fingerprint>"): the same key skips the manifest.
    app_version: Mapped[str | None] = mapped_column(String(32))
    manifest_key: Mapped[str | None] = mapped_column(String(96))


class PortalSettings(Base):
    """Per-portal options (addon.options.Options as JSON), versioned so changes can re-date."""

    __tablename__ = "portal_settings"

    portal_id: Mapped[int] = mapped_column(ForeignKey("portal.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    # The version whose options every row's due and warning dates were computed under (set by a
    # full re-date, and on install when there are no rows yet). NULL or behind `version`: the next
    # daily run re-dates the service table before it scans it.
    dated_version: Mapped[int | None] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Enumeration list item IDs on the portal per entity type: {"contact": {"NEW": "41", ...}, ...}
    field_items: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    updated_by: Mapped[int | None] = mapped_column(Integer)


class TrackedEntity(Base):
    """The service table: one row per tracked contact or company."""

    __tablename__ = "tracked_entity"
    __table_args__ = (
        UniqueConstraint("portal_id", "entity_type", "entity_id", name="uq_tracked_entity_key"),
        Index("ix_tracked_entity_due", "portal_id", "due_on"),
        Index("ix_tracked_entity_warn", "portal_id", "warn_on"),
        Index("ix_tracked_entity_assigned", "portal_id", "assigned_by_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    portal_id: Mapped[int] = mapped_column(ForeignKey("portal.id", ondelete="CASCADE"))
    entity_type: Mapped[str] = mapped_column(String(16))  # contact | company
    entity_id: Mapped[int] = mapped_column(Integer)
    status: Mapped[str | None] = mapped_column(String(32))  # None = EMPTY (not tracked by the ladder)
    status_set_on: Mapped[dt.date | None] = mapped_column(Date)
    last_call_on: Mapped[dt.date | None] = mapped_column(Date)
    due_on: Mapped[dt.date | None] = mapped_column(Date)
    warn_on: Mapped[dt.date | None] = mapped_column(Date)
    assigned_by_id: Mapped[int | None] = mapped_column(Integer)
    previous_status: Mapped[str | None] = mapped_column(String(32))
    # The status before the first open deal moved the entity to IN_WORK (restored when the deal is lost).
    status_before_deal: Mapped[str | None] = mapped_column(String(32))
    open_deals: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(String(64))
    last_modified: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # What Nezabyt itself last wrote to the portal, to recognise the echo of its own write.
    written_status: Mapped[str | None] = mapped_column(String(32))
    written_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    title: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class StatusHistory(Base):
    """Every transition of a tracked entity: from, to, when, why, by whom."""

    __tablename__ = "status_history"
    __table_args__ = (Index("ix_status_history_entity", "portal_id", "entity_type", "entity_id", "id"),
                      Index("ix_status_history_day", "portal_id", "changed_on"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    portal_id: Mapped[int] = mapped_column(ForeignKey("portal.id", ondelete="CASCADE"))
    entity_type: Mapped[str] = mapped_column(String(16))
    entity_id: Mapped[int] = mapped_column(Integer)
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str | None] = mapped_column(String(32))
    changed_on: Mapped[dt.date] = mapped_column(Date)
    recorded_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    cause: Mapped[str] = mapped_column(String(16))
    by_user_id: Mapped[int | None] = mapped_column(Integer)
    assigned_by_id: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(Text)


class JournalChange(Base):
    """One client's change by a journal entry (a daily run's or a bulk load's JobRun): the status
    and the responsible before and after, and what the row's dating was before, so an undo puts
    back exactly what was there; and how the undo went for this client."""

    __tablename__ = "journal_change"
    __table_args__ = (Index("ix_journal_change_run", "job_run_id", "entity_type", "entity_id"),
                      Index("ix_journal_change_entity", "portal_id", "entity_type", "entity_id"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    portal_id: Mapped[int] = mapped_column(ForeignKey("portal.id", ondelete="CASCADE"))
    job_run_id: Mapped[int] = mapped_column(ForeignKey("job_run.id", ondelete="CASCADE"))
    entity_type: Mapped[str] = mapped_column(String(16))
    entity_id: Mapped[int] = mapped_column(Integer)
    old_status: Mapped[str | None] = mapped_column(String(32))
    new_status: Mapped[str | None] = mapped_column(String(32))
    old_status_set_on: Mapped[dt.date | None] = mapped_column(Date)
    old_previous_status: Mapped[str | None] = mapped_column(String(32))
    old_assigned_by_id: Mapped[int | None] = mapped_column(Integer)
    new_assigned_by_id: Mapped[int | None] = mapped_column(Integer)
    # None until an undo looks at it; then sending | undone | refused | failed (undo_note says why).
    undo_state: Mapped[str | None] = mapped_column(String(16))
    undo_note: Mapped[str | None] = mapped_column(Text)
    undo_run_id: Mapped[int | None] = mapped_column(Integer)


class StoredEvent(Base):
    """The inbox: every event and robot call, stored before it is acknowledged."""

    __tablename__ = "stored_event"
    __table_args__ = (
        UniqueConstraint("portal_id", "dedupe_key", name="uq_stored_event_dedupe"),
        Index("ix_stored_event_pending", "portal_id", "processed_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    portal_id: Mapped[int] = mapped_column(ForeignKey("portal.id", ondelete="CASCADE"))
    event_name: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str | None] = mapped_column(String(16))
    entity_id: Mapped[int | None] = mapped_column(Integer)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source: Mapped[str] = mapped_column(String(16), default="online")  # online | reconcile | robot
    dedupe_key: Mapped[str] = mapped_column(String(255))
    received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    processed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)


class NotificationLog(Base):
    """What was sent to whom; the unique key makes every message exactly-once."""

    __tablename__ = "notification_log"
    __table_args__ = (UniqueConstraint("portal_id", "key", name="uq_notification_log_key"),
                      Index("ix_notification_log_day", "portal_id", "day"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    portal_id: Mapped[int] = mapped_column(ForeignKey("portal.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))  # e.g. digest:<recipient>:<day>:<kind>
    recipient_id: Mapped[int] = mapped_column(Integer)
    day: Mapped[dt.date] = mapped_column(Date)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | sent | failed
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    error: Mapped[str | None] = mapped_column(Text)
    # Passes in which the portal refused this message alone for a passing reason (outbox.mark_answers).
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Outbox(Base):
    """Planned portal writes of a job: written before sending, marked when sent, so a rerun
    after a crash sends only what is left and never the same write twice."""

    __tablename__ = "outbox"
    __table_args__ = (UniqueConstraint("portal_id", "key", name="uq_outbox_key"),
                      Index("ix_outbox_pending", "portal_id", "status", "id"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    portal_id: Mapped[int] = mapped_column(ForeignKey("portal.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | sent | failed
    job_run_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    error: Mapped[str | None] = mapped_column(Text)
    # Passes in which the portal refused this write alone for a passing reason (outbox.mark_answers).
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class JobRun(Base):
    """A run of a job (daily run, reindex, import, reconcile), with progress for the UI."""

    __tablename__ = "job_run"
    __table_args__ = (Index("ix_job_run_portal_kind", "portal_id", "kind", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    portal_id: Mapped[int | None] = mapped_column(ForeignKey("portal.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str | None] = mapped_column(String(255), unique=True)  # e.g. daily:<portal>:<day>
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued|running|done|failed
    as_of: Mapped[dt.datetime | None] = mapped_column(DateTime)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    owner: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    error: Mapped[str | None] = mapped_column(Text)


class Lease(Base):
    """A claim on a unit of work (a portal's events, a portal's daily run) that expires when
    its holder dies. Claimed with FOR UPDATE SKIP LOCKED on PostgreSQL."""

    __tablename__ = "lease"

    portal_id: Mapped[int] = mapped_column(ForeignKey("portal.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(128))
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class RobotTimer(Base):
    """A stored timer of a pipeline robot (SLA, cadence step, reminder); survives restarts."""

    __tablename__ = "robot_timer"
    __table_args__ = (Index("ix_robot_timer_due", "status", "due_at"),
                      Index("ix_robot_timer_document", "portal_id", "document_id"),
                      UniqueConstraint("portal_id", "key", name="uq_robot_timer_key"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    portal_id: Mapped[int] = mapped_column(ForeignKey("portal.id", ondelete="CASCADE"))
    robot: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    document_id: Mapped[str] = mapped_column(String(64))  # e.g. DEAL_123 / LEAD_7
    due_at: Mapped[dt.datetime] = mapped_column(DateTime)
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="waiting")  # waiting|done|cancelled
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    fired_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class ImportJob(Base):
    """A bulk load of statuses from CSV/XLSX."""

    __tablename__ = "import_job"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    portal_id: Mapped[int] = mapped_column(ForeignKey("portal.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="preview")  # preview|queued|running|done|failed
    total_rows: Mapped[int] = mapped_column(Integer, default=0)
    valid_rows: Mapped[int] = mapped_column(Integer, default=0)
    applied_rows: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class ImportRow(Base):
    """One row of a bulk load, with its outcome; applied rows are never applied again."""

    __tablename__ = "import_row"
    __table_args__ = (Index("ix_import_row_state", "job_id", "state", "row_no"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("import_job.id", ondelete="CASCADE"))
    row_no: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    entity_type: Mapped[str | None] = mapped_column(String(16))
    entity_id: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str | None] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending|invalid|applied|failed
    error: Mapped[str | None] = mapped_column(Text)


class RobotState(Base):
    """Per-portal state of the pipeline robots, by key: a pool's rotation cursor and credits,
    the admin's absence marks, a month's ranking shares."""

    __tablename__ = "robot_state"

    portal_id: Mapped[int] = mapped_column(ForeignKey("portal.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)  # e.g. pool:default, absent, ranking:2026-11
    value: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class RobotRecord(Base):
    """What the pipeline robots observed and did, for reports: an item assigned to a manager,
    a ranking stage reached, a close reason, an item stuck in a stage."""

    __tablename__ = "robot_record"
    __table_args__ = (Index("ix_robot_record_kind", "portal_id", "kind", "at"),
                      Index("ix_robot_record_document", "portal_id", "document_id"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    portal_id: Mapped[int] = mapped_column(ForeignKey("portal.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))  # assigned | reached | close_reason | stuck
    document_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int | None] = mapped_column(Integer)
    value: Mapped[str | None] = mapped_column(String(255))
    at: Mapped[dt.datetime] = mapped_column(DateTime)
    # Set once the record was listed in a message (e.g. the stuck-in-stage digest).
    reported_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class WorkerHeartbeat(Base):
    """The last sign of life of each worker process, for `nezabyt doctor` (addon.heartbeat)."""

    __tablename__ = "worker_heartbeat"

    worker_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    beat_at: Mapped[dt.datetime] = mapped_column(DateTime)


class PortalBudget(Base):
    """A portal's REST budget, shared by every process that calls it (addon.bitrix.pace): its plan's
    limits and the leaky bucket's level at `stamp` (unix seconds on the database's clock), plus what
    `nezabyt worker status` shows (calls made, the last rate-limit answer, the last error)."""

    __tablename__ = "portal_budget"

    portal_id: Mapped[int] = mapped_column(ForeignKey("portal.id", ondelete="CASCADE"), primary_key=True)
    plan: Mapped[str | None] = mapped_column(String(64))  # app.info LICENSE, e.g. ru_ent250
    rps: Mapped[float] = mapped_column(Float, default=2.0)  # the portal's drain per second
    burst: Mapped[int] = mapped_column(Integer, default=50)  # the portal's bucket size
    level: Mapped[float] = mapped_column(Float, default=0.0)
    stamp: Mapped[float] = mapped_column(Float, default=0.0)
    calls: Mapped[int] = mapped_column(BigInteger, default=0)
    plan_read_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    limited_at: Mapped[dt.datetime | None] = mapped_column(DateTime)  # the last 503 QUERY_LIMIT_EXCEEDED
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
