"""The Ray adapter: tasks run on Ray Data workers configured for one thread per task."""

from __future__ import annotations

import os

import pytest
import zarr

from pipelines.ray_data import RayDataExecutor


def _worker_threading(_: int) -> tuple[int | None, int]:
    return zarr.config.get("threading.max_workers"), os.getpid()


@pytest.mark.usefixtures("ray_session")
def test_workers_run_zarr_codecs_on_one_thread_each() -> None:
    results = list(RayDataExecutor().map(_worker_threading, list(range(4))))
    assert len(results) == 4
    assert {threads for threads, _ in results} == {1}
    assert os.getpid() not in {pid for _, pid in results}  # really on workers
