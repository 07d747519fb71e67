# make install: .venv with the package (editable), its test tools and KenLM's lmplz/build_binary.
# make test / make demo run `make install` first when .venv is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml tools/build_kenlm.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	tools/build_kenlm.sh $(VENV)
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/hybrid-hwr demo

clean:
	rm -rf $(VENV) build *.egg-info
