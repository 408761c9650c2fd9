"""acfd.data.image_io: decoding to RGB uint8 and clear errors for every bad file."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from acfd.data.image_io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    is_image_file,
    load_image,
    pil_to_rgb,
    read_image_size,
)


def _rgb(h: int = 12, w: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _reason(path: Path, **kw: object) -> str:
    with pytest.raises(ImageReadError) as info:
        load_image(path, **kw)  # type: ignore[arg-type]
    err = info.value
    assert isinstance(err, ValueError)
    assert err.path == str(path)
    assert str(err) == f"{path}: {err.reason}"
    assert "\n" not in str(err)
    return err.reason


def test_rgb_png_is_exact(tmp_path: Path) -> None:
    a = _rgb()
    Image.fromarray(a).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (12, 20, 3)
    np.testing.assert_array_equal(out, a)


def test_jpeg_loads(tmp_path: Path) -> None:
    Image.fromarray(_rgb(32, 48)).save(tmp_path / "a.jpg", quality=90)
    out = load_image(str(tmp_path / "a.jpg"))
    assert out.shape == (32, 48, 3) and out.dtype == np.uint8


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    g = np.arange(24, dtype=np.uint8).reshape(4, 6) * 10
    Image.fromarray(g, mode="L").save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    assert out.shape == (4, 6, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], g)


def test_palette_image(tmp_path: Path) -> None:
    im = Image.new("P", (5, 3))
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.putpixel((1, 1), 1)
    im.save(tmp_path / "p.png")
    out = load_image(tmp_path / "p.png")
    assert out.shape == (3, 5, 3)
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[1, 1]) == (0, 255, 0)


def test_palette_transparency_goes_white(tmp_path: Path) -> None:
    im = Image.new("P", (4, 4))
    im.putpalette([10, 20, 30, 0, 0, 255] + [0] * 762)
    im.putpixel((0, 0), 1)
    im.info["transparency"] = 0
    im.save(tmp_path / "pt.png", transparency=0)
    out = load_image(tmp_path / "pt.png")
    assert tuple(out[1, 1]) == (255, 255, 255)
    assert tuple(out[0, 0]) == (0, 0, 255)


def test_rgba_composited_on_white(tmp_path: Path) -> None:
    a = np.zeros((2, 2, 4), np.uint8)
    a[0, 0] = (200, 0, 0, 255)  # opaque red stays
    a[0, 1] = (0, 0, 0, 0)  # fully transparent -> white
    a[1, 0] = (0, 0, 0, 128)  # half black -> mid gray
    Image.fromarray(a, mode="RGBA").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert tuple(out[0, 0]) == (200, 0, 0)
    assert tuple(out[0, 1]) == (255, 255, 255)
    assert 120 <= int(out[1, 0, 0]) <= 130


def test_la_composited_on_white(tmp_path: Path) -> None:
    a = np.zeros((2, 2, 2), np.uint8)
    a[..., 0] = 50
    a[0, 0, 1] = 255
    Image.fromarray(a, mode="LA").save(tmp_path / "la.png")
    out = load_image(tmp_path / "la.png")
    assert tuple(out[0, 0]) == (50, 50, 50)
    assert tuple(out[1, 1]) == (255, 255, 255)


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    a = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    out = load_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_32bit_int_image_is_scaled(tmp_path: Path) -> None:
    a = np.array([[0, 65535]], dtype=np.int32)
    Image.fromarray(a, mode="I").save(tmp_path / "i.tif")
    out = load_image(tmp_path / "i.tif")
    np.testing.assert_array_equal(out[0, :, 0], [0, 255])


def test_cmyk_jpeg(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    out = load_image(tmp_path / "c.jpg")
    assert out.shape == (6, 8, 3)
    r, g, b = (int(v) for v in out[3, 4])
    assert r > 200 and g < 60 and b < 60  # C=0, M=Y=full -> red


def test_exif_orientation_applied(tmp_path: Path) -> None:
    a = np.zeros((30, 50, 3), np.uint8)
    a[:, :10] = 255  # white band on the left
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "r.jpg")
    assert out.shape == (50, 30, 3)
    assert out[:10].mean() > 200  # the left band is now on top
    assert out[20:].mean() < 50
    assert read_image_size(tmp_path / "r.jpg") == (30, 50)


def test_read_image_size_from_header(tmp_path: Path) -> None:
    Image.fromarray(_rgb(7, 9)).save(tmp_path / "a.png")
    assert read_image_size(tmp_path / "a.png") == (9, 7)
    with pytest.raises(ImageReadError, match="file not found"):
        read_image_size(tmp_path / "nope.png")


def test_missing_file(tmp_path: Path) -> None:
    assert "not found" in _reason(tmp_path / "missing.jpg")


def test_directory(tmp_path: Path) -> None:
    d = tmp_path / "dir.jpg"
    d.mkdir()
    assert "directory" in _reason(d)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.jpg").write_bytes(b"")
    assert "empty file" in _reason(tmp_path / "e.jpg")


def test_text_file_named_jpg(tmp_path: Path) -> None:
    (tmp_path / "t.jpg").write_text("hello, not an image\n")
    assert "not an image" in _reason(tmp_path / "t.jpg")


@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_truncated_jpeg(tmp_path: Path, keep: float) -> None:
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "a.jpg", quality=90)
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: int(len(data) * keep)])
    assert "truncated or corrupt" in _reason(tmp_path / "t.jpg")


def test_truncated_png(tmp_path: Path) -> None:
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in _reason(tmp_path / "t.png")


def test_pixel_limit_checked_before_decoding(tmp_path: Path) -> None:
    Image.fromarray(_rgb(40, 50)).save(tmp_path / "a.png")
    reason = _reason(tmp_path / "a.png", max_pixels=1999)
    assert "too many pixels" in reason and "50x40" in reason
    assert load_image(tmp_path / "a.png", max_pixels=2000).shape == (40, 50, 3)
    assert load_image(tmp_path / "a.png", max_pixels=None).shape == (40, 50, 3)


def test_pil_bomb_limit_does_not_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A tiny PIL limit stands in for PIL's default 89 MP (a 108 MP image would otherwise fail).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    Image.fromarray(_rgb(30, 30)).save(tmp_path / "a.png")  # 900 px > 2 * 100: PIL would raise
    assert load_image(tmp_path / "a.png").shape == (30, 30, 3)
    assert Image.MAX_IMAGE_PIXELS == 100  # restored


def test_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(ImageReadError("a.jpg", "broken")))
    assert (err.path, err.reason, str(err)) == ("a.jpg", "broken", "a.jpg: broken")


def test_is_image_file() -> None:
    assert {".jpg", ".jpeg", ".png"} <= IMAGE_EXTENSIONS
    assert all(e == e.lower() and e.startswith(".") for e in IMAGE_EXTENSIONS)
    assert is_image_file("a/B.JPG") and is_image_file(Path("x.png"))
    assert not is_image_file("notes.txt") and not is_image_file("._hidden.jpg")


def test_header_cut_short(tmp_path: Path) -> None:
    Image.fromarray(_rgb(8, 8)).save(tmp_path / "a.png")
    (tmp_path / "h.png").write_bytes((tmp_path / "a.png").read_bytes()[:20])
    assert "truncated or corrupt" in _reason(tmp_path / "h.png")


def test_pil_to_rgb_matches_load_image(tmp_path: Path) -> None:
    a = np.array([[0, 257, 65535]], dtype=np.uint16)
    im = Image.fromarray(a)
    np.testing.assert_array_equal(pil_to_rgb(im)[0, :, 1], [0, 1, 255])
    rgba = Image.new("RGBA", (3, 2), (0, 0, 0, 0))
    assert tuple(pil_to_rgb(rgba)[0, 0]) == (255, 255, 255)


# -- one pixel limit sized to the machine, decoding within a memory budget, reduced JPEGs ------


def test_default_pixel_limit_is_sized_to_the_machines_memory() -> None:
    from acfd.data import image_io

    gib = 1 << 30
    assert image_io.DEFAULT_MAX_PIXELS == image_io.pixel_limit_for(image_io.machine_memory_bytes())
    # 1/16 of the memory at 8 bytes a pixel: 24 GiB -> ~201 MP; clamped on tiny and huge machines
    assert image_io.pixel_limit_for(24 * gib) == 24 * gib // 16 // 8
    assert image_io.pixel_limit_for(1 * gib) == image_io.MIN_PIXEL_LIMIT
    assert image_io.pixel_limit_for(4096 * gib) == image_io.MAX_PIXEL_LIMIT
    assert 0 < image_io.machine_memory_bytes() < 1 << 50


def test_decoding_holds_pils_pixels_plus_the_array_and_little_more(tmp_path: Path) -> None:
    """Peak memory of a decode stays under DECODE_BYTES_PER_PIXEL (a whole-image conversion plus a
    copy for the EXIF step took ~14 bytes a pixel: a 600 KB 14000x14000 PNG needed 2.6 GB)."""
    import subprocess
    import sys

    from acfd.data.image_io import DECODE_BYTES_PER_PIXEL

    side = 4000
    im = Image.new("RGB", (side, side), (255, 255, 255))
    im.paste((200, 100, 50), (100, 100, 900, 700))
    im.save(tmp_path / "big.png")
    script = (
        "import resource, sys\n"
        "from acfd.data.image_io import load_image\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "a = load_image(sys.argv[1])\n"
        "assert a.shape == (%d, %d, 3) and tuple(a[200, 200]) == (200, 100, 50)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)\n" % (side, side)
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "big.png")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    grown_bytes = int(out.stdout.split()[-1]) * 1024  # ru_maxrss is in KiB on Linux
    assert grown_bytes < side * side * DECODE_BYTES_PER_PIXEL, grown_bytes / side**2


def _jpeg_with_square(path: Path, size: tuple[int, int], square: tuple[int, int, int, int], **save: object) -> None:
    im = Image.new("RGB", size, (255, 255, 255))
    im.paste((0, 0, 0), square)
    im.save(path, quality=95, **save)


def _dark_box(a: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(a.mean(axis=2) < 100)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def test_large_jpeg_is_decoded_reduced_and_maps_back_to_full_pixels(tmp_path: Path) -> None:
    from acfd.data.image_io import decode_image, open_image

    _jpeg_with_square(tmp_path / "a.jpg", (3200, 2400), (800, 600, 1600, 1400))
    reduced = decode_image(tmp_path / "a.jpg", min_long_side=640)
    assert reduced.reduction == 4 and reduced.size == (3200, 2400) and reduced.array.shape == (600, 800, 3)
    np.testing.assert_allclose(np.array(_dark_box(reduced.array)) * reduced.reduction, [800, 600, 1600, 1400], atol=4)
    full = decode_image(tmp_path / "a.jpg")
    assert full.reduction == 1 and full.array.shape == (2400, 3200, 3)
    assert decode_image(tmp_path / "a.jpg", min_long_side=1600).reduction == 2
    assert decode_image(tmp_path / "a.jpg", min_long_side=3000).reduction == 1
    with open_image((tmp_path / "a.jpg").read_bytes(), name="up.jpg") as opened:
        assert opened.size == (3200, 2400) and opened.decoded_size(640) == (800, 600)
        assert opened.decoded_pixels(None) == 3200 * 2400
    # the pixel limit counts the pixels decoded: the reduced decode fits where the full one does not
    assert decode_image(tmp_path / "a.jpg", max_pixels=500_000, min_long_side=640).array.shape == (600, 800, 3)
    with pytest.raises(ImageReadError, match="too many pixels"):
        decode_image(tmp_path / "a.jpg", max_pixels=500_000)
    # other formats are never reduced
    Image.new("RGB", (3200, 2400)).save(tmp_path / "a.png")
    assert decode_image(tmp_path / "a.png", min_long_side=640).reduction == 1


def test_reduced_jpeg_with_exif_rotation_and_a_thin_strip(tmp_path: Path) -> None:
    from acfd.data.image_io import decode_image

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: the stored 3200x2400 is shown as 2400x3200
    _jpeg_with_square(tmp_path / "r.jpg", (3200, 2400), (0, 0, 800, 400), exif=exif.tobytes())
    reduced, full = decode_image(tmp_path / "r.jpg", min_long_side=640), decode_image(tmp_path / "r.jpg")
    assert reduced.size == full.size == (2400, 3200) and reduced.array.shape == (800, 600, 3)
    np.testing.assert_allclose(np.array(_dark_box(reduced.array)) * 4, _dark_box(full.array), atol=4)
    Image.new("RGB", (6400, 5)).save(tmp_path / "strip.jpg")
    strip = decode_image(tmp_path / "strip.jpg", min_long_side=640)
    assert strip.array.shape[0] >= 1 and strip.array.shape[1] * strip.reduction >= 6400 - strip.reduction


@pytest.mark.parametrize(
    ("data", "kind", "needle"),
    [
        (b"", "EmptyImageError", "empty upload"),
        (b"hello, not an image", "NotAnImageError", "not an image"),
        (None, "CorruptImageError", "truncated or corrupt"),
    ],
)
def test_bytes_errors_name_the_upload_and_their_kind(data: bytes | None, kind: str, needle: str) -> None:
    import io

    from acfd.data import image_io

    if data is None:  # a PNG cut inside its pixel data
        buf = io.BytesIO()
        Image.fromarray(_rgb(40, 40)).save(buf, format="PNG")
        data = buf.getvalue()[:200]
    with pytest.raises(getattr(image_io, kind)) as info:
        image_io.decode_image(data, name="photo.png")
    assert str(info.value).startswith("photo.png: ") and needle in str(info.value)
    assert isinstance(info.value, ImageReadError)
