"""Shared building blocks: config, atomic publish, work layout, graph and embedding readers."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import cli
from gie import sorting
from gie.config import load_config, parse_overrides
from gie.embeddings import read_embeddings, write_embeddings
from gie.errors import EXIT_BAD_INPUT, BadInputError
from gie.layout import WorkLayout, dates_under, parse_date
from gie.publish import atomic_symlink, clean_staging, is_published, staged_output
from graphbuild.dataset import load_graph
from graphbuild.schema import GRAPH_EDGES
from tests.graph_fixtures import make_graph_dataset


def test_overrides_parse_yaml_scalars_into_nested_sections():
    assert parse_overrides(["train.epochs=3", "expand.recall_floor=0.5", "seed=7"]) == {
        "train": {"epochs": 3}, "expand": {"recall_floor": 0.5}, "seed": 7}
    with pytest.raises(BadInputError, match="not of the form"):
        parse_overrides(["train.epochs"])


def test_config_file_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("seed: 3\ntrain:\n  epochs: 5\n")
    cfg = load_config(f, ["train.epochs=2"])
    assert (cfg.seed, cfg.train.epochs) == (3, 2)
    with pytest.raises(BadInputError, match="train"):
        load_config(f, ["train.no_such_key=1"])
    with pytest.raises(BadInputError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    f.write_text("train: [unclosed\n")
    with pytest.raises(BadInputError, match="not valid YAML"):
        load_config(f)


def test_staged_output_publishes_atomically_and_failure_leaves_previous(tmp_path):
    final = tmp_path / "out" / "dt=2025-05-01"
    with staged_output(final) as stage:
        (stage / "data.txt").write_text("v1")
        assert not final.exists()
    assert is_published(final) and (final / "data.txt").read_text() == "v1"

    with pytest.raises(RuntimeError):
        with staged_output(final) as stage:
            (stage / "data.txt").write_text("half")
            raise RuntimeError("crash mid-write")
    assert (final / "data.txt").read_text() == "v1"
    assert [p.name for p in final.parent.iterdir()] == ["dt=2025-05-01"]

    with staged_output(final) as stage:
        (stage / "other.txt").write_text("v2")
    assert sorted(p.name for p in final.iterdir()) == ["_SUCCESS", "other.txt"]


def test_clean_staging_and_symlink(tmp_path):
    (tmp_path / ".staging-x-1-abc").mkdir()
    (tmp_path / "dt=2025-05-01").mkdir()
    assert [p.name for p in clean_staging(tmp_path)] == [".staging-x-1-abc"]
    atomic_symlink(tmp_path / "latest", "dt=2025-05-01")
    atomic_symlink(tmp_path / "latest", "dt=2025-05-01")
    assert os.readlink(tmp_path / "latest") == "dt=2025-05-01"
    assert dates_under(tmp_path) == ["2025-05-01"]


def test_layout_and_dates(tmp_path):
    lay = WorkLayout(tmp_path)
    assert lay.bundle("2025-05-02") == tmp_path / "bundle" / "dt=2025-05-02"
    assert parse_date("2025-05-02").day == 2
    for bad in ("2025-5-2", "2025-02-30", ""):
        with pytest.raises(BadInputError):
            parse_date(bad)


def test_load_graph_roundtrip_and_errors(tmp_path):
    path, truth = make_graph_dataset(tmp_path / "g", n_users=50, n_streamers=12)
    g = load_graph(path)
    assert g.num_nodes("user") == 50 and g.num_nodes("streamer") == 12
    assert g.raw_ids["user"][0] == 1000 and g.features["user"].dtype == np.float32
    assert set(g.edges) == {"gift", "watch", "s2s", "u2u"}
    assert g.modality_mask.shape == (12, 3)
    assert g.features["user"].flags.writeable        # torch shares it instead of copying

    # A caller naming the columns it needs gets those, equal to a whole read, in the same order.
    few = load_graph(path, edge_columns={"watch": ("weight",), "gift": ()})
    assert set(few.edges["watch"].data) == {"weight"} and few.edges["gift"].data == {}
    for et in ("gift", "watch"):
        np.testing.assert_array_equal(few.edges[et].src, g.edges[et].src)
        np.testing.assert_array_equal(few.edges[et].dst, g.edges[et].dst)
    np.testing.assert_array_equal(few.edges["watch"].data["weight"], g.edges["watch"].data["weight"])
    assert set(few.edges["u2u"].data) == {"score", "rank"}
    assert "first_seen_ts" in g.node_columns["streamer"]
    for t in ("user", "streamer"):
        assert set(few.node_columns[t]) == set(g.node_columns[t])

    (path / "_SUCCESS").unlink()
    with pytest.raises(BadInputError, match="_SUCCESS"):
        load_graph(path)
    (path / "_SUCCESS").write_text("")

    part = path / "edges" / "gift" / "part-00000.parquet"
    t = pq.read_table(part)
    pq.write_table(t.set_column(t.schema.get_field_index("count"), "count",
                                t.column("count").cast(pa.float64())), part)
    with pytest.raises(BadInputError, match="gift.*count.*double"):
        load_graph(path)
    with pytest.raises(BadInputError, match="gift.*count.*double"):   # checked, though not read
        load_graph(path, edge_columns={"gift": ("weight",)})


def test_load_graph_orders_rows_whatever_the_files_hold(tmp_path):
    """Spark's part files hold rows in no order: nodes come back by node id and edges by
    (src, dst), the same arrays as from files written in that order."""
    path, _ = make_graph_dataset(tmp_path / "g", n_users=80, n_streamers=15)
    g = load_graph(path)
    for t in ("user", "streamer"):
        assert (np.diff(np.asarray(pq.read_table(path / "nodes" / t).column("node_id"))) > 0).all()
    for et, e in g.edges.items():
        assert (np.diff(e.src * g.num_nodes(GRAPH_EDGES[et][1]) + e.dst) > 0).all(), et
    rng = np.random.default_rng(0)
    for folder in [*(path / "nodes").iterdir(), *(path / "edges").iterdir()]:
        part = folder / "part-00000.parquet"
        t = pq.read_table(part)
        t = t.take(rng.permutation(t.num_rows))
        part.unlink()
        half = t.num_rows // 2            # two files, each in another order
        pq.write_table(t.slice(0, half), folder / "part-00000.parquet")
        pq.write_table(t.slice(half), folder / "part-00001.parquet")
    shuffled = load_graph(path)
    for t in ("user", "streamer"):
        np.testing.assert_array_equal(shuffled.raw_ids[t], g.raw_ids[t])
        np.testing.assert_array_equal(shuffled.features[t], g.features[t])
        assert shuffled.features[t].flags.writeable
        for c, v in g.node_columns[t].items():
            assert shuffled.node_columns[t][c].dtype == v.dtype
            np.testing.assert_array_equal(shuffled.node_columns[t][c], v)
    for m, v in g.modalities.items():
        np.testing.assert_array_equal(shuffled.modalities[m], v)
    np.testing.assert_array_equal(shuffled.modality_mask, g.modality_mask)
    for et, e in g.edges.items():
        np.testing.assert_array_equal(shuffled.edges[et].src, e.src)
        np.testing.assert_array_equal(shuffled.edges[et].dst, e.dst)
        for c, v in e.data.items():
            np.testing.assert_array_equal(shuffled.edges[et].data[c], v)

    ids = pq.read_table(path / "nodes" / "user" / "part-00001.parquet")
    pq.write_table(ids.set_column(0, "node_id", pa.array(np.full(ids.num_rows, 0), pa.int64())),
                   path / "nodes" / "user" / "part-00001.parquet")
    with pytest.raises(BadInputError, match="node_id is not contiguous"):
        load_graph(path)


@pytest.mark.parametrize("threads", [1, 2])
def test_radix_sorts_return_what_numpy_returns(threads):
    """The torch-backed sorts are drop-in: the same permutation (stable: ties in input order),
    values and inverse as numpy's, at any thread count, for read-only, strided, negative,
    tied and empty keys."""
    import torch
    rng = np.random.default_rng(3)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ties = rng.integers(-50, 50, 300_000)
        strided = rng.integers(0, 1 << 60, 400_000)[::2]
        frozen = rng.integers(0, 1000, 5000)
        frozen.setflags(write=False)
        for keys in (ties, strided, frozen, np.zeros(0, np.int64), np.array([7])):
            assert np.array_equal(sorting.stable_argsort(keys), np.argsort(keys, kind="stable"))
            assert np.array_equal(sorting.sort(keys), np.sort(keys))
            assert np.array_equal(sorting.unique(keys), np.unique(keys))
            uniq, inverse = sorting.unique_inverse(keys)
            want = np.unique(keys, return_inverse=True)
            assert np.array_equal(uniq, want[0]) and np.array_equal(inverse, want[1].reshape(-1))
    finally:
        torch.set_num_threads(before)


def test_embeddings_roundtrip_and_errors(tmp_path):
    vec = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    write_embeddings(tmp_path / "user.parquet", "user", np.arange(5), np.arange(5) + 100, vec)
    raw, got = read_embeddings(tmp_path, "user", num_nodes=5)
    assert raw.tolist() == [100, 101, 102, 103, 104] and np.array_equal(got, vec)
    with pytest.raises(BadInputError, match="0..5"):
        read_embeddings(tmp_path, "user", num_nodes=6)
    with pytest.raises(BadInputError, match="not found"):
        read_embeddings(tmp_path, "streamer")
    (tmp_path / "user.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(BadInputError, match="cannot read"):
        read_embeddings(tmp_path, "user")


def test_cli_maps_usage_errors_to_bad_input_exit_code(capsys):
    assert cli.main(["no-such-command"]) == EXIT_BAD_INPUT
    assert cli.main(["--help"]) == 0


HEAP_PROBE = """
import resource, sys
import numpy as np
from gie.procs import keep_freed_heap
print(keep_freed_heap() if sys.argv[1] == "keep" else False)


def batch():                                 # four 8 MB arrays, freed at the end
    return sum(a.sum() for a in [np.ones(1 << 20) for _ in range(4)])


batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    batch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_kept_heap_serves_batches_without_faulting_their_pages_in_again():
    def faults(mode: str, env: dict | None = None) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", HEAP_PROBE, mode], capture_output=True,
                             text=True, check=True, cwd=Path(cli.__file__).parent,
                             env={**os.environ, **(env or {})})
        kept, n = out.stdout.split()
        return kept, int(n)

    (untouched, default), (kept, with_heap) = faults("default"), faults("keep")
    assert (untouched, kept) == ("False", "True")
    # 10 batches of 32 MB mapped afresh: about 2k pages each time; reused: next to none
    assert default > 10_000 and with_heap < default / 20
    # the operator's own malloc settings win
    assert faults("keep", {"MALLOC_MMAP_THRESHOLD_": "131072"})[0] == "False"
