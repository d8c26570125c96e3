"""Moment&Cross: real-time cross-domain CTR prediction for live-streaming recommendation."""

__version__ = "0.1.0"
