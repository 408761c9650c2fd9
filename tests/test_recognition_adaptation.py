"""Adaptation to a show (acfd.recognition.adaptation): centring and within-cluster covariance
normalisation fitted on unlabelled embeddings, and how galleries store it; synthetic embeddings."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from acfd.recognition.adaptation import ShowAdaptation, fit_show_adaptation
from acfd.recognition.faiss_index import faiss
from acfd.recognition.gallery import Gallery, GalleryError
from acfd.recognition.protocols import verification


def _show(per_character: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four characters a unit apart in dims 0-3, riding on a large style component (dim 7), each
    crop moved along a nuisance direction (dim 4: pose, say) that every character shares and that
    is as large as the gaps between characters."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), per_character)
    x = np.zeros((len(labels), 8), np.float32)
    x[np.arange(len(labels)), labels] = 1.0
    x[:, 4] = 1.5 * rng.normal(size=len(labels))
    x[:, 7] = 5.0
    x += 0.1 * rng.normal(size=x.shape)
    return x.astype(np.float32), labels


def test_within_cluster_normalisation_separates_characters_beyond_centring() -> None:
    x, labels = _show()
    adaptation = fit_show_adaptation(x)
    assert adaptation.projection is not None and adaptation.projection.shape == (8, 8)
    centring = ShowAdaptation(adaptation.centre)
    plain, centred, whitened = (verification(f, labels, seed=0).auc for f in (x, centring.apply(x), adaptation.apply(x)))
    assert plain < centred < whitened
    assert whitened > centred + 0.05
    out = adaptation.apply(x)
    assert out.shape == x.shape and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_fit_is_seeded_and_small_shows_get_centring_alone() -> None:
    x, _ = _show()
    a, b = fit_show_adaptation(x), fit_show_adaptation(x)
    assert np.array_equal(a.projection, b.projection) and np.array_equal(a.offset, b.offset)
    few = fit_show_adaptation(x[:40])  # under 10 crops per cluster of the smallest clustering (8)
    assert few.projection is None and np.allclose(few.centre, x[:40].mean(axis=0))
    assert np.allclose(few.apply(x[:3]), (x[:3] - few.centre) / np.linalg.norm(x[:3] - few.centre, axis=1, keepdims=True))


@pytest.mark.parametrize("bad, message", [
    (dict(embeddings=np.zeros((1, 4))), "at least 2 face embeddings"),
    (dict(embeddings=np.zeros((5, 4)), shrinkage=0.0), "shrinkage must be in"),
])
def test_fit_refuses_bad_input(bad, message) -> None:
    with pytest.raises(ValueError, match=message):
        fit_show_adaptation(**bad)


def test_gallery_stores_the_adaptation_and_reads_centre_only_galleries(tmp_path) -> None:
    x, labels = _show()
    g = Gallery.create(tmp_path / "g.zip", 8, "m")
    g.add([f"c{i}" for i in labels[::15]], x[::15], model_id="m")
    g.adapt(x, model_id="m")
    g.save()
    again = Gallery.load(tmp_path / "g.zip")
    for key, value in g.adaptation.arrays().items():
        assert np.array_equal(again.adaptation.arrays()[key], value)
    assert np.allclose(again.fit().scores(x[:5]), g.fit().scores(x[:5]))

    # a gallery adapted by centring alone (a centre.npy beside the index) still loads
    centre = io.BytesIO()
    np.save(centre, x.mean(axis=0))
    old = tmp_path / "old.zip"
    with zipfile.ZipFile(old, "w") as zf:
        zf.writestr("gallery.json", json.dumps({"format": 1, "dim": 8, "model_id": "m", "names": []}))
        zf.writestr("index.faiss", faiss.serialize_index(faiss.IndexFlatIP(8)).tobytes())
        zf.writestr("centre.npy", centre.getvalue())
    loaded = Gallery.load(old).adaptation
    assert loaded.projection is None and np.allclose(loaded.centre, x.mean(axis=0))

    # an adaptation of the wrong size is one clear error naming the file
    bad = tmp_path / "bad.zip"
    arrays = io.BytesIO()
    np.savez(arrays, centre=np.zeros(8, np.float32), projection=np.zeros((5, 5), np.float32))
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("gallery.json", json.dumps({"format": 1, "dim": 8, "model_id": "m", "names": []}))
        zf.writestr("index.faiss", faiss.serialize_index(faiss.IndexFlatIP(8)).tobytes())
        zf.writestr("adaptation.npz", arrays.getvalue())
    with pytest.raises(GalleryError, match=r"bad\.zip: not a readable acfd gallery .*does not fit 8-d embeddings"):
        Gallery.load(bad)


def test_one_reference_galleries_take_the_adaptations_threshold() -> None:
    """Cosines in the adapted space run lower than the embedder's: a gallery of one reference per
    character cannot calibrate and takes the threshold the adaptation fitted on the show's crops,
    which names most insiders."""
    from acfd.recognition.gallery_model import fit_gallery_model

    x, labels = _show()
    adaptation = fit_show_adaptation(x)
    assert adaptation.threshold is not None and adaptation.threshold < 0.9
    refs = np.array([np.flatnonzero(labels == c)[0] for c in range(4)])
    model = fit_gallery_model(x[refs], labels[refs], fallback_threshold=0.9, adaptation=adaptation)
    assert not model.calibrated and model.threshold == adaptation.threshold
    probes = np.setdiff1d(np.arange(len(x)), refs)
    pred, score = model.predict(x[probes])
    assert ((pred == labels[probes]) & (score >= model.threshold)).mean() > 0.5
    assert fit_gallery_model(x[refs], labels[refs], fallback_threshold=0.9).threshold == 0.9  # no adaptation: the fallback
