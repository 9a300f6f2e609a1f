"""Deployment: weights files, ONNX and TFLite exports checked by their runtimes, and latency."""
