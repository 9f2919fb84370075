"""``python -m jobs.evaluate --config configs/evaluate.yaml``: score a model against baselines.

Rolls the model forward from every initial time of the held-out period, scores it and both
baselines per variable and lead time, records the scores in the skill table and writes a
Markdown + PNG report. Exit status: 0 it ran (whatever the verdict), 1 the model was refused
(corrupt file, wrong sha256, graph not matching its card), 2 configuration or data error.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rich.markup import escape
from rich.table import Table
from sqlalchemy import Engine

from jobs.common import (
    EXIT_ERROR,
    EXIT_OK,
    console,
    job_parser,
    read_config,
    run_recorded,
    setup_logging,
)
from pipelines.errors import ClimateError
from pipelines.evaluate.scoring import Scores
from schemas.evaluate_config import EvaluateConfig
from schemas.settings import Settings


def skill_table(scores: Scores, title: str) -> Table:
    """RMSE of the model and both baselines per channel and lead, with the ratio and ACC."""
    table = Table(title=title, caption="ratio = model / min(persistence, climatology)")
    for column in (
        "variable", "lead", "inits", "model", "persistence", "climatology", "ratio", "ACC",
    ):  # fmt: skip
        table.add_column(column, justify="right")
    v = scores.values
    for c, name in enumerate(scores.channel_names):
        for j, lead in enumerate(scores.lead_hours):
            model = float(v[("rmse", "model")][c, j])
            pers = float(v[("rmse", "persistence")][c, j])
            clim = float(v[("rmse", "climatology")][c, j])
            ratio = model / min(pers, clim)
            style = "green" if ratio < 1 else "red"
            table.add_row(
                name, str(lead), str(scores.n_inits[j]), f"{model:.3f}", f"{pers:.3f}",
                f"{clim:.3f}", f"[{style}]{ratio:.3f}[/{style}]",
                f"{float(v[('acc', 'model')][c, j]):.3f}",
            )  # fmt: skip
    return table


def print_verdict(problems: Sequence[str]) -> None:
    """The promotion gate's verdict, one line per failing (variable, lead)."""
    if not problems:
        console.print("promotion gate: [green]passes[/green]")
        return
    console.print("promotion gate: [red]fails[/red]")
    for problem in problems:
        console.print(f"  - {escape(problem)}", highlight=False)


def _run(config: EvaluateConfig, settings: Settings, engine: Engine, run_id: str) -> int:
    from pipelines.evaluate.pipeline import run_evaluation
    from pipelines.ledger import RunLedger

    result = run_evaluation(config, settings, engine, run_id)
    RunLedger(engine).finish(run_id, "succeeded", summary=result.summary())
    card = result.card
    console.print(skill_table(result.scores, f"{card.name} {card.version}: lat-weighted RMSE"))
    print_verdict(result.problems)
    console.print(f"report: {result.report}", highlight=False)
    return EXIT_OK


def evaluate(config_path: str, overrides: list[str], verbose: bool = False) -> int:
    """Run one evaluation; returns the exit status (0 ran, 1 model refused, 2 error)."""
    setup_logging(verbose)
    try:
        from pipelines.db import make_engine, migrate
        from pipelines.ledger import RunLedger
        from schemas.settings import load_settings

        config = read_config(EvaluateConfig, config_path, overrides)
        settings = load_settings()
        engine = make_engine(settings.database_url)
        migrate(engine)
        runs = RunLedger(engine)
        run_id = runs.start("evaluate", config.model_dump(mode="json"), config.run_id)
    except ClimateError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        return EXIT_ERROR
    return run_recorded(runs, run_id, lambda: _run(config, settings, engine, run_id))


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(
        "python -m jobs.evaluate", __doc__, "model.path=models/t2m-resconv/model.onnx"
    )
    args = parser.parse_args(argv)
    return evaluate(args.config, args.overrides, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
