"""The ledger's array parameters (db/ledger.py) read back by PostgreSQL exactly as given."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import create_engine, text

from cadence.db.ledger import _array_literal


def test_every_value_the_sent_update_carries_comes_back_from_postgresql_unchanged(postgres_url: str) -> None:
    texts = ['a"b\\c', None, "{x,y}", "NULL", " spaced ", "Zoë, ü", "<d1.ab@x.example>", "", "250 2.0.0 Ok: queued"]
    ints = [0, 7, 2**40]
    stamps = [datetime(2026, 12, 7, 12, 30), datetime(2026, 1, 2, 3, 4, 5, 678), None]
    flags = [True, False]
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT CAST(:t AS text[]), CAST(:i AS bigint[]), CAST(:n AS integer[]),"
                    " CAST(:s AS timestamp[]), CAST(:f AS boolean[])"
                ),
                {
                    "t": _array_literal(texts),
                    "i": _array_literal(ints),
                    "n": _array_literal([1, -1]),
                    "s": _array_literal(stamps),
                    "f": _array_literal(flags),
                },
            ).one()
    finally:
        engine.dispose()
    assert list(row) == [texts, ints, [1, -1], stamps, flags]
