"""Test images made with Pillow: oriented photos with GPS, transparency, bombs, broken files."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from PIL import Image, ImageDraw

RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)
QUADRANTS = {"top_left": RED, "top_right": GREEN, "bottom_left": BLUE, "bottom_right": YELLOW}


def quadrants(side: int = 400) -> Image.Image:
    """Upright reference: red, green / blue, yellow."""
    image = Image.new("RGB", (side, side))
    draw = ImageDraw.Draw(image)
    h = side // 2
    draw.rectangle((0, 0, h - 1, h - 1), fill=RED)
    draw.rectangle((h, 0, side - 1, h - 1), fill=GREEN)
    draw.rectangle((0, h, h - 1, side - 1), fill=BLUE)
    draw.rectangle((h, h, side - 1, side - 1), fill=YELLOW)
    return image


def jpeg_rotated_with_gps(side: int = 400) -> bytes:
    """A JPEG stored sideways with EXIF Orientation 6 (display = rotate 90° clockwise) and GPS."""
    # Orientation 6 is undone by ROTATE_270; store the inverse rotation of the upright image.
    stored = quadrants(side).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    exif[0x010F] = "TestCam"  # Make
    gps = exif.get_ifd(0x8825)
    gps.update({1: "S", 2: (12.0, 2.0, 46.0), 3: "W", 4: (77.0, 1.0, 43.0)})
    out = io.BytesIO()
    stored.save(out, format="JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def png_with_transparency(side: int = 300) -> bytes:
    """A transparent square with an opaque red disc in the middle."""
    image = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((side // 4, side // 4, 3 * side // 4, 3 * side // 4), fill=RED)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def plain_jpeg(side: int = 300, colour: tuple[int, int, int] = BLUE) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(out, format="JPEG")
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of `width` x `height` zero pixels: kilobytes on disk, huge decoded."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )


def truncated_jpeg() -> bytes:
    data = jpeg_rotated_with_gps(600)
    return data[: len(data) // 2]


PHP = b"<?php echo shell_exec($_GET['cmd']); ?>\n"


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` with its size and mtime: a snapshot to compare."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


def pixel(image: Image.Image, fx: float, fy: float) -> tuple[int, ...]:
    """The RGB(A) pixel at fractions (fx, fy) of the image."""
    x = min(int(image.width * fx), image.width - 1)
    y = min(int(image.height * fy), image.height - 1)
    return image.getpixel((x, y))  # type: ignore[return-value]


def close(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=False))


def multipart(data: bytes, filename: str, content_type: str) -> dict[str, object]:
    """Keyword arguments of a test-client POST with `data` as the multipart `file` part.

    Encoded in memory: the test client would spool a large body to a temporary file that it
    never closes (a ResourceWarning, hence an error here).
    """
    from werkzeug.datastructures import FileStorage
    from werkzeug.test import encode_multipart

    part = FileStorage(io.BytesIO(data), filename=filename, content_type=content_type)
    boundary, body = encode_multipart({"file": part})
    return {"data": body, "content_type": f"multipart/form-data; boundary={boundary}"}
