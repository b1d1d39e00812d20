"""lora: one LoRA adapter trained on the train records of the patterns the baseline fails."""

from pytest_sleepy.training.strategies import LoraStrategy


class Lora(LoraStrategy):
    name = "lora"
    description = "one LoRA adapter trained on the train records of the patterns the baseline fails"
    selection = "targeted"


STRATEGY = Lora()
