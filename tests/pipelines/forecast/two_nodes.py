"""Run one forecast on a two-node ``ray.cluster_utils.Cluster`` (both nodes on this machine).

``python -m tests.pipelines.forecast.two_nodes CONFIG.json DATABASE_URL SUMMARY.json``: started
in a subprocess by ``test_multinode.py`` so its cluster never meets the suite's session Ray.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from pipelines.db import make_engine, migrate
from pipelines.forecast.runner import run_forecast
from schemas.forecast_config import ForecastConfig
from schemas.settings import Settings


def main(config_path: str, database_url: str, summary_path: str) -> int:
    config = ForecastConfig.model_validate_json(Path(config_path).read_text())
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.WARNING)
        cluster.wait_for_nodes()
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        # start work only once both actors run: on a loaded machine the first actor could
        # otherwise finish every batch before the second one has started
        context.wait_for_min_actors_s = 120
        engine = make_engine(database_url)
        migrate(engine)
        summary = run_forecast(config, Settings(database_url=database_url), engine)
        alive = [node for node in ray.nodes() if node["Alive"]]
        result = {**summary.as_dict(), "cluster_nodes": len(alive)}
        Path(summary_path).write_text(json.dumps(result))
    finally:
        ray.shutdown()
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
