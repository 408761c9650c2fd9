"""Building blocks: conv-BN-act, the asymmetric convolution block (ACB) and effective SE.

ACB follows ACNet (Ding et al., ICCV 2019) as used by ACFD (paper section 3.2, Fig. 5): three
parallel branches, a KxK, a 1xK and a Kx1 convolution, each with its own BatchNorm, summed. Because
convolution and BatchNorm are linear at inference, the block fuses into one KxK convolution with a
bias (paper eq. 4), which :meth:`ACBlock.switch_to_deploy` does in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def fuse_conv_bn_tensors(
    kernel: torch.Tensor, conv_bias: torch.Tensor | None, bn: nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold BatchNorm into the preceding convolution (paper eq. 4).

    ``a = gamma / sqrt(var + eps)``, ``W' = W * a``, ``B' = (B - mu) * a + beta``.

    Args:
        kernel: conv weight ``(C_out, C_in/groups, kh, kw)``.
        conv_bias: conv bias ``(C_out,)`` or ``None``.
        bn: the BatchNorm2d that follows the conv (its running statistics are used).

    Returns:
        The fused ``(weight, bias)``.
    """
    assert bn.running_mean is not None and bn.running_var is not None
    std = torch.sqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
    scale = gamma / std
    bias = conv_bias if conv_bias is not None else torch.zeros_like(bn.running_mean)
    return kernel * scale.reshape(-1, 1, 1, 1), (bias - bn.running_mean) * scale + beta


class ConvBnAct(nn.Module):
    """``Conv2d -> BatchNorm2d -> activation``; :meth:`switch_to_deploy` folds the BN into the conv."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act_layer: type[nn.Module] | None = nn.ReLU,
        deploy: bool = False,
    ) -> None:
        super().__init__()
        self.in_chs, self.out_chs, self.kernel_size = in_chs, out_chs, kernel_size
        padding = kernel_size // 2
        self.deploy = deploy
        self.conv = nn.Conv2d(
            in_chs, out_chs, kernel_size, stride, padding, groups=groups, bias=deploy
        )
        self.bn: nn.BatchNorm2d | None = None if deploy else nn.BatchNorm2d(out_chs)
        self.act = act_layer(inplace=True) if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Fold the BatchNorm into the conv (idempotent)."""
        if self.deploy or self.bn is None:
            return
        weight, bias = fuse_conv_bn_tensors(self.conv.weight, self.conv.bias, self.bn)
        conv = self.conv
        fused = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            groups=conv.groups,
            bias=True,
        ).to(weight.device, weight.dtype)
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
        self.conv = fused
        self.bn = None
        self.deploy = True


class ACBlock(nn.Module):
    """Asymmetric convolution block: KxK + 1xK + Kx1 convs, each with BN, summed, then activation.

    In deploy mode (after :meth:`switch_to_deploy`) it is a single KxK conv with bias (paper Fig. 5b).

    Args:
        in_chs: input channels.
        out_chs: output channels.
        kernel_size: K (odd).
        stride: convolution stride (the same for all branches).
        groups: convolution groups.
        act_layer: activation applied to the sum (``None`` for none).
        deploy: build the fused single-conv form directly.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act_layer: type[nn.Module] | None = nn.ReLU,
        deploy: bool = False,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"ACBlock needs an odd kernel size, got {kernel_size}")
        self.in_chs, self.out_chs, self.kernel_size = in_chs, out_chs, kernel_size
        self.stride, self.groups = stride, groups
        self.deploy = deploy
        pad = kernel_size // 2
        if deploy:
            self.fused_conv = nn.Conv2d(
                in_chs, out_chs, kernel_size, stride, pad, groups=groups, bias=True
            )
        else:
            self.square_conv = nn.Conv2d(
                in_chs, out_chs, kernel_size, stride, pad, groups=groups, bias=False
            )
            self.square_bn = nn.BatchNorm2d(out_chs)
            self.ver_conv = nn.Conv2d(
                in_chs, out_chs, (kernel_size, 1), stride, (pad, 0), groups=groups, bias=False
            )
            self.ver_bn = nn.BatchNorm2d(out_chs)
            self.hor_conv = nn.Conv2d(
                in_chs, out_chs, (1, kernel_size), stride, (0, pad), groups=groups, bias=False
            )
            self.hor_bn = nn.BatchNorm2d(out_chs)
        self.act = act_layer(inplace=True) if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deploy:
            return self.act(self.fused_conv(x))
        out = self.square_bn(self.square_conv(x))
        out = out + self.ver_bn(self.ver_conv(x))
        out = out + self.hor_bn(self.hor_conv(x))
        return self.act(out)

    def get_equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single KxK kernel and bias equal to the three BN-folded branches (paper eq. 4)."""
        k_sq, b_sq = fuse_conv_bn_tensors(self.square_conv.weight, None, self.square_bn)
        k_ver, b_ver = fuse_conv_bn_tensors(self.ver_conv.weight, None, self.ver_bn)
        k_hor, b_hor = fuse_conv_bn_tensors(self.hor_conv.weight, None, self.hor_bn)
        c = self.kernel_size // 2
        kernel = k_sq.clone()
        kernel[:, :, :, c : c + 1] += k_ver  # Kx1 kernel lands in the centre column
        kernel[:, :, c : c + 1, :] += k_hor  # 1xK kernel lands in the centre row
        return kernel, b_sq + b_ver + b_hor

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Replace the three branches with one fused conv (idempotent)."""
        if self.deploy:
            return
        kernel, bias = self.get_equivalent_kernel_bias()
        pad = self.kernel_size // 2
        fused = nn.Conv2d(
            self.in_chs,
            self.out_chs,
            self.kernel_size,
            self.stride,
            pad,
            groups=self.groups,
            bias=True,
        ).to(kernel.device, kernel.dtype)
        fused.weight.copy_(kernel)
        fused.bias.copy_(bias)
        for name in ("square_conv", "square_bn", "ver_conv", "ver_bn", "hor_conv", "hor_bn"):
            delattr(self, name)
        self.fused_conv = fused
        self.deploy = True


def conv3x3_block(
    in_chs: int,
    out_chs: int,
    stride: int = 1,
    asymmetric: bool = True,
    act_layer: type[nn.Module] | None = nn.ReLU,
) -> nn.Module:
    """A 3x3 conv-BN-act: an :class:`ACBlock` when ``asymmetric`` else a :class:`ConvBnAct`."""
    if asymmetric:
        return ACBlock(in_chs, out_chs, 3, stride, act_layer=act_layer)
    return ConvBnAct(in_chs, out_chs, 3, stride, act_layer=act_layer)


class EffectiveSE(nn.Module):
    """Effective squeeze-excitation (eSE, VoVNetV2 / CenterMask): avg-pool, one 1x1 conv, hard sigmoid.

    Paper Fig. 2: ``F_avg`` then the fully connected ``W_C`` then the element-wise product.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc(x.mean(dim=(2, 3), keepdim=True))
        return x * F.hardsigmoid(gate)


def create_attn(name: str | None, channels: int) -> nn.Module | None:
    """Channel attention by name: ``"ese"`` or ``None``."""
    if name is None or name == "none":
        return None
    if name == "ese":
        return EffectiveSE(channels)
    raise ValueError(f"unknown attention {name!r}; expected 'ese' or None")


def kaiming_init(module: nn.Module) -> None:
    """Kaiming (He et al., 2015) initialisation of every conv, BN set to identity (paper 4.1)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
