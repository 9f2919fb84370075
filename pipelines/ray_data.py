"""The one module that adapts the pipelines to Ray: ray.init, Ray Data task and actor fan-out,
cluster resources and Ray's errors. No other module of the library imports Ray."""

from __future__ import annotations

import logging
import pickle
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import ray

from schemas.config import RayConfig
from schemas.settings import Settings

log = logging.getLogger(__name__)
TaskT = TypeVar("TaskT")
# One thread per task, as Ray already sets OMP_NUM_THREADS: Ray runs a task on every CPU, and
# zarr's own codec threads in each of them would only compete for the same cores.
WORKER_ENV = {"ZARR_THREADING__MAX_WORKERS": "1"}
ResultT = TypeVar("ResultT")


def ensure_ray(config: RayConfig, settings: Settings) -> None:
    """Connect to the configured cluster, or start a local Ray, unless already connected."""
    if ray.is_initialized():
        return
    address = config.address or settings.ray_address
    kwargs: dict[str, Any] = {
        "ignore_reinit_error": True,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
        "runtime_env": {"env_vars": WORKER_ENV},
    }
    if address:
        kwargs["address"] = address
    else:
        kwargs["num_cpus"] = config.num_cpus
        kwargs["include_dashboard"] = False
    ray.init(**kwargs)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    log.info("Ray ready: %s", ray.cluster_resources())


class _Apply:
    """Wraps a task function into a Ray Data row mapper over pickled task and result bytes,
    so rows stay plain binary Arrow columns whatever the task holds."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"result": pickle.dumps(self.fn(pickle.loads(row["task"])))}


class RayDataExecutor:
    """Fans items out over Ray Data tasks: ``blocks_per_worker`` blocks of consecutive items
    per worker, each task working through its block and sending every result back as soon as
    it is ready (one output block per row), so results stream while the tasks stay few."""

    def __init__(
        self,
        concurrency: int | None = None,
        cpus_per_task: float = 1.0,
        blocks_per_worker: int = 1,
    ) -> None:
        self.cpus_per_task = cpus_per_task
        self.blocks_per_worker = max(1, blocks_per_worker)
        available = int(ray.cluster_resources().get("CPU", 1) // cpus_per_task)
        self._parallelism = max(1, concurrency or available)

    @property
    def parallelism(self) -> int:
        return self._parallelism

    def map(self, fn: Callable[[TaskT], ResultT], items: Sequence[TaskT]) -> Iterator[ResultT]:
        if not items:
            return
        workers = min(self._parallelism, len(items))
        dataset = ray.data.from_items(
            [{"task": pickle.dumps(item)} for item in items],
            override_num_blocks=min(len(items), workers * self.blocks_per_worker),
        ).map(
            _Apply(fn),
            num_cpus=self.cpus_per_task,
            compute=ray.data.TaskPoolStrategy(size=workers),
        )
        context = dataset.context
        # Every result is its own output block, so it reaches the driver when it is ready
        # rather than when the task's whole block is done (rows are a few hundred bytes).
        context.target_max_block_size = 1
        # One operator only: Ray Data's per-operator resource reservation (meant to keep the
        # stages of a longer pipeline from starving each other) would hold back half of the
        # CPUs at first, running the first tasks one after another on a small cluster.
        context.op_resource_reservation_enabled = False
        for row in dataset.iter_rows():
            yield pickle.loads(row["result"])


def cluster_resources() -> dict[str, float]:
    """The connected cluster's total resources (``CPU``, ``GPU``, ...)."""
    return {key: float(value) for key, value in ray.cluster_resources().items()}


def is_ray_error(exc: BaseException) -> bool:
    """Whether ``exc`` is Ray's wrapper of a failure inside a task or actor."""
    return isinstance(exc, ray.exceptions.RayError)


def node_id() -> str:
    """The Ray node this process runs on; the host name outside Ray."""
    if ray.is_initialized():
        return str(ray.get_runtime_context().get_node_id())
    return socket.gethostname()


def map_with_actors(
    items: list[dict[str, Any]],
    actor: type,
    actor_kwargs: dict[str, Any],
    *,
    batch_size: int,
    actors: int,
    cpus_per_actor: float,
    gpus_per_actor: float | None,
) -> Iterator[dict[str, Any]]:
    """Run a callable class over ``items`` on a pool of ``actors`` Ray Data actors.

    Each actor is built once with ``actor_kwargs`` and called on numpy batches of
    ``batch_size`` items; the batches it returns are yielded as they arrive.
    """
    blocks = max(1, -(-len(items) // batch_size))
    dataset = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        actor,
        fn_constructor_kwargs=actor_kwargs,
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor,
    )
    yield from dataset.iter_batches(batch_size=None, batch_format="numpy")
