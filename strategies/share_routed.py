"""share_routed: Share subspace of per-pattern LoRAs; the router picks a pattern's adapter from the diagnostics."""

from pytest_sleepy.training.strategies import ShareStrategy


class ShareRouted(ShareStrategy):
    name = "share_routed"
    description = "Share subspace of per-pattern LoRAs; the router picks a pattern's adapter from the diagnostics"
    routed = True


STRATEGY = ShareRouted()
