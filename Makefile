# `make demo` and `make test` work on a fresh machine with only Python installed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build for this project's machines; on a GPU machine install your own torch first (TORCH= skips it).
TORCH  ?= torch==2.13.0
DEMO   ?= demo_out
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench gpu-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(TORCH),$(BIN)/python -m pip install -q "$(TORCH)")
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The demo's training recipe: small clips for a CPU (16 frames, 56^2 crops of 64^2 frames), Adam, no flip
# (the synthetic classes are handed). ccdfarm starts its streams from the hcn and i3d runs (--init-from).
FIT     = $(BIN)/ntu-train fit --store $(DEMO)/synth.zarr --protocol xsub --batch-size 8 --frames 16 \
          --crop 56 --flip 0 --optimizer adam --lr 0.004 --weight-decay 0 --warmup-epochs 1 --dropout 0.1 \
          --bn-momentum 0.1 --workers 2 --quiet

demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/ntu-prep synth $(DEMO)/raw --samples 240 --classes 6
	$(BIN)/ntu-prep extract --skeletons $(DEMO)/raw --videos $(DEMO)/raw --out $(DEMO)/synth.zarr \
		--dataset ntu60 --jobs 2 --frames 16 --size 64
	$(BIN)/ntu-prep split --protocol xsub $(DEMO)/synth.zarr
	$(BIN)/ntu-prep split --protocol xview $(DEMO)/synth.zarr
	$(BIN)/ntu-prep verify $(DEMO)/synth.zarr
	$(BIN)/ntu-prep info $(DEMO)/synth.zarr
	$(BIN)/ntu-prep sheet $(DEMO)/synth.zarr $(DEMO)/sheet.png
	$(BIN)/ntu-prep preview $(DEMO)/synth.zarr -o $(DEMO)/preview.png
	$(FIT) --model hcn --out $(DEMO)/runs/hcn --epochs 12 --lr 0.016
	$(FIT) --model i3d --out $(DEMO)/runs/i3d --epochs 8
	$(FIT) --model ccdfarm --out $(DEMO)/runs/ccdfarm --epochs 4 \
		--init-from $(DEMO)/runs/hcn/best.pt --init-from $(DEMO)/runs/i3d/best.pt
	$(BIN)/ntu-train eval --checkpoint $(DEMO)/runs/ccdfarm/best.pt --store $(DEMO)/synth.zarr --protocol xsub \
		--workers 2
	@echo
	$(BIN)/ntu-train summary $(DEMO)/runs/hcn $(DEMO)/runs/i3d $(DEMO)/runs/ccdfarm
	@echo "store $(abspath $(DEMO))/synth.zarr; pictures: $(abspath $(DEMO))/sheet.png, $(abspath $(DEMO))/preview.png"

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/skeleton_stage.py
	$(BIN)/python bench/store_codec.py
	$(BIN)/python bench/model_speed.py
	$(BIN)/python bench/rgb_stage.py
	$(BIN)/python bench/rgb_codec.py
	$(BIN)/python bench/train_speed.py
	$(BIN)/python bench/export_memory.py

# Every CUDA path of training, checked and measured (bench/gpu_check.py); says so and exits 2 without CUDA.
gpu-check: $(STAMP)
	$(BIN)/python bench/gpu_check.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
