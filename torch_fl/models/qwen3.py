"""Qwen3 for tests, the demo and the benchmark.

No weights can be downloaded here, so the model is the real Qwen3-0.6B
architecture (transformers' ``Qwen3Config``/``Qwen3ForCausalLM`` with the
values of Qwen/Qwen3-0.6B's config.json) with seeded random weights; a local
folder of real weights (``--model PATH``: config.json + *.safetensors) is
loaded instead when given. ``SMALL`` is the same code at toy size, for CI.

Works with transformers 4.51+ and 5.x (the differences: ``torch_dtype`` vs
``dtype`` in from_pretrained, ``rope_theta`` vs ``rope_parameters`` in the
config, which both versions accept as ``rope_theta=``, and forward's
``past_key_values`` renamed ``cache`` in 5.2x).
"""
import contextlib
import copy
import gc
import inspect
import json
import os
import sys
import tempfile
import time
from typing import Callable, ContextManager, Dict, Iterator, List, Optional, Tuple

import torch

# Qwen/Qwen3-0.6B config.json
QWEN3_0_6B = dict(
    vocab_size=151936,
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    hidden_act="silu",
    max_position_embeddings=40960,
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
    tie_word_embeddings=True,
    attention_bias=False,
    attention_dropout=0.0,
    use_sliding_window=False,
    initializer_range=0.02,
    bos_token_id=151643,
    eos_token_id=151645,
)

# Same architecture at toy size: runs in seconds on the host vendor.
SMALL = dict(
    QWEN3_0_6B,
    vocab_size=1000,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=4096,
    bos_token_id=1,
    eos_token_id=2,
)

SIZES = {"0.6b": QWEN3_0_6B, "small": SMALL}


def _transformers():
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise ImportError("Qwen3 needs transformers>=4.51: pip install 'transformers>=4.51'") from exc
    return transformers


def make_config(size: str = "0.6b", attn_implementation: str = "eager", **overrides):
    """A Qwen3Config for ``size`` ("0.6b" or "small")."""
    tf = _transformers()
    values = dict(SIZES[size], **overrides)
    config = tf.Qwen3Config(**values)
    config._attn_implementation = attn_implementation
    return config


def _dtype_kwargs(dtype: torch.dtype) -> Dict[str, torch.dtype]:
    # from_pretrained(dtype=) exists from 4.56 on; torch_dtype= before.
    major, minor = (int(x) for x in _transformers().__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def build_model(size: str = "0.6b", *, seed: int = 0, dtype: torch.dtype = torch.float32,
                model_path: Optional[str] = None, attn_implementation: str = "eager",
                device="cpu"):
    """Qwen3ForCausalLM on ``device`` in eval mode: real weights from the local
    folder ``model_path`` if given, else seeded random weights (initialised on
    CPU in float32, so every device and dtype starts from the same values)."""
    tf = _transformers()
    if model_path:
        model = tf.AutoModelForCausalLM.from_pretrained(
            model_path, local_files_only=True, attn_implementation=attn_implementation,
            **_dtype_kwargs(dtype))
    else:
        config = make_config(size, attn_implementation)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = tf.Qwen3ForCausalLM(config)
        model = model.to(dtype)
    return move(model, device).eval()


def move(model, device):
    """``model.to(device)``, keeping tied weights tied.

    ``nn.Module.to`` replaces a parameter by a new one when the old and new
    tensors are not "shallow-copy compatible", which PyTorch grants only to
    CPU/CUDA/MPS/HIP/XPU/HPU/MTIA: moving to any PrivateUse1 device (flagos)
    gives each module its own copy of a shared parameter, so Qwen3's tied
    embedding/lm_head would train as two matrices. Re-tie after the move."""
    model = model.to(device)
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
        out, inp = model.get_output_embeddings(), model.get_input_embeddings()
        assert out.weight is inp.weight, "tie_weights() did not tie lm_head to embed_tokens"
    return model


def clone_to(model, device, dtype: Optional[torch.dtype] = None):
    """An independent copy of ``model`` on ``device`` (same weights, ties kept)."""
    other = move(copy.deepcopy(model), device)
    return other.to(dtype) if dtype is not None else other


def vocab_size(model) -> int:
    return model.config.vocab_size


def random_tokens(batch: int, length: int, vocab: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (batch, length), generator=g)


def _cache_keyword(model) -> str:
    """transformers 5.2x renamed forward's ``past_key_values`` to ``cache``."""
    params = inspect.signature(type(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


class Decoder:
    """A prompt's prefill and greedy decoding one token at a time with the
    KV cache, as separate calls for timing and profiling: ``prefill()`` runs
    the prompt and leaves the decoding state alone; ``start()`` prefills (or
    takes a prefill's output) and starts decoding from it; each
    ``decode()`` then adds one token."""

    def __init__(self, model, prompt: torch.Tensor):
        self.model, self.prompt = model, prompt
        self._keyword = _cache_keyword(model)
        self._cache = self._token = None

    @torch.no_grad()
    def prefill(self):
        return self.model(input_ids=self.prompt, use_cache=True)

    def start(self, out=None) -> None:
        out = self.prefill() if out is None else out
        self._cache, self._token = _cache_of(out), out.logits[:, -1:].argmax(-1)

    @torch.no_grad()
    def decode(self) -> None:
        out = self.model(input_ids=self._token, use_cache=True, **{self._keyword: self._cache})
        self._cache, self._token = _cache_of(out), out.logits[:, -1:].argmax(-1)


@torch.no_grad()
def greedy_generate(model, input_ids: torch.Tensor, max_new_tokens: int = 32
                    ) -> Tuple[List[int], torch.Tensor, List[torch.Tensor]]:
    """Greedy decoding with the KV cache, written out (prefill, then one token
    per forward with ``past_key_values``) so that it behaves the same on
    transformers 4.5x and 5.x and hands back every step's logits.

    Returns (new tokens of row 0 as a list, tokens [batch, new], per-step
    last-position logits as float32 CPU tensors [batch, vocab])."""
    device = next(model.parameters()).device
    ids = input_ids.to(device)
    out = model(input_ids=ids, use_cache=True)
    past = _cache_of(out)
    logits = out.logits[:, -1, :]
    steps, tokens = [], []
    for i in range(max_new_tokens):
        steps.append(logits.float().cpu())
        nxt = logits.argmax(-1, keepdim=True)
        tokens.append(nxt)
        if i + 1 == max_new_tokens:
            break
        out = model(input_ids=nxt, use_cache=True, **{_cache_keyword(model): past})
        past = _cache_of(out)
        logits = out.logits[:, -1, :]
    toks = torch.cat(tokens, dim=1).cpu()
    return toks[0].tolist(), toks, steps


def top2_margins(step_logits: List[torch.Tensor]) -> List[float]:
    """Per greedy step (logits as greedy_generate returns them), how far the
    chosen token's logit of row 0 is ahead of the runner-up: near 0 the
    choice is a tie that any other summation order may flip."""
    return [float(v[0, 0] - v[0, 1]) for v in (t.topk(2, dim=-1).values for t in step_logits)]


def lm_loss(model, tokens: torch.Tensor, autocast_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Next-token cross entropy of ``tokens`` ([batch, seq]), under
    ``torch.autocast(tokens' device, autocast_dtype)`` when that is given."""
    if autocast_dtype is None:
        return model(input_ids=tokens, labels=tokens).loss
    with torch.autocast(tokens.device.type, dtype=autocast_dtype):
        return model(input_ids=tokens, labels=tokens).loss


def sync(device) -> None:
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize()
    elif kind == "flagos":
        torch.flagos.synchronize()


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Collects, then keeps Python's cyclic garbage collector off for the
    block, as timeit does: with transformers, Triton and FlagGems loaded a
    full collection takes tens of milliseconds, and it lands on whichever
    target happens to run (a Qwen3 decode step read 120 and 214 ms against
    a median of 30 in one benchmark round, H100). Here, not in torch_fl:
    this file is also the clean training worker's script, which must not
    import torch_fl."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Trainer:
    """AdamW (fused=False; ``foreach`` as given) on ``model``, one step per
    call, with ``torch.autocast(device, autocast_dtype)`` around the forward
    when given: what ``train()`` runs, kept between calls so that steps can
    be taken in blocks. ``phase``: a function of a phase's name
    ("forward", "backward", "optimizer") giving a context manager that the
    phase runs in (tools/route_cost.py times each)."""

    def __init__(self, model, *, lr: float = 3e-4, foreach: bool = True,
                 autocast_dtype: Optional[torch.dtype] = None, annotate: bool = False,
                 phase: Optional[Callable[[str], ContextManager]] = None):
        self.model, self.autocast_dtype = model, autocast_dtype
        # Named phases for a profile's timeline (record_function is itself an
        # op call, so timed steps go without).
        self.phase = phase or (_phase if annotate else lambda name: contextlib.nullcontext())
        self.device = next(model.parameters()).device
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, foreach=foreach, fused=False)
        self.first_grads = None
        model.train()

    def step(self, tokens: torch.Tensor, keep_grads: bool = False) -> float:
        """One step on ``tokens``; its loss (loss.item(), so synchronized).
        ``keep_grads``: keep the gradients as float32 CPU tensors by name."""
        tokens = tokens.to(self.device)
        self.opt.zero_grad(set_to_none=True)
        with self.phase("forward"):
            loss = lm_loss(self.model, tokens, self.autocast_dtype)
        with self.phase("backward"):
            loss.backward()
        if keep_grads:
            self.first_grads = {n: p.grad.detach().float().cpu() for n, p in self.model.named_parameters()
                                if p.grad is not None}
        with self.phase("optimizer"):
            self.opt.step()
        # Until here the host only queued work; a host-bound step's device
        # finishes soon after, a device-bound one's much later.
        self.queued_at = time.perf_counter()
        return loss.item()

    def timed_steps(self, batches: List[torch.Tensor], n: int, start: int = 0) -> List[float]:
        """``n`` steps on the batches (cycled from index ``start``); each
        one's wall time in seconds, Python's garbage collector paused.
        ``queue_seconds`` then holds each step's time until the host had
        queued all of its work (before the loss is read back)."""
        seconds, self.queue_seconds = [], []
        sync(self.device)
        with paused_gc():
            for i in range(n):
                begin = time.perf_counter()
                self.step(batches[(start + i) % len(batches)])
                seconds.append(time.perf_counter() - begin)
                self.queue_seconds.append(self.queued_at - begin)
        return seconds


PHASE_PREFIX = "train."


def _phase(name: str):
    return torch.profiler.record_function(PHASE_PREFIX + name)


def train(model, batches: List[torch.Tensor], *, steps: int, lr: float = 3e-4, foreach: bool = True,
          autocast_dtype: Optional[torch.dtype] = None, keep_first_grads: bool = False,
          on_step=None, annotate: bool = False):
    """``steps`` Trainer steps on the token batches (cycled). Returns
    (losses, grads after the first backward as float32 CPU tensors by
    parameter name, or None). ``annotate``: name the phases of each step
    for a profiler."""
    trainer = Trainer(model, lr=lr, foreach=foreach, autocast_dtype=autocast_dtype, annotate=annotate)
    losses = []
    for step in range(steps):
        losses.append(trainer.step(batches[step % len(batches)], keep_grads=keep_first_grads and step == 0))
        if on_step is not None:
            on_step(step, losses[-1])
    model.eval()
    return losses, trainer.first_grads


def profiler_activities(kernels: bool = True) -> list:
    """torch.profiler's activities: the host's, and with `kernels` CUDA's
    where CUDA is there to measure."""
    from torch.profiler import ProfilerActivity

    return [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if kernels and torch.cuda.is_available() else [])


def op_table(prof) -> dict:
    """A finished profile by op or kernel: {"calls", "self_us", "total_us",
    "device_us", "kernel"} (device time 0 where none was measured). An op's
    device time is that of the kernels it launched, which are rows of their
    own too ("kernel" true): sum device time over kernel rows only. The
    phases' own rows are left out: a backward that runs on the autograd
    engine's device thread is not nested in its phase."""
    return {e.key: {"calls": e.count, "self_us": e.self_cpu_time_total, "total_us": e.cpu_time_total,
                    "device_us": getattr(e, "self_device_time_total", 0.0), "kernel": _on_device(e)}
            for e in prof.key_averages() if not e.key.startswith(PHASE_PREFIX)}


def _on_device(event) -> bool:
    """A kernel, copy or memset on the GPU's timeline; not the GPU-side
    copy of a host annotation (record_function, Optimizer.step), which
    spans the gaps between its kernels."""
    from torch.autograd import DeviceType

    return event.device_type != DeviceType.CPU and not getattr(event, "is_user_annotation", False)


def _busy_us(spans: List[Tuple[float, float]]) -> float:
    busy, end = 0.0, float("-inf")
    for start, stop in sorted(spans):
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    return busy


def gpu_timeline(prof) -> dict:
    """Whether a profiled step waited on the host or on the GPU: the
    profile's host window, the time some kernel (or copy) ran in it, and
    for each named phase (Trainer(annotate=True)) its host span and the
    GPU's busy time inside that span, in µs. A GPU idle inside a phase
    waited for the host's launches (the profiler slows the host, so idle
    time reads high on every target alike)."""
    from torch.autograd import DeviceType

    events = [e for e in prof.events() if e.time_range.end > e.time_range.start]
    device = [(e.time_range.start, e.time_range.end) for e in events if _on_device(e)]
    host = [e for e in events if e.device_type == DeviceType.CPU]
    if not host:
        return {}
    window = (min(e.time_range.start for e in host), max(e.time_range.end for e in events))
    table = {"window_us": window[1] - window[0], "gpu_busy_us": _busy_us(device)}
    for e in host:
        if e.name.startswith(PHASE_PREFIX):
            start, stop = e.time_range.start, e.time_range.end
            inside = [(max(a, start), min(b, stop)) for a, b in device if b > start and a < stop]
            table[e.name[len(PHASE_PREFIX):]] = {"host_us": stop - start, "gpu_busy_us": _busy_us(inside)}
    return table


def profiled_train(model, batches: List[torch.Tensor], *, profile_step: int, **options) -> dict:
    """``train()`` with torch.profiler's view of step ``profile_step``
    (0-based): {"step_ms": its wall time, "ops": op_table() of the step,
    "timeline": gpu_timeline() of it}; device time where CUDA is there to
    measure."""
    from torch.profiler import profile

    prof = profile(activities=profiler_activities())
    marks = {}

    def on_step(step, loss):
        marks[step] = time.perf_counter()
        if step == profile_step - 1:
            prof.start()
        elif step == profile_step:
            prof.stop()

    train(model, batches, steps=profile_step + 1, on_step=on_step, annotate=True, **options)
    return {"step_ms": (marks[profile_step] - marks[profile_step - 1]) * 1e3, "ops": op_table(prof),
            "timeline": gpu_timeline(prof)}


def timed_train(model, batches: List[torch.Tensor], **options):
    """``train()`` that also returns each step's wall time in seconds (every
    step ends with loss.item(), so each is synchronized)."""
    ends = []
    sync(next(model.parameters()).device)
    start = time.perf_counter()
    losses, grads = train(model, batches, on_step=lambda step, loss: ends.append(time.perf_counter()),
                          **options)
    return losses, grads, [b - a for a, b in zip([start] + ends[:-1], ends)]


# ------------------------------------------------- training in a clean process
#
# A CUDA training reference runs in a fresh interpreter that never imports
# torch_fl (torch_fl/_clean_process.py says why): this file run as a script
# imports torch and transformers only.

def train_in_clean_process(device: str, *, size: str = "0.6b", seed: int = 0,
                           model_path: Optional[str] = None, batch: int = 2, length: int = 256,
                           batch_seeds: List[int] = (100,), steps: int = 20, lr: float = 3e-4,
                           foreach: bool = True, autocast_dtype: Optional[torch.dtype] = None,
                           keep_first_grads: bool = False, profile_step: Optional[int] = None,
                           timeout: float = 1800) -> dict:
    """``train()`` of ``build_model(size, seed, model_path)`` on ``device`` in a
    fresh interpreter without torch_fl, on ``random_tokens(batch, length,
    vocab, seed=s)`` for each s in ``batch_seeds``.

    Returns {"losses", "grads" (after the first backward, or None),
    "step_seconds" (wall time of each step, synchronized by loss.item())};
    with ``profile_step``, ``profiled_train()``'s result instead."""
    spec = dict(device=device, size=size, seed=seed, model_path=model_path, batch=batch,
                length=length, batch_seeds=list(batch_seeds), steps=steps, lr=lr, foreach=foreach,
                autocast=str(autocast_dtype).replace("torch.", "") if autocast_dtype else None,
                keep_first_grads=keep_first_grads, profile_step=profile_step)
    with tempfile.TemporaryDirectory(prefix="qwen3_ref_") as tmp:
        spec_path, out_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "out.pt")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        from torch_fl import _clean_process

        _clean_process.run(__file__, [spec_path, out_path], f"Qwen3 reference training on {device}", timeout)
        return torch.load(out_path, weights_only=True)


def add_counts(totals: Dict[str, Dict[str, int]], more: Dict[str, Dict[str, int]]) -> None:
    """Adds per-op counts (per backend, or per kind of launcher call) into
    ``totals``."""
    for op, counts in more.items():
        mine = totals.setdefault(op, {})
        for kind, n in counts.items():
            mine[kind] = mine.get(kind, 0) + n


class TrainingWorker:
    """A ``Trainer`` of ``build_model(size, seed, model_path)`` on ``device``
    in a fresh interpreter, taking steps in blocks when asked, so that
    targets can take turns and a slow spell of the host falls on all of
    them. On torch's own devices the interpreter never imports torch_fl (a
    torch CUDA reference, see torch_fl/_clean_process.py); on flagos it
    does, and trains under ``routing`` (a routing.preset name). Training
    every target in a worker of its own compares like with like: a process
    that has run inference on other models, and imported what they needed,
    is not the one a training job runs in. A context manager."""

    def __init__(self, device: str, *, size: str = "0.6b", seed: int = 0, model_path: Optional[str] = None,
                 batch: int = 2, length: int = 256, batch_seeds: List[int] = (100,), lr: float = 3e-4,
                 foreach: bool = True, autocast_dtype: Optional[torch.dtype] = None, routing: Optional[str] = None,
                 timeout: float = 600, wait: bool = True):
        from torch_fl import _clean_process

        if routing is not None and not _on_flagos(device):
            raise ValueError(f"TrainingWorker: a routing ('{routing}') applies to flagos only, not to '{device}'")
        self._tmp = tempfile.TemporaryDirectory(prefix="qwen3_worker_")
        spec_path = os.path.join(self._tmp.name, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(dict(device=device, size=size, seed=seed, model_path=model_path, batch=batch, length=length,
                           batch_seeds=list(batch_seeds), lr=lr, foreach=foreach, routing=routing,
                           autocast=str(autocast_dtype).replace("torch.", "") if autocast_dtype else None), f)
        self.what = f"Qwen3 training worker on {device}" + (f" ({routing} routing)" if routing else "")
        # Calls per op and backend over the worker's steps (flagos only).
        self.routes: Dict[str, Dict[str, int]] = {}
        # Per op, the FlagGems launcher's calls over the worker's steps:
        # "replayed", "python" (FlagGems' Python ran), "vendor" (flagos only).
        self.launcher: Dict[str, Dict[str, int]] = {}
        self._proc = _clean_process.start(__file__, ["--serve", spec_path])
        self._timeout = timeout
        self._ready = False
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Returns once the worker has built its model. Workers started with
        ``wait=False`` build theirs at the same time; waiting for each before
        any takes a step keeps that work out of the steps' times."""
        if not self._ready:
            self._reply()  # "ready"
            self._ready = True

    def timed_steps(self, n: int) -> List[float]:
        """``n`` steps; each one's wall time in seconds. ``queue_seconds``
        then holds each step's time until its work was queued (see
        Trainer.timed_steps)."""
        self.wait_ready()
        self._proc.stdin.write(f"{n}\n")
        self._proc.stdin.flush()
        reply = json.loads(self._reply())
        self.queue_seconds = reply["queue_seconds"]
        add_counts(self.routes, reply["routes"])
        add_counts(self.launcher, reply.get("launcher", {}))
        return reply["seconds"]

    def reset_counts(self) -> None:
        """Starts ``routes`` and ``launcher`` over (say, after a warm-up)."""
        self.routes, self.launcher = {}, {}

    def _reply(self) -> str:
        from torch_fl import _clean_process

        # A line of the protocol ("ready", or a JSON object); a library that
        # prints to standard output on import adds lines of its own.
        while True:
            line = _clean_process.read_line(self._proc, self.what, self._timeout)
            if line == "ready" or line.startswith("{"):
                return line

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=60)
            except Exception:  # noqa: BLE001 (a worker that will not stop is killed)
                self._proc.kill()
        self._tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _read_spec(spec_path: str):
    """The spec's model on its device, its batches, and Trainer options."""
    with open(spec_path) as f:
        spec = json.load(f)
    base = build_model(spec["size"], seed=spec["seed"], model_path=spec["model_path"])
    batches = [random_tokens(spec["batch"], spec["length"], vocab_size(base), seed=s)
               for s in spec["batch_seeds"]]
    model = clone_to(base, spec["device"])
    options = dict(lr=spec["lr"], foreach=spec["foreach"],
                   autocast_dtype=getattr(torch, spec["autocast"]) if spec["autocast"] else None)
    return spec, model, batches, options


def _serve(spec_path: str) -> None:
    """TrainingWorker's side: "ready", then for each line n on standard
    input, n steps and {"seconds": each one's, "queue_seconds": each one's
    until queued, "routes": calls per op and
    backend} as one JSON line. Between blocks the gradients and the
    device's cached memory go back, so that idle workers hold their model
    and optimizer state only."""
    with open(spec_path) as f:
        spec = json.load(f)
    on_flagos = _on_flagos(spec["device"])
    if on_flagos:
        import torch_fl  # noqa: F401  (the flagos device; _clean_process puts this copy on the path)
        from torch_fl import routing

        preset = routing.preset(spec["routing"] or "default")
    else:
        preset = contextlib.nullcontext()
    _, model, batches, options = _read_spec(spec_path)
    trainer, done = Trainer(model, **options), 0
    if not on_flagos and "torch_fl" in sys.modules:  # PyTorch would refuse CUDA backward (pytorch/pytorch#161129)
        raise RuntimeError("the training worker imported torch_fl")
    print("ready", flush=True)
    with preset:
        for line in sys.stdin:
            n = int(line)
            if on_flagos:
                routing.reset_stats()
                before = _launcher_counts()
            seconds = trainer.timed_steps(batches, n, start=done)
            print(json.dumps({"seconds": seconds, "queue_seconds": trainer.queue_seconds,
                              "routes": routing.stats() if on_flagos else {},
                              "launcher": _counts_since(before, _launcher_counts()) if on_flagos else {}}),
                  flush=True)
            done += n
            # The gradients go too (the next step starts by dropping them):
            # four idle workers holding theirs filled an 80 GB GPU.
            trainer.opt.zero_grad(set_to_none=True)
            _empty_cache(spec["device"])


def _launcher_counts() -> Dict[str, Dict[str, int]]:
    """Per op, the FlagGems launcher's calls so far: replayed, run in
    FlagGems' Python (recorded ones included) and served by the vendor."""
    from torch_fl import flaggems

    return {op: {"replayed": s["replayed"], "python": s["ran_python"], "vendor": s["vendor"]}
            for op, s in flaggems.launcher_stats().items()}


def _counts_since(before: Dict[str, Dict[str, int]], after: Dict[str, Dict[str, int]]) -> Dict[str, Dict[str, int]]:
    """The ops whose counts grew, by how much."""
    grown = {}
    for op, counts in after.items():
        delta = {k: n - before.get(op, {}).get(k, 0) for k, n in counts.items()}
        if any(delta.values()):
            grown[op] = delta
    return grown


def _on_flagos(device: str) -> bool:
    # A string test: "flagos" names no device until torch_fl is imported.
    return device.split(":", 1)[0] == "flagos"


def _empty_cache(device: str) -> None:
    kind = torch.device(device).type
    if kind in ("cuda", "flagos"):
        getattr(torch, kind).empty_cache()


def _clean_process_main(spec_path: str, out_path: str) -> None:
    spec, model, batches, options = _read_spec(spec_path)
    if spec["profile_step"] is not None:
        result = profiled_train(model, batches, profile_step=spec["profile_step"], **options)
    else:
        losses, grads, step_seconds = timed_train(model, batches, steps=spec["steps"],
                                                  keep_first_grads=spec["keep_first_grads"], **options)
        result = {"losses": losses, "grads": grads, "step_seconds": step_seconds}
    if "torch_fl" in sys.modules:
        raise RuntimeError("the clean reference process imported torch_fl")
    torch.save(result, out_path)


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        _serve(sys.argv[2])
    else:
        _clean_process_main(*sys.argv[1:3])
