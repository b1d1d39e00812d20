"""share_sequential: continual learning in stages, one train family per stage (Share Phase 2 then 3)."""

from pytest_sleepy.training.strategies import SequentialShareStrategy


class ShareSequential(SequentialShareStrategy):
    name = "share_sequential"
    description = "Share learns one train family per stage (Phase 2 then 3); koans are evaluated after every stage"


STRATEGY = ShareSequential()
