/* test_kernels.c - unit tests of the quantized weight formats and kernels.
 *
 * Includes lucie.c to reach its static functions. Checks, for q8 and q4:
 *   - f16 scale conversion (exhaustive round trip, round-to-nearest);
 *   - tensor sizes, and rejection of bad shapes / group sizes / overflow;
 *   - the block layout, decoded here independently from its description;
 *   - quantize -> dequantize error bounds;
 *   - the activation quantization;
 *   - matmul == float products of the dequantized weights and activations;
 *   - the portable and SIMD kernels, batch sizes, thread counts, row
 *     chunking and passes over the tokens all give bit-identical results;
 *   - both kernels are exact at the extreme codes and activations;
 *   - the pool: each item once, and where its threads run (Linux).
 * Build: cc -std=c99 -O2 [-march=native] [-fopenmp] test/test_kernels.c -o test/test_kernels -lm
 * Prints one line per check group and exits non-zero on any failure. */
#define QUANT_PASS_BYTES 4096 /* products of 9 tokens take 2 passes (see quant_matmul) */
#include "../lucie.c"

static int failures = 0;

/* "ok" or "FAILED" for the checks made since `before` failures. */
static const char *status(int before) { return failures == before ? "ok" : "FAILED"; }

#define CHECK(cond, ...)                                       \
    do {                                                       \
        if (!(cond)) {                                         \
            failures++;                                        \
            if (failures <= 20) {                              \
                fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
                fprintf(stderr, __VA_ARGS__);                  \
                fputc('\n', stderr);                           \
            }                                                  \
        }                                                      \
    } while (0)

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double uniform(void) { /* [0, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) * (1.0 / 9007199254740992.0);
}
static float gaussian(void) {
    double u = uniform() + 1e-300, v = uniform();
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

static const int dtypes[2] = {LUCIE_DT_Q8, LUCIE_DT_Q4};
static const char *dtype_name(int dt) { return dt == LUCIE_DT_Q8 ? "q8" : "q4"; }

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* ---- an independent reading of the layout documented in lucie.c (quantized weights) ---- */

/* Value of element (row, col) of a q8/q4 tensor, decoded from the bytes. */
static float reference_decode(int dt, const unsigned char *w, int row, int col, int cols) {
    int ng = (cols + 31) / 32, g = col / 32, i = col % 32, r = row % 16;
    size_t unit = dt == LUCIE_DT_Q8 ? 34 : 18;
    const unsigned char *block = w + (size_t)(row / 16) * 16 * ng * unit;
    const unsigned char *scale = block + ((size_t)g * 16 + r) * 2;
    const unsigned char *codes = block + (size_t)ng * 16 * 2;
    uint16_t h = (uint16_t)(scale[0] | scale[1] << 8);
    int code;
    /* f16 by the textbook formula, in double */
    int e = (h >> 10) & 31, m = h & 1023;
    double d = e ? ldexp(1.0 + m / 1024.0, e - 15) : ldexp(m / 1024.0, -14);
    if (h & 0x8000) d = -d;
    if (dt == LUCIE_DT_Q8) {
        code = codes[(size_t)g * 512 + (i / 4) * 64 + r * 4 + i % 4] - 128;
    } else {
        int k = (i % 16) / 4;
        unsigned char b = codes[(size_t)g * 256 + k * 64 + r * 4 + i % 4];
        code = (i < 16 ? (b & 15) : (b >> 4)) - 8;
    }
    return (float)(code * d);
}

/* ---- checks ---- */

/* the pool the kernels split their work on: three threads, made in main */
static worker_pool *test_pool_threads;

static void test_half(void) {
    int before = failures;
    uint32_t h;
    int bad_trip = 0, bad_round = 0, i;
    for (h = 0; h < 0x10000; h++) {
        if (((h >> 10) & 31) == 31) continue; /* inf / NaN are never written */
        if (float_to_half(half_to_float((uint16_t)h)) != h && h != 0x8000) bad_trip++;
    }
    CHECK(bad_trip == 0, "f16 round trip fails for %d values", bad_trip);
    for (i = 0; i < 200000; i++) {
        float f = (float)((uniform() - 0.5) * ldexp(1.0, (int)(uniform() * 44) - 28));
        uint16_t q = float_to_half(f);
        double err = fabs((double)half_to_float(q) - f);
        /* no neighbour is closer */
        if ((q & 0x7fff) != 0x7bff && fabs((double)half_to_float((uint16_t)(q + 1)) - f) < err) bad_round++;
        if ((q & 0x7fff) != 0 && fabs((double)half_to_float((uint16_t)(q - 1)) - f) < err) bad_round++;
    }
    CHECK(bad_round == 0, "f16 rounding is not to nearest for %d values", bad_round);
    CHECK(float_to_half(1e9f) == 0x7bff && float_to_half(-1e9f) == 0xfbff, "f16 does not saturate");
    printf("f16 scales: exhaustive round trip and nearest rounding: %s\n", status(before));
}

static void test_sizes(void) {
    int before = failures;
    size_t b = 0;
    CHECK(tensor_bytes(LUCIE_DT_F32, 3, 5, 0, &b) && b == 60, "f32 size");
    CHECK(tensor_bytes(LUCIE_DT_BF16, 3, 5, 0, &b) && b == 30, "bf16 size");
    CHECK(tensor_bytes(LUCIE_DT_Q8, 4096, 4096, 32, &b) && b == (size_t)4096 * 128 * 34, "q8 size");
    CHECK(tensor_bytes(LUCIE_DT_Q4, 4096, 12288, 32, &b) && b == (size_t)4096 * 384 * 18, "q4 size");
    CHECK(tensor_bytes(LUCIE_DT_Q8, 17, 33, 32, &b) && b == (size_t)32 * 2 * 34, "q8 padded size");
    CHECK(tensor_bytes(LUCIE_DT_Q4, 1, 1, 32, &b) && b == (size_t)16 * 1 * 18, "q4 padded size");
    CHECK(!tensor_bytes(LUCIE_DT_Q8, 64, 64, 64, &b), "q8 accepts group size 64");
    CHECK(!tensor_bytes(LUCIE_DT_Q4, 64, 64, 0, &b), "q4 accepts group size 0");
    CHECK(!tensor_bytes(LUCIE_DT_Q8, 0, 64, 32, &b), "accepts 0 rows");
    CHECK(!tensor_bytes(LUCIE_DT_Q8, 64, 0, 32, &b), "accepts 0 cols");
    CHECK(!tensor_bytes(LUCIE_DT_BYTES, 1, 1, 0, &b), "accepts dtype bytes");
    CHECK(!tensor_bytes(9, 1, 1, 32, &b), "accepts dtype 9");
    CHECK(!tensor_bytes(LUCIE_DT_F32, (size_t)INT_MAX + 1, 4, 0, &b), "accepts rows > INT_MAX");
    if (sizeof(size_t) == 8) {
        CHECK(!tensor_bytes(LUCIE_DT_F32, (size_t)INT_MAX, (size_t)INT_MAX, 0, &b) || b / 4 / INT_MAX == INT_MAX,
              "f32 size overflow");
    } else {
        CHECK(!tensor_bytes(LUCIE_DT_Q8, 1 << 20, 1 << 20, 32, &b), "q8 size overflow on 32-bit");
    }
    printf("tensor sizes: %s\n", status(before));
}

/* Quantizes random weights of a few shapes; checks the layout decoder, the
 * embedding rows, chunked quantization and the error bounds. */
static void test_roundtrip(void) {
    static const int shapes[][2] = {{1, 1}, {16, 32}, {17, 33}, {40, 100}, {64, 4096}, {3, 12288}};
    size_t s;
    int di;
    for (di = 0; di < 2; di++) {
        int dt = dtypes[di], before = failures;
        double worst_bound = 0.0, sum_err = 0.0, sum_sq = 0.0; /* worst_bound: > 0 when an element error exceeds its bound */
        long group_worse = 0;
        for (s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int rows = shapes[s][0], cols = shapes[s][1], r, c, ng = (cols + 31) / 32;
            size_t bytes = 0, piece;
            float *w = (float *)xmalloc((size_t)rows * cols * sizeof(float)), *row = (float *)xmalloc(cols * sizeof(float));
            unsigned char *q, *q2;
            CHECK(tensor_bytes(dt, rows, cols, 32, &bytes), "size");
            q = (unsigned char *)xmalloc(bytes);
            q2 = (unsigned char *)xmalloc(bytes);
            for (r = 0; r < rows * cols; r++) w[r] = gaussian() * (r % 7 == 0 ? 0.1f : 0.02f); /* some outliers */
            if (rows * cols > 5) w[5] = 0.0f;
            CHECK(quantize_rows(dt, w, q, rows, cols, 32), "quantize_rows refused");
            /* in 16-row pieces: the same bytes */
            piece = quant_block_bytes(dt, ng);
            for (r = 0; r < rows; r += 16)
                quantize_rows(dt, w + (size_t)r * cols, q2 + (size_t)(r / 16) * piece, rows - r < 16 ? rows - r : 16,
                              cols, 32);
            CHECK(memcmp(q, q2, bytes) == 0, "%s %dx%d: chunked quantization differs", dtype_name(dt), rows, cols);
            for (r = 0; r < rows; r++) {
                (dt == LUCIE_DT_Q8 ? q8_kernels : q4_kernels).embed_row(row, q, r, cols, 32);
                for (c = 0; c < cols; c++) {
                    float v = w[(size_t)r * cols + c], back = reference_decode(dt, q, r, c, cols);
                    CHECK(row[c] == back, "%s %dx%d: embed_row(%d)[%d] = %g, layout says %g", dtype_name(dt), rows, cols,
                          r, c, row[c], back);
                    sum_err += (double)(v - back) * (v - back);
                    sum_sq += (double)v * v;
                }
                /* per group bounds */
                for (c = 0; c < cols; c += 32) {
                    int n = cols - c < 32 ? cols - c : 32, i;
                    float amax = 0.0f, extreme = 0.0f;
                    double err = 0.0, simple = 0.0;
                    for (i = 0; i < n; i++) {
                        float v = w[(size_t)r * cols + c + i];
                        if (fabsf(v) > amax) {
                            amax = fabsf(v);
                            extreme = v;
                        }
                    }
                    for (i = 0; i < n; i++) {
                        float v = w[(size_t)r * cols + c + i], back = reference_decode(dt, q, r, c + i, cols);
                        err += (double)(v - back) * (v - back);
                        if (dt == LUCIE_DT_Q8) {
                            /* half a step of the stored scale, plus the f16 rounding of the scale at the extreme */
                            double bound = amax / 254.0 * (1 + 1.0 / 512) + amax / 1024.0 * (fabsf(v) == amax);
                            if (fabs(v - back) > bound) worst_bound = fabs(v - back) / bound;
                        } else {
                            /* the plain scheme, extreme -> code -8 with the scale rounded to f16, is within
                             * one step of every value; the stored codes may only improve on its total error */
                            double d = half_to_float(float_to_half(extreme / -8.0f)), code = d != 0 ? floor(v / d + 0.5) : 0;
                            code = code < -8 ? -8 : code > 7 ? 7 : code;
                            simple += (v - code * d) * (v - code * d);
                            if (fabs(v - code * d) > fabs(d) * 1.0001) worst_bound = 1.0;
                        }
                    }
                    if (dt == LUCIE_DT_Q4 && err > simple * (1 + 1e-5) + 1e-30) group_worse++;
                }
            }
            free(w);
            free(row);
            free(q);
            free(q2);
        }
        CHECK(worst_bound == 0.0, "%s element error above its bound (x%.3f)", dtype_name(dt), worst_bound);
        CHECK(group_worse == 0, "q4: %ld groups worse than the plain max/-8 scale", group_worse);
        printf("%s round trip: layout, embed_row, chunking, error bounds: %s (relative RMS error %.4f)\n",
               dtype_name(dt), status(before), sqrt(sum_err / sum_sq));
    }
}

/* The pool itself: every item of every job is done exactly once, by a thread
 * the job allowed (worker < threads), job after job (a thread that wakes late
 * must not take items of a later job as its own); and the other threads do
 * take items (the work really is shared), given items long enough to be. */
typedef struct {
    int visits[200], worker_of[200];
    volatile double sink[200];
} pool_probe;

static void pool_visit(void *job, int begin, int end, int worker) {
    pool_probe *p = (pool_probe *)job;
    int i, k;
    for (i = begin; i < end; i++) {
        double x = i;
        for (k = 0; k < 2000; k++) x = x * 0.999 + 1.0; /* a few microseconds of work */
        p->sink[i] = x;
        p->visits[i]++;
        p->worker_of[i] = worker;
    }
}

static void test_pool(void) {
    int before = failures, job, i, bad_count = 0, bad_worker = 0, shared = 0;
    static pool_probe p;
    for (job = 0; job < 300; job++) {
        int n = 1 + job % 200, chunk = 1 + job % 7, threads = 1 + job % 3;
        memset(p.visits, 0, sizeof p.visits);
        pool_run(test_pool_threads, threads, n, chunk, pool_visit, &p);
        for (i = 0; i < n; i++) {
            bad_count += p.visits[i] != 1;
            bad_worker += p.worker_of[i] < 0 || p.worker_of[i] >= threads;
            shared += p.worker_of[i] != 0;
        }
        for (i = n; i < 200; i++) bad_count += p.visits[i] != 0;
    }
    pool_run(NULL, 3, 5, 2, pool_visit, &p); /* no pool: the caller alone */
    CHECK(bad_count == 0, "pool: %d items not done exactly once", bad_count);
    CHECK(bad_worker == 0, "pool: %d items done by a thread the job did not allow", bad_worker);
    CHECK(!POOL_THREADS || shared > 0, "pool: the other threads took no item in 300 jobs");
    printf("thread pool: 300 jobs of 1-200 items on 1-3 threads, each item once (%d taken by other threads than the "
           "caller): %s\n", shared, status(before));
}

/* Where the threads run (Linux): a pool with one thread per processor keeps
 * each worker to its own processor, the caller only between pool_pin_caller
 * and pool_unpin_caller, which gives it back exactly the processors it had;
 * a caller the application pinned itself is left alone; and a pool asked not
 * to pin, or with fewer threads than processors, pins nothing. */
#if POOL_CAN_PIN && defined(__linux__)
typedef struct {
    worker_pool *pool;
    int checked, wrong;
    volatile double sink;
} pin_probe;

static void pin_visit(void *job, int begin, int end, int worker) {
    pin_probe *p = (pin_probe *)job;
    processor_set mine;
    int k;
    for (k = 0; k < 20000 * (end - begin); k++) p->sink = p->sink * 0.999 + 1.0;
    if (worker == 0 || sched_getaffinity(0, sizeof mine, &mine) != 0) return;
    pool_lock(&p->pool->lock); /* (the counters are shared by the threads) */
    p->checked++;
    p->wrong += CPU_COUNT(&mine) != 1 || !CPU_ISSET(pool_thread_processor(p->pool, worker), &mine);
    pool_unlock(&p->pool->lock);
}

static void test_pinning(void) {
    int before = failures, n, job, last = -1, cpu;
    processor_set allowed, now, one;
    pin_probe probe;
    worker_pool *p;
    n = allowed_processors(&allowed);
    if (n < 2) {
        printf("thread placement: NOT CHECKED (this process may use %d processor)\n", n);
        return;
    }
    for (cpu = 0; cpu < MAX_PROCESSOR; cpu++)
        if (processor_allowed(&allowed, cpu)) last = cpu;
    p = pool_new(n, 1);
    CHECK(p && p->pinned && pool_threads(p) == n, "pinning: a pool of one thread per processor does not pin");
    if (!p) return;
    memset(&probe, 0, sizeof probe);
    probe.pool = p;
    for (job = 0; job < 50 && probe.checked < 20; job++) pool_run(p, n, 4 * n, 1, pin_visit, &probe);
    CHECK(probe.checked > 0 && probe.wrong == 0, "pinning: %d of %d worker items ran off their processor",
          probe.wrong, probe.checked);
    pool_pin_caller(p);
    sched_getaffinity(0, sizeof now, &now);
    CHECK(CPU_COUNT(&now) == 1 && CPU_ISSET(pool_thread_processor(p, 0), &now), "pinning: the caller was not pinned");
    pool_unpin_caller(p);
    sched_getaffinity(0, sizeof now, &now);
    CHECK(CPU_EQUAL(&now, &allowed), "pinning: the caller did not get its processors back");
    CPU_ZERO(&one); /* a caller the application pinned stays where it is */
    CPU_SET(last, &one);
    sched_setaffinity(0, sizeof one, &one);
    pool_pin_caller(p);
    sched_getaffinity(0, sizeof now, &now);
    CHECK(CPU_EQUAL(&now, &one), "pinning: moved a caller the application had pinned");
    pool_unpin_caller(p);
    sched_getaffinity(0, sizeof now, &now);
    CHECK(CPU_EQUAL(&now, &one), "pinning: changed a caller the application had pinned");
    sched_setaffinity(0, sizeof allowed, &allowed);
    pool_free(p);
    p = pool_new(n, 0);
    CHECK(p && !p->pinned, "pinning: a pool asked not to pin pins");
    pool_free(p);
    p = pool_new(n + 1, 1);
    CHECK(p && !p->pinned, "pinning: a pool of more threads than processors pins");
    pool_free(p);
    printf("thread placement: %d threads on %d processors, each worker on its own (%d items checked), the caller "
           "pinned and given back: %s\n", n, n, probe.checked, status(before));
}
#else
static void test_pinning(void) { printf("thread placement: NOT CHECKED (this build does not pin threads)\n"); }
#endif

static void test_prepare(void) {
    int before = failures;
    int cols = 1000, n = 3, t, g, i, bad = 0;
    float *x = (float *)xmalloc((size_t)n * cols * sizeof(float));
    size_t stride = quant_input_stride(cols);
    unsigned char *xq = (unsigned char *)xmalloc(quant_input_bytes(n, cols, 32));
    kernel_ctx ctx;
    ctx.pool = test_pool_threads;
    ctx.split_any_size = 1; /* the split itself is under test, whatever the size */
    ctx.n_threads = 1;
    for (i = 0; i < n * cols; i++) x[i] = gaussian() * (i % 97 == 0 ? 30.0f : 1.0f);
    for (i = 64; i < 96; i++) x[i] = 0.0f; /* an all-zero group */
    quant_prepare(&ctx, x, n, cols, 32, xq);
    CHECK(stride % 64 == 0 && quant_input_bytes(n, cols, 32) == n * stride, "input stride");
    for (t = 0; t < n; t++) {
        const unsigned char *p = xq + t * stride;
        for (g = 0; g < (cols + 31) / 32; g++) {
            float dx, amax = 0.0f;
            int32_t sum = 0, q4_correction, q8_correction;
            int ng = (cols + 31) / 32;
            memcpy(&dx, p + quant_input_scale_at(ng, g), 4);
            memcpy(&q4_correction, p + quant_input_correction_at(ng, 0, g), 4);
            memcpy(&q8_correction, p + quant_input_correction_at(ng, 1, g), 4);
            for (i = 0; i < 32; i++) {
                int col = g * 32 + i;
                signed char code = (signed char)p[g * 32 + i];
                float v = col < cols ? x[t * cols + col] : 0.0f;
                if (fabsf(v) > amax) amax = fabsf(v);
                sum += code;
                if (code < -127 || (col >= cols && code != 0)) bad++;
                if (fabs(v - code * dx) > dx * 0.5001 + 1e-30) bad++;
            }
            {
                float expect = amax / 127.0f; /* stored as a float (x87 keeps excess precision in expressions) */
                if (q4_correction != -8 * sum || q8_correction != -128 * sum || dx != expect) bad++;
            }
        }
    }
    CHECK(bad == 0, "activation quantization: %d bad codes/scales/sums", bad);
    printf("activation quantization: %s\n", status(before));
    free(x);
    free(xq);
}

/* matmul against double sums over the dequantized weights and activations,
 * and every kernel variant against the first result, bit for bit. */
static void test_matmul(void) {
    static const int shapes[][3] = {{1, 1, 1}, {16, 32, 4}, {17, 33, 5}, {100, 200, 9}, {33, 4096, 3}, {64, 172, 8}};
    size_t s;
    int di;
    for (di = 0; di < 2; di++) {
        int dt = dtypes[di], before = failures;
        const weight_kernels *k = dt == LUCIE_DT_Q8 ? &q8_kernels : &q4_kernels;
        long mismatches = 0;
        double worst = 0.0;
        for (s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int rows = shapes[s][0], cols = shapes[s][1], n = shapes[s][2], ng = (cols + 31) / 32, t, r, c, th;
            size_t bytes = 0, stride = quant_input_stride(cols);
            float *w = (float *)xmalloc((size_t)rows * cols * sizeof(float));
            float *x = (float *)xmalloc((size_t)n * cols * sizeof(float));
            float *out = (float *)xmalloc((size_t)n * rows * sizeof(float));
            float *other = (float *)xmalloc((size_t)n * rows * sizeof(float));
            unsigned char *q, *xq = (unsigned char *)xmalloc(quant_input_bytes(n, cols, 32));
            kernel_ctx ctx;
            ctx.pool = test_pool_threads;
            ctx.split_any_size = 1; /* the split itself is under test, whatever the size */
            tensor_bytes(dt, rows, cols, 32, &bytes);
            q = (unsigned char *)xmalloc(bytes);
            for (r = 0; r < rows * cols; r++) w[r] = gaussian() * 0.05f;
            for (r = 0; r < n * cols; r++) x[r] = gaussian() * (r % 50 == 0 ? 20.0f : 1.0f);
            quantize_rows(dt, w, q, rows, cols, 32);
            ctx.n_threads = 2;
            k->prepare(&ctx, x, n, cols, 32, xq);
            k->matmul(&ctx, out, x, xq, q, n, rows, cols, 32);
            /* reference */
            for (t = 0; t < n; t++)
                for (r = 0; r < rows; r++) {
                    const unsigned char *p = xq + t * stride;
                    double sum = 0.0, mag = 0.0;
                    for (c = 0; c < cols; c++) {
                        float dx;
                        double term;
                        memcpy(&dx, p + quant_input_scale_at(ng, c / 32), 4);
                        term = (double)reference_decode(dt, q, r, c, cols) * ((signed char)p[c] * (double)dx);
                        sum += term;
                        mag += fabs(term);
                    }
                    /* f32 rounding: the per-group scale product and one fma per group */
                    if (fabs(out[(size_t)t * rows + r] - sum) > 1e-6 * (ng + 2) * mag + 1e-30) {
                        double e = fabs(out[(size_t)t * rows + r] - sum) / (mag + 1e-30);
                        if (e > worst) worst = e;
                    }
                }
            /* portable kernel, one token at a time, each thread count */
            quant_matmul(&ctx, dt, other, xq, q, n, rows, cols, 1);
            for (r = 0; r < n * rows; r++) mismatches += other[r] != out[r];
            for (t = 0; t < n; t++) k->matmul(&ctx, other + (size_t)t * rows, x, xq + t * stride, q, 1, rows, cols, 32);
            for (r = 0; r < n * rows; r++) mismatches += other[r] != out[r];
            for (t = 0; t < n; t++) quant_matmul(&ctx, dt, other + (size_t)t * rows, xq + t * stride, q, 1, rows, cols, 1);
            for (r = 0; r < n * rows; r++) mismatches += other[r] != out[r];
            for (th = 1; th <= 3; th++) {
                ctx.n_threads = th;
                k->matmul(&ctx, other, x, xq, q, n, rows, cols, 32);
                for (r = 0; r < n * rows; r++) mismatches += other[r] != out[r];
            }
            free(w);
            free(x);
            free(out);
            free(other);
            free(q);
            free(xq);
        }
        CHECK(worst == 0.0, "%s matmul differs from the dequantized product by %.3g (relative)", dtype_name(dt), worst);
        CHECK(mismatches == 0, "%s: %ld outputs differ between kernel variants", dtype_name(dt), mismatches);
        printf("%s matmul = dequantized product; portable/%s, batch 1/n, 1-3 threads bit-identical: %s\n", dtype_name(dt),
#ifdef QUANT_SIMD
               QUANT_SIMD
#else
               "no SIMD in this build"
#endif
               , status(before));
    }
}

/* The integer sums at their bounds: every code at its smallest or largest
 * value (q8 0 and 255, q4 0 and 15) against activations of +-127, the worst
 * case for the SIMD layers' 16-bit intermediate sums. Scales are 1, so each
 * output is an exact small integer the test computes itself. */
static void test_extremes(void) {
    int di;
    for (di = 0; di < 2; di++) {
        int dt = dtypes[di], before = failures, rows = 32, cols = 256, n = 9, ng = cols / 32, pattern;
        int zero = dt == LUCIE_DT_Q8 ? 128 : 8, top = dt == LUCIE_DT_Q8 ? 255 : 15;
        size_t bytes = 0, stride = quant_input_stride(cols);
        unsigned char *q, *xq = (unsigned char *)xmalloc(quant_input_bytes(n, cols, 32));
        float *out = (float *)xmalloc((size_t)n * rows * sizeof(float)), *ref = (float *)xmalloc((size_t)n * rows * sizeof(float));
        long bad = 0;
        kernel_ctx ctx;
        ctx.pool = test_pool_threads;
        ctx.split_any_size = 1;
        ctx.n_threads = 2;
        tensor_bytes(dt, rows, cols, 32, &bytes);
        q = (unsigned char *)xmalloc(bytes);
        for (pattern = 0; pattern < 4; pattern++) {
            int t, r, c, b, g;
            /* codes: all top, all 0, or mixed per row; activations: +127, -127 or mixed */
            for (b = 0; b < rows / 16; b++) {
                unsigned char *block = q + (size_t)b * quant_block_bytes(dt, ng);
                for (g = 0; g < ng * 16; g++) block[2 * g] = 0x00, block[2 * g + 1] = 0x3c; /* f16 1.0 */
                for (c = 0; c < (int)(quant_block_bytes(dt, ng) - (size_t)ng * 32); c++) {
                    int row = (c % 64) / 4, code = pattern == 0 ? top : pattern == 1 ? 0 : (row + b) % 2 ? top : 0;
                    block[ng * 32 + c] = (unsigned char)(dt == LUCIE_DT_Q8 ? code : code | code << 4);
                }
            }
            for (t = 0; t < n; t++) { /* activations of +-127: codes +-127, scale 1 */
                float x[256];
                for (c = 0; c < cols; c++) {
                    g = c / 32;
                    x[c] = 127.0f * (float)(pattern == 2 ? 1 : pattern == 3 ? -1 : (t + g) % 2 ? 1 : -1);
                }
                quantize_input_row(x, cols, xq + t * stride);
            }
            for (t = 0; t < n; t++)
                for (r = 0; r < rows; r++) {
                    double total = 0.0;
                    for (c = 0; c < cols; c++) {
                        int code = dt == LUCIE_DT_Q8 ? q[(size_t)(r / 16) * quant_block_bytes(dt, ng) + ng * 32 + (c / 32) * 512 +
                                                         ((c % 32) / 4) * 64 + (r % 16) * 4 + c % 4]
                                                     : (int)(reference_decode(dt, q, r, c, cols) + zero);
                        total += (double)(code - zero) * (signed char)xq[t * stride + c];
                    }
                    ref[t * rows + r] = (float)total;
                }
            quant_matmul(&ctx, dt, out, xq, q, n, rows, cols, 0);
            for (r = 0; r < n * rows; r++) bad += out[r] != ref[r];
            quant_matmul(&ctx, dt, out, xq, q, n, rows, cols, 1);
            for (r = 0; r < n * rows; r++) bad += out[r] != ref[r];
        }
        CHECK(bad == 0, "%s: %ld outputs wrong with extreme codes and activations", dtype_name(dt), bad);
        printf("%s extreme codes x +-127 activations: exact on both kernels: %s\n", dtype_name(dt), status(before));
        free(q);
        free(xq);
        free(out);
        free(ref);
    }
}

int main(void) {
    if (!(test_pool_threads = pool_new(3, 0)) || pool_threads(test_pool_threads) != (POOL_THREADS ? 3 : 1)) {
        fprintf(stderr, "FAIL could not start a pool of 3 threads\n");
        return 1;
    }
    test_pool();
    test_pinning();
    test_half();
    test_sizes();
    test_roundtrip();
    test_prepare();
    test_matmul();
    test_extremes();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("all kernel tests passed (on a pool of %d threads)\n", pool_threads(test_pool_threads));
    pool_free(test_pool_threads);
    return 0;
}
