"""Where `make ranker` puts the C++ ranker's programs (serving/ranker/CMakeLists.txt)."""

from __future__ import annotations

from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent / "ranker"
BUILD_DIR = SOURCE_DIR / "build"
RANKER_TOOL = BUILD_DIR / "ranker"  # the JSON-lines front end and its benchmark mode
RANKER_SERVER = BUILD_DIR / "ranker_server"  # the gRPC service, /healthz and /metrics
FEATURE_TOOL = BUILD_DIR / "ranker_features"  # the feature stage alone: events and queries in, features out
