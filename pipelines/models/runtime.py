"""ONNX Runtime sessions for forecast models, shared by batch prediction and online serving.

``ModelRuntime.load`` verifies the file against its card (sha256), opens a session on exactly
the execution provider asked for (``cuda`` never falls back to the CPU), and checks the graph's
tensors against the card (handshake). ``auto`` is resolved before, by
:func:`pipelines.models.resolve.resolve_device`.

One loaded model is safe for concurrent callers: ONNX Runtime's ``run`` may be called from
several threads at once, and on CUDA every call binds its own inputs and outputs (a fresh IO
binding per call), so no two calls share a buffer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np

try:
    import onnxruntime as ort
except ImportError as exc:  # neither extra installed
    raise ImportError(
        "ONNX Runtime is not installed: pip install -e '.[cpu]' (or '.[gpu]' for CUDA)"
    ) from exc

from pipelines.errors import ModelError
from pipelines.models.artefacts import verify_sha256
from schemas.model_card import ModelCard

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
Provider = Literal["cpu", "cuda"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def cuda_available() -> bool:
    """Whether this ONNX Runtime build has the CUDA execution provider."""
    return CUDA in ort.get_available_providers()


def _providers(device: str) -> list[str]:
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        if not cuda_available():
            raise ModelError(
                "device 'cuda' was asked for but this ONNX Runtime has no CUDAExecutionProvider "
                f"(available: {ort.get_available_providers()}); install the gpu extra "
                "(pip install -e '.[gpu]') on a machine with a CUDA GPU, or set device: cpu"
            )
        return [CUDA]
    raise ModelError(
        f"device {device!r} is not one of cpu, cuda (resolve auto with "
        "pipelines.models.resolve.resolve_device first)"
    )


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
    :meth:`step` and :meth:`rollout` may be called from several threads at once.
    """

    def __init__(self, session: ort.InferenceSession, card: ModelCard, device: Provider) -> None:
        self.session = session
        self.card = card
        self.device: Provider = device

    @classmethod
    def load(
        cls,
        onnx_path: str | Path,
        card: ModelCard,
        device: Provider = "cpu",
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
            ``cpu`` or ``cuda`` (CUDAExecutionProvider only; fails when unavailable). Resolve
            ``auto`` first with :func:`pipelines.models.resolve.resolve_device`.
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
        session = _open_session(path, _providers(device), threads)
        handshake(session, card, str(path))
        log.info("model %s %s loaded on %s", card.name, card.version, device)
        return cls(session, card, device)

    def step(self, fields: np.ndarray, hours: np.ndarray) -> np.ndarray:
        """One model call: ``fields`` [B, H, C, lat, lon], target ``hours`` [B] -> [B, C, ...]."""
        fields = np.ascontiguousarray(fields, dtype=np.float32)
        hours = np.ascontiguousarray(hours, dtype=np.int64) % 24
        names = self.card.tensors
        if self.device != "cuda":
            out = self.session.run([names.output], {names.fields: fields, names.hour: hours})
            return np.asarray(out[0])
        binding = self.session.io_binding()  # one per call: concurrent calls share no buffer
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
