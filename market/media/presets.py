"""Preset avatars: a few simple designs drawn with Pillow, rendered into storage at first use.

Each preset is drawn once at 512x512, then passed through the same renderer as uploads, so a
preset has exactly the sizes and formats of an uploaded avatar. Keys carry a design version:
changing a design means a new version, hence new URLs (files are cached as immutable).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from market.errors import ValidationError
from market.lazy import lazy
from market.media.images import AvatarPolicy, render_avatar
from market.media.storage import Storage, content_type_for

if TYPE_CHECKING:
    from PIL import Image, ImageDraw
else:  # Pillow loads on the first preset drawn, not when the web app starts.
    Image, ImageDraw = lazy("PIL.Image", "PIL.ImageDraw")

DESIGN_VERSION = "v1"
SIDE = 512

Painter = Callable[["ImageDraw.ImageDraw"], None]


@dataclass(frozen=True)
class Preset:
    id: str
    name: str
    background: tuple[int, int, int]
    paint: Painter


def _sun(draw: ImageDraw.ImageDraw) -> None:
    for i in range(12):
        angle = i * math.pi / 6
        x, y = 256 + 200 * math.cos(angle), 256 + 200 * math.sin(angle)
        draw.line((256, 256, x, y), fill=(255, 214, 102), width=18)
    draw.ellipse((136, 136, 376, 376), fill=(255, 183, 3))


def _waves(draw: ImageDraw.ImageDraw) -> None:
    for row, colour in enumerate(((144, 224, 239), (72, 202, 228), (0, 180, 216))):
        base = 200 + row * 90
        points = [(x, base + 28 * math.sin(x / 40 + row)) for x in range(0, SIDE + 8, 8)]
        draw.polygon([*points, (SIDE, SIDE), (0, SIDE)], fill=colour)


def _forest(draw: ImageDraw.ImageDraw) -> None:
    for x, top, colour in (
        (120, 120, (56, 102, 65)),
        (300, 70, (106, 153, 78)),
        (420, 170, (56, 102, 65)),
    ):
        draw.polygon(((x, top), (x - 110, 440), (x + 110, 440)), fill=colour)
        draw.rectangle((x - 14, 440, x + 14, 500), fill=(111, 78, 55))


def _night(draw: ImageDraw.ImageDraw) -> None:
    draw.ellipse((270, 70, 430, 230), fill=(244, 241, 222))
    draw.ellipse((230, 50, 380, 200), fill=(20, 33, 61))
    # Fixed positions: the design must be identical every time it is drawn.
    for i in range(28):
        x, y = (i * 149) % 480 + 16, (i * 83) % 460 + 26
        r = 3 + i % 4
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(252, 163, 17) if i % 7 == 0 else "white")


def _shield(draw: ImageDraw.ImageDraw) -> None:
    outline = ((256, 56), (436, 116), (416, 316), (256, 460), (96, 316), (76, 116))
    draw.polygon(outline, fill=(212, 175, 55))
    inner = ((256, 96), (400, 144), (384, 304), (256, 420), (128, 304), (112, 144))
    draw.polygon(inner, fill=(139, 0, 0))
    draw.polygon(((256, 150), (320, 330), (256, 300), (192, 330)), fill=(212, 175, 55))


def _grid(draw: ImageDraw.ImageDraw) -> None:
    for i in range(4):
        for j in range(4):
            x, y = 32 + i * 116, 32 + j * 116
            colour = (230, 57, 70) if (i + j) % 3 == 0 else (241, 250, 238)
            if (i * j) % 2:
                draw.ellipse((x, y, x + 100, y + 100), fill=colour)
            else:
                draw.rectangle((x, y, x + 100, y + 100), fill=colour)


PRESETS: dict[str, Preset] = {
    p.id: p
    for p in (
        Preset("sunrise", "Sunrise", (251, 133, 0), _sun),
        Preset("ocean", "Ocean", (2, 62, 138), _waves),
        Preset("forest", "Forest", (233, 245, 219), _forest),
        Preset("night", "Night sky", (20, 33, 61), _night),
        Preset("shield", "Spartan shield", (29, 53, 87), _shield),
        Preset("mosaic", "Mosaic", (69, 123, 157), _grid),
    )
}


def get_preset(preset_id: str) -> Preset:
    preset = PRESETS.get(preset_id)
    if preset is None:
        raise ValidationError(
            f"unknown preset {preset_id!r}",
            errors={"preset": [f"Must be one of: {', '.join(PRESETS)}."]},
        )
    return preset


def draw_preset(preset: Preset) -> bytes:
    """The preset's design as a 512x512 PNG."""
    image = Image.new("RGB", (SIDE, SIDE), preset.background)
    preset.paint(ImageDraw.Draw(image))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def preset_keys(preset_id: str, names: list[str]) -> dict[str, str]:
    """Output name ("64.webp") -> storage key of a preset."""
    return {name: f"presets/{preset_id}/{DESIGN_VERSION}/{name}" for name in names}


def ensure_preset(
    storage: Storage, policy: AvatarPolicy, preset_id: str, names: list[str]
) -> dict[str, str]:
    """Render the preset into storage if any of its files is missing (idempotent)."""
    keys = preset_keys(get_preset(preset_id).id, names)
    missing = [name for name, key in keys.items() if not storage.exists(key)]
    if missing:
        rendered = render_avatar(draw_preset(PRESETS[preset_id]), policy)
        for name in missing:
            storage.put(keys[name], rendered[name], content_type=content_type_for(keys[name]))
    return keys
