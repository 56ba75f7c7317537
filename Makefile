# lucie.c - build, test, demo, benchmark.
#   make              build ./run (its threads: POSIX threads, or Windows threads)
#   make THREADS=0    build a single-threaded library (-DLUCIE_NO_THREADS: no pthreads)
#   make test         build everything and run the whole test suite (installs the Python
#                     references of test/requirements.txt in .venv when python3 lacks them)
#   make test-quick   a reduced run without the Python references; says what it did not check
#   make SANITIZE=1   build with AddressSanitizer + UBSan (works with test)
#   make fuzz         libFuzzer targets (clang); bash test/fuzz.sh SECONDS runs them
#   make demo         offline end-to-end demo on a small random Lucie-shaped model
#   make bench        speed at the real Lucie-7B shapes (see README)
#   make measure      build the measurement programs (test/peak, test/thread_thresholds, bench/attention,
#                     bench/verify_cost)
#   make lucie        download Lucie-7B-Instruct (online), export it to q4, chat
CC ?= cc
PYTHON ?= python3
OPT ?= -O3
ARCH ?= -march=native
CFLAGS ?= $(OPT) $(ARCH)
WARN = -std=c99 -Wall -Wextra -pedantic
THREADS ?= 1
ifeq ($(THREADS),0)
  THREADFLAGS = -DLUCIE_NO_THREADS
else
  THREADFLAGS = -pthread
endif
HAVE_OPENMP := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo 1 || echo 0)
ifeq ($(HAVE_OPENMP),1)
  OMPFLAGS = -fopenmp
endif
ifeq ($(SANITIZE),1)
  # $(ARCH): the sanitizers check the SIMD kernels users run (the plain C definitions run beside
  # them in the kernel tests), and the suite's 16k-position test takes a minute, not half an hour
  CFLAGS = -O1 $(ARCH) -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
endif
ALL_CFLAGS = $(WARN) $(CFLAGS) $(THREADFLAGS) $(EXTRA_CFLAGS)
LDLIBS = -lm

LIB_SRC = lucie.c lucie.h
# C programs the Python tests drive (each links the library)
TEST_PROGS = test/logits test/chat_ids test/sampling test/session test/dtypes test/batch
# C unit tests that #include lucie.c to reach its internals
UNIT_TESTS = test/test_kernels test/test_float_kernels
EXAMPLES = $(patsubst %.c,%,$(wildcard examples/*.c))
# Fuzz targets: libFuzzer builds (make fuzz) and plain replayers of their corpus (make test)
FUZZ_NAMES = load tokenize session args server
FUZZERS = $(addprefix test/fuzz_,$(FUZZ_NAMES))
REPLAYERS = $(addprefix test/replay_,$(FUZZ_NAMES))
FUZZ_CC ?= clang
TEST_BINS = $(TEST_PROGS) $(UNIT_TESTS) $(EXAMPLES) $(REPLAYERS)
# Measurement programs (they #include lucie.c): the compute peak and matmul speed, where a
# second thread starts to pay, attention alone, a verification pass of several tokens. Built by `make measure`, not run by the tests.
MEASURE_PROGS = test/peak test/thread_thresholds bench/attention bench/verify_cost

.PHONY: all test test-programs test-quick demo bench measure lucie fuzz clean
all: run

run: run.c $(LIB_SRC)
	$(CC) $(ALL_CFLAGS) -o $@ run.c lucie.c $(LDLIBS)

$(TEST_PROGS) $(EXAMPLES): %: %.c $(LIB_SRC)
	$(CC) $(ALL_CFLAGS) -o $@ $< lucie.c $(LDLIBS)

# the HTTP server example runs a thread per connection and a scheduler thread;
# its fuzz target and replayer include it for its request parser
examples/server test/fuzz_server test/replay_server: LDLIBS += -pthread
# two programs run their own loops on threads with OpenMP (when the compiler has it): test/peak's
# compute-peak probe, and examples/two_sessions' two sessions side by side
test/peak examples/two_sessions: ALL_CFLAGS += $(OMPFLAGS)
test/fuzz_server test/replay_server: examples/server.c

$(UNIT_TESTS) $(MEASURE_PROGS): %: %.c $(LIB_SRC)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(LDLIBS)

$(REPLAYERS): test/replay_%: test/fuzz_%.c test/fuzz_replay.c test/fuzz_common.h run.c $(LIB_SRC)
	$(CC) $(ALL_CFLAGS) -o $@ $< test/fuzz_replay.c lucie.c $(LDLIBS)

measure: $(MEASURE_PROGS)

fuzz: $(FUZZERS)
$(FUZZERS): test/fuzz_%: test/fuzz_%.c test/fuzz_common.h run.c $(LIB_SRC)
	$(FUZZ_CC) $(WARN) -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -pthread -o $@ $< lucie.c $(LDLIBS)

test-programs: run $(TEST_BINS)
	@:

# test/setup_env.py prints the Python to run pytest with: $(PYTHON) when it has every
# reference module, else .venv (created from test/requirements.txt once, then reused).
test: test-programs
	for t in $(UNIT_TESTS); do ./$$t || exit 1; done
	py=$$($(PYTHON) test/setup_env.py) && "$$py" -m pytest -q -rs test

# The banner first, then the build, then the reduced run (test/quick.sh).
test-quick:
	@MAKE="$(MAKE)" PYTHON="$(PYTHON)" UNIT_TESTS="$(UNIT_TESTS)" sh test/quick.sh

demo: run
	$(PYTHON) tools/demo.py

# with the test environment's Python (test/setup_env.py): the random 7B checkpoint needs numpy
bench: run
	py=$$($(PYTHON) test/setup_env.py) && "$$py" test/bench.py

LUCIE_REPO ?= OpenLLM-France/Lucie-7B-Instruct
LUCIE_BIN ?= lucie-7b-instruct-q4.bin
lucie: run
	test -f $(LUCIE_BIN) || $(PYTHON) export.py $(LUCIE_REPO) $(LUCIE_BIN) --dtype q4
	./run $(LUCIE_BIN) --chat

clean:
	rm -f run $(TEST_BINS) $(FUZZERS) $(MEASURE_PROGS)
