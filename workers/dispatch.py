"""Sending a job's steps to the broker as one chain of immutable signatures."""

from __future__ import annotations

from celery import chain

from market.models import Job
from workers.app import app


def send_job(job: Job) -> None:
    """Send the job's unfinished steps, in order, with their pre-assigned task ids."""
    signatures = [
        app.signature(step.task_name, kwargs=step.kwargs, immutable=True).set(task_id=step.task_id)
        for step in job.steps
        if step.state in ("pending", "running")
    ]
    if signatures:
        chain(*signatures).apply_async()


def revoke(task_ids: list[str]) -> None:
    app.control.revoke(task_ids)
