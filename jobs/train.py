"""``python -m jobs.train --config configs/train.yaml``: train, export and score the model.

Reads the analysis store, trains the model on the training periods (seeded), exports
``model.onnx`` and ``model.card.json`` (the card holds the held-out scores) and optionally
registers them. Needs the ``train`` extra (PyTorch); running the model never does.
Exit status: 0 trained, 1 the export was refused (ONNX disagrees with torch, or the registry
refused it), 2 configuration, data or installation error.
"""

from __future__ import annotations

import sys

from rich.markup import escape

from jobs.common import (
    EXIT_ERROR,
    EXIT_OK,
    console,
    job_parser,
    read_config,
    run_recorded,
    setup_logging,
)
from jobs.evaluate import print_verdict, skill_table
from pipelines.errors import ClimateError, ConfigError
from schemas.train_config import TrainConfig


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "training needs PyTorch, which is not installed: pip install -e '.[train]' "
            "(running and evaluating models does not need it)"
        ) from exc


def _train(config: TrainConfig, run_id: str) -> int:
    from pipelines.db import make_engine
    from pipelines.ledger import RunLedger
    from pipelines.training_run import train_from_config
    from schemas.settings import load_settings

    settings = load_settings()
    engine = make_engine(settings.database_url)
    with console.status("training") as status:
        result = train_from_config(config, settings, engine, report=status.update)
    card, registered = result.card, result.registered
    problems = list(card.scores.get("gate_problems", []))
    RunLedger(engine).finish(run_id, "succeeded", summary=result.summary())
    console.print(skill_table(result.scores, f"{card.name} {card.version} on the held-out period"))
    print_verdict(problems)
    console.print(
        f"wrote {result.onnx_path} and {result.card_path} (sha256 {card.sha256}); "
        f"trained in {result.trained.seconds:.0f} s; max |ONNX - torch| "
        f"{result.max_onnx_difference:.2g}"
        + (f"; registered at {registered}" if registered else ""),
        highlight=False,
    )
    return EXIT_OK


def train(config_path: str, overrides: list[str], verbose: bool = False) -> int:
    """Run one training; returns the exit status (0 trained, 1 refused, 2 error)."""
    setup_logging(verbose)
    try:
        from pipelines.db import make_engine, migrate
        from pipelines.ledger import RunLedger
        from schemas.settings import load_settings

        config = read_config(TrainConfig, config_path, overrides)
        _require_torch()
        engine = make_engine(load_settings().database_url)
        migrate(engine)
        runs = RunLedger(engine)
        run_id = runs.start("train", config.model_dump(mode="json"), config.run_id)
    except ClimateError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        return EXIT_ERROR
    return run_recorded(runs, run_id, lambda: _train(config, run_id))


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("python -m jobs.train", __doc__, "schedule.epochs=2")
    args = parser.parse_args(argv)
    return train(args.config, args.overrides, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
