"""evaluation: few-shot in-context evaluation as in the Flamingo paper (prompts, zero-shot,
RICES, beam search, log-likelihood ranking) and its metrics (CIDEr, VQA accuracy)."""

from flamboyance.evaluation.datasets import (
    EvalDataset,
    EvalExample,
    load_coco_captions,
    load_image_folder,
    load_image_text_shards,
    load_vqav2,
)
from flamboyance.evaluation.evaluate import evaluate, format_table
from flamboyance.evaluation.metrics import (
    accuracy,
    cider,
    cider_scores,
    normalize_vqa_answer,
    ptb_tokenize,
    vqa_accuracy,
)
from flamboyance.evaluation.rices import rices_select

__all__ = [
    "EvalDataset",
    "EvalExample",
    "accuracy",
    "cider",
    "cider_scores",
    "evaluate",
    "format_table",
    "load_coco_captions",
    "load_image_folder",
    "load_image_text_shards",
    "load_vqav2",
    "normalize_vqa_answer",
    "ptb_tokenize",
    "rices_select",
    "vqa_accuracy",
]
