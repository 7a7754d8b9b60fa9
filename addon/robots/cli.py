"""The `nezabyt robots` commands: absences, the monthly ranking, close reasons, running the robots by hand."""
from __future__ import annotations

import datetime as dt

import click
from sqlalchemy import select

from addon.db import unit_of_work
from addon.engine import find_portal, load_context
from addon.models import PORTAL_ACTIVE, Portal
from addon.robots.runner import fire_due_timers, process_robot_calls
from addon.robots.store import absent_users, close_reason_counts, mark_absent, ranking_report
from addon.services import services_scope


def _portal_option(session, portal: str) -> Portal:
    row = find_portal(session, portal)
    if row is None:
        raise click.ClickException(f"no portal {portal!r}")
    return row


@click.group("robots")
def robots_command() -> None:
    """Pipeline robots: absences, the monthly ranking, close reasons, running them by hand."""


@robots_command.command("absent")
@click.option("--portal", required=True, help="member_id or domain")
@click.option("--user", "user_id", type=int, required=True)
@click.option("--back", is_flag=True, help="the manager is back")
def absent_command(portal: str, user_id: int, back: bool) -> None:
    """Mark a manager absent (or back): the distribution skips them, with no backlog on return."""
    with services_scope() as services:
        with unit_of_work(services.sessions) as session:
            row = _portal_option(session, portal)
            mark_absent(session, row.id, user_id, absent=not back)
            now_absent = sorted(absent_users(session, row.id))
        click.echo(f"absent on {row.domain}: {', '.join(map(str, now_absent)) or 'nobody'}")


@robots_command.command("ranking")
@click.option("--portal", required=True, help="member_id or domain")
@click.option("--month", required=True, help="YYYY-MM")
@click.option("--type", "document_type", type=click.Choice(["lead", "deal"]), default=None)
def ranking_command(portal: str, month: str, document_type: str | None) -> None:
    """The month's ranking: each manager's new items and their conversion into the ranking stage."""
    with services_scope() as services:
        with services.sessions() as session:
            row = _portal_option(session, portal)
            tz = load_context(session, row.id).tz
            for rank in ranking_report(session, row.id, month, tz, document_type):
                click.echo(f"user {rank.user_id}: {rank.converted}/{rank.new_items} = {rank.conversion:.0%}")


@robots_command.command("reasons")
@click.option("--portal", required=True, help="member_id or domain")
def reasons_command(portal: str) -> None:
    """How often each close reason was given."""
    with services_scope() as services:
        with services.sessions() as session:
            row = _portal_option(session, portal)
            for reason, count in close_reason_counts(session, row.id).items():
                click.echo(f"{count}\t{reason}")


@robots_command.command("run")
@click.option("--now", "now_text", default=None, help="ISO time (default: now)")
def run_command(now_text: str | None) -> None:
    """Execute stored robot calls of every portal and fire due timers once."""
    with services_scope() as services:
        now = dt.datetime.fromisoformat(now_text) if now_text else dt.datetime.now(dt.timezone.utc)
        with services.sessions() as session:
            portal_ids = list(session.scalars(select(Portal.id).where(Portal.status == PORTAL_ACTIVE)))
        calls = sum(process_robot_calls(services, pid, now) for pid in portal_ids)
        timers = fire_due_timers(services, now)
        click.echo(f"robot calls: {calls}, timers fired: {timers}")
