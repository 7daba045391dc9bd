"""Domain errors. The web layer maps each to a problem+json answer (webapp/errors.py)."""


class MarketError(Exception):
    """Base of every domain error; `status` and `slug` give its HTTP shape."""

    status = 400
    slug = "bad-request"
    title = "Bad request"
    # Headers the answer must carry (a 401's challenge); none by default.
    headers: dict[str, str] = {}

    def __init__(self, detail: str = "", **extra: object) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


class NotFoundError(MarketError):
    status, slug, title = 404, "not-found", "Not found"


class ConflictError(MarketError):
    status, slug, title = 409, "conflict", "Conflict"


class ValidationError(MarketError):
    status, slug, title = 422, "validation-error", "Invalid input"


class InsufficientCreditsError(ConflictError):
    slug, title = "insufficient-credits", "Not enough credits"


class NotCancellableError(ConflictError):
    slug, title = "not-cancellable", "The job can no longer be cancelled"


class IdempotencyKeyReusedError(MarketError):
    status, slug, title = (
        422,
        "idempotency-key-reused",
        "Idempotency-Key reused with another request",
    )


class PreconditionFailedError(MarketError):
    status, slug, title = 412, "precondition-failed", "The resource changed since it was read"


class UploadTooLargeError(MarketError):
    status, slug, title = 413, "upload-too-large", "The file is too large"


class UnsupportedMediaTypeError(MarketError):
    status, slug, title = 415, "unsupported-media-type", "The file is not an allowed image type"


class InvalidImageError(MarketError):
    status, slug, title = 422, "invalid-image", "The image cannot be used"


class ProviderError(MarketError):
    """A provider refused the request for good: not worth retrying."""

    status, slug, title = 502, "provider-error", "The payment provider refused the request"


class ProviderTransientError(ProviderError):
    """A provider timed out, answered 5xx or 429, or the connection dropped: retry later."""

    status, slug, title = 503, "provider-unavailable", "The payment provider is unavailable"


class DestinationRefusedError(MarketError):
    """An outgoing webhook URL resolves to an address we must not call (SSRF guard)."""

    status, slug, title = 422, "destination-refused", "The webhook destination is not allowed"


class ConfigurationError(Exception):
    """Settings are missing or contradictory; the process must not start."""


class ServiceUnavailableError(MarketError):
    """A dependency the answer needs (e.g. Redis for shared metrics) is unreachable."""

    status, slug, title = 503, "service-unavailable", "A dependency is unavailable"


class StorageUnavailableError(ServiceUnavailableError):
    """The media storage (an S3-compatible bucket) is unreachable or failing: retry later."""

    status, slug, title = 503, "storage-unavailable", "The media storage is unavailable"


class WebhookSignatureError(MarketError):
    """An incoming provider notification is unsigned, badly signed or stale."""

    status, slug, title = 401, "invalid-signature", "The notification signature is not valid"
    # The challenge names what authenticates here: MercadoPago's x-signature, not a bearer.
    headers = {"WWW-Authenticate": 'x-signature realm="mercadopago"'}
