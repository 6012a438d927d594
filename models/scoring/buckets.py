"""Length-bucketed dynamic batches: sort by length, cut batches by a token budget, pad each.

A transformer's cost grows with the padded batch, ``rows x longest``. Sorting sequences by
length and cutting a batch whenever ``rows x longest`` would pass a token budget keeps padding
near zero and batches cache-sized; nothing is ever padded to the model's 512 maximum.

Examples
--------
>>> token_budget_batches([5, 3, 9, 4], budget=10)
[array([1, 3]), array([0]), array([2])]
>>> feed = pad_batch([[101, 7, 102], [101, 102]], [[0, 0, 0], [0, 0]])
>>> feed["input_ids"].tolist(), feed["attention_mask"].tolist()
([[101, 7, 102], [101, 102, 0]], [[1, 1, 1], [1, 1, 0]])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def token_budget_batches(
    lengths: Sequence[int] | np.ndarray, budget: int, max_batch: int = 128
) -> list[np.ndarray]:
    """Indices of length-sorted batches whose padded size stays within ``budget`` tokens.

    Parameters
    ----------
    lengths
        Token count of each sequence.
    budget
        Most ``rows x longest`` tokens per batch; a sequence longer than the budget gets a
        batch of its own.
    max_batch
        Most rows per batch.

    Returns
    -------
    list of numpy.ndarray
        Indices into ``lengths``, shortest sequences first.
    """
    lengths = np.asarray(lengths)
    order = np.argsort(lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        end = start + 1
        while (
            end < len(order)
            and end - start < max_batch
            and (end - start + 1) * lengths[order[end]] <= budget
        ):
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def pad_batch(
    ids: Sequence[Sequence[int]], type_ids: Sequence[Sequence[int]], pad_id: int = 0
) -> dict[str, np.ndarray]:
    """A BERT feed (``input_ids``, ``attention_mask``, ``token_type_ids``) padded to the longest.

    Parameters
    ----------
    ids, type_ids
        Token ids and segment ids of each sequence.
    pad_id
        The padding token's id.
    """
    longest = max(len(row) for row in ids)
    input_ids = np.full((len(ids), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), longest), dtype=np.int64)
    segments = np.zeros((len(ids), longest), dtype=np.int64)
    for row, (tokens, types) in enumerate(zip(ids, type_ids, strict=True)):
        input_ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = 1
        segments[row, : len(types)] = types
    return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": segments}
