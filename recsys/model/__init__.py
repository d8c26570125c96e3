"""The Moment&Cross model: TorchRec embeddings, GSU/ESU cross towers, CGC/PLE multi-task heads."""
