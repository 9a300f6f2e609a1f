"""uint8 images resized (bilinear, antialiased), as every reader does it: --image-size, and image folders of mixed
sizes."""
from __future__ import annotations

import torch


def resize(x: torch.Tensor, size: int | tuple[int, int] | None, chunk: int = 4096) -> torch.Tensor:
    """uint8 (N, C, H, W) images resized to `size` (N, or (H, W)), a chunk at a time; as they are without a size."""
    if size is None:
        return x
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[2:]) == size:
        return x
    out = torch.empty((len(x), x.shape[1], *size), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    for i in range(0, len(x), chunk):
        part = torch.nn.functional.interpolate(x[i:i + chunk].float(), size=size, mode="bilinear", antialias=True,
                                               align_corners=False)
        out[i:i + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out
