"""FlagGems functions that read a tensor argument flat get contiguous
tensors (torch_fl/flaggems.py, _READS_FLAT)."""
import pytest
import torch

import torch_fl

pytestmark = pytest.mark.anyplatform


def test_functions_that_read_flat_get_contiguous_tensors():
    from torch_fl import flaggems

    seen = []
    wrapped = flaggems._with_contiguous_tensors(lambda *a, **k: seen.append([t.is_contiguous() for t in a[:2]]) or a)
    grad, out = torch.randn(4, 6), torch.randn(6, 4).t()
    args = wrapped(grad, out, 0, torch.float32)
    assert seen == [[True, True]] and args[2:] == (0, torch.float32)
    torch.testing.assert_close(args[1], out)
    assert args[0] is grad  # no copy where none is needed
    for name in flaggems._READS_FLAT:
        assert torch_fl._C._op_exists(name), name
