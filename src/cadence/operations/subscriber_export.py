"""Export subscribers for staff (issue 13 item 4): everyone, or those a search finds, as CSV or
JSON lines, streamed (cadence.db.subscriber_search), with one audit entry."""

from __future__ import annotations

import csv
import json
from datetime import date, datetime
from typing import Literal, TextIO

from sqlalchemy.orm import Session

from cadence.db import subscriber_search as sql
from cadence.db.audit import record_audit
from cadence.db.models import Subscriber
from cadence.operations.subscriber_tools import SubscriberFilter, matching


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# OWASP "CSV Injection": a cell starting with one of these is a formula to Excel, LibreOffice
# and Google Sheets (``=HYPERLINK(...)`` in a first name leaks the sheet; DDE runs commands).
# Names, attributes and even addresses (``=x@example.com`` is a valid address) come from
# subscribers and imported files, so every CSV cell, the header included, gets a leading
# apostrophe when it starts with one. The JSON lines export is data for programs: unchanged.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    """`value` made inert for a spreadsheet (see above)."""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


EXPORT_COLUMNS = (
    "email",
    "first_name",
    "status",
    "timezone",
    "source",
    "created_at",
    "confirmed_at",
    "unsubscribed_at",
    "tags",
)


def export_subscribers(
    session: Session,
    wanted: SubscriberFilter,
    today: date,
    out: TextIO,
    *,
    fmt: Literal["csv", "json"],
    actor: str,
    now: datetime,
) -> int:
    """Write every subscriber `wanted` finds to `out` as CSV (one column per attribute) or JSON
    lines, streaming; returns how many. CSV needs the attribute names for its header: a first
    streamed pass collects them (a few dozen names, not the rows)."""
    attribute_names: list[str] = []
    if fmt == "csv":
        seen: set[str] = set()
        for subscriber in matching(session, wanted, today):
            seen.update(subscriber.attributes)
        attribute_names = sorted(seen - set(EXPORT_COLUMNS))
    writer = csv.writer(out) if fmt == "csv" else None
    if writer is not None:
        writer.writerow([csv_cell(name) for name in (*EXPORT_COLUMNS, *attribute_names)])
    count = 0
    chunk: list[Subscriber] = []

    def flush() -> None:
        tags = sql.tags_of(session, [s.id for s in chunk])
        for s in chunk:
            row = {
                "email": s.email,
                "first_name": s.first_name,
                "status": s.status,
                "timezone": s.timezone or "",
                "source": s.source,
                "created_at": s.created_at.isoformat(),
                "confirmed_at": _iso(s.confirmed_at) or "",
                "unsubscribed_at": _iso(s.unsubscribed_at) or "",
            }
            if writer is not None:
                attrs = [str(s.attributes.get(name, "")) for name in attribute_names]
                # Tags as "a,b": what `subscribers import` reads back as tags (issue 13 trial).
                cells = (*row.values(), ",".join(tags[s.id]), *attrs)
                writer.writerow([csv_cell(cell) for cell in cells])
            else:
                out.write(
                    json.dumps({**row, "tags": tags[s.id], "attributes": s.attributes}, ensure_ascii=False) + "\n"
                )
        chunk.clear()

    for subscriber in matching(session, wanted, today):
        chunk.append(subscriber)
        count += 1
        if len(chunk) >= sql.STREAM_CHUNK:
            flush()
    flush()
    record_audit(
        session,
        actor=actor,
        action="subscribers.export",
        target="subscribers",
        detail={"format": fmt, "count": count, "filter": wanted.describe()},
        now=now,
    )
    return count
