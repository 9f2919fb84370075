"""Tiny ONNX forecast models built in code, with matching cards: for tests, benchmarks, smoke tests.

Every model here is ``next = a * last + b * mean(history) + clim[hour]`` (``clim`` optional),
built with ``onnx.helper`` and written with its card beside it, so the whole forecast pipeline
runs on any CPU without a trained model. :func:`fit_diurnal_model` fits ``clim`` (the mean
hourly tendency per hour of day and grid point) on an analysis store: a persistence model with
a diurnal cycle, good enough for the demo.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import xarray as xr
from onnx import TensorProto, helper, numpy_helper

from pipelines.models.artefacts import file_sha256
from schemas.model_card import GridSpec, ModelCard, ModelIO, ModelOutputs, card_path_for

OPSET = 17


def _constant(name: str, value: np.ndarray | float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def linear_graph(
    history: int,
    channels: int,
    n_lat: int,
    n_lon: int,
    a: float | Sequence[float] = 1.0,
    b: float | Sequence[float] = 0.0,
    clim: np.ndarray | None = None,
    name: str = "linear",
) -> onnx.ModelProto:
    """The ONNX graph ``next = a*last + b*mean(history) + clim[hour]``.

    Parameters
    ----------
    history, channels, n_lat, n_lon
        Sizes of the ``fields`` input (batch is symbolic).
    a, b
        Scalars or one value per channel.
    clim
        float32 [24, channels, n_lat or 1, n_lon or 1] added by target hour; none when None.
    """
    fields = helper.make_tensor_value_info(
        "fields", TensorProto.FLOAT, ["batch", history, channels, n_lat, n_lon]
    )
    hour = helper.make_tensor_value_info("hour", TensorProto.INT64, ["batch"])
    output = helper.make_tensor_value_info(
        "next", TensorProto.FLOAT, ["batch", channels, n_lat, n_lon]
    )
    per_channel = (-1, 1, 1)
    init = [
        numpy_helper.from_array(np.asarray(history - 1, dtype=np.int64), "last_index"),
        _constant("a", np.reshape(np.asarray(a, dtype=np.float32), per_channel)),
        _constant("b", np.reshape(np.asarray(b, dtype=np.float32), per_channel)),
    ]
    nodes = [
        helper.make_node("Gather", ["fields", "last_index"], ["last"], axis=1),
        helper.make_node("ReduceMean", ["fields"], ["mean"], axes=[1], keepdims=0),
        helper.make_node("Mul", ["last", "a"], ["a_last"]),
        helper.make_node("Mul", ["mean", "b"], ["b_mean"]),
    ]
    if clim is None:
        nodes.append(helper.make_node("Add", ["a_last", "b_mean"], ["next"]))
    else:
        table = np.asarray(clim, dtype=np.float32)
        if table.ndim != 4 or table.shape[:2] != (24, channels):
            raise ValueError(f"clim has shape {table.shape}, expected [24, {channels}, lat, lon]")
        init.append(_constant("clim", table))
        nodes += [
            helper.make_node("Gather", ["clim", "hour"], ["clim_at_hour"], axis=0),
            helper.make_node("Add", ["a_last", "b_mean"], ["dynamics"]),
            helper.make_node("Add", ["dynamics", "clim_at_hour"], ["next"]),
        ]
    graph = helper.make_graph(nodes, name, [fields, hour], [output], initializer=init)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="climate-testing"
    )
    model.ir_version = 8  # readable by every ONNX Runtime since 1.10
    onnx.checker.check_model(model)
    return model


def write_model(
    model: onnx.ModelProto,
    path: str | Path,
    *,
    lat: Sequence[float],
    lon: Sequence[float],
    variables: Sequence[str],
    levels: Sequence[int] = (),
    history: int,
    time_step_hours: int = 1,
    max_lead_hours: int | None = None,
    name: str = "linear",
    version: str | None = None,
    training: dict[str, Any] | None = None,
) -> ModelCard:
    """Save ``model`` to ``path`` and its card beside it (``*.card.json``); return the card."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    sha256 = file_sha256(path)
    card = ModelCard(
        name=name,
        version=version or sha256[:12],
        sha256=sha256,
        created_at=datetime.now(UTC),
        inputs=ModelIO(
            variables=list(variables),
            levels=list(levels),
            history=history,
            time_step_hours=time_step_hours,
            max_lead_hours=max_lead_hours,
            grid=GridSpec(lat=[float(v) for v in lat], lon=[float(v) for v in lon]),
        ),
        outputs=ModelOutputs(variables=list(variables)),
        normalisation={"kind": "none", "note": "raw physical units in and out"},
        training=training or {"kind": "built by tests.helpers.models"},
        code_version="tests.helpers.models",
    )
    card.write(card_path_for(path))
    return card


def make_linear_model(
    path: str | Path,
    lat: Sequence[float],
    lon: Sequence[float],
    *,
    variables: Sequence[str] = ("t2m",),
    levels: Sequence[int] = (),
    history: int = 2,
    a: float | Sequence[float] = 0.75,
    b: float | Sequence[float] = 0.25,
    clim: np.ndarray | None = None,
    time_step_hours: int = 1,
    max_lead_hours: int | None = None,
    name: str = "linear",
) -> ModelCard:
    """Build, save and card a linear model on the grid ``lat`` x ``lon``.

    Returns
    -------
    ModelCard
        The card, also written to ``card_path_for(path)``.
    """
    channels = len(variables) * max(1, len(levels))
    model = linear_graph(history, channels, len(lat), len(lon), a, b, clim, name)
    return write_model(
        model,
        path,
        lat=lat,
        lon=lon,
        variables=variables,
        levels=levels,
        history=history,
        time_step_hours=time_step_hours,
        max_lead_hours=max_lead_hours,
        name=name,
        training={"kind": "fixed weights", "a": a, "b": b, "clim": clim is not None},
    )


def persistence_model(
    path: str | Path,
    lat: Sequence[float],
    lon: Sequence[float],
    *,
    variables: Sequence[str] = ("t2m",),
    levels: Sequence[int] = (),
    history: int = 1,
    time_step_hours: int = 1,
) -> ModelCard:
    """A model that copies the last input field forward (a mock model for tests)."""
    return make_linear_model(
        path,
        lat,
        lon,
        variables=variables,
        levels=levels,
        history=history,
        a=1.0,
        b=0.0,
        time_step_hours=time_step_hours,
        name="persistence",
    )


def fit_diurnal_model(
    dataset: xr.Dataset,
    path: str | Path,
    *,
    variables: Sequence[str] = ("t2m",),
    history: int = 2,
) -> ModelCard:
    """Fit ``next = last + clim[hour]`` on an hourly single-level analysis dataset.

    ``clim[h]`` is the mean one-hour change arriving at hour ``h``, per grid point and
    variable. Returns the card, written beside ``path``.
    """
    seconds = dataset["time"].values.astype("datetime64[s]").astype("int64")
    if len(seconds) < 25 or not np.all(np.diff(seconds) == 3600):
        raise ValueError("fit_diurnal_model needs at least 25 consecutive hourly fields")
    hours = (seconds[1:] // 3600) % 24
    tables = []
    for name in variables:
        values = dataset[name].values.astype(np.float64)
        tendency = values[1:] - values[:-1]
        tables.append(np.stack([tendency[hours == h].mean(axis=0) for h in range(24)]))
    clim = np.stack(tables, axis=1).astype(np.float32)  # [24, C, lat, lon]
    first, last = str(dataset["time"].values[0])[:19], str(dataset["time"].values[-1])[:19]
    model = linear_graph(
        history, len(variables), dataset.sizes["lat"], dataset.sizes["lon"], 1.0, 0.0, clim
    )
    return write_model(
        model,
        path,
        lat=dataset["lat"].values.tolist(),
        lon=dataset["lon"].values.tolist(),
        variables=variables,
        history=history,
        name="diurnal-persistence",
        training={"kind": "mean hourly tendency by hour of day", "period": [first, last]},
    )


def cnn_graph(
    history: int,
    channels: int,
    n_lat: int,
    n_lon: int,
    hidden: int = 16,
    layers: int = 3,
    seed: int = 0,
) -> onnx.ModelProto:
    """A residual CNN ``next = last + convs(fields) + 0 * hour``: compute-bound like real models.

    Seeded small random 3x3 convolutions over the stacked ``history x channels`` inputs; used
    by benchmarks, where the linear model would measure only memory traffic.
    """
    rng = np.random.default_rng(seed)
    fields = helper.make_tensor_value_info(
        "fields", TensorProto.FLOAT, ["batch", history, channels, n_lat, n_lon]
    )
    hour = helper.make_tensor_value_info("hour", TensorProto.INT64, ["batch"])
    output = helper.make_tensor_value_info(
        "next", TensorProto.FLOAT, ["batch", channels, n_lat, n_lon]
    )
    init = [
        numpy_helper.from_array(np.asarray(history - 1, dtype=np.int64), "last_index"),
        numpy_helper.from_array(
            np.asarray([0, history * channels, n_lat, n_lon], dtype=np.int64), "stacked_shape"
        ),
        _constant("hour_table", np.zeros((24, channels, 1, 1))),
    ]
    nodes = [
        helper.make_node("Gather", ["fields", "last_index"], ["last"], axis=1),
        helper.make_node("Reshape", ["fields", "stacked_shape"], ["x0"]),
        helper.make_node("Gather", ["hour_table", "hour"], ["hour_term"], axis=0),
    ]
    width = history * channels
    for i in range(layers):
        out_width = channels if i == layers - 1 else hidden
        scale = 0.1 / np.sqrt(width * 9)
        init.append(_constant(f"w{i}", rng.normal(0, scale, (out_width, width, 3, 3))))
        init.append(_constant(f"b{i}", np.zeros(out_width)))
        conv = f"c{i}" if i < layers - 1 else "delta"
        nodes.append(
            helper.make_node(
                "Conv", [f"x{i}", f"w{i}", f"b{i}"], [conv], kernel_shape=[3, 3], pads=[1, 1, 1, 1]
            )
        )
        if i < layers - 1:
            nodes.append(helper.make_node("Relu", [conv], [f"x{i + 1}"]))
        width = out_width
    nodes += [
        helper.make_node("Add", ["last", "delta"], ["stepped"]),
        helper.make_node("Add", ["stepped", "hour_term"], ["next"]),
    ]
    graph = helper.make_graph(nodes, "cnn", [fields, hour], [output], initializer=init)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="climate-testing"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def make_cnn_model(
    path: str | Path,
    lat: Sequence[float],
    lon: Sequence[float],
    *,
    variables: Sequence[str] = ("t2m",),
    history: int = 2,
    hidden: int = 16,
    layers: int = 3,
    seed: int = 0,
) -> ModelCard:
    """Build, save and card a :func:`cnn_graph` model on the grid ``lat`` x ``lon``."""
    model = cnn_graph(history, len(variables), len(lat), len(lon), hidden, layers, seed)
    return write_model(
        model,
        path,
        lat=lat,
        lon=lon,
        variables=variables,
        history=history,
        name="cnn",
        training={"kind": "random weights", "hidden": hidden, "layers": layers, "seed": seed},
    )
