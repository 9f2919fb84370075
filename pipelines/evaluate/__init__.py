"""Evaluation: autoregressive rollouts of an ONNX model scored per variable and lead time against
persistence and the training period's hour-of-day climatology; skill rows and a report.
"""
