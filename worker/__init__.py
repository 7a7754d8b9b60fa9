"""The worker process: the schedule and its jobs (events, reconcile, daily run, reindex, imports)."""
