"""The model room: ONNX runtime, artefacts, compatibility checks, resolution, registry."""
