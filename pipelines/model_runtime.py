"""ONNX Runtime sessions for forecast models, shared by batch prediction and online serving.

``ModelRuntime.load`` verifies the file against its card (sha256), opens a session on exactly
the execution provider asked for (``cuda`` never falls back to the CPU), and checks the graph's
tensors against the card (handshake). ``check_dataset`` checks a card against the analysis
store's layout before any compute.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort
import xarray as xr

from pipelines.analysis_store import StoreLayout, layout_of
from pipelines.errors import ModelError, SchemaError
from schemas.model_card import ModelCard

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
_GRID_TOLERANCE = 1e-6


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, card: ModelCard) -> None:
    """Refuse a model file whose bytes are not the ones its card was written for."""
    try:
        found = file_sha256(path)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model file ({exc.strerror})") from exc
    if found != card.sha256:
        raise ModelError(
            f"{path}: sha256 {found} does not match the card's {card.sha256} "
            f"({card.name} {card.version}); the file and its card do not belong together: use "
            "the card written with this file, or re-export the model and its card"
        )


def load_card(path: str | Path) -> ModelCard:
    """Read a model card, translating every failure into a :class:`ModelError`."""
    try:
        return ModelCard.read(path)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model card ({exc.strerror})") from exc
    except ValueError as exc:
        raise ModelError(f"{path}: not a valid model card: {exc}") from exc


def cuda_available() -> bool:
    """Whether this ONNX Runtime build has the CUDA execution provider."""
    return CUDA in ort.get_available_providers()


def _providers(device: Device) -> tuple[list[str], str]:
    if device == "cpu":
        return [CPU], "cpu"
    if device == "cuda":
        if not cuda_available():
            raise ModelError(
                "device 'cuda' was asked for but this ONNX Runtime has no CUDAExecutionProvider "
                f"(available: {ort.get_available_providers()}); install onnxruntime-gpu on a "
                "machine with a CUDA GPU, or set device: cpu"
            )
        return [CUDA], "cuda"
    if device == "auto":
        return ([CUDA], "cuda") if cuda_available() else ([CPU], "cpu")
    raise ModelError(f"device {device!r} is not one of auto, cpu, cuda")


def _session_options(threads: int | None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = max(1, int(threads))
    options.log_severity_level = 3
    return options


def _open_session(path: Path, providers: list[str], threads: int | None) -> ort.InferenceSession:
    try:
        session = ort.InferenceSession(
            str(path), sess_options=_session_options(threads), providers=providers
        )
    except Exception as exc:  # ORT raises its own pybind exception types
        raise ModelError(
            f"{path}: ONNX Runtime cannot load the model with {providers} "
            f"({type(exc).__name__}: {str(exc).strip()[:300]}); the file may be corrupt or "
            "not an ONNX model: re-export it or fetch it again"
        ) from exc
    if providers == [CUDA]:
        session.disable_fallback()
        if session.get_providers()[:1] != [CUDA]:
            raise ModelError(
                f"{path}: the session runs on {session.get_providers()}, not on CUDA; is a GPU "
                "visible (CUDA_VISIBLE_DEVICES, num_gpus) and are the CUDA/cuDNN libraries "
                "installed? set device: cpu to run on the CPU"
            )
    return session


def _shape_matches(found: list[Any], expected: list[int | None]) -> bool:
    if len(found) != len(expected):
        return False
    for have, want in zip(found, expected, strict=True):
        if want is None:
            continue  # batch: any size, symbolic or fixed
        if isinstance(have, int) and have != want:
            return False
    return True


def _describe(arg: Any) -> str:
    return f"{arg.name} {arg.type} {list(arg.shape)}"


def handshake(session: ort.InferenceSession, card: ModelCard, where: str) -> None:
    """Check the graph's inputs and outputs against the card; ModelError naming both."""
    n_lat, n_lon = card.inputs.grid.shape
    channels = len(card.channels)
    expected: dict[str, tuple[str, list[int | None]]] = {
        card.tensors.fields: (
            "tensor(float)",
            [None, card.inputs.history, channels, n_lat, n_lon],
        ),
        card.tensors.hour: ("tensor(int64)", [None]),
    }
    wanted_output = (card.tensors.output, "tensor(float)", [None, channels, n_lat, n_lon])
    inputs = {arg.name: arg for arg in session.get_inputs()}
    outputs = {arg.name: arg for arg in session.get_outputs()}
    problems = []
    if set(inputs) != set(expected):
        problems.append(f"inputs {sorted(inputs)} (expected {sorted(expected)})")
    for name, (dtype, shape) in expected.items():
        arg = inputs.get(name)
        if arg is not None and (arg.type != dtype or not _shape_matches(arg.shape, shape)):
            problems.append(f"input {_describe(arg)} (expected {dtype} {shape})")
    name, dtype, shape = wanted_output
    arg = outputs.get(name)
    if arg is None:
        problems.append(f"outputs {sorted(outputs)} (expected {name!r})")
    elif arg.type != dtype or not _shape_matches(arg.shape, shape):
        problems.append(f"output {_describe(arg)} (expected {dtype} {shape})")
    if problems:
        raise ModelError(
            f"{where}: the ONNX graph does not match its card {card.name} {card.version} "
            f"({channels} channel(s) {card.channel_names}, history {card.inputs.history}, "
            f"grid {n_lat}x{n_lon}): found " + "; ".join(problems) + ". Use the card written "
            "with this model, or re-export the model for this card"
        )


class ModelRuntime:
    """One ONNX Runtime session and the card it was checked against.

    Build with :meth:`load`; the constructor takes an already checked session (tests).
    """

    def __init__(self, session: ort.InferenceSession, card: ModelCard, device: str) -> None:
        self.session = session
        self.card = card
        self.device = device
        self._binding = session.io_binding() if device == "cuda" else None

    @classmethod
    def load(
        cls,
        onnx_path: str | Path,
        card: ModelCard,
        device: Device = "auto",
        threads: int | None = None,
    ) -> ModelRuntime:
        """Verify, open and check a model.

        Parameters
        ----------
        onnx_path
            The ONNX file.
        card
            Its card; the file's sha256 must equal ``card.sha256``.
        device
            ``cpu``, ``cuda`` (CUDAExecutionProvider only; fails when unavailable) or ``auto``
            (CUDA when this ONNX Runtime has it, else the CPU; the choice is logged).
        threads
            ONNX Runtime intra-op threads; ORT's default (all cores) when None.

        Returns
        -------
        ModelRuntime
            Ready to :meth:`step` and :meth:`rollout`.

        Raises
        ------
        ModelError
            Missing or corrupt file, hash mismatch, unavailable device, graph not matching card.
        """
        path = Path(onnx_path)
        verify_sha256(path, card)
        providers, used = _providers(device)
        session = _open_session(path, providers, threads)
        handshake(session, card, str(path))
        log.info("model %s %s on %s (asked: %s)", card.name, card.version, used, device)
        return cls(session, card, used)

    def step(self, fields: np.ndarray, hours: np.ndarray) -> np.ndarray:
        """One model call: ``fields`` [B, H, C, lat, lon], target ``hours`` [B] -> [B, C, ...]."""
        fields = np.ascontiguousarray(fields, dtype=np.float32)
        hours = np.ascontiguousarray(hours, dtype=np.int64) % 24
        names = self.card.tensors
        if self._binding is None:
            out = self.session.run([names.output], {names.fields: fields, names.hour: hours})
            return np.asarray(out[0])
        binding = self._binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        binding.bind_ortvalue_input(
            names.fields, ort.OrtValue.ortvalue_from_numpy(fields, "cuda", 0)
        )
        binding.bind_ortvalue_input(names.hour, ort.OrtValue.ortvalue_from_numpy(hours, "cuda", 0))
        binding.bind_output(names.output, "cuda", 0)
        self.session.run_with_iobinding(binding)
        return np.asarray(binding.copy_outputs_to_cpu()[0])

    def rollout(
        self,
        history: np.ndarray,
        init_hours: np.ndarray,
        steps: int,
        keep: tuple[int, ...] | None = None,
    ) -> np.ndarray:
        """Roll the model forward ``steps`` time steps from ``history``.

        Parameters
        ----------
        history
            float32 [B, H, C, lat, lon], oldest first; the last field is at the initial time.
        init_hours
            Hour of day (UTC) of each initial time, [B].
        steps
            Number of model calls; step ``k`` (1-based) is at ``k * time_step_hours``.
        keep
            The steps (1-based, ascending) to return; all of them when None. Other steps are
            computed but not kept, so memory grows with ``len(keep)``, not ``steps``.

        Returns
        -------
        numpy.ndarray
            float32 [B, len(keep) or steps, C, lat, lon].
        """
        expected = (self.card.inputs.history, len(self.card.channels), *self.card.inputs.grid.shape)
        if history.ndim != 5 or history.shape[1:] != expected:
            raise ModelError(
                f"rollout history has shape {history.shape}, expected [batch, *{expected}]"
            )
        wanted = tuple(range(1, steps + 1)) if keep is None else tuple(keep)
        if any(k < 1 or k > steps for k in wanted) or list(wanted) != sorted(set(wanted)):
            raise ModelError(f"keep {wanted} must be ascending steps within 1..{steps}")
        slot = {k: i for i, k in enumerate(wanted)}
        state = np.array(history, dtype=np.float32, copy=True)
        hours = np.asarray(init_hours, dtype=np.int64)
        dt = self.card.inputs.time_step_hours
        out = np.empty((state.shape[0], len(wanted), *state.shape[2:]), dtype=np.float32)
        for k in range(1, steps + 1):
            hours = (hours + dt) % 24
            field = self.step(state, hours)
            if k in slot:
                out[:, slot[k]] = field
            state[:, :-1] = state[:, 1:]
            state[:, -1] = field
        return out


def _store_layout(dataset: StoreLayout | xr.Dataset) -> StoreLayout:
    return dataset if isinstance(dataset, StoreLayout) else layout_of(dataset)


def check_dataset(card: ModelCard, dataset: StoreLayout | xr.Dataset, where: str = "store") -> None:
    """Check that the store (its layout, or the dataset) holds what the model reads.

    Raises
    ------
    SchemaError
        A variable or level is missing, a variable's dimensions do not fit, or the grid
        differs; the message names what was found, what the card expects and the fix.
    """
    layout = _store_layout(dataset)
    grid = layout.grid
    problems = []
    missing = [name for name in card.inputs.variables if name not in layout.names]
    if missing:
        problems.append(
            f"variable(s) {missing} missing (the store has {list(layout.names)}): "
            "ingest them into the store"
        )
    levels = card.inputs.levels
    absent = [level for level in levels if level not in grid.level]
    if absent:
        problems.append(
            f"level(s) {absent} missing (the store has {list(grid.level)}): ingest those levels"
        )
    wanted_dims = ("time", "level", "lat", "lon") if levels else ("time", "lat", "lon")
    for var in layout.variables:
        if var.name in card.inputs.variables and var.dims != wanted_dims:
            problems.append(
                f"{var.name} has dims {var.dims}, the model reads {wanted_dims}"
                + (" (ensemble stores are not supported)" if "member" in var.dims else "")
            )
    n_lat, n_lon = card.inputs.grid.shape
    same_grid = (
        len(grid.lat) == n_lat
        and len(grid.lon) == n_lon
        and np.allclose(grid.lat, card.inputs.grid.lat, atol=_GRID_TOLERANCE, rtol=0)
        and np.allclose(grid.lon, card.inputs.grid.lon, atol=_GRID_TOLERANCE, rtol=0)
    )
    if not same_grid:
        found = f"{len(grid.lat)}x{len(grid.lon)}"
        if grid.lat and grid.lon:
            found += f" lat {grid.lat[0]:g}..{grid.lat[-1]:g} lon {grid.lon[0]:g}..{grid.lon[-1]:g}"
        lat, lon = card.inputs.grid.lat, card.inputs.grid.lon
        problems.append(
            f"grid {found} differs from the model's {n_lat}x{n_lon} lat {lat[0]:g}..{lat[-1]:g} "
            f"lon {lon[0]:g}..{lon[-1]:g}: regrid the analysis or use a model for this grid"
        )
    if problems:
        raise SchemaError(
            f"{where}: does not fit model {card.name} {card.version}: " + "; ".join(problems)
        )
