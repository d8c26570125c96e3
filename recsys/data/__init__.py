"""Reading stream shards into TorchRec batches."""

from recsys.data.batch import Batch
from recsys.data.loader import CorruptShardError, ShardDataset, make_loader

__all__ = ["Batch", "CorruptShardError", "ShardDataset", "make_loader"]
