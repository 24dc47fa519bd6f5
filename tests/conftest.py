"""Shared test configuration: hypothesis profiles.

``HOTPLUMB_PROFILE=thorough`` runs many more examples; the default is ``ci``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HOTPLUMB_PROFILE", "ci"))
