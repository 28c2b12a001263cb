"""Fixtures shared by several test modules, and the session's thread count."""

import logging

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:  # noqa: ARG001
    """One torch thread for the whole session, as in a training process (one core each): tests that train or time
    do not compete for the machine's cores with each other or with a campaign running beside them."""
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread():
    """Back to one thread after a test whose code under test sets its own count (e.g. a Slurm task without
    ``threads`` takes every core), so the setting never leaks into the tests after it."""
    yield
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.fixture
def quiet():
    """Sacred logs every run at INFO through SEML's rich handler; hundreds of runs of that dominate a test's time."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    yield
    root.setLevel(level)
