"""`nezabyt demo`: the command that runs a demo and prints its summary, then serves or ends."""
from __future__ import annotations

import dataclasses
import json
import logging
import signal
import threading
from pathlib import Path

import click

from addon.options import Options
from demo.config import DemoConfig
from demo.month import run_demo
from demo.report import summary_text


@click.command("demo")
@click.option("--contacts", default=12000, show_default=True, type=int)
@click.option("--companies", default=None, type=int, help="companies to seed (default: a sixth of --contacts)")
@click.option("--managers", default=12, show_default=True, type=int)
@click.option("--days", default=30, show_default=True, type=int, help="days of work to simulate")
@click.option("--seed", default=1, show_default=True, type=int, help="random seed of the data and the month")
@click.option("--last-day", default=None, type=click.DateTime(["%Y-%m-%d"]),
              help="the simulated month's last day (default: today)")
@click.option("--database-url", default=None, help="where to keep the data (default: a fresh SQLite file in a "
                                                   "temporary folder, removed on exit)")
@click.option("--exit", "exit_after", is_flag=True, help="end after the summary instead of serving")
@click.option("--report", "report_path", default=None, type=click.Path(dir_okay=False),
              help="also write the summary's figures (and the status mix day by day) to this JSON file")
def demo_command(contacts, companies, managers, days, seed, last_day, database_url, exit_after, report_path):
    """Run Nezabyt end to end on this machine: a seeded local portal, the app installed, a month simulated."""
    logging.getLogger("fast_bitrix24").setLevel(logging.WARNING)
    if companies is None:
        companies = contacts // 6
    config = DemoConfig(contacts=contacts, companies=companies, managers=managers, days=days, seed=seed,
                        database_url=database_url, last_day=last_day.date() if last_day else None)
    demo, res = run_demo(config, click.echo)
    try:
        click.echo("")
        click.echo(summary_text(res, {s.code: s.name for s in Options().statuses}))
        if report_path:
            Path(report_path).write_text(json.dumps(dataclasses.asdict(res), ensure_ascii=False, indent=1,
                                                    default=str), encoding="utf-8")
        if exit_after:
            return
        click.echo(f"\nThe portal with the app inside: {res.devportal_url}/app  (CRM: {res.devportal_url}/)")
        click.echo("Serving; the worker keeps running on the portal's clock. Ctrl-C to stop.")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())  # a service manager's stop ends it cleanly too
        demo.serve(stop=stop)
    finally:
        demo.close()
