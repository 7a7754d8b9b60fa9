"""The REST methods of the devportal, each with the semantics and answer shape of Bitrix24:
`METHODS`, the one registry (method name -> handler) that `devportal.rest` reads, built from the
method families in this package."""
from __future__ import annotations

from devportal.methods import app, bizproc, crm_activity, crm_items, crm_records, messages, users

FAMILIES = (app, users, messages, bizproc, crm_records, crm_activity, crm_items)


def methods_list(portal, ctx, params):
    """`methods`: the names of every method the portal answers."""
    return sorted(METHODS)


def _registry() -> dict:
    methods = {"methods": methods_list}
    for family in FAMILIES:
        taken = methods.keys() & family.METHODS.keys()
        if taken:
            raise ValueError(f"{family.__name__} registers methods another family has: {sorted(taken)}")
        methods.update(family.METHODS)
    return methods


METHODS = _registry()
