"""Transactional emails (a signup's confirmation, the emailed manage and data links) through the
one send path: a ``kind='transactional'`` row in the ledger, sent by the drip's send path
(retries, rate limit, DKIM, bounce mapping, one Message-ID per row; issue 12).

Two steps, because a send task must never see an uncommitted row:

1. :func:`queue_transactional` adds the row inside the caller's transaction (the signup's own,
   when the caller has one) and returns its id;
2. after the commit, :func:`hand_over` gives the ids to whoever sends them: a worker (a send
   task, like the tick's) or, with the single-machine defaults, this process at once
   (``Settings.send_transactional_in_web`` says which and why).

:func:`send_transactional` does both for a door that has no transaction of its own open.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from cadence.clock import wall_now
from cadence.core.transactional_mail import MESSAGES, TransactionalMessage
from cadence.db.session import transaction
from cadence.db.transactional import insert_transactional
from cadence.errors import InputError
from cadence.operations import enrollment
from cadence.operations.runtime import Runtime

__all__ = [
    "hand_over",
    "queue_transactional",
    "send_transactional",
]

log = logging.getLogger(__name__)

# A process's runtime holds one transport (one SMTP connection): the web's request threads that
# send here take turns.
_SENDING_HERE = threading.Lock()

def queue_transactional(
    session: Session, *, message: TransactionalMessage, subscriber_id: int, form: str, now: datetime
) -> int:
    """Queue `message` to subscriber `subscriber_id` (for a confirmation, of the signup on `form`,
    whose copy says what they asked for), due at business time `now`; the delivery's id. Call :func:`hand_over`
    with it once `session`'s transaction has committed. No link is stored: the send path
    rebuilds it from the subscriber and the secret key (db/transactional.py)."""
    if message not in MESSAGES:
        raise InputError(f"message: {message!r} is not one of {', '.join(MESSAGES)}")
    return insert_transactional(
        session,
        message=message,
        subscriber_id=subscriber_id,
        form=form,
        now=now,
        wall_now=wall_now(),
    )


def hand_over(runtime: Runtime, delivery_ids: Sequence[int]) -> None:
    """After the commit: a send task for `delivery_ids` (``runtime.enqueue``), or, when this
    process has none, send them here now through ``enrollment.deliver``, the worker's own function
    (same claim, lease, render, transport and ledger). Never raises: a
    row that could not be handed over or sent is queued still, and the scheduler gives it to a
    worker (after one lease if it was counted as enqueued; at its retry time if it failed)."""
    ids = list(delivery_ids)
    if not ids:
        return
    try:
        if runtime.enqueue is not None:
            runtime.enqueue(ids)
        else:
            with _SENDING_HERE:
                outcome = enrollment.deliver(runtime, ids)
            if outcome.sent < len(ids):
                # Ids and counts only: a refusal quotes the address, and logs must not keep one that
                # an erase is meant to remove (issue 10). The reason is in the ledger row.
                log.warning(
                    "transactional email not sent now (deliveries %s): %d retrying, %d failed, %d skipped",
                    ids,
                    outcome.retrying,
                    outcome.failed,
                    outcome.skipped,
                )
    except Exception:  # the caller (a web request's background task) must survive a broken transport
        log.exception("transactional deliveries %s not handed over; the scheduler will retry them", ids)


def send_transactional(
    runtime: Runtime,
    message: TransactionalMessage,
    subscriber_id: int,
    form: str,
) -> int:
    """:func:`queue_transactional` in its own transaction, then :func:`hand_over`; the
    delivery's id. The business time is read from the runtime's clock."""
    with transaction(runtime.settings.database_url) as session:
        delivery_id = queue_transactional(
            session,
            message=message,
            subscriber_id=subscriber_id,
            form=form,
            now=runtime.clock.now(),
        )
    hand_over(runtime, [delivery_id])
    return delivery_id
