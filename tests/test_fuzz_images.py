"""Fuzzing the image readers with a seeded generator of broken and unusual files.

More than 500 files: intact PNG, JPEG, TIFF and BMP variants (8- and 16-bit, grey, alpha,
palette, 1-bit, float, CMYK, progressive, compressed, multi-page, 1×1), each also truncated,
byte-mutated, header-mutated and under the wrong extension; headers declaring huge (or zero)
dimensions (decompression bombs up to 10⁶ × 10⁶ in every format); empty files and garbage.
The pixel-size reader (which the Predict page runs on an upload before decoding it) must
return a pixel size in range or None. Every other reader must either return a sane array or raise
:class:`~segcore.errors.InvalidImageError` naming the file: never another exception, never a
hang (each call is timed, and a watchdog ends the process if one never returns).
"""

from __future__ import annotations

import faulthandler
import io
import struct
import time
import zlib
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
from PIL import Image

from segcore.analysis.analyse import read_upload
from segcore.data.images import (
    DEFAULT_MAX_PIXELS,
    MAX_SIDE,
    read_image,
    read_mask,
    read_mask_array,
)
from segcore.errors import InvalidImageError
from segcore.inference.resolution import MAX_PIXEL_SIZE, MIN_PIXEL_SIZE, image_pixel_size

SEED = 20261201
SLOW_CALL_S = 5.0  # one read of these small files takes milliseconds


def _cv2(ext: str, array: np.ndarray, params: tuple = ()) -> bytes:
    ok, buffer = cv2.imencode(ext, array, list(params))
    assert ok
    return buffer.tobytes()


def _pil(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def base_files(rng: np.random.Generator) -> list[tuple[str, bytes]]:
    """Intact files of every kind the readers meet: ``(extension, bytes)``."""
    rgb = rng.integers(0, 256, (12, 17, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (12, 17), dtype=np.uint8)
    deep = rng.integers(0, 65536, (9, 11), dtype=np.uint16)
    labels = (rng.integers(0, 4, (10, 10)) * 700).astype(np.uint16)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    palette = Image.fromarray(rng.integers(0, 5, (10, 14), dtype=np.uint8), mode="L")
    palette = palette.convert("P")
    palette.putpalette([i % 256 for i in range(768)])
    floats = Image.fromarray(rng.random((8, 9)).astype(np.float32), mode="F")
    nans = np.full((3, 4), np.nan, np.float32)
    pil_rgb = Image.fromarray(rgb)
    pages = [pil_rgb, Image.fromarray(rgb[::-1])]
    one = np.array([[[200, 10, 30]]], np.uint8)
    return [
        (".png", _cv2(".png", rgb)),
        (".png", _cv2(".png", grey)),
        (".png", _cv2(".png", rgba)),
        (".png", _cv2(".png", deep)),
        (".png", _cv2(".png", np.dstack([deep, deep, deep]))),
        (".png", _cv2(".png", labels)),
        (".png", _pil(palette, "PNG")),
        (".png", _pil(Image.fromarray(grey > 128), "PNG")),  # 1-bit
        (".png", _pil(Image.fromarray(np.dstack([grey, grey])), "PNG")),  # grey + alpha
        (".png", _cv2(".png", one)),
        (".jpg", _cv2(".jpg", rgb)),
        (".jpeg", _cv2(".jpg", grey)),
        (".jpg", _pil(pil_rgb, "JPEG", progressive=True)),
        (".jpg", _pil(pil_rgb.convert("CMYK"), "JPEG")),
        (".jpg", _cv2(".jpg", one)),
        (".tif", _cv2(".tif", rgb)),
        (".tiff", _cv2(".tiff", deep)),
        (".tif", _pil(floats, "TIFF")),
        (".tif", _pil(Image.fromarray(nans, mode="F"), "TIFF")),
        (".tif", _pil(Image.fromarray(grey.astype(np.int32)), "TIFF")),
        (".tif", _pil(pil_rgb, "TIFF", compression="tiff_lzw")),
        (".tif", _pil(pil_rgb, "TIFF", compression="tiff_adobe_deflate")),
        (".tif", _pil(Image.fromarray(grey), "TIFF", compression="packbits")),
        (".tif", _pil(pages[0], "TIFF", save_all=True, append_images=pages[1:])),
        (".tif", _pil(palette, "TIFF")),
        (".tif", _cv2(".tif", one)),
        (".bmp", _cv2(".bmp", rgb)),
        (".bmp", _cv2(".bmp", grey)),
        (".bmp", _pil(Image.fromarray(grey > 100), "BMP")),  # 1-bit
        (".bmp", _pil(palette, "BMP")),
        (".bmp", _cv2(".bmp", one)),
    ]


def _png_with_size(data: bytes, width: int, height: int) -> bytes:
    """The PNG with IHDR's width and height replaced (and its CRC made right again)."""
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes of fields
    ihdr[4:12] = struct.pack(">II", width % 2**32, height % 2**32)
    return data[:12] + bytes(ihdr) + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]


def _bmp_with_size(data: bytes, width: int, height: int) -> bytes:
    return data[:18] + struct.pack("<ii", width, height) + data[26:]


def _jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    sof = data.find(b"\xff\xc0")
    if sof < 0:
        sof = data.find(b"\xff\xc2")  # progressive
    size = struct.pack(">HH", min(height, 65535), min(width, 65535))  # JPEG's most
    return data[: sof + 5] + size + data[sof + 9 :]


def _tiff_with_size(data: bytes, width: int, height: int) -> bytes:
    """The TIFF with the ImageWidth and ImageLength tags of its first page replaced."""
    order = "<" if data[:2] == b"II" else ">"
    out = bytearray(data)
    (ifd,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    for i in range(count):
        entry = ifd + 2 + 12 * i
        tag, kind = struct.unpack(order + "HH", data[entry : entry + 4])
        if tag in (256, 257):
            value = width if tag == 256 else height
            if kind == 3:  # SHORT
                out[entry + 8 : entry + 12] = struct.pack(order + "HH", min(value, 65535), 0)
            else:  # LONG
                out[entry + 8 : entry + 12] = struct.pack(order + "I", value % 2**32)
    return bytes(out)


HUGE_SIZES = [
    (MAX_SIDE + 1, 3),
    (4, 70_000),
    (100_000, 100_000),
    (30_000, 30_000),  # a decompression bomb: Pillow refuses to open it at all
    (1_000_000, 1_000_000),
    (1_000_000, 1),
    (2**31 - 1, 1),
    (9000, 9000),  # 81 megapixels: over the pixel limit, under Pillow's bomb limit
    (4000, 4000),  # within the limits, but the data is for a tiny image
    (0, 10),
]


def oversized(bases: list[tuple[str, bytes]]) -> Iterator[tuple[str, str, bytes]]:
    """Headers declaring huge or zero dimensions, in every format."""
    firsts: dict[str, bytes] = {}
    for ext, data in bases:
        firsts.setdefault({".jpeg": ".jpg", ".tiff": ".tif"}.get(ext, ext), data)
    patchers = {
        ".png": _png_with_size,
        ".bmp": _bmp_with_size,
        ".jpg": _jpeg_with_size,
        ".tif": _tiff_with_size,
    }
    for ext, patch in patchers.items():
        for width, height in HUGE_SIZES:
            yield f"huge{width}x{height}", ext, patch(firsts[ext], width, height)
    yield "bmp-negative-height", ".bmp", _bmp_with_size(firsts[".bmp"], 17, -12)  # top-down


def mutants(rng: np.random.Generator, data: bytes) -> Iterator[tuple[str, bytes]]:
    """Truncated, byte-mutated and header-mutated versions of ``data``."""
    n = len(data)
    for cut in sorted({8, 16, 33, *rng.integers(1, n, 3).tolist()}):
        if cut < n:
            yield f"cut{cut}", data[:cut]
    for i in range(7):
        mutated = bytearray(data)
        for position in rng.integers(0, n, int(rng.integers(1, 17))):
            mutated[position] = int(rng.integers(0, 256))
        yield f"bytes{i}", bytes(mutated)
    for i in range(3):
        mutated = bytearray(data)
        for position in rng.integers(0, min(n, 100), int(rng.integers(1, 5))):
            mutated[position] ^= 1 << int(rng.integers(0, 8))
        yield f"header{i}", bytes(mutated)


def fuzz_cases(seed: int = SEED) -> list[tuple[str, bytes]]:
    """``(file name, bytes)`` of every case, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    bases = base_files(rng)
    cases: list[tuple[str, bytes]] = []
    others = [".png", ".jpg", ".tif", ".bmp"]
    for i, (ext, data) in enumerate(bases):
        cases.append((f"b{i:02d}-intact{ext}", data))
        wrong = others[(others.index(ext[:4].replace(".jpe", ".jpg")) + 1) % len(others)]
        cases.append((f"b{i:02d}-wrong-extension{wrong}", data))
        cases += [(f"b{i:02d}-{kind}{ext}", mutant) for kind, mutant in mutants(rng, data)]
    cases += [(f"{kind}{ext}", data) for kind, ext, data in oversized(bases)]
    cases += [
        ("empty.png", b""),
        ("garbage.png", rng.integers(0, 256, 300, dtype=np.uint8).tobytes()),
        ("text.jpg", b"hello, this is not an image\n" * 5),
        ("png-magic-only.png", b"\x89PNG\r\n\x1a\n"),
        ("jpeg-magic-only.jpg", b"\xff\xd8\xff"),
        ("tiff-magic-only.tif", b"II*\x00"),
        ("tiff-bad-ifd.tif", b"II*\x00\xff\xff\xff\x7f" + bytes(40)),
        ("bmp-magic-only.bmp", b"BM"),
        ("gif.png", _pil(Image.new("P", (4, 4)), "GIF")),  # a format segcore does not promise
        ("webp.png", _pil(Image.new("RGB", (4, 4)), "WEBP")),
    ]
    return cases


def check_result(name: str, reader: str, array) -> None:
    """A reader's result must be an image or mask of a sane size, type and value range."""
    if reader.endswith("pixel size") or reader == "image_pixel_size":
        assert array is None or MIN_PIXEL_SIZE <= array <= MAX_PIXEL_SIZE, (name, reader, array)
        return
    assert isinstance(array, np.ndarray), (name, reader, type(array))
    height, width = array.shape[:2]
    assert 0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE, (name, reader, array.shape)
    assert height * width <= DEFAULT_MAX_PIXELS, (name, reader, array.shape)
    if reader == "read_image" or reader == "read_upload image":
        assert array.dtype == np.uint8 and array.shape == (height, width, 3), (name, reader)
    elif reader == "read_mask":
        assert array.dtype == np.uint8 and array.ndim == 2, (name, reader, array.dtype)
        assert set(np.unique(array).tolist()) <= {0, 1}, (name, reader)
    else:  # the mask as stored: labels or values, or a colour rendering
        assert array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4)), (
            name,
            reader,
            array.shape,
        )
        assert array.dtype.kind in "biuf", (name, reader, array.dtype)
        if array.dtype.kind == "f":
            assert np.isfinite(array).all(), (name, reader)


def read_all(path) -> Iterator[tuple[str, object]]:
    """Every reader on one file: ``(reader, result)``; exceptions propagate. The pixel size is
    read first, as the Predict page does with an upload before decoding it."""
    data = path.read_bytes()
    yield "image_pixel_size", image_pixel_size(path)
    yield "upload pixel size", image_pixel_size(io.BytesIO(data))
    yield "read_image", read_image(path)
    yield "read_mask", read_mask(path)
    yield "read_mask_array", read_mask_array(path)
    image, mask = read_upload(data, path.name, data, path.name)
    yield "read_upload image", image
    yield "read_upload mask", mask


@pytest.fixture
def watchdog():
    """Ends the process with every thread's traceback if the test hangs (a C decoder in an
    endless loop cannot be interrupted otherwise)."""
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def test_the_generator_is_seeded_and_big_enough():
    cases = fuzz_cases()
    assert len(cases) >= 500
    assert len({name for name, _ in cases}) == len(cases)
    assert fuzz_cases() == cases


def test_every_reader_returns_a_sane_array_or_a_named_invalid_image_error(tmp_path, watchdog):
    problems, outcomes = [], {"ok": 0, "refused": 0}
    for name, data in fuzz_cases():
        path = tmp_path / name
        path.write_bytes(data)
        readers = read_all(path)
        while True:
            start = time.perf_counter()
            reader = "?"
            try:
                reader, result = next(readers)
            except StopIteration:
                break
            except InvalidImageError as exc:
                outcomes["refused"] += 1
                if name not in str(exc):
                    problems.append(f"{name}: message does not name the file: {exc}")
                break  # the generator is finished once it raised
            except Exception as exc:
                problems.append(f"{name}: {type(exc).__name__}: {exc}")
                break
            else:
                outcomes["ok"] += 1
                try:
                    check_result(name, reader, result)
                except AssertionError as exc:
                    problems.append(f"{name}: insane result {exc}")
            finally:
                seconds = time.perf_counter() - start
                if seconds > SLOW_CALL_S:
                    problems.append(f"{name}: {reader} took {seconds:.1f} s")
    assert not problems, "\n".join(problems)
    assert outcomes["ok"] > 100 and outcomes["refused"] > 200, outcomes
