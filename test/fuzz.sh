#!/bin/sh
# test/fuzz.sh [SECONDS] [TARGET...] - build the libFuzzer targets (make fuzz) and run
# each for SECONDS (default 60), one after the other, on a scratch copy of its seed
# corpus in test/fuzz_corpus/TARGET/. Targets: load tokenize session args server (default all).
#
# Exits 1 if any target found a crash, a leak, a timeout or a broken invariant; the
# input that did it is kept in test/fuzz_artifacts/ (replay it with test/fuzz_TARGET FILE;
# to keep it as a regression test, copy it to test/fuzz_corpus/regressions/TARGET-NAME).
# Prints for each target: executions, executions per second, coverage (cov: edges,
# ft: features) and corpus size.
#
# The tokenizer target runs on Lucie-7B-Instruct's real tokenizer (test/data/lucie; a tiny
# random model carrying it is built in the scratch directory). Environment: FUZZ_FLAGS adds
# libFuzzer flags.
set -u
cd "$(dirname "$0")/.." || exit 2
SECONDS_EACH=${1:-60}
[ $# -gt 0 ] && shift
TARGETS=${*:-load tokenize session args server}
PYTHON=${PYTHON:-python3}
ARTIFACTS=test/fuzz_artifacts

${MAKE:-make} fuzz || { echo "fuzz.sh: make fuzz failed (needs clang with libFuzzer)" >&2; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/lucie-fuzz.XXXXXX") || exit 2
trap 'rm -rf "$WORK"' EXIT INT TERM
mkdir -p "$ARTIFACTS"

TOKENIZER_MODEL="$WORK/lucie-vocab.bin"
$PYTHON test/fuzz_models.py model lucie-vocab "$TOKENIZER_MODEL" ||
    { echo "fuzz.sh: cannot build the tokenizer target's model from test/data/lucie/instruct" >&2; exit 2; }

failed=0
for target in $TARGETS; do
    bin=test/fuzz_$target
    [ -x "$bin" ] || { echo "fuzz.sh: no $bin" >&2; failed=1; continue; }
    cp -r "test/fuzz_corpus/$target" "$WORK/corpus-$target"
    model=
    extra=
    case $target in
    load) extra="-max_len=65536" ;;
    tokenize) extra="-max_len=4096"; model=$TOKENIZER_MODEL ;;
    session) extra="-max_len=4096" ;;
    args) extra="-max_len=512 -close_fd_mask=2" ;;  # run.c's own messages go to stderr
    server) extra="-max_len=8192" ;;  # examples/server.c's HTTP head and JSON request parsing
    esac
    log="$WORK/$target.log"
    # shellcheck disable=SC2086
    env ${model:+LUCIE_FUZZ_MODEL=$model} "$bin" -max_total_time="$SECONDS_EACH" \
        -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$ARTIFACTS/$target-" \
        $extra ${FUZZ_FLAGS:-} "$WORK/corpus-$target" >"$log" 2>&1
    rc=$?
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1)
    [ -n "$done_line" ] || done_line=$(grep -E '^#[0-9]+' "$log" | tail -1)
    speed=$(grep 'stat::average_exec_per_sec' "$log" | awk '{print $2}')
    printf '%-9s %s  (%s exec/s)\n' "$target" "$done_line" "${speed:-?}"
    if [ $rc -ne 0 ]; then
        failed=1
        echo "fuzz.sh: $target FAILED (exit $rc):"
        grep -E 'ERROR|runtime error|invariant|SUMMARY|Test unit written' "$log" | head -20
    fi
done
[ $failed -eq 0 ] && rmdir "$ARTIFACTS" 2>/dev/null
exit $failed
