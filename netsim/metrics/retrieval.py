"""Hash retrieval quality: mAP@k under Hamming ranking, as in the deep hashing literature."""
from __future__ import annotations

import torch
from torch import Tensor

from .hashing import hash_bits

CHUNK_ELEMENTS = 2**24
"""Query x database pairs handled at once (about 16 bytes each: a few hundred MB at most)."""


def _relevance(query_labels: Tensor, db_labels: Tensor) -> Tensor:
    """bool ``[Q, D]``: same class id (labels ``[N]``) or a shared label (multi-hot ``[N, C]``)."""
    if query_labels.dim() == 1:
        return query_labels[:, None] == db_labels[None, :]
    return (query_labels.float() @ db_labels.float().T) > 0


def average_precisions(query_codes: Tensor, query_labels: Tensor, db_codes: Tensor, db_labels: Tensor,
                       topk: int | None = 1000) -> Tensor:
    """AP@topk of Hamming ranking, one value per query: float ``[Q]`` on the codes' device.

    query_codes ``[Q, N_H]``, db_codes ``[D, N_H]``: real hashes (bit = h > 0) or bools.
    query_labels/db_labels: int class ids ``[N]`` or multi-hot ``[N, C]``; an item is relevant
    to a query when they share at least one label. The database is ranked by Hamming distance,
    ties broken by database index (stable). For the first ``k = min(topk, D)`` items (all when
    ``topk`` is None), AP = mean over the relevant items retrieved of precision at their rank;
    a query with none gets 0. Queries are processed in chunks of ``CHUNK_ELEMENTS // D`` to bound
    memory.
    """
    if query_labels.dim() != db_labels.dim() or query_labels.dim() not in (1, 2):
        raise ValueError("labels must both be class ids [N] or both multi-hot [N, C]")
    if len(query_codes) != len(query_labels) or len(db_codes) != len(db_labels):
        raise ValueError("codes and labels must have the same number of rows")
    if len(query_codes) == 0 or len(db_codes) == 0:
        raise ValueError("need at least one query and one database item")
    q = hash_bits(query_codes).float() * 2 - 1  # +-1 codes
    d = hash_bits(db_codes).to(q.device).float() * 2 - 1
    query_labels, db_labels = query_labels.to(q.device), db_labels.to(q.device)
    n_db, n_bits = d.shape
    k = n_db if topk is None else min(topk, n_db)
    chunk = max(1, CHUNK_ELEMENTS // n_db)
    rank = torch.arange(1, k + 1, device=q.device, dtype=torch.float32)
    index = torch.arange(n_db, device=q.device)
    out = []
    for start in range(0, len(q), chunk):
        dist = ((n_bits - q[start:start + chunk] @ d.T) / 2).round().long()  # Hamming, exact
        key = dist * n_db + index  # unique, orders by (distance, database index)
        top = key.topk(k, dim=1, largest=False, sorted=True).indices
        rel = _relevance(query_labels[start:start + chunk], db_labels).gather(1, top).float()
        hits = rel.cumsum(1)
        out.append((hits / rank * rel).sum(1) / hits[:, -1].clamp_min(1))
    return torch.cat(out)


def mean_average_precision(query_codes: Tensor, query_labels: Tensor, db_codes: Tensor,
                           db_labels: Tensor, topk: int | None = 1000) -> float:
    """mAP@topk of Hamming ranking: the mean of ``average_precisions`` over all queries (a float)."""
    return average_precisions(query_codes, query_labels, db_codes, db_labels, topk).mean().item()
