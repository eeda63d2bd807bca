"""The stage registry of the nightly chain and what "this stage is already done" means.

A stage is done when its dated output folder is published (`_SUCCESS`) AND the stage-state
file the orchestrator wrote beside it, `_STAGE.json`, carries the same inputs fingerprint as
now. The fingerprint hashes the stage's config section, the seed, the date, the code version
and a digest of every input folder (raw data, upstream outputs, the warm-start model), so a
changed config or a rebuilt upstream reruns the stage, and an output that a killed run
published but never recorded is redone from its start.

Stages run in this process by default; `nightly.build_command` / `nightly.train_command` run
them as an external command instead (spark-submit, torchrun, DGL's launcher): the command
must publish the same folder, and its exit code 2 / 3 is passed through as bad input /
quality floor.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pydantic import BaseModel

import gie
from gie.config import PipelineConfig
from gie.errors import (
    EXIT_BAD_INPUT, EXIT_LOCKED, EXIT_QUALITY, BadInputError, GieError, LockedError,
    QualityFloorError,
)
from gie.layout import WorkLayout, dated, dates_under
from gie.procs import PREEXEC
from gie.publish import is_published, write_json_atomic

log = logging.getLogger(__name__)

STATE_FILE = "_STAGE.json"
CLI = Path(gie.__file__).resolve().parents[1] / "cli.py"


@dataclass(frozen=True)
class RunContext:
    raw: Path
    layout: WorkLayout
    date: str
    cfg: PipelineConfig
    config_file: Path          # the resolved config of this run, handed to external commands
    run_id: str


@dataclass(frozen=True)
class Stage:
    name: str
    output: Callable[[RunContext], Path]
    section: Callable[[PipelineConfig], BaseModel]           # the config that shapes the output
    inputs: Callable[[RunContext], dict[str, Path | None]]   # folders whose content it reads
    run: Callable[[RunContext, dict[str, Path | None]], dict]
    skip_reason: Callable[[RunContext], str | None] = lambda ctx: None


# ------------------------------------------------------------------------------------------
# Fingerprints and stage state
# ------------------------------------------------------------------------------------------
def tree_digest(path: Path | None) -> str | None:
    """Digest of a folder's file names, sizes and mtimes (stat only: cheap on large outputs).

    Hidden names and the stage-state file are left out: they are not content.
    """
    if path is None:
        return None
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*")
        if p.is_file() and p.name != STATE_FILE
        and not any(part.startswith(".") for part in p.relative_to(path).parts))
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(path) if p != path else p.name}\0{st.st_size}\0"
                 f"{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def fingerprint(stage: Stage, ctx: RunContext, inputs: dict[str, Path | None]) -> str:
    payload = {
        "stage": stage.name, "date": ctx.date, "seed": ctx.cfg.seed,
        "code_version": gie.__version__,
        "config": stage.section(ctx.cfg).model_dump(mode="json"),
        "inputs": {k: tree_digest(p) for k, p in sorted(inputs.items())},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def read_state(out: Path) -> dict | None:
    try:
        return json.loads((out / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def is_done(out: Path, fp: str) -> bool:
    state = read_state(out)
    return is_published(out) and state is not None and state.get("fingerprint") == fp


def record_done(out: Path, stage: str, fp: str, run_id: str, counts: dict,
                inputs: dict[str, Path | None]) -> None:
    write_json_atomic(out / STATE_FILE, {
        "stage": stage, "fingerprint": fp, "run_id": run_id, "counts": counts,
        "inputs": {k: str(p) if p else None for k, p in inputs.items()},
        "code_version": gie.__version__})


def read_result(out: Path) -> dict:
    """What an external command produced, from the metadata it published."""
    for name in ("metadata.json", "metrics.json"):
        f = out / name
        if f.is_file():
            try:
                return json.loads(f.read_text())
            except ValueError:
                return {}
    return {}


# ------------------------------------------------------------------------------------------
# External commands
# ------------------------------------------------------------------------------------------
OPTIONAL_PLACEHOLDERS = ("{prev}", "{warm_start}")


def expand_command(template: list[str], values: dict[str, str]) -> list[str]:
    """Fill placeholders; an optional placeholder with no value drops itself and its option.

    ["--warm-start", "{warm_start}"] disappears when there is no previous model.
    """
    out: list[str] = []
    for arg in template:
        if arg in OPTIONAL_PLACEHOLDERS and not values.get(arg[1:-1]):
            if out and out[-1].startswith("-"):
                out.pop()
            continue
        try:
            out.append(arg.format(**values))
        except (KeyError, IndexError, ValueError) as e:
            raise BadInputError(f"command argument {arg!r} has an unknown placeholder {e}; "
                                f"known: {sorted(values)}") from e
    return out


def run_command(stage: str, cmd: list[str], out: Path, timeout_s: float | None) -> dict:
    log.info("stage %s: running %s", stage, shlex.join(cmd))
    try:
        rc = subprocess.run(cmd, cwd=CLI.parent, timeout=timeout_s,
                            preexec_fn=PREEXEC
                            ).returncode
    except FileNotFoundError as e:
        raise BadInputError(f"{stage} command not found: {cmd[0]} ({e})") from e
    except subprocess.TimeoutExpired as e:
        raise GieError(f"{stage} command ran longer than {timeout_s}s and was killed") from e
    what = f"{stage} command exited with code {rc} (see its log above): {shlex.join(cmd)}"
    if rc == EXIT_BAD_INPUT:
        raise BadInputError(what)
    if rc == EXIT_QUALITY:
        raise QualityFloorError(what)
    if rc == EXIT_LOCKED:
        raise LockedError(what)
    if rc != 0:
        raise GieError(what)
    if not is_published(out):
        raise GieError(f"{stage} command succeeded but did not publish {out} (no _SUCCESS)")
    return read_result(out)


def _command_values(ctx: RunContext, inputs: dict[str, Path | None], out: Path) -> dict[str, str]:
    lay = ctx.layout
    return {
        "python": sys.executable, "cli": str(CLI), "raw": str(ctx.raw), "work": str(lay.work),
        "date": ctx.date, "config": str(ctx.config_file), "seed": str(ctx.cfg.seed),
        "out": str(out), "graph_root": str(lay.work / "graph"), "graph": str(lay.graph(ctx.date)),
        "model": str(lay.model(ctx.date)), "bundle": str(lay.bundle(ctx.date)),
        "prev": str(inputs.get("prev") or ""), "warm_start": str(inputs.get("warm_start") or ""),
    }


# ------------------------------------------------------------------------------------------
# The stages
# ------------------------------------------------------------------------------------------
def newest_before(root: Path, date: str) -> Path | None:
    """The newest published dated folder under `root` strictly before `date`."""
    earlier = [d for d in dates_under(root) if d < date and is_published(dated(root, d))]
    return dated(root, earlier[-1]) if earlier else None


def _build_inputs(ctx: RunContext) -> dict[str, Path | None]:
    return {"raw": ctx.raw, "prev": newest_before(ctx.layout.work / "graph", ctx.date)}


def _run_build(ctx: RunContext, inputs: dict[str, Path | None]) -> dict:
    out = ctx.layout.graph(ctx.date)
    if ctx.cfg.nightly.build_command:
        cmd = expand_command(ctx.cfg.nightly.build_command, _command_values(ctx, inputs, out))
        return run_command("build", cmd, out, ctx.cfg.nightly.command_timeout_s)
    from pyspark.sql import SparkSession

    from graphbuild.job import run_build

    ours = SparkSession.getActiveSession() is None
    try:
        return run_build(raw=ctx.raw, out=ctx.layout.work / "graph", date=ctx.date,
                         cfg=ctx.cfg.build, prev=inputs["prev"],
                         master=ctx.cfg.nightly.spark_master)
    finally:
        active = SparkSession.getActiveSession()
        if ours and active is not None:
            active.stop()                # frees the JVM's memory for training


def _train_inputs(ctx: RunContext) -> dict[str, Path | None]:
    warm = newest_before(ctx.layout.work / "model", ctx.date) if ctx.cfg.nightly.warm_start else None
    return {"graph": ctx.layout.graph(ctx.date), "warm_start": warm}


def _run_train(ctx: RunContext, inputs: dict[str, Path | None]) -> dict:
    out = ctx.layout.model(ctx.date)
    if ctx.cfg.nightly.train_command:
        cmd = expand_command(ctx.cfg.nightly.train_command, _command_values(ctx, inputs, out))
        return run_command("train", cmd, out, ctx.cfg.nightly.command_timeout_s)
    from gie.train.run import train

    return train(inputs["graph"], out, ctx.cfg.train, seed=ctx.cfg.seed, resume=False,
                 warm_start=inputs["warm_start"])


def _expand_inputs(ctx: RunContext) -> dict[str, Path | None]:
    """Today's graph and model, and the previous nights' (newest first), which the fused
    ranking learns from: dates with both a published graph and model."""
    lay = ctx.layout
    inputs: dict[str, Path | None] = {"graph": lay.graph(ctx.date), "model": lay.model(ctx.date)}
    dates = [d for d in dates_under(lay.work / "graph") if d < ctx.date
             and is_published(lay.graph(d)) and is_published(lay.model(d))]
    learn = ctx.cfg.expand.fusion.learn
    for i, d in enumerate(reversed(dates[-max(learn.nights, learn.max_nights):]), start=1):
        inputs[f"prev_graph_{i}"], inputs[f"prev_model_{i}"] = lay.graph(d), lay.model(d)
    return inputs


def _run_expand(ctx: RunContext, inputs: dict[str, Path | None]) -> dict:
    from gie.expand.run import expand

    nights = sorted((k for k in inputs if k.startswith("prev_graph_")),
                    key=lambda k: int(k.rsplit("_", 1)[1]))
    learn_from = [(inputs[k], inputs[k.replace("graph", "model")] / "embeddings")
                  for k in nights]
    return expand(inputs["graph"], inputs["model"] / "embeddings", ctx.layout.bundle(ctx.date),
                  ctx.cfg.expand, seed=ctx.cfg.seed, learn_from=learn_from)


def _evaluate_skip(ctx: RunContext) -> str | None:
    if not ctx.cfg.nightly.evaluate:
        return "switched off (nightly.evaluate=false)"
    from gie.evaluate.rawdata import next_date, next_day_available

    if not next_day_available(ctx.raw, ctx.date):
        return f"no gift events on {next_date(ctx.date)} yet"
    return None


def _run_evaluate(ctx: RunContext, inputs: dict[str, Path | None]) -> dict:
    from gie.evaluate.run import evaluate

    return evaluate(ctx.raw, ctx.layout.work, ctx.date, ctx.cfg.evaluate, seed=ctx.cfg.seed)


STAGES: tuple[Stage, ...] = (
    Stage("build", lambda c: c.layout.graph(c.date), lambda cfg: cfg.build, _build_inputs,
          _run_build),
    Stage("train", lambda c: c.layout.model(c.date), lambda cfg: cfg.train, _train_inputs,
          _run_train),
    Stage("expand", lambda c: c.layout.bundle(c.date), lambda cfg: cfg.expand, _expand_inputs,
          _run_expand),
    Stage("evaluate", lambda c: c.layout.report(c.date), lambda cfg: cfg.evaluate,
          lambda c: {"raw": c.raw, "graph": c.layout.graph(c.date),
                     "model": c.layout.model(c.date), "bundle": c.layout.bundle(c.date)},
          _run_evaluate, _evaluate_skip),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES) + ("publish",)
