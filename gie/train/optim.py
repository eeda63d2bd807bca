"""The optimizer: Adam for the dense weights, SparseAdam for the per-user id table.

The user id table has one row per user (millions in production). With a dense gradient
every step would allocate, and Adam would update, the whole table for the few thousand
users in a batch: at 1.3M users that was seconds per step. The table is an
`nn.Embedding(sparse=True)`, so its gradient holds only the batch's rows, and SparseAdam
updates only those rows (lazy Adam: moments of rows not in the batch are left as they are).
"""
from __future__ import annotations

import torch


class GIEOptimizer:
    """Adam + SparseAdam behind one `zero_grad` / `step` / `state_dict` (what checkpoints
    save and resume restores)."""

    def __init__(self, model: torch.nn.Module, lr: float, weight_decay: float = 0.0):
        sparse = [p for m in model.modules() if isinstance(m, torch.nn.Embedding) and m.sparse
                  for p in m.parameters()]
        dense = [p for p in model.parameters() if all(p is not s for s in sparse)]
        self.parts = {"dense": torch.optim.Adam(dense, lr=lr, weight_decay=weight_decay)}
        if sparse:
            self.parts["sparse"] = torch.optim.SparseAdam(sparse, lr=lr)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.parts.values():
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.parts.values():
            opt.step()

    def state_dict(self) -> dict:
        return {name: opt.state_dict() for name, opt in self.parts.items()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != set(self.parts):
            raise ValueError(f"optimizer state has parts {sorted(state)}, expected "
                             f"{sorted(self.parts)}")
        for name, opt in self.parts.items():
            opt.load_state_dict(state[name])
