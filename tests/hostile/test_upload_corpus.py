"""A corpus of hostile files sent through the real avatar upload endpoint.

tests/webapp/test_avatar_upload.py already refuses PNG bombs, a truncated JPEG, PHP named
.jpg, an empty file and an oversized one; tests/market/test_media.py checks the same rules
on the functions. Here: the other disguises, formats and bombs, through HTTP. Each refusal
is 413, 415 or 422 problem+json with a reason, and leaves nothing: no media row, no job, no
file under MEDIA_ROOT. EXIF bombs wrap real, valid pixels: they are accepted, processed
without hanging, and nothing of the EXIF survives.
"""

from __future__ import annotations

import io
import struct
import uuid
import zipfile
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from market.models import Job, MediaFile
from tests.support import images
from tests.support.mercadopago import finished_job

UPLOAD = "/api/v1/advanced/profile/avatar/upload"
ME = "/api/v1/profile/me"


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def small(mode: str = "RGB") -> Image.Image:
    return Image.new(mode, (24, 24), (200, 30, 30) if mode == "RGB" else 1)


def noise() -> Image.Image:
    """Incompressible pixels: a prefix of the file cannot hold the whole image."""
    return Image.effect_noise((200, 200), 80).convert("RGB")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A tiny real JPEG whose frame header claims width x height pixels."""
    data = bytearray(encode(small(), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_claiming(width: int, height: int) -> bytes:
    """A lossless WebP whose VP8L header claims width x height (at most 16384 a side)."""
    data = bytearray(encode(small(), "WEBP", lossless=True))
    start = data.index(b"VP8L") + 8 + 1  # chunk header, then the 0x2f signature byte
    bits = (
        (width - 1)
        | ((height - 1) << 14)
        | (struct.unpack("<I", data[start : start + 4])[0] & 0xF0000000)
    )
    data[start : start + 4] = struct.pack("<I", bits)
    return bytes(data)


def animated_gif() -> bytes:
    frames = [Image.new("P", (16, 16), i) for i in range(3)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], loop=0)


def zip_file() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("avatar.jpg", encode(small(), "JPEG"))
    return out.getvalue()


def pdf_file() -> bytes:
    return encode(small(), "PDF")


def exif_bomb(loop: bool) -> bytes:
    """A real JPEG whose EXIF is hostile: an IFD pointing at itself (a loop), or thousands
    of entries each claiming a 2 GiB string at a bogus offset."""
    if loop:
        ifd = struct.pack(">HHHII", 1, 0x8769, 4, 1, 8) + struct.pack(">I", 8)
    else:
        n = 4000
        entry = struct.pack(">HHII", 0x010E, 2, 0x7FFFFFFF, 8)
        ifd = struct.pack(">H", n) + entry * n + struct.pack(">I", 0)
    exif = b"Exif\x00\x00MM\x00\x2a" + struct.pack(">I", 8) + ifd
    return encode(Image.new("RGB", (64, 64), (10, 120, 200)), "JPEG", exif=exif)


SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
    b"<script>alert(document.cookie)</script><rect width='64' height='64'/></svg>"
)
HTML = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"

# name -> (status, bytes, filename, declared content type)
REFUSED: dict[str, tuple[int, Callable[[], bytes], str, str]] = {
    # Not an allowed type, whatever name and type the client claims: 415.
    "html_named_png": (415, lambda: HTML, "avatar.png", "image/png"),
    "svg_with_script": (415, lambda: SVG, "avatar.svg", "image/svg+xml"),
    "svg_named_jpg": (415, lambda: SVG, "avatar.jpg", "image/jpeg"),
    "pdf_named_jpg": (415, pdf_file, "avatar.jpg", "image/jpeg"),
    "zip_named_png": (415, zip_file, "avatar.png", "image/png"),
    "gif": (415, lambda: encode(small("P"), "GIF"), "avatar.gif", "image/gif"),
    "animated_gif_named_png": (415, animated_gif, "avatar.png", "image/png"),
    "bmp": (415, lambda: encode(small(), "BMP"), "avatar.bmp", "image/bmp"),
    "tiff_named_jpg": (415, lambda: encode(small(), "TIFF"), "avatar.jpg", "image/jpeg"),
    "ico": (415, lambda: encode(small(), "ICO"), "avatar.ico", "image/x-icon"),
    "elf_binary": (415, lambda: b"\x7fELF\x02\x01\x01" + b"\0" * 200, "a.jpg", "image/jpeg"),
    # Polyglots: an allowed image's magic number, then something else: 422 (not a whole
    # image). A GIF/JavaScript polyglot is a GIF to the sniffer: 415.
    "gif_javascript_polyglot": (
        415,
        lambda: b"GIF89a/*\x00\x00*/=alert(1)//",
        "a.gif",
        "image/gif",
    ),
    "png_signature_then_html": (422, lambda: b"\x89PNG\r\n\x1a\n" + HTML, "a.png", "image/png"),
    "jpeg_magic_then_html": (422, lambda: b"\xff\xd8\xff\xe0" + HTML, "a.jpg", "image/jpeg"),
    "webp_riff_then_zip": (
        422,
        lambda: b"RIFF\x10\x00\x00\x00WEBPVP8 " + zip_file(),
        "a.webp",
        "image/webp",
    ),
    # Truncated or broken the other ways.
    "truncated_png": (
        422,
        lambda: encode(noise(), "PNG")[:2000],
        "a.png",
        "image/png",
    ),
    "truncated_webp": (
        422,
        lambda: encode(noise(), "WEBP")[:1500],
        "a.webp",
        "image/webp",
    ),
    "jpeg_header_only": (422, lambda: encode(small(), "JPEG")[:200], "a.jpg", "image/jpeg"),
    # Pixel bombs in the other formats (the PNG ones are in tests/webapp): 422, and the
    # test below checks the reason is the pixel count, found before any decoding.
    "jpeg_claiming_65000_squared": (
        422,
        lambda: jpeg_claiming(65000, 65000),
        "a.jpg",
        "image/jpeg",
    ),
    "webp_claiming_16384_squared": (
        422,
        lambda: webp_claiming(16384, 16384),
        "a.webp",
        "image/webp",
    ),
}


def post(
    client: FlaskClient, headers: dict[str, str], data: bytes, filename: str, content_type: str
) -> TestResponse:
    return client.post(UPLOAD, headers=headers, **images.multipart(data, filename, content_type))


def counts(db: Session, user_id: uuid.UUID) -> tuple[int, int]:
    db.expire_all()
    media = db.execute(
        select(func.count()).select_from(MediaFile).where(MediaFile.user_id == user_id)
    ).scalar_one()
    jobs = db.execute(
        select(func.count()).select_from(Job).where(Job.owner_id == user_id)
    ).scalar_one()
    return int(media), int(jobs)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_hostile_files_are_refused_and_leave_nothing(
    client, alice, db, user_id_of, media_root, name
):
    status, make, filename, content_type = REFUSED[name]
    uid = user_id_of(alice)
    before = images.tree(media_root)
    answer = post(client, alice, make(), filename, content_type)
    assert answer.status_code == status, answer.get_data(as_text=True)
    assert answer.mimetype == "application/problem+json"
    body = answer.get_json()
    assert body["status"] == status and body["detail"]
    if "_claiming_" in name:
        assert "too many pixels" in body["detail"]
    assert images.tree(media_root) == before
    assert counts(db, uid) == (0, 0)


def test_oversized_body_without_a_declared_length_stops_at_the_cap(
    client, alice, db, user_id_of, media_root, settings
):
    """A chunked upload (no Content-Length) cannot slip past the size check."""
    uid = user_id_of(alice)
    before = images.tree(media_root)
    kwargs = images.multipart(
        images.plain_jpeg() + b"\0" * (settings.avatar_max_bytes + 1), "a.jpg", "image/jpeg"
    )
    answer = client.post(
        UPLOAD,
        headers={**alice, "Transfer-Encoding": "chunked"},
        input_stream=io.BytesIO(kwargs["data"]),
        content_type=kwargs["content_type"],
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert answer.status_code == 413, answer.get_data(as_text=True)
    assert answer.mimetype == "application/problem+json"
    assert images.tree(media_root) == before
    assert counts(db, uid) == (0, 0)


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize("loop", [True, False], ids=["ifd_loop", "huge_counts"])
def test_exif_bombs_on_real_pixels_are_processed_and_the_exif_dropped(client, alice, loop):
    answer = post(client, alice, exif_bomb(loop), "a.jpg", "image/jpeg")
    assert answer.status_code == 202, answer.get_data(as_text=True)
    job = finished_job(client, alice, answer.get_json()["status_url"])
    assert job["state"] == "succeeded", job
    urls = client.get(ME, headers=alice).get_json()["avatar_urls"]
    assert urls
    for url in urls.values():
        with client.get(url) as rendered:
            assert rendered.status_code == 200
            image = Image.open(io.BytesIO(rendered.data))
            assert not image.getexif() and "exif" not in image.info
