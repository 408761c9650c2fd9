"""Identity folders (``ROOT/<identity>/*.jpg``): scanning with clear errors, loading crops in memory."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acfd.data.image_io import ImageReadError, is_image_file, load_image
from acfd.recognition.crops import resize_square

logger = logging.getLogger(__name__)


@dataclass
class IdentitySet:
    """Images and integer labels of an identity folder (``labels[i]`` indexes ``identities``)."""

    paths: list[Path]
    labels: np.ndarray
    identities: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, identities: list[str]) -> IdentitySet:
        """Only the given identities, relabelled 0..len(identities)-1 in that order."""
        missing = sorted(set(identities) - set(self.identities))
        if missing:
            raise ValueError(f"identities not in the folder: {', '.join(missing)}")
        remap = {self.identities.index(name): i for i, name in enumerate(identities)}
        keep = [i for i, lab in enumerate(self.labels) if int(lab) in remap]
        return IdentitySet(
            [self.paths[i] for i in keep], np.array([remap[int(self.labels[i])] for i in keep], dtype=np.int64), list(identities)
        )


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly in ``folder`` or below it, sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder")
    return sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p))


def scan_identity_folder(root: str | os.PathLike[str], min_identities: int = 1, min_images: int = 1) -> IdentitySet:
    """One subfolder per identity, sorted by name.

    Raises:
        ValueError: not a folder, fewer than ``min_identities`` identities, or an identity with
            fewer than ``min_images`` images (one line naming the folder and the problem).
    """
    base = Path(root)
    if not base.is_dir():
        raise ValueError(f"{base}: not a folder (expected one subfolder of images per identity)")
    paths: list[Path] = []
    labels: list[int] = []
    identities: list[str] = []
    for sub in sorted(p for p in base.iterdir() if p.is_dir()):
        images = list_images(sub)
        if not images:
            continue
        if len(images) < min_images:
            raise ValueError(f"{sub}: identity has {len(images)} image(s), the protocol needs at least {min_images}")
        identities.append(sub.name)
        paths.extend(images)
        labels.extend([len(identities) - 1] * len(images))
    if len(identities) < min_identities:
        raise ValueError(
            f"{base}: found {len(identities)} identity folder(s) with images, need at least {min_identities}"
        )
    return IdentitySet(paths, np.array(labels, dtype=np.int64), identities)


def scan_identity_folders(
    roots: str | os.PathLike[str] | list[str | os.PathLike[str]], min_identities: int = 1, min_images: int = 1
) -> IdentitySet:
    """:func:`scan_identity_folder` over one folder or several (their identities together).

    Raises:
        ValueError: as :func:`scan_identity_folder`, or one identity name in two folders.
    """
    if isinstance(roots, (str, os.PathLike)):
        return scan_identity_folder(roots, min_identities, min_images)
    paths: list[Path] = []
    labels: list[np.ndarray] = []
    identities: list[str] = []
    for root in roots:
        part = scan_identity_folder(root, 1, min_images)
        clash = sorted(set(part.identities) & set(identities))
        if clash:
            raise ValueError(f"{root}: identities also in another data folder: {', '.join(clash)}")
        paths.extend(part.paths)
        labels.append(part.labels + len(identities))
        identities.extend(part.identities)
    if len(identities) < min_identities:
        raise ValueError(f"{', '.join(map(str, roots))}: found {len(identities)} identities, need at least {min_identities}")
    return IdentitySet(paths, np.concatenate(labels) if labels else np.zeros(0, np.int64), identities)


def load_crops(paths: list[Path], size: int | None = None) -> tuple[list[np.ndarray], list[int], list[str]]:
    """Decode images (resized to ``size`` when given); returns (crops, indices kept, one-line errors)."""
    crops, kept, errors = [], [], []
    for i, path in enumerate(paths):
        try:
            image = load_image(path)
        except ImageReadError as exc:
            errors.append(str(exc))
            continue
        crops.append(resize_square(image, size) if size else image)
        kept.append(i)
    return crops, kept, errors
