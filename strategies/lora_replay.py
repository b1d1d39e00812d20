"""lora_replay: LoRA on targeted patterns plus replayed records of the patterns the baseline passes."""

from pytest_sleepy.training.strategies import LoraStrategy


class LoraReplay(LoraStrategy):
    name = "lora_replay"
    description = "LoRA on targeted patterns plus replayed records of the patterns the baseline passes"
    selection = "replay"


STRATEGY = LoraReplay()
