"""Per-operator routing: the Python API, precedence of the sources, validation
at import, and that a route really decides which backend runs an op.

On the host vendor the native kernels are CPU kernels, so "cpu" is the only
backend word that runs without FlagGems; tests that need a second backend
install Python stand-ins for FlagGems functions (torch_fl.flaggems.
install_functions) in a subprocess, so this process's routing stays as
imported.
"""
import json
import os
from pathlib import Path

import pytest
import torch

import torch_fl
from torch_fl import _C, routing

from conftest import VENDOR, assert_flagos_close, requires_host, run_python

pytestmark = [pytest.mark.anyplatform, pytest.mark.usefixtures("restore_routing")]

NATIVE = {"host": "cpu"}.get(VENDOR, VENDOR)  # the native backend word of the live vendor


def _subprocess_json(code, env=None):
    proc = run_python(code, env_extra=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    assert lines, proc.stdout + proc.stderr[-2000:]
    return json.loads(lines[-1]), proc


# ---------------------------------------------------------------------------
# Python API
# ---------------------------------------------------------------------------

def test_native_backend_names_the_vendors_kernels():
    assert routing.native_backend() == ("cuda" if VENDOR == "cuda" else "cpu")


def test_route_of_accepts_every_spelling():
    assert routing.route_of("aten::mm") == NATIVE
    assert routing.route_of("mm") == NATIVE
    assert routing.route_of("add.Tensor") == NATIVE
    assert routing.route_of("aten::add.Tensor") == NATIVE


def test_table_and_entries_with_origin():
    # baddbmm: in no packaged table (the cuda vendor's lists ops FlagGems fails)
    assert "baddbmm" not in routing.table()
    routing.set_route("aten::baddbmm", "cpu")
    assert routing.table()["baddbmm"] == "cpu"
    assert ("baddbmm", "cpu", "flagos_routing_set", 0) in [tuple(e) for e in routing.entries()]
    routing.set_route("baddbmm", "default")
    assert "baddbmm" not in routing.table(), "'default' removes the explicit entry"


def test_config_entries_name_file_and_line(tmp_path):
    conf = tmp_path / "r.conf"
    conf.write_text("# comment\n\nmm = cpu   # trailing comment\nadd.Tensor=cpu\n")
    routing.load(str(conf))
    got = {op: (b, origin, line) for op, b, origin, line in routing.entries()}
    assert got["mm"] == ("cpu", str(conf), 3)
    assert got["add.Tensor"] == ("cpu", str(conf), 4)
    assert routing.route_of("mm") == "cpu"


def test_override_restores_previous_state(tmp_path):
    conf = tmp_path / "r.conf"
    conf.write_text("mm = cpu\n")
    routing.load(str(conf))
    before = [tuple(e) for e in routing.entries()]
    with routing.override(**{"mm": "cpu", "add__Tensor": "cpu", "aten::sum": "cpu"}):
        t = routing.table()
        assert t["mm"] == t["add.Tensor"] == t["sum"] == "cpu"
        assert routing.route_of("add.Tensor") == "cpu"
    assert [tuple(e) for e in routing.entries()] == before, "origins and lines come back too"

    with pytest.raises(KeyError):
        with routing.override(add__Tensor="cpu", mm="default"):
            assert "mm" not in routing.table()
            assert routing.table()["add.Tensor"] == "cpu"
            raise KeyError("boom")
    assert [tuple(e) for e in routing.entries()] == before, "restored on exception too"


def test_override_keeps_entries_made_inside_for_other_ops():
    before = routing.table()
    with routing.override(bmm="cpu"):
        routing.set_route("sum", "cpu")
    assert routing.table() == {**before, "sum": "cpu"}


def test_override_flaggems_ops_can_keep_the_packaged_routes(tmp_path, monkeypatch):
    # The packaged table sends FlagGems kernels found wrong on this vendor
    # elsewhere; "all FlagGems except those" must leave them there.
    conf = tmp_path / "backends.conf"
    conf.write_text("mm = cpu\n")
    monkeypatch.setattr(routing, "packaged_config", lambda vendor=None: conf)
    monkeypatch.setattr(routing._flaggems, "available_ops", lambda: ["mm", "mm.out", "add.Tensor", "sum"])
    routing.load(str(conf))

    def origins():
        return {op: origin for op, _, origin, _ in routing.entries()}

    with routing.override_flaggems_ops(NATIVE):
        assert origins() == {op: "flagos_routing_set" for op in ("mm", "mm.out", "add.Tensor", "sum")}
    # the bare "mm" line also holds mm.out back
    with routing.override_flaggems_ops(NATIVE, keep_packaged=True):
        assert origins() == {"mm": str(conf), "add.Tensor": "flagos_routing_set", "sum": "flagos_routing_set"}
        assert routing.route_of("add.Tensor") == NATIVE
    assert origins() == {"mm": str(conf)}


def test_the_flaggems_preset_runs_speed_holds_on_flaggems(tmp_path, monkeypatch):
    # Speed holds live in a file the packaged table includes: the default
    # routing keeps them on the vendor, the all-FlagGems preset does not
    # (it is how they are measured), and correctness holds stay put.
    conf = tmp_path / "backends.conf"
    (tmp_path / "speed.conf").write_text("sum = cpu\n")
    conf.write_text("mm = cpu\ninclude speed.conf\n")
    monkeypatch.setattr(routing, "packaged_config", lambda vendor=None: conf)
    monkeypatch.setattr(routing._flaggems, "available_ops", lambda: ["mm", "add.Tensor", "sum"])
    routing.load(str(conf))
    assert routing.route_of("sum") == "cpu"
    # The preset "flaggems" is override_flaggems_ops("flagos", keep_packaged=True),
    # which needs FlagGems; the vendor's word shows the same choice anywhere.
    with routing.override_flaggems_ops(NATIVE, keep_packaged=True):
        origins = {op: origin for op, _, origin, _ in routing.entries()}
        assert origins == {"mm": str(conf), "sum": "flagos_routing_set", "add.Tensor": "flagos_routing_set"}
    assert routing.route_of("sum") == "cpu"


def test_packaged_speed_holds_are_an_included_file():
    conf = routing.packaged_config("cuda")
    included = [line.split(None, 1)[1] for line in conf.read_text().splitlines() if line.startswith("include ")]
    assert included == ["speed_holds_cuda.conf"]
    speed = (conf.parent / included[0]).read_text()
    for op in ("div.Scalar", "cat"):
        assert f"\n{op} = cuda\n" in speed
        assert f"\n{op} = " not in conf.read_text()
    # FlagGems serves these through torch_fl's wrappers (_flaggems_adapters.py).
    for op in ("sum.dim_IntList", "pow.Tensor_Scalar"):
        assert f"\n{op} = " not in speed and f"\n{op} = " not in conf.read_text()


def test_override_keyword_spellings():
    assert routing._keyword_op("add__Tensor") == "add.Tensor"
    assert routing._keyword_op("mm__out") == "mm.out"
    assert routing._keyword_op("mm") == "mm"
    assert routing._keyword_op("__or__") == "__or__"
    assert routing._keyword_op("__or____Tensor") == "__or__.Tensor"
    assert routing._keyword_op("_foreach_add___List") == "_foreach_add_.List"
    assert routing._keyword_op("add.Tensor") == "add.Tensor"


@pytest.mark.parametrize("call", ["set_route", "override"])
@pytest.mark.parametrize("op,backend,needle", [
    ("mm", "bogus", "unknown backend 'bogus'"),
    ("nosuchop", "cpu", "unknown op 'nosuchop'"),
    ("add.NoSuchOverload", "cpu", "unknown op 'add.NoSuchOverload'"),
])
def test_bad_route_raises_and_changes_nothing(call, op, backend, needle):
    routing.set_route("sum", "cpu")
    before = [tuple(e) for e in routing.entries()]
    with pytest.raises(ValueError, match=needle):
        if call == "set_route":
            routing.set_route(op, backend)
        else:
            with routing.override(**{"mm": "cpu", op: backend}):
                pass
    assert [tuple(e) for e in routing.entries()] == before


@requires_host
def test_unrunnable_backend_rejected_by_api():
    with pytest.raises(ValueError, match="live vendor is 'host'"):
        routing.set_route("mm", "cuda")
    with pytest.raises(ValueError, match="needs FlagGems, which cannot run Triton kernels on the 'host'"):
        routing.set_route("mm", "flagos")
    assert "mm" not in routing.table()


def test_stats_count_exactly_the_calls(dev):
    x = torch.randn(4, 4, device=dev)
    y = torch.randn(4, 4, device=dev)
    routing.reset_stats()
    assert routing.stats().get("add.Tensor", {}) == {}
    for _ in range(3):
        x + y
    torch.mm(x, y)
    torch.mm(x, y)
    s = routing.stats()
    assert s["add.Tensor"] == {NATIVE: 3}
    assert s["mm"] == {NATIVE: 2}
    x + y
    assert routing.stats()["add.Tensor"] == {NATIVE: 4}


def test_log_dispatch_prints_one_line_per_call(dev, capfd):
    x = torch.randn(3, device=dev)
    capfd.readouterr()
    routing.set_log_dispatch(True)
    x + x
    x + x
    routing.set_log_dispatch(False)
    x + x
    err = capfd.readouterr().err
    assert err.count(f"[flagos dispatch] add.Tensor -> {NATIVE} [3] [3]") == 2, err


def test_results_correct_under_override(dev):
    a = torch.randn(8, 5)
    b = torch.randn(5, 3)
    with routing.override(mm="cpu", add__Tensor="cpu", softmax="cpu", _softmax="cpu"):
        routing.reset_stats()
        out = torch.softmax(a.to(dev) @ b.to(dev) + 1.0, dim=-1)
        assert routing.stats()["mm"] == {"cpu": 1}
    assert_flagos_close(out, torch.softmax(a @ b + 1.0, dim=-1))


# ---------------------------------------------------------------------------
# Loading: files, includes, validation (routing.load is what import runs)
# ---------------------------------------------------------------------------

def test_include_is_relative_to_the_including_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inc.conf").write_text("sum = cpu\nmm = cpu\n")
    main = tmp_path / "main.conf"
    main.write_text("include sub/inc.conf\nmm.out = cpu\n")
    routing.load(str(main))
    got = {op: (origin, line) for op, _, origin, line in routing.entries()}
    assert got["sum"] == (str(tmp_path / "sub" / "inc.conf"), 1)
    assert got["mm.out"] == (str(main), 2)


@pytest.mark.parametrize("text,needles", [
    ("mm = cpu\nmm = bogus\n", [":2:", "unknown backend 'bogus'", "allowed: flagos", "cpu"]),
    ("mm = cpu\nthis is not a line\n", [":2:", "malformed line"]),
    ("\nnosuchop = cpu\n", [":2:", "nosuchop"]),
    ("mm = cpu\nadd.NoSuch = cpu\n", [":2:", "add.NoSuch"]),
])
def test_load_rejects_bad_lines_and_keeps_table(tmp_path, text, needles):
    routing.set_route("sum", "cpu")
    before = [tuple(e) for e in routing.entries()]
    conf = tmp_path / "bad.conf"
    conf.write_text(text)
    with pytest.raises(ValueError) as info:
        routing.load(str(conf))
    msg = str(info.value)
    assert str(conf) in msg
    for n in needles:
        assert n in msg, msg
    assert [tuple(e) for e in routing.entries()] == before


def test_load_rejects_include_cycle(tmp_path):
    (tmp_path / "a.conf").write_text("include b.conf\n")
    (tmp_path / "b.conf").write_text("mm = cpu\ninclude a.conf\n")
    with pytest.raises(ValueError, match="include cycle"):
        routing.load(str(tmp_path / "a.conf"))


@requires_host
def test_load_rejects_unrunnable_backends(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("sum = cpu\nmm = cuda\n")
    with pytest.raises(ValueError, match=r"c\.conf:2: cannot route 'mm'.*live vendor is 'host'"):
        routing.load(str(conf))
    conf.write_text("mm = flagos\n")
    with pytest.raises(ValueError, match=r"c\.conf:1: .*needs FlagGems, which cannot run Triton"):
        routing.load(str(conf))


def test_load_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        routing.load(str(tmp_path / "missing.conf"))


def test_packaged_default_for_vendor():
    path = routing.packaged_config()
    assert path.is_file()
    assert path.name == ("backends.conf" if VENDOR == "cuda" else f"backends_{VENDOR}.conf")


# ---------------------------------------------------------------------------
# At import (subprocesses)
# ---------------------------------------------------------------------------

@requires_host
def test_precedence_at_import(tmp_path):
    """FLAGOS_OP_* beats FLAGOS_BACKEND_CONFIG beats the packaged file beats
    the built-in default. Only 'cpu' runs on host without FlagGems, so the
    winner is read from the entries' origins; a second part uses stand-in
    FlagGems functions to see two different backends win."""
    user = tmp_path / "user.conf"
    user.write_text("mm = cpu\nmm.out = cpu\nsum = cpu\nadd.Tensor = flagos\n")
    packaged = tmp_path / "packaged.conf"
    packaged.write_text("sum = cpu\nmean = cpu\nadd.Tensor = cpu\n")
    # add.Tensor = flagos in the user file cannot load at import (no FlagGems
    # yet): the import uses a copy without it.
    user_at_import = tmp_path / "user0.conf"
    user_at_import.write_text("mm = cpu\nmm.out = cpu\nsum = cpu\n")
    code = f"""
        import json, os, torch, torch_fl
        from pathlib import Path
        from torch_fl import routing, flaggems
        out = {{}}
        out["import"] = [list(e) for e in routing.entries()]
        # Built-in default: FlagGems where it serves the op, else native.
        flaggems.install_functions({{"add.Tensor": lambda a, b, *, alpha=1: torch.add(a, b, alpha=alpha)}})
        flaggems.set_vendor_calls(0)  # every call runs the stand-in
        out["builtin"] = routing.route_of("add.Tensor")
        routing.packaged_config = lambda vendor=None: Path({str(packaged)!r})
        os.environ.pop("FLAGOS_BACKEND_CONFIG")
        routing.load()
        out["packaged"] = routing.route_of("add.Tensor")
        os.environ["FLAGOS_BACKEND_CONFIG"] = {str(user)!r}
        routing.load()
        out["user"] = routing.route_of("add.Tensor")
        out["user_entries"] = sorted(op for op in routing.table())
        os.environ["FLAGOS_OP_add__Tensor"] = "cpu"
        routing.load()
        out["env"] = routing.route_of("add.Tensor")
        print(json.dumps(out))
    """
    out, _ = _subprocess_json(code, env={
        "FLAGOS_BACKEND_CONFIG": str(user_at_import),
        "FLAGOS_OP_mm": "cpu",
        "FLAGOS_OP_mm__out": "cpu",
    })
    origins = {op: (origin, line) for op, _, origin, line in out["import"]}
    assert origins["mm"] == ("FLAGOS_OP_mm", 0)
    assert origins["mm.out"] == ("FLAGOS_OP_mm__out", 0)
    assert origins["sum"] == (str(user_at_import), 3)
    assert out["builtin"] == "flagos"
    assert out["packaged"] == "cpu"
    assert out["user"] == "flagos"
    assert "mean" not in out["user_entries"], "a user config replaces the packaged one"
    assert out["env"] == "cpu"


@pytest.mark.parametrize("case", ["backend", "op", "unrunnable", "missing", "env"])
def test_invalid_config_fails_import(tmp_path, case):
    conf = tmp_path / "bad.conf"
    env = {"FLAGOS_BACKEND_CONFIG": str(conf)}
    if case == "backend":
        conf.write_text("mm = cpu\nmm = warp_drive\n")
        needles = [f"{conf}:2", "unknown backend 'warp_drive'", "allowed:"]
    elif case == "op":
        conf.write_text("nosuchop = cpu\n")
        needles = [f"{conf}:1", "nosuchop"]
    elif case == "unrunnable":
        if VENDOR != "host":
            pytest.skip("host vendor only")
        conf.write_text("mm = cuda\n")
        needles = [f"{conf}:1", "live vendor is 'host'"]
    elif case == "missing":
        needles = ["FLAGOS_BACKEND_CONFIG", str(conf)]
    else:
        env = {"FLAGOS_OP_mm": "bogus"}
        needles = ["FLAGOS_OP_mm", "unknown backend 'bogus'"]
    proc = run_python("import torch_fl", env_extra=env)
    assert proc.returncode != 0
    for n in needles:
        assert n in proc.stderr, proc.stderr[-3000:]


def test_log_dispatch_env(dev):
    proc = run_python("""
        import torch, torch_fl
        x = torch.ones(3, device="flagos")
        y = x + x
    """, env_extra={"FLAGOS_LOG_DISPATCH": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"[flagos dispatch] add.Tensor -> {NATIVE}" in proc.stderr


@requires_host
def test_routes_really_change_backend(tmp_path):
    """With a stand-in FlagGems function for add.Tensor: route changes take
    effect at the very next call of an op already called (its cached plan
    is invalidated), bare names cover overloads without an entry, exact
    overloads beat bare names, and results stay right on every route."""
    conf = tmp_path / "r.conf"
    conf.write_text("add = cpu\n")
    code = f"""
        import json, torch, torch_fl
        from torch_fl import routing, flaggems
        calls = []
        def add(a, b, *, alpha=1):
            calls.append(a.device.type)
            return torch.add(a, b, alpha=alpha)
        flaggems.install_functions({{"add.Tensor": add, "add.Scalar": lambda a, b, alpha=1: torch.add(a, b, alpha=alpha)}})
        flaggems.set_vendor_calls(0)  # every call runs the stand-in
        out = {{}}
        x = torch.arange(4.0, device="flagos")
        y = torch.ones(4, device="flagos")
        ref = (torch.arange(4.0) + 1).tolist()
        def step(tag):
            routing.reset_stats()
            n = len(calls)
            r = (x + y)
            out[tag] = [routing.route_of("add.Tensor"), routing.stats()["add.Tensor"], len(calls) - n,
                        r.device.type, r.cpu().tolist() == ref]
        step("default")                       # built-in: FlagGems serves it
        routing.set_route("add.Tensor", "cpu")
        step("cpu")
        routing.set_route("add.Tensor", "flagos")
        step("flagos")
        routing.set_route("add.Tensor", "flaggems_python")
        step("python")
        routing.load({str(conf)!r})           # add = cpu: the bare name covers add.Tensor
        step("bare")
        out["bare_scalar"] = routing.route_of("add.Scalar")
        with routing.override(add__Tensor="flagos"):   # exact beats bare
            step("exact")
            out["exact_scalar"] = routing.route_of("add.Scalar")
        step("after")                         # back to the bare entry, not pinned
        routing.set_route("add", "flagos")    # bare FlagGems entry: overloads it lacks stay native
        out["partial"] = [routing.route_of("add.Tensor"), routing.route_of("add.out")]
        try:
            routing.set_route("mm", "flagos")
            out["no_function"] = "accepted"
        except ValueError as e:
            out["no_function"] = str(e)
        print(json.dumps(out))
    """
    out, _ = _subprocess_json(code)
    assert out["default"] == ["flagos", {"flagos": 1}, 1, "flagos", True]
    assert out["cpu"] == ["cpu", {"cpu": 1}, 0, "flagos", True]
    assert out["flagos"] == ["flagos", {"flagos": 1}, 1, "flagos", True]
    assert out["python"] == ["flagos_python", {"flagos_python": 1}, 1, "flagos", True]
    assert out["bare"] == ["cpu", {"cpu": 1}, 0, "flagos", True]
    assert out["bare_scalar"] == "cpu"
    assert out["exact"] == ["flagos", {"flagos": 1}, 1, "flagos", True]
    assert out["exact_scalar"] == "cpu"
    assert out["after"] == ["cpu", {"cpu": 1}, 0, "flagos", True]
    assert out["partial"] == ["flagos", "cpu"]
    assert "FlagGems has no function" in out["no_function"]


def test_preset_names_and_native(monkeypatch):
    monkeypatch.setattr(routing._flaggems, "available_ops", lambda: ["sum"])
    with routing.preset("default"):
        assert "sum" not in routing.table()
    with routing.preset("native"):
        assert routing.table()["sum"] == NATIVE
    assert "sum" not in routing.table()
    with pytest.raises(ValueError, match="unknown routing preset 'fast'"):
        with routing.preset("fast"):
            pass


def test_preset_with_op_routes_after_its_name(monkeypatch):
    monkeypatch.setattr(routing._flaggems, "available_ops", lambda: ["sum", "mean"])
    with routing.preset(f"native+sum=cpu+add.Tensor={NATIVE}"):
        assert routing.table()["sum"] == "cpu" and routing.table()["mean"] == NATIVE
        assert routing.table()["add.Tensor"] == NATIVE
    with routing.preset("default+sum=cpu"):
        assert routing.table()["sum"] == "cpu" and "mean" not in routing.table()
    assert "sum" not in routing.table() and "add.Tensor" not in routing.table()
    with pytest.raises(ValueError, match="routing preset 'default\\+sum': 'sum' is not op=backend"):
        with routing.preset("default+sum"):
            pass
    with pytest.raises(ValueError, match="no ATen op|unknown"):
        with routing.preset("default+no_such_op=cpu"):
            pass
    assert "sum" not in routing.table()


@pytest.mark.parametrize("vendor", ["cuda", "host", "metax", "ascend"])
def test_packaged_tables_name_real_ops_and_backends(vendor):
    # Each vendor's table is validated at import only on that vendor's
    # machines; its op names and backend words are checked here on any.
    path = routing.packaged_config(vendor)
    assert path.is_file(), path
    _C._routing_load(str(path), True)
    for op, backend, origin, line in routing.entries():
        assert Path(origin).parent == path.parent  # the table or a file it includes
        assert backend in routing.BACKENDS, f"{path.name}:{line}: backend '{backend}'"
        assert _C._op_exists(op), f"{path.name}:{line}: no ATen op '{op}'"
