# The C++ ranker image: a build stage with the toolchain and the CPU torch / fbgemm wheels, and a
# slim runtime stage with only the binary, libtorch's shared libraries and the fbgemm operator
# libraries the exported model calls. The development machines have no Docker engine, so this file
# is built elsewhere:
#   docker build -f docker/ranker.Dockerfile -t moment-cross-ranker .
#   docker run -i -v $PWD/artifacts/<name>:/model moment-cross-ranker < requests.jsonl
# A newer export written into the mounted directory is picked up by the running ranker.

# ---- build ---------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ cmake make \
 && rm -rf /var/lib/apt/lists/*
COPY requirements/constraints-cpu.txt /tmp/constraints-cpu.txt
# The same pins as `make setup`: the CPU torch wheel (from PyTorch's CPU index, as the wheel folder
# of the development machines is not in the image), then fbgemm-gpu-cpu constrained to it.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
 && /opt/venv/bin/pip install --no-cache-dir -c /tmp/constraints-cpu.txt "fbgemm-gpu-cpu==1.8.0"
COPY export/ranker /src/ranker
RUN /opt/venv/bin/python -c "import torch; print(torch.utils.cmake_prefix_path)" > /tmp/torch_prefix \
 && cmake -S /src/ranker -B /build -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$(cat /tmp/torch_prefix)" -DFBGEMM_OPS_DIR=/opt/ranker/ops \
 && cmake --build /build -j "$(nproc)"
RUN site=$(/opt/venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
 && mkdir -p /opt/ranker/bin /opt/ranker/lib /opt/ranker/ops \
 && cp /build/ranker /opt/ranker/bin/ \
 && cp -a "$site"/torch/lib/*.so* /opt/ranker/lib/ \
 && cp "$site"/fbgemm_gpu/*.so /opt/ranker/ops/

# ---- runtime -------------------------------------------------------------------------------------
FROM debian:bookworm-slim
COPY --from=build /opt/ranker /opt/ranker
ENV LD_LIBRARY_PATH=/opt/ranker/lib
USER nobody
ENTRYPOINT ["/opt/ranker/bin/ranker", "--ops-dir", "/opt/ranker/ops"]
CMD ["--model", "/model"]
