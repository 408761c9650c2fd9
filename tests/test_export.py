"""ONNX export, the ONNX Runtime runner and the TensorRT export guard (paper 4.3)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from acfd.config import config_to_dict
from acfd.deploy.export import export_onnx, export_tensorrt
from acfd.deploy.fuse import count_asymmetric_convs, fuse_model
from acfd.deploy.onnx_runner import OnnxRunner, check_onnx
from acfd.models import ACFD, create_model
from acfd.predict.detector import Detector

ATOL = 1e-4


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: fast and steady on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model() -> ACFD:
    """acfd-tiny with random BN statistics (so fusing changes the weights) and a head scaled so the
    outputs are O(1), as a trained detector's are. With plain random Kaiming weights the outputs
    reach ~70, where float32 rounding alone (even fused vs unfused PyTorch) exceeds 1e-4."""
    torch.manual_seed(0)
    model = create_model("acfd-tiny")
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
            m.weight.data.copy_(0.5 + torch.rand(n, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=gen))
    model.eval()
    with torch.no_grad():  # calibrate the last convs: logits within about +-4, deltas within +-1
        cls, reg = model(torch.randn(1, 3, 256, 256, generator=gen))
        model.head.cls_logits.bias.zero_()
        model.head.cls_logits.weight.mul_(4.0 / float(cls.abs().max()))
        model.head.bbox_pred.weight.mul_(1.0 / float(reg.abs().max()))
        model.head.bbox_pred.bias.zero_()
    return model.eval()


@pytest.fixture(scope="module")
def onnx_path(tiny_model: ACFD, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(tiny_model, tmp_path_factory.mktemp("onnx") / "tiny.onnx", sample_size=(256, 256))


@pytest.fixture(scope="module")
def runner(onnx_path: Path) -> OnnxRunner:
    return OnnxRunner(onnx_path, providers=["CPUExecutionProvider"], num_threads=1)


@pytest.mark.parametrize("shape", [(2, 3, 256, 384), (2, 3, 200, 300)], ids=["multiple-of-128", "padded"])
@torch.no_grad()
def test_onnx_matches_pytorch_unfused_and_fused(
    tiny_model: ACFD, runner: OnnxRunner, shape: tuple[int, ...]
) -> None:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    cls_o, reg_o = runner(x.numpy())
    fused = fuse_model(tiny_model)
    n_anchors = tiny_model.anchors_for(*shape[2:]).shape[0]
    assert cls_o.shape == (shape[0], n_anchors) and reg_o.shape == (shape[0], n_anchors, 4)
    assert cls_o.dtype == np.float32 and reg_o.dtype == np.float32
    for net in (tiny_model, fused):
        cls_t, reg_t = net(x)
        assert float(cls_t.abs().max()) > 0.1  # the comparison is not vacuous
        np.testing.assert_allclose(cls_o, cls_t.numpy(), rtol=0, atol=ATOL)
        np.testing.assert_allclose(reg_o, reg_t.numpy(), rtol=0, atol=ATOL)


@torch.no_grad()
def test_dynamic_shape_full_hd_frame_is_padded_in_the_graph(tiny_model: ACFD, runner: OnnxRunner) -> None:
    x = torch.randn(1, 3, 1080, 1920, generator=torch.Generator().manual_seed(3))
    cls_o, reg_o = runner(x.numpy())
    # 1080 is padded to 1152: the anchors are those of the padded size
    assert cls_o.shape == (1, tiny_model.anchors_for(1080, 1920).shape[0])
    assert tiny_model.anchors_for(1080, 1920).shape == tiny_model.anchors_for(1152, 1920).shape
    cls_t, reg_t = fuse_model(tiny_model)(x)
    # 2.2M outputs: the largest float32 rounding difference grows with the count, so 1e-4 is
    # taken relative to the output range here (a padding error would be O(range)).
    for got, ref in ((cls_o, cls_t.numpy()), (reg_o, reg_t.numpy())):
        np.testing.assert_allclose(got, ref, rtol=0, atol=ATOL * max(1.0, float(np.abs(ref).max())))


def test_metadata_round_trip(tiny_model: ACFD, runner: OnnxRunner) -> None:
    assert runner.model_name == "acfd-tiny"
    assert runner.config == json.loads(json.dumps(config_to_dict(tiny_model.cfg)))
    assert runner.model_config() == tiny_model.cfg
    assert runner.metadata["fused"] == "true"
    assert runner.metadata["dtype"] == "float32"
    assert runner.input_name == "images"
    assert runner.output_names == ["cls_logits", "box_deltas"]


def test_export_fuses_a_copy_and_leaves_the_model_alone(tiny_model: ACFD, onnx_path: Path) -> None:
    graph = onnx.load(str(onnx_path)).graph
    kernels = [
        tuple(a.ints) for n in graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "kernel_shape"
    ]
    assert kernels and all(kh == kw for kh, kw in kernels)  # every ACB is one square conv
    assert not any(n.op_type == "BatchNormalization" for n in graph.node)
    assert count_asymmetric_convs(tiny_model) > 0  # the original still has its 1x3 / 3x1 branches
    assert [i.name for i in graph.input] == ["images"]
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]


def test_unfused_export_keeps_the_branches(tiny_model: ACFD, tmp_path: Path) -> None:
    path = export_onnx(tiny_model, tmp_path / "unfused.onnx", fuse=False, sample_size=(128, 128))
    graph = onnx.load(str(path)).graph
    kernels = {
        tuple(a.ints) for n in graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "kernel_shape"
    }
    assert (1, 3) in kernels and (3, 1) in kernels
    assert OnnxRunner(path).metadata["fused"] == "false"


def test_static_export_has_a_fixed_input(tiny_model: ACFD, tmp_path: Path) -> None:
    path = export_onnx(tiny_model, tmp_path / "static.onnx", dynamic=False, sample_size=(128, 256))
    graph = onnx.load(str(path)).graph
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 128, 256]


def test_half_export_runs_with_float32_in_and_out(tiny_model: ACFD, tmp_path: Path) -> None:
    path = export_onnx(tiny_model, tmp_path / "half.onnx", half=True, sample_size=(128, 128))
    r = OnnxRunner(path, providers=["CPUExecutionProvider"])
    assert r.input_dtype == np.float16 and r.metadata["dtype"] == "float16"
    x = torch.randn(1, 3, 128, 192, generator=torch.Generator().manual_seed(4))
    cls_o, reg_o = r(x.numpy())
    assert cls_o.dtype == np.float32
    with torch.no_grad():
        cls_t, reg_t = tiny_model(x)
    np.testing.assert_allclose(cls_o, cls_t.numpy(), rtol=0, atol=5e-2)
    np.testing.assert_allclose(reg_o, reg_t.numpy(), rtol=0, atol=5e-2)


def test_check_onnx_reports_small_differences(tiny_model: ACFD, onnx_path: Path) -> None:
    diff = check_onnx(tiny_model, onnx_path, (1, 3, 128, 160))
    assert diff["cls_logits"] < ATOL and diff["box_deltas"] < ATOL and diff["scale"] > 0


def test_failed_export_leaves_the_old_file(
    tiny_model: ACFD, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")

    def broken_check(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(onnx.checker, "check_model", broken_check)
    with pytest.raises(RuntimeError, match="boom"):
        export_onnx(tiny_model, target, sample_size=(128, 128))
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temp file left


def test_bad_export_arguments(tiny_model: ACFD, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="opset"):
        export_onnx(tiny_model, tmp_path / "a.onnx", opset=9)
    with pytest.raises(ValueError, match="sample_size"):
        export_onnx(tiny_model, tmp_path / "a.onnx", sample_size=(640,))
    assert not (tmp_path / "a.onnx").exists()


def test_runner_errors(tmp_path: Path, runner: OnnxRunner) -> None:
    missing = tmp_path / "missing.onnx"
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        OnnxRunner(missing)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx file")
    with pytest.raises(ValueError, match="garbage.onnx"):
        OnnxRunner(garbage)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        runner(np.zeros((3, 64, 64), np.float32))
    with pytest.raises(ValueError, match="threads must be >= 1"):
        OnnxRunner(runner.path, num_threads=0)


# -- end to end through the Detector ----------------------------------------------------------


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(base, np.ones((8, 8, 1), np.uint8))[:h, :w])


@pytest.mark.parametrize("scales", [["200"], ["160x240", "224x320"]], ids=["single-scale", "multi-scale"])
def test_onnx_detector_matches_pytorch_detector(
    tiny_model: ACFD, onnx_path: Path, scales: list[str]
) -> None:
    image = _image(210, 330)
    kwargs = {"scales": scales, "score_thresh": 0.3, "max_det": 50}
    ref = Detector(tiny_model, **kwargs)(image)
    det = Detector(onnx_path, **kwargs)
    assert isinstance(det.backend, OnnxRunner)
    got = det(image)
    assert len(ref) > 0
    assert len(got) == len(ref)
    np.testing.assert_allclose(got.boxes, ref.boxes, rtol=0, atol=1e-3)
    np.testing.assert_allclose(got.scores, ref.scores, rtol=0, atol=1e-4)


def test_onnx_detector_rejects_other_weights_or_backend(onnx_path: Path) -> None:
    for kwargs in ({"weights": "w.safetensors"}, {"backend": "torch"}, {"backend": lambda x: x}):
        with pytest.raises(ValueError, match="runs in ONNX Runtime"):
            Detector(onnx_path, **kwargs)


# -- TensorRT ---------------------------------------------------------------------------------


def test_tensorrt_export_needs_cuda(
    tiny_model: ACFD, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="TensorRT export needs a CUDA GPU"):
        export_tensorrt(tiny_model, tmp_path / "model.ep")
    assert not (tmp_path / "model.ep").exists()


def test_runner_threads_do_not_spin_after_a_run(runner: OnnxRunner) -> None:
    """ORT's spinning workers would take the cores from the PyTorch post-processing that follows."""
    options = runner.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 1
