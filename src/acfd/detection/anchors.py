"""Anchor generation: one square anchor per location, side ``scale * stride`` (paper 4.1).

With strides 4..128 and scale 4 the anchors are 16, 32, 64, 128, 256 and 512 px, and a 640x640 input
has 160^2 + 80^2 + 40^2 + 20^2 + 10^2 + 5^2 = 34,125 of them.
"""

from __future__ import annotations

import torch
from torch import nn


class AnchorGenerator(nn.Module):
    """Anchors ``(A, 4)`` (x1, y1, x2, y2) for given feature-map sizes, cached per grid and device.

    Args:
        strides: stride of each pyramid level, shallowest first.
        scale: anchor side in units of the stride.
    """

    def __init__(self, strides: tuple[int, ...] = (4, 8, 16, 32, 64, 128), scale: float = 4.0):
        super().__init__()
        if not strides:
            raise ValueError("AnchorGenerator needs at least one stride")
        self.strides = tuple(int(s) for s in strides)
        self.scale = float(scale)
        self._cache: dict[tuple, torch.Tensor] = {}

    @property
    def sizes(self) -> tuple[float, ...]:
        """Anchor side per level in pixels."""
        return tuple(self.scale * s for s in self.strides)

    def num_anchors_per_location(self) -> list[int]:
        return [1] * len(self.strides)

    def grid_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Feature-map sizes for a (padded) input: ``ceil(H / s), ceil(W / s)`` per level."""
        return [(-(-height // s), -(-width // s)) for s in self.strides]

    def grid_anchors(
        self, grid_sizes: list[tuple[int, int]], device: torch.device | None = None
    ) -> torch.Tensor:
        """Anchors for explicit per-level grid sizes, level by level, row-major within a level."""
        if len(grid_sizes) != len(self.strides):
            raise ValueError(
                f"got {len(grid_sizes)} feature maps but the generator has {len(self.strides)} "
                "strides; the neck and the anchor config must agree on the number of levels"
            )
        device = device or torch.device("cpu")
        key = (tuple(grid_sizes), str(device))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        out = []
        for (h, w), stride in zip(grid_sizes, self.strides):
            half = self.scale * stride / 2
            ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) * stride
            xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) * stride
            cy, cx = torch.meshgrid(ys, xs, indexing="ij")
            cx, cy = cx.reshape(-1), cy.reshape(-1)
            out.append(torch.stack([cx - half, cy - half, cx + half, cy + half], dim=1))
        anchors = torch.cat(out, dim=0)
        self._cache[key] = anchors
        return anchors

    def forward(
        self, height: int, width: int, device: torch.device | None = None
    ) -> torch.Tensor:
        """Anchors for an input of ``height`` x ``width`` (already a multiple of the largest stride)."""
        return self.grid_anchors(self.grid_sizes(height, width), device)
