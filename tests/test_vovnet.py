"""Paper Table 1: VoVNetV3-51 stem and stage shapes and channels."""

import torch
from torch import nn

from acfd.config import BackboneConfig
from acfd.models.layers import ACBlock, ConvBnAct
from acfd.models.vovnet import VoVNet


def test_vovnetv3_51_table1_shapes():
    net = VoVNet(BackboneConfig()).eval()
    assert [c.conv.out_channels for c in net.stem] == [64, 64, 128]
    assert [c.conv.stride[0] for c in net.stem] == [2, 1, 2]
    assert net.out_channels == [256, 512, 768, 1024, 128, 128]
    assert net.strides == [4, 8, 16, 32, 64, 128]
    assert [len(s.blocks) for s in net.stages] == [1, 1, 2, 2, 1, 1]
    mids = [s.blocks[0].layers[0].out_chs for s in net.stages]
    assert mids == [128, 160, 192, 224, 128, 128]
    assert net.stages[0].pool is None and all(isinstance(s.pool, nn.MaxPool2d) for s in net.stages[1:])
    # every 3x3 conv inside the OSA modules is an ACB (AOSA)
    for stage in net.stages:
        for block in stage.blocks:
            assert all(isinstance(layer, ACBlock) for layer in block.layers)
            assert len(block.layers) == 5
            assert block.attn is not None
    with torch.no_grad():
        feats = net(torch.zeros(1, 3, 640, 640))
    sizes = [tuple(f.shape[1:]) for f in feats]
    assert sizes == [
        (256, 160, 160),
        (512, 80, 80),
        (768, 40, 40),
        (1024, 20, 20),
        (128, 10, 10),
        (128, 5, 5),
    ]


def test_residual_only_where_shapes_allow_and_v2_has_no_acb():
    net = VoVNet(BackboneConfig(asymmetric=False))
    assert not any(isinstance(m, ACBlock) for m in net.modules())
    assert all(isinstance(layer, ConvBnAct) for layer in net.stages[0].blocks[0].layers)
    full = VoVNet(BackboneConfig())
    # first block of stage 3 changes 512 -> 768 channels: no residual; the second keeps 768: residual
    assert not full.stages[2].blocks[0].residual and full.stages[2].blocks[1].residual
    # stage 5 takes 1024 -> 128: no residual
    assert not full.stages[4].blocks[0].residual
