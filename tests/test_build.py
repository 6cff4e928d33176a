"""Properties of the built extension itself."""
import shutil
import subprocess

import pytest

import torch_fl

pytestmark = pytest.mark.anyplatform


def _needed_libraries(path):
    readelf = shutil.which("readelf")  # binutils: needed to build at all
    if readelf is None:
        pytest.fail("readelf (binutils) not found; it is part of the build toolchain")
    out = subprocess.run([readelf, "-d", path], capture_output=True, text=True, check=True).stdout
    return [line.split("[", 1)[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]


def test_extension_links_the_shared_libstdcxx():
    # A statically linked private libstdc++ crashed on the first number
    # written to a stream (error messages, the dispatch log): the toolchain
    # on the GPU machine links it statically unless told otherwise.
    needed = _needed_libraries(torch_fl._C.__file__)
    assert any(n.startswith("libstdc++.so") for n in needed), needed
