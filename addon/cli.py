"""The `nezabyt` console script. Subcommands live with their feature and load lazily."""
from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command; loaded only when used.
LAZY_COMMANDS = {
    "devportal": "devportal.cli:devportal_command",
    "worker": "worker.cli:worker_command",
    "decay": "worker.cli:decay_command",
    "reconcile": "worker.cli:reconcile_command",
    "reindex": "worker.cli:reindex_command",
    "debug": "worker.cli:debug_command",
    "import": "worker.cli:import_command",
    "demo": "demo.cli:demo_command",
    "web": "addon.web:web_command",
    "robots": "addon.robots.cli:robots_command",
    "doctor": "addon.ops_cli:doctor_command",
    "keys": "addon.ops_cli:keys_command",
}


class LazyGroup(click.Group):
    def invoke(self, ctx):
        from addon.config import ConfigError

        try:
            return super().invoke(ctx)
        except ConfigError as exc:  # an unsafe environment: say how to fix it, no traceback
            raise click.ClickException(str(exc)) from exc

    def list_commands(self, ctx):
        present = {name for name, target in LAZY_COMMANDS.items() if _module_exists(target.split(":")[0])}
        return sorted(set(super().list_commands(ctx)) | present)

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None or name not in LAZY_COMMANDS:
            return command
        module, attr = LAZY_COMMANDS[name].split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise click.ClickException(f"command {name!r} is not available: {exc}") from exc


def _module_exists(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@click.group(cls=LazyGroup)
def main() -> None:
    """Nezabyt: keeps sales managers from forgetting their clients in Bitrix24."""


@main.group()
def db() -> None:
    """Database schema management."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations to DATABASE_URL (a SQLite file by default)."""
    import os

    from addon.config import default_database_url
    from addon.db import upgrade_database

    # Migrations need the database only: the release step runs without the app's secrets.
    database_url = os.environ.get("DATABASE_URL") or default_database_url()
    upgrade_database(database_url, revision)
    click.echo(f"database at {_safe_url(database_url)} is at {revision}")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":  # pragma: no cover
    main()
