"""Bulk load of statuses: read a CSV/XLSX file, validate each row, match it to a CRM client, store
the rows of an ImportJob for preview; the worker applies them later (worker.imports)."""
