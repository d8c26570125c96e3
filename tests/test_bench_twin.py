"""The training benchmark's plain-PyTorch twin is the same model as the TorchRec one: given the same
table rows and layers, it computes the same logits and contrastive terms."""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import OmegaConf

from recsys.bench.plain_model import PlainMomentCross
from recsys.bench.training import _model, synthetic_batch


def test_plain_twin_computes_what_the_torchrec_model_computes():
    bc = OmegaConf.merge(OmegaConf.load("conf/bench/training.yaml"),
                         {"batch_size": 16, "seq_len": 6, "author_rows": 30})
    pooled_tables = {t: list(spec.features) for t, spec in bc.pooled_tables.items()}
    rows = {t: int(spec.rows) for t, spec in bc.pooled_tables.items()} | {"item": 200, "author": 30}
    feature_rows = {f: rows[t] for t, fs in pooled_tables.items() for f in fs}
    pooled_features = [f for fs in pooled_tables.values() for f in fs]
    torchrec_input, plain_input = synthetic_batch(bc, pooled_features, feature_rows, np.random.default_rng(0), 200)

    torch.manual_seed(0)
    model = _model(bc, pooled_tables, rows, "cpu")
    plain = PlainMomentCross(_model(bc, pooled_tables, rows, "meta"), rows, pooled_tables, bc.embedding_dim)
    plain.twin.load_state_dict({k: v for k, v in model.state_dict().items() if "_ebc." not in k})
    with torch.no_grad():
        for table, bag in plain.pooled.items():
            bag.weight.copy_(model.pooled_ebc.embedding_bags[table].weight)
        plain.item.weight.copy_(model.sequence_ebc.embedding_bags["item"].weight)
        plain.author.weight.copy_(model.sequence_ebc.embedding_bags["author"].weight)
    model.train()
    plain.train()
    expected, got = model(torchrec_input), plain(plain_input)
    torch.testing.assert_close(got.logits, expected.logits)
    assert got.contrastive.keys() == expected.contrastive.keys() and expected.contrastive
    for name, value in expected.contrastive.items():
        torch.testing.assert_close(got.contrastive[name], value)
