"""Builds libflagos and torch_fl._C against the torch of this Python, in a
build folder per (Python, torch) pair, and puts both libraries into the
torch_fl package folder so that the source tree imports as installed."""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    # --check: compile and link only (e.g. against a second torch), leaving
    # the package's libraries alone.
    check_only = "--check" in sys.argv[1:]
    tag = f"py{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__}"
    build = ROOT / "build" / tag
    cmake = shutil.which("cmake") or str(Path(sys.executable).parent / "cmake")
    jobs = str(os.cpu_count() or 2)
    if not (build / "CMakeCache.txt").exists():
        subprocess.check_call([
            cmake, "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
            f"-DPython_EXECUTABLE={sys.executable}",
        ] + (["-G", "Ninja"] if shutil.which("ninja") else []))
    subprocess.check_call([cmake, "--build", str(build), "-j", jobs])
    if check_only:
        print(f"compiled and linked torch_fl for {tag} in {build}")
        return 0
    package = ROOT / "torch_fl"
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    built = [*build.glob(f"_C{suffix}"), build / "runtime" / "libflagos.so"]
    for old in package.glob("_C*.so"):
        if old.name not in {lib.name for lib in built}:
            old.unlink()
    for lib in built:
        # Copy, then rename over the old file: a process that has the old
        # library mapped keeps its inode instead of crashing on a rewrite.
        tmp = package / (lib.name + ".tmp")
        shutil.copy2(lib, tmp)
        os.replace(tmp, package / lib.name)
    (ROOT / "build" / "current").write_text(str(build) + "\n")
    print(f"built torch_fl for {tag} in {build}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
