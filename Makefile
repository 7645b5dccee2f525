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
WEB_NAMING_PAGES ?= 150
export WEB_PORT WEB_PAGES WEB_NAMING_PAGES
# empty: flamboyance's LocalRunner (the DirectRunner's engine, 2 worker processes)
RUNNER ?=
DATA ?= data
SHARDS ?= $(DATA)/shards
CONFIG ?= trainer/configs/demo.yaml
RUN_DIR ?= runs/demo
LM_DIR ?= runs/lm
ABLATION_DIR ?= runs/ablation
export LM_DIR ABLATION_DIR
WITH_WEB := scripts/with-sample-web.sh

.PHONY: setup test lint demo bench bench-extract crawl m3w image-text video-text etl stats report \
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
crawl: setup
ifdef INPUT
	$(BIN)/flamboyance crawl $(INPUT) --out $(or $(OUTPUT),$(DATA)/web)
else
	mkdir -p $(DATA) && printf 'http://127.0.0.1:%s/\n' $(WEB_PORT) > $(DATA)/seeds.txt
	$(WITH_WEB) $(BIN)/flamboyance crawl $(DATA)/seeds.txt --out $(or $(OUTPUT),$(DATA)/web) \
		--max-pages 1000 --same-host --allow-private-hosts --delay 0
endif

M3W_INPUT = $(or $(INPUT),$(DATA)/web/*.warc.gz)
# The sample web lives on 127.0.0.1, which the downloaders refuse unless told (SSRF guard).
ETL_FLAGS ?= $(if $(INPUT),,--allow-private-hosts)
# ... and is only served when the default input (the crawl of the sample web) is used.
ETL_WEB := $(if $(INPUT),,$(WITH_WEB))
m3w: setup
	$(ETL_WEB) $(BIN)/flamboyance etl m3w --input '$(M3W_INPUT)' --output $(or $(OUTPUT),$(SHARDS)/m3w) $(if $(RUNNER),--runner $(RUNNER)) $(ETL_FLAGS)

image-text: setup
	$(ETL_WEB) $(BIN)/flamboyance etl image-text --input '$(M3W_INPUT)' --output $(or $(OUTPUT),$(SHARDS)/image_text) $(if $(RUNNER),--runner $(RUNNER)) $(ETL_FLAGS)

video-text: setup
	$(ETL_WEB) $(BIN)/flamboyance etl video-text --input '$(M3W_INPUT)' --output $(or $(OUTPUT),$(SHARDS)/video_text) $(if $(RUNNER),--runner $(RUNNER)) $(ETL_FLAGS)

etl: m3w image-text video-text

stats: setup
	@for d in $(or $(INPUT),$(SHARDS)/m3w $(SHARDS)/image_text/train $(SHARDS)/image_text/heldout $(SHARDS)/video_text); do \
		echo "== $$d"; $(BIN)/flamboyance stats $$d --json $$d/dataset_stats.json || exit 1; done

report: setup
	$(BIN)/flamboyance stats $(or $(INPUT),$(SHARDS)/m3w) --report $(or $(OUTPUT),$(DATA)/report)

## ---- training and evaluation ----
# The small causal LM the demo's Flamingo keeps frozen: text of the shards + name-binding text.
pretrain-lm: setup
	$(BIN)/flamboyance pretrain-lm --output $(LM_DIR) --m3w $(SHARDS)/m3w --image-text $(SHARDS)/image_text/train

train: setup
	$(BIN)/flamboyance train --config $(CONFIG) run_dir=$(RUN_DIR) $(OVERRIDES)

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

# The paper's M3W ablation at demo scale: the demo's training (reused when done) beside the same
# training without M3W (pairs only, `data.m3w=null`); novel-names and captioning side by side.
ablation: setup
	scripts/ablation.sh

bench: setup
	$(BIN)/python bench/run_all.py --out bench/results.json

# Extraction quality on the shared real page sets, ours beside trafilatura and readability-lxml.
SHARED ?= ../shared
bench-extract: setup
	$(BIN)/python bench/extraction_table.py --shared $(SHARED)

clean:
	rm -rf $(DATA) runs bench/results.json
