"""ONAPPUNINSTALL: verified only by the stored application_token (the event carries no tokens);
the portal is marked uninstalled, its tokens dropped; CLEAN=1 purges every row it owns."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select

from addon.crypto import constant_time_equal
from addon.db import unit_of_work
from addon.intake import IntakeError
from addon.models import PORTAL_UNINSTALLED, Base, ImportJob, ImportRow, Portal


def handle_uninstall(services, form: dict) -> int:
    auth = form.get("auth")
    if not isinstance(auth, dict) or not auth.get("member_id") or not auth.get("application_token"):
        raise IntakeError(400, "missing auth[member_id] or auth[application_token]")
    with unit_of_work(services.sessions) as session:
        portal = session.scalar(select(Portal).where(Portal.member_id == str(auth["member_id"]).lower())
                                .with_for_update())
        if portal is None:
            raise IntakeError(401, "unknown portal")
        stored = services.cipher.decrypt(portal.application_token_enc)
        if stored is None:
            # A UI install that has not seen an event yet has no application_token to compare.
            # No trust on first use here (anyone could claim an uninstall): ask the portal instead;
            # after a real uninstall our tokens are revoked.
            session.rollback()  # no row lock held across the portal call
            if _app_still_installed(services, portal_id=portal.id):
                raise IntakeError(401, "unknown application token")
            portal = session.scalar(select(Portal).where(Portal.id == portal.id).with_for_update())
        elif not constant_time_equal(stored, str(auth["application_token"])):
            raise IntakeError(401, "wrong application token")
        data = form.get("data") if isinstance(form.get("data"), dict) else {}
        portal_id = portal.id
        if str(data.get("CLEAN", "0")) == "1":
            purge_portal(session, portal_id)
        else:
            portal.status = PORTAL_UNINSTALLED
            portal.status_reason = "the app was uninstalled from the portal"
            portal.uninstalled_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
            portal.access_token_enc = None
            portal.refresh_token_enc = None
            portal.expires_at = None
    return portal_id


def purge_portal(session, portal_id: int) -> None:
    """Delete everything a portal owns, children first (no reliance on ON DELETE CASCADE)."""
    job_ids = select(ImportJob.id).where(ImportJob.portal_id == portal_id)
    session.execute(delete(ImportRow).where(ImportRow.job_id.in_(job_ids)))
    for table in reversed(Base.metadata.sorted_tables):
        if table.name != "portal" and "portal_id" in table.c:
            session.execute(delete(table).where(table.c.portal_id == portal_id))
    session.execute(delete(Portal).where(Portal.id == portal_id))


def _app_still_installed(services, portal_id: int) -> bool:
    from addon.bitrix.client import portal_client
    from addon.bitrix.errors import PortalAuthError, PortalError

    try:
        with portal_client(services, portal_id) as client:
            client.call("app.info")
    except PortalAuthError:
        return False
    except PortalError as exc:
        raise IntakeError(401, f"the uninstall cannot be confirmed: {exc.code}") from exc
    return True
