"""Tables of the newsletters authored through the API and console (issue 13 item 1).

In a module of their own beside ``models.py`` (same ``Base``, same naming convention), as
``staff_models.py`` is, so the drafts' tables sit with the one module that writes them,
``db/newsletter_drafts.py``. Migration 0009 creates them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cadence.db.models import Base, BigId, UTCDateTime


class NewsletterDraft(Base):
    """A stored newsletter: its id (the same name space as newsletter files and the
    ``newsletters`` rows: ``deliveries.campaign_id`` carries it) and its current text.

    ``document`` holds the fields a newsletter file has (subject, preheader, Markdown body,
    audience, send_at, based_on...), validated by core/newsletter_draft.py before it is saved.
    ``version`` counts saves: an update names the version it was based on and is refused when
    another save came first (optimistic concurrency: nobody overwrites a text they never saw).
    Once scheduled, the ``newsletters`` row of the same id holds the locked version and its
    state; the draft is then read-only."""

    __tablename__ = "newsletter_drafts"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    document: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str] = mapped_column(String(200), default="")


class NewsletterDraftVersion(Base):
    """Every saved version of a draft, the current one included (its history)."""

    __tablename__ = "newsletter_draft_versions"
    __table_args__ = (UniqueConstraint("newsletter_id", "version"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    newsletter_id: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    document: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    saved_at: Mapped[datetime] = mapped_column(UTCDateTime)
    saved_by: Mapped[str] = mapped_column(String(200), default="")
