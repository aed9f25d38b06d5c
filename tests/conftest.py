"""Shared pytest fixtures."""

from pathlib import Path

import pytest
from support import SHARED


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real test photos and clips (../shared/data beside the repo); skips the test when they are absent."""
    if not SHARED.is_dir():
        pytest.skip(f"shared test data not found at {SHARED}")
    return SHARED
