"""Avatar images: check untrusted uploads cheaply and safely, then render the avatar sizes.

Hostile input is expected: a file is judged by its bytes (never its name or declared type),
refused by size and magic number before Pillow sees it, and by pixel count and pixels per
byte (a pixel bomb is a few bytes that decode to hundreds of megabytes) before anything is
decoded. The upload check (web) reads headers and structure only; every pixel is decoded by
the renderer alone, in the media worker. Every Pillow failure comes out as one of the upload
errors of market/errors.py. No Pillow global is changed: the limits travel in an AvatarPolicy.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from market.errors import (
    InvalidImageError,
    MarketError,
    UnsupportedMediaTypeError,
    UploadTooLargeError,
)
from market.lazy import lazy

if TYPE_CHECKING:
    from PIL import Image, ImageCms, ImageOps
else:  # Pillow loads on the first image handled, not when the web app starts.
    Image, ImageCms, ImageOps = lazy("PIL.Image", "PIL.ImageCms", "PIL.ImageOps")

# Our format name -> (Pillow's name, MIME type). Our names are lower case, as in the API.
FORMATS = {
    "jpeg": ("JPEG", "image/jpeg"),
    "png": ("PNG", "image/png"),
    "webp": ("WEBP", "image/webp"),
}
FORMAT_ALIASES = {"jpg": "jpeg"}
# Output format -> file extension of the rendered file ("64.webp", "64.jpg").
OUTPUT_EXTENSIONS = {"webp": "webp", "jpeg": "jpg"}
JPEG_BACKGROUND = (255, 255, 255)
# Resample with Image.reduce first while the source is more than this many times larger:
# much faster, and at 3 the result is practically the same as a full Lanczos resample.
REDUCING_GAP = 3.0
CORRUPT = "corrupt or truncated image"
# Modes the resampler handles as they are (LA and RGBA with premultiplied alpha).
RESAMPLABLE_MODES = ("L", "LA", "RGB", "RGBA", "CMYK")


@dataclass(frozen=True)
class AvatarPolicy:
    """Upload limits and the outputs rendered from each accepted image."""

    max_bytes: int = 5 * 1024 * 1024
    # Avatars render at most 512 px a side, but people upload camera files as they are: this
    # takes the common 12 Mpx phone photo (4032x3024, 4080x3060) and nothing larger. Decoded
    # in full (PNG, WebP) that is at most about 190 MiB in the worker; JPEG decodes scaled.
    max_pixels: int = 4096 * 3072
    # Real images, even flat drawings, hold far more than a byte per thousand pixels; bombs
    # hold one per tens of thousands. Images up to `small_pixels` pass whatever their size:
    # decoding them costs little.
    max_pixels_per_byte: int = 1024
    small_pixels: int = 1024 * 1024
    formats: tuple[str, ...] = ("jpeg", "png", "webp")
    sizes: tuple[int, ...] = (64, 128, 256, 512)
    output_formats: tuple[str, ...] = ("webp", "jpeg")
    jpeg_quality: int = 85
    webp_quality: int = 80

    def __post_init__(self) -> None:
        # Format names are accepted in any case ("JPEG", "jpg") and kept in the API's form.
        formats = tuple(dict.fromkeys(_format_name(f) for f in self.formats))
        object.__setattr__(self, "formats", formats)
        object.__setattr__(self, "output_formats", tuple(f.lower() for f in self.output_formats))
        if self.max_bytes <= 0 or self.max_pixels <= 0 or self.max_pixels_per_byte <= 0:
            raise ValueError("max_bytes, max_pixels and max_pixels_per_byte must be positive")
        if not self.sizes or any(not isinstance(s, int) or s <= 0 for s in self.sizes):
            raise ValueError(f"avatar sizes must be positive integers, not {self.sizes}")
        if not (1 <= self.jpeg_quality <= 100 and 1 <= self.webp_quality <= 100):
            raise ValueError("jpeg_quality and webp_quality must be between 1 and 100")
        unknown = set(self.output_formats) - set(OUTPUT_EXTENSIONS)
        if not self.output_formats or unknown:
            raise ValueError(f"output formats must be among {sorted(OUTPUT_EXTENSIONS)}")


def _format_name(name: str) -> str:
    fmt = FORMAT_ALIASES.get(name.lower(), name.lower())
    if fmt not in FORMATS:
        raise ValueError(f"unsupported upload format {name!r}; choose among {sorted(FORMATS)}")
    return fmt


@dataclass(frozen=True)
class ImageInfo:
    """What an accepted upload is: format ("jpeg", "png", "webp"), stored size, MIME type."""

    format: str
    width: int
    height: int
    mime: str


def sniff_format(data: bytes) -> str | None:
    """The format the magic number announces ("jpeg", "png", "webp"), or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _check_bytes(data: bytes, policy: AvatarPolicy) -> str:
    """Refuse by length and magic number, before any parsing; return the format."""
    if not data:
        raise InvalidImageError("empty file")
    if len(data) > policy.max_bytes:
        raise UploadTooLargeError(
            f"the file is {len(data)} bytes; at most {policy.max_bytes} are allowed"
        )
    fmt = sniff_format(data)
    if fmt is None or fmt not in policy.formats:
        allowed = ", ".join(f.upper() for f in policy.formats)
        raise UnsupportedMediaTypeError(f"the file is not an image of an allowed type ({allowed})")
    return fmt


@contextmanager
def _pillow_errors() -> Iterator[None]:
    """Turn any Pillow failure inside the block into InvalidImageError."""
    # catch_warnings changes the process-wide filters for the duration of the block; fine for
    # our single-threaded web and worker processes (gunicorn sync, Celery prefork).
    with warnings.catch_warnings():
        # Complaints about malformed metadata (EXIF, MPO) are common in real photos and the
        # metadata is dropped anyway: the same outcome with and without warnings as errors.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
        try:
            yield
        except MarketError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InvalidImageError("too many pixels") from exc
        except MemoryError:
            raise  # the server's trouble, not the file's: within our limits, so retryable
        except Exception as exc:
            raise InvalidImageError(CORRUPT) from exc


def _open(data: bytes, fmt: str, policy: AvatarPolicy) -> Image.Image:
    """Parse the header only (no pixels decoded); refuse too many pixels, or too many for the
    file's size."""
    image = Image.open(io.BytesIO(data), formats=[FORMATS[fmt][0]])
    width, height = image.size
    pixels = width * height
    if pixels > policy.max_pixels:
        image.close()
        raise InvalidImageError(
            f"too many pixels: {width}x{height}, at most {policy.max_pixels} allowed"
        )
    if pixels > policy.small_pixels and pixels > len(data) * policy.max_pixels_per_byte:
        image.close()
        raise InvalidImageError(
            f"too many pixels for the file's size: {width}x{height} in {len(data)} bytes "
            f"(at most {policy.max_pixels_per_byte} pixels per byte); scale the image down"
        )
    return image


def _verify(data: bytes, fmt: str, policy: AvatarPolicy) -> None:
    """Check the file's structure (PNG: every chunk's CRC), which decoding alone skips."""
    # verify() leaves the image unusable: it gets an open of its own.
    with _open(data, fmt, policy) as image:
        image.verify()


def inspect_upload(data: bytes, policy: AvatarPolicy) -> ImageInfo:
    """Check that `data` is a whole, allowed image within the limits, and describe it.

    Raises UploadTooLargeError (413), UnsupportedMediaTypeError (415) or InvalidImageError
    (422: empty, too many pixels, corrupt or truncated). Never decodes every pixel (this runs
    in the web request): headers and structure only, and JPEG at 1/8 scale. Pixel data that is
    corrupt behind a sound structure is found by render_avatar in the media worker.
    """
    fmt = _check_bytes(data, policy)
    with _pillow_errors():
        with _open(data, fmt, policy) as image:
            info = ImageInfo(fmt, image.width, image.height, FORMATS[fmt][1])
        # PNG: every chunk's CRC up to IEND (a truncated file fails); WebP: open parsed the
        # whole container already.
        _verify(data, fmt, policy)
        if fmt == "jpeg":
            # A scan cut short shows only when decoded. At 1/8 scale libjpeg computes one value
            # per 8x8 block: a 64th of the pixels' memory, found just as well.
            with _open(data, fmt, policy) as image:
                image.draft("RGB", (1, 1))
                image.load()
    return info


def render_avatar(data: bytes, policy: AvatarPolicy) -> dict[str, bytes]:
    """Render every size in every output format: {"64.webp": …, "64.jpg": …, …}.

    Upright (EXIF orientation applied), sRGB, centre-cropped square, with no metadata at
    all (no EXIF, GPS, ICC profile, XMP or comment). The same input gives the same bytes.
    Raises the errors of inspect_upload when `data` cannot be used.
    """
    fmt = _check_bytes(data, policy)
    largest = max(policy.sizes)
    with _pillow_errors():
        _verify(data, fmt, policy)
        with _open(data, fmt, policy) as image:
            # JPEG: decode at the smallest scale (1/2, 1/4, 1/8) still at least `largest`
            # on both sides; far less work than decoding 12 megapixels.
            image.draft("RGB", (largest, largest))
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            icc_profile = image.info.get("icc_profile")
            square = _square(_resamplable(image), largest)
        square = _to_srgb(square, icc_profile)
        # Nothing of the original's metadata may travel on (JPEG would write its comment).
        square.info.clear()
        outputs = _downsized(square, policy.sizes)
        return {
            f"{size}.{OUTPUT_EXTENSIONS[out_fmt]}": _encode(outputs[size], out_fmt, policy)
            for size in policy.sizes
            for out_fmt in policy.output_formats
        }


def _has_alpha(image: Image.Image) -> bool:
    return "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info


def _resamplable(image: Image.Image) -> Image.Image:
    """The image in a mode that resamples well: L, LA, RGB, RGBA or CMYK."""
    if image.mode.startswith("I"):
        # 16-bit grey (PNG): convert() would clip every value above 255 to white, so scale.
        image = image.convert("I").point(lambda value: value * (1 / 257))
        image.info.pop("transparency", None)  # a 16-bit value, meaningless once scaled
        return image.convert("L")
    if image.mode in RESAMPLABLE_MODES and "transparency" not in image.info:
        return image
    # Palette, bilevel, tRNS transparency, premultiplied and other modes.
    return image.convert("RGBA" if _has_alpha(image) else "RGB")


def _square(image: Image.Image, side: int) -> Image.Image:
    """The centred square of `image`, resampled to side x side in one pass."""
    width, height = image.size
    edge = min(width, height)
    # Fractional boxes are fine: the crop stays exactly centred.
    left, top = (width - edge) / 2, (height - edge) / 2
    return image.resize(
        (side, side),
        Image.Resampling.LANCZOS,
        box=(left, top, left + edge, top + edge),
        reducing_gap=REDUCING_GAP,
    )


@cache
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _to_srgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """RGB or RGBA in sRGB, through the embedded ICC profile when there is a usable one."""
    alpha = image.getchannel("A") if image.mode in ("LA", "RGBA") else None
    colour = image.convert({"LA": "L", "RGBA": "RGB"}[image.mode]) if alpha is not None else image
    converted = None
    if icc_profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            converted = ImageCms.profileToProfile(colour, source, _srgb_profile(), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            # An unreadable profile, or one for another colour space than the pixels: show
            # the pixels as they are, as browsers do.
            converted = None
    if converted is None:
        converted = colour.convert("RGB")
    if alpha is not None:
        converted.putalpha(alpha)
    return converted


def _downsized(square: Image.Image, sizes: tuple[int, ...]) -> dict[int, Image.Image]:
    """Each size resampled from the next larger one: each step is small, so it is cheap."""
    outputs: dict[int, Image.Image] = {}
    previous = square
    for size in sorted(set(sizes), reverse=True):
        if previous.width != size:
            previous = previous.resize(
                (size, size), Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP
            )
        outputs[size] = previous
    return outputs


def _encode(image: Image.Image, out_fmt: str, policy: AvatarPolicy) -> bytes:
    """The image as WebP (alpha kept) or JPEG (alpha flattened on white), without metadata."""
    out = io.BytesIO()
    if out_fmt == "webp":
        image.save(out, format="WEBP", quality=policy.webp_quality, method=4)
    else:
        if image.mode == "RGBA":
            flat = Image.new("RGB", image.size, JPEG_BACKGROUND)
            flat.paste(image, mask=image.getchannel("A"))
            image = flat
        image.save(out, format="JPEG", quality=policy.jpeg_quality, optimize=True)
    return out.getvalue()
