"""The API's blueprints, one module each; `BLUEPRINTS` is the order they are registered in."""

from webapp.api.alerts import blp as alerts
from webapp.api.analytics import blp as analytics
from webapp.api.avatar_upload import blp as avatar_upload
from webapp.api.cache_admin import blp as cache_admin
from webapp.api.credits import blp as credits
from webapp.api.health import blp as health
from webapp.api.media_files import blp as media_files
from webapp.api.metrics import blp as metrics
from webapp.api.metrics import prometheus_blp as prometheus
from webapp.api.mp_webhooks import blp as mp_webhooks
from webapp.api.notifications import blp as notifications
from webapp.api.profile import blp as profile
from webapp.api.purchase_status import blp as purchase_status
from webapp.api.purchase_status import return_blp as purchase_return
from webapp.api.purchases import blp as purchases
from webapp.api.tasks import blp as tasks
from webapp.api.users import blp as users
from webapp.api.webhook_endpoints import blp as webhook_endpoints

BLUEPRINTS = (
    health,
    tasks,
    cache_admin,
    metrics,
    prometheus,
    alerts,
    analytics,
    credits,
    purchase_status,
    purchase_return,
    mp_webhooks,
    purchases,
    notifications,
    webhook_endpoints,
    profile,
    users,
    avatar_upload,
    media_files,
)
