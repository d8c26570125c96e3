"""bf16-mixed precision: the layers after the lookups run in bfloat16, while the logits, the
contrastive terms and every parameter stay float32 and close to a float32 run of the same model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bench.training import reference_model
from recsys.model.cross import info_nce
from recsys.machine import cpu_flags, describe, multiplies_bf16_natively
from recsys.train.precision import forward_context, warn_if_emulated
from tests.conftest import small_bench_reference


def _info_nce_by_hand(anchor: list[list[float]], positive: list[list[float]], temperature: float) -> float:
    """The mean over rows i of -log softmax_j(cos(a_i, p_j) / T) at j = i, in Python floats."""
    def cos(u, v):
        return sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))

    n, total = len(anchor), 0.0
    for i in range(n):
        logits = [cos(anchor[i], positive[j]) / temperature for j in range(n)]
        total += -(logits[i] - math.log(sum(math.exp(x) for x in logits)))
    return total / n


def test_info_nce_is_computed_in_float32_under_bfloat16_autocast():
    anchor = torch.tensor([[0.31, 0.72, -0.15], [0.05, -0.44, 0.93], [0.66, 0.12, 0.27]]).bfloat16()
    positive = torch.tensor([[0.29, 0.70, -0.11], [0.61, 0.18, 0.22], [0.02, -0.41, 0.95]]).bfloat16()
    with forward_context("bf16-mixed"):
        got = info_nce(anchor, positive, temperature=0.1)
    assert got.dtype == torch.float32
    # The inputs are bfloat16 numbers; the loss of exactly those numbers is computed without further
    # rounding (with bfloat16 logits it missed by ~1e-3 relative).
    expected = _info_nce_by_hand(anchor.double().tolist(), positive.double().tolist(), 0.1)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_model_layers_run_in_bfloat16_and_hand_back_float32_close_to_a_float32_run():
    bc, manifest, (x, _) = small_bench_reference(batch_size=32, seq_len=8, item_rows=300, author_rows=40)
    torch.manual_seed(0)
    model = reference_model(bc, manifest, "cpu").train()
    seen = []
    model.head.esu.register_forward_hook(lambda module, args, out: seen.append((args[1].dtype, out[0].dtype)))

    def run(precision):
        model.zero_grad()
        with forward_context(precision):
            out = model(x)
        loss = out.logits.sum() + sum(out.contrastive.values())
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return out, grads

    full, full_grads = run("32-true")
    mixed, mixed_grads = run("bf16-mixed")
    # The sequences reach the ESU in bfloat16 (one cast) and its products run in bfloat16 ...
    assert seen == [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16)]
    # ... while what losses and metrics read is float32 and near the float32 run.
    assert mixed.logits.dtype == torch.float32
    torch.testing.assert_close(mixed.logits, full.logits, rtol=0, atol=5e-2)
    assert mixed.contrastive.keys() == full.contrastive.keys() and full.contrastive
    for name, value in full.contrastive.items():
        assert mixed.contrastive[name].dtype == torch.float32
        torch.testing.assert_close(mixed.contrastive[name], value, rtol=0, atol=5e-2)
    # Parameters and their gradients stay float32; the gradients point the same way.
    assert mixed_grads.keys() == full_grads.keys()
    for name, grad in full_grads.items():
        assert mixed_grads[name].dtype == torch.float32, name
        if grad.norm() > 0:
            assert F.cosine_similarity(mixed_grads[name].flatten(), grad.flatten(), dim=0) > 0.98, name


def test_an_unknown_precision_is_named():
    with pytest.raises(ValueError, match="unknown precision '16-mixed'"):
        forward_context("16-mixed")


ZEN4 = "processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
SAPPHIRE_RAPIDS = "model name\t: Intel(R) Xeon(R) Platinum 8480C\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n"
SKYLAKE = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6148\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n"
           "bugs\t\t: avx512_bf16_is_not_a_flag_here\n")
ZEN2 = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse2 avx avx2 fma\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU part\t: 0xd40\n"
GRAVITON2 = "processor\t: 0\nFeatures\t: fp asimd asimddp\n"


def test_bf16_mixed_on_a_cpu_without_native_bfloat16_is_warned_about(tmp_path, caplog):
    assert all(multiplies_bf16_natively(cpu_flags(c)) for c in (ZEN4, SAPPHIRE_RAPIDS, GRAVITON3))
    assert not any(multiplies_bf16_natively(cpu_flags(c)) for c in (SKYLAKE, ZEN2, GRAVITON2))

    cpuinfo = tmp_path / "cpuinfo"
    for text in (SKYLAKE, ZEN2):
        cpuinfo.write_text(text)
        caplog.clear()
        assert warn_if_emulated("bf16-mixed", "cpu", cpuinfo)
        assert "they are emulated here" in caplog.text and "5x slower than with 32-true" in caplog.text
        assert not warn_if_emulated("32-true", "cpu", cpuinfo)
        assert not warn_if_emulated("bf16-mixed", "gpu", cpuinfo)
    for text in (ZEN4, SAPPHIRE_RAPIDS, GRAVITON3):
        cpuinfo.write_text(text)
        assert not warn_if_emulated("bf16-mixed", "cpu", cpuinfo)


def test_the_machine_is_described_from_its_cpu_flags(tmp_path):
    """What a benchmark prints before its figures, from a given /proc/cpuinfo text."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(ZEN2)
    machine = describe(cpuinfo)
    assert machine.cpu == "AMD EPYC 7B12"
    assert machine.features == {"AVX2": True, "AVX-512F": False, "AVX-512 BF16": False, "AMX": False}
    assert not machine.native_bf16
    first, load = machine.lines()
    assert first.startswith("machine: AMD EPYC 7B12, ") and "AVX2 yes, AVX-512F no, AVX-512 BF16 no, AMX no" in first
    assert first.endswith("bfloat16 products emulated")
    assert f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}" in first
    assert load.startswith("load average: ") and len(load.split()) == 5
    cpuinfo.write_text(SAPPHIRE_RAPIDS)
    machine = describe(cpuinfo)
    assert machine.features == {"AVX2": True, "AVX-512F": True, "AVX-512 BF16": False, "AMX": True}
    assert machine.native_bf16 and machine.lines()[0].endswith("bfloat16 products native")
    assert describe(tmp_path / "no-such-file").cpu == "unknown"
