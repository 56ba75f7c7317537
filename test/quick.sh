#!/bin/sh
# test/quick.sh - `make test-quick`: a reduced run for a machine without the Python references.
#
# Runs the C unit tests and every pytest case that needs none of the references
# (LUCIE_TEST_QUICK=1 makes those that do skip instead of fail), with this Python, no
# virtual environment, no download. What it does NOT check is printed as the first and as
# the last line. `make test` is the real suite.
set -u
cd "$(dirname "$0")/.." || exit 2
PYTHON=${PYTHON:-python3}
UNIT_TESTS=${UNIT_TESTS:-test/test_kernels test/test_float_kernels}

banner="*** QUICK RUN: NOT CHECKED: nothing is compared with torch, transformers, tokenizers or numpy (logits, tokenizer, chat template, sampling, quantization quality); run make test for the whole suite ***"
echo "$banner"
status=0
${MAKE:-make} --no-print-directory test-programs || { echo "$banner"; exit 1; }
for t in $UNIT_TESTS; do
    ./$t || status=1
done
if "$PYTHON" -c "import pytest" >/dev/null 2>&1; then
    LUCIE_TEST_QUICK=1 "$PYTHON" -m pytest -q -rs test || status=1
else
    echo "*** $PYTHON has no pytest: the Python tests did NOT run at all (make test installs them in .venv) ***"
fi
echo "$banner"
exit $status
