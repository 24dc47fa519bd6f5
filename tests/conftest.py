"""Shared test configuration: hypothesis profiles.

``HOTPLUMB_PROFILE=thorough`` runs many more examples; the default is ``ci``.
Under it the slow tests (the property tests among them) get
``THOROUGH_TIMEOUT`` seconds instead of the configured per-test timeout, which
is sized for the ``ci`` profile.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("HOTPLUMB_PROFILE", "ci")
THOROUGH_TIMEOUT = 3600

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(PROFILE)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if PROFILE != "thorough":
        return
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.timeout(THOROUGH_TIMEOUT))
