"""A model's training periods and whether a scored period overlaps them.

The one place that decides "was this evaluated on training data?": the promotion gate
(:mod:`pipelines.skill_gate`) uses it on the initial times an evaluation run scored,
``climate evaluate`` (:func:`pipelines.evaluate.pipeline.run_evaluation`) on the configured
held-out period before any compute.

A card names its training periods in ``training["periods"]``: a list of ``[first, last]`` ISO
times, both included (see ``pipelines.training_run``), e.g.
``[["2019-03-01T00:00:00Z", "2019-03-24T23:00:00Z"]]``. A card without that key (a model built
by hand or by the tests) has no training period: nothing can overlap it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from pipelines.errors import ModelError
from schemas.model_card import ModelCard
from schemas.train_config import TimeRange

# [first, last]: both times included.
Period = tuple[datetime, datetime]


def _time(value: object) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = datetime.fromisoformat(value)  # ValueError when not an ISO time
    else:
        raise ValueError(f"{value!r} is not an ISO time")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def training_periods(card: ModelCard) -> list[Period]:
    """The periods the model was trained on, from ``card.training["periods"]``.

    Parameters
    ----------
    card
        The model's card.

    Returns
    -------
    list of (datetime, datetime)
        ``(first, last)`` UTC times, both included; [] when the card names no periods.

    Raises
    ------
    ModelError
        ``training.periods`` is there but is not a list of ``[first, last]`` ISO times.
    """
    raw = card.training.get("periods")
    if raw is None:
        return []
    periods: list[Period] = []
    try:
        if not isinstance(raw, list):
            raise ValueError("not a list")
        for pair in raw:
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise ValueError(f"{pair!r} is not a [first, last] pair")
            first, last = _time(pair[0]), _time(pair[1])
            if last < first:
                raise ValueError(f"{pair!r} ends before it starts")
            periods.append((first, last))
    except ValueError as exc:
        raise ModelError(
            f"the card of {card.name} {card.version} has training.periods {raw!r}, which is not "
            f"a list of [first, last] ISO times ({exc}); fix the card (training.periods as "
            'written by climate train, e.g. [["2019-03-01T00:00:00Z", "2019-03-24T23:00:00Z"]])'
        ) from exc
    return periods


def overlapping(
    periods: Sequence[Period],
    start: datetime | None,
    end: datetime | None,
    *,
    end_included: bool = True,
) -> list[Period]:
    """The ``periods`` that share at least one time with ``start .. end``.

    Parameters
    ----------
    periods
        ``(first, last)`` pairs, both included (e.g. :func:`training_periods`).
    start, end
        The other period; ``None`` reaches back or forward without limit.
    end_included
        Whether ``end`` itself belongs to the period: True for the initial times an evaluation
        scored (``period_start .. period_end``), False for a :class:`TimeRange`
        (``start <= t < end``).

    Returns
    -------
    list of (datetime, datetime)
        The overlapping periods, in their given order.
    """
    found = []
    for first, last in periods:
        after_start = start is None or start <= last
        before_end = end is None or (first <= end if end_included else first < end)
        if after_start and before_end:
            found.append((first, last))
    return found


def show_period(period: Period) -> str:
    """``2019-03-01T00:00Z..2019-03-24T23:00Z``."""
    return f"{period[0]:%Y-%m-%dT%H:%MZ}..{period[1]:%Y-%m-%dT%H:%MZ}"


def show_periods(periods: Sequence[Period]) -> str:
    """The periods, comma-separated (see :func:`show_period`)."""
    return ", ".join(show_period(p) for p in periods)


def _show_range(period: TimeRange) -> str:
    start = "the start of the store" if period.start is None else f"{period.start:%Y-%m-%dT%H:%MZ}"
    start += "" if period.start is None else " (included)"
    end = "the end of the store" if period.end is None else f"{period.end:%Y-%m-%dT%H:%MZ}"
    end += "" if period.end is None else " (excluded)"
    return f"{start} to {end}"


def check_held_out(held_out: TimeRange, card: ModelCard) -> None:
    """Refuse to evaluate a model on a held-out period it was trained on.

    Parameters
    ----------
    held_out
        The configured held-out period (``config.split.held_out``).
    card
        The model's card; its ``training["periods"]`` are the training periods.

    Raises
    ------
    ModelError
        ``held_out`` overlaps one of the training periods (both are named), or the card's
        training periods cannot be read.
    """
    trained = training_periods(card)
    clash = overlapping(trained, held_out.start, held_out.end, end_included=False)
    if clash:
        raise ModelError(
            f"evaluation refused: the held_out period {_show_range(held_out)} overlaps the "
            f"training periods of {card.name} {card.version} ({show_periods(clash)}), so the "
            "scores would be measured on training data; choose a held_out period outside the "
            f"model's training periods ({show_periods(trained)}), e.g. a split.held_out.start "
            f"after {max(last for _, last in trained):%Y-%m-%dT%H:%MZ}"
        )
