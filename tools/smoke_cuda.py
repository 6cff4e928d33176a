"""Quick checks of the cuda vendor, printed for a human; the real assertions
live in tests/."""
import time
import traceback

import torch

t0 = time.time()
import torch_fl  # noqa: E402
from torch_fl import routing  # noqa: E402

print(f"import torch_fl {time.time() - t0:.2f}s vendor={torch.flagos.vendor()} "
      f"flaggems={torch_fl._flaggems.available()} ({len(torch_fl._flaggems.available_ops())} ops; "
      f"{torch_fl._flaggems.unavailable_reason()})")


def check(name, fn):
    try:
        print(f"{name}: {fn()}")
    except Exception:
        print(f"{name}: FAILED\n{traceback.format_exc()[-1500:]}")


x = torch.randn(256, 256, device="flagos")
xc = x.to("cuda") if torch.cuda.is_available() else None
check("device", lambda: (x.device, x.untyped_storage().data_ptr() != 0))
check("add default", lambda: (routing.route_of("add.Tensor"), torch.allclose((x + x).to("cuda"), xc + xc)))
with routing.override(add__Tensor="cuda"):
    check("add cuda", lambda: torch.allclose((x + x).to("cuda"), xc + xc))
check("mm", lambda: (routing.route_of("mm"), (x @ x).to("cuda").sub(xc @ xc).abs().max().item()))
check("softmax", lambda: (routing.route_of("_softmax"), torch.allclose(torch.softmax(x, -1).to("cuda"), torch.softmax(xc, -1), atol=1e-6)))
s = torch.flagos.Stream()
with torch.flagos.stream(s):
    check("stream identity", lambda: torch.cuda.current_stream().cuda_stream == torch.flagos.current_stream().native_handle
          if hasattr(torch.Stream, "native_handle") else torch.cuda.current_stream().stream_id == torch.flagos.current_stream().stream_id)
check("memory", lambda: (torch.flagos.memory_allocated(), torch.cuda.memory_allocated()))
check("inplace", lambda: (lambda y: (y.add_(1), torch.allclose(y.to("cuda"), xc + 1))[1])(x.clone()))
check("out=", lambda: (lambda o: (torch.mm(x, x, out=o), o.shape)[1])(torch.empty(0, device="flagos")))
check("stats", lambda: {k: v for k, v in list(routing.stats().items())[:12]})
check("registered", lambda: (torch_fl.is_flaggems_enabled(), len(torch_fl.get_registered_ops())))
