"""Online learning: a model trained sample by sample as labels arrive (`learner.py`), and the rule
that turns a label stream into training batches against a clock (`streaming.py`). Replay drives
both with simulated time; a continuous trainer would drive them with the wall clock."""
