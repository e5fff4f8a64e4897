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

# The demo (README "make demo"): 480 synthetic samples of 6 classes whose twins only one modality tells
# apart (0/1: a red or a blue ball, in the video only; 2/3: a push towards the camera, in the skeleton's
# depth only), so each single stream tops out at 5/6 and only a model of both can be right on all.
# A CPU recipe: 16-frame clips, 32^2 crops of 40^2 frames, Adam, no flip (the synthetic classes are
# handed); ccdfarm starts its streams from the hcn and i3d runs (--init-from).
FIT     = $(BIN)/ntu-train fit --store $(DEMO)/synth.zarr --protocol xsub --batch-size 8 --frames 16 \
          --crop 32 --flip 0 --optimizer adam --lr 0.004 --weight-decay 0 --warmup-epochs 1 --dropout 0.1 \
          --bn-momentum 0.1 --workers 2 --quiet
RUNS    = $(DEMO)/runs
# a test-split recording (performer 29) of class 2, "eat meal/snack": the blue-ball twin of class 1
RECORDING = $(DEMO)/raw/S001/S001C001P029R002A002

demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/ntu-prep synth $(DEMO)/raw --samples 480 --classes 6 --jobs 2
	$(BIN)/ntu-prep extract --skeletons $(DEMO)/raw --videos $(DEMO)/raw --out $(DEMO)/synth.zarr \
		--dataset ntu60 --jobs 2 --frames 16 --size 40
	$(BIN)/ntu-prep split --protocol xsub $(DEMO)/synth.zarr
	$(BIN)/ntu-prep split --protocol xview $(DEMO)/synth.zarr
	$(BIN)/ntu-prep verify $(DEMO)/synth.zarr
	$(BIN)/ntu-prep info $(DEMO)/synth.zarr
	$(BIN)/ntu-prep sheet $(DEMO)/synth.zarr $(DEMO)/sheet.png
	$(BIN)/ntu-prep preview $(DEMO)/synth.zarr -o $(DEMO)/preview.png
	$(FIT) --model hcn --out $(RUNS)/hcn --epochs 20 --lr 0.016
	$(FIT) --model i3d --out $(RUNS)/i3d --epochs 6
	$(FIT) --model ccdfarm --out $(RUNS)/ccdfarm --epochs 3 \
		--init-from $(RUNS)/hcn/best.pt --init-from $(RUNS)/i3d/best.pt
	$(BIN)/ntu-train eval --checkpoint $(RUNS)/hcn/best.pt --store $(DEMO)/synth.zarr --protocol xsub \
		--clips 10 --out $(RUNS)/hcn-10clips
	$(BIN)/ntu-train ensemble $(RUNS)/hcn $(RUNS)/i3d --out $(RUNS)/hcn+i3d
	@echo
	$(BIN)/ntu-train predict --checkpoint $(RUNS)/hcn/best.pt --skeleton $(RECORDING).skeleton
	$(BIN)/ntu-train predict --checkpoint $(RUNS)/ccdfarm/best.pt --skeleton $(RECORDING).skeleton \
		--video $(RECORDING)_rgb.avi --picture $(DEMO)/predict.png
	@echo
	$(BIN)/ntu-train summary $(RUNS)/hcn $(RUNS)/hcn-10clips $(RUNS)/i3d $(RUNS)/hcn+i3d $(RUNS)/ccdfarm \
		--plot $(DEMO)/curves.png
	@echo "store $(abspath $(DEMO))/synth.zarr; pictures: $(abspath $(DEMO))/{sheet,preview,predict,curves}.png"

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
	$(BIN)/python bench/rgb_loader.py
	$(BIN)/python bench/train_speed.py
	$(BIN)/python bench/export_memory.py

# Every CUDA path of training, checked and measured (bench/gpu_check.py); says so and exits 2 without CUDA.
gpu-check: $(STAMP)
	$(BIN)/python bench/gpu_check.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
