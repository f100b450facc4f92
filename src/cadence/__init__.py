"""Cadence: email newsletters and drip campaigns, sent by Celery workers."""

from __future__ import annotations

__version__ = "0.1.0"
