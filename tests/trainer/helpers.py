"""Helpers for the trainer tests: small data files, spec builders, job polling (shared with the other suites
through tests/support)."""

from __future__ import annotations

from tests.support.data import QUICK_CANDIDATES, sms_subset, text_spec  # noqa: F401 - re-exported
from tests.support.jobs import submit, wait_job  # noqa: F401 - re-exported

FAST_CANDIDATES = QUICK_CANDIDATES
