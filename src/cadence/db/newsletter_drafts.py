"""The stored newsletters' SQL (issue 13 item 1): drafts, their versions, and the lock.

Why the shapes:
- Creating inserts with ON CONFLICT DO NOTHING, so two people creating the same name at once get
  one draft and one clear refusal, never a unique-violation 500.
- An update reads the draft ``FOR UPDATE`` (PostgreSQL; SQLite's BEGIN IMMEDIATE already runs
  writers one at a time), compares the version the editor started from, then writes the new
  version and its history row in the same transaction: a stale save changes nothing.
- Scheduling locks the ``newsletters`` row first and this draft second (operations/newsletters
  .schedule); an update locks the draft and then only *reads* the ``newsletters`` row, so the two
  never wait on each other in opposite orders (no deadlock), and whichever commits second sees
  the other: a save after scheduling is refused, a schedule of a version saved over is refused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from cadence.db.draft_models import NewsletterDraft, NewsletterDraftVersion
from cadence.db.models import Newsletter

__all__ = [
    "all_drafts",
    "delete_draft",
    "draft",
    "draft_history",
    "insert_draft",
    "locked_draft",
    "newsletter_state",
    "newsletter_states",
    "save_version",
]


def draft(session: Session, newsletter_id: str) -> NewsletterDraft | None:
    return session.get(NewsletterDraft, newsletter_id)


def locked_draft(session: Session, newsletter_id: str) -> NewsletterDraft | None:
    """The draft, locked for this transaction (an update or a schedule decides on its version)."""
    query = select(NewsletterDraft).where(NewsletterDraft.id == newsletter_id).execution_options(populate_existing=True)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def all_drafts(session: Session) -> list[NewsletterDraft]:
    return list(session.scalars(select(NewsletterDraft).order_by(NewsletterDraft.id)))


def insert_draft(
    session: Session, newsletter_id: str, document: dict[str, Any], actor: str, now: datetime
) -> NewsletterDraft | None:
    """Version 1 of a new draft and its history row; None if the name is taken (by a draft
    that exists, or one created by a racing request that committed first)."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    values = {
        "id": newsletter_id,
        "version": 1,
        "document": document,
        "created_at": now,
        "created_by": actor[:200],
        "updated_at": now,
        "updated_by": actor[:200],
    }
    statement = insert(NewsletterDraft).values(values).on_conflict_do_nothing(index_elements=["id"])
    # RETURNING rather than rowcount: a row comes back only when one was inserted, alike on both
    # databases (rowcount after ON CONFLICT DO NOTHING was not 0 here on PostgreSQL).
    if session.execute(statement.returning(NewsletterDraft.id)).first() is None:
        return None
    # A draft deleted earlier under the same name left no history (delete_draft), so 1 is free.
    session.add(
        NewsletterDraftVersion(
            newsletter_id=newsletter_id, version=1, document=document, saved_at=now, saved_by=actor[:200]
        )
    )
    session.flush()
    return locked_draft(session, newsletter_id)


def save_version(
    session: Session, row: NewsletterDraft, document: dict[str, Any], actor: str, now: datetime
) -> NewsletterDraft:
    """The next version of a (locked) draft, kept in the history too."""
    row.version += 1
    row.document = document
    row.updated_at, row.updated_by = now, actor[:200]
    session.add(
        NewsletterDraftVersion(
            newsletter_id=row.id, version=row.version, document=document, saved_at=now, saved_by=actor[:200]
        )
    )
    session.flush()
    return row


def draft_history(session: Session, newsletter_id: str) -> list[NewsletterDraftVersion]:
    """Every saved version, newest first."""
    return list(
        session.scalars(
            select(NewsletterDraftVersion)
            .where(NewsletterDraftVersion.newsletter_id == newsletter_id)
            .order_by(NewsletterDraftVersion.version.desc())
        )
    )


def delete_draft(session: Session, newsletter_id: str) -> None:
    """The draft and its history (the audit entry of the delete keeps the last text)."""
    session.execute(delete(NewsletterDraftVersion).where(NewsletterDraftVersion.newsletter_id == newsletter_id))
    session.execute(delete(NewsletterDraft).where(NewsletterDraft.id == newsletter_id))


def newsletter_state(session: Session, newsletter_id: str) -> str | None:
    """The stored state of the scheduled newsletter of this id (None: never scheduled). A plain
    read, no lock: see the module's note on lock order."""
    return session.scalar(select(Newsletter.state).where(Newsletter.id == newsletter_id))


def newsletter_states(session: Session, newsletter_ids: list[str]) -> dict[str, str]:
    if not newsletter_ids:
        return {}
    rows = session.execute(select(Newsletter.id, Newsletter.state).where(Newsletter.id.in_(newsletter_ids)))
    return {newsletter_id: state for newsletter_id, state in rows}
