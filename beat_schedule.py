"""The periodic jobs: one table. Every entry expires, so missed runs are dropped, not piled up.

Tasks are named by string; exactly one `celery beat` runs (see Procfile).
"""

from __future__ import annotations

from typing import Any

MINUTE = 60.0

SCHEDULE: dict[str, dict[str, Any]] = {
    "resend-stale-jobs": {
        "task": "maintenance.resend_stale_jobs",
        "schedule": 5 * MINUTE,
        "options": {"expires": 4 * MINUTE},
    },
}
