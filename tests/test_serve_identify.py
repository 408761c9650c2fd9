"""POST /v1/identify names faces through the recognition library's Identifier: with several
gallery entries of one character, the k candidates are distinct characters."""

from __future__ import annotations

import io

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from acfd.recognition import Gallery, Identifier, PixelEmbedder, crop_face
from acfd.serve import ServeSettings, create_app
from test_serve import FixedDetector


def test_identify_candidates_are_distinct_characters(tmp_path) -> None:
    image = np.zeros((30, 40, 3), np.uint8)
    image[:, :20] = (250, 10, 10)
    image[:, 20:] = (10, 10, 250)
    embedder = PixelEmbedder(8)
    face = crop_face(image, [4.0, 3.0, 12.0, 12.0], embedder.enlarge_rate, embedder.input_size)
    gallery = Gallery.create(tmp_path / "g.faiss", embedder.embedding_dim, embedder.model_id)
    rng = np.random.default_rng(0)
    daphne = [np.clip(face.astype(int) + rng.integers(-6, 6, face.shape), 0, 255).astype(np.uint8) for _ in range(3)]
    gallery.add(["daphne"] * 3, embedder.embed(daphne))
    gallery.add(["fred"], embedder.embed([np.tile(np.arange(32, dtype=np.uint8)[:, None, None] * 8, (1, 32, 3))]))
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    app = create_app(lambda s: FixedDetector(), ServeSettings(), identifier_factory=lambda s: Identifier(embedder, gallery))
    with TestClient(app) as client:
        r = client.post("/v1/identify?k=3", files={"file": ("a.png", buf.getvalue(), "image/png")})
    assert r.status_code == 200, r.text
    names = [c["name"] for c in r.json()["faces"][0]["candidates"]]
    assert names == ["daphne", "fred"]  # k=3 but two characters: each once, best first
