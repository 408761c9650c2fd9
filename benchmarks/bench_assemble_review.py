"""How many answers a person gives to name a set of labelled crops with `acfd assemble`, against
labelling every crop by hand.

The crops of ``--characters`` (folders of ``ROOT/<character>/*.jpg``, e.g. characters the
recognition model never saw) are the sources, each whole image one face box; ``--refs`` typical
images of the first ``--with-refs`` characters are the reference set, the others have none (they
reach the person as clusters). An oracle that knows the truth answers as a person would
(:func:`acfd.assemble.simulate.simulate_review`), with the yes/no questions first (``questions``)
or in the group view only (``groups``), optionally re-ranking the open crops after every round of
groups (``--refit``). Prints one line per embedder and policy: actions against labels by hand.

    python benchmarks/bench_assemble_review.py ../shared/data/cartoon-id/images \
        --characters ame,calli,ceci,fuwawa --weights src/acfd/weights/recognition-cartoon-s.safetensors
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path


def run(root: Path, characters: list[str], weights: str | None, features: str, per_character: int,
        with_refs: int, refs: int, policy: str, refit: bool, work: Path, settings: dict | None = None) -> dict:
    from acfd.assemble import stages
    from acfd.assemble.config import AssembleConfig
    from acfd.assemble.pipeline import run_pipeline
    from acfd.assemble.project import Project
    from acfd.assemble.simulate import simulate_review
    from acfd.recognition import PixelEmbedder, Recognizer

    shutil.rmtree(work, ignore_errors=True)
    src, ref_dir = work / "src", work / "refs"
    src.mkdir(parents=True)
    rows, truth_by_key = [], {}
    for k, char in enumerate(characters):
        files = sorted((root / char).glob("*.jpg"))
        if k < with_refs:
            (ref_dir / char).mkdir(parents=True)
            for f in files[:refs]:
                shutil.copy(f, ref_dir / char / f.name)
        for f in files[refs : refs + per_character]:
            key = f"{char}__{f.name}"
            (src / key).symlink_to(f.resolve())
            rows.append(f"{key},32,32,96,96")  # enlarged rate 1.0: the crop is the whole 128x128 image
            truth_by_key[key] = char
    (work / "boxes.csv").write_text("\n".join(rows) + "\n")
    embedder = PixelEmbedder() if features == "pixels" else Recognizer(weights)
    project = Project(work / "proj", create=True)
    cfg = project.settle_config(AssembleConfig(**(settings or {})), {})
    run_pipeline(project, [str(src)], cfg, stages.boxes_finder(work / "boxes.csv"), embedder,
                 references=ref_dir if with_refs else None, progress=False)
    truth = {r["id"]: truth_by_key[r["key"]] for r in project.db.query(
        "SELECT f.id, fr.key FROM faces f JOIN frames fr ON fr.id = f.frame_id")}
    cost = simulate_review(project.db, truth, policy=policy,
                           refit=(lambda: stages.refit_candidates(project, cfg)) if refit else None)
    wrong = wrong_labels(project.db, truth)
    return {"embedder": embedder.model_id, "policy": policy + ("+refit" if refit else ""), "crops": cost.crops,
            "representatives": cost.representatives, "questions": cost.questions,
            "group_answers": cost.group_answers, "deselect_clicks": cost.deselect_clicks,
            "actions": cost.actions, "saved": 1 - cost.actions / max(1, cost.crops), "wrong": wrong}


def wrong_labels(db, truth: dict[int, str]) -> int:  # noqa: ANN001
    """Crops whose final label (their own, or their representative's for a near-duplicate) is not
    their true name: what dedup merged across characters, which no answer corrects."""
    from acfd.assemble.review import face_states, identity_names

    names = identity_names(db)
    label = {fid: names.get(st.label) for fid, st in face_states(db).items()}
    rows = db.query("SELECT id, dup_of FROM faces WHERE status = 'kept'")
    return sum(label.get(r["dup_of"] if r["dup_of"] is not None else r["id"]) != truth[r["id"]] for r in rows)


def _setting(value: str) -> float | bool:
    return value.lower() == "true" if value.lower() in ("true", "false") else float(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--characters", required=True, help="comma-separated character folders")
    ap.add_argument("--weights", action="append", default=None, help="recognition weights (repeatable); 'pixels' for raw pixels")
    ap.add_argument("--per-character", type=int, default=60)
    ap.add_argument("--with-refs", type=int, default=2, help="characters that get reference images")
    ap.add_argument("--refs", type=int, default=3, help="reference images per such character")
    ap.add_argument("--policies", default="questions,groups")
    ap.add_argument("--refit", action="store_true", help="also each policy with re-ranking between rounds")
    ap.add_argument("--set", action="append", default=[], help="an assembling setting, e.g. cluster_sim=0.8 (repeatable)")
    args = ap.parse_args()
    chars = [c.strip() for c in args.characters.split(",") if c.strip()]
    print("| embedder | policy | crops | representatives | questions | group answers | clicks away | actions | saved | wrong labels |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for w in args.weights or [None]:
            for policy in args.policies.split(","):
                for refit in ([False, True] if args.refit else [False]):
                    r = run(args.root, chars, None if w == "pixels" else w, "pixels" if w == "pixels" else "model",
                            args.per_character, args.with_refs, args.refs, policy, refit, Path(tmp) / "work",
                            {k: _setting(v) for k, v in (item.split("=", 1) for item in args.set)})
                    print(f"| {r['embedder']} | {r['policy']} | {r['crops']} | {r['representatives']} | {r['questions']} | "
                          f"{r['group_answers']} | {r['deselect_clicks']} | {r['actions']} | {100 * r['saved']:.0f} % | {r['wrong']} |",
                          flush=True)


if __name__ == "__main__":
    main()
