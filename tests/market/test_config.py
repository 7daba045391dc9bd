"""Settings: offline defaults outside production, every missing name at once in production."""

from __future__ import annotations

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
}


def test_production_names_every_missing_setting_in_one_message():
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"APP_ENV": "production"})
    for name in REQUIRED_IN_PRODUCTION:
        assert name in str(caught.value)


def test_production_refuses_the_firebase_emulator():
    with pytest.raises(ConfigurationError, match="FIREBASE_AUTH_EMULATOR_HOST"):
        load_settings({**PRODUCTION, "FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:9099"})


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
