"""Pixel bombs, and the peak memory the real upload check and renderer spend on a file.

Run in a child process so that its peak resident size (`ru_maxrss`) is the check's alone:

    python -m tests.support.image_memory make DIR                 # write the files into DIR
    python -m tests.support.image_memory check|render FILE [FILE...]

The second prints one JSON line: each file's outcome (accepted, or the error's class, status
and reason) and the growth of the peak resident size over a warmed-up baseline, in MiB.
The peak only rises: with several files, the growth is the worst of them.
"""

from __future__ import annotations

import io
import json
import resource
import struct
import sys
import zlib
from pathlib import Path

from PIL import Image

# name -> what it is; each builder writes DIR/<name>.
BOMBS = {
    # The review's finding: 1.5 KB of lossless WebP, 6300x6300 pixels.
    "webp_lossless_6300_squared": "WebP lossless, flat, 40 Mpx",
    # Within a 12 Mpx limit, but hundreds of thousands of pixels per byte.
    "webp_lossless_12mpx_flat": "WebP lossless, flat, 12 Mpx",
    "png_rgba_6300_squared": "PNG RGBA, flat, 40 Mpx",
    "png_1bit_12mpx_zeros": "PNG 1-bit zeros, 12 Mpx",
    "jpeg_flat_8000_squared": "JPEG, flat, 64 Mpx",
    "jpeg_claiming_12mpx": "a 24x24 JPEG whose header claims 4000x3000",
    "gif_6300_squared": "GIF, flat, 40 Mpx",
}
# Accepted files as large as the limits allow: what a worker must still render.
LARGEST = {
    "png_gradient_4096x3072": "PNG RGB gradient at the pixel limit",
    "webp_lossy_gradient_4096x3072": "lossy WebP gradient at the pixel limit",
    "jpeg_gradient_4096x3072": "JPEG gradient at the pixel limit",
}


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def _png_1bit_zeros(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    raw = (b"\x00" * (1 + (width + 7) // 8)) * height
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(raw, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(_save(Image.new("RGB", (24, 24), (90, 90, 90)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _gradient(width: int, height: int) -> Image.Image:
    return Image.linear_gradient("L").resize((width, height)).convert("RGB")


def build(name: str) -> bytes:
    flat = (200, 30, 30)
    if name == "webp_lossless_6300_squared":
        return _save(Image.new("RGB", (6300, 6300), flat), "WEBP", lossless=True)
    if name == "webp_lossless_12mpx_flat":
        return _save(Image.new("RGB", (4096, 3072), flat), "WEBP", lossless=True)
    if name == "png_rgba_6300_squared":
        return _save(Image.new("RGBA", (6300, 6300), (*flat, 255)), "PNG")
    if name == "png_1bit_12mpx_zeros":
        return _png_1bit_zeros(4096, 3072)
    if name == "jpeg_flat_8000_squared":
        return _save(Image.new("RGB", (8000, 8000), flat), "JPEG", quality=10)
    if name == "jpeg_claiming_12mpx":
        return _jpeg_claiming(4000, 3000)
    if name == "gif_6300_squared":
        return _save(Image.new("P", (6300, 6300), 1), "GIF")
    if name == "png_gradient_4096x3072":
        return _save(_gradient(4096, 3072), "PNG")
    if name == "webp_lossy_gradient_4096x3072":
        return _save(_gradient(4096, 3072), "WEBP", quality=80)
    if name == "jpeg_gradient_4096x3072":
        return _save(_gradient(4096, 3072), "JPEG", quality=90)
    raise ValueError(name)


def make(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in (*BOMBS, *LARGEST):
        (directory / name).write_bytes(build(name))


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(which: str, paths: list[Path]) -> dict[str, object]:
    from market.errors import MarketError
    from market.media.images import AvatarPolicy, inspect_upload, render_avatar

    policy = AvatarPolicy(max_bytes=10 * 1024 * 1024)  # the code's own pixel limits
    check = {"check": inspect_upload, "render": render_avatar}[which]
    # Warm up with a small real image: libraries loaded, allocator arenas in place.
    render_avatar(_save(_gradient(600, 400), "PNG"), policy)
    baseline = _peak_mib()
    outcomes = {}
    for path in paths:
        try:
            check(path.read_bytes(), policy)
            outcomes[path.name] = "accepted"
        except MarketError as exc:
            outcomes[path.name] = f"{type(exc).__name__} {exc.status}: {exc.detail}"
    return {"outcomes": outcomes, "growth_mib": round(_peak_mib() - baseline, 1)}


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(Path(sys.argv[2]))
    else:
        print(json.dumps(measure(sys.argv[1], [Path(p) for p in sys.argv[2:]])))
