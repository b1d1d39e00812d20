"""lora_feedback: the newest LoRA adapter trained from people's weighted corrections (sleepy feedback)."""

from pytest_sleepy.training.strategies import FeedbackStrategy


class LoraFeedback(FeedbackStrategy):
    name = "lora_feedback"
    description = "the newest adapter trained from weighted corrections (sleepy feedback), hot-swapped between items"


STRATEGY = LoraFeedback()
