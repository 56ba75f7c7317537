/* peak.c - the compute peak of this machine, and how close the matmul kernels come to it.
 *
 * Prefill (a batch of tokens through every weight matrix) is bound by arithmetic,
 * not memory, so its yardstick is the rate at which the cores can multiply and
 * add. This program measures that rate with the very instructions lucie.c's
 * kernels use on this build's instruction set, each thread running many
 * independent accumulators (so latency never limits, only throughput):
 *   int8: AVX-512 VNNI  VPDPBUSD zmm                      (64 MACs per instruction)
 *         AVX2          VPMADDUBSW + VPMADDWD + VPADDD ymm (32 MACs per three)
 *         NEON dotprod  SDOT                              (16 MACs per instruction)
 *         counting one multiply-accumulate (MAC) per byte pair;
 *   f32:  FMA on the widest vectors (one MAC per lane).
 * With --matmul it then times lucie.c's quantized matmul (it includes lucie.c)
 * on the 7B model's shapes, for a prefill batch of 64 tokens (MAX_BATCH) and for
 * one token (decoding), and reports GMAC/s, % of the int8 peak measured in the
 * same run, and for one token the weight bytes read per second (decoding is
 * bound by memory bandwidth: compare with test/bandwidth.c).
 *
 * Build: make measure (or cc -std=c99 -O3 -march=native -fopenmp test/peak.c -o test/peak -lm)
 * Usage: peak [-t threads] [-r repeats] [--matmul] [--quick] [--shape RxC] [--tokens N] [--cpu-time] [--json]
 *   -t N      thread counts 1..N are measured (default 2; 1 without OpenMP)
 *   -r N      repeats; the best is kept (default 5): the machine may be shared
 *   --matmul  also time the q8/q4 matmul at 4096x4096, 12288x4096 and 4096x12288
 *             (rows x columns), batch 64 and 1, at N threads
 *   --quick   the matmul on 4096x4096 only
 *   --shape RxC, --tokens N   the matmul on this shape / batch only (implies --matmul)
 *   --cpu-time  time by the process's CPU seconds / threads instead of the wall
 *             clock: steadier on a machine shared with other work
 *   --json    one JSON line per measurement instead of the text report
 * GMAC/s: 1e9 multiply-accumulates per second; GB/s: 1e9 bytes per second. */
#define _POSIX_C_SOURCE 200809L
#include "../lucie.c"

/* Wall-clock seconds (lucie.c's now_seconds), or with --cpu-time the CPU
 * seconds of the whole process divided by the thread count: on a machine
 * shared with other work, time spent descheduled then does not count (time
 * OpenMP threads spend waiting for each other still does). */
static int use_cpu_time = 0, timed_threads = 1;
static double seconds_now(void) {
#if defined(CLOCK_PROCESS_CPUTIME_ID)
    if (use_cpu_time) {
        struct timespec ts;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return ((double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec) / timed_threads;
    }
#endif
    return lucie_time_seconds();
}

/* ---- the probes: ACC independent accumulators, `iters` rounds each ---- */

#define ACC 12

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define INT8_NAME "vpdpbusd zmm"
#define INT8_MACS_PER_ROUND (ACC * 64)
static int32_t int8_probe(long iters, int seed) {
    __m512i acc[ACC], a = _mm512_set1_epi8((char)(seed | 1)), b = _mm512_set1_epi8((char)(seed + 3));
    int32_t out[16], k, total = 0;
    long i;
    for (k = 0; k < ACC; k++) acc[k] = _mm512_set1_epi32(k);
    for (i = 0; i < iters; i++)
        for (k = 0; k < ACC; k++) acc[k] = _mm512_dpbusd_epi32(acc[k], a, b);
    for (k = 1; k < ACC; k++) acc[0] = _mm512_add_epi32(acc[0], acc[k]);
    _mm512_storeu_si512((void *)out, acc[0]);
    for (k = 0; k < 16; k++) total += out[k];
    return total;
}
#elif defined(__AVX2__)
#define INT8_NAME "vpmaddubsw+vpmaddwd+vpaddd ymm"
#define INT8_MACS_PER_ROUND (ACC * 32)
static int32_t int8_probe(long iters, int seed) {
    __m256i acc[ACC], a = _mm256_set1_epi8((char)(seed & 15)), b = _mm256_set1_epi8((char)(seed + 3)),
                      ones = _mm256_set1_epi16(1);
    int32_t out[8], k, total = 0;
    long i;
    for (k = 0; k < ACC; k++) acc[k] = _mm256_set1_epi32(k);
    for (i = 0; i < iters; i++)
        for (k = 0; k < ACC; k++) acc[k] = _mm256_add_epi32(acc[k], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones));
    for (k = 1; k < ACC; k++) acc[0] = _mm256_add_epi32(acc[0], acc[k]);
    _mm256_storeu_si256((__m256i *)out, acc[0]);
    for (k = 0; k < 8; k++) total += out[k];
    return total;
}
#elif defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)
#include <arm_neon.h>
#define INT8_NAME "sdot"
#define INT8_MACS_PER_ROUND (ACC * 16)
static int32_t int8_probe(long iters, int seed) {
    int32x4_t acc[ACC];
    int8x16_t a = vdupq_n_s8((int8_t)(seed | 1)), b = vdupq_n_s8((int8_t)(seed + 3));
    int32_t total = 0;
    int k;
    long i;
    for (k = 0; k < ACC; k++) acc[k] = vdupq_n_s32(k);
    for (i = 0; i < iters; i++)
        for (k = 0; k < ACC; k++) acc[k] = vdotq_s32(acc[k], a, b);
    for (k = 0; k < ACC; k++) total += vaddvq_s32(acc[k]);
    return total;
}
#else
#define INT8_NAME "none (no int8 dot-product instructions in this build)"
#define INT8_MACS_PER_ROUND 0
static int32_t int8_probe(long iters, int seed) {
    (void)iters;
    return seed;
}
#endif

/* f32 FMA on lucie.c's 16-lane vector type (vec16: one zmm, two ymm or four
 * NEON registers), as many accumulators as fit in the register file. */
#ifdef FLOAT_SIMD
#if defined(__AVX512F__)
#define F32_ACC 12
#else
#define F32_ACC 6
#endif
static float f32_probe(long iters, int seed) {
    vec16 acc[F32_ACC], a, b;
    float lanes[16], total = 0.0f;
    int k;
    long i;
    for (k = 0; k < 16; k++) lanes[k] = 1.0f + 1e-7f * (float)(seed + k);
    a = vec16_load(lanes);
    for (k = 0; k < 16; k++) lanes[k] = 1e-9f * (float)k;
    b = vec16_load(lanes);
    for (k = 0; k < F32_ACC; k++) acc[k] = b;
    for (i = 0; i < iters; i++)
        for (k = 0; k < F32_ACC; k++) acc[k] = vec16_fma(acc[k], a, b);
    for (k = 0; k < F32_ACC; k++) {
        int j;
        vec16_store(lanes, acc[k]);
        for (j = 0; j < 16; j++) total += lanes[j];
    }
    return total;
}
#define F32_MACS_PER_ROUND (F32_ACC * 16)
#else
static float f32_probe(long iters, int seed) {
    (void)iters;
    return (float)seed;
}
#define F32_MACS_PER_ROUND 1
#endif

/* Best GMAC/s over `repeats` runs of `iters` rounds on each of n_threads threads. */
static double probe_rate(int int8, int n_threads, long iters, int repeats) {
    double best = 0.0;
    volatile double sink = 0.0;
    int rep;
    timed_threads = n_threads;
    for (rep = 0; rep < repeats; rep++) {
        double start = seconds_now(), seconds, total = 0.0;
        int t;
#ifdef _OPENMP
#pragma omp parallel for num_threads(n_threads) reduction(+ : total)
#endif
        for (t = 0; t < n_threads; t++) total += int8 ? (double)int8_probe(iters, t + rep) : (double)f32_probe(iters, t + rep);
        seconds = seconds_now() - start;
        sink += total;
        if ((double)n_threads * iters * (int8 ? INT8_MACS_PER_ROUND : F32_MACS_PER_ROUND) / seconds / 1e9 > best)
            best = (double)n_threads * iters * (int8 ? INT8_MACS_PER_ROUND : F32_MACS_PER_ROUND) / seconds / 1e9;
    }
    (void)sink;
    return best;
}

/* ---- the matmul benchmark ---- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float gaussian(void) {
    double u, v;
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    u = (double)(rng >> 11) * (1.0 / 9007199254740992.0) + 1e-300;
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    v = (double)(rng >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

/* Times quant_matmul (the kernel the forward pass calls) on a random rows x cols
 * matrix for n tokens; prints GMAC/s, % of `peak` and the weight GB/s. */
static int bench_matmul(int dtype, int rows, int cols, int n, int n_threads, int repeats, double peak, int json) {
    size_t wbytes = 0, i;
    float *wf, *x = (float *)malloc((size_t)n * cols * sizeof(float)), *out = (float *)malloc((size_t)n * rows * 4);
    unsigned char *w, *xq = (unsigned char *)malloc(quant_input_bytes(n, cols, QUANT_GROUP));
    kernel_ctx ctx;
    double best = 1e30, macs = (double)rows * cols * n;
    int rep, calls = n == 1 ? 20 : 1, k;
    if (!tensor_bytes(dtype, (size_t)rows, (size_t)cols, QUANT_GROUP, &wbytes)) return 1;
    w = (unsigned char *)malloc(wbytes);
    wf = (float *)malloc((size_t)QUANT_ROWS * cols * sizeof(float));
    if (!x || !out || !xq || !w || !wf) return 1;
    for (i = 0; i < (size_t)rows; i += QUANT_ROWS) { /* quantized 16 rows at a time: less memory */
        size_t r, m = rows - i < QUANT_ROWS ? rows - i : QUANT_ROWS;
        for (r = 0; r < m * cols; r++) wf[r] = 0.02f * gaussian();
        quantize_rows(dtype, wf, w + i / QUANT_ROWS * quant_block_bytes(dtype, quant_groups(cols)), m, cols,
                      QUANT_GROUP);
    }
    for (i = 0; i < (size_t)n * cols; i++) x[i] = gaussian();
    ctx.pool = pool_new(n_threads, 1); /* placed as a session's threads are */
    if (!ctx.pool) return 1;
    pool_pin_caller(ctx.pool);
    ctx.n_threads = n_threads;
    ctx.split_any_size = 0; /* the thresholds apply, as in the forward pass */
    quant_prepare(&ctx, x, n, cols, QUANT_GROUP, xq);
    quant_matmul(&ctx, dtype, out, xq, w, n, rows, cols, 0); /* warm up */
    timed_threads = n_threads;
    for (rep = 0; rep < repeats; rep++) {
        double start = seconds_now(), seconds;
        for (k = 0; k < calls; k++) quant_matmul(&ctx, dtype, out, xq, w, n, rows, cols, 0);
        seconds = (seconds_now() - start) / calls;
        if (seconds < best) best = seconds;
    }
    if (json)
        printf("{\"probe\": \"matmul\", \"dtype\": \"%s\", \"rows\": %d, \"cols\": %d, \"tokens\": %d, \"threads\": %d, "
               "\"gmacs\": %.2f, \"peak_percent\": %.1f, \"weight_gbs\": %.2f, \"ms\": %.3f}\n",
               dtype == LUCIE_DT_Q8 ? "q8" : "q4", rows, cols, n, n_threads, macs / best / 1e9,
               peak > 0 ? 100.0 * macs / best / 1e9 / peak : 0.0, (double)wbytes / best / 1e9, best * 1e3);
    else
        printf("  %s %5d x %-5d  %2d token%s  %8.3f ms  %7.1f GMAC/s  %5.1f%% of peak  %6.2f GB/s of weights\n",
               dtype == LUCIE_DT_Q8 ? "q8" : "q4", rows, cols, n, n == 1 ? " " : "s", best * 1e3, macs / best / 1e9,
               peak > 0 ? 100.0 * macs / best / 1e9 / peak : 0.0, (double)wbytes / best / 1e9);
    free(wf);
    free(w);
    free(x);
    free(out);
    free(xq);
    pool_free(ctx.pool);
    return 0;
}

int main(int argc, char **argv) {
    int max_threads = 2, repeats = 5, matmul = 0, quick = 0, json = 0, i, t, shape_rows = 0, shape_cols = 0, tokens = 0;
    double int8_peak = 0.0;
    for (i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "-t") == 0 || strcmp(argv[i], "-r") == 0) && i + 1 < argc) {
            int v = atoi(argv[i + 1]);
            if (v < 1 || v > 1024) {
                fprintf(stderr, "peak: bad value '%s' for %s\n", argv[i + 1], argv[i]);
                return 2;
            }
            if (argv[i][1] == 't') max_threads = v;
            else repeats = v;
            i++;
        } else if (strcmp(argv[i], "--matmul") == 0) {
            matmul = 1;
        } else if (strcmp(argv[i], "--quick") == 0) {
            matmul = quick = 1;
        } else if (strcmp(argv[i], "--shape") == 0 && i + 1 < argc) {
            if (sscanf(argv[++i], "%dx%d", &shape_rows, &shape_cols) != 2 || shape_rows < 1 || shape_cols < 1 ||
                shape_rows > 1 << 20 || shape_cols > 1 << 20) {
                fprintf(stderr, "peak: bad shape '%s' (ROWSxCOLS)\n", argv[i]);
                return 2;
            }
            matmul = 1;
        } else if (strcmp(argv[i], "--tokens") == 0 && i + 1 < argc) {
            tokens = atoi(argv[++i]);
            if (tokens < 1 || tokens > 4096) {
                fprintf(stderr, "peak: bad token count '%s'\n", argv[i]);
                return 2;
            }
            matmul = 1;
        } else if (strcmp(argv[i], "--cpu-time") == 0) {
            use_cpu_time = 1;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else {
            fprintf(stderr, "usage: %s [-t threads] [-r repeats] [--matmul] [--quick] [--shape RxC] [--tokens N] [--cpu-time] [--json]\n", argv[0]);
            return 2;
        }
    }
#ifndef _OPENMP
    max_threads = 1;
#endif
    if (!json) printf("int8: %s; f32: FMA; quantized kernels: %s\n", INT8_NAME,
#ifdef QUANT_SIMD
                      QUANT_SIMD
#else
                      "portable C"
#endif
        );
    for (t = 1; t <= max_threads; t++) {
        double i8 = INT8_MACS_PER_ROUND ? probe_rate(1, t, 20000000L / INT8_MACS_PER_ROUND * 64, repeats) : 0.0;
        double f32 = probe_rate(0, t, 20000000L / F32_MACS_PER_ROUND * 16, repeats);
        if (json)
            printf("{\"probe\": \"peak\", \"threads\": %d, \"int8_gmacs\": %.2f, \"f32_gmacs\": %.2f}\n", t, i8, f32);
        else
            printf("%d thread%s: int8 %7.1f GMAC/s   f32 FMA %6.1f GMAC/s\n", t, t == 1 ? " " : "s", i8, f32);
        if (t == max_threads) int8_peak = i8;
    }
    if (matmul) {
        int shapes[3][2] = {{4096, 4096}, {12288, 4096}, {4096, 12288}}, n_shapes = quick ? 1 : 3, s, d, n;
        if (shape_rows) shapes[0][0] = shape_rows, shapes[0][1] = shape_cols, n_shapes = 1;
        if (!json) printf("quantized matmul, %d thread%s (best of %d; %% of the int8 peak above):\n", max_threads,
                          max_threads == 1 ? "" : "s", repeats);
        for (s = 0; s < n_shapes; s++)
            for (d = 0; d < 2; d++)
                for (n = 0; n < 2; n++)
                    if ((!tokens || n == 0) &&
                        bench_matmul(d == 0 ? LUCIE_DT_Q8 : LUCIE_DT_Q4, shapes[s][0], shapes[s][1],
                                     tokens ? tokens : n == 0 ? MAX_BATCH : 1, max_threads, repeats, int8_peak, json)) {
                        fprintf(stderr, "peak: out of memory\n");
                        return 1;
                    }
    }
    return 0;
}
