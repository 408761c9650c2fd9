import pytest
import torch
from torch import nn

from acfd.models.layers import ACBlock, ConvBnAct, EffectiveSE, create_attn


def _randomize_bn(module: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [(7, 7), (8, 13)])
def test_acblock_fuses_to_equal_single_conv(stride, size):
    block = ACBlock(4, 6, 3, stride=stride).double()
    _randomize_bn(block)
    block.eval()
    x = torch.randn(2, 4, *size, dtype=torch.float64)
    before = block(x)
    block.switch_to_deploy()
    after = block(x)
    assert block.deploy and hasattr(block, "fused_conv") and not hasattr(block, "ver_conv")
    assert block.fused_conv.kernel_size == (3, 3) and block.fused_conv.bias is not None
    assert torch.allclose(before, after, atol=1e-10)
    block.switch_to_deploy()  # idempotent
    assert torch.allclose(block(x), after)


def test_acblock_has_three_branches_and_rejects_even_kernel():
    block = ACBlock(3, 5)
    kernels = sorted(m.kernel_size for m in block.modules() if isinstance(m, nn.Conv2d))
    assert kernels == [(1, 3), (3, 1), (3, 3)]
    with pytest.raises(ValueError, match="odd"):
        ACBlock(3, 5, kernel_size=2)


def test_conv_bn_act_fuses():
    layer = ConvBnAct(3, 8, 3, stride=2).double()
    _randomize_bn(layer)
    layer.eval()
    x = torch.randn(1, 3, 9, 9, dtype=torch.float64)
    before = layer(x)
    layer.switch_to_deploy()
    assert layer.bn is None
    assert torch.allclose(before, layer(x), atol=1e-10)


def test_effective_se_gates_channels():
    se = EffectiveSE(4)
    x = torch.rand(2, 4, 5, 5)
    y = se(x)
    assert y.shape == x.shape
    # the gate is a hard sigmoid in [0, 1] per channel
    ratio = y / x
    assert (ratio >= 0).all() and (ratio <= 1 + 1e-6).all()
    assert torch.allclose(ratio[:, :, 0, 0, None, None].expand_as(ratio), ratio, atol=1e-5)
    assert isinstance(create_attn("ese", 4), EffectiveSE) and create_attn(None, 4) is None
    with pytest.raises(ValueError):
        create_attn("cbam", 4)
