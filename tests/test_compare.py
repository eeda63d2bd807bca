"""`cli.py compare`: same content whatever the part-file names and row order; the first real
difference is named, with its place; timings, hosts, environments and absolute paths are
ignored, and differing environments are named beside a difference."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from gie import environment
from gie.errors import BadInputError
from gie.pipeline.compare import (differences, environment_differences,
                                  first_difference)
from tests.train_helpers import cli


def _table(ids, vectors) -> pa.Table:
    return pa.table({"node_id": pa.array(ids, pa.int64()),
                     "embedding": pa.array([list(v) for v in vectors], pa.list_(pa.float32()))})


def _output(folder, run: str, rows=None, seconds=1.0, flip=False, env=None):
    """A small output folder: a Spark-style table in two parts, a JSON and a model file."""
    ids = np.arange(6)
    vec = np.arange(12, dtype=np.float32).reshape(6, 2) / 7
    order = ids[::-1] if flip else ids                      # another row order and split
    t = _table(order, vec[order])
    (folder / "nodes").mkdir(parents=True)
    pq.write_table(t.slice(0, 2), folder / "nodes" / f"part-00000-{run}.parquet")
    pq.write_table(t.slice(2), folder / "nodes" / f"part-00001-{run}.parquet")
    meta = {"counts": {"nodes": 6}, "seconds": seconds, "timings_s": {"total": seconds},
            "graph": f"/somewhere/{run}/graph", "created_at": run,
            "history": [{"loss": 0.5, "edges_per_s": 10 * seconds}],
            "environment": env or environment.describe()}
    (folder / "metadata.json").write_text(json.dumps(meta))
    torch.save({"state_dict": {"w": torch.arange(4.0)}, "raw_ids": {"user": ids},
                "config": {"lr": 0.1}, "seconds": seconds}, folder / "model.pt")
    (folder / "report.md").write_text(f"# Report\n\nseed 7, {seconds:.1f}s.\n\n| a | 0.5000 |\n")
    (folder / "_SUCCESS").write_text("")
    (folder / ".staging-x").mkdir()                          # leftovers are not content
    os.symlink("nodes", folder / "latest")
    return folder


def test_same_content_in_other_parts_rows_paths_and_timings(tmp_path):
    a = _output(tmp_path / "a", "run1")
    b = _output(tmp_path / "b", "run2", seconds=7.5, flip=True)
    (b / ".staging-x" / "junk").write_text("x")
    assert list(differences(a, b)) == []
    run = cli("compare", str(a), str(b))
    assert run.returncode == 0 and "same:" in run.stdout, run.stderr[-2000:]


@pytest.mark.parametrize("change, where", [
    ("row", "nodes: column 'embedding', row 4"),
    ("json", "metadata.json: .history[0].loss: 0.5 in A, 0.25 in B"),
    ("tensor", "model.pt: .state_dict.w[2]: 2.0 in A, 9.0 in B"),
    ("markdown", "report.md: line 5 differs"),
    ("missing", "model.pt: only in A"),
    ("link", "latest: link to 'nodes' in A, 'elsewhere' in B"),
    ("schema", "nodes: schemas differ"),
])
def test_first_difference_is_named_with_its_place(tmp_path, change, where):
    a = _output(tmp_path / "a", "run1")
    b = _output(tmp_path / "b", "run2")
    if change == "row":
        t = pq.read_table(b / "nodes" / "part-00001-run2.parquet").to_pydict()
        t["embedding"][2][1] = np.nextafter(np.float32(t["embedding"][2][1]), np.float32(9))
        pq.write_table(_table(t["node_id"], t["embedding"]),
                       b / "nodes" / "part-00001-run2.parquet")
    elif change == "json":
        meta = json.loads((b / "metadata.json").read_text())
        meta["history"][0]["loss"] = 0.25
        (b / "metadata.json").write_text(json.dumps(meta))
    elif change == "tensor":
        torch.save({"state_dict": {"w": torch.tensor([0.0, 1.0, 9.0, 3.0])},
                    "raw_ids": {"user": np.arange(6)}, "config": {"lr": 0.1}},
                   b / "model.pt")
    elif change == "markdown":
        (b / "report.md").write_text("# Report\n\nseed 7, 1.0s.\n\n| a | 0.5001 |\n")
    elif change == "missing":
        (b / "model.pt").unlink()
    elif change == "link":
        (b / "latest").unlink()
        os.symlink("elsewhere", b / "latest")
    else:
        shutil.rmtree(b / "nodes")
        (b / "nodes").mkdir()
        pq.write_table(pa.table({"node_id": pa.array(range(6), pa.int32())}),
                       b / "nodes" / "part-0.parquet")
    diff = first_difference(a, b)
    assert diff is not None and str(diff).startswith(where), str(diff)
    run = cli("compare", str(a), str(b))
    assert run.returncode == 5, run.stderr[-2000:]
    assert run.stdout.startswith(f"differ: {where}"), run.stdout


def test_missing_input_is_bad_input(tmp_path):
    with pytest.raises(BadInputError, match="does not exist"):
        first_difference(tmp_path / "nope", tmp_path)
    assert cli("compare", str(tmp_path / "nope"), str(tmp_path)).returncode == 2


def test_environments_are_named_beside_a_difference_not_counted_as_one(tmp_path):
    here = environment.describe()
    assert here["packages"]["numpy"] == np.__version__ and "torch" in here["packages"]
    assert "AVX2" in here["cpu"]["vector_extensions"] or here["cpu"]["machine"] != "x86_64"
    assert here["kernels"]["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    other = json.loads(json.dumps(here))
    other["packages"]["numpy"] = "1.0.0"
    other["cpu"]["vector_extensions"] = ["SSE41"]
    a = _output(tmp_path / "a", "run1")
    b = _output(tmp_path / "b", "run2", env=other)
    assert list(differences(a, b)) == [] and cli("compare", str(a), str(b)).returncode == 0
    expected = [f"cpu.vector_extensions: {here['cpu']['vector_extensions']} in A, ['SSE41'] in B"
                " (first in metadata.json)",
                f"packages.numpy: {np.__version__} in A, 1.0.0 in B (first in metadata.json)"]
    assert environment_differences(a, b) == expected
    assert environment_differences(a / "metadata.json", b / "metadata.json") == expected
    (b / "report.md").write_text("# Report\n\nseed 8\n")
    run = cli("compare", str(a), str(b))
    assert run.returncode == 5, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith("differ: report.md") and "environments differ" in lines[1]
    assert [line.strip() for line in lines[2:]] == expected
