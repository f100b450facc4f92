"""Signed link tokens: the fast id-only path writes exactly what itsdangerous would, purposes
never cross, and tampered or foreign tokens are refused with one message."""

from __future__ import annotations

import pytest
from itsdangerous import Signer

from cadence.core.tokens import check_link_signature, link_signature, make_token, read_token
from cadence.errors import TokenError

KEY = "test-secret-key-0123456789abcdef"


@pytest.mark.parametrize(("purpose", "payload"), [("unsubscribe", [12, 345]), ("preferences", 7), ("webview", 99)])
def test_id_tokens_are_itsdangerous_signatures_and_round_trip(purpose: str, payload: int | list[int]) -> None:
    token = make_token(KEY, purpose, payload)  # type: ignore[arg-type]
    value = "-".join(map(str, payload)) if isinstance(payload, list) else str(payload)
    assert token == Signer(KEY, salt=f"cadence.{purpose}").sign(value).decode()
    assert read_token(KEY, purpose, token) == payload  # type: ignore[arg-type]


def test_a_token_of_one_purpose_or_key_is_refused_for_another() -> None:
    token = make_token(KEY, "preferences", 7)
    for purpose, key in (("unsubscribe", KEY), ("webview", KEY), ("preferences", "another-key-0123456789abcdef")):
        with pytest.raises(TokenError, match="not valid"):
            read_token(key, purpose, token)  # type: ignore[arg-type]
    with pytest.raises(TokenError, match="not valid"):
        read_token(KEY, "preferences", token.replace("7.", "8.", 1))


def test_link_signatures_check_and_differ_by_purpose_and_ids() -> None:
    signature = link_signature(KEY, "click", 5, 9)
    assert check_link_signature(KEY, "click", signature, 5, 9)
    assert not check_link_signature(KEY, "open", signature, 5, 9)
    assert not check_link_signature(KEY, "click", signature, 5, 10)
    assert len(signature) == 16
