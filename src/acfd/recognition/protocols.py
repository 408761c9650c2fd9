"""The arXiv paper's recognition protocols ("Recognition scenarios", "Evaluation and baselines").

Identification (1:N): for each identity one image (seeded choice) goes into the gallery together
with every distractor; the identity's other images are probes. A probe's rank is 1 + the number of
gallery entries more similar than its own identity's gallery image; rank-k accuracy for k = 1..10
gives the CMC curve. The paper (MegaFace-style) puts only the probe's own image among the
distractors; here every identity's gallery image is in the one gallery, so the other identities act
as extra distractors: never easier than the paper's set-up, and still meaningful without distractors.

Verification (1:1): balanced positive / negative pairs drawn with a seed; 10-fold cross-validation
(threshold chosen on 9 folds, accuracy on the 10th, mean and std) and the ROC curve / AUC over all
pairs. Similarity is the cosine of the L2-normalised embeddings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class IdentificationResult:
    """Rank-k accuracies ``cmc[k-1]`` (fractions) and the per-probe ranks."""

    cmc: list[float]
    ranks: list[int] = field(repr=False)
    num_probes: int = 0
    gallery_size: int = 0

    @property
    def rank1(self) -> float:
        return self.cmc[0]

    def rank(self, k: int) -> float:
        return self.cmc[min(k, len(self.cmc)) - 1]


@dataclass
class VerificationResult:
    """10-fold accuracy (mean, std), the threshold chosen on all pairs, ROC and AUC."""

    accuracy: float
    accuracy_std: float
    fold_accuracies: list[float]
    threshold: float
    auc: float
    fpr: list[float] = field(repr=False)
    tpr: list[float] = field(repr=False)
    num_positive: int = 0
    num_negative: int = 0


def choose_gallery(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Index of one seeded image per identity (in label order)."""
    rng = np.random.default_rng(seed)
    return np.array([rng.choice(np.flatnonzero(labels == lab)) for lab in np.unique(labels)], dtype=np.int64)


def identification(
    embeddings: np.ndarray, labels: np.ndarray, distractors: np.ndarray | None = None, seed: int = 0, max_rank: int = 10
) -> IdentificationResult:
    """Rank-1..``max_rank`` accuracy of the identification protocol (see the module docstring).

    Args:
        embeddings: ``(N, D)`` unit rows of the identity folder's images.
        labels: ``(N,)`` identity indices; every identity needs at least 2 images.
        distractors: ``(M, D)`` unit rows of distractor faces (none of the identities), or None.
        seed: chooses the gallery image of each identity.
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels)
    if (counts[np.unique(labels)] < 2).any():
        raise ValueError("identification needs at least 2 images of every identity (one gallery image, one probe)")
    gallery_idx = choose_gallery(labels, seed)
    gallery_labels = labels[gallery_idx]
    gallery = embeddings[gallery_idx]
    if distractors is not None and len(distractors):
        gallery = np.concatenate([gallery, distractors.astype(np.float32)])
    is_probe = np.ones(len(labels), bool)
    is_probe[gallery_idx] = False
    probes, probe_labels = embeddings[is_probe], labels[is_probe]
    sims = probes @ gallery.T  # (P, G)
    own_column = np.searchsorted(gallery_labels, probe_labels)  # gallery_labels are sorted (np.unique order)
    own = sims[np.arange(len(probes)), own_column]
    ranks = 1 + (sims > own[:, None]).sum(axis=1)
    ks = np.arange(1, max_rank + 1)
    cmc = [(ranks <= k).mean().item() for k in ks]
    return IdentificationResult(cmc, ranks.tolist(), int(len(probes)), int(gallery.shape[0]))


def verification_pairs(labels: np.ndarray, num_pairs: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``num_pairs`` distinct positive and as many distinct negative index pairs (fewer if not available).

    Returns:
        ``pairs`` ``(2P, 2)`` and ``same`` ``(2P,)`` bool (positives first).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(labels == lab) for lab in np.unique(labels)]
    groups = [g for g in groups if len(g) >= 2]
    if not groups or len(np.unique(labels)) < 2:
        raise ValueError("verification needs at least 2 identities and one identity with 2 images")
    weights = np.array([len(g) * (len(g) - 1) / 2 for g in groups], dtype=np.float64)
    n_pos = int(min(num_pairs, weights.sum()))
    positives: set[tuple[int, int]] = set()
    while len(positives) < n_pos:
        g = groups[rng.choice(len(groups), p=weights / weights.sum())]
        a, b = rng.choice(g, 2, replace=False)
        positives.add((int(min(a, b)), int(max(a, b))))
    n = len(labels)
    n_neg_possible = (n * (n - 1) - sum(len(g) * (len(g) - 1) for g in (np.flatnonzero(labels == lab) for lab in np.unique(labels)))) // 2
    n_neg = int(min(n_pos, n_neg_possible))
    negatives: set[tuple[int, int]] = set()
    while len(negatives) < n_neg:
        a, b = rng.choice(n, 2, replace=False)
        if labels[a] != labels[b]:
            negatives.add((int(min(a, b)), int(max(a, b))))
    pairs = np.array(sorted(positives) + sorted(negatives), dtype=np.int64).reshape(-1, 2)
    same = np.array([True] * len(positives) + [False] * len(negatives))
    return pairs, same


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """The threshold (predict "same" when score >= t) with the best accuracy on these pairs, and that accuracy."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], same[order]
    # accepting the first i pairs (i = 0..n): true accepts + true rejects
    tp = np.concatenate([[0], np.cumsum(y)])
    tn = (~y).sum() - np.concatenate([[0], np.cumsum(~y)])
    correct = tp + tn
    # only cut between distinct scores
    valid = np.ones(len(s) + 1, bool)
    valid[1:-1] = s[1:] < s[:-1]
    i = int(np.argmax(np.where(valid, correct, -1)))
    if i == 0:
        t = float(s[0]) + 1e-6
    elif i == len(s):
        t = float(s[-1]) - 1e-6
    else:
        t = float((s[i - 1] + s[i]) / 2)
    return t, float(correct[i] / len(s))


def roc_auc(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """ROC (fpr, tpr over descending thresholds, from (0, 0) to (1, 1)) and its area (ties count half)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], same[order]
    last = np.r_[np.flatnonzero(s[1:] < s[:-1]), len(s) - 1]  # last index of each distinct score
    tpr = np.r_[0.0, np.cumsum(y)[last] / max(1, y.sum())]
    fpr = np.r_[0.0, np.cumsum(~y)[last] / max(1, (~y).sum())]
    return fpr, tpr, float(np.trapezoid(tpr, fpr))


def verification(
    embeddings: np.ndarray, labels: np.ndarray, num_pairs: int = 3000, folds: int = 10, seed: int = 0
) -> VerificationResult:
    """The 10-fold verification protocol on seeded balanced pairs (see the module docstring)."""
    pairs, same = verification_pairs(labels, num_pairs, seed)
    if len(pairs) < folds:
        raise ValueError(f"only {len(pairs)} verification pairs, fewer than {folds} folds")
    scores = np.einsum("ij,ij->i", embeddings[pairs[:, 0]], embeddings[pairs[:, 1]])
    fold_of = np.random.default_rng(seed + 1).permutation(len(pairs)) % folds
    accs = []
    for f in range(folds):
        t, _ = best_threshold(scores[fold_of != f], same[fold_of != f])
        test = fold_of == f
        accs.append(float(((scores[test] >= t) == same[test]).mean()))
    fpr, tpr, auc = roc_auc(scores, same)
    threshold, _ = best_threshold(scores, same)
    return VerificationResult(
        float(np.mean(accs)), float(np.std(accs)), accs, threshold, auc, fpr.tolist(), tpr.tolist(),
        int(same.sum()), int((~same).sum()),
    )


@dataclass
class RecognitionReport:
    """Both protocols' results on one identity folder."""

    identification: IdentificationResult
    verification: VerificationResult
    model_id: str = ""
    num_images: int = 0
    num_identities: int = 0
    num_distractors: int = 0
    failed: list[str] = field(default_factory=list)

    def summary_lines(self) -> list[str]:
        """The lines ``acfd recognize eval`` prints (``rank1 <percent>`` ... ``AUC <0..1>``)."""
        ident, ver = self.identification, self.verification
        return [
            f"rank1 {100 * ident.rank(1):.2f}",
            f"rank5 {100 * ident.rank(5):.2f}",
            f"rank10 {100 * ident.rank(10):.2f}",
            f"verification accuracy {100 * ver.accuracy:.2f} +- {100 * ver.accuracy_std:.2f}",
            f"AUC {ver.auc:.4f}",
            f"threshold {ver.threshold:.4f}",
            f"({self.num_identities} identities, {self.num_images} images, {ident.num_probes} probes, "
            f"gallery {ident.gallery_size} incl. {self.num_distractors} distractors, "
            f"{ver.num_positive}+{ver.num_negative} pairs, model {self.model_id})",
        ]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["rank1"] = self.identification.rank(1)
        data["rank5"] = self.identification.rank(5)
        return data


def evaluate_embeddings(
    embeddings: np.ndarray, labels: np.ndarray, distractors: np.ndarray | None = None, seed: int = 0,
    num_pairs: int = 3000, model_id: str = "",
) -> RecognitionReport:
    """Run both protocols on precomputed unit embeddings."""
    ident = identification(embeddings, labels, distractors, seed=seed)
    ver = verification(embeddings, labels, num_pairs=num_pairs, seed=seed)
    return RecognitionReport(
        ident, ver, model_id, int(len(labels)), int(len(np.unique(labels))),
        0 if distractors is None else int(len(distractors)),
    )
