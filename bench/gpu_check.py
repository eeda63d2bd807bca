"""GPU check of the parts of training that run on plain PyTorch (no DGL).

The lent GPU machines carry PyTorch 2.11 on Python 3.12 and cannot load DGL 2.1 (it needs
torch <= 2.2.1, and its CUDA build is not on PyPI), so this checks what can be checked
there: the MFQ fusion and the link-prediction loss give the same values and gradients on
CUDA as on CPU, and how fast MFQ runs on the GPU (fp32 and bf16 autocast) next to the
host's CPU. Where a GPU build of Faiss is installed (faiss-gpu-cu12, requirements-gpu.txt), it
also checks the expand stage's kNN on the GPU: the exact rescoring (search_exact_scores) gives
the same neighbours and the same score bytes as the CPU index, and how fast each searches.
Prints one JSON line per check; exit 1 if CUDA and CPU disagree.

    python bench/gpu_check.py [--nodes 200000]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gie.model.mfq import MFQFusion  # noqa: E402
from gie.train.objective import link_loss  # noqa: E402

MODS = {"image": 128, "speech": 64, "comment": 64}


def inputs(n: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mods = {m: torch.randn(n, d, generator=g) for m, d in MODS.items()}
    mask = torch.rand(n, len(MODS), generator=g) < 0.8
    side = torch.randn(n, 16, generator=g)
    return {m: x.to(device) for m, x in mods.items()}, mask.to(device), side.to(device)


def agree(n: int) -> dict:
    """Same weights, same inputs: outputs and gradients on CPU vs CUDA (fp32, eval mode)."""
    torch.manual_seed(0)
    cpu = MFQFusion(MODS, 16, 64, num_queries=2, num_heads=2, dropout=0.0)
    gpu = copy.deepcopy(cpu).cuda()
    out = {}
    for name, model, dev in (("cpu", cpu, "cpu"), ("cuda", gpu, "cuda")):
        mods, mask, side = inputs(n, dev)
        y = model(mods, mask, side)
        y.square().mean().backward()
        out[name] = (y.detach().cpu(), {k: p.grad.cpu() for k, p in model.named_parameters()})
    y_err = (out["cpu"][0] - out["cuda"][0]).abs().max().item()
    g_err = max(((out["cpu"][1][k] - out["cuda"][1][k]).abs().max()
                 / out["cpu"][1][k].abs().max().clamp_min(1e-12)).item() for k in out["cpu"][1])
    # the loss: 1024 positives, 256 shared negatives + in-batch, weighted
    g = torch.Generator().manual_seed(1)
    u, s = torch.randn(1024, 64, generator=g), torch.randn(2000, 64, generator=g)
    src, dst = torch.arange(1024), torch.randint(0, 2000, (1024,), generator=g)
    w = torch.rand(1024, generator=g) + 0.5
    neg = torch.arange(2000)
    losses = [float(link_loss(*(t.to(d) for t in (u, s, src, dst, neg, w)), 0.1))
              for d in ("cpu", "cuda")]
    return {"check": "cpu_vs_cuda", "nodes": n, "mfq_max_abs_err": y_err,
            "mfq_grad_max_rel_err": g_err, "loss_cpu": losses[0], "loss_cuda": losses[1],
            "ok": y_err < 1e-4 and g_err < 1e-3 and abs(losses[0] - losses[1]) < 1e-4}


def speed(n: int, device: str, bf16: bool, reps: int = 5) -> dict:
    torch.manual_seed(0)
    model = MFQFusion(MODS, 16, 64, num_queries=2, num_heads=2, dropout=0.1).to(device)
    mods, mask, side = inputs(n, device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            y = model(mods, mask, side)
        y.float().square().mean().backward()

    step(), sync()
    t = time.perf_counter()
    for _ in range(reps if device == "cuda" else 2):
        step()
    sync()
    sec = (time.perf_counter() - t) / reps
    return {"check": "mfq_speed", "device": device, "bf16": bf16, "nodes": n,
            "threads": torch.get_num_threads(), "fwd_bwd_s": round(sec, 4),
            "nodes_per_s": round(n / sec)}


def faiss_check(n: int, d: int = 64, k: int = 50) -> dict:
    """CPU vs GPU Faiss through the expand stage's own index code (exact Flat index)."""
    try:
        import faiss
        from gie.expand.config import IndexConfig
        from gie.expand.index import build_index, normalise, search_exact_scores
    except ImportError as e:
        return {"check": "faiss_gpu", "skipped": f"cannot import: {e}"}
    if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() == 0:
        return {"check": "faiss_gpu", "skipped": "Faiss without GPUs (faiss-gpu-cu12 not installed)"}
    vectors = normalise(np.random.default_rng(0).standard_normal((n, d)))
    queries = vectors[: min(n, 20_000)]
    out = {"check": "faiss_gpu", "n": n, "dim": d, "k": k}
    results = {}
    for name, gpu in (("cpu", False), ("gpu", True)):
        built = build_index(vectors, IndexConfig(kind="flat", use_gpu=gpu), 0.9)
        t = time.perf_counter()
        results[name] = search_exact_scores(built.index, vectors, queries, k)
        out[f"{name}_search_s"] = round(time.perf_counter() - t, 3)
        out[f"{name}_on_gpu"] = bool(built.info.get("gpu"))
    (s_cpu, i_cpu), (s_gpu, i_gpu) = results["cpu"], results["gpu"]
    out["same_ids_rows"] = float((i_cpu == i_gpu).all(1).mean())
    out["same_score_bytes"] = bool(np.array_equal(s_cpu, s_gpu))
    out["ok"] = out["gpu_on_gpu"] and out["same_ids_rows"] >= 0.999
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=200_000)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"check": "cuda", "ok": False, "why": "no CUDA device"}))
        return 1
    print(json.dumps({"check": "env", "torch": torch.__version__,
                      "gpu": torch.cuda.get_device_name(0), "python": sys.version.split()[0]}))
    res = agree(20_000)
    print(json.dumps(res), flush=True)
    for device, bf16 in (("cuda", False), ("cuda", True), ("cpu", False)):
        print(json.dumps(speed(args.nodes, device, bf16)), flush=True)
    knn = faiss_check(args.nodes)
    print(json.dumps(knn), flush=True)
    return 0 if res["ok"] and knn.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
