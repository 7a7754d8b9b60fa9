"""Nezabyt's install lifecycle on a portal: installer, token store, the registration manifest."""
