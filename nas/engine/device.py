"""Where the work runs: the device, the default number of workers, and models placed on it."""
from __future__ import annotations

import os

import torch

from nas.space.build import build
from nas.errors import SearchError
from nas.space.spec import Candidate

def resolve_device(name: str) -> torch.device:
    """"auto": cuda, then mps, then cpu. An unavailable device named outright is a SearchError."""
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SearchError("--device cuda: no CUDA GPU is available here; use --device cpu or --device auto")
    if name == "mps" and not mps:
        raise SearchError("--device mps: Apple's MPS is not available here; use --device cpu or --device auto")
    return torch.device(name)


def default_jobs(device: torch.device) -> int:
    """One single-threaded worker per core on a CPU (small convolutions scale poorly across threads), one worker
    on an accelerator."""
    return (os.cpu_count() or 1) if device.type == "cpu" else 1


def prepare_model(candidate: Candidate, seed: int, device: torch.device) -> torch.nn.Module:
    return build(candidate.arch, seed=seed).to(device=device, memory_format=torch.channels_last)
