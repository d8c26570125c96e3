# Moment&Cross — the menu. `make help` lists every target.
# Job targets pass ARGS through as Hydra overrides: make simulate ARGS="world=tiny"

SHELL := /bin/bash
PYTHON_BOOT ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
ARGS ?=
# Where the torch CPU wheel lies on this kind of machine; any folder of wheels works.
TORCH_FIND_LINKS ?= /opt/wheels
FIND_LINKS := $(if $(wildcard $(TORCH_FIND_LINKS)),--find-links $(TORCH_FIND_LINKS))

.DEFAULT_GOAL := help
.PHONY: help setup setup-system setup-peers proto setup-gpu install-gpu check-gpu check-stack test test-fast simulate ingest history streams train replay replay-worlds ablate export ranker ranker-build online online-train bench clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

setup: setup-system ## system packages (apt-get), .venv with the pinned CPU stack (torch+cpu, fbgemm-gpu-cpu, torchrec --no-deps, project), the benchmark peers' .venv-peers, then the C++ ranker's build
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet --only-binary=:all: $(FIND_LINKS) -r requirements/torch-cpu.txt
	$(PIP) install --quiet -c requirements/constraints-cpu.txt "fbgemm-gpu-cpu==1.8.0"
	$(PIP) install --quiet --no-deps "torchrec==1.8.0"
	$(PIP) install --quiet -c requirements/constraints-cpu.txt -e ".[dev]"
	$(MAKE) --no-print-directory check-stack
	$(MAKE) --no-print-directory setup-peers
	$(MAKE) --no-print-directory ranker

setup-system: ## install the C++ ranker's Debian packages (requirements/system-packages.txt) when a need of the build is unmet
	@requirements/install-system-packages.sh

PEERS_VENV := .venv-peers
setup-peers: ## the service benchmark's PyTriton peer in an environment of its own (.venv-peers: it needs numpy<2 and protobuf<7)
	$(PYTHON_BOOT) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/pip install --quiet --only-binary=:all: $(FIND_LINKS) -r requirements/torch-cpu.txt
	$(PEERS_VENV)/bin/pip install --quiet -c requirements/constraints-cpu.txt -r requirements/peers.txt

proto: ## regenerate the Python gRPC client code (serving/proto/*_pb2*.py) from ranker.proto
	$(PY) -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. --pyi_out=. serving/proto/ranker.proto

setup-gpu: install-gpu check-gpu ## create .venv with the CUDA stack and check a GPU is visible (GPU machines only)

install-gpu: ## install the CUDA stack into .venv without checking for a GPU (used by docker/train-gpu.Dockerfile)
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "torch==2.13.0" "fbgemm-gpu==1.8.0"
	$(PIP) install --quiet --no-deps "torchrec==1.8.0"
	$(PIP) install --quiet "torch==2.13.0" -e ".[dev]"

check-gpu: ## verify the CUDA stack imports and sees a GPU
	$(PY) -c "import torch, fbgemm_gpu, torchrec; assert torch.cuda.is_available(), 'CUDA torch installed but no GPU visible'; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count())"

check-stack: ## verify the installed stack is the CPU build and imports
	@$(PY) -m recsys.stack_check

test: ## the whole test suite (what CI runs) on two workers, a test file each at a time (docs/setup.md)
	$(PY) -m pytest -q -n 2 --dist loadfile

test-fast: ## the inner loop: every test not marked slow (no multi-process, ranker-build, training or replay runs)
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow"

simulate: ## simulate a world, ingest it, build its history store (ARGS="world=tiny|default|large")
	$(PY) -m data_pipelines.jobs.simulate $(ARGS)

ingest: ## ingest KuaiLive-schema logs (ARGS="data=kuailive data.source_dir=/path data.name=kuailive")
	$(PY) -m data_pipelines.jobs.ingest $(ARGS)

history: ## rebuild the interaction-log store from canonical tables (ARGS="world=tiny" or "data=kuailive")
	$(PY) -m data_pipelines.jobs.history $(ARGS)

streams: ## label streams + GSU sequences -> WebDataset shards + label-consistency report (ARGS="stream=realtime")
	$(PY) -m data_pipelines.jobs.streams $(ARGS)

train: ## one training run (ARGS="world=tiny trainer.devices=2 model=cgc cross=none ...")
	$(PY) -m recsys.train.train $(ARGS)

online: ## the live loop: broker (redis-server), label joiner, continuous trainer + pushes, ranker, traffic driver on an accelerated clock -> reports/online.{json,md,png} (ARGS="world=tiny online.speed=200")
	$(PY) -m online.live $(ARGS)

online-train: ## the continuous trainer: full export + a push every 30 s of data time into artifacts/online, which a running ranker applies (ARGS="world=tiny online_train.pace=0.05")
	$(PY) -m online $(ARGS)

replay: ## online replay on the busy world (make simulate/streams ARGS="world=busy" first): realtime, fast_slow, oracle, frozen x seeds x push intervals -> reports/replay.{json,md} + PNGs
	$(PY) -m recsys.replay $(ARGS)

replay-worlds: ## make replay over several worlds, realtime - fast_slow (or - each peer) side by side (ARGS="worlds=seeds|seeds_peers|highlight_shape") -> reports/<sweep>.{json,md}
	$(PY) -m recsys.replay.worlds $(ARGS)

ablate: ## the experiment grid, seeds x conf/experiment/* -> reports/ablation.{json,md,png} (resumable)
	$(PY) -m recsys.ablate $(ARGS)

export: ## TorchScript + model.json from the newest checkpoint (ARGS="checkpoint=logs/checkpoints/<run>/<ckpt> name=...")
	$(PY) -m export $(ARGS)

RANKER_BUILD := serving/ranker/build
ranker: ## build the C++ ranker against the wheel's libtorch -> serving/ranker/build/{ranker (JSON lines), ranker_server (gRPC)}
	@test -x $(PY) || { echo "no .venv: run make setup first"; exit 1; }
	@mkdir -p $(RANKER_BUILD)
	@# One build at a time in the build directory (parallel tests and benchmarks may all ask for it).
	@flock $(RANKER_BUILD)/.lock $(MAKE) --no-print-directory ranker-build

ranker-build:
	cmake -S serving/ranker -B $(RANKER_BUILD) -DCMAKE_BUILD_TYPE=Release \
		-DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
		-DFBGEMM_OPS_DIR="$$($(PY) -c 'import os, fbgemm_gpu; print(os.path.dirname(fbgemm_gpu.__file__))')" >/dev/null
	cmake --build $(RANKER_BUILD) -j $$(nproc)

bench: ## every benchmark, figures printed (ARGS="world=default")
	$(PY) -m bench $(ARGS)

clean: ## remove generated data, reports and build outputs (keeps .venv)
	rm -rf data outputs logs reports artifacts wandb serving/ranker/build
