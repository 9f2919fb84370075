"""``python -m bench.forecast_gpu``: the predictor on CUDA vs bare ONNX Runtime with IO binding.

Both roll the same CNN (``tests.helpers.models.make_cnn_model``, history 1) forward on the
GPU. Baseline: bare ORT, the state kept on the device (the output OrtValue is bound as the next
input), only the kept lead times copied back. Predictor: ``ModelRuntime.load(device="cuda")``
and ``rollout`` (IO binding, the output copied back at every step, as the forecast actors do).
Prints fields/s of both and the ratio. Exits 0 with a clear message when no CUDA is available.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from pipelines.models.runtime import CUDA, ModelRuntime
from tests.helpers.models import make_cnn_model

BAR = 0.8


def _gpu_ready() -> str | None:
    if CUDA not in ort.get_available_providers():
        return (
            f"no CUDAExecutionProvider in this ONNX Runtime ({ort.get_available_providers()}); "
            "install onnxruntime-gpu on a machine with a CUDA GPU"
        )
    return None


def bare(
    path: Path, history: np.ndarray, hours: np.ndarray, steps: int
) -> tuple[float, np.ndarray]:
    """Device-resident rollout: two GPU buffers, the output of one step bound as the next input."""
    session = ort.InferenceSession(str(path), providers=[CUDA])
    if session.get_providers()[:1] != [CUDA]:
        raise SystemExit(f"bare session runs on {session.get_providers()}, not CUDA")
    binding = session.io_binding()
    current = ort.OrtValue.ortvalue_from_numpy(history, "cuda", 0)
    spare = ort.OrtValue.ortvalue_from_numpy(np.empty_like(history), "cuda", 0)
    out_shape = [history.shape[0], *history.shape[2:]]
    out = np.empty((history.shape[0], steps, *history.shape[2:]), np.float32)
    start = time.perf_counter()
    for k in range(steps):
        binding.bind_ortvalue_input("fields", current)
        binding.bind_cpu_input("hour", ((hours + k + 1) % 24).astype(np.int64))
        binding.bind_output("next", "cuda", 0, np.float32, out_shape, spare.data_ptr())
        session.run_with_iobinding(binding)
        out[:, k] = binding.copy_outputs_to_cpu()[0]
        current, spare = spare, current
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.forecast_gpu", description=__doc__)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--lat", type=int, default=721)
    parser.add_argument("--lon", type=int, default=1440)
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args(argv)
    reason = _gpu_ready()
    if reason:
        print(f"SKIPPED: {reason}")
        return 0
    directory = Path(tempfile.mkdtemp(prefix="bench-forecast-gpu-"))
    lat = np.linspace(90, -90, args.lat)
    lon = -180 + (360 / args.lon) * np.arange(args.lon)
    card = make_cnn_model(
        directory / "cnn.onnx", lat.tolist(), lon.tolist(), history=1, hidden=args.hidden
    )
    rng = np.random.default_rng(0)
    history = rng.normal(280, 5, (args.batch, 1, 1, args.lat, args.lon)).astype(np.float32)
    hours = np.arange(args.batch, dtype=np.int64) % 24
    runtime = ModelRuntime.load(directory / "cnn.onnx", card, "cuda")
    print(f"predictor device: {runtime.device}; providers {runtime.session.get_providers()}")
    runtime.rollout(history, hours, 2)  # warm-up (cuDNN autotuning)
    bare(directory / "cnn.onnx", history, hours, 2)
    fields = args.batch * args.steps
    bare_s, expected = bare(directory / "cnn.onnx", history, hours, args.steps)
    start = time.perf_counter()
    got = runtime.rollout(history, hours, args.steps)
    ours_s = time.perf_counter() - start
    same = np.allclose(got, expected, rtol=1e-4, atol=1e-3)
    print(f"bare ORT + IO binding: {bare_s:.2f} s, {fields / bare_s:.1f} fields/s")
    print(f"ModelRuntime (cuda):   {ours_s:.2f} s, {fields / ours_s:.1f} fields/s; same: {same}")
    ratio = bare_s / ours_s
    print(f"ratio predictor/bare: {ratio:.2f}  bar >= {BAR}: {'PASS' if ratio >= BAR else 'FAIL'}")
    return 0 if ratio >= BAR and same else 1


if __name__ == "__main__":
    sys.exit(main())
