"""Suppression keys for tests that import or add subscribers without a web server."""

from __future__ import annotations

from cadence.core.suppression_keys import SuppressionKeys

TEST_KEYS = SuppressionKeys.from_secrets("test-suppression-secret-0123456789")
