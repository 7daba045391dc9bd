"""The web process imports only what web requests need (issue 17, memory): Pillow,
firebase-admin and the MercadoPago SDK (with requests) load on first use, never when the app
factory runs, and Celery's worker machinery never loads in a process that only sends tasks.
Checked in a fresh
interpreter, since this test process has imported everything already."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from sandbox.token import mint
from webapp import create_app

def heavy():
    return sorted(
        m for m in sys.modules
        if m.split('.')[0] in {heavy!r} or m.startswith('celery.worker')
    )

app = create_app()
seen = {{"factory": heavy()}}
client = app.test_client()
assert client.get('/api/v1/advanced/credits/packages').status_code == 200
seen["anonymous_read"] = heavy()
project = app.extensions["spartan.settings"].firebase_project_id
auth = {{"Authorization": "Bearer " + mint("lazy-probe", project_id=project)}}
assert client.get('/api/v1/advanced/credits/me', headers=auth).status_code == 200
seen["authenticated_read"] = heavy()
assert client.get('/api/v1/profile/avatar/options', headers=auth).status_code == 200
seen["avatar_options"] = heavy()
print(json.dumps(seen))
"""

HEAVY = ("PIL", "firebase_admin", "mercadopago", "requests")


def _loaded_by_factory(media_root: Path) -> dict[str, list[str]]:
    # Its own media root and cache keys: the preset avatars (and the cached options) are
    # made, with Pillow, on first use, whatever this run's other tests left behind.
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MEDIA_ROOT": str(media_root),
        "KEY_PREFIX": os.environ["KEY_PREFIX"] + "lazy",
    }
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=set(HEAVY))],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def loaded(database: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    # A media root of its own: the preset avatars are drawn (with Pillow) at first use.
    return _loaded_by_factory(tmp_path_factory.mktemp("media"))


@pytest.mark.parametrize("module", HEAVY)
def test_the_web_app_factory_does_not_import(loaded, module):
    assert not [m for m in loaded["factory"] if m.split(".")[0] == module]
    assert not [m for m in loaded["anonymous_read"] if m.split(".")[0] == module]


def test_the_web_process_never_loads_celerys_worker_machinery(loaded):
    # Celery's Django fix-up imported celery.worker (the consumer, pools, state) at app
    # creation; the web only publishes (workers/app.py turns fix-ups off).
    for stage in ("factory", "anonymous_read", "authenticated_read", "avatar_options"):
        assert not [m for m in loaded[stage] if m.startswith("celery.worker")], stage


def test_firebase_admin_loads_with_the_first_token_and_pillow_with_the_first_image(loaded):
    assert "firebase_admin.auth" in loaded["authenticated_read"]
    assert "PIL.Image" not in loaded["authenticated_read"]
    assert "PIL.Image" in loaded["avatar_options"]  # presets are drawn at first use
