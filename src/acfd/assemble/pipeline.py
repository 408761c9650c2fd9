"""Run the assembling stages in order on a project folder (resumable: see acfd.assemble.stages)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from acfd.assemble import stages
from acfd.assemble.config import AssembleConfig
from acfd.assemble.project import Project

logger = logging.getLogger(__name__)


def run_pipeline(
    project: Project,
    sources: Sequence[str],
    cfg: AssembleConfig,
    finder: stages.FaceFinder | stages.RayDetection,
    embedder: stages.Embedder,
    references: str | Path | None = None,
    gallery: str | Path | None = None,
    batch_size: int = 4,
    progress: bool = True,
) -> list[stages.StageReport]:
    """ingest -> detect -> crop -> embed -> dedup -> [references -> candidates] -> cluster.

    Args:
        project: the project (its stored settings must be ``cfg``; see ``Project.settle_config``).
        sources: image files, folders, globs and videos (new ones are added on a re-run).
        cfg: the settings (unset similarity thresholds come from the embedder: ``cfg.for_embedder``).
        finder: the face detector (``stages.detector_finder(Detector(...))``), boxes from a CSV, or
            ``stages.RayDetection(detector_kwargs)`` to detect on Ray Data actors.
        embedder: the face embedder (``acfd.recognition.Recognizer``).
        references: a folder with one subfolder of typical images per character.
        gallery: a recognition gallery file to use as the reference set.
        batch_size: frames per detector call.
        progress: show progress bars.

    Returns:
        One report per stage, in order.
    """
    resolved = cfg.for_embedder(embedder)
    if resolved != cfg:  # the project records the thresholds it runs with (and refuses others later)
        project.db.set_meta("config", resolved.to_json())
        cfg = resolved
    reports = [
        stages.ingest(project, sources, cfg, progress=progress),
        stages.detect_on_ray(project, finder, cfg, batch_size=batch_size, progress=progress)
        if isinstance(finder, stages.RayDetection)
        else stages.detect(project, finder, cfg, batch_size=batch_size, progress=progress),
        stages.crop(project, cfg, progress=progress),
        stages.embed(project, embedder, progress=progress),
        stages.dedup(project, cfg, progress=progress),
    ]
    if references is not None or gallery is not None:
        reports.append(stages.add_references(project, embedder, references, gallery, progress=progress))
    reports.append(stages.candidates(project, cfg, progress=progress))
    reports.append(stages.cluster(project, cfg, progress=progress))
    return reports
