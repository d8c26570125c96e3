"""Serving: the C++ ranker (serving/ranker/: two front ends, one engine, a model store that follows
pushes), its service contract (serving/proto/ranker.proto) and the Python helpers around it — the
gRPC client and a ranker run as a child process. It serves what `export` writes; nothing here
writes a model."""
