"""The inputs of a batch run: files, folders (recursively), glob patterns and videos, expanded
once into :class:`InputItem` s with the names their results get in every output."""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from acfd.data.image_io import IMAGE_EXTENSIONS, is_image_file
from acfd.data.video import VIDEO_EXTENSIONS, is_video_file

logger = logging.getLogger(__name__)

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputItem:
    """One file to process.

    Args:
        path: the file.
        key: its name in the outputs (relative to the folder or glob it came from).
        kind: ``"image"`` or ``"video"``.
    """

    path: Path
    key: str
    kind: str


def kind_of(path: Path) -> str | None:
    """``"image"`` or ``"video"`` by the file's suffix, else ``None``."""
    if is_image_file(path):
        return "image"
    if is_video_file(path):
        return "video"
    return None


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _glob_base(pattern: str) -> Path:
    """The longest leading folder of ``pattern`` without glob characters."""
    parts = Path(pattern).parts
    base: list[str] = []
    for part in parts[:-1]:
        if _GLOB_CHARS & set(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def collect_inputs(args: list[str]) -> tuple[list[InputItem], list[tuple[str, str]]]:
    """Expand files, folders (recursively) and glob patterns into images and videos.

    Files in folders or glob matches whose suffix is neither an image nor a video suffix are
    skipped (logged); such a file named explicitly is a failure, as is a missing path.

    Args:
        args: the PATH arguments.

    Returns:
        ``(items, failures)``: unique inputs in argument order, and ``(path, reason)`` pairs.
    """
    items: list[InputItem] = []
    failures: list[tuple[str, str]] = []
    seen_paths: set[Path] = set()
    seen_keys: set[str] = set()
    skipped = 0

    def add(path: Path, key: str, kind: str) -> None:
        resolved = path.resolve()
        if resolved in seen_paths:
            return
        seen_paths.add(resolved)
        if key in seen_keys:  # same relative name from two arguments: use the path as given
            key = path.as_posix()
        seen_keys.add(key)
        items.append(InputItem(path, key, kind))

    def add_tree(root: Path, base: Path) -> None:
        nonlocal skipped
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(base)
            if not p.is_file() or _hidden(p.relative_to(root)):
                continue
            kind = kind_of(p)
            if kind is None:
                skipped += 1
                logger.debug("skipping %s (not an image or video suffix)", p)
                continue
            add(p, rel.as_posix(), kind)

    for arg in args:
        path = Path(arg)
        if path.is_dir():
            before = len(items)
            add_tree(path, path)
            if len(items) == before:
                failures.append((arg, "no images or videos in this folder"))
        elif path.is_file():
            kind = kind_of(path)
            if kind is None:
                failures.append(
                    (
                        arg,
                        f"unsupported file type {path.suffix or '(no suffix)'!r}; images: "
                        f"{' '.join(sorted(IMAGE_EXTENSIONS))}; videos: "
                        f"{' '.join(sorted(VIDEO_EXTENSIONS))}",
                    )
                )
            else:
                add(path, path.name, kind)
        elif _GLOB_CHARS & set(arg):
            base = _glob_base(arg)
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                failures.append((arg, "no files match this pattern"))
            for m in matches:
                mp = Path(m)
                if mp.is_dir():
                    add_tree(mp, base)
                elif mp.is_file():
                    kind = kind_of(mp)
                    if kind is None:
                        skipped += 1
                        continue
                    rel = os.path.relpath(mp, base)
                    add(mp, Path(rel).as_posix() if not rel.startswith("..") else mp.as_posix(), kind)
        elif path.exists() or path.is_symlink():
            failures.append((arg, "not a regular file or folder (broken link?)"))
        else:
            failures.append((arg, "no such file or directory"))
    if skipped:
        logger.info("skipped %d file(s) that are neither images nor videos", skipped)
    return items, failures


__all__ = ["InputItem", "collect_inputs", "kind_of"]
