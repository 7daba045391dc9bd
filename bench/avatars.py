"""4. Avatar processing on a 12-megapixel JPEG and PNG: the project against two Pillow pipelines.

Project: `market.media.images.render_avatar` (what the `media.process_avatar` task runs: checks,
verify, draft decode, EXIF orientation, centre crop, sRGB, every size from the next larger,
WebP and JPEG). Minimal: draft decode, one resize chain, the same encodes. Naive: full
decode, each size resampled from the original. Times: the three interleaved in one process
(medians). Peak memory: one run per fresh process, its VmHWM growth over the run.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import BenchError, median

NAME = "avatar"
WIDTH, HEIGHT = 4000, 3000  # 12 megapixels
ROUNDS = 7  # project and minimal; the naive one only NAIVE_ROUNDS times
NAIVE_ROUNDS = 3
MAX_BYTES = 10 * 1024 * 1024  # the default AVATAR_MAX_BYTES


def _policy():  # type: ignore[no-untyped-def]
    from market.media.images import AvatarPolicy

    return AvatarPolicy(max_bytes=MAX_BYTES)


def make_images(directory: Path) -> dict[str, Path]:
    """A photo-like 12 Mpx JPEG (gradients, shapes, grain) and a PNG of the same scene."""
    from PIL import Image, ImageDraw

    size = (WIDTH, HEIGHT)
    red = Image.linear_gradient("L").resize(size)
    green = Image.radial_gradient("L").resize(size)
    blue = red.transpose(Image.Transpose.ROTATE_180)
    scene = Image.merge("RGB", (red, green, blue))
    draw = ImageDraw.Draw(scene)
    for i in range(40):
        x, y = (i * 397) % WIDTH, (i * 613) % HEIGHT
        draw.ellipse((x, y, x + 300 + i * 7, y + 200 + i * 5), fill=(i * 6, 255 - i * 5, i * 3))
    grain = Image.effect_noise(size, 24).convert("RGB")
    photo = Image.blend(scene, grain, 0.12)
    paths = {"jpeg": directory / "photo.jpg", "png": directory / "photo.png"}
    photo.save(paths["jpeg"], format="JPEG", quality=90)
    scene.save(paths["png"], format="PNG")
    for fmt, path in paths.items():
        if path.stat().st_size > MAX_BYTES:
            raise BenchError(f"the {fmt} test image is over the upload limit")
    return paths


# The pipelines -------------------------------------------------------------------------------


def project(data: bytes) -> dict[str, bytes]:
    from market.media.images import render_avatar

    return render_avatar(data, _policy())


def _square_box(width: int, height: int) -> tuple[float, float, float, float]:
    edge = min(width, height)
    left, top = (width - edge) / 2, (height - edge) / 2
    return (left, top, left + edge, top + edge)


def _encode_all(images: dict[int, object]) -> dict[str, bytes]:
    policy = _policy()
    out: dict[str, bytes] = {}
    for size in policy.sizes:
        image = images[size]
        webp, jpeg = io.BytesIO(), io.BytesIO()
        image.save(webp, format="WEBP", quality=policy.webp_quality, method=4)  # type: ignore[attr-defined]
        image.save(jpeg, format="JPEG", quality=policy.jpeg_quality, optimize=True)  # type: ignore[attr-defined]
        out[f"{size}.webp"], out[f"{size}.jpg"] = webp.getvalue(), jpeg.getvalue()
    return out


def minimal(data: bytes) -> dict[str, bytes]:
    """Draft decode, centre square at the largest size, then each size from the next."""
    from PIL import Image

    sizes = sorted(_policy().sizes, reverse=True)
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (sizes[0], sizes[0]))
        image.load()
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        current = rgb.resize(
            (sizes[0], sizes[0]),
            Image.Resampling.LANCZOS,
            box=_square_box(*rgb.size),
            reducing_gap=3.0,
        )
    images = {}
    for size in sizes:
        if current.width != size:
            current = current.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        images[size] = current
    return _encode_all(images)


def naive(data: bytes) -> dict[str, bytes]:
    """Full decode, then every size resampled from the full-size original."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
    box = _square_box(*rgb.size)
    images = {
        size: rgb.resize((size, size), Image.Resampling.LANCZOS, box=box)
        for size in _policy().sizes
    }
    return _encode_all(images)


PIPELINES: dict[str, Callable[[bytes], dict[str, bytes]]] = {
    "project": project,
    "minimal": minimal,
    "naive": naive,
}


def _peak_rss() -> int:
    """This process's peak resident set (VmHWM: its own since exec, unlike ru_maxrss)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise BenchError("no VmHWM in /proc/self/status")


def child_memory(pipeline: str, image: Path) -> dict[str, object]:
    """One run of one pipeline in this fresh process: its peak memory above the start."""
    from PIL import Image, JpegImagePlugin, PngImagePlugin, WebPImagePlugin  # noqa: F401

    import market.media.images  # noqa: F401

    data = image.read_bytes()
    before = _peak_rss()
    outputs = PIPELINES[pipeline](data)
    shapes = {name: list(Image.open(io.BytesIO(b)).size) for name, b in sorted(outputs.items())}
    return {"peak_mb": (_peak_rss() - before) / 2**20, "outputs": shapes}


def child_timing(image: Path, rounds: int) -> dict[str, list[float]]:
    """Every pipeline in turn, `rounds` times (interleaved: a load change hits all alike)."""
    data = image.read_bytes()
    project(data), minimal(data)  # warm-up: plugins, codecs, the sRGB profile
    times: dict[str, list[float]] = {name: [] for name in PIPELINES}
    for n in range(rounds):
        order = list(PIPELINES)[n % 3 :] + list(PIPELINES)[: n % 3]
        for name in order:
            if name == "naive" and len(times[name]) >= NAIVE_ROUNDS:
                continue
            began = time.perf_counter()
            PIPELINES[name](data)
            times[name].append(time.perf_counter() - began)
    return times


def _child(*args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "bench.avatars", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"avatar {args[0]} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(ctx) -> None:  # type: ignore[no-untyped-def]
    r = ctx.results
    details: dict[str, object] = {}
    ms = 1000
    with tempfile.TemporaryDirectory(prefix="spartan-bench-avatar-") as tmp:
        images = make_images(Path(tmp))
        for fmt, path in images.items():
            memory = {p: _child("memory", p, str(path)) for p in PIPELINES}
            if memory["project"]["outputs"] != memory["minimal"]["outputs"]:
                raise BenchError(f"{fmt}: the minimal pipeline's outputs differ from the project's")
            times = _child("timing", str(path), str(ROUNDS))
            t = {p: median(times[p]) for p in PIPELINES}
            r.add(
                NAME,
                f"{fmt} vs minimal",
                t["project"] * ms,
                t["minimal"] * ms,
                unit="ms",
                higher_is_better=False,
                target=1.2,
            )
            r.add(
                NAME,
                f"{fmt} naive/project",
                t["naive"] / t["project"],
                1.0,
                unit="x",
                target=3.0,
                note=f"naive {t['naive'] * ms:.0f} ms",
            )
            r.add(
                NAME,
                f"{fmt} peak memory",
                memory["project"]["peak_mb"],
                memory["minimal"]["peak_mb"],
                unit="MB",
                higher_is_better=False,
                note=f"naive {memory['naive']['peak_mb']:.0f} MB",
            )
            details[fmt] = {
                "bytes": path.stat().st_size,
                "times_s": times,
                "peak_mb": {p: round(memory[p]["peak_mb"], 1) for p in PIPELINES},
            }
    r.details[NAME] = {"size": f"{WIDTH}x{HEIGHT}", **details}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="avatar pipelines in a fresh process")
    parser.add_argument("what", choices=["memory", "timing"])
    parser.add_argument("args", nargs="+")
    ns = parser.parse_args()
    if ns.what == "memory":
        print(json.dumps(child_memory(ns.args[0], Path(ns.args[1]))))
    else:
        print(json.dumps(child_timing(Path(ns.args[0]), int(ns.args[1]))))
