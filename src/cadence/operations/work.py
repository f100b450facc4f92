"""One transaction per operation call: what a door opens around the operations it calls, without
importing the database layer itself (doors translate; the store is below the operations)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from cadence.db.session import transaction

__all__ = ["Session", "transaction"]
