"""torch.save/torch.load of flagos tensors and modules; pinned memory and
DataLoader(pin_memory=True) feeding flagos."""
import io

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

import torch_fl
from conftest import DEVICE_COUNT, assert_flagos_close, requires_two_devices

pytestmark = pytest.mark.anyplatform


def _roundtrip(obj, **load_kwargs):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True, **load_kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64, torch.bool, torch.complex64], ids=str)
def test_save_load_tensor(dev, dtype):
    ref = (torch.randn(7, 5) * 10).to(dtype)
    t = ref.to(dev)
    loaded = _roundtrip(t)
    assert loaded.device == dev and loaded.dtype == dtype
    assert_flagos_close(loaded, ref, exact=True)


def test_save_load_views_share_storage(dev):
    base = torch.arange(20.0, device=dev)
    view = base[5:15].view(2, 5)
    a, b = _roundtrip([base, view])
    assert b.untyped_storage().data_ptr() == a.untyped_storage().data_ptr()
    assert b.storage_offset() == 5
    assert_flagos_close(b, torch.arange(5.0, 15.0).view(2, 5), exact=True)
    a[5] = 100
    assert b[0, 0].item() == 100


def test_state_dict_round_trip(dev, tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 3)).to(dev)
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    sd = torch.load(path, weights_only=True)
    for k, v in sd.items():
        assert v.device == dev, k
    fresh = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 3)).to(dev)
    fresh.load_state_dict(sd)
    x = torch.randn(4, 8)
    assert_flagos_close(fresh(x.to(dev)), model(x.to(dev)).cpu(), exact=True)
    # into a CPU model
    cpu_model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 3))
    cpu_model.load_state_dict(sd)
    assert_flagos_close(model(x.to(dev)), cpu_model(x))


def test_map_location_cpu(dev):
    ref = torch.randn(6, 3)
    loaded = _roundtrip({"w": ref.to(dev), "n": 3}, map_location="cpu")
    assert loaded["w"].device.type == "cpu" and loaded["n"] == 3
    assert torch.equal(loaded["w"], ref)


def test_cpu_checkpoint_map_location_flagos(dev):
    ref = torch.randn(6, 3)
    loaded = _roundtrip(ref, map_location="flagos")
    assert loaded.device.type == "flagos"
    assert_flagos_close(loaded, ref, exact=True)


@requires_two_devices
def test_map_location_flagos1(dev, dev1):
    ref = torch.randn(6, 3)
    loaded = _roundtrip(ref.to(dev), map_location="flagos:1")
    assert loaded.device == dev1
    assert_flagos_close(loaded, ref, exact=True)
    loaded2 = _roundtrip(ref.to(dev), map_location={"flagos:0": "flagos:1"})
    assert loaded2.device == dev1
    assert_flagos_close(loaded2, ref, exact=True)
    loaded3 = _roundtrip(ref.to(dev1))  # saved on device 1, restored there
    assert loaded3.device == dev1


def test_pin_memory(dev):
    ref = torch.randn(1000)
    p = ref.pin_memory()
    assert p.is_pinned() and not ref.is_pinned()
    assert torch.equal(p, ref)
    assert p.data_ptr() != ref.data_ptr()
    t = p.to(dev, non_blocking=True)
    torch_fl.flagos.synchronize()
    assert_flagos_close(t, ref, exact=True)
    e = torch.empty(10, pin_memory=True)
    assert e.is_pinned()
    s = torch.randn(64).untyped_storage().pin_memory()
    assert s.is_pinned()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_pin_memory_feeds_flagos(dev, num_workers):
    x = torch.randn(64, 8)
    y = torch.arange(64)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=False, pin_memory=True,
                        num_workers=num_workers)
    w = torch.randn(8, 3)
    w_dev = w.to(dev)
    seen = 0
    for xb, yb in loader:
        assert xb.is_pinned() and yb.is_pinned()
        xd, yd = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
        out = xd @ w_dev
        assert_flagos_close(out, x[yb] @ w)
        assert_flagos_close(yd, yb, exact=True)
        seen += xb.shape[0]
    assert seen == 64
