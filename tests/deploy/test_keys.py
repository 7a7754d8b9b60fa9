"""Rotating the secret key: tokens stay readable under the previous key, `nezabyt keys rotate`
rewrites them under the new one, a refresh landing meanwhile is not overwritten, and a token no
known key opens is reported and left as it was."""
from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from addon.config import Settings
from addon.crypto import TokenCipher
from addon.models import Portal
from addon.ops_cli import TOKEN_COLUMNS, rotate_stored_tokens
from addon.services import build_services
from tests.install.conftest import make_portal

OLD, NEW = "old-secret-key-0123456789abcdef-0123", "new-secret-key-abcdef0123456789-4567"


def test_the_cipher_reads_previous_keys_and_writes_with_the_current_one():
    old = TokenCipher(OLD)
    both = TokenCipher(NEW, [OLD])
    under_old = old.encrypt("access-1")
    assert both.decrypt(under_old) == "access-1"
    assert not both.is_current(under_old)
    rotated = both.rotate(under_old)
    assert both.is_current(rotated) and TokenCipher(NEW).decrypt(rotated) == "access-1"
    with pytest.raises(ValueError, match="NEZABYT_SECRET_KEY_PREVIOUS"):
        TokenCipher(NEW).decrypt(under_old)
    with pytest.raises(ValueError):
        TokenCipher(NEW).rotate(under_old)


def test_previous_keys_come_from_the_environment(tmp_path):
    settings = Settings.from_env(env={"DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}",
                                      "NEZABYT_SECRET_KEY": NEW,
                                      "NEZABYT_SECRET_KEY_PREVIOUS": f" {OLD} , older-key ,"})
    assert settings.previous_secret_keys == (OLD, "older-key")
    services = build_services(settings)
    try:
        assert services.cipher.decrypt(TokenCipher("older-key").encrypt("x")) == "x"
    finally:
        services.dispose()


def _stored(services) -> dict[str, dict[str, str | None]]:
    with services.sessions() as s:
        return {p.domain: {c: getattr(p, c) for c in TOKEN_COLUMNS} for p in s.scalars(select(Portal))}


@pytest.fixture
def old_and_new(settings):
    """The same database seen by a process on the old key and by one on the new key (old as previous)."""
    from tests.conftest import empty_database

    old = build_services(dataclasses.replace(settings, secret_key=OLD))
    new = build_services(dataclasses.replace(settings, secret_key=NEW, previous_secret_keys=(OLD,)))
    yield old, new
    empty_database(old)
    old.dispose()
    new.dispose()


def test_rotate_rewrites_every_token_under_the_new_key(old_and_new):
    old, new = old_and_new
    make_portal(old, member_id="m1", domain="a.bitrix24.test", access="access-a", refresh="refresh-a",
                application_token="app-a")
    make_portal(old, member_id="m2", domain="b.bitrix24.test", access="access-b", refresh="refresh-b",
                application_token=None)
    before = _stored(old)
    report = rotate_stored_tokens(new)
    assert (report.portals, report.rewritten, report.already_current, report.unreadable) == (2, 2, 0, [])
    after = _stored(new)
    only_new = TokenCipher(NEW)
    assert only_new.decrypt(after["a.bitrix24.test"]["access_token_enc"]) == "access-a"
    assert only_new.decrypt(after["a.bitrix24.test"]["refresh_token_enc"]) == "refresh-a"
    assert only_new.decrypt(after["a.bitrix24.test"]["application_token_enc"]) == "app-a"
    assert after["b.bitrix24.test"]["application_token_enc"] is None
    assert all(after[d][c] != before[d][c] for d in after for c in TOKEN_COLUMNS if before[d][c])
    again = rotate_stored_tokens(new)
    assert (again.rewritten, again.already_current) == (0, 2)
    assert _stored(new) == after


def test_a_refresh_that_lands_during_the_rotation_is_kept(old_and_new, monkeypatch):
    """The rotation read the old texts; before it writes, a token refresh stores a new pair under
    the new key. The compare-and-set misses, the portal is read again and found current."""
    from addon.bitrix.tokens import save_tokens

    old, new = old_and_new
    portal_id = make_portal(old, access="access-1", refresh="refresh-1")
    real_rotate = new.cipher.rotate
    refreshed = []

    def rotate_then_refresh(value):
        if not refreshed:
            refreshed.append(True)
            with new.sessions.begin() as s:
                save_tokens(s, s.get(Portal, portal_id), "access-2", "refresh-2", None)
        return real_rotate(value)

    monkeypatch.setattr(new.cipher, "rotate", rotate_then_refresh)
    report = rotate_stored_tokens(new)
    with new.sessions() as s:
        p = s.get(Portal, portal_id)
        assert TokenCipher(NEW).decrypt(p.access_token_enc) == "access-2"
        assert TokenCipher(NEW).decrypt(p.refresh_token_enc) == "refresh-2"
        # the application token was still under the old key: rewritten on the second pass
        assert TokenCipher(NEW).decrypt(p.application_token_enc) == "app-token-1"
    assert report.rewritten == 1 and report.unreadable == []


def test_the_command_reports_tokens_no_key_opens_and_changes_nothing(old_and_new, settings):
    from addon.cli import main

    old, _new = old_and_new
    make_portal(old, access="access-1")
    before = _stored(old)
    env = {"DATABASE_URL": settings.database_url, "NEZABYT_SECRET_KEY": NEW}
    result = CliRunner().invoke(main, ["keys", "rotate"], env=env)
    assert result.exit_code == 1
    assert "unreadable 1" in result.output and "NEZABYT_SECRET_KEY_PREVIOUS is empty" in result.output
    assert _stored(old) == before
    result = CliRunner().invoke(main, ["keys", "rotate"], env={**env, "NEZABYT_SECRET_KEY_PREVIOUS": OLD})
    assert result.exit_code == 0, result.output
    assert "re-encrypted 1" in result.output and "can now be removed" in result.output
    only_new = build_services(dataclasses.replace(settings, secret_key=NEW))
    try:
        from addon.bitrix.tokens import access_token

        with only_new.sessions() as s:
            portal_id = s.scalars(select(Portal.id)).one()
        assert access_token(only_new, portal_id) == "access-1"
    finally:
        only_new.dispose()
