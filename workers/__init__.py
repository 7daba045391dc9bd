"""Celery side: the app, queue routing, the task base class and one task module per queue."""
