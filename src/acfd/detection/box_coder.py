"""Box coding: Faster R-CNN centre/size deltas with weights (10, 10, 5, 5).

The weights are the SSD / S3FD variances (0.1, 0.1, 0.2, 0.2) written as multipliers, the coding the
face detectors ACFD builds on use. Written here (not torchvision's private ``_utils.BoxCoder``) to
work on tensors of any leading shape ``(..., 4)`` with no list packing.
"""

from __future__ import annotations

import math

import torch


class BoxCoder:
    """Encode boxes as deltas relative to anchors and decode them back.

    Args:
        weights: multipliers for (dx, dy, dw, dh).
        clip: upper bound on dw, dh before ``exp`` (avoids overflow), as in torchvision.
    """

    def __init__(
        self,
        weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
        clip: float = math.log(1000.0 / 16),
    ) -> None:
        self.weights = tuple(float(w) for w in weights)
        self.clip = clip

    def encode(self, boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Deltas ``(..., 4)`` that turn ``anchors`` into ``boxes`` (both x1, y1, x2, y2)."""
        wx, wy, ww, wh = self.weights
        aw = anchors[..., 2] - anchors[..., 0]
        ah = anchors[..., 3] - anchors[..., 1]
        ax = anchors[..., 0] + 0.5 * aw
        ay = anchors[..., 1] + 0.5 * ah
        bw = (boxes[..., 2] - boxes[..., 0]).clamp(min=1e-3)
        bh = (boxes[..., 3] - boxes[..., 1]).clamp(min=1e-3)
        bx = boxes[..., 0] + 0.5 * bw
        by = boxes[..., 1] + 0.5 * bh
        return torch.stack(
            [
                wx * (bx - ax) / aw,
                wy * (by - ay) / ah,
                ww * torch.log(bw / aw),
                wh * torch.log(bh / ah),
            ],
            dim=-1,
        )

    def decode(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Boxes ``(..., 4)`` from ``deltas`` and (broadcastable) ``anchors``."""
        wx, wy, ww, wh = self.weights
        deltas = deltas.float()
        aw = anchors[..., 2] - anchors[..., 0]
        ah = anchors[..., 3] - anchors[..., 1]
        ax = anchors[..., 0] + 0.5 * aw
        ay = anchors[..., 1] + 0.5 * ah
        dx = deltas[..., 0] / wx
        dy = deltas[..., 1] / wy
        dw = (deltas[..., 2] / ww).clamp(max=self.clip)
        dh = (deltas[..., 3] / wh).clamp(max=self.clip)
        cx = dx * aw + ax
        cy = dy * ah + ay
        w = torch.exp(dw) * aw
        h = torch.exp(dh) * ah
        return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
