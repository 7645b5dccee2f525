# flamboyance: `make demo` runs everything end to end, `make test` runs the tests.
# Every target sets up its own virtualenv (.venv) on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export BIN

# The bundled sample web is served on 127.0.0.1:$(WEB_PORT) while crawling and downloading.
WEB_PORT ?= 8765
WEB_PAGES ?= 300
# naming stories on the sample web: none for `make demo` and the ETL targets, 300 for `make ablation`
# (empty: each script's default)
WEB_NAMING_PAGES ?=
export WEB_PORT WEB_PAGES WEB_NAMING_PAGES
# empty: flamboyance's LocalRunner (the DirectRunner's engine, 2 worker processes); `portable`: a
# local Beam job service + external SDK worker pool (scripts/portable_runner.py, stopped on exit);
# anything else is passed as `--runner` (DataflowRunner, FlinkRunner, ...; add options in ETL_FLAGS).
RUNNER ?=
DATA ?= data
SHARDS ?= $(DATA)/shards
CONFIG ?= trainer/configs/demo.yaml
RUN_DIR ?= runs/demo
LM_DIR ?= runs/lm
LM_FLAGS ?=
export LM_DIR LM_FLAGS
WITH_WEB := scripts/with-sample-web.sh

.PHONY: setup test lint demo bench bench-extract bench-filters crawl m3w image-text video-text etl stats report \
        pretrain-lm train eval ablation ray-up ray-down clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest tests

lint: setup
	$(BIN)/ruff check .

## ---- the pipeline, stage by stage (defaults run on the bundled sample web) ----
# crawl: serve the sample web and crawl it into WARC (INPUT = a seeds file to crawl the real web instead).
define crawl_sample_web
	mkdir -p $(DATA) && printf 'http://127.0.0.1:%s/\n' $(WEB_PORT) > $(DATA)/seeds.txt
	$(WITH_WEB) $(BIN)/flamboyance crawl $(DATA)/seeds.txt --out $(1) \
		--max-pages 1000 --same-host --allow-private-hosts --delay 0
endef
SAMPLE_CRAWL := $(DATA)/web/.done
crawl: setup
ifdef INPUT
	$(BIN)/flamboyance crawl $(INPUT) --out $(or $(OUTPUT),$(DATA)/web)
else
	$(call crawl_sample_web,$(or $(OUTPUT),$(DATA)/web))
	$(if $(OUTPUT),,touch $(SAMPLE_CRAWL))
endif

# The ETL targets without INPUT run on the crawl of the sample web, crawled first if missing.
$(SAMPLE_CRAWL): | setup
	$(call crawl_sample_web,$(DATA)/web)
	touch $@

M3W_INPUT = $(or $(INPUT),$(DATA)/web/*.warc.gz)
# The sample web lives on 127.0.0.1, which the downloaders refuse unless told (SSRF guard).
ETL_FLAGS ?= $(if $(INPUT),,--allow-private-hosts)
# ... and is only served when the default input (the crawl of the sample web) is used.
ETL_WEB := $(if $(INPUT),,$(WITH_WEB))
ETL_INPUT := $(if $(INPUT),,$(SAMPLE_CRAWL))
ETL_RUNNER := $(if $(filter portable,$(RUNNER)),$(BIN)/python scripts/portable_runner.py)
RUNNER_FLAG := $(if $(filter-out portable,$(RUNNER)),--runner $(RUNNER))
# $(call etl,JOB,DEFAULT_OUTPUT)
etl_job = $(ETL_WEB) $(ETL_RUNNER) $(BIN)/flamboyance etl $(1) --input '$(M3W_INPUT)' \
	--output $(or $(OUTPUT),$(2)) $(RUNNER_FLAG) $(ETL_FLAGS)

m3w: setup $(ETL_INPUT)
	$(call etl_job,m3w,$(SHARDS)/m3w)

image-text: setup $(ETL_INPUT)
	$(call etl_job,image-text,$(SHARDS)/image_text)

video-text: setup $(ETL_INPUT)
	$(call etl_job,video-text,$(SHARDS)/video_text)

etl: m3w image-text video-text

stats: setup
	@for d in $(or $(INPUT),$(SHARDS)/m3w $(SHARDS)/image_text/train $(SHARDS)/image_text/heldout $(SHARDS)/video_text); do \
		echo "== $$d"; $(BIN)/flamboyance stats $$d --json $$d/dataset_stats.json || exit 1; done

report: setup
	$(BIN)/flamboyance stats $(or $(INPUT),$(SHARDS)/m3w) --report $(or $(OUTPUT),$(DATA)/report)

## ---- training and evaluation ----
# The small causal LM the demo's Flamingo keeps frozen: text of the shards + name-binding text.
pretrain-lm: setup
	$(BIN)/flamboyance pretrain-lm --output $(LM_DIR) --m3w $(SHARDS)/m3w --image-text $(SHARDS)/image_text/train $(LM_FLAGS)

train: setup
	$(BIN)/flamboyance train --config $(CONFIG) run_dir=$(RUN_DIR) $(OVERRIDES)

# gpu-check: a few bf16 FSDP steps of the gpu.yaml model family (small size) on this machine's GPUs:
# step time, peak memory, MFU. Without CUDA it says so and exits 0.
.PHONY: gpu-check
gpu-check: setup
	$(BIN)/python scripts/gpu_check.py

eval: setup
	$(BIN)/flamboyance eval --checkpoint $(RUN_DIR)/final --task captioning \
		--data $(SHARDS)/image_text/heldout --support-data $(SHARDS)/image_text/train \
		--shots 0,4,8 --seeds 0,1 --output $(RUN_DIR)/eval_final.json

# A local Ray head node; `make train` joins it when RAY_ADDRESS=auto (or its address) is set.
ray-up: setup
	$(BIN)/ray start --head --num-cpus=$(or $(NUM_CPUS),2) --include-dashboard=false --disable-usage-stats

ray-down: setup
	$(BIN)/ray stop

## ---- the whole thing ----
demo: setup
	scripts/demo.sh

# The paper's M3W ablation at CPU scale, on its own data (data/icl) and runs (runs/icl): a pretrained
# small LM, Flamingo trained with and without M3W; novel-names and captioning side by side.
ablation: setup
	scripts/ablation.sh

bench: setup
	$(BIN)/python bench/run_all.py --out bench/results.json

# Extraction quality on the shared real page sets, ours beside trafilatura and readability-lxml.
SHARED ?= ../shared
bench-extract: setup
	$(BIN)/python bench/extraction_table.py --shared $(SHARED)

# Document filters on real English pages (keep) and generated junk (drop), per filter.
bench-filters: setup
	$(BIN)/python bench/bench_filters.py --shared $(SHARED)

clean:
	rm -rf $(DATA) runs bench/results.json
