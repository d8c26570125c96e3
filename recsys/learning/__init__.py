"""Learning a label stream as it arrives: the model trained batch by batch (`learner.py`), the rule
that closes batches against a clock (`batch_closer.py`), where the samples come from
(`sources.py`: the `SampleSource` protocol and the reader of a stream's shards) and the one spec of
how it learns (`spec.py`, conf/learner/). The replay drives them with simulated time, the live
loop's continuous trainer (online/trainer.py) with the broker's."""
