"""``climate keys``: create, list and revoke API keys of the online API.

Exit status: 0 done, 1 refused (no such key), 2 bad input, configuration or connection error.
``create`` prints the new key alone on stdout (so ``climate keys create NAME > key.txt`` keeps
it) and its description on stderr; the key cannot be shown again: only its hash is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from jobs.common import console, setup_logging, typer_exit_codes
from pipelines.errors import ConfigError

if TYPE_CHECKING:  # imported when a command runs: `climate --help` stays fast
    from pipelines.api_keys import ApiKeys, KeyRecord


app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="API keys of the online API: create, list and revoke.",
)
out = Console(soft_wrap=True)

VerboseOption = Annotated[bool, typer.Option("--verbose", "-v")]


def open_keys() -> ApiKeys:
    """Settings -> migrated database at DATABASE_URL -> the key store."""
    from pipelines.api_keys import ApiKeys
    from pipelines.db import make_engine, migrate
    from schemas.settings import load_settings

    engine = make_engine(load_settings().database_url)
    migrate(engine)
    return ApiKeys(engine, cache_ttl_s=0)


def _run(verbose: bool, work: Callable[[ApiKeys], None]) -> None:
    from pipelines.api_keys import KeyNotFoundError

    setup_logging(verbose)
    with typer_exit_codes(KeyNotFoundError):
        work(open_keys())


def _when(value: object) -> str:
    return "" if value is None else str(value)[:19]


def _rate(record: KeyRecord) -> str:
    return "default" if record.rate_per_minute is None else str(record.rate_per_minute)


@app.command("create")
def create_command(
    name: Annotated[str, typer.Argument(help="who the key is for, e.g. acme-dashboard")],
    rate: Annotated[
        int | None,
        typer.Option("--rate", min=1, help="requests per minute; default: the service's"),
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Create a key and print it once: store it now, it cannot be shown again."""

    def work(keys: ApiKeys) -> None:
        try:
            record, key = keys.create(name, rate)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        console.print(
            f"created API key {record.key_id} for {escape(record.name)} "
            f"(rate per minute: {_rate(record)})",
            highlight=False,
            soft_wrap=True,
        )
        out.print(key, markup=False, highlight=False)
        console.print(
            "[yellow]warning:[/yellow] this is the only time the key is shown (only its hash "
            "is stored); hand it over now. Lost? revoke it with "
            f"`climate keys revoke {record.key_id}` and create another.",
            highlight=False,
            soft_wrap=True,
        )

    _run(verbose, work)


@app.command("list")
def list_command(
    active: Annotated[bool, typer.Option("--active", help="only keys not revoked")] = False,
    verbose: VerboseOption = False,
) -> None:
    """List keys: id, name, rate, created, revoked (secrets are not stored)."""

    def work(keys: ApiKeys) -> None:
        records = keys.list(include_revoked=not active)
        if not records:
            out.print("no API keys; create one with `climate keys create NAME`")
            return
        table = Table(title="API keys")
        for column in ("key id", "name", "rate/min", "created", "revoked"):
            table.add_column(column, no_wrap=column != "name")
        for r in records:
            table.add_row(r.key_id, r.name, _rate(r), _when(r.created_at), _when(r.revoked_at))
        out.print(table)

    _run(verbose, work)


@app.command("revoke")
def revoke_command(
    key_id: Annotated[str, typer.Argument(help="the key's id, as `climate keys list` shows")],
    verbose: VerboseOption = False,
) -> None:
    """Revoke a key: it is refused (403) from then on, within the API's cache time."""

    def work(keys: ApiKeys) -> None:
        record = keys.revoke(key_id)
        out.print(
            f"revoked API key {record.key_id} ({record.name}) at {_when(record.revoked_at)} UTC",
            markup=False,
            highlight=False,
        )

    _run(verbose, work)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
