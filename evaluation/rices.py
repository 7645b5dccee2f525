"""RICES: Retrieval-based In-Context Example Selection (Yang et al. 2022, used by FL and OF).

The support examples of a query are the ones whose frozen vision-encoder features are most
similar to the query's (cosine similarity), placed in the prompt with the most similar one
last, nearest to the query. Features are computed once per (checkpoint, dataset) and cached
on disk.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

__all__ = ["feature_cache_path", "rices_select", "vision_features"]


def rices_select(
    query_features: torch.Tensor,  # (Q, D)
    support_features: torch.Tensor,  # (S, D)
    k: int,
    *,
    exclude: Sequence[Sequence[int]] | None = None,
) -> list[list[int]]:
    """For each query, the indices of the `k` support examples with the highest cosine
    similarity, ordered from least to most similar (the most similar comes last). `exclude[q]`
    lists support indices query q may not use (e.g. itself). Equal similarities are broken
    by the lower index ranking as more similar."""
    if query_features.ndim != 2 or support_features.ndim != 2:
        raise ValueError(f"rices_select: features must be 2-D, got {tuple(query_features.shape)} "
                         f"and {tuple(support_features.shape)}")
    if query_features.shape[1] != support_features.shape[1]:
        raise ValueError(f"rices_select: feature sizes differ ({query_features.shape[1]} vs "
                         f"{support_features.shape[1]})")
    num_support = support_features.shape[0]
    if k < 0:
        raise ValueError(f"rices_select: k must be >= 0, got {k}")
    queries = torch.nn.functional.normalize(query_features.double(), dim=-1)
    support = torch.nn.functional.normalize(support_features.double(), dim=-1)
    similarity = queries @ support.T  # (Q, S)
    if exclude is not None:
        if len(exclude) != similarity.shape[0]:
            raise ValueError(f"rices_select: exclude has {len(exclude)} entries for {similarity.shape[0]} queries")
        for q, excluded in enumerate(exclude):
            if excluded:
                similarity[q, list(excluded)] = -torch.inf
    selected = []
    for q in range(similarity.shape[0]):
        available = int(torch.isfinite(similarity[q]).sum())
        if available < k:
            raise ValueError(f"rices_select: query {q} has only {available} usable support examples "
                             f"of {num_support}, needs {k}")
        # stable sort: among equal similarities the lower index ranks first (most similar)
        order = torch.sort(similarity[q], descending=True, stable=True).indices[:k]
        selected.append(order.flip(0).tolist())
    return selected


def feature_cache_path(cache_dir: str | os.PathLike, *, model_id: str, dataset_fingerprint: str) -> Path:
    """Where the features of one dataset under one checkpoint are cached."""
    digest = hashlib.sha256(f"{model_id}\0{dataset_fingerprint}".encode()).hexdigest()[:24]
    return Path(cache_dir) / f"rices-{digest}.pt"


def vision_features(
    image_keys: Sequence[str],
    embed: Callable[[Sequence[int]], torch.Tensor],
    *,
    batch_size: int = 32,
    cache_path: str | os.PathLike | None = None,
) -> torch.Tensor:
    """(N, D) float32 features of the images, computed with `embed(indices) -> (n, D)` in
    batches; read from / written to `cache_path` when given. A cache file whose stored keys
    differ from `image_keys` is recomputed and overwritten."""
    if cache_path is not None and Path(cache_path).is_file():
        cached = torch.load(cache_path, map_location="cpu", weights_only=True)
        if list(cached.get("keys", [])) == list(image_keys):
            return cached["features"]
    # Images seen twice (several VQA questions on one image) are embedded once.
    unique: dict[str, int] = {}
    for i, key in enumerate(image_keys):
        unique.setdefault(key, i)
    first_indices = list(unique.values())
    chunks = [embed(first_indices[s : s + batch_size]).float().cpu() for s in range(0, len(first_indices), batch_size)]
    unique_features = torch.cat(chunks) if chunks else torch.zeros(0, 0)
    position = {key: j for j, key in enumerate(unique)}
    features = unique_features[[position[key] for key in image_keys]]
    if cache_path is not None:
        path = Path(cache_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"keys": list(image_keys), "features": features}, tmp)
        os.replace(tmp, path)  # never leave a half-written cache under the final name
    return features
