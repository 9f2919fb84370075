"""Batch forecasts: ONNX models rolled out on Ray Data actors into Zarr and the forecasts table."""
