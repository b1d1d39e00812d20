"""lora_weighted: LoRA on all train records, sampled by weight (critical 10x, medium 3x, good 1x)."""

from pytest_sleepy.training.strategies import LoraStrategy


class LoraWeighted(LoraStrategy):
    name = "lora_weighted"
    description = "LoRA on all train records, sampled by weight (critical 10x, medium 3x, good 1x)"
    selection = "weighted"
    train_overrides = {"weighted": True}


STRATEGY = LoraWeighted()
