"""The Ray Data engine of `make history` and `make streams` (`engine=ray`, conf/engine/ray.yaml).

The same pure functions as the local engine, mapped over buckets: `history` builds one history
store per user bucket; `streams` computes the room state per room bucket, then per user bucket the
user's features, the GSU sequences and every stream's samples, sorts each stream by report time and
writes its shards through the one shard writer. Inputs and outputs live on any pyarrow filesystem
(`storage`). Importing this package does not import Ray; `session` starts or joins it."""
