"""The benchmark harness's own logic: fast checks, no servers (the figures belong to bench/)."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from bench import avatars, harness
from bench.baseline_apps import WEBHOOK_PATH, baseline_app
from sandbox.mercadopago import sign


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert harness.percentile(values, 50) == 50
    assert harness.percentile(values, 99) == 99
    assert harness.percentile([7.0], 99) == 7


def test_request_line_refuses_what_the_lua_parser_cannot_split():
    line = harness.request_line("POST", "/p?a=1", {"x-signature": "ts=1,v1=ab"}, '{"a":1}')
    assert line == 'POST|/p?a=1|x-signature=ts=1,v1=ab|{"a":1}'
    with pytest.raises(ValueError):
        harness.request_line("POST", "/p", {}, '{"a":"x|y"}')


def test_ratio_and_target_follow_the_direction_of_better():
    results = harness.Results()
    faster = results.add("b", "throughput", 60, 100, target=0.5)
    slower = results.add("b", "latency", 30, 10, higher_is_better=False, target=2)
    assert (faster.ratio, faster.met) == (0.6, True)
    assert (slower.ratio, slower.met) == (3.0, False)
    assert "MISS" in results.table()
    assert json.loads(json.dumps(results.as_json({}, 1.0)))["rows"][1]["met"] is False


def test_baseline_webhook_checks_the_same_signature(monkeypatch):
    monkeypatch.setenv("MERCADOPAGO_WEBHOOK_SECRET", "s3cret")
    client = baseline_app().test_client()
    ts = "1700000000000"
    path = f"{WEBHOOK_PATH}?data.id=42&type=payment"
    signed = {"x-request-id": "r-1", "x-signature": sign("s3cret", "42", "r-1", ts)}
    forged = {"x-request-id": "r-1", "x-signature": sign("other", "42", "r-1", ts)}
    monkeypatch.setattr("time.time", lambda: 1700000000.0)
    assert client.post(path, json={}, headers=signed).status_code == 200
    assert client.post(path, json={}, headers=forged).status_code == 401


def test_minimal_pipeline_renders_what_the_project_renders():
    out = io.BytesIO()
    Image.linear_gradient("L").resize((640, 480)).convert("RGB").save(out, format="JPEG")
    data = out.getvalue()
    project, minimal = avatars.project(data), avatars.minimal(data)
    assert project.keys() == minimal.keys()
    for name in project:
        assert (
            Image.open(io.BytesIO(project[name])).size == Image.open(io.BytesIO(minimal[name])).size
        )
