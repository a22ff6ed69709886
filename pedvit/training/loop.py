"""Training machinery the fusion and window-adapter trainers share: the step budget and learning-rate
schedule, the trainable copy of the workers' trunk, and what a weights file records about its adapter."""

from __future__ import annotations

import copy
import json
import math
import pathlib
import time

from torch import nn

from pedvit.plans.window_adapter import WindowAdapter, adaptable_parameters, adapted_encoder


class StepBudget:
    """How many steps a run takes: `steps`, or (0) as many as fit in `minutes` counted from `started` (caching
    included), timed on steps 10-30, after the loaders' and kernels' warm-up; and the learning rate of each
    step: linear warm-up, then cosine to 0 over the total (constant after warm-up until the total is known)."""

    def __init__(self, steps: int, minutes: float, started: float, tag: str) -> None:
        self.total, self.minutes, self.started, self.tag = steps, minutes, started, tag
        self.timed = not steps
        self._t10 = 0.0

    def finished(self, step: int) -> bool:
        """Call before running `step` (0-based); True once the budget is spent, or, for a budget in minutes, once
        110 % of them have passed (steps slower than timed: a shared machine, validation passes)."""
        if self.timed and time.perf_counter() - self.started > 1.1 * self.minutes * 60:
            print(f"[{self.tag}] stopped at step {step} of {self.total}: over 110 % of {self.minutes} min", flush=True)
            return True
        if step == 10:
            self._t10 = time.perf_counter()
        if not self.total and step == 30:
            per_step = (time.perf_counter() - self._t10) / 20
            self.total = max(40, 30 + int((self.minutes * 60 - (time.perf_counter() - self.started)) / per_step))
            print(f"[{self.tag}] {per_step * 1e3:.0f} ms/step -> {self.total} steps in {self.minutes} min", flush=True)
        return bool(self.total) and step >= self.total

    def lr(self, base: float, step: int, warmup: int) -> float:
        """The learning rate of `step` for a peak of `base` after `warmup` steps."""
        warm = min(1.0, (step + 1) / warmup)
        return base * warm * (0.5 * (1 + math.cos(math.pi * min(1.0, step / self.total))) if self.total else 1.0)


def adapter_metadata(path: str, adapter: WindowAdapter | None) -> dict | None:
    """What the fusion metadata records about its window adapter: id, size, and the adapter's own metadata
    (from `adapt`'s JSON, or the adapter entry of a fusion file's JSON)."""
    if adapter is None:
        return None
    meta_path = pathlib.Path(path).with_suffix(".json")
    training = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    if isinstance(training, dict) and "window_adapter" in training:  # a fusion file: keep only its adapter's entry
        training = training["window_adapter"]
    return {"adapter_id": adapter.adapter_id, "params": adapter.numel, "training": training}


def trainable_trunk(encoder: nn.Module, adapter: WindowAdapter | None = None) -> tuple[nn.Module, list[nn.Parameter]]:
    """A copy of `encoder` (with `adapter` applied) in which only the adaptable parameters require grad, and
    those parameters; eval mode, so BatchNorm keeps its running statistics."""
    trunk = copy.deepcopy(adapted_encoder(encoder, adapter)).eval()
    trainable = adaptable_parameters(trunk)
    for name, p in trunk.named_parameters():
        p.requires_grad_(name in trainable)
    return trunk, list(trainable.values())
