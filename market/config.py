"""Settings: one frozen object built from the environment (and `.env`), once per process."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from market.errors import ConfigurationError

APP_ENVS = ("development", "test", "production")
MEDIA_STORAGES = ("local", "s3")
# The longest a SigV4 presigned URL may live (seven days).
MAX_PRESIGNED_S = 7 * 24 * 3600
REAL_MERCADOPAGO = "https://api.mercadopago.com"

# Offline defaults for development and test; production must name every one of these.
_OFFLINE_DEFAULTS = {
    "DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/spartan",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "MERCADOPAGO_ACCESS_TOKEN": "TEST-sandbox-token",
    "MERCADOPAGO_WEBHOOK_SECRET": "sandbox-webhook-secret",
    "FIREBASE_PROJECT_ID": "spartan-market-dev",
    "FRONTEND_URL": "http://127.0.0.1:3000",
    # The API's public address: the checkout's back URLs land on its purchase page.
    "PUBLIC_API_URL": "http://127.0.0.1:8000",
}
REQUIRED_IN_PRODUCTION = tuple(_OFFLINE_DEFAULTS)

# Values this repository publishes (dev.env, docker-compose.dev.yml, the sandbox's and the
# benchmarks' defaults): anyone can read them, so production refuses each one, by name.
PUBLIC_DEV_VALUES: dict[str, frozenset[str]] = {
    "MERCADOPAGO_ACCESS_TOKEN": frozenset({"TEST-sandbox-token", "TEST-bench-token"}),
    "MERCADOPAGO_WEBHOOK_SECRET": frozenset({"sandbox-webhook-secret", "bench-webhook-secret"}),
    "FLOWER_BASIC_AUTH": frozenset({"admin:admin"}),
    "METRICS_TOKEN": frozenset({"dev-metrics-token"}),
    "FIREBASE_PROJECT_ID": frozenset({"spartan-market-dev"}),
    "MERCADOPAGO_API_BASE_URL": frozenset(
        {"http://127.0.0.1:8090", "http://localhost:8090", "http://sandbox:8090"}
    ),
    "MERCADOPAGO_WEBHOOK_URL": frozenset(
        {
            "http://127.0.0.1:8000/api/v1/advanced/webhooks/mercadopago",
            "http://web:8000/api/v1/advanced/webhooks/mercadopago",
        }
    ),
    "PUBLIC_API_URL": frozenset({"http://127.0.0.1:8000"}),
    "FRONTEND_URL": frozenset({"http://127.0.0.1:8000", "http://127.0.0.1:3000"}),
    "MEDIA_URL": frozenset({"http://127.0.0.1:8000/media"}),
}
# The sandbox has no place in production: any address of it is a development one.
SANDBOX_ONLY = ("SANDBOX_PUBLIC_URL",)
# Database passwords of the development compose stack.
_DEV_DATABASE_PASSWORDS = frozenset({"postgres"})


def public_dev_values_in(env: Mapping[str, str]) -> list[str]:
    """Names of the settings in `env` that hold a value published by this repository."""
    found = [name for name in SANDBOX_ONLY if name in env]
    for name, published in PUBLIC_DEV_VALUES.items():
        parts = [p.strip().rstrip("/") for p in env.get(name, "").split(",") if p.strip()]
        if any(part in published for part in parts):
            found.append(name)
    if urlsplit(env.get("DATABASE_URL", "")).password in _DEV_DATABASE_PASSWORDS:
        found.append("DATABASE_URL")
    return sorted(found)


def normalise_database_url(url: str) -> str:
    """Return `url` with a psycopg 3 driver, whatever dialect spelling the caller used."""
    for prefix in (
        "postgresql+asyncpg://",
        "postgresql+psycopg2://",
        "postgresql://",
        "postgres://",
    ):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _flag(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from exc


def _floats(env: Mapping[str, str], name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be comma-separated numbers, got {raw!r}") from exc


def _origins(raw: str) -> tuple[str, ...]:
    """The browser origins (`scheme://host[:port]`) of a comma-separated list of URLs."""
    origins = []
    for url in (part.strip() for part in raw.split(",")):
        if not url:
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(
                f"FRONTEND_URL must be comma-separated http(s) URLs, got {url!r}"
            )
        origins.append(f"{parts.scheme}://{parts.netloc}".lower())
    if not origins:
        raise ConfigurationError("FRONTEND_URL names no URL")
    return tuple(dict.fromkeys(origins))


def _media(env: Mapping[str, str]) -> dict[str, object]:
    """MEDIA_STORAGE and, for `s3`, the S3_* settings (bucket required)."""
    # Blank values count as unset (compose passes every optional setting, empty by default).
    storage = (env.get("MEDIA_STORAGE") or "local").lower()
    if storage not in MEDIA_STORAGES:
        raise ConfigurationError(
            f"MEDIA_STORAGE must be one of {', '.join(MEDIA_STORAGES)}, got {storage!r}"
        )
    if storage == "s3" and not env.get("S3_BUCKET"):
        raise ConfigurationError("missing required settings for MEDIA_STORAGE=s3: S3_BUCKET")
    prefix = (env.get("S3_PREFIX") or "").strip("/")
    expires = _int(env, "S3_URL_EXPIRES_S", MAX_PRESIGNED_S)
    if not 1 <= expires <= MAX_PRESIGNED_S:
        raise ConfigurationError(f"S3_URL_EXPIRES_S must be between 1 and {MAX_PRESIGNED_S}")
    public = env.get("S3_PUBLIC_BASE_URL")
    return {
        "media_storage": storage,
        "s3_bucket": env.get("S3_BUCKET") or None,
        "s3_prefix": f"{prefix}/" if prefix else "",
        "s3_endpoint_url": env.get("S3_ENDPOINT_URL") or None,
        "s3_region": env.get("S3_REGION") or None,
        "s3_public_base_url": public.rstrip("/") if public else None,
        "s3_url_expires_s": expires,
        "s3_access_key_id": env.get("S3_ACCESS_KEY_ID") or None,
        "s3_secret_access_key": env.get("S3_SECRET_ACCESS_KEY") or None,
    }


@dataclass(frozen=True)
class Settings:
    """Every setting the processes read; built by `load_settings`."""

    app_env: str
    database_url: str
    redis_url: str
    celery_broker_url: str
    celery_result_backend: str
    # A prefix for every Redis key and broker queue this deployment owns (tests isolate runs).
    key_prefix: str
    # Prefix of the Celery queue names (empty in deployments; tests isolate runs with it).
    celery_queue_prefix: str
    mercadopago_access_token: str
    mercadopago_webhook_secret: str
    mercadopago_webhook_url: str | None
    mercadopago_api_base_url: str
    mercadopago_sandbox: bool
    firebase_project_id: str
    firebase_private_key_id: str | None
    firebase_private_key: str | None
    firebase_client_email: str | None
    firebase_auth_emulator_host: str | None
    frontend_url: str
    public_api_url: str
    media_root: Path
    media_url: str
    flower_basic_auth: str | None
    webhook_allowed_hosts: frozenset[str]
    webhook_retry_schedule: tuple[float, ...]
    provider_retry_schedule: tuple[float, ...]
    purchase_ttl_minutes: int
    log_level: str
    log_json: bool
    # Operations (issue 6): rate limits ("<n>/<period>", flask-limiter syntax), /metrics
    # access, alert thresholds and retention of the purges.
    rate_limit_default: str = "300/minute"
    rate_limit_buy: str = "10/minute"
    rate_limit_spend: str = "30/minute"
    rate_limit_upload: str = "10/minute"
    metrics_token: str | None = None
    alert_error_rate: float = 0.05
    alert_p95_ms: float = 2000.0
    alert_queue_depth: int = 1000
    alert_oldest_message_s: int = 600
    alert_failed_jobs: int = 20
    alert_workers_min: int = 1
    alert_disk_free_pct: float = 10.0
    job_retention_days: int = 30
    notification_retention_days: int = 90
    payment_event_retention_days: int = 30
    delivery_retention_days: int = 30
    # An Idempotency-Key answers repeats this long; then it is purged and is a new request.
    idempotency_key_ttl_hours: int = 24
    # Purchases that expired unpaid are kept this long for the buyer's history, then purged.
    expired_purchase_retention_days: int = 90
    purge_batch_size: int = 1000
    # Avatars (issue 4): the upload limits checked before any decoding.
    avatar_max_bytes: int = 10 * 1024 * 1024
    avatar_max_pixels: int = 4096 * 3072
    # Outgoing webhooks (issue 5): an endpoint is disabled after this many deliveries in a row
    # failed for good, or once every attempt has failed for this many hours; sends per worker
    # task run in a pool of this many threads, each bounded by the two timeouts.
    webhook_disable_after_failures: int = 10
    webhook_disable_after_hours: float = 24.0
    webhook_send_concurrency: int = 8
    webhook_connect_timeout_s: float = 3.0
    webhook_total_timeout_s: float = 10.0
    # Read timeout of each MercadoPago API call (connect: at most 3 s); a task whose call times
    # out retries with backoff, so a hung provider costs a worker this long per attempt.
    mercadopago_timeout_s: float = 10.0
    # Browsers (issue 14): the origins CORS allows (FRONTEND_URL's, in order; the first
    # FRONTEND_URL is the checkout's back-URL base) and the reverse-proxy hops to trust.
    cors_origins: tuple[str, ...] = ()
    trusted_proxies: int = 0
    # Media storage (issue 14): local disk under MEDIA_ROOT, or an S3-compatible bucket.
    # Without S3_ACCESS_KEY_ID boto3 finds credentials its own way (AWS_* variables, roles).
    media_storage: str = "local"
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_public_base_url: str | None = None
    s3_url_expires_s: int = MAX_PRESIGNED_S
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    # Throwaway deployments (test runs, benchmarks) on RabbitMQ: the broker deletes a queue of
    # theirs unused for this many seconds, messages included, so a run that dies leaves
    # nothing behind. 0 (deployments) = never; Redis brokers ignore it.
    celery_queue_expires_s: int = 0

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    @property
    def emulator_mode(self) -> bool:
        return bool(self.firebase_auth_emulator_host)


def load_settings(
    environ: Mapping[str, str] | None = None, *, read_dotenv: bool = True
) -> Settings:
    """Build the settings from `environ` (default: the process environment plus `.env`)."""
    if environ is None:
        if read_dotenv:
            from dotenv import load_dotenv

            # Never overrides what the environment already says.
            load_dotenv(Path.cwd() / ".env", override=False)
        environ = os.environ
    env = {k: v for k, v in environ.items() if v != ""}

    app_env = env.get("APP_ENV", "production")
    if app_env not in APP_ENVS:
        raise ConfigurationError(f"APP_ENV must be one of {', '.join(APP_ENVS)}, got {app_env!r}")
    production = app_env == "production"

    if production:
        missing = [name for name in REQUIRED_IN_PRODUCTION if name not in env]
        firebase_key_parts = ("FIREBASE_PRIVATE_KEY", "FIREBASE_CLIENT_EMAIL")
        if any(name in env for name in firebase_key_parts):
            missing += [name for name in firebase_key_parts if name not in env]
        if missing:
            raise ConfigurationError(
                "missing required settings for APP_ENV=production: " + ", ".join(missing)
            )
        published = public_dev_values_in(env)
        if published:
            raise ConfigurationError(
                "APP_ENV=production refuses values published in this repository (dev.env, the "
                "sandbox, the development compose file); set your own for: " + ", ".join(published)
            )
        if "FIREBASE_AUTH_EMULATOR_HOST" in env:
            raise ConfigurationError(
                "FIREBASE_AUTH_EMULATOR_HOST is set with APP_ENV=production: emulator mode "
                "accepts unsigned and expired tokens; unset it"
            )
        # MercadoPago refuses a preference whose notification_url is not https in production.
        webhook_url = env.get("MERCADOPAGO_WEBHOOK_URL")
        if webhook_url and not webhook_url.lower().startswith("https://"):
            raise ConfigurationError(
                "MERCADOPAGO_WEBHOOK_URL must be https with APP_ENV=production (MercadoPago "
                f"refuses any other notification_url), got {webhook_url!r}"
            )
    else:
        env = {**_OFFLINE_DEFAULTS, **env}

    redis_url = env["REDIS_URL"]
    broker = env.get("CELERY_BROKER_URL", redis_url)
    sandbox_default = REAL_MERCADOPAGO if production else "http://127.0.0.1:8090"
    private_key = env.get("FIREBASE_PRIVATE_KEY")
    if private_key:
        # Keys pasted into one-line environment variables carry literal "\n".
        private_key = private_key.replace("\\n", "\n")

    return Settings(
        app_env=app_env,
        database_url=normalise_database_url(env["DATABASE_URL"]),
        redis_url=redis_url,
        celery_broker_url=broker,
        celery_result_backend=env.get("CELERY_RESULT_BACKEND", redis_url),
        key_prefix=env.get("KEY_PREFIX", "spartan"),
        celery_queue_prefix=env.get("CELERY_QUEUE_PREFIX", ""),
        mercadopago_access_token=env["MERCADOPAGO_ACCESS_TOKEN"],
        mercadopago_webhook_secret=env["MERCADOPAGO_WEBHOOK_SECRET"],
        mercadopago_webhook_url=env.get("MERCADOPAGO_WEBHOOK_URL"),
        mercadopago_api_base_url=env.get("MERCADOPAGO_API_BASE_URL", sandbox_default).rstrip("/"),
        mercadopago_sandbox=_flag(env.get("MERCADOPAGO_SANDBOX"), default=not production),
        firebase_project_id=env["FIREBASE_PROJECT_ID"],
        firebase_private_key_id=env.get("FIREBASE_PRIVATE_KEY_ID"),
        firebase_private_key=private_key,
        firebase_client_email=env.get("FIREBASE_CLIENT_EMAIL"),
        firebase_auth_emulator_host=env.get("FIREBASE_AUTH_EMULATOR_HOST"),
        frontend_url=env["FRONTEND_URL"].split(",")[0].strip().rstrip("/"),
        public_api_url=env.get("PUBLIC_API_URL", _OFFLINE_DEFAULTS["PUBLIC_API_URL"]).rstrip("/"),
        media_root=Path(env.get("MEDIA_ROOT", "var/media")).resolve(),
        media_url=env.get("MEDIA_URL", "/media").rstrip("/"),
        flower_basic_auth=env.get("FLOWER_BASIC_AUTH"),
        webhook_allowed_hosts=frozenset(
            h.strip() for h in env.get("WEBHOOK_ALLOWED_HOSTS", "").split(",") if h.strip()
        ),
        webhook_retry_schedule=_floats(
            env,
            "WEBHOOK_RETRY_SCHEDULE",
            (5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 36000),
        ),
        provider_retry_schedule=_floats(env, "PROVIDER_RETRY_SCHEDULE", (2, 10, 30, 120, 600)),
        purchase_ttl_minutes=_int(env, "PURCHASE_TTL_MINUTES", 60 * 24),
        log_level=env.get("LOG_LEVEL", "INFO").upper(),
        log_json=_flag(env.get("LOG_JSON"), default=production),
        rate_limit_default=env.get("RATE_LIMIT_DEFAULT", "300/minute"),
        rate_limit_buy=env.get("RATE_LIMIT_BUY", "10/minute"),
        rate_limit_spend=env.get("RATE_LIMIT_SPEND", "30/minute"),
        rate_limit_upload=env.get("RATE_LIMIT_UPLOAD", "10/minute"),
        metrics_token=env.get("METRICS_TOKEN"),
        alert_error_rate=_floats(env, "ALERT_ERROR_RATE", (0.05,))[0],
        alert_p95_ms=_floats(env, "ALERT_P95_MS", (2000.0,))[0],
        alert_queue_depth=_int(env, "ALERT_QUEUE_DEPTH", 1000),
        alert_oldest_message_s=_int(env, "ALERT_OLDEST_MESSAGE_S", 600),
        alert_failed_jobs=_int(env, "ALERT_FAILED_JOBS", 20),
        alert_workers_min=_int(env, "ALERT_WORKERS_MIN", 1),
        alert_disk_free_pct=_floats(env, "ALERT_DISK_FREE_PCT", (10.0,))[0],
        job_retention_days=_int(env, "JOB_RETENTION_DAYS", 30),
        notification_retention_days=_int(env, "NOTIFICATION_RETENTION_DAYS", 90),
        # INBOX_RETENTION_DAYS: this setting's name before payment events were renamed.
        payment_event_retention_days=_int(
            env, "PAYMENT_EVENT_RETENTION_DAYS", _int(env, "INBOX_RETENTION_DAYS", 30)
        ),
        delivery_retention_days=_int(env, "DELIVERY_RETENTION_DAYS", 30),
        idempotency_key_ttl_hours=_int(env, "IDEMPOTENCY_KEY_TTL_HOURS", 24),
        expired_purchase_retention_days=_int(env, "EXPIRED_PURCHASE_RETENTION_DAYS", 90),
        purge_batch_size=_int(env, "PURGE_BATCH_SIZE", 1000),
        avatar_max_bytes=_int(env, "AVATAR_MAX_BYTES", 10 * 1024 * 1024),
        avatar_max_pixels=_int(env, "AVATAR_MAX_PIXELS", 4096 * 3072),
        webhook_disable_after_failures=_int(env, "WEBHOOK_DISABLE_AFTER_FAILURES", 10),
        webhook_disable_after_hours=_floats(env, "WEBHOOK_DISABLE_AFTER_HOURS", (24.0,))[0],
        webhook_send_concurrency=_int(env, "WEBHOOK_SEND_CONCURRENCY", 8),
        webhook_connect_timeout_s=_floats(env, "WEBHOOK_CONNECT_TIMEOUT_S", (3.0,))[0],
        webhook_total_timeout_s=_floats(env, "WEBHOOK_TOTAL_TIMEOUT_S", (10.0,))[0],
        mercadopago_timeout_s=_floats(env, "MERCADOPAGO_TIMEOUT_S", (10.0,))[0],
        celery_queue_expires_s=_int(env, "CELERY_QUEUE_EXPIRES_S", 0),
        cors_origins=_origins(env["FRONTEND_URL"]),
        trusted_proxies=_trusted_proxies(env),
        **_media(env),  # type: ignore[arg-type]
    )


def _trusted_proxies(env: Mapping[str, str]) -> int:
    hops = _int(env, "TRUSTED_PROXIES", 0)
    if hops < 0:
        raise ConfigurationError(f"TRUSTED_PROXIES must be 0 or more, got {hops}")
    return hops
