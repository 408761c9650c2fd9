"""The ACFD detector network (paper Fig. 1): backbone -> neck -> shared anchor head.

``forward`` returns raw tensors (an ONNX-friendly contract); anchors, matching, loss and
post-processing are separate pieces in :mod:`acfd.detection`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from acfd.config import ModelConfig
from acfd.detection.anchors import AnchorGenerator
from acfd.detection.box_coder import BoxCoder
from acfd.detection.losses import ACFDLoss
from acfd.models.head import ACFDHead
from acfd.models.layers import kaiming_init
from acfd.models.necks import build_neck
from acfd.models.timm_backbones import build_backbone


class ACFD(nn.Module):
    """Asymmetric Cartoon Face Detector.

    Args:
        cfg: the resolved model config.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg.backbone)
        strides = tuple(self.backbone.strides)
        if strides != tuple(cfg.anchors.strides):
            raise ValueError(
                f"backbone strides {strides} do not match anchor strides {cfg.anchors.strides}"
            )
        self.neck = build_neck(cfg.neck, self.backbone.out_channels)
        self.head = ACFDHead(self.neck.out_channels, cfg.head)
        self.anchor_generator = AnchorGenerator(cfg.anchors.strides, cfg.anchors.scale)
        self.box_coder = BoxCoder(cfg.box_coder.weights)
        self.loss_fn = ACFDLoss(cfg.loss, cfg.match, self.box_coder)
        self.register_buffer(
            "pixel_mean", torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(cfg.pixel_std).view(1, 3, 1, 1), persistent=False
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming initialisation everywhere (no pretrained weights, paper 4.1), RetinaNet head init."""
        if self.cfg.backbone.name == "vovnet":
            kaiming_init(self.backbone)
        else:  # timm initialises its own modules; only our extra layers need it
            kaiming_init(self.backbone.extra)
        kaiming_init(self.neck)
        kaiming_init(self.head)
        self.head.reset_parameters()

    @property
    def size_divisor(self) -> int:
        return self.cfg.size_divisor

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        d = self.cfg.size_divisor
        return -(-height // d) * d, -(-width // d) * d

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or 0-255 float RGB ``(B, 3, H, W)`` -> the normalised float input of :meth:`forward`."""
        return (images.float() - self.pixel_mean) / self.pixel_std

    def _check_input(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"expected a torch.Tensor of images, got {type(images).__name__}")
        if images.dim() != 4:
            raise ValueError(
                f"expected images of shape (B, 3, H, W), got a {images.dim()}-d tensor "
                f"{tuple(images.shape)}"
            )
        if images.shape[0] == 0:
            raise ValueError("empty batch: images has batch size 0")
        if images.shape[1] != 3:
            raise ValueError(
                f"expected 3 (RGB) channels in dimension 1, got {images.shape[1]} "
                f"(shape {tuple(images.shape)})"
            )
        if not images.is_floating_point():
            raise ValueError(
                f"expected a float tensor normalised with model.normalize(), got {images.dtype}; "
                "call model.normalize(uint8_images) first"
            )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw predictions.

        Args:
            images: ``(B, 3, H, W)`` normalised float images, any H and W (padded bottom/right to a
                multiple of ``cfg.size_divisor`` here).

        Returns:
            ``cls_logits (B, A)`` and ``box_deltas (B, A, 4)`` for the anchors of
            :meth:`anchors_for` ``(H, W)``.
        """
        if not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            self._check_input(images)
        d = self.cfg.size_divisor
        h, w = images.shape[-2:]
        pad_h = (d - h % d) % d
        pad_w = (d - w % d) % d
        if not isinstance(pad_h, int) or pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h))
        feats = self.backbone(images)
        feats = self.neck(feats)
        return self.head(feats)

    def anchors_for(
        self, height: int, width: int, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Anchors ``(A, 4)`` matching :meth:`forward`'s output for an ``height`` x ``width`` input."""
        ph, pw = self.padded_size(int(height), int(width))
        dev = torch.device(device) if device is not None else self.pixel_mean.device
        return self.anchor_generator(ph, pw, dev)

    def compute_loss(
        self,
        cls_logits: torch.Tensor,
        box_deltas: torch.Tensor,
        targets: list[torch.Tensor],
        image_size: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        """DAM + margin focal / smooth-L1 loss (paper eq. 1-3) for a batch of one input size."""
        for i, t in enumerate(targets):
            if t.dim() != 2 or t.shape[-1] != 4:
                raise ValueError(f"target {i}: expected boxes of shape [N, 4], got {tuple(t.shape)}")
            if t.numel():
                bad = (t[:, 2] <= t[:, 0]) | (t[:, 3] <= t[:, 1])
                if bad.any():
                    j = int(bad.nonzero()[0])
                    raise ValueError(
                        f"target {i}: degenerate box at index {j}: {t[j].tolist()} "
                        "(need x2 > x1 and y2 > y1)"
                    )
        anchors = self.anchors_for(*image_size, device=cls_logits.device)
        return self.loss_fn(cls_logits, box_deltas, anchors, targets)
