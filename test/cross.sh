#!/bin/sh
# test/cross.sh [TARGET...] - build lucie.c for other machines and run it there.
#
# Targets (default: all whose toolchain is installed; missing ones are reported, not failed):
#   aarch64   aarch64-linux-gnu-gcc, twice (armv8-a, and armv8.2-a+dotprod), run under
#             qemu-aarch64: the C unit tests must pass, and the logits of every test model
#             must match this machine's (same tolerance as test_forward.py: 1e-4 of the
#             largest |logit|), greedy text too
#   x86-simd  this machine's compiler for each x86 vector path the host CPU can run
#             (-march=haswell: AVX2 + FMA; -march=icelake-server: AVX-512 VNNI), run natively:
#             the same checks as aarch64 (a host with AVX-512 would otherwise never run the
#             AVX2 kernels); a path the CPU lacks is reported as skipped
#   windows   x86_64-w64-mingw32-gcc (the Windows mapping code), warning-free; when wine is
#             installed the same checks as aarch64 run under wine, with both load modes
#   win32     i686-w64-mingw32-gcc: a 32-bit size_t build, warning-free (not run)
#   i686      i686-linux-gnu-gcc under qemu-i386: the checks above, plus test_hostile.py run
#             against this 32-bit build (sizes that fit in 64 bits overflow here)
#   s390x     s390x-linux-gnu-gcc, run under qemu-s390x: a big-endian host must refuse the
#             (little-endian) model file at load with a clear one-line message
# Debian packages: gcc-aarch64-linux-gnu qemu-user mingw-w64 wine gcc-i686-linux-gnu
# gcc-s390x-linux-gnu.
# Every build uses -std=c99 -Wall -Wextra -pedantic -Werror and its threads (POSIX threads,
# or Windows threads with mingw; builds without threads are test/warnings.sh's job). Exits 1 if anything failed.
set -u
cd "$(dirname "$0")/.." || exit 2
PYTHON=${PYTHON:-python3}
WARN="-std=c99 -Wall -Wextra -pedantic -Werror"
TARGETS=${*:-aarch64 x86-simd windows win32 i686 s390x}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/lucie-cross.XXXXXX") || exit 2
trap 'rm -rf "$WORK"' EXIT INT TERM
failed=0
fail() { echo "FAIL: $*"; failed=1; }
skipped=""  # targets whose toolchain is missing: said in the summary, never counted as passed
skip() { echo "  skipped: $*"; skipped="$skipped $target"; }
have() { command -v "$1" >/dev/null 2>&1; }

# build DIR CC FLAGS...: run, test/logits and the unit tests that include lucie.c ($EXE: suffix)
EXE=
build() {
    dir=$1 cc=$2
    shift 2
    mkdir -p "$dir"
    ok=0
    $cc $WARN "$@" -o "$dir/run$EXE" run.c lucie.c -lm >"$dir/build.log" 2>&1 || ok=1
    $cc $WARN "$@" -o "$dir/logits$EXE" test/logits.c lucie.c -lm >>"$dir/build.log" 2>&1 || ok=1
    for t in test/test_kernels test/test_float_kernels; do
        [ -f "$t.c" ] || continue
        $cc $WARN "$@" -o "$dir/$(basename $t)$EXE" "$t.c" -lm >>"$dir/build.log" 2>&1 || ok=1
    done
    if [ $ok -ne 0 ]; then
        sed 's/^/    /' "$dir/build.log" | head -40
    fi
    return $ok
}

# ---- reference: this machine, portable flags --------------------------------------
echo "== reference build (host $(uname -m))"
build "$WORK/host" "${CC:-cc}" -O2 -pthread || { echo "the host build fails; nothing to compare with"; exit 1; }

echo "== test models"
${MAKE:-make} -s run >/dev/null || fail "make run (export.py quantizes with it)"
mkdir -p "$WORK/models"
MODELS=""
add_model() { # NAME KIND|DIR DTYPE
    out="$WORK/models/$1.bin"
    if [ -d "$2" ]; then
        $PYTHON export.py "$2" "$out" --dtype "$3" --quiet
    else
        $PYTHON test/fuzz_models.py model "$2" "$out" "$3"
    fi && MODELS="$MODELS $1" || echo "  (cannot make $1; skipped)"
}
add_model lucie-like-bf16 lucie-like bf16
add_model llama-like-f32 llama-like f32
add_model quant-q8 quant-like q8
add_model quant-q4 quant-like q4
for dt in f32 bf16 q8 q4; do add_model "stories260K-$dt" test/data/stories260K/hf-untied $dt; done
echo "  $MODELS"

# ids MODEL: 12 token ids spread over the model's vocabulary
ids() {
    $PYTHON -c "import struct,sys; v=struct.unpack_from('<I', open(sys.argv[1],'rb').read(64), 56)[0]; print(' '.join(str((1 + 37 * i) % v) for i in range(12)))" "$1"
}

# compare A.f32 B.f32: prints the relative difference, fails above 1e-4
compare() {
    $PYTHON - "$1" "$2" <<'EOF'
import struct, sys
a, b = (open(p, "rb").read() for p in sys.argv[1:3])
if len(a) != len(b) or not a:
    print("sizes differ: %d vs %d bytes" % (len(a), len(b)))
    sys.exit(1)
x = struct.unpack("<%df" % (len(a) // 4), a)
y = struct.unpack("<%df" % (len(b) // 4), b)
scale = max(abs(v) for v in x) or 1.0
diff = max(abs(p - q) for p, q in zip(x, y))
print("max |diff| %.3g = %.3g of max |logit|%s" % (diff, diff / scale, " (bit-identical)" if x == y else ""))
sys.exit(0 if diff <= 1e-4 * scale else 1)
EOF
}

# check NAME EMULATOR...: unit tests, logits and greedy text of every model vs the host
check() {
    name=$1
    shift
    dir="$WORK/$name"
    for t in test_kernels test_float_kernels; do
        [ -f "$dir/$t$EXE" ] || continue
        if "$@" "$dir/$t$EXE" >"$dir/$t.log" 2>&1; then
            echo "  $t: ok"
        else
            fail "$name: $t"; tail -5 "$dir/$t.log" | sed 's/^/    /'
        fi
    done
    # text through the command line: non-ASCII arguments and bytes on stdout must be
    # exactly the host's (UTF-8 arguments, no newline translation)
    model="$WORK/models/lucie-like-bf16.bin"
    if [ -f "$model" ]; then
        text="é «ab» — (ca)"
        "$WORK/host/run" "$model" --tokenize "$text" >"$WORK/host-tok.txt" 2>&1
        "$@" "$dir/run$EXE" "$model" --tokenize "$text" >"$dir/tok.txt" 2>&1
        if cmp -s "$WORK/host-tok.txt" "$dir/tok.txt"; then
            echo "  UTF-8 argument: ok"
        else
            fail "$name: --tokenize of a UTF-8 argument: '$(cat "$dir/tok.txt")', host: '$(cat "$WORK/host-tok.txt")'"
        fi
        accented="$WORK/models/modèle ü.bin" # a UTF-8 file name: the library's paths are UTF-8
        cp "$model" "$accented"
        "$@" "$dir/run$EXE" "$accented" --tokenize "$text" >"$dir/tok2.txt" 2>&1
        if cmp -s "$WORK/host-tok.txt" "$dir/tok2.txt"; then
            echo "  UTF-8 file name: ok"
        else
            fail "$name: model at a UTF-8 path: '$(cat "$dir/tok2.txt")'"
        fi
        rm -f "$accented"
        nl_ids=$(printf 'a\nb\n' | "$WORK/host/run" "$model" --tokenize - --no-bos)
        "$WORK/host/run" "$model" --detokenize "$nl_ids" >"$WORK/host-detok.txt" 2>&1
        "$@" "$dir/run$EXE" "$model" --detokenize "$nl_ids" >"$dir/detok.txt" 2>&1
        if cmp -s "$WORK/host-detok.txt" "$dir/detok.txt"; then
            echo "  newlines on stdout: ok"
        else
            fail "$name: --detokenize output bytes differ: $(od -An -tx1 "$dir/detok.txt"), host: $(od -An -tx1 "$WORK/host-detok.txt")"
        fi
    fi
    for m in $MODELS; do
        model="$WORK/models/$m.bin"
        # shellcheck disable=SC2046
        "$WORK/host/logits" "$model" prefill "$WORK/host-$m.f32" $(ids "$model") >/dev/null 2>&1
        # shellcheck disable=SC2046
        if ! "$@" "$dir/logits$EXE" "$model" prefill "$dir/$m.f32" $(ids "$model") >"$dir/$m.log" 2>&1; then
            fail "$name: logits on $m"; tail -3 "$dir/$m.log" | sed 's/^/    /'
            continue
        fi
        printf '  %-18s logits: ' "$m"
        compare "$WORK/host-$m.f32" "$dir/$m.f32" || fail "$name: logits of $m differ from the host's"
        "$WORK/host/run" "$model" -n 12 --temp 0 -t 1 -p "once a" >"$WORK/host-$m.txt" 2>/dev/null
        for load in mmap read; do
            "$@" "$dir/run$EXE" "$model" -n 12 --temp 0 -t 1 -p "once a" --load $load >"$dir/$m.$load.txt" 2>"$dir/$m.err"
            rc=$?
            if [ $rc -ne 0 ]; then
                fail "$name: run --load $load on $m exits $rc"; tail -3 "$dir/$m.err" | sed 's/^/    /'
            elif ! cmp -s "$WORK/host-$m.txt" "$dir/$m.$load.txt"; then
                fail "$name: greedy text on $m (--load $load) differs from the host's"
            fi
        done
    done
}

for target in $TARGETS; do
    case $target in
    aarch64)
        echo "== aarch64 (qemu-aarch64)"
        if ! have aarch64-linux-gnu-gcc || ! have qemu-aarch64; then
            skip "needs gcc-aarch64-linux-gnu and qemu-user"
            continue
        fi
        for variant in "armv8-a" "armv8.2-a+dotprod"; do
            name="aarch64-$(echo $variant | tr '.+' '__')"
            echo "-- -march=$variant"
            if build "$WORK/$name" aarch64-linux-gnu-gcc -O2 -march=$variant -pthread -static; then
                echo "  build: ok (warning-free)"
                check "$name" qemu-aarch64 -cpu max
            else
                fail "$name: build"
            fi
        done
        ;;
    x86-simd)
        echo "== x86-64 vector paths (native)"
        paths=0
        for variant in "haswell:avx2 fma" "icelake-server:avx512f avx512bw avx512_vnni"; do
            arch=${variant%%:*}
            missing=""
            for flag in ${variant#*:}; do
                grep -qw "$flag" /proc/cpuinfo 2>/dev/null || missing="$missing $flag"
            done
            if [ -n "$missing" ]; then
                echo "-- -march=$arch: this CPU lacks$missing"
                continue
            fi
            echo "-- -march=$arch"
            paths=1
            if build "$WORK/x86-$arch" "${CC:-cc}" -O2 -march=$arch -pthread; then
                echo "  build: ok (warning-free)"
                check "x86-$arch" env
            else
                fail "x86-$arch: build"
            fi
        done
        [ $paths -eq 1 ] || skip "this CPU has none of the vector paths"
        ;;
    windows)
        echo "== windows x86-64 (mingw-w64$(have wine && echo ', wine'))"
        if ! have x86_64-w64-mingw32-gcc; then
            skip "needs mingw-w64"
            continue
        fi
        EXE=.exe
        if build "$WORK/windows" x86_64-w64-mingw32-gcc -O2 -static; then
            echo "  build: ok (warning-free)"
            if have wine; then
                export WINEPREFIX="$WORK/wineprefix" WINEDEBUG=-all
                wine cmd /c exit >/dev/null 2>&1
                check windows wine
                wineserver -w
            else
                echo "  not run: wine is not installed"
            fi
        else
            fail "windows: build"
        fi
        EXE=
        ;;
    win32)
        echo "== windows x86 32-bit (build only)"
        if ! have i686-w64-mingw32-gcc; then
            skip "needs mingw-w64"
            continue
        fi
        EXE=.exe
        if build "$WORK/win32" i686-w64-mingw32-gcc -O2 -static; then
            echo "  build: ok (warning-free)"
        else
            fail "win32: build"
        fi
        EXE=
        ;;
    i686)
        echo "== i686, 32-bit size_t (qemu-i386): the hostile-input tests against this build"
        if ! have i686-linux-gnu-gcc || ! have qemu-i386; then
            skip "needs gcc-i686-linux-gnu and qemu-user"
            continue
        fi
        # SSE arithmetic, as every 32-bit x86 build since the Pentium 4 does; the x87 FPU's
        # excess precision is reported separately below
        if build "$WORK/i686" i686-linux-gnu-gcc -O2 -msse2 -mfpmath=sse -pthread -static; then
            echo "  build: ok (warning-free)"
            check i686 qemu-i386
            if i686-linux-gnu-gcc -std=c99 -O2 -mfpmath=387 -static -o "$WORK/i686/test_kernels_x87" \
                test/test_kernels.c -lm 2>/dev/null; then
                if qemu-i386 "$WORK/i686/test_kernels_x87" >"$WORK/i686/x87.log" 2>&1; then
                    echo "  note: with x87 arithmetic (-mfpmath=387) test_kernels passes too"
                else
                    echo "  note: with x87 arithmetic (-mfpmath=387) test_kernels fails:" \
                        "$(grep -c FAILED "$WORK/i686/x87.log") check group(s) (excess precision; not counted)"
                fi
            fi
            printf '#!/bin/sh\nexec qemu-i386 "%s" "$@"\n' "$WORK/i686/run" >"$WORK/i686/run-qemu"
            chmod +x "$WORK/i686/run-qemu"
            # the Python `make test` runs pytest with (python3, or .venv with the references)
            if ! test_python=$($PYTHON test/setup_env.py 2>"$WORK/i686/setup_env.log"); then
                fail "i686: test/setup_env.py found no Python to run pytest with"; tail -3 "$WORK/i686/setup_env.log" | sed 's/^/    /'
            elif LUCIE_TEST_RUN="$WORK/i686/run-qemu" "$test_python" -m pytest -q -p no:cacheprovider test/test_hostile.py \
                -k "not valgrind and not corpus and not regression" >"$WORK/i686/pytest.log" 2>&1; then
                echo "  test_hostile.py: $(tail -1 "$WORK/i686/pytest.log")"
            else
                fail "i686: test_hostile.py"
                { grep -E "^(FAILED|E  )" "$WORK/i686/pytest.log" || tail -3 "$WORK/i686/pytest.log"; } | head -20 | sed 's/^/    /'
            fi
        else
            fail "i686: build"
        fi
        ;;
    s390x)
        echo "== s390x, big-endian (qemu-s390x)"
        if ! have s390x-linux-gnu-gcc || ! have qemu-s390x; then
            skip "needs gcc-s390x-linux-gnu and qemu-user"
            continue
        fi
        dir="$WORK/s390x"
        mkdir -p "$dir"
        if ! s390x-linux-gnu-gcc $WARN -O2 -pthread -static -o "$dir/run" run.c lucie.c -lm 2>"$dir/build.log"; then
            fail "s390x: build"; head -20 "$dir/build.log" | sed 's/^/    /'
            continue
        fi
        echo "  build: ok (warning-free)"
        for m in $MODELS; do
            qemu-s390x "$dir/run" "$WORK/models/$m.bin" -n 1 >"$dir/out" 2>"$dir/err"
            rc=$?
            lines=$(grep -c . "$dir/err")
            if [ $rc -eq 1 ] && [ "$lines" -eq 1 ] && grep -q "big-endian" "$dir/err" && [ ! -s "$dir/out" ]; then
                echo "  $m: refused: $(cat "$dir/err")"
            else
                fail "s390x: $m: exit $rc, stderr: $(head -3 "$dir/err")"
            fi
        done
        ;;
    *)
        echo "unknown target $target (aarch64 windows win32 i686 s390x)"
        failed=1
        ;;
    esac
done
ran=""
for target in $TARGETS; do
    case " $skipped " in *" $target "*) ;; *) ran="$ran $target" ;; esac
done
summary="ran:${ran:- nothing}; skipped:${skipped:- nothing}"
if [ $failed -ne 0 ]; then
    echo "cross.sh: FAILED ($summary)"
elif [ -z "$ran" ]; then
    echo "cross.sh: nothing ran, every target was skipped ($summary)"
else
    echo "cross.sh: all ok ($summary)"
fi
exit $failed
