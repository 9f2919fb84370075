"""What every entrypoint shares: config loading with clear errors, logging, Ray, progress bars."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from pipelines.errors import ClimateError, ConfigError, ModelError
from schemas.config import load_config

if TYPE_CHECKING:
    from pipelines.ledger import RunLedger

ModelT = TypeVar("ModelT", bound=BaseModel)
console = Console(stderr=True)
EXIT_OK, EXIT_REFUSED, EXIT_ERROR = 0, 1, 2


def job_parser(prog: str, description: str | None, example: str) -> argparse.ArgumentParser:
    """The arguments every entrypoint takes: ``--config``, dotted ``--set`` overrides, ``-v``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"dotted override, e.g. {example}",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def run_recorded(runs: RunLedger, run_id: str, work: Callable[[], int]) -> int:
    """Run ``work`` for a started run; a failure marks the run failed and says why.

    Returns the exit status: ``work``'s own, 1 when a model was refused, 2 for other errors.
    """
    try:
        return work()
    except ClimateError as exc:
        runs.finish(run_id, "failed", error=str(exc))
        refused = isinstance(exc, ModelError)
        label = "[red]refused:[/red]" if refused else "[red]error:[/red]"
        console.print(f"{label} {escape(str(exc))}", highlight=False)
        return EXIT_REFUSED if refused else EXIT_ERROR
    except BaseException as exc:
        runs.finish(run_id, "failed", error=f"{type(exc).__name__}: {exc}")
        raise


@contextmanager
def typer_exit_codes(refused: type[ClimateError]) -> Iterator[None]:
    """For typer commands: ``refused`` errors exit 1, any other of ours 2, each printed."""
    import typer

    try:
        yield
    except refused as exc:
        console.print(f"[red]refused:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_REFUSED) from exc
    except ClimateError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_ERROR) from exc


def read_config(model: type[ModelT], path: str | Path, overrides: list[str] | None) -> ModelT:
    """Load and validate a config before any work starts; a ConfigError names key and value."""
    try:
        return load_config(model, path, overrides)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


# Loggers whose INFO lines the default (WARNING) level still shows: choices made for the user.
SHOWN_CHOICES = ("pipelines.models.resolve",)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in SHOWN_CHOICES:
        logging.getLogger(name).setLevel(logging.INFO)


class BarProgress:
    """Rich progress bars for the pipeline stages (writes to stderr)."""

    def __init__(self) -> None:
        self.bars = Progress(
            TextColumn("{task.description:>8}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> BarProgress:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def stage(self, name: str, total: int) -> None:
        self.tasks[name] = self.bars.add_task(name, total=total)

    def advance(self, name: str) -> None:
        self.bars.advance(self.tasks[name])
