"""The sequence bag layout and the truncation of GSU sequences, against hand-written expectations."""

from __future__ import annotations

import numpy as np
import torch

from data_pipelines import contract
from recsys.data.batch import to_batch
from recsys.model.inputs import embedding_slots, padded_sequences, sequence_bags, to_model_input


def test_sequence_bags_put_the_targets_first_then_elements_in_sample_position_gsu_order():
    # B = 2 samples, G = 2 GSUs, L = 2 positions. Item rows 1xy / author rows 2xy for sample x, GSU y.
    target_ids = torch.tensor([[11, 21], [12, 22]])
    seq_ids = torch.zeros(2, 2, 2, 2, dtype=torch.long)
    mask = torch.tensor([[[True, True], [True, False]],    # sample 0: GSU 0 has 2 elements, GSU 1 has 1
                         [[False, False], [True, True]]])  # sample 1: GSU 0 empty, GSU 1 has 2
    for b in range(2):
        for g in range(2):
            for pos in range(2):
                seq_ids[b, g, pos] = torch.tensor([100 + 10 * b + g, 200 + 10 * b + g]) * 10 + pos
    kjt = sequence_bags(target_ids, seq_ids, mask)
    assert kjt.keys() == ["item", "author"]
    # Bags: 2 targets, then (b, l, g) = (0,0,0) (0,0,1) (0,1,0) (0,1,1) (1,0,0) (1,0,1) (1,1,0) (1,1,1).
    expected_lengths = [1, 1, 1, 1, 1, 0, 0, 1, 0, 1]
    assert kjt["item"].lengths().tolist() == expected_lengths
    assert kjt["author"].lengths().tolist() == expected_lengths
    assert kjt["item"].values().tolist() == [11, 12, 1000, 1010, 1001, 1110, 1111]
    assert kjt["author"].values().tolist() == [21, 22, 2000, 2010, 2001, 2110, 2111]
    assert embedding_slots(["a", "b"]) == ["a.item", "a.author", "b.item", "b.author"]


def test_model_input_keeps_the_first_elements_of_each_gsu_and_masks_the_rest():
    n, gsus = 2, ["short", "long"]
    lengths = {"short": np.array([3, 0]), "long": np.array([1, 2])}  # the other GSUs are empty
    arrays = {"report_ts": np.zeros(n, np.int64), "request_ts": np.zeros(n, np.int64), "kind": np.zeros(n, np.int8),
              "impression_id": np.arange(n), "state": np.zeros((n, 5), np.int8),
              "dense": np.zeros((n, len(contract.DENSE_FEATURES)), np.float32),
              **{contract.sparse_key(f): np.zeros(n, np.int32) for f in contract.SPARSE_FEATURES},
              contract.sparse_key("user_id"): np.array([5, 6]), contract.sparse_key("live_item"): np.array([7, 8]),
              contract.sparse_key("author_id"): np.array([9, 10])}
    for g in contract.GSU_NAMES:
        g_lengths = lengths.get(g, np.zeros(n, np.int64))
        total = int(g_lengths.sum())
        arrays[contract.lengths_key(g)] = g_lengths.astype(np.int32)
        for f in contract.SEQUENCE_FIELDS:
            base = {"item": 100, "author": 200, "gap": 3, "watch": 4, "domain": 1}[f]
            values = (base + np.arange(total)) if f in contract.SEQUENCE_ID_FIELDS else np.full(total, base)
            arrays[contract.sequence_key(g, f)] = values
    batch = to_batch(arrays)
    ids, side, kept = padded_sequences(batch, gsus, seq_len=2)
    assert kept.tolist() == [[2, 1], [0, 2]]  # short of sample 0 cut from 3 to 2
    assert ids[0, 0, :, 0].tolist() == [100, 101] and ids[1, 1, :, 0].tolist() == [101, 102]
    assert ids[0, 1, :, 1].tolist() == [200, 0]  # padding is 0
    assert side[0, 0, 0].tolist() == [3, 4, 1] and side[0, 1, 1].tolist() == [0, 0, 0]  # gap, watch, domain
    x = to_model_input(batch, gsus, seq_len=2, pooled_features=["user_id"])
    assert x.mask.tolist() == [[[True, True], [True, False]], [[False, False], [True, True]]]
    assert x.sequence["item"].values().tolist() == [7, 8, 100, 100, 101, 101, 102]
