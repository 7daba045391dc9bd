"""Planned jobs: a job whose ids are chosen in Python before it is written, so its rows can be
written in the statement of whatever they belong to (the webhook's event: one statement)
and its chain sent from those ids, with nothing read back."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    CTE,
    Boolean,
    Integer,
    String,
    Uuid,
    bindparam,
    column,
    func,
    insert,
    literal,
    null,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement

from market.jobs import StepSpec
from market.models import Job, JobStep
from market.models.base import utcnow


@dataclass(frozen=True)
class PlannedJob:
    """A job whose ids are chosen before it is written: its row and its steps' rows can then
    be written in one statement (beside whatever they belong to) and its chain sent from
    here, with nothing read back."""

    id: uuid.UUID
    kind: str
    subject: str | None
    steps: tuple[StepSpec, ...]
    task_ids: tuple[str, ...]


def plan_job(*, kind: str, steps: Sequence[StepSpec], subject: str | None = None) -> PlannedJob:
    """A job id and one Celery task id per step, chosen now (no database)."""
    return PlannedJob(
        id=uuid.uuid4(),
        kind=kind,
        subject=subject,
        steps=tuple(steps),
        task_ids=tuple(str(uuid.uuid4()) for _ in steps),
    )


def insert_planned(*, when: CTE, owner: ColumnElement[Any] | None) -> tuple[CTE, CTE]:
    """The INSERTs of a planned job and of its steps, as CTEs for the caller's statement: each
    writes its rows only if `when` yields a row (e.g. an INSERT … ON CONFLICT DO NOTHING
    RETURNING that did insert). `owner`: an expression giving the user (NULL: none yet).

    A template: every value is a bind parameter (`planned_params` gives them), so the caller
    can build its statement once, SQLAlchemy compiles it once and psycopg prepares it on a
    connection that repeats it. The steps go as ONE JSON parameter expanded by PostgreSQL,
    so the text is the same whatever the number of steps."""
    at = bindparam("job_at", type_=Job.created_at.type)
    job = (
        insert(Job)
        .from_select(
            ["id", "kind", "owner_id", "state", "subject", "created_at", "updated_at"],
            select(
                bindparam("job_id", type_=Uuid),
                bindparam("job_kind", type_=String),
                owner if owner is not None else null(),
                literal("queued", String),
                bindparam("job_subject", type_=String),
                at,
                at,
            ).select_from(when),
            include_defaults=False,
        )
        .returning(Job.id)
        .cte("planned_job")
    )
    rows = (
        func.jsonb_to_recordset(bindparam("job_steps", type_=JSONB))
        .table_valued(
            column("position", Integer),
            column("name", String),
            column("task_name", String),
            column("kwargs", JSONB),
            column("task_id", String),
            column("moves_money", Boolean),
        )
        .render_derived(name="planned_steps", with_types=True)
    )
    steps = (
        insert(JobStep)
        .from_select(
            ["job_id", "position", "name", "task_name", "kwargs", "task_id", "moves_money"],
            select(
                job.c.id,
                rows.c.position,
                rows.c.name,
                rows.c.task_name,
                rows.c.kwargs,
                rows.c.task_id,
                rows.c.moves_money,
            ).select_from(job.join(rows, true())),
            # The other columns take their server defaults (pending, no attempts): Python
            # defaults would be binds named after columns, which clash with the caller's.
            include_defaults=False,
        )
        .cte("planned_job_steps")
    )
    return job, steps


def planned_params(planned: PlannedJob) -> dict[str, Any]:
    """The values of `insert_planned`'s bind parameters for this job."""
    if not planned.steps:
        raise ValueError("a job has at least one step")
    return {
        "job_id": planned.id,
        "job_kind": planned.kind,
        "job_subject": planned.subject,
        "job_at": utcnow(),
        "job_steps": [
            {
                "position": i,
                "name": spec.name,
                "task_name": spec.task_name,
                "kwargs": spec.kwargs,
                "task_id": task_id,
                "moves_money": spec.moves_money,
            }
            for i, (spec, task_id) in enumerate(zip(planned.steps, planned.task_ids, strict=True))
        ],
    }
