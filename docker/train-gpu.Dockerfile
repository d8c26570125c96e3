# GPU training image: CUDA torch 2.13.0, fbgemm-gpu 1.8.0 and torchrec 1.8.0 (the project's pins).
# The torch wheel brings its own CUDA runtime libraries; the host provides the driver
# (NVIDIA Container Toolkit). There is no Docker engine on the CPU development machines, so this
# file is built on a GPU host:
#   docker build -f docker/train-gpu.Dockerfile -t moment-cross-train .
#   docker run --gpus all -v $PWD/data:/app/data moment-cross-train make check-gpu
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends make \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml Makefile README.md ./
COPY requirements ./requirements
COPY recsys ./recsys
COPY data_pipelines ./data_pipelines
COPY export ./export
COPY bench ./bench
COPY conf ./conf
# No GPU is visible while building: install only; `make check-gpu` runs in the container.
RUN make install-gpu PYTHON_BOOT=python3.11
ENV PATH="/app/.venv/bin:${PATH}"
CMD ["make", "help"]
