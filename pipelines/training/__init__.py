"""Training the reference forecast model: samples from the analysis store, the torch module, the
seeded rollout loop and the ONNX export. Only ``model``, ``train`` and ``export`` import torch
(the ``train`` extra); reading data needs numpy and xarray only.
"""
