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

__all__ = ["feature_cache_path", "rices_select", "rices_select_dense", "vision_features"]


def rices_select(
    query_features: torch.Tensor,  # (Q, D)
    support_features: torch.Tensor,  # (S, D)
    k: int,
    *,
    exclude: Sequence[Sequence[int]] | None = None,
    query_chunk: int = 256,
    support_chunk: int = 8192,
) -> list[list[int]]:
    """For each query, the indices of the `k` support examples with the highest cosine
    similarity, ordered from least to most similar (the most similar comes last). `exclude[q]`
    lists support indices query q may not use (e.g. itself). Equal similarities are broken
    by the lower index ranking as more similar.

    Similarities are computed in float32, `query_chunk` x `support_chunk` at a time, keeping a
    running top-2k per query, so memory stays bounded (~ query_chunk * support_chunk * 4 bytes a
    few times over) whatever the sizes: 5k queries x 443k VQAv2 support examples would be
    17.7 GB as one dense float64 matrix. The 2k candidates are then re-scored in float64 and the
    top k taken, so float32 rounding cannot reorder near-equal neighbours: the result equals
    `rices_select_dense` unless float32 error exceeds the gap between the k-th and the 2k-th
    most similar examples."""
    _check_features(query_features, support_features, k)
    if query_chunk < 1 or support_chunk < 1:
        raise ValueError(f"rices_select: chunk sizes must be >= 1, got {query_chunk} and {support_chunk}")
    num_queries, num_support = query_features.shape[0], support_features.shape[0]
    if exclude is not None and len(exclude) != num_queries:
        raise ValueError(f"rices_select: exclude has {len(exclude)} entries for {num_queries} queries")
    candidates = 2 * k
    selected: list[list[int]] = []
    for q0 in range(0, num_queries, query_chunk):
        queries = torch.nn.functional.normalize(query_features[q0 : q0 + query_chunk].float(), dim=-1)
        rows = queries.shape[0]
        best = queries.new_full((rows, 0), -torch.inf)  # running top-k, most similar first
        best_index = torch.zeros((rows, 0), dtype=torch.long)
        available = torch.zeros(rows, dtype=torch.long)
        excluded = [(r, i) for r in range(rows) for i in (exclude[q0 + r] if exclude is not None else ())]
        for s0 in range(0, num_support, support_chunk):
            support = torch.nn.functional.normalize(support_features[s0 : s0 + support_chunk].float(), dim=-1)
            similarity = queries @ support.T  # (rows, chunk)
            hits = [(r, i - s0) for r, i in excluded if s0 <= i < s0 + support.shape[0]]
            if hits:
                r_index, s_index = zip(*hits)
                similarity[list(r_index), list(s_index)] = -torch.inf
            available += torch.isfinite(similarity).sum(dim=1)
            values, index = _top_k_lowest_index_first(similarity, min(candidates, similarity.shape[1]))
            best, best_index = _merge_top_k(torch.cat([best, values], 1), torch.cat([best_index, index + s0], 1),
                                            candidates)
        best, best_index = _rescore_float64(query_features[q0 : q0 + query_chunk], support_features, best,
                                            best_index, k)
        for r in range(rows):
            if int(available[r]) < k:
                raise ValueError(f"rices_select: query {q0 + r} has only {int(available[r])} usable support "
                                 f"examples of {num_support}, needs {k}")
            selected.append(best_index[r].flip(0).tolist())
    return selected


def _check_features(query_features: torch.Tensor, support_features: torch.Tensor, k: int) -> None:
    if query_features.ndim != 2 or support_features.ndim != 2:
        raise ValueError(f"rices_select: features must be 2-D, got {tuple(query_features.shape)} "
                         f"and {tuple(support_features.shape)}")
    if query_features.shape[1] != support_features.shape[1]:
        raise ValueError(f"rices_select: feature sizes differ ({query_features.shape[1]} vs "
                         f"{support_features.shape[1]})")
    if k < 0:
        raise ValueError(f"rices_select: k must be >= 0, got {k}")


def _top_k_lowest_index_first(
    similarity: torch.Tensor,  # (rows, n)
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # (rows, k) values, (rows, k) column indices, in column order
    """The k largest values of each row where, among values equal to the k-th largest, the
    lowest columns are kept (torch.topk picks among ties arbitrarily)."""
    if k == 0:
        return similarity[:, :0], torch.zeros((similarity.shape[0], 0), dtype=torch.long)
    kth = similarity.topk(k, dim=1).values[:, -1:]  # (rows, 1)
    above = similarity > kth
    tied = similarity == kth
    room = k - above.sum(dim=1, keepdim=True)  # how many tied columns still fit, lowest first
    keep = above | tied
    crowded = (tied.sum(dim=1, keepdim=True) > room).squeeze(1).nonzero().squeeze(1)
    if crowded.numel():  # more ties at the k-th value than room: keep the lowest columns
        ties = tied[crowded]
        keep[crowded] = above[crowded] | (ties & (ties.int().cumsum(dim=1) <= room[crowded]))
    columns = keep.nonzero()[:, 1].view(similarity.shape[0], k)  # exactly k per row, in column order
    return similarity.gather(1, columns), columns.cpu()


def _merge_top_k(
    values: torch.Tensor,  # (rows, n) candidates
    index: torch.Tensor,  # (rows, n) their support indices
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # (rows, min(k, n)) most similar first
    """The k best candidates, ordered by similarity (descending) then support index (ascending)."""
    by_index = torch.sort(index, dim=1, stable=True)
    values = values.gather(1, by_index.indices.to(values.device))
    order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :k]
    return values.gather(1, order), by_index.values.gather(1, order.cpu())


def _rescore_float64(
    query_features: torch.Tensor,  # (rows, D)
    support_features: torch.Tensor,  # (S, D)
    values: torch.Tensor,  # (rows, n) float32 similarities of the candidates, -inf = excluded
    index: torch.Tensor,  # (rows, n) support indices of the candidates
    k: int,
    rows_per_step: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:  # (rows, min(k, n)) most similar first
    """The k best candidates by their float64 cosine similarity (the dense version's arithmetic)."""
    exact = torch.full(values.shape, -torch.inf, dtype=torch.float64)
    for r0 in range(0, values.shape[0], rows_per_step):
        queries = torch.nn.functional.normalize(query_features[r0 : r0 + rows_per_step].double(), dim=-1)
        rows_index = index[r0 : r0 + rows_per_step]
        support = torch.nn.functional.normalize(support_features[rows_index.reshape(-1)].double(), dim=-1)
        support = support.view(*rows_index.shape, support_features.shape[1])  # (rows, n, D)
        similarity = (support @ queries.to(support.device)[:, :, None]).squeeze(-1).cpu()
        usable = torch.isfinite(values[r0 : r0 + rows_per_step]).cpu()
        exact[r0 : r0 + rows_per_step] = torch.where(usable, similarity, -torch.inf)
    return _merge_top_k(exact, index, k)


def rices_select_dense(
    query_features: torch.Tensor,  # (Q, D)
    support_features: torch.Tensor,  # (S, D)
    k: int,
    *,
    exclude: Sequence[Sequence[int]] | None = None,
) -> list[list[int]]:
    """`rices_select` as one dense float64 (Q, S) similarity matrix and a full sort per query: the
    reference the chunked version is tested and benchmarked against (memory grows as Q x S)."""
    _check_features(query_features, support_features, k)
    num_support = support_features.shape[0]
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
