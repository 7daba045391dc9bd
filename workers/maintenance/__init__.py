"""Tasks of the `maintenance` queue, one module per concern: the periodic jobs of
beat_schedule.py. Task names stay `maintenance.<verb>_<object>` whichever module holds them;
the payment sweeps, which start settlement workflows, are in workflows/sweeps.py.

Exactly one `celery beat` runs (one Procfile entry; `replicas: 1` in docker-compose). Should
a second one ever run, each periodic task that must not overlap holds a Redis lock named
after it while it runs (locks.py), and every one of them is idempotent anyway.
"""
