#!/bin/sh
# test/warnings.sh - every C file of the project must compile warning-free with
#   {gcc, clang} x {-O0, -O3, -O3 -march=native} x {with threads, -DLUCIE_NO_THREADS}
# (the threaded builds add -fopenmp when the compiler has it: test/peak's probe uses it)
# under -std=c99 -Wall -Wextra -pedantic -Werror, plus the SIMD paths this machine may not
# run, compiled only: -march=icelake-server (AVX-512 VNNI, BW). Compilers that are not
# installed are reported and skipped. Prints one line per combination; exits 1 on any warning.
# The fuzz targets are compiled with their replay driver (test/fuzz_replay.c), which is
# how `make test` builds them with any compiler.
set -u
cd "$(dirname "$0")/.." || exit 2
WARN="-std=c99 -Wall -Wextra -pedantic -Werror"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/lucie-warnings.XXXXXX") || exit 2
trap 'rm -rf "$WORK"' EXIT INT TERM

# the HTTP server example (and its fuzz target, which includes it) uses POSIX threads
threads() {
    case $1 in
    examples/server.c | test/fuzz_server.c) echo " -pthread" ;;
    esac
}

# "program source" pairs: what each C program is compiled from (lucie.c is linked in
# unless the test #includes it)
programs() {
    echo "run run.c lucie.c"
    for f in test/*.c examples/*.c bench/*.c; do
        [ -f "$f" ] || continue
        case $f in
        test/fuzz_replay.c) continue ;;
        test/fuzz_*.c) echo "$(basename "$f" .c) $f test/fuzz_replay.c lucie.c$(threads "$f")" ;;
        *)
            if grep -q '#include "\.\./lucie\.c"' "$f"; then
                echo "$(basename "$f" .c) $f"
            else
                echo "$(basename "$f" .c) $f lucie.c$(threads "$f")"
            fi
            ;;
        esac
    done
}

JOBS=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
failed=0
for cc in gcc clang; do
    if ! command -v $cc >/dev/null 2>&1; then
        echo "$cc: not installed, skipped"
        continue
    fi
    for opt in "-O0" "-O3" "-O3 -march=native"; do
        for threads in "-pthread -fopenmp" "-DLUCIE_NO_THREADS"; do
            if [ "$threads" != -DLUCIE_NO_THREADS ] && ! echo 'int main(void){return 0;}' | $cc -fopenmp -x c - -o "$WORK/omp" 2>/dev/null; then
                threads="-pthread"
            fi
            label="$cc $opt $threads"
            log="$WORK/log"
            programs >"$WORK/programs"
            rm -f "$WORK"/*.log "$WORK"/*.bad
            running=0
            while read -r name sources; do # $JOBS compilers at a time
                # shellcheck disable=SC2086
                ($cc $WARN $opt $threads -o "$WORK/$name" $sources -lm >"$WORK/$name.log" 2>&1 || : >"$WORK/$name.bad") &
                running=$((running + 1))
                if [ $running -ge "$JOBS" ]; then
                    wait
                    running=0
                fi
            done <"$WORK/programs"
            wait
            cat "$WORK"/*.log >"$log"
            bad=""
            for f in "$WORK"/*.bad; do
                [ -e "$f" ] && bad="$bad $(basename "$f" .bad)"
            done
            if [ -z "$bad" ]; then
                echo "$label: ok ($(wc -l <"$WORK/programs") programs)"
            else
                failed=1
                echo "$label: FAILED in$bad"
                grep -E 'warning|error' "$log" | sort | uniq -c | sort -rn | head -15 | sed 's/^/    /'
            fi
        done
    done
done
# the kernels of other machines: compiled (warning-free), not run
for cc in gcc clang; do
    command -v $cc >/dev/null 2>&1 || continue
    for arch in icelake-server; do
        if $cc $WARN -O3 -march=$arch -pthread -o "$WORK/kernels-$arch" test/test_kernels.c -lm >"$WORK/log" 2>&1 &&
            $cc $WARN -O3 -march=$arch -pthread -o "$WORK/run-$arch" run.c lucie.c -lm >>"$WORK/log" 2>&1; then
            echo "$cc -O3 -march=$arch (compiled, not run): ok"
        else
            failed=1
            echo "$cc -O3 -march=$arch: FAILED"
            grep -E 'warning|error' "$WORK/log" | sort | uniq -c | sort -rn | head -15 | sed 's/^/    /'
        fi
    done
done
[ $failed -eq 0 ] && echo "warnings.sh: all clean" || echo "warnings.sh: FAILED"
exit $failed
