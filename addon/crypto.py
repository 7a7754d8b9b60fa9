"""Encryption of portal tokens at rest: Fernet keyed from NEZABYT_SECRET_KEY, and during a key
rotation also from the previous keys (NEZABYT_SECRET_KEY_PREVIOUS), read but never written."""
from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Iterable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


def _fernet(secret_key: str) -> Fernet:
    digest = hashlib.sha256(("nezabyt-tokens:" + secret_key).encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


class TokenCipher:
    """Encrypts with the current key; decrypts with the current or any previous one, so a
    deployment whose processes already know the new key keeps reading tokens written under the
    old one until `nezabyt keys rotate` has rewritten them."""

    def __init__(self, secret_key: str, previous_keys: Iterable[str] = ()):
        keys = [secret_key] + [k for k in previous_keys if k and k != secret_key]
        fernets = [_fernet(k) for k in keys]
        self._current = fernets[0]
        self._fernet = MultiFernet(fernets)

    def encrypt(self, value: str | None) -> str | None:
        if value is None:
            return None
        return self._fernet.encrypt(value.encode()).decode("ascii")

    def decrypt(self, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return self._fernet.decrypt(value.encode("ascii")).decode()
        except InvalidToken as exc:
            raise ValueError("stored token cannot be decrypted: NEZABYT_SECRET_KEY changed "
                             "(give the old key in NEZABYT_SECRET_KEY_PREVIOUS)?") from exc

    def rotate(self, value: str | None) -> str | None:
        """The same secret encrypted with the current key (ValueError if no key opens it)."""
        if value is None:
            return None
        try:
            return self._fernet.rotate(value.encode("ascii")).decode("ascii")
        except InvalidToken as exc:
            raise ValueError("stored token cannot be decrypted with NEZABYT_SECRET_KEY or any key in "
                             "NEZABYT_SECRET_KEY_PREVIOUS") from exc

    def is_current(self, value: str | None) -> bool:
        """Whether `value` opens with the current key alone (nothing left to rotate)."""
        if value is None:
            return True
        try:
            self._current.decrypt(value.encode("ascii"))
        except InvalidToken:
            return False
        return True


def constant_time_equal(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode(), b.encode())
