"""The assembling pipeline on a tiny synthetic set with known answers (no model weights needed):
boxes come from a CSV (the --boxes path), embeddings from the raw-pixel embedder."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from acfd.assemble import review, stages
from acfd.assemble.config import AssembleConfig
from acfd.assemble.export import export_project, folder_name
from acfd.assemble.pipeline import run_pipeline
from acfd.assemble.project import Project
from acfd.assemble.quality import crop_resolution, laplacian_variance, quality_verdict
from acfd.cli import app
from acfd.recognition import PixelEmbedder

SIZE = 300
FACE = (75, 75, 225, 225)  # enlarged rate 1.0: the crop is the whole 300x300 image


def character(seed: int, variant: int, noise: float = 0.5) -> np.ndarray:
    """A 'character': a fixed random block pattern (seed) plus a variant's own block noise."""
    base = np.random.default_rng(seed).uniform(0, 255, (10, 10, 3))
    jitter = np.random.default_rng(1000 * seed + variant).normal(0, 74 * noise, (10, 10, 3))
    small = np.clip(base + jitter, 0, 255).astype(np.uint8)
    return cv2.resize(small, (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)


def _save(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rgb[..., ::-1])


@pytest.fixture
def dataset(tmp_path: Path) -> dict[str, Path]:
    """Sources: A (2 variants + an exact copy), B (2), C (2, no reference), a flat (blurred) face,
    a small face; references for A and B; a boxes CSV."""
    src, refs = tmp_path / "src", tmp_path / "refs"
    rows = []
    images = {
        "a1.png": character(1, 1), "a2.png": character(1, 2), "a1_copy.png": character(1, 1),
        "b1.png": character(2, 1), "b2.png": character(2, 2),
        "c1.png": character(3, 1), "c2.png": character(3, 2),
        "flat.png": np.full((SIZE, SIZE, 3), 128, np.uint8),
    }
    for name, im in images.items():
        _save(src / name, im)
        rows.append(f"{name},{','.join(map(str, FACE))}")
    rows.append("b1.png,10,10,40,40")  # crop 60 px < 100: small
    _save(refs / "Alice" / "ref.png", character(1, 9))
    _save(refs / "Bob" / "ref.png", character(2, 9))
    (tmp_path / "boxes.csv").write_text("\n".join(rows) + "\n")
    return {"src": src, "refs": refs, "boxes": tmp_path / "boxes.csv", "project": tmp_path / "proj"}


def _run(ds: dict[str, Path], sources: list[str] | None = None) -> tuple[Project, list[stages.StageReport]]:
    project = Project(ds["project"], create=True)
    cfg = project.settle_config(AssembleConfig(), {})
    reports = run_pipeline(
        project, sources or [str(ds["src"])], cfg, stages.boxes_finder(ds["boxes"]), PixelEmbedder(),
        references=ds["refs"], progress=False,
    )
    return project, reports


def _face_id(project: Project, key: str) -> int:
    return int(project.db.scalar(
        "SELECT f.id FROM faces f JOIN frames fr ON fr.id = f.frame_id WHERE fr.key = ? ORDER BY f.id LIMIT 1", (key,)
    ))


def test_quality_helpers() -> None:
    assert crop_resolution((0, 0, 50, 40), 1.0) == (100, 80)
    assert laplacian_variance(np.full((40, 40, 3), 7, np.uint8)) == 0.0
    assert laplacian_variance(character(1, 1)) > 30
    assert quality_verdict((120, 99), 500.0, 100, 30.0) == "small"
    assert quality_verdict((120, 120), 29.9, 100, 30.0) == "blurred"
    assert quality_verdict((120, 120), 30.0, 100, 30.0) == "kept"


def test_config_defaults_are_the_papers() -> None:
    cfg = AssembleConfig()
    assert (cfg.every_seconds, cfg.enlarge_rate, cfg.min_resolution, cfg.blur_size, cfg.blur_thr) == (1.0, 1.0, 100, 256, 30.0)
    assert (cfg.dup_sim, cfg.candidate_sim, cfg.cluster_sim) == (None, None, None)  # the recognition model's
    papers = cfg.for_embedder(PixelEmbedder())  # a model that stores none: the papers' values
    assert (papers.dup_sim, papers.candidate_sim, papers.cluster_sim) == (0.95, None, 0.5)


def test_unset_similarities_come_from_the_recognition_weights() -> None:
    class Tuned:
        assemble_settings = {"dup_sim": 0.99, "candidate_sim": 0.9, "cluster_sim": 0.85}

    cfg = AssembleConfig(cluster_sim=0.7).for_embedder(Tuned())
    assert (cfg.dup_sim, cfg.candidate_sim, cfg.cluster_sim) == (0.99, 0.9, 0.7)  # a set value wins
    with pytest.raises(ValueError):
        AssembleConfig(dup_sim=2.0)


def test_pipeline_counts_dedup_candidates_clusters(dataset: dict[str, Path]) -> None:
    project, reports = _run(dataset)
    by = {r.stage: r for r in reports}
    assert (by["ingest"].n_in, by["ingest"].kept) == (8, 8)
    assert by["crop"].n_in == 9 and by["crop"].kept == 7
    assert by["crop"].dropped == {"small": 1, "blurred": 1}
    assert by["dedup"].kept == 6 and sum(by["dedup"].dropped.values()) == 1
    db = project.db
    copy, a1 = _face_id(project, "a1_copy.png"), _face_id(project, "a1.png")
    assert db.scalar("SELECT dup_of FROM faces WHERE id = ?", (copy,)) == a1  # the representative stands for it
    names = review.identity_names(db)
    cands = review.candidate_lists(db)
    for key, who in (("a1.png", "Alice"), ("a2.png", "Alice"), ("b1.png", "Bob"), ("b2.png", "Bob")):
        assert [names[i] for i, _ in cands[_face_id(project, key)]] == [who], key
    c1, c2 = _face_id(project, "c1.png"), _face_id(project, "c2.png")
    assert c1 not in cands and c2 not in cands
    clusters = {r["id"]: r["cluster_id"] for r in db.query("SELECT id, cluster_id FROM faces WHERE cluster_id IS NOT NULL")}
    assert clusters[c1] == clusters[c2] and clusters[c1] != clusters[a1]
    assert all(r.line() for r in reports)
    project.close()


def test_rerun_skips_finished_work_and_adds_new_sources(dataset: dict[str, Path], tmp_path: Path) -> None:
    project, _ = _run(dataset)
    project.close()
    project, reports = _run(dataset)
    assert all(r.done_now == 0 for r in reports), [r.line() for r in reports]
    assert project.db.scalar("SELECT COUNT(*) FROM faces") == 9
    project.close()
    extra = tmp_path / "more"
    _save(extra / "a3.png", character(1, 3))
    with open(dataset["boxes"], "a") as f:
        f.write(f"a3.png,{','.join(map(str, FACE))}\n")
    project, reports = _run(dataset, [str(dataset["src"]), str(extra)])
    by = {r.stage: r for r in reports}
    assert by["ingest"].done_now == 1 and by["detect"].done_now == 1 and by["embed"].done_now == 1
    assert project.db.scalar("SELECT COUNT(*) FROM faces") == 10
    project.close()


def test_killed_run_resumes_without_losing_answers(dataset: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    project = Project(dataset["project"], create=True)
    cfg = project.settle_config(AssembleConfig(), {})
    stages.ingest(project, [str(dataset["src"])], cfg, progress=False)
    stages.detect(project, stages.boxes_finder(dataset["boxes"]), cfg, progress=False)
    calls = {"n": 0}
    real_embed = PixelEmbedder.embed

    def dying_embed(self: PixelEmbedder, crops: list) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the run is killed during the second batch
        return real_embed(self, crops)

    stages.crop(project, cfg, progress=False)
    monkeypatch.setattr(PixelEmbedder, "embed", dying_embed)
    with pytest.raises(KeyboardInterrupt):
        stages.embed(project, PixelEmbedder(), batch_size=3, progress=False)
    assert project.db.scalar("SELECT COUNT(*) FROM faces WHERE embedding IS NOT NULL") == 3  # first batch committed
    monkeypatch.setattr(PixelEmbedder, "embed", real_embed)
    project.close()
    project, reports = _run(dataset)
    assert {r.stage: r for r in reports}["embed"].done_now == 4
    a1 = _face_id(project, "a1.png")
    alice = next(i for i, n in review.identity_names(project.db).items() if n == "Alice")
    review.record_answer(project.db, "ann", [a1], "yes", alice)
    project.close()
    project, _ = _run(dataset)  # a later run keeps the answer
    assert review.face_states(project.db)[a1].label == alice
    project.close()


def test_settings_conflict_is_refused(dataset: dict[str, Path]) -> None:
    project, _ = _run(dataset)
    with pytest.raises(ValueError, match="blur_thr"):
        project.settle_config(AssembleConfig(blur_thr=10.0), {"blur_thr": 10.0})
    project.close()


def test_other_embedding_model_is_refused(dataset: dict[str, Path]) -> None:
    project, _ = _run(dataset)
    with pytest.raises(ValueError, match="not comparable"):
        stages.embed(project, PixelEmbedder(size=16), progress=False)
    project.close()


def test_review_questions_no_then_next_and_undo(dataset: dict[str, Path]) -> None:
    project, _ = _run(dataset)
    db = project.db
    q = review.next_question(db, "ann")
    assert q is not None and q["name"] in ("Alice", "Bob") and q["remaining"] == 4
    # a second annotator gets another question while the first one's is leased
    q2 = review.next_question(db, "other")
    assert q2 is not None and q2["face_id"] != q["face_id"]
    review.record_answer(db, "ann", [q["face_id"]], "no", q["identity_id"])
    st = review.face_states(db)[q["face_id"]]
    assert q["identity_id"] in st.rejected and not st.reviewed
    # with its only candidate rejected the face is unnamed: it moves to its cluster's group
    keys = [g["key"] for g in review.groups(db) if q["face_id"] in g["face_ids"]]
    assert keys and keys[0].startswith("cluster-")
    undone = review.undo_last(db, "ann")
    assert undone is not None and undone["face_ids"] == [q["face_id"]]
    assert review.face_states(db)[q["face_id"]].rejected == set()
    assert review.undo_last(db, "nobody") is None
    with pytest.raises(ValueError):
        review.record_answer(db, "ann", [q["face_id"]], "yes")  # yes needs an identity
    with pytest.raises(ValueError):
        review.record_answer(db, "ann", [999999], "skip")
    project.close()


def test_group_answer_names_a_cluster_and_export(dataset: dict[str, Path], tmp_path: Path) -> None:
    project, _ = _run(dataset)
    db = project.db
    c1, c2 = _face_id(project, "c1.png"), _face_id(project, "c2.png")
    group = next(g for g in review.groups(db) if c1 in g["face_ids"])
    assert group["kind"] == "cluster" and set(group["face_ids"]) == {c1, c2}
    review.record_answer(db, "ann", group["face_ids"], "yes", name="  Carol  ", kind="group")
    a1, b1 = _face_id(project, "a1.png"), _face_id(project, "b1.png")
    alice = next(i for i, n in review.identity_names(db).items() if n == "Alice")
    review.record_answer(db, "ann", [a1], "yes", alice)
    review.record_answer(db, "ann2", [b1], "not_face")
    prog = review.progress(db)
    per = {d["name"]: d for d in prog["identities"]}
    assert per["Carol"]["confirmed"] == 2 and per["Alice"]["confirmed"] == 1 and per["Bob"]["pending"] == 1
    assert prog["not_face"] == 1 and prog["actions"] == {"group": 1, "question": 2}

    out = tmp_path / "dataset"
    summary = export_project(project, out)
    assert sorted(p.name for p in (out / "identities" / "Alice").iterdir()) == sorted([f"{a1}.jpg", f"{_face_id(project, 'a1_copy.png')}.jpg"])
    assert len(list((out / "identities" / "Carol").iterdir())) == 2
    assert (out / "unreviewed" / "Alice").is_dir()  # a2 not reviewed yet
    assert summary["confirmed"] == 4 and summary["not_face"] == 1
    csv_rows = (out / "boxes.csv").read_text().splitlines()
    assert not any(r.startswith("b1.png,75") for r in csv_rows)  # not a face: no box
    assert "b1.png,10,10,40,40" in csv_rows and "flat.png,75,75,225,225" in csv_rows  # filtered crops are still faces
    coco = json.loads((out / "boxes_coco.json").read_text())
    assert len(coco["annotations"]) == len(csv_rows)
    manifest = json.loads((out / "manifest.json").read_text())
    entry = next(e for e in manifest["faces"] if e["face_id"] == b1)
    assert entry["review"] == "not_face" and entry["answers"][0]["annotator"] == "ann2" and entry["answers"][0]["at"]
    assert entry["source"].endswith("b1.png") and entry["box"] == [75.0, 75.0, 225.0, 225.0]
    assert manifest["settings"]["dup_sim"] == 0.95
    export_project(project, out)  # a second export replaces the first
    assert (out / "manifest.json").is_file()
    with pytest.raises(ValueError):
        export_project(project, project.root)
    project.close()


def test_two_connections_lose_no_answer(dataset: dict[str, Path]) -> None:
    project, _ = _run(dataset)
    other = Project(dataset["project"])
    ids = [r["id"] for r in review.representatives(project.db)]
    for i, fid in enumerate(ids):
        review.record_answer(project.db if i % 2 else other.db, f"ann{i % 2}", [fid], "skip")
    conn = sqlite3.connect(dataset["project"] / "project.db")
    assert conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == len(ids)
    conn.close()
    other.close()
    project.close()


def test_video_source_sampling_keeps_timestamps(tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (SIZE, SIZE))
    for i in range(25):
        writer.write(character(1, i)[..., ::-1])
    writer.release()
    project = Project(tmp_path / "proj", create=True)
    cfg = project.settle_config(AssembleConfig(every_seconds=1.0), {})
    report = stages.ingest(project, [str(video)], cfg, progress=False)
    rows = project.db.query("SELECT frame_index, timestamp, file, key FROM frames ORDER BY frame_index")
    assert [(r["frame_index"], r["timestamp"]) for r in rows] == [(0, 0.0), (10, 1.0), (20, 2.0)]
    assert rows[1]["key"] == "clip.avi#frame=000010" and (project.root / rows[1]["file"]).is_file()
    assert report.note == "3 frames"
    project.close()


def test_unreadable_source_is_reported(dataset: dict[str, Path]) -> None:
    (dataset["src"] / "broken.jpg").write_bytes(b"not an image")
    project, reports = _run(dataset)
    assert {r.stage: r for r in reports}["ingest"].dropped == {"unreadable": 1}
    project.close()


def test_folder_name_is_safe() -> None:
    for bad in ("../../etc", "/abs", "a\\b", "..", ".hidden"):
        name = folder_name(bad)
        assert "/" not in name and "\\" not in name and not name.startswith(".") and Path(name).name == name
    assert folder_name("Sailor Moon/Usagi") == "Sailor Moon_Usagi"
    assert folder_name("..") == "_"


def test_cli_assemble_and_export(dataset: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["assemble", str(dataset["src"]), "-o", str(dataset["project"]), "--boxes", str(dataset["boxes"]),
            "--references", str(dataset["refs"]), "--features", "pixels", "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "crop       in 9 faces, kept 7, dropped 2 (1 blurred, 1 small)" in result.output
    again = runner.invoke(app, [*args, "--blur-thr", "5"])
    assert again.exit_code == 1 and "other settings (blur_thr: 30.0 -> 5.0)" in again.output
    out = tmp_path / "exported"
    result = runner.invoke(app, ["assemble", "export", str(dataset["project"]), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "0 confirmed crops" in result.output and (out / "manifest.json").is_file()
    missing = runner.invoke(app, ["assemble", "export", str(tmp_path / "nothing")])
    assert missing.exit_code == 1 and "not an assembling project" in missing.output


def test_simulated_review_counts_the_answers(dataset: dict[str, Path]) -> None:
    from acfd.assemble.simulate import simulate_review

    project, _ = _run(dataset)
    truth = {}
    for key, name in (("a1.png", "Alice"), ("a2.png", "Alice"), ("b1.png", "Bob"), ("b2.png", "Bob"),
                      ("c1.png", "Carol"), ("c2.png", "Carol")):
        truth[_face_id(project, key)] = name
    cost = simulate_review(project.db, truth)
    # 4 yes/no questions (Alice x2, Bob x2), then one group answer names the C cluster
    assert (cost.questions, cost.group_answers, cost.deselect_clicks) == (4, 1, 0)
    assert cost.crops == 7 and cost.representatives == 6 and cost.actions == 5
    states = review.face_states(project.db)
    names = review.identity_names(project.db)
    assert all(names[states[f].label] == n for f, n in truth.items())
    project.close()


def test_detector_finder_and_gallery_references(dataset: dict[str, Path], tmp_path: Path) -> None:
    from types import SimpleNamespace

    from acfd.recognition import Gallery

    class FakeDetector:  # the acfd.Detector interface the pipeline uses
        def detect_arrays(self, images: list, sources: list) -> list:
            return [SimpleNamespace(boxes=np.array([FACE, (0, 0, 30, 30)], np.float32), scores=np.array([0.9, 0.3], np.float32))
                    for _ in images]

    embedder = PixelEmbedder()
    gallery = Gallery.create(tmp_path / "g.gallery", embedder.embedding_dim, embedder.model_id)
    gallery.add(["Alice"], embedder.embed([character(1, 9)]), embedder.model_id)
    gallery.save()
    project = Project(dataset["project"], create=True)
    cfg = project.settle_config(AssembleConfig(), {})
    reports = run_pipeline(project, [str(dataset["src"] / "a1.png"), str(dataset["src"] / "a2.png")], cfg,
                           stages.detector_finder(FakeDetector()), embedder, gallery=tmp_path / "g.gallery", progress=False)
    by = {r.stage: r for r in reports}
    assert "2 faces above score 0.5 (2 low_score not kept)" in by["detect"].note
    assert by["references"].kept == 1 and by["candidates"].kept == 2
    other = Gallery.create(tmp_path / "o.gallery", 8, "another-model")
    other.add(["X"], np.eye(8, dtype=np.float32)[:1])
    other.save()
    with pytest.raises(ValueError, match="another-model"):
        stages.add_references(project, embedder, gallery=tmp_path / "o.gallery", progress=False)
    project.close()


# --- references and re-ranking (recognition side of the pipeline) --------------------------------


def test_references_from_another_folder_are_refused(tmp_path) -> None:
    from acfd.assemble import stages
    from acfd.assemble.project import Project
    from acfd.recognition import PixelEmbedder

    refs_a, refs_b = tmp_path / "a", tmp_path / "b"
    for root in (refs_a, refs_b):
        (root / "red").mkdir(parents=True)
        cv2.imwrite(str(root / "red" / "r.png"), np.full((32, 32, 3), (30, 30, 220), np.uint8))
    project = Project(tmp_path / "proj", create=True)
    emb = PixelEmbedder()
    stages.add_references(project, emb, refs_a, progress=False)
    stages.add_references(project, emb, refs_a, progress=False)  # the same folder again: fine
    with pytest.raises(ValueError, match="the project's references come from .*a, not .*b"):
        stages.add_references(project, emb, refs_b, progress=False)


def test_refit_moves_crops_to_the_character_their_confirmed_neighbours_have(tmp_path) -> None:
    """A confirmed crop joins its character's prototype: a crop close to it (and far from the
    reference) gets that character as candidate after the refit."""
    from acfd.assemble import review, stages
    from acfd.assemble.config import AssembleConfig
    from acfd.assemble.db import to_blob
    from acfd.assemble.project import Project

    project = Project(tmp_path / "proj", create=True)
    db = project.db

    def unit(v):  # noqa: ANN001, ANN202
        v = np.asarray(v, np.float32)
        return v / np.linalg.norm(v)

    with db.transaction() as c:
        c.execute("INSERT INTO identities (name, origin, created_at) VALUES ('ann', 'references', 'now')")
        c.execute("INSERT INTO refs (identity_id, file, origin, embedding) VALUES (1, NULL, 'r', ?)", (to_blob(unit([1, 0, 0])),))
        c.execute("INSERT INTO sources (path, key, kind) VALUES ('s', 's', 'image')")
        c.execute("INSERT INTO frames (source_id, file, key, width, height) VALUES (1, 'f.jpg', 'f', 10, 10)")
        for i, v in enumerate(([0.8, 0.6, 0], [0.5, 0.85, 0.1]), start=1):
            c.execute("INSERT INTO faces (id, frame_id, x1, y1, x2, y2, score, status, dedup_done, embedding)"
                      " VALUES (?, 1, 0, 0, 10, 10, 1.0, 'kept', 1, ?)", (i, to_blob(unit(v))))
    cfg = AssembleConfig(candidate_sim=0.7)
    stages.refit_candidates(project, cfg)
    assert [r["face_id"] for r in db.query("SELECT face_id FROM candidates")] == [1]  # face 2: cos 0.5 to the reference
    review.record_answer(db, "oracle", [1], "yes", 1)
    version = db.query("SELECT version FROM faces WHERE id = 2")[0]["version"]
    stages.refit_candidates(project, cfg)  # the prototype is now the reference and face 1: cos 0.75 to face 2
    assert (2, 1) in [(r["face_id"], r["identity_id"]) for r in db.query("SELECT face_id, identity_id FROM candidates")]
    assert db.query("SELECT version FROM faces WHERE id = 2")[0]["version"] == version + 1  # a page showing it is stale


def test_project_adaptation_needs_enough_crops(tmp_path) -> None:
    from acfd.assemble.db import to_blob

    project = Project(tmp_path / "proj", create=True)
    with project.db.transaction() as c:
        c.execute("INSERT INTO sources (path, key, kind) VALUES ('s', 's', 'image')")
        c.execute("INSERT INTO frames (source_id, file, key, width, height) VALUES (1, 'f.jpg', 'f', 10, 10)")
        for i in range(stages.MIN_CROPS_TO_ADAPT):
            c.execute("INSERT INTO faces (frame_id, x1, y1, x2, y2, score, status, embedding) VALUES (1, 0, 0, 9, 9, 1, 'kept', ?)",
                      (to_blob(np.array([1.0, i], np.float32)),))
            if i == 0:
                assert stages.project_adaptation(project) is None
    adaptation = stages.project_adaptation(project)
    assert np.allclose(adaptation.centre, [1.0, (stages.MIN_CROPS_TO_ADAPT - 1) / 2])
    assert adaptation.projection is None  # too few crops to cluster: centring alone
    assert stages.project_adaptation(project) is adaptation  # the same crops: not fitted again
    with project.db.transaction() as c:
        c.execute("INSERT INTO faces (frame_id, x1, y1, x2, y2, score, status, embedding) VALUES (1, 0, 0, 9, 9, 1, 'kept', ?)",
                  (to_blob(np.array([3.0, 0.0], np.float32)),))
    refitted = stages.project_adaptation(project)
    assert refitted is not adaptation and not np.allclose(refitted.centre, adaptation.centre)


def test_faces_of_one_frame_never_share_a_cluster(tmp_path) -> None:
    from acfd.assemble.db import to_blob

    project = Project(tmp_path / "proj", create=True)
    v = to_blob(np.array([1.0, 0.0], np.float32))
    with project.db.transaction() as c:
        c.execute("INSERT INTO sources (path, key, kind) VALUES ('s', 's', 'image')")
        for f in (1, 2):
            c.execute("INSERT INTO frames (source_id, file, key, width, height) VALUES (1, ?, ?, 10, 10)", (f"{f}.jpg", f"f{f}"))
        for frame in (1, 1, 2):  # two look-alike faces in frame 1, a third in frame 2
            c.execute("INSERT INTO faces (frame_id, x1, y1, x2, y2, score, status, dedup_done, embedding)"
                      " VALUES (?, 0, 0, 9, 9, 1, 'kept', 1, ?)", (frame, v))
    stages.cluster(project, AssembleConfig(cluster_sim=0.5, adapt=False), progress=False)
    clusters = [r["cluster_id"] for r in project.db.query("SELECT cluster_id FROM faces ORDER BY id")]
    assert clusters[0] != clusters[1] and clusters[2] == clusters[0]


def test_faces_of_consecutive_video_frames_that_overlap_form_one_track(tmp_path) -> None:
    from acfd.assemble.db import to_blob

    project = Project(tmp_path / "proj", create=True)
    with project.db.transaction() as c:
        c.execute("INSERT INTO sources (path, key, kind) VALUES ('clip.mp4', 'clip.mp4', 'video')")
        for i in range(3):
            c.execute("INSERT INTO frames (source_id, frame_index, file, key, width, height) VALUES (1, ?, ?, ?, 100, 100)",
                      (i * 25, f"{i}.jpg", f"clip.mp4#{i}"))
        # frame 1: a face moving a little and one far away; frame 2: the first one again
        boxes = [(1, (10, 10, 40, 40)), (2, (12, 11, 42, 41)), (2, (60, 60, 90, 90)), (3, (14, 12, 44, 42))]
        for i, (frame, box) in enumerate(boxes):  # orthogonal embeddings: only the track can link them
            c.execute("INSERT INTO faces (frame_id, x1, y1, x2, y2, score, status, embedding) VALUES (?, ?, ?, ?, ?, 1, 'kept', ?)",
                      (frame, *box, to_blob(np.eye(8, dtype=np.float32)[i])))
    stages.dedup(project, AssembleConfig(), progress=False)
    dup_of = [r["dup_of"] for r in project.db.query("SELECT dup_of FROM faces ORDER BY id")]
    assert dup_of == [None, 1, None, 1]
    stages.dedup(project, AssembleConfig(), progress=False)  # nothing new: unchanged
    with project.db.transaction() as c:
        c.execute("UPDATE faces SET dedup_done = 0, dup_of = NULL")
    stages.dedup(project, AssembleConfig(tracks=False), progress=False)
    assert [r["dup_of"] for r in project.db.query("SELECT dup_of FROM faces ORDER BY id")] == [None, None, None, None]
