# make setup | make test | make demo   (see README.md)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.lfads-installed
DEMO   ?= runs/demo
# Epochs of the demo: enough to pass R² 0.9 with margin within the 10-minute budget on 2 cores.
DEMO_EPOCHS ?= 100
# Threads for torch in tests and the demo: every CPU this machine gives us.
THREADS ?= $(shell $(PYTHON) -c "import os; print(len(os.sched_getaffinity(0)))")

.PHONY: setup test demo bench clean

setup: $(STAMP)

# Installs lfads-core and every plugin package editable, with the CPU torch pinned for dev/CI.
$(STAMP): pyproject.toml plugins/lfads_spikes/pyproject.toml lfads_calcium/pyproject.toml lfads_emg/pyproject.toml plugins/lfads_multisession/pyproject.toml requirements-dev.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -r requirements-dev.txt
	touch $(STAMP)

test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q

demo: setup
	$(VENV)/bin/lfads-run synth lorenz --out $(DEMO)/lorenz.h5 --seed 0
	LFADS_THREADS=$(THREADS) $(VENV)/bin/lfads-run examples/lorenz.yaml --out $(DEMO)/run --force \
		--set data.path=$(abspath $(DEMO))/lorenz.h5 --set train.max_epochs=$(DEMO_EPOCHS)
	$(PY) -c "import json; s = json.load(open('$(DEMO)/run/summary.json')); \
		print('R^2 of inferred rates vs truth: train %.3f, valid %.3f' % (s['train_rate_r2'], s['valid_rate_r2'])); \
		print('plots in $(DEMO)/run/plots, outputs in $(DEMO)/run/lfads_output.h5')"

bench: setup
	$(PY) benchmarks/train_speed.py

clean:
	rm -rf $(VENV) $(DEMO)
