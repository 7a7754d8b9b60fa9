"""Nezabyt's core: settings, storage, pure status rules, the portal client and the web app."""
