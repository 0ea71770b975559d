# The stage, zeroshot, store, demo, predict and bench targets are thin wrappers over the `vidstore` CLI
# (stages/cli.py): every variable is optional, and one that is set becomes the matching
# --option, so the CLI's defaults and validation are the only ones. setup, the test targets,
# gpu-wheels, gpu-check and clean-venv run pip, pytest or stages.gpu_check instead.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# @: stdout holds only the results (make would echo the command line there)
CLI := @$(PY) -m stages
# The torch build to install; the pins match the wheels cached on the dev/CI machines.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

# --opt "value" only when the variable is non-empty.
opt = $(if $($(1)),--$(2) "$($(1))")
flag = $(if $(filter 1 yes true,$($(1))),--$(2))

# Each target's options (FEATURES_OPTS, TRAIN_OPTS, ...): generated from the options' fields.
include $(dir $(lastword $(MAKEFILE_LIST)))options.mk

.PHONY: setup features train evaluate zeroshot compare localize annotations-thumos14 predict export demo test test-all test-gpu gpu-check gpu-wheels gpu-vf-bundle bench backbones store-list store-info store-verify store-gc store-push store-pull clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || { \
	  echo "ffmpeg not found: installing Debian's ffmpeg package"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq ffmpeg >/dev/null \
	  || { echo "Could not install ffmpeg. Install it yourself: 'apt-get install ffmpeg' (Debian/Ubuntu), 'brew install ffmpeg' (macOS) or 'conda install -c conda-forge ffmpeg'."; exit 1; }; }
	@# Optional: jemalloc keeps freed memory for the next backbone batch (docs/allocator.md);
	@# without it the commands fall back to glibc's tunables on their own.
	@ls /usr/lib/*/libjemalloc.so.2 /usr/lib64/libjemalloc.so.2 /usr/lib/libjemalloc.so.2 2>/dev/null | grep -q . \
	  || ! command -v apt-get >/dev/null || { \
	  echo "jemalloc not found: installing Debian's libjemalloc2 package (optional)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y -qq libjemalloc2 >/dev/null 2>&1 \
	  || { $$SUDO apt-get update -qq >/dev/null 2>&1 && $$SUDO apt-get install -y -qq libjemalloc2 >/dev/null 2>&1; } \
	  || echo "Could not install libjemalloc2 (optional; 'apt-get install libjemalloc2' makes stage one faster on a CPU)."; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

features: setup
	$(CLI) features $(FEATURES_OPTS)

train: setup
	$(CLI) train $(TRAIN_OPTS)

evaluate: setup
	$(CLI) evaluate $(EVALUATE_OPTS)

# An OpenCLIP set's test videos scored by its checkpoint's text tower (docs/zeroshot.md).
zeroshot: setup
	$(CLI) zeroshot $(ZEROSHOT_OPTS)

compare: setup
	$(CLI) compare $(COMPARE_OPTS)

# Temporal action localization on a dense set (FEATURES=) with ActivityNet-style ANNOTATIONS=;
# with neither, on the generated untrimmed sample (docs/localization.md).
localize: setup
	$(CLI) localize $(LOCALIZE_OPTS)

# THUMOS14's per-class annotation files (DIR=) as one ActivityNet-style JSON (OUT=) for ANNOTATIONS=.
annotations-thumos14: setup
	$(CLI) annotations thumos14 $(ANNOTATIONS_THUMOS14_OPTS)

predict: setup
	$(CLI) predict "$(VIDEO)" $(PREDICT_OPTS)

# A feature set as one float32 .npy per video plus a JSON index (FORMAT=npy|actionformer; docs/store.md).
export: setup
	$(CLI) export $(EXPORT_OPTS)

# The main job end to end on the embedded sample: generate it, extract, train, evaluate.
demo: setup
	$(CLI) demo $(DEMO_OPTS)

# Quick suite: lint and the type checker first (they fail in seconds), then every test but
# those marked slow or gpu; the acceptance tier (tests/acceptance/, docs/testing.md) is in.
# Offline from the start (tests/offline.py); the 15 slowest tests are listed at the end.
# TEST_WORKERS test processes (pytest-xdist), each given whole test files (their shared fixtures),
# the longest first (tests/schedule.py; docs/testing.md). Torch's idle OpenMP threads sleep instead
# of spinning (OMP_WAIT_POLICY: the same threads and results), so a spinning thread does not take the
# core another worker's thread needs.
TEST_WORKERS ?= 2
PYTEST_PARALLEL = -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
PYTEST_ENV = OMP_WAIT_POLICY=PASSIVE
test: setup
	$(PY) -m ruff check pipeline stages tests
	$(PY) -m ruff format --check pipeline stages tests
	$(PY) -m mypy
	$(PYTEST_ENV) $(PY) -m pytest -q -m "not slow and not gpu" $(PYTEST_PARALLEL) --durations=15 $(PYTEST_ARGS)

test-all: setup
	$(PYTEST_ENV) $(PY) -m pytest -q $(PYTEST_PARALLEL) --durations=15 $(PYTEST_ARGS)

test-gpu: setup
	$(PY) -m pytest -q -m gpu $(PYTEST_ARGS)

# On a lent GPU machine (torch there; no ffmpeg, no network, no venv): the GPU tests, the
# bench with the CUDA defaults, stage two's 50 epochs, DEVICES=cuda:0,cuda:0 and the default
# suite, in one call, into $OUT/gpu-check.json (else bench/). Carry .whl/ (make gpu-wheels).
GPU_PYTHON ?= python3
gpu-check:
	$(GPU_PYTHON) -m stages.gpu_check $(call opt,GPU_BUDGET,budget) $(call opt,CLIPS,clips) $(call opt,SKIP,skip)

# Here, before a GPU session: PyAV, the static ffmpeg and the packages that machine lacks, as
# wheels for its Python (3.12), in .gpu-wheels/ (77 MB, over the 64 MiB a call may carry), then
# unzipped and packed with xz as .whl/pylib.tar.xz (both git-ignored; docs/bench.md has the sizes).
# Second line: timm and OpenCLIP (the model families' libraries) with what they import: the
# Hugging Face hub client and its HTTP stack, ftfy, regex and PyYAML (cp312 binary wheels),
# safetensors (abi3). hf-xet is left out: the hub imports it only to download, which that machine cannot.
GPU_WHEELS = av==18.1.0 imageio-ffmpeg==0.6.0 ffmpeg-python==0.2.0 future==1.0.0 dask==2026.8.0 \
  distributed==2026.8.0 partd==1.4.2 locket==1.0.0 tblib==3.2.2 zict==3.0.0 tornado==6.6.1 toolz==1.2.0 \
  cloudpickle==3.1.3 \
  timm==1.0.31 open_clip_torch==3.3.0 safetensors==0.8.0 huggingface_hub==2.4.0 ftfy==6.3.1 wcwidth==0.9.4 \
  regex==2026.11.19 PyYAML==6.0.4 httpx2==2.16.2 httpcore2==2.16.2 anyio==4.16.0 h11==0.16.0 idna==3.20 \
  truststore==0.10.5 tqdm==4.70.1
gpu-wheels: setup
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  --platform manylinux1_x86_64 -d .gpu-wheels $(GPU_WHEELS)
	$(PY) -m stages.gpu_check --pack .gpu-wheels --wheels .whl

# Here, before a GPU session that measures the side by side with v-iashin/video_features (docs/bench.md):
# .vf/ (git-ignored; a call of its own carries it, after the one carrying .whl) holds the files of its
# ResNet-50 path at the commit the CPU figure used, from VF_SOURCE= (a git URL or path), and as
# .vf/pylib.tar.xz the wheels that path imports (found by running it) for that machine's Python 3.12,
# downloaded into .gpu-vf-wheels/ (51.1 MB, OpenCV's 49.9) and packed as gpu-wheels' are (30.5 MiB).
# antlr4-python3-runtime 4.9.3 (omegaconf 2.3.0's pin) is on PyPI as source only: pip builds its
# pure-Python wheel here. omegaconf and antlr4 at its conda_env.yml's versions, PyYAML and tqdm at
# gpu-wheels' ones; OpenCV 4.11.0.86, not its 4.7, which is built against NumPy 1 and fails to import
# beside NumPy 2 (that machine's and this venv's). That machine's image has had OpenCV, PyYAML and
# tqdm too: the bundle carries its own all the same, so that the step does not hang on the image's.
VF_SOURCE ?= https://github.com/v-iashin/video_features
VF_COMMIT = a2f61b7a4cf0ca6a2d91dcc2182f57e7cfd12664
VF_FILES = LICENSE main.py configs/resnet.yml models/_base/base_extractor.py models/_base/base_framewise_extractor.py \
  models/resnet/extract_resnet.py utils/io.py utils/utils.py utils/IN1K_label_map.txt
VF_WHEELS = omegaconf==2.3.0 PyYAML==6.0.4 opencv-python-headless==4.11.0.86 tqdm==4.70.1
gpu-vf-bundle: setup
	rm -rf .vf .gpu-vf-wheels && mkdir -p .vf/video_features
	set -o pipefail; src=$$(mktemp -d) && trap 'rm -rf "$$src"' EXIT \
	  && git clone -q --bare "$(VF_SOURCE)" "$$src/video_features.git" \
	  && git --git-dir="$$src/video_features.git" archive $(VF_COMMIT) $(VF_FILES) | tar -x -C .vf/video_features
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  --platform manylinux1_x86_64 -d .gpu-vf-wheels $(VF_WHEELS)
	$(PY) -m pip wheel -q --no-deps --no-binary=antlr4-python3-runtime -w .gpu-vf-wheels antlr4-python3-runtime==4.9.3
	$(PY) -m stages.gpu_check --pack .gpu-vf-wheels --wheels .vf

# Stage one (BACKBONE=, seeded random WEIGHTS= by default) vs the decode ceiling and the seed method,
# stage two's 50 epochs: bench/results.json (docs/bench.md). Small on a CPU (8 clips, 112 px), UCF101-scale on CUDA.
bench: setup $(VENV)/.bench-installed
	$(CLI) bench $(BENCH_OPTS)

# The bench extra: OpenCV for the seed method's reader, imageio-ffmpeg for machines without ffmpeg.
$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[bench]'
	@touch $@

# The model families BACKBONE= and AUDIO_FEATURES= name; MARKDOWN=readme|extraction|architecture: that document's table.
backbones: setup
	$(CLI) backbones $(BACKBONES_OPTS)

store-list: setup
	$(CLI) store list $(STORE_LIST_OPTS)

# ID= a feature-set id (or a unique prefix, or dataset/id); store-verify/store-gc: all sets without it;
# store-info without it: the only set, or the list.
store-info: setup
	$(CLI) store info $(ID) $(STORE_INFO_OPTS)

store-verify: setup
	$(CLI) store verify $(ID) $(STORE_VERIFY_OPTS)

store-gc: setup
	$(CLI) store gc $(ID) $(STORE_GC_OPTS)

# A set copied between two roots (a directory, s3://bucket/prefix): TO= or FROM= the other root.
store-push: setup
	$(CLI) store push $(ID) $(STORE_PUSH_OPTS)

store-pull: setup
	$(CLI) store pull $(ID) $(STORE_PULL_OPTS)

clean-venv:
	rm -rf $(VENV)
