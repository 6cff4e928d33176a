"""Device management: torch.flagos mirrors torch.cuda's device API."""
import os

import pytest
import torch

import torch_fl
from conftest import run_python, DEVICE_COUNT, VENDOR, assert_flagos_close, requires_host, requires_two_devices

pytestmark = pytest.mark.anyplatform
flagos = torch_fl.flagos


def test_torch_flagos_is_the_device_module():
    assert torch.flagos is flagos
    assert torch._C._get_privateuse1_backend_name() == "flagos"
    assert torch.device("flagos:0").type == "flagos"


def test_is_available_and_device_count():
    assert flagos.is_available()
    assert flagos.is_initialized()
    assert isinstance(flagos.device_count(), int)
    assert flagos.device_count() >= 1


@requires_host
def test_host_device_count_follows_env():
    expected = int(os.environ.get("FLAGOS_HOST_DEVICES", "2"))
    assert flagos.device_count() == expected


def test_vendor():
    v = flagos.vendor()
    assert v in ("host", "cuda", "metax", "ascend")
    assert v == torch_fl._VENDOR


def test_current_device_and_set_device():
    assert flagos.current_device() == 0
    last = DEVICE_COUNT - 1
    flagos.set_device(last)
    assert flagos.current_device() == last
    # New tensors without an index go to the current device.
    t = torch.ones(3, device="flagos")
    assert t.device == torch.device("flagos", last)
    flagos.set_device("flagos:0")
    assert flagos.current_device() == 0
    flagos.set_device(torch.device("flagos", last))
    assert flagos.current_device() == last
    flagos.set_device(0)


@requires_two_devices
def test_device_context_manager_restores():
    assert flagos.current_device() == 0
    with flagos.device(1):
        assert flagos.current_device() == 1
        t = torch.zeros(2, device="flagos")
        assert t.device.index == 1
        with flagos.device("flagos:0"):
            assert flagos.current_device() == 0
        assert flagos.current_device() == 1
    assert flagos.current_device() == 0


@requires_two_devices
def test_device_context_manager_restores_on_exception():
    with pytest.raises(ZeroDivisionError):
        with flagos.device(1):
            assert flagos.current_device() == 1
            1 / 0
    assert flagos.current_device() == 0
    flagos.set_device(1)
    with pytest.raises(KeyError):
        with flagos.device(0):
            raise KeyError("x")
    assert flagos.current_device() == 1


def test_device_none_is_noop():
    with flagos.device(None):
        assert flagos.current_device() == 0
    assert flagos.current_device() == 0


@requires_two_devices
def test_device_of():
    t1 = torch.ones(2, device="flagos:1")
    with flagos.device_of(t1):
        assert flagos.current_device() == 1
    assert flagos.current_device() == 0
    cpu = torch.ones(2)
    with flagos.device_of(cpu):
        assert flagos.current_device() == 0


def test_device_name_and_properties():
    for i in range(DEVICE_COUNT):
        name = flagos.get_device_name(i)
        assert isinstance(name, str) and name
        props = flagos.get_device_properties(i)
        assert props.name == name
        assert props.total_memory > 0
        assert props.multi_processor_count >= 1
        assert isinstance(props.major, int) and isinstance(props.minor, int)
        assert flagos.get_device_capability(i) == (props.major, props.minor)
        assert name in repr(props)
    assert flagos.get_device_name() == flagos.get_device_name(0)
    assert flagos.get_device_name("flagos:0") == flagos.get_device_name(0)


def test_synchronize(dev):
    x = torch.arange(1000, dtype=torch.float32, device=dev)
    y = x * 2
    flagos.synchronize()
    flagos.synchronize(0)
    flagos.synchronize(dev)
    assert_flagos_close(y, torch.arange(1000, dtype=torch.float32) * 2)


@pytest.mark.parametrize("api", ["set_device", "get_device_properties", "synchronize", "device"])
def test_bad_device_index(api):
    bad = DEVICE_COUNT + 5
    with pytest.raises((IndexError, RuntimeError)) as info:
        if api == "set_device":
            flagos.set_device(bad)
        elif api == "get_device_properties":
            flagos.get_device_properties(bad)
        elif api == "synchronize":
            flagos.synchronize(bad)
        else:
            with flagos.device(bad):
                pass
    msg = str(info.value)
    assert str(bad) in msg, msg
    assert str(DEVICE_COUNT) in msg, msg
    assert info.type is IndexError
    # The process stays usable and the current device is unchanged.
    assert flagos.current_device() == 0
    x = torch.arange(6, dtype=torch.float32, device="flagos").reshape(2, 3)
    assert_flagos_close(x.sum(0), torch.tensor([3.0, 5.0, 7.0]))


def test_factories_with_bad_device_index():
    # In a child process: a crash here must fail this test, not end the run.
    bad = DEVICE_COUNT + 5
    proc = run_python(f"""
        import torch, torch_fl
        for make in (lambda: torch.empty(4, device="flagos:{bad}"),
                     lambda: torch.ones(2, device="flagos:{bad}"),
                     lambda: torch.ones(2).to("flagos:{bad}")):
            try:
                make()
            except (IndexError, RuntimeError) as e:
                assert "{bad}" in str(e) and "{DEVICE_COUNT}" in str(e), str(e)
            else:
                raise AssertionError("no error for flagos:{bad}")
        x = torch.arange(3.0, device="flagos")
        assert (x * 2).cpu().tolist() == [0.0, 2.0, 4.0]
        print("ok")
    """)
    assert proc.returncode == 0 and "ok" in proc.stdout, (proc.returncode, proc.stderr[-2000:])


def test_negative_device_index():
    with pytest.raises((IndexError, RuntimeError)):
        flagos.set_device(-2)
    assert flagos.current_device() == 0


def test_non_flagos_device_rejected():
    with pytest.raises(ValueError):
        flagos.set_device("cpu")


def test_torch_accelerator_sees_flagos():
    if not hasattr(torch, "accelerator"):
        pytest.skip("torch.accelerator missing")
    if VENDOR == "cuda":
        pytest.skip("on a CUDA machine torch.accelerator may report cuda")
    acc = torch.accelerator.current_accelerator()
    assert acc is not None and acc.type == "flagos"
    assert torch.accelerator.device_count() == DEVICE_COUNT
