# The two commands a newcomer needs: `make serve` (export the default models, then serve
# them) and `make test`. Everything else is a step of those or a tool for developers.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
REPO ?= model_repository

.PHONY: setup test-deps test lint format samples zoo-table export serve clean

# torch==2.13.0 first: the CPU build (a bare `torch` would pull a multi-GB CUDA build).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[serve,export,loadtest,test]'
	touch $@

setup: $(VENV)/.installed

# The deploy tests (tests/deploy/) put a real nginx in front of replicas, and the page's test
# (tests/service/frontend/test_page.py) drives a real headless Chromium: installed with apt-get when missing.
test-deps:
	@missing=""; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="nginx"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		if command -v apt-get >/dev/null; then \
			sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
			$$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -q --no-install-recommends $$missing; \
		else \
			echo "make test needs$$missing: install it (brew install nginx chromium, dnf install nginx chromium)" >&2; \
			exit 1; \
		fi; \
	fi

test: setup test-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

export: setup
	$(PY) export/to_onnx.py --output $(REPO) --if-missing

serve: export
	$(PY) -m service --model-repository $(REPO)

# cat.jpg, coffee.jpg and digit.png: the files README's curl examples send.
samples: setup
	$(PY) -m loadtest.images samples

zoo-table: setup
	$(PY) -m models.zoo_table

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache

# Benchmarks and load tests (loadtest/): figures, not tests. Results go to loadtest/results/ (ignored).
.PHONY: bench bench-protocols startup attack loadtest tune
BENCH_MODEL ?= resnet50
MODEL ?= resnet50
TUNE_ARGS ?=
BENCH_ARGS ?=
ATTACK_ARGS ?=
LOCUST_USERS ?= 16
LOCUST_SPAWN_RATE ?= 4
LOCUST_RUN_TIME ?= 60s
LOADTEST_PORT ?= 8123

# Raw engine vs the service (batched and not) on one model; prints a Markdown table, writes JSON.
bench: export
	$(PY) loadtest/bench.py --model $(BENCH_MODEL) --repository $(REPO) $(BENCH_ARGS) \
		--output loadtest/results/bench-$$(date -u +%Y%m%dT%H%M%SZ).json

# Triton's Model Analyzer in one command: images/s and batch latency per batch size and per session count on this
# machine, and the configuration to use for the model's latency objective. WRITE=1 records it in config.json.
tune: export
	$(PY) -m loadtest.tune --model $(MODEL) --repository $(REPO) $(if $(WRITE),--write) $(TUNE_ARGS)

# Every API on the same photos and concurrency: /v1/classify, V2 JSON, V2 binary and gRPC, with encoded images
# and with tensors the client preprocessed (FP32, and UINT8 from a --uint8 export); prints a Markdown table.
PROTOCOL_MODELS ?= resnet50 lenet5
bench-protocols: export
	$(PY) -m loadtest.protocols $(foreach m,$(PROTOCOL_MODELS),--model $(m)) --repository $(REPO) \
		--output loadtest/results/protocols-$$(date -u +%Y%m%dT%H%M%SZ).json

# Seconds from launch to ready: a cold start (TensorRT cache emptied), then two restarts with it kept.
startup: export
	$(PY) loadtest/startup.py --model $(BENCH_MODEL) --repository $(REPO) \
		--output loadtest/results/startup-$$(date -u +%Y%m%dT%H%M%SZ).json

# Every hostile client against a service started here, a well-behaved client alongside; prints a table, checks
# the targets (exit 1 if one is missed), writes JSON. ATTACK_ARGS=--through-nginx puts nginx in front.
attack: export
	$(PY) loadtest/attack.py --repository $(REPO) $(ATTACK_ARGS) \
		--output loadtest/results/attack-$$(date -u +%Y%m%dT%H%M%SZ).json

# The service on 127.0.0.1, Locust headless for LOCUST_RUN_TIME (LOCUST_MODELS, LOCUST_SHAPE: see
# loadtest/locustfile.py), CSV, HTML and PNG plots into loadtest/results/<timestamp>/, then the service stopped.
loadtest: export
	@out=loadtest/results/$$(date -u +%Y%m%dT%H%M%SZ); mkdir -p $$out; \
	$(PY) -m service --host 127.0.0.1 --port $(LOADTEST_PORT) --model-repository $(REPO) > $$out/service.log 2>&1 & \
	pid=$$!; trap 'kill -INT $$pid 2>/dev/null; wait $$pid' EXIT; \
	$(PY) -m loadtest.server http://127.0.0.1:$(LOADTEST_PORT) && \
	$(VENV)/bin/locust -f loadtest/locustfile.py --host http://127.0.0.1:$(LOADTEST_PORT) --headless \
		-u $(LOCUST_USERS) -r $(LOCUST_SPAWN_RATE) --run-time $(LOCUST_RUN_TIME) \
		--csv $$out/locust --csv-full-history --html $$out/report.html; \
	status=$$?; $(PY) -m loadtest.plots $$out/locust; echo "results in $$out"; exit $$status
