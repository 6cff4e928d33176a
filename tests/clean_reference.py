"""Reference computations that must run where torch_fl was never imported.

With a PrivateUse1 backend registered (import torch_fl), PyTorch's autograd
engine refuses backward over CUDA tensors (pytorch/pytorch#161129), so a
torch CUDA training reference runs in a fresh interpreter:

    python tests/clean_reference.py NAME DEVICE  ->  JSON on stdout

This module imports torch only; the tests import the same functions to run
the flagos side, so both sides run one piece of code.
"""
import json
import sys

import torch
import torch.nn.functional as F


def mlp_params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(64, 32, generator=g) * 0.2, torch.zeros(64),
        torch.randn(64, 64, generator=g) * 0.2, torch.zeros(64),
        torch.randn(4, 64, generator=g) * 0.2, torch.zeros(4),
    ]


def mlp_forward(params, x, cast):
    w1, b1, w2, b2, w3, b3 = params
    h = F.relu(F.linear(cast(x), cast(w1), cast(b1)))
    h = F.relu(F.linear(h, cast(w2), cast(b2)))
    return F.linear(h, cast(w3), cast(b3))


def gradscaler_training(device, low=torch.float16, steps=8, by_hand=False):
    """A float16/bfloat16 loop with GradScaler on `device`, under autocast, or
    with `by_hand` without it, making the casts autocast's policy makes
    (linear in `low`, the loss in float32: the CPU reference of the flagos
    run). In float16, step 3's loss is scaled by 1e6 so that its gradients
    overflow (the step is skipped, the scale halves).
    Returns (losses, scales, final parameters on the CPU)."""
    device = torch.device(device)
    params = [p.to(device).requires_grad_() for p in mlp_params()]
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0 ** 12, growth_interval=2)
    g = torch.Generator().manual_seed(1)
    losses, scales = [], []
    for step in range(steps):
        x = torch.randn(16, 32, generator=g).to(device)
        y = torch.randint(0, 4, (16,), generator=g).to(device)
        if by_hand:
            logits = mlp_forward(params, x, lambda t: t.to(low))
            # cross_entropy calls log_softmax with an explicit dtype (the
            # logits'), which autocast keeps; nll_loss is fp32 policy.
            loss = F.nll_loss(torch.log_softmax(logits, 1, dtype=low).float(), y)
        else:
            with torch.autocast(device.type, dtype=low):
                logits = mlp_forward(params, x, lambda t: t)
                loss = F.cross_entropy(logits, y)
        assert logits.dtype == low and loss.dtype == torch.float32
        boost = 1e6 if step == 3 and low == torch.float16 else 1.0
        opt.zero_grad()
        scaler.scale(loss * boost).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
        scales.append(scaler.get_scale())
    return losses, scales, [p.detach().cpu() for p in params]


REFERENCES = {"gradscaler_training": lambda device: gradscaler_training(device)[:2]}

if __name__ == "__main__":
    name, device = sys.argv[1:3]
    result = REFERENCES[name](device)
    if "torch_fl" in sys.modules:
        raise SystemExit("the clean reference process imported torch_fl")
    print(json.dumps(result))
