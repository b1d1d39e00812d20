"""share_averaged: Share subspace of per-pattern LoRAs; the core-averaged adapter on every step."""

from pytest_sleepy.training.strategies import ShareStrategy


class ShareAveraged(ShareStrategy):
    name = "share_averaged"
    description = "Share subspace of per-pattern LoRAs; the core-averaged adapter on every step"
    routed = False


STRATEGY = ShareAveraged()
