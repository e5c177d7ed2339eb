"""The one clock format of the project: UTC, ISO 8601, whole seconds (cards, runs, locks)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> str:
    """Returns the current UTC time as an ISO 8601 string, e.g. ``2026-12-01T07:35:24+00:00``."""
    return datetime.now(UTC).isoformat(timespec="seconds")
