"""Lightning + TorchRec glue: the LightningModule, the DMP strategy, data, metrics, entry point."""
