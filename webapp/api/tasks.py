"""Background jobs: their state, steps and result; cancellation; the caller's active jobs."""

from __future__ import annotations

import uuid
from typing import Any

import marshmallow as ma
from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from market import jobs
from market.models import Job
from webapp import db
from webapp.auth import current_user, login_required
from webapp.errors import ProblemSchema
from workflows import base as workflows

blp = Blueprint(
    "tasks", __name__, url_prefix="/api/v1/advanced/tasks", description="Background jobs"
)


ERROR = "Why it failed, in a short message safe to show users"
ERROR_CODE = "A stable code for the failure (`internal-error`, `invalid-image`, `timed-out`, ...)"
ERROR_DETAIL = "Administrators only: the failure's details (exception text, provider answers)"


class StepSchema(ma.Schema):
    name = ma.fields.String()
    state = ma.fields.String()
    started_at = ma.fields.DateTime(allow_none=True)
    finished_at = ma.fields.DateTime(allow_none=True)
    error = ma.fields.String(allow_none=True, metadata={"description": ERROR})
    error_code = ma.fields.String(allow_none=True, metadata={"description": ERROR_CODE})
    error_detail = ma.fields.String(allow_none=True, metadata={"description": ERROR_DETAIL})
    attempts = ma.fields.Integer()


class JobSchema(ma.Schema):
    id = ma.fields.UUID()
    kind = ma.fields.String()
    state = ma.fields.String(
        metadata={"enum": ["queued", "running", "succeeded", "failed", "cancelled"]}
    )
    steps = ma.fields.List(ma.fields.Nested(StepSchema))
    result = ma.fields.Dict(allow_none=True)
    error = ma.fields.String(allow_none=True, metadata={"description": ERROR})
    error_code = ma.fields.String(allow_none=True, metadata={"description": ERROR_CODE})
    error_detail = ma.fields.String(allow_none=True, metadata={"description": ERROR_DETAIL})
    created_at = ma.fields.DateTime()
    updated_at = ma.fields.DateTime()


class _Shown:
    """A job or step as a non-admin sees it: every attribute but the error details.

    marshmallow leaves out a field whose attribute is missing, so `error_detail` is absent
    from the answer rather than null.
    """

    def __init__(self, record: Any) -> None:
        self._record = record

    def __getattr__(self, name: str) -> Any:
        if name == "error_detail":
            raise AttributeError(name)
        value = getattr(self._record, name)
        return [_Shown(step) for step in value] if name == "steps" else value


def shown(job: Job, *, details: bool) -> Any:
    """What the viewer may see of `job`: admins get the error details, others do not."""
    return job if details else _Shown(job)


def status_url(job: Job) -> str:
    return url_for("tasks.TaskById", task_id=job.id)


def accepted(job: Job, **extra: Any) -> tuple[dict[str, Any], int, dict[str, str]]:
    """The 202 answer for work that runs in the background."""
    url = status_url(job)
    return {"task_id": job.id, "status_url": url, **extra}, 202, {"Location": url}


@blp.route("")
class Tasks(MethodView):
    @login_required
    @blp.response(200, JobSchema(many=True))
    def get(self) -> list[Job]:
        """Jobs still queued or running: the caller's, or everyone's for an admin."""
        user = current_user()
        active = jobs.list_active_jobs(db.session(), owner_id=None if user.is_admin else user.id)
        return [shown(job, details=user.is_admin) for job in active]


@blp.route("/<uuid:task_id>")
class TaskById(MethodView):
    @login_required
    @blp.etag
    @blp.response(200, JobSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def get(self, task_id: uuid.UUID) -> Any:
        """A job's state, steps, result or error (owner or admin). Poll with If-None-Match.

        A failure shows a stable `error_code` and a short safe `error`; administrators also
        see `error_detail`.
        """
        user = current_user()
        job = jobs.get_visible_job(db.session(), task_id, viewer_id=user.id, is_admin=user.is_admin)
        return shown(job, details=user.is_admin)

    @login_required
    @blp.response(200, JobSchema, description="The job, now `cancelled`")
    @blp.alt_response(404, schema=ProblemSchema)
    @blp.alt_response(409, schema=ProblemSchema, description="Finished, or money already moved")
    def delete(self, task_id: uuid.UUID) -> Any:
        """Cancel a job that can still be cancelled; 409 once it finished or moved money.

        Cancelling is not deleting: the job stays readable (GET) with `state: cancelled`.
        """
        user = current_user()
        session = db.session()
        job = jobs.get_visible_job(session, task_id, viewer_id=user.id, is_admin=user.is_admin)
        job = jobs.get_job(session, job.id, lock=True)
        workflows.cancel(session, job)
        session.commit()
        return shown(job, details=user.is_admin)
