"""Staff tags from the console's subscriber profile (issue 14): add and remove one tag.

A stand-in for the subscriber tools of issue 13 (tags, search, export, erase, suppress), which
the console calls instead once they land; same table (subscriber_tags), same audit actions.
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy.orm import Session

from cadence.db import console as store
from cadence.db.audit import record_audit
from cadence.errors import InputError, NotFound

# Lowercase words joined by - or _ ("met-at-expo-2026"): tags are typed into audience filters.
_TAG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")


def check_tag(tag: str) -> str:
    tag = tag.strip().lower()
    if not _TAG.match(tag):
        raise InputError("tag: use lowercase letters, digits, - and _ (up to 100), e.g. met-at-expo-2026")
    return tag


def tag_subscriber(session: Session, subscriber_id: int, tag: str, *, actor: str, now: datetime) -> bool:
    """Add `tag`; False if the subscriber had it already (then nothing is logged)."""
    tag = check_tag(tag)
    if store.subscriber(session, subscriber_id) is None:
        raise NotFound(f"no subscriber with id {subscriber_id}")
    added = store.add_tag(session, subscriber_id, tag, now)
    if added:
        record_audit(
            session,
            actor=actor,
            action="subscriber.tagged",
            target=f"subscriber:{subscriber_id}",
            detail={"tag": tag},
            now=now,
        )
    return added


def untag_subscriber(session: Session, subscriber_id: int, tag: str, *, actor: str, now: datetime) -> bool:
    tag = check_tag(tag)
    removed = store.remove_tag(session, subscriber_id, tag)
    if removed:
        record_audit(
            session,
            actor=actor,
            action="subscriber.untagged",
            target=f"subscriber:{subscriber_id}",
            detail={"tag": tag},
            now=now,
        )
    return removed
