"""Installation: the installer page a portal opens (POST /install), ONAPPINSTALL and ONAPPUPDATE.

An install arrives unauthenticated, so nothing it claims (install/claim.py) is believed: the portal
must be an https address that resolves to public addresses only (install/address.py), Bitrix24's
authorization server must confirm the claimed token is this app's on the claimed portal, and the
portal must say the installing user is an admin (install/proof.py), before anything is stored; a
known member_id arriving from a new domain is the same portal at its new address once the
authorization server confirms both. Then the portal and its default settings are stored and the
registration manifest applied, as one unit: a failed manifest puts the portal back as it was.

A UI install reaches us twice (the installer page, then ONAPPINSTALL once BX24.installFinish()
runs) and an update up to three times (ONAPPUPDATE, the installer page, ONAPPINSTALL): the
manifest is applied once per app version (install.manifest_apply.ensure_manifest), so the later
arrivals cost the proof and one event.get. An update keeps the tokens, drops the handlers and
robots and brings a new application_token (api-reference/common/events/on-app-update.md).
"""
from __future__ import annotations

import datetime as dt
import logging
import time

from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select

from addon.db import unit_of_work
from addon.models import PORTAL_ACTIVE, PORTAL_INSTALLING, PORTAL_UNINSTALLED, Portal, PortalSettings
from addon.bitrix.errors import PortalError, is_temporary
from addon.bitrix.pace import shared_pace
from addon.bitrix.tokens import mark_active, save_application_token, save_tokens, unix_to_utc
from addon.options import Options
from install.claim import Claim, InstallError, InstallOutcome, event_claim, page_claim
from install.manifest_apply import ensure_manifest
from install.manifest_diff import ManifestIncomplete
from install.pages import installer_page
from install.proof import BUSY, check_address, prove
from install.uninstall import purge_portal

log = logging.getLogger(__name__)


def install_from_page(services, query: dict, form: dict) -> InstallOutcome:
    """POST /install from the portal's installer page (a UI app)."""
    claim = page_claim(query, form)
    outcome = _install(services, claim)
    outcome.html = installer_page(claim.domain, services.settings.public_url, outcome)
    return outcome


def handle_app_install(services, form: dict) -> int:
    """ONAPPINSTALL (an API-only install, or the event a UI install bound) or ONAPPUPDATE: prove
    the claim, store the tokens and the new application_token, apply the manifest if this version
    does not have it yet."""
    return _install(services, event_claim(form)).portal_id


def _install(services, claim: Claim) -> InstallOutcome:
    settings = services.settings
    check_address(settings, claim)
    with services.sessions() as session:
        known = session.scalar(select(Portal).where(Portal.member_id == claim.member_id))
        known_id = known.id if known is not None else None
        moved_from = known.domain.lower() if known is not None and known.domain.lower() != claim.domain else None
    # A known portal's proof draws on its one budget, shared with the worker's daily run.
    proof = prove(settings, claim, shared_pace(services, known_id) if known_id is not None else None)
    if moved_from is not None:
        # The authorization server has just confirmed this member_id at the claimed domain: the
        # portal changed its address (settings/how-to-call-rest-api/change-domen.md), and every
        # later call goes to the new one.
        log.info("portal %s moved from %s to %s", known_id, moved_from, claim.domain)
    portal_id, created, before = _store(services, claim, proof)
    # The manifest needs the stored tokens (its client reads them), so the portal row is committed
    # first and put back as it was when the manifest fails: a failed install leaves nothing half-done.
    try:
        report = ensure_manifest(services, portal_id, claim.app_version)
    except Exception as exc:
        # An update's tokens and application_token are the portal's current ones: they stay.
        _undo(services, portal_id, created, before, keep=TOKEN_COLUMNS if claim.event == "ONAPPUPDATE" else ())
        if isinstance(exc, PortalError) and is_temporary(exc):
            log.warning("install of %s undone: the portal was busy at %s: %s", claim.domain, exc.method, exc.code)
            raise InstallError(503, BUSY) from exc
        if isinstance(exc, PortalError):
            log.warning("install of %s undone: the manifest failed at %s: %s", claim.domain, exc.method, exc.code)
            raise InstallError(502, "the portal did not answer as expected while the app was set up; nothing "
                                    "was changed: try the install again") from exc
        if isinstance(exc, ManifestIncomplete):
            log.warning("install of %s undone: %s", claim.domain, exc)
            raise InstallError(502, "the portal did not keep what the app registered; nothing was changed: "
                                    "try the install again") from exc
        log.exception("install of %s undone: the manifest failed", claim.domain)
        raise InstallError(500, "the app could not be set up on the portal; nothing was changed: "
                                "try the install again") from exc
    with unit_of_work(services.sessions) as session:
        portal = session.get(Portal, portal_id, with_for_update=True)
        mark_active(portal)
    return InstallOutcome(portal_id, created, "", report)


def _store(services, claim: Claim, proof: dict) -> tuple[int, bool, dict | None]:
    """Store the proven claim: (portal id, created?, the known portal's columns before)."""
    created = False
    with unit_of_work(services.sessions) as session:
        portal = session.scalar(select(Portal).where(Portal.member_id == claim.member_id).with_for_update())
        before = None if portal is None else _columns(portal)
        if portal is None:
            created = True
            portal = Portal(member_id=claim.member_id, domain=claim.domain, client_endpoint=claim.client_endpoint,
                            server_endpoint=claim.server_endpoint, parked_methods={})
            session.add(portal)
        portal.domain = claim.domain  # a known portal's may be new: proven by the authorization server
        portal.client_endpoint = claim.client_endpoint
        portal.server_endpoint = claim.server_endpoint  # kept for the record; refreshes go to settings.oauth_url
        save_tokens(session, portal, claim.access_token, claim.refresh_token,
                    unix_to_utc(time.time() + claim.expires_in))
        if claim.application_token:
            save_application_token(session, portal, claim.application_token)
        elif portal.status == PORTAL_UNINSTALLED:
            # A new installation gets a new application_token; it comes with its first event.
            portal.application_token_enc = None
        portal.scope = claim.scope or proof["scope"] or portal.scope or ""
        if claim.app_version:
            portal.app_version = claim.app_version
        portal.language = claim.language or portal.language
        if proof["user_id"]:
            portal.installed_by_user_id = proof["user_id"]
        if proof["time_zone"]:
            portal.time_zone = proof["time_zone"]
        if proof["server_time"] is not None:
            # Reconcile starts from the install, by the portal's clock (its DATE_MODIFY's clock).
            portal.entity_watermark = portal.entity_watermark or proof["server_time"]
            portal.activity_watermark = portal.activity_watermark or proof["server_time"]
        if created or portal.uninstalled_at is not None:
            portal.installed_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        portal.uninstalled_at = None
        if portal.status != PORTAL_ACTIVE:
            # Not active until the manifest is applied: the worker leaves a portal being set up alone.
            portal.status = PORTAL_INSTALLING
            portal.status_reason = "the app is being set up on the portal"
        session.flush()
        if session.get(PortalSettings, portal.id) is None:
            language = claim.language if claim.language in ("ru", "en") else "ru"
            options = Options(time_zone=portal.time_zone or "UTC", language=language)
            # A new portal has no rows yet: nothing is dated under older options.
            session.add(PortalSettings(portal_id=portal.id, version=1, dated_version=1, data=options.to_dict(),
                                       field_items={}))
        return portal.id, created, before


def _columns(portal: Portal) -> dict:
    return {attr.key: getattr(portal, attr.key) for attr in sa_inspect(Portal).column_attrs if attr.key != "id"}


TOKEN_COLUMNS = ("access_token_enc", "refresh_token_enc", "expires_at", "application_token_enc")


def _undo(services, portal_id: int, created: bool, before: dict | None, keep: tuple[str, ...] = ()) -> None:
    """Put the portal back as it was before the install: a new one removed with all it got, a
    known one with its previous tokens, endpoints and status (what the manifest learnt about the
    portal's fields stays: it is what the portal now has)."""
    with unit_of_work(services.sessions) as session:
        portal = session.get(Portal, portal_id, with_for_update=True)
        if portal is None:
            return
        if created or before is None:
            purge_portal(session, portal_id)
            return
        for key, value in before.items():
            if key not in keep:
                setattr(portal, key, value)
