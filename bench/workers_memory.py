"""6. Workers: resident memory of each process after the other benchmarks warmed them up.

The project's Celery worker (parent and its two prefork children) against the bare no-op
worker of the same settings; the project's gunicorn master and workers against the baseline
app's, under the same gunicorn settings.
"""

from __future__ import annotations

import psutil

from bench.context import Context
from bench.harness import Proc

NAME = "memory"
MB = 2**20


def _tree(proc: Proc) -> list[tuple[str, float]]:
    """(role, RSS in MB) of the process and each of its children."""
    try:
        root = psutil.Process(proc.pid)
        children = root.children(recursive=True)
        found = [("parent", root.memory_info().rss / MB)]
        found += [(f"child {i + 1}", c.memory_info().rss / MB) for i, c in enumerate(children)]
    except psutil.Error:
        return []
    return found


def _by_name(ctx: Context, name: str) -> Proc | None:
    return next((p for p in ctx.stack.procs if p.name == name), None)


def run(ctx: Context) -> None:
    pairs = (("celery worker", "worker", "noop"), ("gunicorn", "web", "baseline"))
    details = {}
    for label, project_name, baseline_name in pairs:
        project, baseline = _by_name(ctx, project_name), _by_name(ctx, baseline_name)
        if project is None:
            continue
        mine = _tree(project)
        theirs = dict(_tree(baseline)) if baseline is not None else {}
        for role, rss in mine:
            ctx.results.add(
                NAME,
                f"{label} {role} RSS",
                rss,
                theirs.get(role),
                unit="MB",
                higher_is_better=False,
                # Issue 17: a web worker within 1.5x of the bare Flask app's.
                target=1.5 if label == "gunicorn" and role != "parent" else None,
            )
        details[label] = {"project": dict(mine), "baseline": theirs}
    ctx.results.details[NAME] = details
