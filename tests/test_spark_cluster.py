"""The packaged build on a real Spark standalone cluster (a master and two workers, separate
JVMs on 127.0.0.1), submitted as a user would: `make dist`'s files copied to a job folder
outside the repository, relative paths, `spark-submit --py-files`; the reference is the
README's local command, `bin/spark-submit --master local[2]`, from a shell without the venv."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from gie.layout import dated
from graphbuild.config import BuildConfig
from graphbuild.synthetic import GenConfig, generate
from tests.graph_compare import assert_same_graph
from tests.spark_cluster import (SPARK_HOME, cluster_env, listening, process_names,
                                 process_tree, standalone_cluster)

ROOT = Path(__file__).resolve().parents[1]
GEN = GenConfig(users=400, streamers=40, days=4, format="csv", seed=3)
DATE = "2025-05-04"                       # the generator's last day
CFG = BuildConfig(window_days=4, shuffle_partitions=2, vocab_slots=4, s2s_topk=5, u2u_topk=5)
JVM_OPTS = os.environ.get("SPARK_SUBMIT_OPTS", "")   # the tests' JIT setting (tests/conftest.py)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """`make dist` (bin/make_dist.py) into a folder outside the repository."""
    out = tmp_path_factory.mktemp("dist")
    run = subprocess.run([sys.executable, str(ROOT / "bin" / "make_dist.py"), "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    return out


def test_dist_holds_wheel_zip_and_entry_point(dist, tmp_path):
    """Every module of the zip imports in a fresh interpreter that sees only the zip and the
    installed dependencies (no checkout on its path, run from elsewhere)."""
    names = sorted(p.name for p in dist.iterdir())
    assert names == ["build_graph.py", "gie-0.1.0-py3-none-any.whl", "gie-0.1.0-pyfiles.zip"]
    zipped = dist / "gie-0.1.0-pyfiles.zip"
    with zipfile.ZipFile(zipped) as z:
        modules = [n[:-3].replace("/", ".").removesuffix(".__init__") for n in z.namelist()
                   if n.endswith(".py")]
    assert {"cli", "gie.pipeline.nightly", "graphbuild.job", "gie.expand.run"} <= set(modules)
    code = ("import importlib, sys; mods = sys.argv[1:]\n"
            "for m in mods: importlib.import_module(m)\n"
            "import gie; print(gie.__file__)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-c", code, *modules], cwd=tmp_path, text=True,
                         capture_output=True, timeout=240, env={**env, "PYTHONPATH": str(zipped)})
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == f"{zipped}/gie/__init__.py"


def readme_local_build(raw: Path, out: Path, config: Path) -> subprocess.CompletedProcess:
    """The README's command, `bin/spark-submit --master local[2] spark_jobs/build_graph.py`,
    from a shell without the venv: not activated, no PYSPARK_*, a stale SPARK_HOME, and a
    `python3` on PATH that lacks pyspark."""
    venv_bin = str(Path(sys.executable).parent)
    path = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and d != venv_bin]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")
           and not k.startswith(("PYSPARK_", "SPARK_"))}
    env.update(PATH=os.pathsep.join(path + ["/usr/bin", "/bin"]), SPARK_HOME="/nonexistent",
               GIE_SPARK_DRIVER_MEMORY="1g", SPARK_SUBMIT_OPTS=JVM_OPTS)
    return subprocess.run(
        ["bin/spark-submit", "--master", "local[2]", "--conf", "spark.ui.enabled=false",
         "spark_jobs/build_graph.py", "--raw", str(raw), "--out", str(out), "--date", DATE,
         "--config", str(config)], capture_output=True, text=True, timeout=600, cwd=ROOT,
        env=env)


@pytest.mark.slow
def test_build_on_standalone_cluster_equals_local(dist, tmp_path):
    job = tmp_path / "job"                    # the user's job folder: dist files, raw, output
    job.mkdir()
    for p in dist.iterdir():
        (job / p.name).write_bytes(p.read_bytes())
    generate(job / "raw", GEN)
    (job / "build.yaml").write_text(yaml.safe_dump({"build": CFG.model_dump(mode="json")}))
    local = readme_local_build(job / "raw", tmp_path / "local", job / "build.yaml")
    assert local.returncode == 0, local.stderr[-3000:]
    # Spark sends the Python driver's stderr to its stdout
    assert f"from {ROOT / 'gie'} on Spark" in local.stdout and "master local[2]" in local.stdout

    with standalone_cluster(tmp_path / "cluster") as cluster:
        env = {k: v for k, v in cluster_env().items() if k != "PYTHONPATH"}
        env.update(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
        cmd = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", cluster.url,
               "--py-files", "gie-0.1.0-pyfiles.zip",
               "--conf", "spark.driver.host=127.0.0.1",
               "--conf", "spark.driver.bindAddress=127.0.0.1",
               "--conf", "spark.ui.enabled=false", "--conf", "spark.executor.memory=640m",
               "--conf", f"spark.executor.extraJavaOptions={JVM_OPTS}",
               "--driver-memory", "1g",
               "build_graph.py", "--raw", "raw", "--out", "graph", "--date", DATE,
               "--config", "build.yaml"]
        t0 = time.monotonic()
        with open(tmp_path / "submit.log", "w") as log:
            proc = subprocess.Popen(cmd, cwd=job, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            seen: set[str] = set()
            programs: set[str] = set()             # run by the workers: daemons, executors
            try:
                while proc.poll() is None and time.monotonic() - t0 < 420:
                    seen |= listening(cluster.pids() + process_tree(proc.pid))
                    programs |= process_names(cluster.pids())
                    time.sleep(0.5)
            finally:
                if proc.poll() is None:                # its own process group: ours to end
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        out = (tmp_path / "submit.log").read_text()
        assert proc.returncode == 0, out[-4000:] + cluster.log_tail()
        apps = cluster.state()["completedapps"]
        executors = sorted(p.relative_to(tmp_path / "cluster").parts[0]
                           for p in (tmp_path / "cluster").glob("worker*/app-*/*") if p.is_dir())

    assert len(apps) == 1 and apps[0]["state"] == "FINISHED"
    assert executors == ["worker0", "worker1"]                  # both workers ran an executor
    assert seen == {"127.0.0.1"}, seen           # daemons, executors and the driver
    # the build is Spark SQL only: executors start no Python workers (docs/OPERATIONS.md)
    assert not [p for p in programs if p.startswith("python")], programs
    # the driver ran the shipped package, not a checkout
    assert f"from {job / 'gie-0.1.0-pyfiles.zip'}/gie on Spark" in out, out[-4000:]
    assert_same_graph(dated(job / "graph", DATE), dated(tmp_path / "local", DATE))
