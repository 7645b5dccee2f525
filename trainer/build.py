"""Run preparation on the driver: the run folder, its config, and the untrained model in
``<run_dir>/init`` (tokenizer included), which every worker then loads, so all workers start from
the same weights and evaluation can compare init with final."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import yaml
from flamboyance.preprocess.tokens import SPECIAL_TOKENS
from flamboyance.trainer.config import TrainConfig

INIT_DIR = "init"
FINAL_DIR = "final"
CONFIG_NAME = "config.yaml"


def corpus_texts(cfg: TrainConfig, *, records_per_source: int) -> list[str]:
    """Text to train the tiny tokenizer on: the first records of each source in shard order
    (M3W sequences without the special tokens, captions), read deterministically."""
    from flamboyance.shards import open_dataset

    texts: list[str] = []
    for name, source in cfg.data.sources().items():
        dataset = open_dataset(
            list(source.urls),
            kind=name,
            shuffle=0,
            resampled=False,
            split_by_node=False,
            split_by_worker=False,
            decode=False,  # text only: no image decoding
        )
        for record in itertools.islice(iter(dataset), records_per_source):
            if name == "m3w":
                text = record.document.get("text") or ""
            else:
                text = record.caption
            for token in SPECIAL_TOKENS:
                text = text.replace(token, " ")
            texts.append(text)
    if not any(t.strip() for t in texts):
        raise ValueError(
            f"no text found in the first {records_per_source} records of the sources "
            f"{list(cfg.data.sources())} to train the tokenizer on"
        )
    return texts


def build_model(cfg: TrainConfig) -> Any:
    """The untrained model of ``cfg.model`` (tiny: tokenizer trained on text of the run's shards)."""
    from flamboyance.model import Flamingo, FlamingoConfig

    model_cfg = cfg.model
    if model_cfg.kind == "pretrained":
        return Flamingo.from_pretrained(model_cfg.path)
    if model_cfg.kind == "flamingo":
        return Flamingo.from_config(FlamingoConfig(**model_cfg.flamingo))
    from flamboyance.model.tiny import build_tokenizer, tiny_config

    if model_cfg.language_model:  # a pretrained LM folder: its own tokenizer, loaded frozen
        from transformers import AutoTokenizer

        path = str(Path(model_cfg.language_model).expanduser().resolve())
        if not Path(path).is_dir():
            raise FileNotFoundError(f"model.language_model {path} is not a folder (run `flamboyance pretrain-lm`)")
        tokenizer = AutoTokenizer.from_pretrained(path)
        return Flamingo.from_config(tiny_config(tokenizer=tokenizer, **model_cfg.tiny).replace(language_model=path))
    texts = corpus_texts(cfg, records_per_source=model_cfg.tokenizer_corpus_records)
    tokenizer = build_tokenizer(texts, vocab_size=model_cfg.tokenizer_vocab_size)
    return Flamingo.from_config(tiny_config(tokenizer=tokenizer, **model_cfg.tiny))


def prepare_run(cfg: TrainConfig) -> str:
    """Create the run folder, write ``config.yaml`` and (once) the untrained model to ``init/``
    (atomically: a half-written init is never picked up). A remote run_dir gets both uploaded
    (init/ last, so its presence means complete). Returns where init/ is (path or URI)."""
    from flamboyance.trainer.storage import RunStore

    store = RunStore(cfg.run_dir, cfg.storage)
    try:
        run_dir = store.local
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_NAME).write_text(yaml.safe_dump(json.loads(json.dumps(cfg.to_dict())), sort_keys=False))
        store.push(CONFIG_NAME)
        init = run_dir / INIT_DIR
        if init.is_dir() or store.exists(INIT_DIR):
            return f"{cfg.run_dir}/{INIT_DIR}"  # a resumed or restarted run keeps its original init
        tmp = run_dir / f".{INIT_DIR}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        build_model(cfg).save_pretrained(tmp)
        tmp.rename(init)
        store.push(INIT_DIR)
        return f"{cfg.run_dir}/{INIT_DIR}"
    finally:
        store.close()


__all__ = ["CONFIG_NAME", "FINAL_DIR", "INIT_DIR", "build_model", "corpus_texts", "prepare_run"]
