"""Data jobs: the simulated world, ingestion of KuaiLive-schema logs, the interaction-log store."""
