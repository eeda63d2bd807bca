"""Spark session creation: the same job runs under spark-submit or embedded in the CLI."""
from __future__ import annotations

import os
import sys


def get_spark(master: str | None = None, app_name: str = "gie-build-graph",
              extra_conf: dict[str, str] | None = None):
    """Return the active session (spark-submit) or start one (`master`, default local[*])."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ    # spark-submit started the JVM
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    elif ("SPARK_MASTER" not in os.environ and "spark.master" not in os.environ.get(
            "SPARK_SUBMIT_OPTS", "") and not submitted):   # spark-submit's --master must win
        builder = builder.master("local[*]")
    conf = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.ansi.enabled": "false",       # malformed values become null, then rejected
        "spark.driver.memory": os.environ.get("GIE_SPARK_DRIVER_MEMORY", "4g"),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # the stage bar redraws with carriage returns: fine on a terminal, noise in a log file
        "spark.ui.showConsoleProgress": str(sys.stderr.isatty()).lower(),
    }
    if not submitted:    # under spark-submit the JVM runs already, with the user's options
        # The throughput collector for the JVM we start (in local mode it runs every task):
        # the 1M build took 197-225 s instead of 231-253 s with the default G1, whose concurrent
        # marking competes with the tasks for the cores (docs/OPERATIONS.md). "" = JVM default.
        conf["spark.driver.extraJavaOptions"] = os.environ.get("GIE_SPARK_DRIVER_JAVA_OPTIONS",
                                                               "-XX:+UseParallelGC")
    conf.update(extra_conf or {})
    for k, v in conf.items():
        builder = builder.config(k, v)
    session = builder.getOrCreate()
    _quiet_jvm_loggers(session)
    return session


# JVM loggers whose warnings every build would repeat, to no use.
QUIET_JVM_LOGGERS = (
    # Id assignment numbers the day's *new* ids in one global order (graphbuild/idmap.py),
    # which Spark warns about once per plan node; the single partition is intended and
    # bounded by the new ids of one day.
    "org.apache.spark.sql.execution.window.WindowExec",
    # "Truncated the string representation of a plan": our plans are wide by design.
    "org.apache.spark.util.SparkStringUtils",
)


def _quiet_jvm_loggers(session) -> None:
    """Silence QUIET_JVM_LOGGERS below ERROR in the driver's JVM."""
    try:
        jvm = session.sparkContext._jvm
        for name in QUIET_JVM_LOGGERS:
            jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
                name, jvm.org.apache.logging.log4j.Level.ERROR)
    except Exception:  # noqa: BLE001 - logging tweaks must never fail a build
        pass
