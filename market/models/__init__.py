"""All models, imported so that `Base.metadata` knows every table."""

from market.models.base import Base
from market.models.credits import (
    CreditPackage,
    IdempotencyKey,
    LedgerAccount,
    LedgerAccountTotal,
    LedgerEntry,
    LedgerTransaction,
    Purchase,
)
from market.models.jobs import Job, JobStep
from market.models.media import MediaFile
from market.models.notifications import Notification
from market.models.operations import (
    AlertState,
    AlertThreshold,
    AlertThresholdChange,
    DailyAnalytics,
    DailyUserAnalytics,
    RowCount,
)
from market.models.payments import (
    MercadoPagoPayment,
    PaymentEvent,
    PaymentRefund,
    PurchaseTransition,
    SyncCursor,
)
from market.models.users import PrivacySettings, Profile, User
from market.models.webhooks import WebhookDelivery, WebhookDeliveryAttempt, WebhookEndpoint

__all__ = [
    "AlertState",
    "AlertThreshold",
    "AlertThresholdChange",
    "Base",
    "CreditPackage",
    "DailyAnalytics",
    "DailyUserAnalytics",
    "IdempotencyKey",
    "Job",
    "JobStep",
    "LedgerAccount",
    "LedgerAccountTotal",
    "LedgerEntry",
    "LedgerTransaction",
    "MediaFile",
    "MercadoPagoPayment",
    "Notification",
    "PaymentEvent",
    "PaymentRefund",
    "PrivacySettings",
    "Profile",
    "Purchase",
    "PurchaseTransition",
    "RowCount",
    "SyncCursor",
    "User",
    "WebhookDelivery",
    "WebhookDeliveryAttempt",
    "WebhookEndpoint",
]
