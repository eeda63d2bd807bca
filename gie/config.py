"""One YAML file holds every stage's settings; any key can be overridden on the command line.

The file has one section per stage (`build`, `train`, `expand`, `evaluate`, `nightly`); each
section is a typed pydantic model owned by its stage package. Overrides use full dotted
paths, e.g. `--set train.epochs=3 --set expand.topk=100`; values are parsed as YAML scalars.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from gie.errors import BadInputError
from gie.evaluate.config import EvalConfig
from gie.expand.config import ExpandConfig
from gie.pipeline.config import NightlyConfig
from gie.train.config import TrainConfig
from graphbuild.config import BuildConfig


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    build: BuildConfig = BuildConfig()
    train: TrainConfig = TrainConfig()
    expand: ExpandConfig = ExpandConfig()
    evaluate: EvalConfig = EvalConfig()
    nightly: NightlyConfig = NightlyConfig()


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """["train.epochs=3", "seed=1"] -> {"train": {"epochs": 3}, "seed": 1}"""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise BadInputError(f"override {item!r} is not of the form section.key=value")
        node = tree
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> PipelineConfig:
    data: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise BadInputError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise BadInputError(f"config file {p} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise BadInputError(f"config file {p} must hold a mapping of sections")
    data = _merge(data, parse_overrides(overrides))
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as e:
        where = f"config file {path}" if path else "config"
        raise BadInputError(f"{where} (with overrides) is invalid:\n{e}") from e


def dump_config(cfg: BaseModel) -> dict[str, Any]:
    """The resolved config as plain data, saved beside every output."""
    return cfg.model_dump(mode="json")
