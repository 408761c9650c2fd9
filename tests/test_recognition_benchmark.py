"""The few-shot / open-set benchmark, the fitted gallery model (prototypes, calibrated unknown
threshold) and the Identifier that `acfd identify` and `POST /v1/identify` share; synthetic
embeddings and folders only (no shared data needed)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from acfd.cli import app
from acfd.recognition.adaptation import ShowAdaptation
from acfd.recognition.benchmark import baseline_features, draw_references, few_shot, format_table, open_set, run_benchmark
from acfd.recognition.embedder import PixelEmbedder, colour_histogram
from acfd.recognition.gallery import Gallery
from acfd.recognition.gallery_model import calibrate_threshold, fit_gallery_model, leave_one_out_scores
from acfd.recognition.identify import Identifier

runner = CliRunner()


def _clusters(classes: int = 4, per_class: int = 20, dim: int = 16, spread: float = 0.1, seed: int = 0):
    """Unit rows around ``classes`` random centres (tight when ``spread`` is small)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    labels = np.repeat(np.arange(classes), per_class)
    x = centres[labels] + spread * rng.normal(size=(len(labels), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def test_few_shot_is_perfect_on_separated_classes_and_near_chance_on_noise() -> None:
    x, y = _clusters(spread=0.05)
    assert few_shot(x, y, k=1, episodes=3).accuracy == 1.0
    noise = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    assert few_shot(noise, y, k=5, episodes=5).accuracy < 0.5  # 4 classes: chance is 0.25


def test_draw_references_keeps_a_probe_for_small_classes() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    refs = draw_references(labels, 5, np.random.default_rng(0))
    assert sorted(labels[refs].tolist()) == [0, 0, 1]  # 3 images -> 2 references, 2 images -> 1


def test_open_set_rejects_far_outsiders_and_keeps_insiders() -> None:
    x, y = _clusters(classes=4, spread=0.05)
    res = open_set(x, y, k=5, episodes=2)
    assert res.rejected_at_95 == 1.0 and res.outsiders_unknown == 1.0 and res.insiders_correct >= 0.9
    with pytest.raises(ValueError, match="at least 3 identities"):
        open_set(x[y < 2], y[y < 2], k=5)


def test_calibrated_threshold_lies_between_insiders_and_outsiders() -> None:
    x, y = _clusters(classes=3, per_class=5, spread=0.05)
    within, between = leave_one_out_scores(x, y)
    assert len(within) == 15 and len(between) == 15 and within.min() > between.max()
    model = fit_gallery_model(x, y, fallback_threshold=0.123)
    assert model.calibrated and between.max() < model.threshold <= within.min()
    one_each = fit_gallery_model(x[::5], y[::5], fallback_threshold=0.123)
    assert not one_each.calibrated and one_each.threshold == 0.123  # nothing to leave out


def test_threshold_keeps_the_required_share_of_insiders() -> None:
    within = np.linspace(0.5, 0.9, 20).astype(np.float32)
    between = np.linspace(0.6, 0.8, 20).astype(np.float32)  # overlapping: the best cut would drop many insiders
    t, ok = calibrate_threshold(within, between, 0.0, min_insider_recall=0.9)
    assert ok and (within >= t).mean() >= 0.9


def test_prototype_and_nearest_methods_differ_only_in_scoring() -> None:
    x, y = _clusters(classes=2, per_class=3, spread=0.3)
    proto = fit_gallery_model(x, y)
    nearest = fit_gallery_model(x, y, method="nearest")
    assert np.allclose(nearest.scores(x)[np.arange(6), y], 1.0, atol=1e-5)  # each reference finds itself
    assert not np.allclose(proto.scores(x), nearest.scores(x))
    with pytest.raises(ValueError, match="method must be one of"):
        fit_gallery_model(x, y, method="svm")


def test_run_benchmark_and_table() -> None:
    x, y = _clusters(classes=3, per_class=12, spread=0.05)
    report = run_benchmark("toy", x, y, shots=(1, 5, 20), episodes=2)
    assert [r.k for r in report.few_shot] == [1, 5]  # 20 >= the smallest class: skipped
    assert report.auc == pytest.approx(1.0) and report.rank1 == 1.0
    table = format_table([report])
    assert table.splitlines()[0].startswith("| features | acc@1 | acc@5 |") and "| toy | 100.0 | 100.0 |" in table


def test_baselines_and_colour_histogram() -> None:
    red = np.zeros((40, 40, 3), np.uint8)
    red[..., 0] = 250
    blue = red[..., ::-1].copy()
    feats = baseline_features([red, red.copy(), blue])
    assert set(feats) == {"pixels", "pixels-mean-removed", "colour-histogram"}
    h = colour_histogram([red, blue])
    assert h.shape == (2, 512) and np.allclose(np.linalg.norm(h, axis=1), 1) and float(h[0] @ h[1]) == 0.0


def _unit(rows: list[list[float]]) -> np.ndarray:
    x = np.asarray(rows, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class _Fixed:
    """An embedder returning preset rows, for Identifier tests."""

    model_id, embedding_dim, input_size, enlarge_rate, unknown_threshold = "fixed", 3, 8, 1.0, 0.5

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows

    def embed(self, crops) -> np.ndarray:  # noqa: ANN001
        return self.rows[: len(crops)]


def test_identifier_candidates_are_distinct_characters(tmp_path) -> None:
    g = Gallery.create(tmp_path / "g.zip", 3, "fixed")
    g.add(["daphne", "daphne", "daphne", "fred"], _unit([[1, 0, 0], [1, 0.1, 0], [1, 0, 0.1], [0, 1, 0]]), model_id="fixed")
    probe = _unit([[1, 0.05, 0.05]])
    faces = Identifier(_Fixed(probe), g).identify_crops([np.zeros((8, 8, 3), np.uint8)], k=2)
    assert [n for n, _ in faces[0].candidates] == ["daphne", "fred"]  # not daphne twice
    assert faces[0].identity == "daphne"


def test_identifier_uses_the_gallery_calibrated_threshold_unless_given(tmp_path) -> None:
    g = Gallery.create(tmp_path / "g.zip", 3, "fixed")
    g.add(["a", "a", "b", "b"], _unit([[1, 0, 0], [1, 0.1, 0], [0, 1, 0], [0.1, 1, 0]]), model_id="fixed")
    outsider = _unit([[0.5, 0.5, 1.0]])  # cosine ~0.43 to both prototypes
    ident = Identifier(_Fixed(outsider), g)
    assert ident.model.calibrated and ident.threshold > 0.9
    assert ident.identify_crops([np.zeros((8, 8, 3), np.uint8)])[0].identity is None
    assert Identifier(_Fixed(outsider), g, threshold=0.4).identify_crops([np.zeros((8, 8, 3), np.uint8)])[0].identity is not None


def _folder(root, per_identity: int = 4) -> None:
    rng = np.random.default_rng(0)
    for name, colour in {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}.items():
        (root / name).mkdir(parents=True)
        for i in range(per_identity):
            img = np.clip(np.array(colour) + rng.normal(0, 8, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{i}.png")


def test_recognize_benchmark_prints_the_table_with_baselines(tmp_path, monkeypatch) -> None:
    import acfd.cli.recognize_cmd as cmd

    _folder(tmp_path / "ids", per_identity=6)
    monkeypatch.setattr(cmd, "load_embedder_option", lambda w, f, d: PixelEmbedder(8))
    res = runner.invoke(app, ["recognize", "benchmark", str(tmp_path / "ids"), "--shots", "1,3", "--episodes", "2",
                              "--json", str(tmp_path / "b.json")])
    assert res.exit_code == 0, res.output
    rows = [ln for ln in res.output.splitlines() if ln.startswith("| ")]
    assert rows[0].startswith("| features | acc@1 | acc@3 |")
    assert [r.split(" | ")[0][2:] for r in rows[1:]] == ["pixels-8x8-rgb", "pixels", "pixels-mean-removed", "colour-histogram"]
    assert (tmp_path / "b.json").is_file()


def test_recognize_benchmark_names_identities_with_too_few_images(tmp_path) -> None:
    _folder(tmp_path / "ids", per_identity=2)
    res = runner.invoke(app, ["recognize", "benchmark", str(tmp_path / "ids"), "--no-baselines", "--shots", "1"])
    assert res.exit_code == 1 and "fewer than 3 readable images: blue (2), green (2), red (2)" in res.output
    res = runner.invoke(app, ["recognize", "benchmark", str(tmp_path / "ids"), "--shots", "x"])
    assert res.exit_code == 2 and "--shots must be" in res.output


def test_adapting_to_a_show_removes_its_common_component(tmp_path) -> None:
    """Two characters that differ only in a small component riding on a large shared one (a
    show's style): raw cosines are all ~1; with the show's mean removed they separate."""
    rng = np.random.default_rng(0)
    style = np.array([10.0, 0, 0, 0], np.float32)
    a = style + np.array([0, 1, 0, 0]) + 0.05 * rng.normal(size=(10, 4))
    b = style + np.array([0, 0, 1, 0]) + 0.05 * rng.normal(size=(10, 4))
    refs, labels = np.concatenate([a[:5], b[:5]]), np.array([0] * 5 + [1] * 5)
    plain = fit_gallery_model(refs, labels)
    adapted = fit_gallery_model(refs, labels, adaptation=ShowAdaptation(np.concatenate([a, b]).mean(axis=0)))
    assert plain.scores(a[5:])[:, 1].min() > 0.95  # b's prototype looks like a
    assert adapted.scores(a[5:])[:, 1].max() < 0.5 and (adapted.predict(a[5:])[0] == 0).all()
    g = Gallery.create(tmp_path / "g.zip", 4, "m")
    g.add(["a"] * 5 + ["b"] * 5, refs, model_id="m")
    g.adapt(np.concatenate([a, b]), model_id="m")
    g.save()
    again = Gallery.load(tmp_path / "g.zip")
    assert np.allclose(again.adaptation.centre, np.concatenate([a, b]).mean(axis=0))
    assert again.adaptation.projection is None  # 20 crops: too few to cluster, centring alone
    assert again.fit().scores(a[5:])[:, 1].max() < 0.5


def test_gallery_adapt_command_stores_the_show_adaptation(tmp_path, monkeypatch) -> None:
    import acfd.cli.gallery_cmd as cmd

    _folder(tmp_path / "ids")
    monkeypatch.setattr(cmd, "_embedder", lambda w, d: PixelEmbedder(8))
    g = tmp_path / "g.zip"
    assert runner.invoke(app, ["gallery", "add", "red", str(tmp_path / "ids" / "red"), "--gallery", str(g)]).exit_code == 0
    res = runner.invoke(app, ["gallery", "adapt", str(tmp_path / "ids"), "--gallery", str(g)])
    assert res.exit_code == 0 and "adapted to 12 face crop(s)" in res.output
    assert Gallery.load(g).adaptation is not None
    assert "adapted to a show" in runner.invoke(app, ["gallery", "list", str(g)]).output


def test_benchmark_adapt_adds_an_adapted_row(tmp_path, monkeypatch) -> None:
    import acfd.cli.recognize_cmd as cmd

    _folder(tmp_path / "ids", per_identity=6)
    monkeypatch.setattr(cmd, "load_embedder_option", lambda w, f, d: PixelEmbedder(8))
    res = runner.invoke(app, ["recognize", "benchmark", str(tmp_path / "ids"), "--shots", "1", "--episodes", "1",
                              "--no-baselines", "--adapt"])
    assert res.exit_code == 0, res.output
    assert [ln.split(" | ")[0][2:] for ln in res.output.splitlines() if ln.startswith("| pixels")] == [
        "pixels-8x8-rgb", "pixels-8x8-rgb adapted"]
