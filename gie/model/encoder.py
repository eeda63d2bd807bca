"""Input layers and the 2-layer heterogeneous GraphSAGE encoder.

Output vectors are unit length, so the dot product the consumers use is the cosine the
loss was trained on (scaled by a temperature there).

The same module serves three callers: sampled mini-batches (`forward` over blocks),
layer-wise full-graph inference (`input_layer` then `layer(i, block, h)`), and a plain
full-graph pass used by tests to check the written embeddings.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import dgl
import torch
import torch.nn.functional as F
from torch import nn

from gie.model.mfq import MFQFusion

Inputs = dict[str, dict[str, torch.Tensor]]   # node type -> {"feat", "nid", modalities, "mask"}


@dataclass
class ModelSpec:
    """Everything needed to rebuild the model: saved with every checkpoint."""

    etypes: list[tuple[str, str, str]]
    num_users: int
    user_dim: int
    streamer_dim: int
    modality_dims: dict[str, int]
    hidden_dim: int = 64
    embed_dim: int = 64
    num_layers: int = 2
    num_queries: int = 2
    num_heads: int = 2
    dropout: float = 0.1
    user_id_embedding: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        d = dict(d)
        d["etypes"] = [tuple(e) for e in d["etypes"]]
        return cls(**d)


class HeteroSAGE(nn.Module):
    """One GraphSAGE layer (mean aggregator) over every edge type at once.

    Per destination type, the node's own vector and the mean of its in-neighbours over each
    incoming edge type are concatenated and go through one Linear. This is the same function
    class as DGL's HeteroGraphConv of SAGEConv with aggregate="sum" (whose per-edge-type self
    terms sum to one linear map) in one matmul instead of two per edge type; unlike it, the
    self term does not depend on which edge types a sampled block happens to contain.
    """

    def __init__(self, etypes: list[tuple[str, str, str]], in_dim: int, out_dim: int):
        super().__init__()
        self.rels = {d: [e for e in etypes if e[2] == d] for d in sorted({e[2] for e in etypes})}
        self.fc = nn.ModuleDict({d: nn.Linear(in_dim * (1 + len(r)), out_dim)
                                 for d, r in self.rels.items()})

    def forward(self, g: dgl.DGLGraph, h: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for d, rels in self.rels.items():
            if d not in h:
                continue
            x = h[d][:g.num_dst_nodes(d)]
            parts = [x]
            for rel in rels:
                parts.append(dgl.ops.copy_u_mean(g[rel], h[rel[0]]) if rel[0] in h
                             else x.new_zeros(x.shape))
            out[d] = self.fc[d](torch.cat(parts, dim=1))
        return out


class GIEModel(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        h, out = spec.hidden_dim, spec.embed_dim
        self.user_proj = nn.Linear(spec.user_dim, h)
        # sparse: a batch's gradient holds only its users' rows (gie/train/optim.py)
        self.user_id = nn.Embedding(spec.num_users, h, sparse=True) \
            if spec.user_id_embedding else None
        if self.user_id is not None:
            nn.init.normal_(self.user_id.weight, std=0.02)
        self.streamer_fusion = MFQFusion(spec.modality_dims, spec.streamer_dim, h,
                                         spec.num_queries, spec.num_heads, spec.dropout)
        # Feature scaling fitted on the first training graph and kept by warm starts,
        # so that day D+1 is encoded exactly like day D.
        for t, d in (("user", spec.user_dim), ("streamer", spec.streamer_dim)):
            self.register_buffer(f"{t}_mean", torch.zeros(d))
            self.register_buffer(f"{t}_std", torch.ones(d))
        dims = [h] * spec.num_layers + [out]
        self.layers = nn.ModuleList(HeteroSAGE(spec.etypes, dims[i], dims[i + 1])
                                    for i in range(spec.num_layers))
        self.head = nn.ModuleDict({t: nn.Linear(h, out) for t in ("user", "streamer")}) \
            if spec.num_layers == 0 else None
        self.drop = nn.Dropout(spec.dropout)

    def fit_scaling(self, user_feat: torch.Tensor, streamer_feat: torch.Tensor) -> None:
        for t, x in (("user", user_feat), ("streamer", streamer_feat)):
            getattr(self, f"{t}_mean").copy_(x.mean(0))
            getattr(self, f"{t}_std").copy_(x.std(0, unbiased=False).clamp_min(1e-6))

    def input_layer(self, inputs: Inputs) -> dict[str, torch.Tensor]:
        """Hidden vectors of the given nodes from their own attributes only."""
        out = {}
        if "user" in inputs:
            u = inputs["user"]
            h = self.user_proj((u["feat"] - self.user_mean) / self.user_std)
            if self.user_id is not None:
                h = h + self.user_id(u["nid"])
            out["user"] = F.relu(h)
        if "streamer" in inputs:
            s = inputs["streamer"]
            side = (s["feat"] - self.streamer_mean) / self.streamer_std
            out["streamer"] = F.relu(self.streamer_fusion(
                {m: s[m] for m in self.spec.modality_dims}, s["mask"], side))
        return out

    def layer(self, i: int, block: dgl.DGLGraph, h: dict[str, torch.Tensor]) -> dict:
        if self.head is not None:                  # features-only baseline
            return {t: F.normalize(self.head[t](x), dim=-1) for t, x in h.items()}
        h = self.layers[i](block, {t: self.drop(x) for t, x in h.items()})
        if i == len(self.layers) - 1:
            return {t: F.normalize(x, dim=-1) for t, x in h.items()}
        return {t: F.relu(x) for t, x in h.items()}

    def forward(self, blocks: list[dgl.DGLGraph], inputs: Inputs, views: int = 0,
                view_drop: float = 0.0, stale: list[dict[str, torch.Tensor]] | None = None
                ) -> list[dict[str, torch.Tensor]]:
        """Encode the seed nodes; with `views` > 0 also return that many augmented encodings
        (input features dropped at `view_drop`) for the contrastive term.

        `stale[i][t]`, when given, holds precomputed vectors (no gradient) of the input nodes
        of type t of layer i that follow the ones computed here: those of `inputs` for layer
        0, the previous layer's outputs for later layers (gie.train.fused_cache and
        gie.train.history). One call per step, so DDP sees a single forward."""
        stale = stale or []

        def extend(i: int, h: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            if i >= len(stale):
                return h
            return {**h, **{t: torch.cat([h[t], x]) if t in h else x
                            for t, x in stale[i].items()}}

        h0 = extend(0, self.input_layer(inputs))
        outs = []
        for v in range(views + 1):
            h = h0 if v == 0 else {t: F.dropout(x, view_drop) for t, x in h0.items()}
            if self.head is not None:
                outs.append(self.layer(0, None, h))
                continue
            for i, block in enumerate(blocks):
                h = extend(i, h) if i else h
                h = self.layer(i, block, h)
            outs.append(h)
        return outs

    @property
    def num_steps(self) -> int:
        """Layers to run in layer-wise inference (the baseline has one head step)."""
        return max(1, len(self.layers))


def gather_inputs(ndata_of, ntype: str, ids: torch.Tensor, modalities: list[str]) -> dict:
    """Slice one node type's model inputs; works for DGLGraph and DistGraph (`g.nodes`).
    A partitioned graph renumbers nodes, so it carries our node id as `nid`."""
    data = ndata_of[ntype].data

    def rows(x):    # index_select: torch 2.2's x[ids] is slower for the same rows
        return x.index_select(0, ids) if isinstance(x, torch.Tensor) else x[ids]  # DistTensor
    out = {"feat": rows(data["feat"]), "nid": rows(data["nid"]) if "nid" in data else ids}
    if ntype == "streamer":
        for m in modalities:
            out[m] = rows(data[m])
        out["mask"] = rows(data["mask"]).bool()
    return out
