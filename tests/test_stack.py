"""The pinned CPU stack is what `make setup` promises."""

import torch

from recsys.stack_check import check_cpu_stack


def test_cpu_stack_has_no_problems():
    assert check_cpu_stack() == []
    assert torch.__version__.endswith("+cpu")


def test_fbgemm_cpu_operators_compute():
    import fbgemm_gpu  # noqa: F401  registers torch.ops.fbgemm

    lengths = torch.tensor([1, 2, 3], dtype=torch.int64)
    offsets = torch.ops.fbgemm.asynchronous_complete_cumsum(lengths)
    assert offsets.tolist() == [0, 1, 3, 6]


def test_torchrec_keyed_jagged_tensor_builds():
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["user_id", "live_id"], values=torch.tensor([7, 3, 4]), lengths=torch.tensor([1, 0, 1, 1]))
    assert kjt["live_id"].values().tolist() == [3, 4]
