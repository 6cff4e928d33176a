"""FLAGOS_VENDOR=cuda: flagos tensors live in CUDA memory and run PyTorch's
CUDA kernels. Every test here needs a GPU machine; on others they skip."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_fl
from conftest import assert_flagos_close, requires_cuda

pytestmark = [pytest.mark.cuda, pytest.mark.gpu, requires_cuda]
flagos = torch_fl.flagos

OPS = {
    "matmul": lambda a, b: a @ b.t(),
    "softmax": lambda a, b: torch.softmax(a, dim=-1),
    "layer_norm": lambda a, b: F.layer_norm(a, a.shape[-1:], b[0], b[1]),
    "index": lambda a, b: a[torch.tensor([3, 0, 7, 7], device=a.device)],
    "index_bool": lambda a, b: a[a > 0.5],
    "cat": lambda a, b: torch.cat([a, b], 0),
    "sum": lambda a, b: a.sum(-1),
    "sum_all": lambda a, b: a.sum(),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("op", list(OPS))
def test_ops_equal_torch_cuda(op, dtype):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 128, generator=g).to(dtype)
    b = torch.randn(64, 128, generator=g).to(dtype)
    fn = OPS[op]
    expected = fn(a.cuda(), b.cuda())
    got = fn(a.to("flagos"), b.to("flagos"))
    assert got.device.type == "flagos"
    # the same CUDA kernels run underneath: results agree to the dtype's tolerance
    assert_flagos_close(got, expected)


def test_flagos_memory_is_cuda_memory():
    assert flagos.vendor() == "cuda"
    assert flagos.device_count() == torch.cuda.device_count()
    assert flagos.get_device_properties(0).total_memory == torch.cuda.get_device_properties(0).total_memory
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    t = torch.full((1 << 20,), 2.0, device="flagos")  # 4 MiB from CUDA's caching allocator
    assert torch.cuda.memory_allocated() - before >= 4 << 20
    assert_flagos_close(t.sum(), torch.tensor(2.0 * (1 << 20)).cuda())


def test_side_stream_event_orders_default_stream():
    n = 4096
    g = torch.Generator().manual_seed(1)
    x_cpu = torch.randn(n, n, generator=g) / n ** 0.5
    x = x_cpu.to("flagos")
    flagos.synchronize()
    side = flagos.Stream()
    done = flagos.Event()
    side.wait_stream(flagos.current_stream())
    with flagos.stream(side):
        a = x
        for _ in range(8):  # long enough that an unordered reader would see garbage
            a = a @ x
        done.record()
    flagos.current_stream().wait_event(done)
    b = a.sum(0) * 2  # on the default stream
    # reference: the same chain on torch CUDA
    xr = x_cpu.cuda()
    ar = xr
    for _ in range(8):
        ar = ar @ xr
    br = ar.sum(0) * 2
    assert_flagos_close(b, br, rtol=1e-3, atol=1e-3)


def test_flagos_stream_is_torch_cuda_current_stream():
    s = flagos.Stream()
    default = torch.cuda.current_stream()
    with flagos.stream(s):
        cur_cuda = torch.cuda.current_stream()
        cur_fl = flagos.current_stream()
        assert cur_fl == s
        assert cur_cuda.stream_id == s.stream_id
        assert cur_cuda.cuda_stream != default.cuda_stream
        if hasattr(s, "native_handle"):
            assert s.native_handle == cur_cuda.cuda_stream
    assert torch.cuda.current_stream() == default
    assert flagos.current_stream() == flagos.default_stream()


def test_memory_allocated_matches_torch_cuda():
    torch.cuda.synchronize()
    before = flagos.memory_allocated()
    assert before == torch.cuda.memory_allocated()
    t = torch.empty(1 << 20, device="flagos")
    assert flagos.memory_allocated() == torch.cuda.memory_allocated()
    assert flagos.memory_allocated() - before >= 4 << 20
    assert flagos.max_memory_allocated() == torch.cuda.max_memory_allocated()
    assert flagos.memory_reserved() == torch.cuda.memory_reserved()
    del t
    assert flagos.memory_allocated() == torch.cuda.memory_allocated() == before


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(16, 32), nn.LayerNorm(32), nn.Linear(32, 4)

    def forward(self, x):
        return self.fc2(self.norm(F.gelu(self.fc1(x))))


def test_plain_cuda_inference_still_works_after_import():
    torch.manual_seed(0)
    cpu_model = _MLP()
    cuda_model = copy.deepcopy(cpu_model).cuda()
    x = torch.randn(32, 16)
    with torch.no_grad():
        out = cuda_model(x.cuda())
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), cpu_model(x).detach(), rtol=1e-4, atol=1e-5)


def test_plain_cuda_backward_after_import_is_pytorchs_known_limit():
    # PyTorch takes a registered PrivateUse1 backend as the process's one
    # accelerator; its autograd engine then asserts on CUDA backward
    # (pytorch/pytorch#161129). README "Known limitations" says so, and the
    # CUDA references of the tests train in a clean process. When PyTorch
    # lifts the limit this test fails: update the README then.
    w = torch.randn(4, 4, device="cuda", requires_grad=True)
    with pytest.raises(RuntimeError, match="opt_ready_stream && opt_parent_stream"):
        (w * 2).sum().backward()
    # flagos autograd is unaffected
    v = torch.randn(4, 4, device="flagos", requires_grad=True)
    (v * 2).sum().backward()
    assert_flagos_close(v.grad, torch.full((4, 4), 2.0))


@requires_cuda
def test_out_of_memory_is_an_error_and_the_device_stays_usable():
    free, total = torch.flagos.mem_get_info(0)
    with pytest.raises(torch.OutOfMemoryError):
        torch.empty(total * 2, dtype=torch.uint8, device="flagos")
    x = torch.arange(4.0, device="flagos")
    torch.testing.assert_close((x * 2).cpu(), torch.arange(4.0) * 2)
