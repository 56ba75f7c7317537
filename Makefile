# lucie.c - build, test, demo, benchmark.
#   make              build ./run (OpenMP when the compiler has it)
#   make OPENMP=0     build without OpenMP
#   make test         build everything and run the whole test suite
#   make SANITIZE=1   build with AddressSanitizer + UBSan (works with test)
#   make demo         offline end-to-end demo on a small random Lucie-shaped model
#   make bench        speed at the real Lucie-7B shapes (see README)
CC ?= cc
PYTHON ?= python3
OPT ?= -O3
ARCH ?= -march=native
CFLAGS ?= $(OPT) $(ARCH)
WARN = -std=c99 -Wall -Wextra -pedantic
HAVE_OPENMP := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo 1 || echo 0)
OPENMP ?= $(HAVE_OPENMP)
ifeq ($(OPENMP),1)
  OMPFLAGS = -fopenmp
endif
ifeq ($(SANITIZE),1)
  CFLAGS = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
endif
ALL_CFLAGS = $(WARN) $(CFLAGS) $(OMPFLAGS) $(EXTRA_CFLAGS)
LDLIBS = -lm

LIB_SRC = lucie.c lucie.h $(wildcard *.inc.c)
TEST_BINS = test/logits

.PHONY: all test demo bench clean
all: run

run: run.c $(LIB_SRC)
	$(CC) $(ALL_CFLAGS) -o $@ run.c lucie.c $(LDLIBS)

test/logits: test/logits.c $(LIB_SRC)
	$(CC) $(ALL_CFLAGS) -o $@ test/logits.c lucie.c $(LDLIBS)

test: run $(TEST_BINS)
	$(PYTHON) -m pytest -q test

demo: run
	$(PYTHON) tools/demo.py

bench: run
	$(PYTHON) test/bench.py

clean:
	rm -f run $(TEST_BINS)
