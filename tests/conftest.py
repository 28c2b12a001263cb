"""Fixtures shared by several test modules."""

import logging

import pytest


@pytest.fixture
def quiet():
    """Sacred logs every run at INFO through SEML's rich handler; hundreds of runs of that dominate a test's time."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    yield
    root.setLevel(level)
