"""The data stream engine: label windows (fast_slow, realtime), request-time features, GSU
retrieval, and WebDataset shards ordered by the time samples become visible to training."""
