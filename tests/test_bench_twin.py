"""The training benchmark's plain-PyTorch twin is the same model as the TorchRec one: given the same
table rows and layers, it computes the same logits and contrastive terms."""

from __future__ import annotations

import torch

from bench.training import plain_model, reference_model
from tests.conftest import small_bench_reference


def test_plain_twin_computes_what_the_torchrec_model_computes():
    bc, manifest, (torchrec_input, plain_input) = small_bench_reference(
        batch_size=16, seq_len=6, item_rows=200, author_rows=30)

    torch.manual_seed(0)
    model = reference_model(bc, manifest, "cpu")
    plain = plain_model(bc, manifest)
    plain.head.load_state_dict(model.head.state_dict())
    with torch.no_grad():
        for table, bag in plain.pooled.items():
            bag.weight.copy_(model.lookup.pooled_ebc.embedding_bags[table].weight)
        plain.item.weight.copy_(model.lookup.sequence_ebc.embedding_bags["item"].weight)
        plain.author.weight.copy_(model.lookup.sequence_ebc.embedding_bags["author"].weight)
    model.train()
    plain.train()
    expected, got = model(torchrec_input), plain(plain_input)
    torch.testing.assert_close(got.logits, expected.logits)
    assert got.contrastive.keys() == expected.contrastive.keys() and expected.contrastive
    for name, value in expected.contrastive.items():
        torch.testing.assert_close(got.contrastive[name], value)
