"""Shared fixtures: one real local Spark session per test run, temporary folders."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)


@pytest.fixture(scope="session")
def spark():
    """A real local Spark session, shared by all tests (JVM start-up is the slow part)."""
    from graphbuild.spark import get_spark

    session = get_spark(master="local[2]", app_name="gie-tests",
                        extra_conf={"spark.sql.shuffle.partitions": "4",
                                    "spark.ui.enabled": "false"})
    yield session
    session.stop()
