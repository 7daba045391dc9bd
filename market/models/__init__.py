"""All models, imported so that `Base.metadata` knows every table."""

from market.models.base import Base
from market.models.credits import (
    CreditPackage,
    IdempotencyKey,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    MercadoPagoNotification,
    MercadoPagoPayment,
    PaymentRefund,
    Purchase,
)
from market.models.jobs import Job, JobStep
from market.models.media import MediaFile
from market.models.notifications import Notification
from market.models.operations import AlertState, DailyAnalytics, DailyUserAnalytics
from market.models.users import PrivacySettings, Profile, User
from market.models.webhooks import WebhookDelivery, WebhookDeliveryAttempt, WebhookEndpoint

__all__ = [
    "AlertState",
    "Base",
    "CreditPackage",
    "DailyAnalytics",
    "DailyUserAnalytics",
    "IdempotencyKey",
    "Job",
    "JobStep",
    "LedgerAccount",
    "LedgerEntry",
    "LedgerTransaction",
    "MediaFile",
    "MercadoPagoNotification",
    "MercadoPagoPayment",
    "Notification",
    "PaymentRefund",
    "PrivacySettings",
    "Profile",
    "Purchase",
    "User",
    "WebhookDelivery",
    "WebhookDeliveryAttempt",
    "WebhookEndpoint",
]
