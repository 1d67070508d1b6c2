"""The suite's own set-up (``tests/conftest.py``)."""

from __future__ import annotations

import os

import pytest


def test_dev_cluster_tests_share_one_worker(request: pytest.FixtureRequest) -> None:
    """Under pytest-xdist every test on the dev Slurm cluster is in one group, run by one worker: jobs of two tests
    on its one node waited for each other past their deadlines. pytest-xdist applies the group as a suffix of
    the node id; pytest 9.2 moved node ids where pytest-xdist 3.8 no longer reaches them, and the grouping was
    silently lost."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        pytest.skip("not under pytest-xdist")
    dev = [item for item in request.session.items if "dev_cluster" in item.fixturenames
           or getattr(getattr(item, "callspec", None), "params", {}).get("profile") == "dev"]
    if not dev:
        pytest.skip("no dev-cluster test selected")
    assert all(item.nodeid.endswith("@dev_cluster") for item in dev), [item.nodeid for item in dev][:3]
