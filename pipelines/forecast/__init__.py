"""Batch forecasts: ONNX models rolled out on Ray Data actors into Zarr and the forecasts table.

:func:`open_forecast_store` is the one reader of what a run committed.
"""

from pipelines.forecast.store import open_forecast_store

__all__ = ["open_forecast_store"]
