# Two entry points for a newcomer: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.bitsback-installed
# Pinned so that this machine's pre-downloaded CPU wheel is used; on a CUDA machine
# the same pin pulls the matching CUDA build from PyPI.
TORCH  ?= torch==2.13.0

.PHONY: setup build test demo bench asan clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q "Cython>=3.0" "numpy>=1.26" "numba>=0.59"   # numba: the AOT kernels are built with it
	$(BIN)/python -m pip install -q --no-build-isolation -e ".[train,test,bench,ray]"
	touch $(STAMP)

# Rebuild the extension whenever the C core or the binding changed.
build: $(STAMP)
	$(BIN)/python setup.py -q build_ext --inplace

test: build qemu
	$(BIN)/python -m pytest tests

# tests/test_cross_isa.py decodes under other x86-64 CPUs with qemu-x86_64 (Debian package
# qemu-user). Installed here where it is missing and we can (root, apt-get, x86-64 host);
# otherwise make carries on and those tests skip, saying why.
.PHONY: qemu
qemu:
	@command -v qemu-x86_64 > /dev/null 2>&1 || [ "$$(uname -m)" != x86_64 ] || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null 2>&1 && \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends qemu-user; } || \
	echo "qemu-user not installed: tests/test_cross_isa.py will skip"

demo: build
	$(BIN)/python -m bitsback.demo data/t10k-images-idx3-ubyte.gz

bench: build
	$(BIN)/python -m pytest bench --benchmark-only

# pytest-benchmark baselines (bench/baselines/<machine>/NNNN_<name>.json). Save one per
# release, then check a change against the latest: make bench-compare (fails when a
# benchmark's median is more than BENCH_FAIL slower; this box is shared, so keep it loose).
BENCH_SUITES ?= bench/bench_codec.py bench/bench_runtime.py bench/bench_inference.py bench/bench_coder.py
BENCH_NAME   ?= $(shell git describe --tags --always 2>/dev/null || echo local)
BENCH_FAIL   ?= median:30%
.PHONY: bench-save bench-compare

bench-save: build
	$(BIN)/python -m pytest $(BENCH_SUITES) --benchmark-only --benchmark-storage=file://bench/baselines \
	    --benchmark-save=$(BENCH_NAME)

bench-compare: build
	$(BIN)/python -m pytest $(BENCH_SUITES) --benchmark-only --benchmark-storage=file://bench/baselines \
	    --benchmark-compare --benchmark-compare-fail=$(BENCH_FAIL) --benchmark-columns=min,median,mean,iqr,rounds

# The C core under AddressSanitizer + UndefinedBehaviorSanitizer (stand-alone driver).
asan:
	mkdir -p build
	$(CC) -std=c99 -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all \
	    -Icsrc csrc/rans.c csrc/test_rans.c -o build/test_rans_asan
	ASAN_OPTIONS=detect_leaks=1 ./build/test_rans_asan
	$(MAKE) asan-py

# The Python test suite against an ASan-instrumented build of the extension (C core +
# Cython binding), loaded through LD_PRELOAD=libasan into the ordinary interpreter.
# The instrumented package is a copy under build/asan.<make pid>/pkg that shadows the
# editable install via PYTHONPATH, so src/ and concurrent runs in the same tree are never
# touched (the folder is removed when the run passes). Leak detection is off here:
# CPython, numba and onnxruntime keep allocations until exit.
# ASAN_TESTS picks the suites (default: coder, CDFs, container, codec, fuzz, concurrency).
ASAN_LIB   = $(shell $(CC) -print-file-name=libasan.so)
ASAN_DIR   = build/asan.$(shell echo $$PPID)
ASAN_TESTS ?= tests/test_rans.py tests/test_cdf.py tests/test_container.py tests/test_codec.py \
              tests/test_fuzz.py tests/test_concurrency.py
ASAN_ENV   = PYTHONPATH=$(CURDIR)/$(ASAN_DIR)/pkg LD_PRELOAD=$(ASAN_LIB) NUMBA_CACHE_DIR=$(CURDIR)/$(ASAN_DIR)/numba \
             ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1:detect_odr_violation=0
.PHONY: asan-py

asan-py: $(STAMP)
	rm -rf $(ASAN_DIR) && mkdir -p $(ASAN_DIR)/pkg $(ASAN_DIR)/numba
	cp -r src/bitsback $(ASAN_DIR)/pkg/
	find $(ASAN_DIR)/pkg -name __pycache__ -type d -prune -exec rm -rf {} +
	find $(ASAN_DIR)/pkg -name '*.so' -delete
	CFLAGS="-O1 -g -fsanitize=address -fno-omit-frame-pointer" LDFLAGS="-fsanitize=address" \
	    $(BIN)/python setup.py -q build_ext --build-lib $(ASAN_DIR)/lib --build-temp $(ASAN_DIR)/tmp
	cp $(ASAN_DIR)/lib/bitsback/_rans*.so $(ASAN_DIR)/pkg/bitsback/
	$(ASAN_ENV) $(BIN)/python -c "import bitsback._rans as r, sys; f = r.__file__; \
	    print('asan extension:', f); sys.exit('$(ASAN_DIR)' not in f)"
	$(ASAN_ENV) $(BIN)/python -m pytest -q -p no:cacheprovider $(ASAN_TESTS)
	rm -rf $(ASAN_DIR)

clean:
	rm -rf build src/bitsback/_rans.c src/bitsback/*.so
