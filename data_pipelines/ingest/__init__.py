"""Ingestion of KuaiLive / KuaiLive-M3 style logs (CSV or Parquet) into canonical event tables.

Column names live in `conf/data/*.yaml`; bad rows are quarantined with their reason, never
dropped silently."""

from data_pipelines.ingest.pipeline import IngestError, IngestReport, TableSource, ingest

__all__ = ["IngestError", "IngestReport", "TableSource", "ingest"]
