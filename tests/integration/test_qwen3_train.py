"""Qwen3 training on flagos against a reference, step by step.

AdamW (fused=False; foreach=True and foreach=False), next-token loss on
seeded synthetic token batches, float32 and bfloat16 autocast (weights and
optimizer state float32). Compared: the loss of every step, and the
gradient of every parameter after the first backward (relative error
||g - g_ref|| / ||g_ref||).

- small config (CI, every vendor) against CPU, 10 steps by default (--steps
  N changes it; 10 keeps the four variants of this file under ~1 min on a
  2-core host). Host vendor (same CPU kernels): loss rtol 1e-5 (fp32) / 1e-3
  (bf16), gradients rel. error <= 1e-5 (fp32) / 2e-2 (bf16; the forward is
  bitwise equal, the backward's bf16 GEMMs see other strides: ~7e-3 measured). A GPU vendor:
  loss rtol 1e-3 / 2e-2, gradients 1e-3 / 5e-2. For bf16 the CPU reference
  runs under torch.autocast("cpu"): for the ops of Qwen3 (linear/matmul low,
  everything else in the input dtype) CPU's policy and CUDA's agree.
- Qwen3-0.6B architecture (cuda mark, GPU machine), default routing,
  against torch CUDA trained in a process without torch_fl
  (qwen3.train_in_clean_process; see there why), batch 2 x 256 tokens, 20 steps (--steps): loss rtol
  2e-3 (fp32) / 3e-2 (bf16) at every step, gradients 1e-2 / 1e-1 (FlagGems'
  kernels reduce in a different order from cuBLAS/ATen's).
"""
import time

import pytest
import torch

from conftest import requires_cuda
from qwen3_common import VENDOR, cpu_model, model_path, qwen3, relative_error, steps_option

OPTIMIZERS = {"foreach": True, "for-loop": False}
DTYPES = {"fp32": None, "bf16-autocast": torch.bfloat16}


BATCH_SEEDS = [100, 101, 102, 103]


def _batches(vocab, batch, length):
    return [qwen3.random_tokens(batch, length, vocab, seed=s) for s in BATCH_SEEDS]


def _run(model, batches, steps, foreach, dtype, label):
    start = time.perf_counter()
    losses, grads = qwen3.train(model, batches, steps=steps, foreach=foreach, autocast_dtype=dtype,
                                keep_first_grads=True)
    seconds = time.perf_counter() - start
    n_tokens = steps * batches[0].numel()
    print(f"\n[qwen3] train {label}: {steps} steps, {n_tokens / seconds:.0f} tokens/s, "
          f"loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    return losses, grads


def _compare(losses, losses_ref, grads, grads_ref, loss_rtol, grad_rel):
    assert len(losses) == len(losses_ref)
    for step, (a, b) in enumerate(zip(losses, losses_ref)):
        assert abs(a - b) <= loss_rtol * abs(b) + 1e-6, f"step {step}: loss {a} vs reference {b}"
    assert grads.keys() == grads_ref.keys()
    worst = max(((relative_error(grads[n], grads_ref[n]), n) for n in grads), key=lambda t: t[0])
    print(f"[qwen3] worst gradient relative error after step 1: {worst[0]:.2e} ({worst[1]})")
    assert worst[0] <= grad_rel, worst


@pytest.mark.anyplatform
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_small_training_matches_cpu(optimizer, dtype, dev, request):
    steps = steps_option(request, 10)
    base = qwen3.build_model("small", seed=0)
    batches = _batches(qwen3.vocab_size(base), 2, 32)
    foreach, autocast = OPTIMIZERS[optimizer], DTYPES[dtype]

    ref = _run(qwen3.clone_to(base, "cpu"), batches, steps, foreach, autocast, f"small {dtype} {optimizer} cpu")
    got = _run(qwen3.clone_to(base, dev), batches, steps, foreach, autocast,
               f"small {dtype} {optimizer} flagos ({VENDOR})")

    if VENDOR == "host":
        tol = (1e-5, 1e-5) if autocast is None else (1e-3, 2e-2)
    else:
        tol = (1e-3, 1e-3) if autocast is None else (2e-2, 5e-2)
    _compare(got[0], ref[0], got[1], ref[1], *tol)
    assert got[0][-1] < got[0][0], "the loss should go down"


@pytest.mark.anyplatform
def test_clean_process_training_equals_in_process():
    # The mechanism of the GPU test's torch CUDA reference, checked on CPU:
    # the clean process rebuilds the same weights and batches from the seeds.
    base = qwen3.build_model("small", seed=0)
    batches = _batches(qwen3.vocab_size(base), 2, 16)
    losses, grads = qwen3.train(qwen3.clone_to(base, "cpu"), batches, steps=3, keep_first_grads=True)
    ref = qwen3.train_in_clean_process("cpu", size="small", seed=0, batch=2, length=16,
                                       batch_seeds=BATCH_SEEDS, steps=3, keep_first_grads=True)
    torch.testing.assert_close(torch.tensor(ref["losses"]), torch.tensor(losses), rtol=1e-6, atol=1e-6)
    assert ref["grads"].keys() == grads.keys() and len(ref["step_seconds"]) == 3
    for name, g in grads.items():
        torch.testing.assert_close(ref["grads"][name], g, rtol=1e-6, atol=1e-6)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_qwen3_0_6b_training_matches_torch_cuda(optimizer, dtype, dev, request):
    steps = steps_option(request, 20)
    base = cpu_model("0.6b", model_path(request))
    batches = _batches(qwen3.vocab_size(base), 2, 256)
    foreach, autocast = OPTIMIZERS[optimizer], DTYPES[dtype]

    # The torch CUDA reference trains in a process without torch_fl: with a
    # PrivateUse1 backend registered, PyTorch's autograd engine refuses CUDA
    # backward (pytorch/pytorch#161129). Same seeds give the same weights
    # and batches there.
    start = time.perf_counter()
    ref = qwen3.train_in_clean_process(
        "cuda", size="0.6b", seed=0, model_path=model_path(request), batch=2, length=256,
        batch_seeds=BATCH_SEEDS, steps=steps, foreach=foreach, autocast_dtype=autocast,
        keep_first_grads=True)
    steady = ref["step_seconds"][1:] or ref["step_seconds"]
    print(f"\n[qwen3] train 0.6b {dtype} {optimizer} torch cuda (clean process, "
          f"{time.perf_counter() - start:.0f} s with model build): "
          f"{2 * 256 * len(steady) / sum(steady):.0f} tokens/s after step 1")
    ref = (ref["losses"], ref["grads"])
    model = qwen3.clone_to(base, dev)
    got = _run(model, batches, steps, foreach, autocast, f"0.6b {dtype} {optimizer} flagos")
    del model
    torch.flagos.empty_cache()

    tol = (2e-3, 1e-2) if autocast is None else (3e-2, 1e-1)
    _compare(got[0], ref[0], got[1], ref[1], *tol)
