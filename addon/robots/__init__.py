"""Pipeline robots (seeds 000, 001, 002, 004): one module per robot, the registry that lists them, the one runner."""
