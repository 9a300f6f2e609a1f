"""The search space and its networks: specs, block kinds, building, exact costs (params, FLOPs, memory, TFLM's
arena and flash), the space file, and the reference networks. Knows nothing of Optuna."""
