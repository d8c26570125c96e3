"""Replay evaluation (`make replay`): walk simulated time forward, score each impression with the
model as trained on what was reported before it was requested, then learn what became visible."""
