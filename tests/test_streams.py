"""Files and video frames fed to a detector (acfd.predict.streams): decoding on a prefetching thread
(same results, in order; errors surface; an early stop ends the thread) and reduced JPEG decoding
(boxes in the file's own pixels)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_video import write_video

from acfd.data.image_io import decode_image
from acfd.data.video import VideoReadError, iter_video_frames
from acfd.predict import streams
from acfd.predict.detector import Detector
from acfd.predict.results import Detections, Timings
from acfd.predict.scales import parse_scales
from acfd.predict.streams import detect_files, detect_frames, min_long_side, prefetched


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "acfd-prefetch"]


# -- prefetched ---------------------------------------------------------------------------------


def test_prefetched_keeps_every_item_in_order() -> None:
    assert list(prefetched(range(50), size=2)) == list(range(50))
    assert list(prefetched([])) == []
    assert not prefetch_threads()
    with pytest.raises(ValueError, match="size"):
        list(prefetched(range(3), size=0))


def test_prefetched_stays_a_bounded_number_of_items_ahead() -> None:
    made: list[int] = []

    def source() -> Iterator[int]:
        for i in range(100):
            made.append(i)
            yield i

    items = prefetched(source(), size=3)
    assert next(items) == 0
    time.sleep(0.3)  # time for the thread to run as far ahead as it may
    # one handed out, three queued, one waiting for room
    assert len(made) <= 5
    items.close()


def test_an_error_while_iterating_surfaces_after_the_items_before_it() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise VideoReadError("clip.mp4", "corrupt frame")

    got = []
    with pytest.raises(VideoReadError, match="clip.mp4: corrupt frame"):
        for item in prefetched(source()):
            got.append(item)  # noqa: PERF402 - one at a time: the items before the error count
    assert got == [1, 2]
    assert not prefetch_threads()


def test_an_early_stop_ends_the_thread_and_closes_the_source() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    for item in prefetched(endless(), size=2):
        if item == 3:
            break
    # the for loop dropped the generator: closing it stopped and joined the thread
    assert closed.wait(5) and not prefetch_threads()

    items = prefetched(endless(), size=2)
    next(items)
    items.close()
    assert not prefetch_threads()


# -- video frames -------------------------------------------------------------------------------


@pytest.fixture()
def detector(spread_tiny_model: torch.nn.Module) -> Detector:
    return Detector(model=spread_tiny_model, scales="128", score_thresh=0.7)


def moving_video(path: Path, n_frames: int = 9) -> Path:
    """Frames with a bright square that moves, so each frame's detections differ."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 96))
    rng = np.random.default_rng(0)
    for i in range(n_frames):
        frame = rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)
        frame[20:60, 10 + 10 * i : 50 + 10 * i] = (40, 220, 250)
        writer.write(frame)
    writer.release()
    return path


@pytest.mark.parametrize("batch_size", [1, 3])
def test_prefetched_frames_give_the_same_detections_in_the_same_order(
    detector: Detector, tmp_path: Path, batch_size: int
) -> None:
    path = moving_video(tmp_path / "clip.avi")
    expected = [(i, t, detector.detect_arrays([f])[0]) for i, t, f in iter_video_frames(path, every=2)]
    got = list(detect_frames(detector, path, every=2, batch_size=batch_size))
    assert [d.frame_index for _, d in got] == [i for i, _, _ in expected] == [0, 2, 4, 6, 8]
    assert [d.timestamp for _, d in got] == pytest.approx([t for _, t, _ in expected])
    for (frame, d), (i, _, e) in zip(got, expected):
        assert frame.shape == (96, 160, 3) and d.source == str(path)
        np.testing.assert_allclose(d.boxes, e.boxes, atol=1e-3)
        np.testing.assert_allclose(d.scores, e.scores, atol=1e-5)
    assert sum(len(d) for _, d in got) > 0


def test_a_decoding_error_in_the_middle_of_a_video_surfaces(
    detector: Detector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_video(tmp_path / "clip.avi", n_frames=5, size=(96, 64))

    def breaks_after_two(p: Path, every: int = 1) -> Iterator[tuple[int, float, np.ndarray]]:
        yield from list(iter_video_frames(p, every))[:2]
        raise VideoReadError(p, "corrupt frame data")

    monkeypatch.setattr(streams, "iter_video_frames", breaks_after_two)
    seen = []
    with pytest.raises(VideoReadError, match="clip.avi: corrupt frame data"):
        for _, d in detect_frames(detector, path):
            seen.append(d.frame_index)
    assert seen == [0, 1]
    with pytest.raises(VideoReadError, match="file not found"):
        next(detect_frames(detector, tmp_path / "missing.mp4"))
    assert not prefetch_threads()


def test_stopping_a_video_early_does_not_hang_and_releases_it(
    detector: Detector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_video(tmp_path / "clip.avi", n_frames=40, size=(96, 64))
    released = threading.Event()

    def tracked(p: Path, every: int = 1) -> Iterator[tuple[int, float, np.ndarray]]:
        try:
            yield from iter_video_frames(p, every)
        finally:
            released.set()

    monkeypatch.setattr(streams, "iter_video_frames", tracked)
    frames = detect_frames(detector, path)
    start = time.perf_counter()
    assert next(frames)[1].frame_index == 0
    frames.close()
    assert released.wait(5) and not prefetch_threads()
    assert time.perf_counter() - start < 10


# -- files, decoded reduced ---------------------------------------------------------------------


class SquareFinder:
    """A detector that boxes the bright square in whatever array it gets (in that array's pixels)
    and records the array sizes it was given."""

    def __init__(self, scales: str = "640") -> None:
        self.scales = parse_scales(scales)
        self.timings = Timings()
        self.seen: list[tuple[int, int]] = []

    def detect_arrays(self, images: Sequence[np.ndarray], sources: Sequence[str | None] | None = None,
                      batch_size: int | None = None) -> list[Detections]:
        out = []
        for im, src in zip(images, sources or [None] * len(images)):
            self.seen.append(im.shape[:2])
            ys, xs = np.nonzero(im.min(axis=2) > 200)
            box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            out.append(Detections(np.array([box], np.float32), np.array([0.9]), im.shape[:2], source=src))
        return out


def square_image(path: Path, size: tuple[int, int] = (1920, 1080), box: tuple[int, int, int, int] = (800, 320, 1120, 640)) -> Path:
    w, h = size
    a = np.full((h, w, 3), 40, np.uint8)
    x1, y1, x2, y2 = box
    a[y1:y2, x1:x2] = 255
    Image.fromarray(a).save(path, quality=95)
    return path


def test_a_large_jpeg_is_decoded_reduced_and_its_boxes_come_back_in_its_own_pixels(tmp_path: Path) -> None:
    jpg = square_image(tmp_path / "frame.jpg")
    finder = SquareFinder("640")
    [(path, dets)] = list(detect_files(finder, [jpg], progress=False))
    assert finder.seen == [(540, 960)]  # 1/2 of each side: the longer side stays >= 640
    assert path == jpg and dets.image_size == (1080, 1920) and dets.source == str(jpg)
    np.testing.assert_allclose(dets.boxes[0], [800, 320, 1120, 640], atol=2)
    assert finder.timings.load > 0

    finder = SquareFinder("640")
    [(_, full)] = list(detect_files(finder, [jpg], progress=False, reduce=False))
    assert finder.seen == [(1080, 1920)] and full.image_size == (1080, 1920)
    np.testing.assert_allclose(full.boxes, dets.boxes, atol=2)


def test_png_and_smaller_jpegs_are_decoded_whole(tmp_path: Path) -> None:
    png = square_image(tmp_path / "frame.png")
    hd = square_image(tmp_path / "hd.jpg", (1280, 720), (100, 100, 300, 260))  # 640 would do, but under 2 MP
    finder = SquareFinder("640")
    out = list(detect_files(finder, [png, hd], batch_size=2, progress=False))
    assert finder.seen == [(1080, 1920), (720, 1280)]
    assert [d.image_size for _, d in out] == [(1080, 1920), (720, 1280)]
    np.testing.assert_array_equal(out[0][1].boxes[0], [800, 320, 1120, 640])
    np.testing.assert_allclose(out[1][1].boxes[0], [100, 100, 300, 260], atol=1)


def test_min_long_side_keeps_every_scale_and_the_verifier_whole() -> None:
    class Det:
        scales = parse_scales("480,640")
        verifier = None

    assert min_long_side(Det(), 1080, 1920) == 640
    Det.scales = parse_scales("640x860")  # exact size: the short side needs 640 of 1080
    assert min_long_side(Det(), 1080, 1920) == 1138
    Det.scales = parse_scales("480")
    Det.verifier = type("V", (), {"cfg": type("C", (), {"long_side": 800})()})()
    assert min_long_side(Det(), 1080, 1920) == 800
    assert min_long_side(object(), 1080, 1920) is None


def test_the_real_detector_reports_a_large_jpeg_in_its_own_pixels(detector: Detector, tmp_path: Path) -> None:
    jpg = square_image(tmp_path / "big.jpg", (2048, 1200), (600, 400, 1000, 800))
    [(_, dets)] = list(detect_files(detector, [jpg], progress=False))
    reduced = decode_image(jpg, min_long_side=128)
    assert reduced.reduction == 8  # 256 x 150 feeds the 128 scale
    [small] = detector.detect_arrays([reduced.array])
    assert dets.image_size == (1200, 2048) and len(dets) == len(small) > 0
    np.testing.assert_allclose(dets.boxes, np.minimum(small.boxes * 8, [2048, 1200, 2048, 1200]), atol=1e-3)
    np.testing.assert_array_equal(dets.scores, small.scores)
