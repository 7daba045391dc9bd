"""The operators' alert rules (deploy/prometheus/alerts.yml) under `promtool test rules`, the
example prometheus.yml under `promtool check config`, and a runbook entry for every alert."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.ops.prometheus import DEPLOY, RUNBOOK, alert_names, load, promtool

REQUIRED = {
    "SpartanHighErrorRate",
    "SpartanWebhookToCreditLagHigh",
    "SpartanPaymentInboxStuck",
    "SpartanLedgerParityBroken",
    "SpartanNoWorkerAnswering",
    "SpartanBeatHeartbeatMissing",
    "SpartanWebhookDeliveryFailures",
    "SpartanMediaDiskNearlyFull",
}


def test_the_rules_pass_their_unit_tests():
    done = promtool("test", "rules", "alerts_test.yml", cwd=DEPLOY)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_unit_tests_catch_a_wrong_threshold(tmp_path: Path):
    """The same tests against rules with one threshold changed fail: they can fail."""
    shutil.copy(DEPLOY / "alerts_test.yml", tmp_path)
    rules = (DEPLOY / "alerts.yml").read_text()
    assert "spartan:http_error_ratio:rate5m > 0.05" in rules
    broken = rules.replace(
        "spartan:http_error_ratio:rate5m > 0.05", "spartan:http_error_ratio:rate5m > 0.5"
    )
    (tmp_path / "alerts.yml").write_text(broken)
    done = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert done.returncode != 0
    assert "SpartanHighErrorRate" in done.stdout + done.stderr


def test_every_required_alert_exists_and_fires_and_stays_quiet_in_a_test():
    names = alert_names()
    assert set(names) >= REQUIRED, REQUIRED - set(names)
    assert len(names) == len(set(names))
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in load("alerts_test.yml")["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert set(names) <= fired, f"never seen firing: {set(names) - fired}"
    assert set(names) <= quiet, f"never seen quiet: {set(names) - quiet}"


def test_the_example_config_is_valid(tmp_path: Path):
    """prometheus.yml as shipped, beside its rules and the token file it names."""
    for name in ("prometheus.yml", "alerts.yml"):
        shutil.copy(DEPLOY / name, tmp_path)
    (tmp_path / "metrics-token").write_text("example-token\n")
    done = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_every_alert_has_a_runbook_entry():
    text = RUNBOOK.read_text()
    for rule in (r for group in load("alerts.yml")["groups"] for r in group["rules"]):
        if "alert" not in rule:
            continue
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor == rule["alert"].lower()
        assert f"### {rule['alert']}" in text, f"docs/operations.md lacks {rule['alert']}"
