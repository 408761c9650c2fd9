import pytest
import torch
from torch import nn

from acfd.config import ModelConfig
from acfd.deploy.fuse import count_asymmetric_convs, count_batchnorm, fuse_model
from acfd.models import create_model, get_model_config, list_models
from acfd.models.necks import bifpn_nodes
from acfd.models.registry import count_gflops, count_parameters, model_size_mb
from acfd.predict.modelfile import load_model, save_weights

SMALL = ["acfd-tiny", "acfd-n"]
BASELINES = [n for n in list_models() if n not in ("acfd-l", "acfd-m", "acfd-s", "acfd-n", "acfd-tiny")]


def _randomize_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_((torch.rand(n, generator=g) - 0.5) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_((torch.rand(n, generator=g) - 0.5) * 0.2)


def test_registry_lists_paper_model_and_variants():
    names = list_models()
    for n in ["acfd-l", "acfd-m", "acfd-s", "acfd-n", "acfd-tiny", "acfd-resnet50", "acfd-vovnet39"]:
        assert n in names
    cfg = get_model_config("acfd-l")
    assert cfg.backbone.asymmetric and cfg.neck.name == "abifpn" and cfg.name == "acfd-l"
    with pytest.raises(ValueError, match="unknown model"):
        create_model("acfd-xxl")
    over = get_model_config("acfd-s", **{"neck.name": "fpn", "loss.margin": 0.0})
    assert over.neck.name == "fpn" and over.loss.margin == 0.0
    with pytest.raises(ValueError):
        get_model_config("acfd-s", **{"neck.nope": 1})


@pytest.mark.parametrize("name", SMALL)
def test_forward_backward_all_params_get_grads(name):
    model = create_model(name)
    images = torch.randn(2, 3, 128, 192)
    cls, reg = model(images)
    a = model.anchors_for(128, 192)
    assert cls.shape == (2, a.shape[0]) and reg.shape == (2, a.shape[0], 4)
    targets = [torch.tensor([[10.0, 10.0, 40.0, 50.0]]), torch.zeros(0, 4)]
    losses = model.compute_loss(cls, reg, targets, (128, 192))
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"])
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_anchor_count_34125_at_640():
    model = create_model("acfd-tiny").eval()
    with torch.no_grad():
        cls, _ = model(torch.zeros(1, 3, 640, 640))
    assert cls.shape == (1, 34125) and model.anchors_for(640, 640).shape == (34125, 4)


def test_full_hd_frame_goes_through_tiny():
    model = create_model("acfd-tiny").eval()
    with torch.no_grad():
        cls, reg = model(torch.zeros(1, 3, 1080, 1920))
    # padded to 1152 x 1920
    assert model.padded_size(1080, 1920) == (1152, 1920)
    assert cls.shape[1] == model.anchors_for(1080, 1920).shape[0] == reg.shape[1]


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(1, 1, 64, 64), "3 \\(RGB\\) channels"),
        (torch.zeros(0, 3, 64, 64), "empty batch"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "float"),
        (torch.zeros(3, 64, 64), "shape"),
    ],
)
def test_bad_input_raises_clear_error(bad, match):
    model = create_model("acfd-tiny")
    with pytest.raises(ValueError, match=match):
        model(bad)


def test_degenerate_target_rejected():
    model = create_model("acfd-tiny").eval()
    cls, reg = model(torch.zeros(1, 3, 128, 128))
    with pytest.raises(ValueError, match="degenerate box at index 1"):
        model.compute_loss(cls, reg, [torch.tensor([[0.0, 0, 10, 10], [5.0, 5, 5, 9]])], (128, 128))
    with pytest.raises(ValueError, match="\\[N, 4\\]"):
        model.compute_loss(cls, reg, [torch.zeros(3)], (128, 128))


@pytest.mark.parametrize("neck", ["fpn", "bifpn", "abifpn"])
def test_necks_build_and_fuse(neck):
    model = create_model("acfd-tiny", **{"neck.name": neck}).double()
    _randomize_bn(model)
    model.eval()
    fused = fuse_model(model)
    assert count_batchnorm(fused) == 0 and count_asymmetric_convs(fused) == 0
    x = torch.randn(1, 3, 128, 256, dtype=torch.float64)
    with torch.no_grad():
        a, b = model(x), fused(x)
    for p, q in zip(a, b):
        assert (p - q).abs().max() < 1e-4


@pytest.mark.parametrize("size", [(128, 128), (200, 330), (256, 640)])
def test_fused_model_equals_unfused(size):
    """Max abs difference < 1e-4 in float64 (exact algebra); float32 within rounding."""
    model = create_model("acfd-tiny")
    _randomize_bn(model, seed=sum(size))
    model.eval()
    fused32 = fuse_model(model)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # original untouched
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        for p, q in zip(model(x), fused32(x)):
            # float32 rounding grows with the activations' scale
            assert (p - q).abs().max() < 1e-4 * max(1.0, float(p.abs().max()))
        model64 = model.double()
        fused64 = fuse_model(model64)
        for p, q in zip(model64(x.double()), fused64(x.double())):
            assert (p - q).abs().max() < 1e-4


def test_bifpn_topology_six_levels():
    nodes = bifpn_nodes(2, 7)
    assert len(nodes) == 10  # 5 top-down + 5 bottom-up
    assert [n.level for n in nodes[:5]] == [6, 5, 4, 3, 2]
    assert [len(n.inputs) for n in nodes[5:]] == [3, 3, 3, 3, 2]


def test_model_facts_and_weights_round_trip(tmp_path):
    model = create_model("acfd-tiny")
    assert count_parameters(model) > 0 and model_size_mb(model) > 0
    assert count_gflops(model, 128, 128) > 0
    path = save_weights(model, tmp_path / "tiny.safetensors")
    loaded = load_model(path)
    assert loaded.cfg == model.cfg
    x = torch.randn(1, 3, 128, 128)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x)[0], loaded(x)[0])
    by_name = load_model("acfd-tiny", weights=path)
    assert isinstance(by_name.cfg, ModelConfig)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.safetensors")


def test_paper_model_deployed_under_200mb():
    model = create_model("acfd-l")
    fused = fuse_model(model)
    assert model_size_mb(fused) < 200


@pytest.mark.slow
@pytest.mark.parametrize("name", BASELINES)
def test_table2_baselines_give_six_levels(name):
    model = create_model(name, **{"neck.channels": 32, "neck.repeats": 1, "head.channels": 32})
    assert model.backbone.strides == [4, 8, 16, 32, 64, 128]
    model.eval()
    with torch.no_grad():
        cls, _ = model(torch.zeros(1, 3, 128, 128))
    assert cls.shape == (1, model.anchors_for(128, 128).shape[0])


def test_weights_file_warning_is_logged_on_load(tmp_path, caplog):
    """A weights file can carry a warning (the CPU-trained placeholder does); loading shows it."""
    import logging

    path = save_weights(create_model("acfd-tiny"), tmp_path / "w.safetensors", extra={"warning": "placeholder model"})
    with caplog.at_level(logging.WARNING):
        load_model(path)
    assert any("placeholder model" in r.getMessage() for r in caplog.records)
