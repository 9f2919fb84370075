"""What every entrypoint shares: config loading with clear errors, logging, Ray, progress bars."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from pipelines.errors import ConfigError
from schemas.config import load_config

ModelT = TypeVar("ModelT", bound=BaseModel)
console = Console(stderr=True)


def read_config(model: type[ModelT], path: str | Path, overrides: list[str] | None) -> ModelT:
    """Load and validate a config before any work starts; a ConfigError names key and value."""
    try:
        return load_config(model, path, overrides)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


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
