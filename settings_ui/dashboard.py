"""The dashboard's figures (clients by manager and status, decays/losses/transfers by week, clients
at risk this week) read from the service table and history, and its server-rendered SVG charts."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from markupsafe import Markup, escape
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from addon.models import JobRun, StatusHistory, TrackedEntity
from addon.options import IN_WORK, LOST, NEW, Options

# Bitrix24's palette, one colour per kind of status.
STATUS_COLOURS = {NEW: "#2fc6f6", IN_WORK: "#9dcf00", LOST: "#a8adb4"}
CUSTOM_COLOURS = ("#ff5752", "#ffa900", "#55d0e0", "#7b8691", "#c3612c", "#9985dd", "#2066b0", "#e89b06")
CHANGE_COLOURS = {"decays": "#ffa900", "losses": "#ff5752", "transfers": "#2fc6f6"}
WEEKS = 12


def status_colours(options: Options) -> dict[str, str]:
    colours = dict(STATUS_COLOURS)
    for i, code in enumerate(options.custom_chain):
        colours[code] = CUSTOM_COLOURS[i % len(CUSTOM_COLOURS)]
    return colours


@dataclass
class ManagerRow:
    manager_id: int | None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class Dashboard:
    statuses: list[tuple[str, str, str]]  # code, name, colour
    managers: list[ManagerRow]
    weeks: list[dt.date]
    changes: dict[str, list[int]]  # decays | losses | transfers → one figure per week
    at_risk: list[TrackedEntity]
    at_risk_total: int
    totals: dict[str, int]


def build_dashboard(session: Session, portal_id: int, options: Options, today: dt.date,
                    only_manager: int | None = None, risk_limit: int = 50) -> Dashboard:
    """Everything the dashboard shows; `only_manager` narrows it to one manager's own clients."""
    colours = status_colours(options)
    statuses = [(s.code, s.name, colours.get(s.code, "#7b8691")) for s in options.statuses]
    scope = [TrackedEntity.portal_id == portal_id, TrackedEntity.status.is_not(None)]
    if only_manager is not None:
        scope.append(TrackedEntity.assigned_by_id == only_manager)

    managers: dict[int | None, ManagerRow] = {}
    totals: dict[str, int] = {}
    for manager_id, status, count in session.execute(
            select(TrackedEntity.assigned_by_id, TrackedEntity.status, func.count())
            .where(*scope).group_by(TrackedEntity.assigned_by_id, TrackedEntity.status)):
        row = managers.setdefault(manager_id, ManagerRow(manager_id))
        row.counts[status] = count
        totals[status] = totals.get(status, 0) + count
    ordered = sorted(managers.values(), key=lambda r: (-r.total, r.manager_id or 0))

    start = today - dt.timedelta(days=today.weekday()) - dt.timedelta(weeks=WEEKS - 1)
    weeks = [start + dt.timedelta(weeks=i) for i in range(WEEKS)]
    changes = {"decays": [0] * WEEKS, "losses": [0] * WEEKS, "transfers": [0] * WEEKS}
    history = [StatusHistory.portal_id == portal_id, StatusHistory.changed_on >= start,
               StatusHistory.changed_on <= today]
    if only_manager is not None:
        history.append(StatusHistory.assigned_by_id == only_manager)
    for day, cause, to_status, count in session.execute(
            select(StatusHistory.changed_on, StatusHistory.cause, StatusHistory.to_status, func.count())
            .where(*history)
            .group_by(StatusHistory.changed_on, StatusHistory.cause, StatusHistory.to_status)):
        week = (day - start).days // 7
        if to_status == LOST:
            changes["losses"][week] += count
        elif cause == "decay":
            changes["decays"][week] += count
    if only_manager is None:
        # Transfers on loss are counted by each daily run (its JobRun summary), not in the history.
        for params, summary in session.execute(
                select(JobRun.params, JobRun.summary).where(
                    JobRun.portal_id == portal_id, JobRun.kind == "daily",
                    JobRun.created_at >= dt.datetime.combine(start - dt.timedelta(days=1), dt.time()))):
            try:
                day = dt.date.fromisoformat((params or {}).get("day", ""))
            except ValueError:
                continue
            if start <= day <= today:
                changes["transfers"][(day - start).days // 7] += int((summary or {}).get("transfers") or 0)

    horizon = today + dt.timedelta(days=7)
    risk_scope = scope + [TrackedEntity.due_on.is_not(None), TrackedEntity.due_on <= horizon]
    at_risk = list(session.scalars(select(TrackedEntity).where(*risk_scope)
                                   .order_by(TrackedEntity.due_on, TrackedEntity.id).limit(risk_limit)))
    at_risk_total = session.scalar(select(func.count()).select_from(TrackedEntity).where(*risk_scope)) or 0
    return Dashboard(statuses, ordered, weeks, changes, at_risk, at_risk_total, totals)


# --- SVG -----------------------------------------------------------------------------------------
# Charts are drawn at their own pixel size (never scaled down with the frame: a narrow frame
# scrolls them sideways), with their legends as HTML that wraps instead of overlapping.
FONT = 'font-family="Open Sans, Helvetica Neue, Arial, sans-serif"'


def legend(items: list[tuple[str, str]], element_id: str) -> Markup:
    """The chart's legend: a coloured mark and a name per series."""
    parts = [f'<ul class="legend" id="{element_id}">']
    for name, colour in items:
        parts.append(f'<li><i style="background:{colour}"></i>{escape(name)}</li>')
    parts.append("</ul>")
    return Markup("".join(parts))


def nice_ticks(biggest: int, count: int = 4) -> list[int]:
    """Round steps from 0 up to at least `biggest` (1, 2, 5 times a power of ten)."""
    if biggest <= 0:
        return [0, 1]
    raw = biggest / count
    power = 10 ** (len(str(int(raw))) - 1) if raw >= 1 else 1
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    ticks = [0]
    while ticks[-1] < biggest:
        ticks.append(ticks[-1] + step)
    return ticks


def managers_chart(board: Dashboard, names: dict[int, str], width: int = 720) -> Markup:
    """A horizontal stacked bar per manager: how many clients in each status."""
    rows = board.managers[:30]
    label_w, bar_h, gap, top = 190, 22, 8, 6
    height = top + len(rows) * (bar_h + gap) + 24
    ticks = nice_ticks(max((r.total for r in rows), default=0))
    scale = (width - label_w - 40) / ticks[-1]
    shown = [(code, name, colour) for code, name, colour in board.statuses if board.totals.get(code)]
    parts = [str(legend([(name, colour) for _, name, colour in shown], "managers-legend")),
             f'<div class="chart-wrap"><svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" {FONT} font-size="12">']
    axis_y = top + len(rows) * (bar_h + gap)
    for tick in ticks:  # the count axis, with a light grid line per tick
        x = label_w + tick * scale
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{axis_y}" stroke="#eef2f4"/>'
                     f'<text class="tick" x="{x:.1f}" y="{axis_y + 14}" text-anchor="middle" fill="#a8adb4">{tick}</text>')
    for i, row in enumerate(rows):
        y = top + i * (bar_h + gap)
        label = names.get(row.manager_id or 0) or (f"#{row.manager_id}" if row.manager_id else "—")
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" fill="#525c69">{escape(label)}</text>')
        x = float(label_w)
        for code, name, colour in board.statuses:
            n = row.counts.get(code, 0)
            if not n:
                continue
            w = n * scale
            parts.append(f'<rect class="seg" x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}">'
                         f'<title>{escape(name)}: {n}</title></rect>')
            x += w
        parts.append(f'<text x="{x + 6:.1f}" y="{y + 15}" fill="#525c69">{row.total}</text>')
    parts.append("</svg></div>")
    return Markup("".join(parts))


def changes_chart(board: Dashboard, labels: dict[str, str], width: int = 720, height: int = 220) -> Markup:
    """Grouped columns per week: decays, losses and transfers, with a y-axis of round ticks."""
    left, bottom, top = 44, 26, 10
    plot_h = height - bottom - top
    kinds = list(board.changes)
    ticks = nice_ticks(max((v for values in board.changes.values() for v in values), default=0))
    biggest = ticks[-1]
    slot = (width - left - 10) / len(board.weeks)
    bar_w = max(slot / (len(kinds) + 1), 2)
    parts = [str(legend([(labels.get(k, k), CHANGE_COLOURS[k]) for k in kinds], "changes-legend")),
             f'<div class="chart-wrap"><svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" {FONT} font-size="11">']
    for tick in ticks:
        y = top + plot_h - plot_h * tick / biggest
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" '
                     f'stroke="{"#dfe3e8" if tick == 0 else "#eef2f4"}"/>'
                     f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#a8adb4">{tick}</text>')
    for w, week in enumerate(board.weeks):
        x0 = left + w * slot + bar_w / 2
        for k, kind in enumerate(kinds):
            n = board.changes[kind][w]
            h = plot_h * n / biggest
            parts.append(f'<rect x="{x0 + k * bar_w:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - 1:.1f}" '
                         f'height="{h:.1f}" fill="{CHANGE_COLOURS[kind]}"><title>{escape(labels.get(kind, kind))} '
                         f'{week.strftime("%d.%m")}: {n}</title></rect>')
        parts.append(f'<text x="{left + w * slot + slot / 2:.1f}" y="{height - 8}" text-anchor="middle" '
                     f'fill="#a8adb4">{week.strftime("%d.%m")}</text>')
    parts.append("</svg></div>")
    return Markup("".join(parts))
