# make demo  - set up if needed, build, run the showcase on the best device
# make test  - set up if needed, build, run every test this machine can run
PYTHON ?= python3
VPY := .venv/bin/python

.PHONY: setup build demo test test-c test-py test-sanitize bench clean

setup: .venv/.ready
.venv/.ready: tools/setup_env.sh
	PYTHON=$(PYTHON) bash tools/setup_env.sh

build: setup
	$(VPY) tools/build.py

demo: build
	$(VPY) examples/demo.py

test: build
	$(MAKE) test-c test-sanitize test-py

test-c:
	ctest --test-dir $$(cat build/current)/runtime --output-on-failure

# ASan + UBSan build of the C runtime and its tests, in a folder of its own.
test-sanitize:
	cmake -S runtime -B build/sanitize -DFLAGOS_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug > /dev/null
	cmake --build build/sanitize -j2 > /dev/null
	ctest --test-dir build/sanitize --output-on-failure

test-py:
	$(VPY) -m pytest tests -q -ra

bench: build
	$(VPY) benchmarks/dispatch_overhead.py

clean:
	rm -rf build torch_fl/*.so
