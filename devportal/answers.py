"""What a REST method gets and gives: who is calling, and a list method's page."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Ctx:
    """Who is calling: the token's user; `in_batch` for batch sub-commands."""

    user_id: int
    token: str
    in_batch: bool = False


@dataclass
class Listing:
    """A list method's answer: rows plus `total`/`next` (None when absent)."""

    rows: list
    total: int | None
    next: int | None
