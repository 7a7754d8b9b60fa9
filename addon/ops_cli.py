"""Operator commands: `nezabyt doctor` (is the deployment healthy?) and `nezabyt keys rotate`
(re-encrypt the tokens at rest with the current NEZABYT_SECRET_KEY)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import click
from sqlalchemy import select, update

TOKEN_COLUMNS = ("access_token_enc", "refresh_token_enc", "application_token_enc")


@click.command("doctor")
@click.option("--portal", default=None, help="check one portal (member_id or domain); default: every installed one")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def doctor_command(portal: str | None, as_json: bool) -> None:
    """Check the deployment and each portal; exit status 1 if anything is wrong."""
    from addon.doctor.report import render, run_checks
    from addon.services import services_scope

    with services_scope() as services:
        try:
            checks = run_checks(services, portal=portal)
        except LookupError as exc:
            raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in checks], ensure_ascii=False, indent=2))
    else:
        click.echo(render(checks))
    if not all(c.ok for c in checks):
        raise SystemExit(1)


@dataclass
class RotationReport:
    portals: int = 0
    rewritten: int = 0  # portals whose tokens were re-encrypted
    already_current: int = 0
    unreadable: list[str] = field(default_factory=list)


def rotate_stored_tokens(services) -> RotationReport:
    """Re-encrypt every portal's tokens with the current key. Each portal is rewritten only if
    its stored texts are still the ones read (compare-and-set): a token refresh that landed
    meanwhile already wrote with the current key, and is read again rather than overwritten."""
    from addon.models import Portal

    cipher = services.cipher
    report = RotationReport()
    with services.sessions() as session:
        ids = list(session.scalars(select(Portal.id).order_by(Portal.id)))
    for portal_id in ids:
        report.portals += 1
        for _attempt in range(5):
            with services.sessions() as session:
                row = session.get(Portal, portal_id)
                if row is None:
                    break
                stored = {name: getattr(row, name) for name in TOKEN_COLUMNS}
                domain = row.domain
            if all(cipher.is_current(value) for value in stored.values()):
                report.already_current += 1
                break
            try:
                fresh = {name: cipher.rotate(value) for name, value in stored.items()}
            except ValueError as exc:
                report.unreadable.append(f"{domain} (portal {portal_id}): {exc}")
                break
            with services.sessions.begin() as session:
                guard = [getattr(Portal, name).is_not_distinct_from(value) for name, value in stored.items()]
                done = session.execute(update(Portal).where(Portal.id == portal_id, *guard).values(**fresh)).rowcount
            if done:
                report.rewritten += 1
                break
    return report


@click.group("keys")
def keys_command() -> None:
    """The secret key that encrypts tokens at rest (NEZABYT_SECRET_KEY)."""


@keys_command.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every stored token with NEZABYT_SECRET_KEY, reading old ones with the keys in
    NEZABYT_SECRET_KEY_PREVIOUS. Safe while web and worker run (see docs/deploy.md)."""
    from addon.services import services_scope

    with services_scope() as services:
        previous = services.settings.previous_secret_keys
        report = rotate_stored_tokens(services)
    click.echo(f"portals {report.portals}: re-encrypted {report.rewritten}, already under the current key "
               f"{report.already_current}, unreadable {len(report.unreadable)}")
    for line in report.unreadable:
        click.echo(f"error: {line}", err=True)
    if report.unreadable:
        hint = ("" if previous else " NEZABYT_SECRET_KEY_PREVIOUS is empty: give it the old key.")
        raise click.ClickException("some tokens are under a key this process does not know; nothing of "
                                   f"theirs was changed.{hint}")
    if report.rewritten:
        click.echo("done: NEZABYT_SECRET_KEY_PREVIOUS can now be removed (restart web and worker after)")
