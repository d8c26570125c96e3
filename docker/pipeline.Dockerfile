# The data-pipeline image for a Ray cluster: Ray's own CPU image (Python 3.11, ray 2.60.0) plus this
# project with the pinned CPU stack, so that the head and every worker import the same code. The
# development machines have no Docker engine, so this file is built elsewhere:
#   docker build -f docker/pipeline.Dockerfile -t moment-cross-pipeline .
# deploy/ray-job.yaml runs `make streams ARGS="engine=ray ..."` on a KubeRay cluster of this image.
FROM rayproject/ray:2.60.0-py311-cpu
WORKDIR /home/ray/moment-cross
COPY --chown=ray:users requirements/ requirements/
# The same order as `make setup`: the CPU torch wheel (PyTorch's CPU index), fbgemm-gpu-cpu
# constrained to it, torchrec without its CUDA dependency; then the project.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
 && pip install --no-cache-dir -c requirements/constraints-cpu.txt "fbgemm-gpu-cpu==1.8.0" \
 && pip install --no-cache-dir --no-deps "torchrec==1.8.0"
COPY --chown=ray:users . .
RUN pip install --no-cache-dir -c requirements/constraints-cpu.txt -e . \
 && python -c "import ray, data_pipelines.ray_engine.streams; print('ray', ray.__version__)"
