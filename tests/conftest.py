"""Shared fixtures: one real local Spark session per test run (per worker), temporary folders.

`make test` runs the suite on two workers, a module at a time (`-n 2 --dist loadscope`): a
module's fixtures are built once, and the DGL distributed tests, all in one module, never run
at once.
"""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)
# The JVMs the tests start (Spark drivers, spark-submit) compile with the JIT's first tier only:
# on the tests' small tables Spark's time goes to compiling its query plans, and a build of
# 400 users took 56-61 CPU-s instead of 104-116 (48-51 s instead of 59-67 s). It changes no result:
# Java's arithmetic is the same in every tier. Production keeps the default JIT (at 1M
# gifts the first tier alone made the build slower: 397 s against 253 s).
os.environ.setdefault("SPARK_SUBMIT_OPTS", "-XX:TieredStopAtLevel=1")


@pytest.fixture(scope="session")
def spark():
    """A real local Spark session, shared by a worker's tests (JVM start-up is the slow part)."""
    from graphbuild.spark import get_spark

    session = get_spark(master="local[2]", app_name="gie-tests",
                        extra_conf={"spark.sql.shuffle.partitions": "4",
                                    "spark.ui.enabled": "false"})
    yield session
    session.stop()
