# make demo: .venv with the package (editable), then the demo. It needs no KenLM tools.
# make test / make install: also the test tools, PyTorch (TORCH) and KenLM's lmplz/build_binary.
# Missing Debian packages are installed first when possible (root or passwordless sudo);
# otherwise the one command to run is printed. Stamps are written only when a step succeeds.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SCRIPTS := hybrid_hwr/scripts
PACKAGE_STAMP := $(VENV)/.package
STAMP := $(VENV)/.installed
# pip arguments that install PyTorch for the CRNN-CTC tests (a CPU build is enough; the
# wheel index decides which build 2.13.0 is); `make test TORCH=` skips it and those tests
TORCH ?= torch==2.13.0
# the package that ships the official PAGE 2019 schema the PAGE output tests validate against;
# installed without its dependencies (OCR-D's services and databases): only the .xsd is read
PAGE_SCHEMA ?= ocrd==3.13.3

.PHONY: install package test demo clean

package: $(PACKAGE_STAMP)
install: $(STAMP)

$(PACKAGE_STAMP): setup.cfg pyproject.toml $(SCRIPTS)/system_packages.sh
	PYTHON=$(PYTHON) bash $(SCRIPTS)/system_packages.sh demo
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(PACKAGE_STAMP)

$(STAMP): $(PACKAGE_STAMP) $(SCRIPTS)/build_kenlm.sh
	$(BIN)/pip install --quiet -e '.[test]'
	$(if $(strip $(TORCH)),$(BIN)/pip install --quiet $(TORCH))
	$(if $(strip $(PAGE_SCHEMA)),$(BIN)/pip install --quiet --no-deps $(PAGE_SCHEMA))
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	bash $(SCRIPTS)/build_kenlm.sh $(VENV)
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

demo: package
	$(BIN)/hybrid-hwr demo

clean:
	rm -rf $(VENV) build *.egg-info
