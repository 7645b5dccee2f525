"""RICES picks the true nearest support examples (cosine), most similar last; features cache."""

from __future__ import annotations

import math

import pytest
import torch
from flamboyance.evaluation.rices import feature_cache_path, rices_select, rices_select_dense, vision_features


def _at(degrees: float, norm: float = 1.0) -> list[float]:
    return [norm * math.cos(math.radians(degrees)), norm * math.sin(math.radians(degrees))]


def test_rices_known_angles_most_similar_last():
    # support at 0, 10, 20, ..., 90 degrees with varied norms (cosine ignores the norm)
    support = torch.tensor([_at(10 * i, norm=1 + i) for i in range(10)])
    queries = torch.tensor([_at(12), _at(87, norm=0.1)])
    assert rices_select(queries, support, 3) == [[0, 2, 1], [7, 8, 9]]
    assert rices_select(queries, support, 1) == [[1], [9]]
    assert rices_select(queries, support, 0) == [[], []]
    # excluding the nearest moves the next ones up
    assert rices_select(queries, support, 2, exclude=[[1], [9, 8]]) == [[0, 2], [6, 7]]


def test_rices_matches_brute_force_on_random_features():
    gen = torch.Generator().manual_seed(0)
    queries = torch.randn(6, 5, generator=gen)
    support = torch.randn(40, 5, generator=gen)
    k = 4
    got = rices_select(queries, support, k)
    for q in range(6):
        sims = [
            sum(a * b for a, b in zip(queries[q].tolist(), s.tolist()))
            / (math.sqrt(sum(a * a for a in queries[q].tolist())) * math.sqrt(sum(b * b for b in s.tolist())))
            for s in support
        ]
        best_first = sorted(range(40), key=lambda i: -sims[i])[:k]
        assert got[q] == best_first[::-1]


def test_rices_errors():
    with pytest.raises(ValueError, match="feature sizes differ"):
        rices_select(torch.zeros(1, 2), torch.zeros(3, 4), 1)
    with pytest.raises(ValueError, match="needs 3"):
        rices_select(torch.ones(1, 2), torch.ones(3, 2), 3, exclude=[[0]])


def test_vision_features_cache(tmp_path):
    calls = []

    def embed(indices):
        calls.append(list(indices))
        return torch.tensor([[float(i), 1.0] for i in indices])

    keys = ["a", "b", "a", "c"]  # "a" twice: embedded once
    path = feature_cache_path(tmp_path, model_id="ckpt1", dataset_fingerprint="ds1")
    feats = vision_features(keys, embed, batch_size=2, cache_path=path)
    assert calls == [[0, 1], [3]]
    assert feats.tolist() == [[0.0, 1.0], [1.0, 1.0], [0.0, 1.0], [3.0, 1.0]]
    again = vision_features(keys, embed, batch_size=2, cache_path=path)
    assert calls == [[0, 1], [3]] and torch.equal(again, feats)  # read from disk
    other = feature_cache_path(tmp_path, model_id="ckpt2", dataset_fingerprint="ds1")
    assert other != path
    vision_features(["x"], embed, cache_path=path)  # different keys: recomputed
    assert calls[-1] == [0]


@pytest.mark.parametrize("query_chunk,support_chunk", [(1, 1), (3, 7), (4, 16), (256, 8192)])
def test_chunked_rices_equals_dense(query_chunk, support_chunk):
    gen = torch.Generator().manual_seed(1)
    support = torch.randn(50, 8, generator=gen)
    support[10] = support[3]  # exact ties: the lower index ranks as more similar
    support[41] = 2.0 * support[3]  # same direction, other norm: also a tie under cosine
    support[30] = support[22]
    queries = torch.cat([torch.randn(9, 8, generator=gen), support[[3, 22]]])
    exclude = [[], [0, 49], [], [5], [], [], [], [], [10], [3], []]
    for k in (0, 1, 5, 13):
        dense = rices_select_dense(queries, support, k, exclude=exclude)
        chunked = rices_select(queries, support, k, exclude=exclude, query_chunk=query_chunk,
                               support_chunk=support_chunk)
        assert chunked == dense
    # query 9 is support[3]'s vector: its three copies are its nearest, lowest index most similar
    assert rices_select(queries, support, 3, query_chunk=query_chunk, support_chunk=support_chunk)[9] == [41, 10, 3]
    assert rices_select(queries, support, 3, exclude=exclude, query_chunk=query_chunk,
                        support_chunk=support_chunk)[9][-2:] == [41, 10]


def test_chunked_rices_needs_enough_usable_support():
    with pytest.raises(ValueError, match="query 1 has only 2 usable support examples of 3, needs 3"):
        rices_select(torch.ones(2, 2), torch.ones(3, 2), 3, exclude=[[], [2]], support_chunk=2)
