"""Settings: offline defaults outside production, every missing name at once in production."""

from __future__ import annotations

from pathlib import Path

import pytest

from market.config import REQUIRED_IN_PRODUCTION, load_settings, normalise_database_url
from market.errors import ConfigurationError

PRODUCTION = {
    "APP_ENV": "production",
    "DATABASE_URL": "postgresql://app:secret@db.internal/spartan",
    "REDIS_URL": "redis://cache.internal:6379/0",
    "MERCADOPAGO_ACCESS_TOKEN": "APP_USR-123",
    "MERCADOPAGO_WEBHOOK_SECRET": "s3cret",
    "FIREBASE_PROJECT_ID": "spartan-prod",
    "FRONTEND_URL": "https://spartan.market",
    "PUBLIC_API_URL": "https://api.spartan.market",
}


def test_production_names_every_missing_setting_in_one_message():
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"APP_ENV": "production"})
    for name in REQUIRED_IN_PRODUCTION:
        assert name in str(caught.value)


def test_production_refuses_the_firebase_emulator():
    with pytest.raises(ConfigurationError, match="FIREBASE_AUTH_EMULATOR_HOST"):
        load_settings({**PRODUCTION, "FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:9099"})


def test_production_refuses_a_plain_http_webhook_url():
    with pytest.raises(ConfigurationError, match="MERCADOPAGO_WEBHOOK_URL must be https"):
        load_settings({**PRODUCTION, "MERCADOPAGO_WEBHOOK_URL": "http://spartan.market/hook"})
    url = "https://spartan.market/api/v1/advanced/webhooks/mercadopago"
    assert load_settings({**PRODUCTION, "MERCADOPAGO_WEBHOOK_URL": url}).mercadopago_webhook_url


def test_production_defaults_to_the_real_mercadopago_api():
    settings = load_settings(PRODUCTION)
    assert settings.mercadopago_api_base_url == "https://api.mercadopago.com"
    assert settings.mercadopago_sandbox is False
    assert settings.database_url == "postgresql+psycopg://app:secret@db.internal/spartan"
    assert settings.celery_broker_url == PRODUCTION["REDIS_URL"]


def test_a_half_configured_service_account_is_refused():
    with pytest.raises(ConfigurationError, match="FIREBASE_CLIENT_EMAIL"):
        load_settings({**PRODUCTION, "FIREBASE_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----"})


def test_unset_app_env_means_production():
    with pytest.raises(ConfigurationError, match="APP_ENV=production"):
        load_settings({})


def test_development_fills_offline_defaults():
    settings = load_settings({"APP_ENV": "development"})
    assert settings.mercadopago_api_base_url == "http://127.0.0.1:8090"
    assert settings.mercadopago_sandbox is True


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://u:p@h/db",
        "postgresql://u:p@h/db",
        "postgres://u:p@h/db",
        "postgresql+psycopg://u:p@h/db",
    ],
)
def test_database_urls_are_normalised_to_psycopg(url):
    assert normalise_database_url(url) == "postgresql+psycopg://u:p@h/db"


def test_bad_values_are_named():
    with pytest.raises(ConfigurationError, match="APP_ENV"):
        load_settings({"APP_ENV": "staging"})
    with pytest.raises(ConfigurationError, match="PURCHASE_TTL_MINUTES"):
        load_settings({"APP_ENV": "test", "PURCHASE_TTL_MINUTES": "soon"})


# dev.env entries that are not secrets, addresses or credentials (or are refused elsewhere).
HARMLESS_DEV_SETTINGS = {
    "APP_ENV",  # production is what is being tested
    "FIREBASE_AUTH_EMULATOR_HOST",  # refused on its own (test above)
    "MERCADOPAGO_SANDBOX",  # MercadoPago's own test mode, legitimate on a staging deployment
    "MEDIA_ROOT",
    "WEBHOOK_ALLOWED_HOSTS",
    "WEB_HOST",
    "BEAT_SCHEDULE_FILE",
    "POSTGRES_PASSWORD",  # read by compose, not the app: refused inside DATABASE_URL (below)
}


def _dev_env() -> dict[str, str]:
    root = Path(__file__).resolve().parents[2]
    pairs = (
        line.split("=", 1)
        for line in (root / "dev.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    return {name: value for name, value in pairs}


@pytest.mark.parametrize(
    ("name", "value"),
    sorted((n, v) for n, v in _dev_env().items() if n not in HARMLESS_DEV_SETTINGS),
)
def test_production_refuses_each_public_dev_value_by_name(name, value):
    with pytest.raises(ConfigurationError) as caught:
        load_settings({**PRODUCTION, name: value})
    assert name in str(caught.value)


def test_production_names_every_public_dev_value_at_once():
    dev = {
        "MERCADOPAGO_ACCESS_TOKEN": "TEST-sandbox-token",
        "MERCADOPAGO_WEBHOOK_SECRET": "sandbox-webhook-secret",
        "FLOWER_BASIC_AUTH": "admin:admin",
        "MERCADOPAGO_API_BASE_URL": "http://sandbox:8090/",
        "DATABASE_URL": "postgresql+psycopg://spartan:postgres@postgres:5432/spartan",
        "FRONTEND_URL": "https://spartan.market,http://127.0.0.1:3000",
    }
    with pytest.raises(ConfigurationError) as caught:
        load_settings({**PRODUCTION, **dev})
    for name in dev:
        assert name in str(caught.value)
    for value in dev.values():
        assert value not in str(caught.value)  # names, never the values themselves


def test_production_accepts_values_of_its_own():
    own = {
        "FLOWER_BASIC_AUTH": "ops:9f1c2e",
        "METRICS_TOKEN": "c0ffee",
        "MERCADOPAGO_WEBHOOK_URL": "https://api.spartan.market/api/v1/advanced/webhooks/mercadopago",
        "PUBLIC_API_URL": "https://api.spartan.market",
    }
    assert load_settings({**PRODUCTION, **own}).is_production
