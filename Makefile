# `make demo` and `make test` work on a fresh machine with only Python installed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build for this project's machines; on a GPU machine install your own torch first (TORCH= skips it).
TORCH  ?= torch==2.13.0
DEMO   ?= demo_out
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(TORCH),$(BIN)/python -m pip install -q "$(TORCH)")
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/ntu-prep synth $(DEMO)/raw --samples 240 --classes 6
	$(BIN)/ntu-prep extract --skeletons $(DEMO)/raw --out $(DEMO)/synth.zarr --dataset ntu60 --jobs 2
	$(BIN)/ntu-prep split --protocol xsub $(DEMO)/synth.zarr
	$(BIN)/ntu-prep split --protocol xview $(DEMO)/synth.zarr
	$(BIN)/ntu-prep verify $(DEMO)/synth.zarr
	$(BIN)/ntu-prep info $(DEMO)/synth.zarr
	$(BIN)/ntu-prep sheet $(DEMO)/synth.zarr $(DEMO)/sheet.png
	@echo "demo output: $(abspath $(DEMO))/synth.zarr, contact sheet $(abspath $(DEMO))/sheet.png"
	@echo "(the raw synthetic corpus is in $(abspath $(DEMO))/raw)"

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/skeleton_stage.py
	$(BIN)/python bench/store_codec.py
	$(BIN)/python bench/model_speed.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
