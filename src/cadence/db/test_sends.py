"""The SQL of test sends: how many test emails went out lately. No table of its own: every test
send is an audit entry (``campaign.send_test``) carrying its recipient count, so the per-hour
cap counts what the audit log already holds, for every door alike."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cadence.db.models import AuditEntry

TEST_SEND_ACTIONS = ("campaign.send_test", "newsletter.send_test")


def test_recipients_since(session: Session, since: datetime) -> int:
    """Test emails sent (one per recipient) since `since`, by anyone, for any campaign. The
    audit log's index on ``at`` keeps this to the last hour's rows."""
    total = 0
    for detail in session.scalars(
        select(AuditEntry.detail).where(AuditEntry.at >= since, AuditEntry.action.in_(TEST_SEND_ACTIONS))
    ):
        count = detail.get("sent", 0) if isinstance(detail, dict) else 0
        total += count if isinstance(count, int) else 0
    return total
