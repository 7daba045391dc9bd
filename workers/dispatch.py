"""Sending a job's steps to the broker as one chain of immutable signatures."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from celery import chain

from market.job_plans import PlannedJob
from market.models import Job
from workers.app import app


def send_steps(steps: Iterable[tuple[str, dict[str, Any], str]]) -> None:
    """Send (task name, kwargs, task id) steps, in order, as one chain: one broker publish
    (the first step's message carries the rest).

    `ignore_result`: nobody waits on a step's result (steps record what they did in the job
    rows), and without it the Redis result backend SUBSCRIBEs to the result before the
    publish and UNSUBSCRIBEs after it: two more round trips on the sender's path.
    """
    signatures = [
        app.signature(task_name, kwargs=kwargs, immutable=True).set(task_id=task_id)
        for task_name, kwargs, task_id in steps
    ]
    if signatures:
        chain(*signatures).apply_async(ignore_result=True)


def send_job(job: Job) -> None:
    """Send the job's unfinished steps, in order, with their pre-assigned task ids."""
    send_steps(
        (step.task_name, step.kwargs, step.task_id)
        for step in job.steps
        if step.state in ("pending", "running")
    )


def send_planned(job: PlannedJob) -> None:
    """Send a planned job's steps, from the ids chosen before it was written (no read back)."""
    send_steps(
        (spec.task_name, spec.kwargs, task_id)
        for spec, task_id in zip(job.steps, job.task_ids, strict=True)
    )


def revoke(task_ids: list[str]) -> None:
    app.control.revoke(task_ids)
