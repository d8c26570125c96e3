"""Serving: the tensor-only TorchScript export of a trained model (`make export`), the JSON request
format it is scored with, and the C++ ranker in export/ranker/ that serves it (`make ranker`)."""
