"""An assembling project folder: the database, the saved video frames, crops and reference images.

Layout::

    PROJECT_DIR/
        project.db            every stage's state and every answer (SQLite, see acfd.assemble.db)
        frames/<id>.jpg       sampled video frames (image sources are read where they are)
        crops/<face id>.jpg   the enlarged face crops that passed the filters
        references/<id>.jpg   copies of the reference images (shown next to the questions)

File names are built from integer ids only, so nothing a web request sends can name a file.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from acfd.assemble.config import AssembleConfig
from acfd.assemble.db import DB_NAME, ProjectDB
from acfd.data.image_io import load_image
from acfd.recognition.adaptation import ShowAdaptation
from acfd.utils import atomic_write_bytes

JPEG_QUALITY = 92


class Project:
    """Paths and database of one project folder.

    Args:
        root: the project folder.
        create: create the folder and database when missing.

    Raises:
        ValueError: ``create=False`` and the folder holds no project; ``root`` is a file.
    """

    def __init__(self, root: str | os.PathLike[str], create: bool = False) -> None:
        self.root = Path(root)
        if not create and not (self.root / DB_NAME).is_file():
            raise ValueError(f"{self.root}: not an assembling project (no {DB_NAME}; run 'acfd assemble SOURCES -o DIR')")
        if create and self.root.exists() and not self.root.is_dir():
            raise ValueError(f"{self.root}: is a file, not a project folder")
        self.db = ProjectDB(self.root / DB_NAME, create=create)
        #: the show adaptation last fitted on the kept crops and a digest of their embeddings
        #: (:func:`acfd.assemble.grouping.project_adaptation` refits only when they change)
        self.adaptation_cache: tuple[bytes, ShowAdaptation] | None = None

    # -- settings ---------------------------------------------------------------------------------

    def config(self) -> AssembleConfig | None:
        """The settings the project was created with (``None`` before the first run)."""
        text = self.db.get_meta("config")
        return None if text is None else AssembleConfig.from_json(text)

    def settle_config(self, requested: AssembleConfig, explicit: dict[str, object]) -> AssembleConfig:
        """The settings to run with: the stored ones, unless ``explicit`` options contradict them.

        Args:
            requested: defaults merged with the options given.
            explicit: the options the user actually gave (name -> value).

        Raises:
            ValueError: an explicit option differs from the project's stored setting (stages
                already done would not match; use a new project folder).
        """
        stored = self.config()
        if stored is None:
            self.db.set_meta("config", requested.to_json())
            return requested
        wanted = stored.merged(explicit)
        diffs = stored.differences(wanted)
        if diffs:
            raise ValueError(
                f"{self.root}: the project was made with other settings ({'; '.join(diffs)}); "
                "use a new project folder for new settings"
            )
        return stored

    # -- files -------------------------------------------------------------------------------------

    def frame_file(self, frame_id: int) -> Path:
        return self.root / "frames" / f"{int(frame_id)}.jpg"

    def crop_file(self, face_id: int) -> Path:
        return self.root / "crops" / f"{int(face_id)}.jpg"

    def reference_file(self, ref_id: int) -> Path:
        return self.root / "references" / f"{int(ref_id)}.jpg"

    def resolve(self, stored: str) -> Path:
        """A file path as stored in the database (absolute, or relative to the project)."""
        p = Path(stored)
        return p if p.is_absolute() else self.root / p

    def load_frame(self, frame_id: int) -> np.ndarray:
        """The RGB frame of a frame row (its image file, or the saved video frame).

        Raises:
            KeyError: no such frame.
            ImageReadError: the file cannot be read (moved or deleted source image).
        """
        rows = self.db.query("SELECT file FROM frames WHERE id = ?", (int(frame_id),))
        if not rows:
            raise KeyError(f"no frame {frame_id}")
        return load_image(self.resolve(rows[0]["file"]))

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_jpeg(path: Path, rgb: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    """Write an RGB array as a JPEG atomically."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"{path}: JPEG encoding failed")
    atomic_write_bytes(path, buf.tobytes())


def thumbnail(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """``rgb`` shrunk (aspect kept) so that its longer side is at most ``max_side``."""
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    f = max_side / max(h, w)
    return cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
