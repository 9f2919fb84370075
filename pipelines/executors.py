"""How the ingest (and later pipelines) fan work out: serially, or over Ray Data."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

TaskT = TypeVar("TaskT")
ResultT = TypeVar("ResultT")


class Executor(Protocol):
    """Applies a function to every item, yielding results as they complete (any order)."""

    def map(self, fn: Callable[[TaskT], ResultT], items: Sequence[TaskT]) -> Iterator[ResultT]: ...

    @property
    def parallelism(self) -> int: ...


class SerialExecutor:
    """Runs everything in this process; for debugging and for tests of the core logic."""

    parallelism = 1

    def map(self, fn: Callable[[TaskT], ResultT], items: Sequence[TaskT]) -> Iterator[ResultT]:
        for item in items:
            yield fn(item)
