"""Pixel bombs of every format (issue 15, item 2).

The review's finding: a 1.5 KB lossless WebP of 6300x6300 was accepted, cost 1.5 s and
201 MiB in the web process and 641 MiB in the worker; a 116 KB PNG added 153 MiB. Measured
here before the fix (40 Mpx limit, every pixel decoded by the upload check): the WebP grew
the peak by 603 MiB in the check and in the renderer, a 166 KB RGBA PNG by 150 and 315 MiB.

Now each bomb is refused with a 4xx through HTTP and leaves nothing, and the peak memory of
the real check and renderer is measured in a child process (tests/support/image_memory.py):
a bomb costs neither of them anything, the web check never decodes a whole image, and the
worker's render of the largest image the limits let through stays within a bound.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import images
from tests.support.image_memory import BOMBS, LARGEST

UPLOAD = "/api/v1/advanced/profile/avatar/upload"
ROOT = Path(__file__).resolve().parents[2]
# Growth of the peak resident size a refused bomb, or the web check of any file, may cost.
CHECK_BOUND_MIB = 8
# What the media worker may spend rendering the largest accepted file (measured: lossless or
# lossy WebP at the pixel limit about 191 MiB, PNG 59 MiB, JPEG 5 MiB).
RENDER_BOUND_MIB = 256


def _child(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.image_memory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Every bomb and every largest-accepted file, built in a child (they are big decoded)."""
    directory = tmp_path_factory.mktemp("pixel-bombs")
    _child("make", str(directory))
    return directory


def _measure(which: str, paths: list[Path]) -> dict:
    return json.loads(_child(which, *map(str, paths)))


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_each_bomb_is_refused_with_a_4xx_and_leaves_nothing(
    client, alice, db, user_id_of, media_root, files, name
):
    uid = user_id_of(alice)
    before = images.tree(media_root)
    data = (files / name).read_bytes()
    answer = client.post(UPLOAD, headers=alice, **images.multipart(data, "a.img", "image/png"))
    expected = 415 if name.startswith("gif") else 422
    assert answer.status_code == expected, answer.get_data(as_text=True)
    assert answer.mimetype == "application/problem+json"
    if expected == 422:
        assert "too many pixels" in answer.get_json()["detail"]
    assert images.tree(media_root) == before
    from tests.hostile.test_upload_corpus import counts

    assert counts(db, uid) == (0, 0)


@pytest.mark.parametrize("which", ["check", "render"])
def test_bombs_cost_no_memory_in_the_check_nor_in_the_renderer(files, which):
    measured = _measure(which, [files / name for name in sorted(BOMBS)])
    assert not [n for n, outcome in measured["outcomes"].items() if outcome == "accepted"]
    assert measured["growth_mib"] < CHECK_BOUND_MIB, measured


def test_the_web_check_never_decodes_a_whole_image(files):
    measured = _measure("check", [files / name for name in sorted(LARGEST)])
    assert set(measured["outcomes"].values()) == {"accepted"}, measured
    assert measured["growth_mib"] < CHECK_BOUND_MIB, measured


@pytest.mark.parametrize("name", sorted(LARGEST))
def test_the_worker_renders_the_largest_accepted_image_within_a_bound(files, name):
    measured = _measure("render", [files / name])
    assert measured["outcomes"] == {name: "accepted"}
    assert measured["growth_mib"] < RENDER_BOUND_MIB, measured


def test_the_media_worker_is_bounded_in_memory():
    """A child that grew past the bound is replaced after its task (Procfile and compose)."""
    import shlex

    import yaml

    procfile = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line
    )
    worker = shlex.split(procfile["worker"])
    assert worker[worker.index("--max-memory-per-child") + 1] == "${WORKER_MAX_MEMORY_KIB:-409600}"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    media = compose["services"]["media-worker"]["command"]
    bound_kib = int(media[media.index("--max-memory-per-child") + 1])
    assert RENDER_BOUND_MIB * 1024 < bound_kib <= 512 * 1024
    assert "--max-memory-per-child" in _celery_worker_help()


def _celery_worker_help() -> str:
    done = subprocess.run(
        [sys.executable, "-m", "celery", "worker", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout
