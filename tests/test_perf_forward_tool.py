"""tools/perf_forward.py: per-function host time of the same forward on
flagos and on the vendor's device, from two perf sessions on one process."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, refused_usage, run_script

pytestmark = pytest.mark.anyplatform

sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))


def perf_records_here() -> bool:
    """Whether perf exists and may sample a process of ours (a container
    or perf_event_paranoid can forbid it)."""
    from perf_forward import perf_env

    perf = os.environ.get("PERF") or shutil.which("perf")
    if not perf:
        return False
    proc = subprocess.run([perf, "record", "-o", os.devnull, "--", "true"], capture_output=True, timeout=60,
                          env=perf_env())
    return proc.returncode == 0


def test_compare_orders_functions_and_libraries_by_the_time_flagos_adds():
    from perf_forward import compare

    reference = {("libtorch_cpu.so", "add"): 2.0, ("libc.so.6", "malloc"): 1.0}
    flagos = {("libtorch_cpu.so", "add"): 2.5, ("libc.so.6", "malloc"): 0.5, ("_C.so", "make_alias"): 0.75}
    result = compare(reference, flagos, shown=2)
    assert result["reference_ms"] == pytest.approx(3.0)
    assert result["flagos_ms"] == pytest.approx(3.75)
    assert [(r["function"], r["flagos_ms"] - r["reference_ms"]) for r in result["functions"]] == \
        [("make_alias", pytest.approx(0.75)), ("add", pytest.approx(0.5))]
    assert [(r["library"], r["reference_ms"], r["flagos_ms"]) for r in result["libraries"]] == \
        [("_C.so", 0.0, 0.75), ("libtorch_cpu.so", 2.0, 2.5), ("libc.so.6", 1.0, 0.5)]


@pytest.mark.skipif(not perf_records_here(), reason="needs perf, allowed to sample this process (PATH or PERF=)")
def test_profiles_both_devices_in_one_process_and_finds_the_routing_layer(tmp_path):
    # 40 forwards per device: enough samples that the extension's few
    # percent of a host-vendor forward always show.
    out = tmp_path / "perf.json"
    stdout = run_script("tools/perf_forward.py", "--size", "small", "--len", "32", "--blocks", "4", "--per-block", "10",
                        "--warmup", "1", "--shown", "500", "--out", str(out))
    result = json.loads(out.read_text())
    reference = result["reference"]
    assert result["forwards"] == 40
    assert all(ms > 0 for ms in result["queued_ms"].values()) and set(result["queued_ms"]) == {reference, "flagos"}
    libraries = {row["library"]: row for row in result["libraries"]}
    for side in ("reference_ms", "flagos_ms"):
        assert sum(row[side] for row in libraries.values()) == pytest.approx(result[side])
    # torch_fl's extension runs only in the flagos forwards.
    (extension,) = [name for name in libraries if name.startswith("_C.")]
    assert libraries[extension]["reference_ms"] == 0 and libraries[extension]["flagos_ms"] > 0
    extras = [row["flagos_ms"] - row["reference_ms"] for row in result["functions"]]
    assert extras == sorted(extras, reverse=True)
    assert f"{result['forwards']} forwards per device in one process" in stdout


def test_it_refuses_empty_blocks():
    assert "--blocks and --per-block must be at least 1" in refused_usage("tools/perf_forward.py", "--blocks", "0")
