# The C++ ranker image: a build stage with the toolchain, the gRPC development packages and the CPU
# torch / fbgemm wheels, and a slim runtime stage with the binaries, libtorch's shared libraries,
# the fbgemm operator libraries, and the gRPC, protobuf, cpp-httplib, simdjson and hiredis runtime libraries. The
# development machines have no Docker engine, so this file is built elsewhere:
#   docker build -f docker/ranker.Dockerfile -t moment-cross-ranker .
#   docker run -p 50051:50051 -p 8080:8080 -v $PWD/artifacts/<name>:/model moment-cross-ranker
# Ports: 50051 gRPC (moment_cross.ranker.v1.Ranker and grpc.health.v1.Health), 8080 HTTP (/healthz,
# /metrics). Inside the container the server binds every interface (--host 0.0.0.0) so that the
# published ports reach it; outside a container its default is loopback. `docker stop` sends
# SIGTERM: health turns NOT_SERVING, calls in flight finish, exit 0.
# The JSON-lines tool: docker run -i --entrypoint /opt/ranker/bin/ranker -v ...:/model IMAGE \
#   --ops-dir /opt/ranker/ops --model /model < requests.jsonl
# A newer export written into the mounted directory is picked up by the running server.
# Ids-only requests: mount the data set's feature catalog and point the server at the events broker,
#   ... -v $PWD/data/<name>/streams/feature_catalog:/catalog IMAGE --model /model \
#       --features-catalog /catalog --events-broker redis-host:6379 --event-partitions 4

# ---- build ---------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS build
# The build's Debian packages: the one list `make setup-system` installs from.
COPY requirements/system-packages.txt requirements/install-system-packages.sh /tmp/system/
RUN /tmp/system/install-system-packages.sh && rm -rf /var/lib/apt/lists/*
COPY requirements/constraints-cpu.txt /tmp/constraints-cpu.txt
# The same pins as `make setup`: the CPU torch wheel (from PyTorch's CPU index, as the wheel folder
# of the development machines is not in the image), then fbgemm-gpu-cpu constrained to it.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
 && /opt/venv/bin/pip install --no-cache-dir -c /tmp/constraints-cpu.txt "fbgemm-gpu-cpu==1.8.0"
COPY serving /src/serving
RUN /opt/venv/bin/python -c "import torch; print(torch.utils.cmake_prefix_path)" > /tmp/torch_prefix \
 && cmake -S /src/serving/ranker -B /build -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$(cat /tmp/torch_prefix)" -DFBGEMM_OPS_DIR=/opt/ranker/ops \
 && cmake --build /build -j "$(nproc)"
RUN site=$(/opt/venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
 && mkdir -p /opt/ranker/bin /opt/ranker/lib /opt/ranker/ops \
 && cp /build/ranker /build/ranker_server /build/ranker_features /opt/ranker/bin/ \
 && cp -a "$site"/torch/lib/*.so* /opt/ranker/lib/ \
 && cp "$site"/fbgemm_gpu/*.so /opt/ranker/ops/

# ---- runtime -------------------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgrpc++1.51 libprotobuf32 libcpp-httplib0.11 libsimdjson14 libhiredis0.14 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/ranker /opt/ranker
ENV LD_LIBRARY_PATH=/opt/ranker/lib
USER nobody
EXPOSE 50051 8080
# An AOTInductor package (model.pt2) is unpacked into a temporary directory when loaded: /tmp must be writable.
ENTRYPOINT ["/opt/ranker/bin/ranker_server", "--ops-dir", "/opt/ranker/ops", "--host", "0.0.0.0"]
CMD ["--model", "/model", "--port", "50051", "--http-port", "8080", "--drain-ms", "5000"]
