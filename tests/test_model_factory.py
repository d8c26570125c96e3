"""The one place the model is built: sizes from the manifest, contrastive terms decided once."""

from __future__ import annotations

import pytest

from data_pipelines.contract import SIDE_FIELDS
from recsys.model.factory import ContrastiveSpec, CrossSpec, ModelSpec, build_head, build_model, specs
from tests.conftest import compose_config

ALL = ["short", "long", "aidhard", "livelong", "mixed"]


def _spec(seq_len: int = 4) -> ModelSpec:
    return ModelSpec(seq_len=seq_len, embedding_dim=4, side_dim=2, attention_dim=4, tower_dims=[4],
                     multitask={"n_levels": 1, "n_shared_experts": 1, "n_task_experts": 1, "expert_dims": [8]},
                     pooled_tables={"user": ["user_id"], "category": ["category"], "live_type": ["live_type"]},
                     score_weights={"ctr": 2.0})


def _manifest(side_rows: dict[str, int]) -> dict:
    return {"tasks": ["ctr", "gtr"], "features": {"gsu_length": 6}, "dense_features": ["a", "b"],
            "side_rows": side_rows, "table_sizes": {"user": 10, "category": 3, "live_type": 2, "item": 50, "author": 7}}


def test_contrastive_terms_are_on_only_with_a_weight_the_gsu_and_its_anchor():
    spec = ContrastiveSpec(enabled=True, temperature=0.1, weights={"short": 0.05, "long": 0.0, "aidhard": 0.1})
    assert spec.weights_for(ALL) == {"short": 0.05, "aidhard": 0.1}  # a zero weight is off
    assert spec.weights_for(["short", "long", "mixed"]) == {"short": 0.05}  # aidhard is not in the model
    assert spec.weights_for(["short", "aidhard"]) == {}  # no mixed: nothing to align with
    assert ContrastiveSpec(False, 0.1, {"short": 0.05}).weights_for(ALL) == {}
    # The configs: every term of cross=all, none after no_mixed or no_contrastive.
    weights = {name: specs(compose_config("train", overrides))[1].contrastive_weights()
               for name, overrides in {"all": [], "no_mixed": ["+experiment=no_mixed"],
                                       "no_contrastive": ["+experiment=no_contrastive"]}.items()}
    assert set(weights["all"]) == {"short", "long", "aidhard", "livelong"}
    assert weights["no_mixed"] == {} and weights["no_contrastive"] == {}


def test_tables_and_side_tables_are_sized_from_the_manifest():
    side_rows = dict(zip(SIDE_FIELDS, [9, 5, 4]))
    cross = CrossSpec(["short", "mixed"], ContrastiveSpec(True, 0.1, {"short": 0.05}))
    model = build_model(_spec(), cross, _manifest(side_rows), embedding_device="cpu")
    tables = {t.name: t.num_embeddings for ebc in (model.lookup.pooled_ebc, model.lookup.sequence_ebc)
              for t in ebc.embedding_bag_configs()}
    assert tables == _manifest(side_rows)["table_sizes"]
    assert [e.num_embeddings for e in model.head.esu.side_embeddings] == [9, 5, 4]
    assert model.tasks == ["ctr", "gtr"] and model.head.score_weights.tolist() == [2.0, 1.0]
    assert model.head.contrastive_weights == {"short": 0.05}
    assert model.head.dense_norm.num_features == 2


def test_a_model_longer_than_the_shards_sequences_is_refused():
    cross = CrossSpec(["short"], ContrastiveSpec(False, 0.1, {}))
    with pytest.raises(ValueError, match="model.seq_len=7 exceeds the 6 elements per GSU the shards hold"):
        build_head(_spec(seq_len=7), cross, _manifest(dict(zip(SIDE_FIELDS, [17, 17, 3]))))


def test_a_table_can_learn_at_its_own_rate_and_an_unknown_one_is_named():
    from functools import partial

    from torchrec.optim.optimizers import SGD
    from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

    from recsys.train.module import sparse_parameter_groups

    model = build_model(_spec(), CrossSpec(["short"], ContrastiveSpec(False, 0.1, {})),
                        _manifest(dict(zip(SIDE_FIELDS, [9, 5, 4]))), embedding_device="cpu")
    adagrad = partial(RowWiseAdagrad, lr=0.02, eps=1e-8)
    groups = sparse_parameter_groups(model.lookup, adagrad, {"item": 0.1})
    by_rows = [(cls, kw, sorted(p.shape[0] for p in params)) for cls, kw, params in groups]
    # The shared group keeps every other table (user 10, category 3, live_type 2, author 7 rows).
    assert by_rows == [(RowWiseAdagrad, {"lr": 0.02, "eps": 1e-8}, [2, 3, 7, 10]),
                       (RowWiseAdagrad, {"lr": 0.1, "eps": 1e-8}, [50])]
    # A table with an optimizer of its own leaves the shared group.
    groups = sparse_parameter_groups(model.lookup, adagrad, {}, {"author": partial(SGD, lr=3.0)})
    assert [(cls, kw, sorted(p.shape[0] for p in params)) for cls, kw, params in groups] == [
        (RowWiseAdagrad, {"lr": 0.02, "eps": 1e-8}, [2, 3, 10, 50]), (SGD, {"lr": 3.0}, [7])]
    with pytest.raises(ValueError, match=r"does not have: \['items'\]"):
        sparse_parameter_groups(model.lookup, adagrad, {"items": 0.1})
    with pytest.raises(ValueError, match=r"does not have: \['authors'\]"):
        sparse_parameter_groups(model.lookup, adagrad, {}, {"authors": partial(SGD, lr=3.0)})
    with pytest.raises(ValueError, match="in both"):
        sparse_parameter_groups(model.lookup, adagrad, {"author": 0.1}, {"author": partial(SGD, lr=3.0)})
