"""Analysis stores for the training and evaluation tests: synthetic (seeded) and the sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.db import make_engine, migrate
from pipelines.executors import SerialExecutor
from pipelines.ingest.runner import run_ingest
from schemas.config import IngestConfig
from schemas.settings import Settings
from tests.helpers.synthetic import synthetic_dataset

ROOT = Path(__file__).resolve().parents[3]
SAMPLE_GRIB = ROOT / "data" / "sample" / "era5-2mt-2019-03-uk.grib"
SHIPPED_MODEL = ROOT / "models" / "t2m-resconv" / "model.onnx"
SYNTHETIC_LAT = np.linspace(56.0, 50.0, 7)
SYNTHETIC_LON = np.linspace(-6.0, 0.0, 9)
_BUILT: dict[str, Path] = {}


def synthetic_store(path: Path, hours: int = 240, seed: int = 3) -> Path:
    """A small hourly t2m analysis store (7 x 9 grid) from 2020-01-01T00."""
    dataset = synthetic_dataset(hours, ["t2m"], lat=SYNTHETIC_LAT, lon=SYNTHETIC_LON, seed=seed)
    dataset.to_zarr(path, zarr_format=2, consolidated=True, mode="w")
    return path


def sample_store(root: Path) -> Path:
    """The bundled ERA5 sample ingested (serially) into ``root``; built once per session."""
    if "sample" not in _BUILT:
        url = str(root / "analysis.zarr")
        config = IngestConfig.model_validate(
            {
                "source": {"kind": "grib", "urls": [str(SAMPLE_GRIB)], "variables": ["t2m"]},
                "store": {"url": url},
            }
        )
        settings = Settings(database_url=f"sqlite:///{root / 'ingest.db'}")
        engine = make_engine(settings.database_url)
        migrate(engine)
        summary = run_ingest(config, settings, engine, SerialExecutor())
        assert summary.clean, summary.failures
        _BUILT["sample"] = Path(url)
    return _BUILT["sample"]
