"""The ranker service contract (ranker.proto) and its generated Python client code (make proto)."""
