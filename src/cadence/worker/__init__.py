"""Celery plumbing below the tasks: the filesystem broker of the zero-setup default. The Celery
app and its tasks stay in ``cadence/tasks.py``, so ``celery -A cadence.tasks`` keeps working."""
