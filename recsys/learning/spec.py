"""How a model learns a label stream as it arrives: one spec (conf/learner/*.yaml) that `make replay`
and the live loop's continuous trainer both take, so that the replay the live report compares
against learns exactly as the live trainer did."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LearnerSpec:
    batch_size: int  # a batch is learned when it holds this many samples...
    max_wait_s: float  # ...or when its oldest sample has waited this long (data time)
    batch_norm_min_batch: int  # smaller batches normalise dense features with the running statistics

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_wait_s <= 0 or self.batch_norm_min_batch < 1:
            raise ValueError(f"learner: batch_size and batch_norm_min_batch must be at least 1 and max_wait_s "
                             f"positive, got {self.batch_size}, {self.batch_norm_min_batch} and {self.max_wait_s}")

    @property
    def max_wait_ms(self) -> int:
        return int(round(self.max_wait_s * 1000))
