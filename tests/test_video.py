"""Video decoding: frame order, sub-sampling, timestamps, colour order and clear errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from acfd.data.video import (
    VIDEO_EXTENSIONS,
    VideoReadError,
    is_video_file,
    iter_video_frames,
    read_video_info,
)


def write_video(path: Path, n_frames: int = 7, fps: float = 10.0, size: tuple[int, int] = (64, 48)) -> Path:
    """A tiny video: frame i has green = blue = 30 * i (mod 256) and red = 200."""
    fourcc = "mp4v" if path.suffix == ".mp4" else "MJPG"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened()
    w, h = size
    for i in range(n_frames):
        bgr = np.full((h, w, 3), (30 * i) % 256, np.uint8)
        bgr[:, :, 2] = 200  # red in BGR order
        writer.write(bgr)
    writer.release()
    return path


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_every_frame_in_order_with_timestamps(tmp_path: Path, suffix: str) -> None:
    path = write_video(tmp_path / f"clip{suffix}")
    frames = list(iter_video_frames(path))
    assert [i for i, _, _ in frames] == list(range(7))
    assert [t for _, t, _ in frames] == pytest.approx([i / 10.0 for i in range(7)])
    for i, _, rgb in frames:
        assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
        assert abs(int(rgb[10, 10, 0]) - 200) < 8  # red first: converted from BGR
        assert abs(int(rgb[10, 10, 1]) - 30 * i) < 8


def test_every_k_th_frame(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4")
    frames = list(iter_video_frames(path, every=3))
    assert [i for i, _, _ in frames] == [0, 3, 6]
    assert [t for _, t, _ in frames] == pytest.approx([0.0, 0.3, 0.6])
    assert abs(int(frames[1][2][10, 10, 1]) - 90) < 8  # really frame 3's pixels


def test_read_video_info(tmp_path: Path) -> None:
    info = read_video_info(write_video(tmp_path / "clip.avi", n_frames=5, fps=25.0))
    assert (info.width, info.height, info.frame_count) == (64, 48, 5)
    assert info.fps == pytest.approx(25.0)


def test_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.mp4"
    with pytest.raises(VideoReadError, match="missing.mp4: file not found"):
        list(iter_video_frames(missing))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoReadError, match="empty.mp4: empty file"):
        list(iter_video_frames(empty))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video at all" * 100)
    with pytest.raises(VideoReadError, match="junk.mp4") as err:
        list(iter_video_frames(junk))
    assert err.value.path == str(junk) and "\n" not in str(err.value)
    with pytest.raises(VideoReadError, match="is a directory"):
        list(iter_video_frames(tmp_path))


def test_truncated_video_gives_the_frames_before_the_cut_or_a_clear_error(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.avi", n_frames=10)
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    try:
        frames = list(iter_video_frames(cut))
    except VideoReadError as exc:
        assert "cut.avi" in str(exc)
    else:
        assert 0 < len(frames) < 10


def test_every_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="every"):
        list(iter_video_frames(write_video(tmp_path / "clip.mp4"), every=0))


def test_video_extensions() -> None:
    assert {".mp4", ".avi", ".mkv", ".mov", ".webm"} <= VIDEO_EXTENSIONS
    assert is_video_file("a/B.MP4") and not is_video_file("a/b.png") and not is_video_file("._x.mp4")
