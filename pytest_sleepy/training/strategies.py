"""Base classes for the training strategies in `strategies/`: a strategy file names
one of these and its data selection; everything else is shared.

- `LoraStrategy`: one LoRA adapter on the records `selection` picks (targeted,
  replay, weighted), applied to every step.
- `ShareStrategy`: per-pattern LoRAs, Share Phase 1 over them, then either the
  core-averaged adapter on every step (`routed = False`) or, per step, the adapter of
  the pattern the diagnostics router picks from the candidate's verdict; a verdict
  the router cannot place gets the base model.
- `SequentialShareStrategy`: continual learning in stages, one family of train
  patterns per stage (families in alphabetical order): stage 1 is Phase 1 over the
  first family's per-pattern LoRAs, each later stage Phase 2 then Phase 3 for every
  new pattern. Every koan is evaluated at stage 0 (the untrained base) and after each
  stage, routed among the patterns learned so far, so the run has an accuracy matrix
  R[stage][family] and the report its ACC, BWT, FWT and forgetting.
- `FeedbackStrategy`: the newest adapter trained from people's corrections
  (`sleepy feedback`), looked up again at the first step of every item, so an adapter
  that finishes training mid-run is hot-swapped in without reloading the base model.
"""

from __future__ import annotations

from dataclasses import replace

from ..strategies import StepView, Strategy

__all__ = ["LoraStrategy", "ShareStrategy", "SequentialShareStrategy", "FeedbackStrategy"]


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


def _share_config(overrides: dict):
    # Imported here: share.py needs torch, and loading a strategies folder must not.
    from .share import ShareConfig

    return ShareConfig(**overrides)


class ShareStrategy(Strategy):
    needs_training = True
    routed = False
    share_config: dict = {}  # ShareConfig fields that differ from its defaults
    train_overrides: dict = {}
    _adapters: dict[str, str] | None = None
    _router = None

    def train(self, context) -> None:
        records = context.records(self, "targeted")
        if not records:
            raise ValueError(f"{self.name}: no training records ({context.targeting})")
        self._adapters = context.share(self, records, _share_config(self.share_config))
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


class SequentialShareStrategy(Strategy):
    needs_training = True
    share_config: dict = {}  # ShareConfig fields that differ from its defaults
    phase2_lr = 3e-3  # coefficient-only training needs a larger rate than LoRA (SHARE.md)
    train_overrides: dict = {}
    _groups: list[tuple[str, list[str]]] = []  # (family, its train patterns), in stage order
    _stages: list[dict[str, str]] | None = None
    _router = None

    def plan(self, train_koans) -> None:
        families: dict[str, set[str]] = {}
        for koan in train_koans:
            families.setdefault(koan.family, set()).add(koan.pattern)
        self._groups = [(family, sorted(patterns)) for family, patterns in sorted(families.items())]

    def variants(self) -> list[str]:
        return [f"stage{i}" for i in range(len(self._groups) + 1)]

    def stage_of(self, variant: str) -> int | None:
        return int(variant.removeprefix("stage")) if variant.startswith("stage") else None

    def curriculum(self) -> dict | None:
        if not self._groups:
            return None
        return {"order": [family for family, _ in self._groups],
                "groups": {family: patterns for family, patterns in self._groups}}

    def train(self, context) -> None:
        records = context.sft_records(self)
        groups = [(family, [r for r in records if r["metadata"]["pattern"] in patterns])
                  for family, patterns in self._groups]
        empty = [family for family, chosen in groups if not chosen]
        if empty or not groups:
            # Dropping a stage would shift every later stage's label; refuse instead.
            raise ValueError(f"{self.name}: no training records for the train families {', '.join(empty) or '(none)'}")
        phase2 = replace(context.config_for(self), lr=self.phase2_lr)
        self._stages = context.share_sequential(self, groups, _share_config(self.share_config), phase2)
        self._router = context.router(self)

    def route(self, view: StepView) -> str | None:
        return self._router.route(view.verdict).pattern or ""

    def adapter(self, view: StepView) -> str | None:
        if self._stages is None:
            raise RuntimeError(f"{self.name}: train() has not run")
        stage = self.stage_of(view.variant) or 0
        if stage == 0:
            return None  # the untrained model: GEM's b
        learned = self._stages[min(stage, len(self._stages)) - 1]
        pattern = self.route(view)
        return learned.get(pattern) if pattern else None


class FeedbackStrategy(Strategy):
    # It trains nothing in the session (the feedback loop trains in the background);
    # it needs the training context for the model and the feedback folder.
    needs_training = True
    _context = None
    _current: str | None = None

    def train(self, context) -> None:
        from ..feedback import latest_adapter

        latest = latest_adapter(context.feedback_dir)
        if latest is None:
            raise ValueError(f"{self.name}: no feedback adapter in {context.feedback_dir} yet; record corrections "
                             "with `sleepy feedback add` (training starts at the threshold) or start it with "
                             "`sleepy feedback train`, and wait for `sleepy feedback status` to say done")
        if latest.base_model and latest.base_model != context.model.identity:
            raise ValueError(f"{self.name}: the newest feedback adapter was trained on {latest.base_name or latest.base_model}, "
                             f"not on --model={context.model.spec.text}")
        self._context = context

    def adapter(self, view: StepView) -> str | None:
        from ..feedback import latest_adapter

        if self._context is None:
            raise RuntimeError(f"{self.name}: train() has not run")
        if view.step == 1 or self._current is None:
            latest = latest_adapter(self._context.feedback_dir)
            if latest is not None and latest.identity != self._current:
                self._context.model.register_adapter(latest.identity, latest.path)
                self._current = latest.identity
        return self._current
