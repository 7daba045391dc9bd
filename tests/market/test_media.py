"""Upload checks and avatar rendering, with images made here by Pillow (hostile ones too)."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image, ImageCms, ImageDraw

from market.errors import (
    InvalidImageError,
    MarketError,
    UnsupportedMediaTypeError,
    UploadTooLargeError,
)
from market.media.images import AvatarPolicy, ImageInfo, inspect_upload, render_avatar
from tests.support import images

POLICY = AvatarPolicy()
OUTPUT_NAMES = {f"{size}.{ext}" for size in (64, 128, 256, 512) for ext in ("webp", "jpg")}
GREY = (128, 128, 128)
# Display = stored image turned by this: the EXIF meaning of each Orientation value.
STORED_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,  # mirrored
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,  # stored turned left: shown turned 90° clockwise
    8: Image.Transpose.ROTATE_270,  # stored turned right: shown turned 90° anticlockwise
}
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    b'xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="SecretPhotographer"/>'
    b"</rdf:RDF></x:xmpmeta>"
)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def noise(size: tuple[int, int] = (300, 200)) -> Image.Image:
    """Incompressible content: files much larger than their pixel count suggests."""
    return Image.effect_noise(size, 64).convert("RGB")


def camera_jpeg(orientation: int, side: int = 400) -> bytes:
    """Quadrants stored as a camera held sideways would, with GPS, XMP, ICC and a comment."""
    stored = images.quadrants(side).transpose(STORED_FOR_ORIENTATION[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"  # Make
    exif.get_ifd(0x8825).update({1: "S", 2: (12.0, 2.0, 46.0), 3: "W", 4: (77.0, 1.0, 43.0)})
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return encode(
        stored,
        "JPEG",
        quality=95,
        exif=exif.tobytes(),
        xmp=XMP,
        icc_profile=srgb,
        comment=b"SecretComment",
    )


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def assert_no_metadata(data: bytes) -> None:
    image = decode(data)
    assert not image.getexif()
    for key in ("exif", "icc_profile", "xmp", "XML:com.adobe.xmp", "comment"):
        assert key not in image.info, key
    for marker in (
        b"Exif",
        b"ICC_PROFILE",
        b"ICCP",
        b"XMP ",
        b"ns.adobe.com/xap",
        b"TestCam",
        b"SecretPhotographer",
        b"SecretComment",
    ):
        assert marker not in data, marker


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(x) + _s15(y) + _s15(z)


def linear_rgb_profile() -> bytes:
    """An ICC v2 profile with sRGB primaries and a linear (gamma 1.0) tone curve.

    Pillow only creates sRGB, LAB and XYZ profiles, so this one is written by hand. Mid grey
    (128) in linear light is a much lighter grey (about 188) in sRGB: an easy check that the
    embedded profile was honoured.
    """
    desc_text = b"linear sRGB\0"
    desc = (
        b"desc\0\0\0\0"
        + struct.pack(">I", len(desc_text))
        + desc_text
        + struct.pack(">II", 0, 0)
        + struct.pack(">HB", 0, 0)
        + b"\0" * 67
    )
    tags = {
        b"desc": desc,
        b"wtpt": _xyz(0.9642, 1.0, 0.8249),  # D50
        b"rXYZ": _xyz(0.4361, 0.2225, 0.0139),
        b"gXYZ": _xyz(0.3851, 0.7169, 0.0971),
        b"bXYZ": _xyz(0.1431, 0.0606, 0.7141),
        b"rTRC": b"curv\0\0\0\0" + struct.pack(">I", 0),  # no entries: identity
        b"cprt": b"text\0\0\0\0no copyright\0",
    }
    tags[b"gTRC"] = tags[b"bTRC"] = tags[b"rTRC"]
    table_size = 4 + 12 * len(tags)
    offset, entries, body = 128 + table_size, b"", b""
    for signature, data in tags.items():
        data += b"\0" * (-len(data) % 4)
        entries += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = 128 + table_size + len(body)
    header = (
        struct.pack(">I", size)
        + b"lcms"
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + b"\0" * 12
        + b"acsp"
        + b"\0" * 28
        + _s15(0.9642)
        + _s15(1.0)
        + _s15(0.8249)
        + b"\0" * 48
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + entries + body


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header claims width x height pixels."""
    data = bytearray(encode(Image.new("RGB", (16, 16), GREY), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_with_bad_crc() -> bytes:
    data = bytearray(encode(noise((64, 64)), "PNG"))
    iend = data.index(b"IEND")
    data[iend - 5] ^= 0xFF  # the last byte of the IDAT chunk's CRC
    return bytes(data)


# Accepted uploads -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mime"), [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp")]
)
def test_inspect_upload_describes_an_allowed_image(fmt, mime):
    data = encode(noise((300, 200)), fmt)
    assert inspect_upload(data, POLICY) == ImageInfo(fmt.lower(), 300, 200, mime)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_render_avatar_gives_every_size_in_both_formats(fmt):
    rendered = render_avatar(encode(noise((300, 200)), fmt), POLICY)
    assert set(rendered) == OUTPUT_NAMES
    for name, data in rendered.items():
        size, ext = name.split(".")
        image = decode(data)
        assert image.format == {"webp": "WEBP", "jpg": "JPEG"}[ext]
        assert image.size == (int(size), int(size))


@pytest.mark.parametrize("orientation", sorted(STORED_FOR_ORIENTATION))
def test_exif_orientation_is_applied_and_all_metadata_stripped(orientation):
    rendered = render_avatar(camera_jpeg(orientation), POLICY)
    for name, data in rendered.items():
        rgb = decode(data).convert("RGB")
        for (fx, fy), colour in zip(
            ((0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)),
            images.QUADRANTS.values(),
            strict=True,
        ):
            assert images.close(images.pixel(rgb, fx, fy), colour), (name, fx, fy)
        assert_no_metadata(data)


def test_wide_image_is_cropped_to_its_centre():
    image = Image.new("RGB", (600, 200), images.RED)
    ImageDraw.Draw(image).rectangle((200, 0, 399, 199), fill=images.GREEN)
    rendered = render_avatar(encode(image, "PNG"), POLICY)
    for name, data in rendered.items():
        rgb = decode(data).convert("RGB")
        for fx in (0.02, 0.5, 0.98):
            assert images.close(images.pixel(rgb, fx, 0.5), images.GREEN), (name, fx)


def test_small_image_is_scaled_up():
    rendered = render_avatar(encode(Image.new("RGB", (20, 20), images.BLUE), "PNG"), POLICY)
    big = decode(rendered["512.jpg"])
    assert big.size == (512, 512)
    assert images.close(images.pixel(big, 0.5, 0.5), images.BLUE)


def test_png_transparency_is_kept_in_webp_and_flattened_on_white_in_jpeg():
    rendered = render_avatar(images.png_with_transparency(), POLICY)
    for size in POLICY.sizes:
        webp = decode(rendered[f"{size}.webp"]).convert("RGBA")
        assert webp.getpixel((1, 1))[3] == 0
        assert images.close(images.pixel(webp, 0.5, 0.5), (*images.RED, 255))
        jpeg = decode(rendered[f"{size}.jpg"])
        assert jpeg.mode == "RGB"
        assert images.close(jpeg.getpixel((1, 1)), (255, 255, 255), tolerance=8)
        assert images.close(images.pixel(jpeg, 0.5, 0.5), images.RED)


def test_paletted_png_with_a_transparent_index():
    image = Image.new("P", (200, 200), 0)
    image.putpalette([0, 0, 0, *images.GREEN] + [0] * (256 - 2) * 3)
    ImageDraw.Draw(image).rectangle((50, 50, 149, 149), fill=1)
    rendered = render_avatar(encode(image, "PNG", transparency=0), POLICY)
    webp = decode(rendered["256.webp"]).convert("RGBA")
    assert webp.getpixel((2, 2))[3] == 0
    assert images.close(images.pixel(webp, 0.5, 0.5), (*images.GREEN, 255))
    assert images.close(decode(rendered["256.jpg"]).getpixel((2, 2)), (255, 255, 255), 8)


def test_sixteen_bit_grey_png_keeps_its_tones():
    image = Image.new("I;16", (120, 120), 128 * 257)
    ImageDraw.Draw(image).rectangle((0, 0, 59, 119), fill=65535)
    data = encode(image, "PNG")
    assert decode(data).mode == "I;16"
    rgb = decode(render_avatar(data, POLICY)["128.jpg"])
    assert images.close(images.pixel(rgb, 0.1, 0.5), (255, 255, 255), 4)
    # convert("L") alone would clip every 16-bit value above 255 to white.
    assert images.close(images.pixel(rgb, 0.9, 0.5), GREY, 4)


def test_cmyk_jpeg_comes_out_as_rgb():
    data = encode(Image.new("CMYK", (200, 200), (0, 255, 255, 0)), "JPEG", quality=95)
    assert decode(data).mode == "CMYK"
    for name, out in render_avatar(data, POLICY).items():
        image = decode(out)
        assert image.mode == "RGB", name
        assert images.close(images.pixel(image, 0.5, 0.5), images.RED), name


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_embedded_icc_profile_is_converted_to_srgb_then_dropped(fmt):
    params = {"quality": 100} if fmt != "PNG" else {}
    grey = Image.new("RGB", (200, 200), GREY)
    data = encode(grey, fmt, icc_profile=linear_rgb_profile(), **params)
    for name, out in render_avatar(data, POLICY).items():
        # Linear-light 50% is about 188 in sRGB; 128 would mean the profile was ignored.
        centre = images.pixel(decode(out).convert("RGB"), 0.5, 0.5)
        assert images.close(centre, (188, 188, 188), 6), (name, centre)
        assert_no_metadata(out)


def test_srgb_profile_leaves_colours_alone():
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(images.quadrants(200), "PNG", icc_profile=srgb)
    rgb = decode(render_avatar(data, POLICY)["256.webp"]).convert("RGB")
    assert images.close(images.pixel(rgb, 0.25, 0.25), images.RED, 12)
    assert images.close(images.pixel(rgb, 0.75, 0.75), images.YELLOW, 12)


def test_profile_for_another_colour_space_is_ignored():
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    data = encode(Image.new("RGB", (100, 100), images.BLUE), "PNG", icc_profile=lab)
    out = decode(render_avatar(data, POLICY)["64.jpg"])
    assert images.close(images.pixel(out, 0.5, 0.5), images.BLUE)


def test_rendering_is_deterministic():
    data = camera_jpeg(6)
    assert render_avatar(data, POLICY) == render_avatar(data, POLICY)


def test_php_appended_to_a_real_jpeg_does_not_survive_rendering():
    data = encode(images.quadrants(200), "JPEG") + images.PHP
    assert inspect_upload(data, POLICY).format == "jpeg"
    assert all(b"<?php" not in out for out in render_avatar(data, POLICY).values())


def test_a_custom_policy_sets_sizes_and_formats():
    policy = AvatarPolicy(sizes=(32, 100), output_formats=("jpeg",), formats=("JPEG", "jpg"))
    assert policy.formats == ("jpeg",)
    rendered = render_avatar(encode(noise(), "JPEG"), policy)
    assert {name: decode(data).size for name, data in rendered.items()} == {
        "32.jpg": (32, 32),
        "100.jpg": (100, 100),
    }


@pytest.mark.parametrize(
    "params",
    [
        {"formats": ("gif",)},
        {"sizes": ()},
        {"sizes": (0, 64)},
        {"sizes": (64.5,)},
        {"output_formats": ("png",)},
        {"jpeg_quality": 0},
        {"max_pixels": 0},
    ],
)
def test_a_policy_with_unsupported_settings_is_refused(params):
    with pytest.raises(ValueError):
        AvatarPolicy(**params)


# Refused uploads ----------------------------------------------------------------------------


def _refusal(data: bytes, policy: AvatarPolicy = POLICY) -> list[MarketError]:
    """The errors both entry points raise for `data` (they must agree)."""
    errors = []
    for check in (inspect_upload, render_avatar):
        with pytest.raises(MarketError) as caught:
            check(data, policy)
        errors.append(caught.value)
    assert type(errors[0]) is type(errors[1])
    return errors


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("png_50_megapixels", lambda: images.png_bomb(7100, 7100)),
        ("png_100_megapixels_pillow_warns", lambda: images.png_bomb(10000, 10000)),
        ("png_400_megapixels_pillow_refuses", lambda: images.png_bomb(20000, 20000)),
        ("jpeg_claiming_49_megapixels", lambda: jpeg_claiming(7000, 7000)),
        ("jpeg_claiming_4_gigapixels", lambda: jpeg_claiming(65000, 65000)),
    ],
)
def test_decompression_bombs_are_refused_before_decoding(name, make):
    for error in _refusal(make()):
        assert isinstance(error, InvalidImageError), name
        assert "too many pixels" in str(error)


def test_pixel_limit_comes_from_the_policy():
    data = encode(Image.new("RGB", (20, 20)), "PNG")
    for error in _refusal(data, AvatarPolicy(max_pixels=399)):
        assert isinstance(error, InvalidImageError)
        assert "too many pixels" in str(error)
    assert inspect_upload(data, AvatarPolicy(max_pixels=400)).width == 20


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("truncated_jpeg", images.truncated_jpeg),
        ("truncated_png", lambda: encode(noise(), "PNG")[:3000]),
        ("truncated_webp", lambda: encode(noise(), "WEBP")[:2000]),
        ("png_with_bad_crc", png_with_bad_crc),
        ("jpeg_magic_then_garbage", lambda: b"\xff\xd8\xff\xe0" + b"\x13" * 500),
        ("png_signature_then_garbage", lambda: b"\x89PNG\r\n\x1a\n" + b"\x13" * 500),
        ("riff_webp_then_garbage", lambda: b"RIFF\x00\x01\x00\x00WEBPVP8 " + b"\x13" * 500),
    ],
)
def test_corrupt_or_truncated_images_are_refused(name, make):
    for error in _refusal(make()):
        assert isinstance(error, InvalidImageError), name
        assert str(error) == "corrupt or truncated image"
        assert not isinstance(error, OSError)


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("php_named_jpg", lambda: images.PHP),
        ("gif", lambda: encode(Image.new("P", (10, 10)), "GIF")),
        ("bmp", lambda: encode(Image.new("RGB", (10, 10)), "BMP")),
        ("tiff", lambda: encode(Image.new("RGB", (10, 10)), "TIFF")),
        ("svg", lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'),
        ("text", lambda: b"just some text\n"),
        ("short_riff_not_webp", lambda: b"RIFF\x00\x00\x00\x00WAVEfmt "),
    ],
)
def test_files_that_are_not_an_allowed_image_type_are_415(name, make):
    for error in _refusal(make()):
        assert isinstance(error, UnsupportedMediaTypeError), name
        assert error.status == 415


def test_a_format_the_policy_leaves_out_is_415():
    data = encode(Image.new("RGB", (10, 10)), "PNG")
    for error in _refusal(data, AvatarPolicy(formats=("jpeg",))):
        assert isinstance(error, UnsupportedMediaTypeError)


def test_empty_file_is_invalid():
    for error in _refusal(b""):
        assert isinstance(error, InvalidImageError)
        assert str(error) == "empty file"


def test_oversize_file_is_413_before_its_type_is_looked_at():
    policy = AvatarPolicy(max_bytes=1000)
    jpeg = encode(noise(), "JPEG")
    gif = encode(noise(), "GIF")
    assert len(jpeg) > 1000 and len(gif) > 1000
    for data in (jpeg, gif):
        for error in _refusal(data, policy):
            assert isinstance(error, UploadTooLargeError)
            assert error.status == 413
    assert inspect_upload(jpeg, AvatarPolicy(max_bytes=len(jpeg))).format == "jpeg"
