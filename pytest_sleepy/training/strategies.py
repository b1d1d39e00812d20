"""Base classes for the training strategies in `strategies/`: a strategy file names
one of these and its data selection; everything else is shared.

- `LoraStrategy`: one LoRA adapter on the records `selection` picks (targeted,
  replay, weighted), applied to every step.
- `ShareStrategy`: per-pattern LoRAs, Share Phase 1 over them, then either the
  core-averaged adapter on every step (`routed = False`) or, per step, the adapter of
  the pattern the diagnostics router picks from the candidate's verdict; a verdict
  the router cannot place gets the base model.
"""

from __future__ import annotations

from ..strategies import StepView, Strategy
from .share import ShareConfig

__all__ = ["LoraStrategy", "ShareStrategy"]


class LoraStrategy(Strategy):
    needs_training = True
    selection = "targeted"  # targeted, replay or weighted (see training/context.py)
    train_overrides: dict = {}  # [tool.sleepy.train] keys that differ for this strategy
    _adapter: str | None = None

    def train(self, context) -> None:
        records = context.records(self, self.selection)
        if not records:
            raise ValueError(f"{self.name}: no training records ({context.targeting})")
        self._adapter = context.lora(self, records)

    def adapter(self, view: StepView) -> str | None:
        if self._adapter is None:
            raise RuntimeError(f"{self.name}: train() has not run")
        return self._adapter


class ShareStrategy(Strategy):
    needs_training = True
    routed = False
    share_config = ShareConfig()
    train_overrides: dict = {}
    _adapters: dict[str, str] | None = None
    _router = None

    def train(self, context) -> None:
        records = context.records(self, "targeted")
        if not records:
            raise ValueError(f"{self.name}: no training records ({context.targeting})")
        self._adapters = context.share(self, records, self.share_config)
        if self.routed:
            self._router = context.router(self)

    def route(self, view: StepView) -> str | None:
        if not self.routed:
            return None
        return self._router.route(view.verdict).pattern or ""

    def adapter(self, view: StepView) -> str | None:
        if self._adapters is None:
            raise RuntimeError(f"{self.name}: train() has not run")
        if not self.routed:
            return self._adapters["average"]
        pattern = self.route(view)
        return self._adapters.get(pattern) if pattern else None
