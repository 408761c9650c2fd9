"""How much human work a project needs: answer its questions with an oracle that knows the truth.

Used to measure the pipeline on a labelled set (docs/ASSEMBLE.md). Two ways of working, as the
app offers them:

- ``questions``: the oracle answers every yes/no question as the app asks them (the papers' T/F
  questions, MM'20 section 3.1), then names the remaining unnamed crops in the group view;
- ``groups``: the oracle works in the group view only (a group per candidate character and one per
  cluster of unnamed crops).

In the group view it works the way a person would: per group, type (or accept) the majority's
name, click away the crops that are someone else, accept. Between rounds of groups an optional
``refit`` callback re-ranks what is left (e.g. :func:`acfd.assemble.stages.refit_candidates`,
which learns from the answers). The answers go through :mod:`acfd.assemble.review` exactly like
the web app's, under the annotator name ``oracle``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from acfd.assemble import review
from acfd.assemble.db import ProjectDB


@dataclass
class ReviewCost:
    """What the oracle did. ``actions`` is what a person answers: questions + group answers
    (+ ``deselect_clicks``, the crops clicked away in groups)."""

    crops: int
    representatives: int
    questions: int = 0
    group_answers: int = 0
    deselect_clicks: int = 0
    not_faces: int = 0

    @property
    def actions(self) -> int:
        return self.questions + self.group_answers + self.deselect_clicks


POLICIES = ("questions", "groups")


def simulate_review(
    db: ProjectDB, truth: Mapping[int, str | None], max_rounds: int = 1000, policy: str = "questions",
    refit: Callable[[], object] | None = None,
) -> ReviewCost:
    """Answer everything in ``db`` as an oracle.

    Args:
        db: the project database.
        truth: ``{face_id: true name, or None when the crop is not a face}`` for the representatives.
        max_rounds: safety bound on the group rounds.
        policy: ``questions`` (yes/no questions first) or ``groups`` (the group view only).
        refit: called after every round of groups (re-ranks the open crops).
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    names = review.identity_names(db)
    reps = [r["id"] for r in review.representatives(db)]
    cost = ReviewCost(
        crops=int(db.scalar("SELECT COUNT(*) FROM faces WHERE status = 'kept' AND dedup_done = 1") or 0),
        representatives=len(reps),
    )
    while policy == "questions" and (q := review.next_question(db, "oracle")) is not None:
        true = truth.get(q["face_id"])
        answer = "not_face" if true is None else ("yes" if true == names[q["identity_id"]] else "no")
        review.record_answer(db, "oracle", [q["face_id"]], answer, q["identity_id"])
        cost.questions += 1
        cost.not_faces += answer == "not_face"
    for _ in range(max_rounds):
        groups = review.groups(db, max_faces=10**9)
        if not groups:
            break
        for g in groups:
            votes = Counter(truth.get(f) for f in g["face_ids"])
            name, _ = votes.most_common(1)[0]
            chosen = [f for f in g["face_ids"] if truth.get(f) == name]
            cost.deselect_clicks += len(g["face_ids"]) - len(chosen)
            if name is None:
                review.record_answer(db, "oracle", chosen, "not_face", kind="group")
            else:
                review.record_answer(db, "oracle", chosen, "yes", name=name, kind="group")
            cost.group_answers += 1
        if refit is not None:
            refit()
    return cost
