"""Pipeline robots (seeds 000, 001, 002, 004): the catalog registered on portals, the pure rules, storage helpers."""
