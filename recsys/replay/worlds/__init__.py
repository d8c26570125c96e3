"""`make replay-worlds`: `make replay` over several worlds — other world seeds of the busy
configuration, or a grid of highlight shapes — and the realtime − fast_slow differences side by side:
reports/<name>.{json,md} and, for a grid of two or more axes, a heat map per figure. `cells.py` holds
the grid, `sweep.py` runs it, `compare.py` compares the worlds, `render.py` writes them down."""
