"""Export: a trained model as the tensor-only files a ranker serves (`make export`: TorchScript,
AOTInductor, model.json), the JSON request format they are scored with, and pushes (the rows and
tensors learned since an export). The ranker that serves them lives in serving/."""
