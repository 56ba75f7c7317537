/* test/test_float_kernels.c: the f32/bf16 matrix kernels keep their
 * arithmetic contract (see the float kernels part of lucie.c).
 *
 * For many shapes (odd column counts, rows that are not a multiple of the
 * tile, 1..9 tokens and batches larger than a block) it checks, bit for bit:
 *   - the compiled kernel (SIMD when the build has it) against the plain C
 *     reference (one dot_bf16/dot_f32 per output);
 *   - a batch of n tokens against n calls of one token (prefill == decoding);
 *   - 1, 2 and 3 threads against each other (OpenMP builds);
 *   - f32 weights against bf16 weights of the same values;
 * and, as a sanity check of the reference itself, every output against a
 * double-precision dot product, within the error bound of a float sum.
 * The KV cache element types: widening every finite f16 (F16C when built
 * with it) equals half_to_float; attention's SIMD value accumulation equals
 * the plain fused multiply-adds; q8 rows read back within half a step;
 * reading a block of rows (read_rows, for every type) equals widening each.
 * attention's softmax exp stays within its stated error and special values.
 * Build it like lucie.c (any compiler, flags, with or without OpenMP):
 *   cc -std=c99 -O3 -march=native -fopenmp test/test_float_kernels.c -o t -lm && ./t
 * Prints one line per failure and a summary with a hash of all the results:
 * builds whose targets have FMA must all print the same hash (builds without
 * FMA multiply then add, so they get another one). Exit status 1 on failure. */
#include "../lucie.c"

typedef struct {
    uint64_t state;
} rng;

static uint64_t next(rng *g) {
    g->state ^= g->state << 13;
    g->state ^= g->state >> 7;
    g->state ^= g->state << 17;
    return g->state;
}

/* Values over a wide exponent range, both signs, with some exact (signed)
 * zeros, so that cancellation, rounding and -0 handling are all exercised. */
static float random_value(rng *g) {
    uint64_t u = next(g);
    int kind = (int)(u % 16);
    float mantissa = (float)((u >> 8) % 2000001) / 1000000.0f - 1.0f; /* [-1, 1] */
    if (kind == 0) return 0.0f;
    if (kind == 1) return -0.0f;
    return ldexpf(mantissa, (int)((u >> 40) % 24) - 12);
}

static uint16_t f32_to_bf16_truncate(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}

typedef struct {
    int failures, checks;
    uint64_t hash; /* FNV-1a of every reference output: equal hashes = same results across builds */
} tally;

/* got == want bit for bit; a failure names the check (a printf format and
 * its arguments) and the first element that differs. */
static void expect_same(tally *tl, const float *got, const float *want, size_t count, const char *check, ...) {
    tl->checks++;
    if (memcmp(got, want, count * sizeof(float)) != 0) {
        size_t i = 0;
        va_list args;
        while (memcmp(got + i, want + i, sizeof(float)) == 0) i++;
        printf("FAIL ");
        va_start(args, check);
        vprintf(check, args);
        va_end(args);
        printf(": element %zu is %.9g, expected %.9g\n", i, (double)got[i], (double)want[i]);
        tl->failures++;
    }
}

static void check_shape(worker_pool *pool, tally *tl, rng *g, int rows, int cols, int n) {
    size_t wn = (size_t)rows * cols, xn = (size_t)n * cols, on = (size_t)n * rows, i;
    uint16_t *wb = (uint16_t *)malloc(wn * sizeof *wb);
    float *wf = (float *)malloc(wn * sizeof *wf);
    float *x = (float *)malloc(xn * sizeof *x);
    float *ref = (float *)malloc(on * sizeof *ref);
    float *got = (float *)malloc(on * sizeof *got);
    float *one = (float *)malloc((size_t)rows * sizeof *one);
    int r, t, threads;
    kernel_ctx ctx;
    ctx.pool = pool;
    ctx.split_any_size = 1; /* the split itself is under test, whatever the size */
    if (!wb || !wf || !x || !ref || !got || !one) {
        printf("FAIL out of memory\n");
        exit(1);
    }
    for (i = 0; i < wn; i++) {
        wb[i] = f32_to_bf16_truncate(random_value(g));
        wf[i] = bf16_to_f32(wb[i]);
    }
    if (rows > 2) /* a row of zeros times negative products: the sign of zero must match too */
        for (i = 0; i < (size_t)cols; i++) {
            wb[i] = 0x8000; /* -0 */
            wf[i] = -0.0f;
        }
    for (i = 0; i < xn; i++) x[i] = random_value(g);

    /* the reference: one plain-C dot product per output */
    for (r = 0; r < rows; r++)
        for (t = 0; t < n; t++) ref[(size_t)t * rows + r] = dot_bf16(wb + (size_t)r * cols, x + (size_t)t * cols, cols);

    for (i = 0; i < on; i++) {
        uint32_t bits;
        int byte;
        memcpy(&bits, ref + i, 4);
        for (byte = 0; byte < 4; byte++) tl->hash = (tl->hash ^ ((bits >> (8 * byte)) & 0xFF)) * 0x100000001B3ull;
    }
    /* ... is a correct dot product: within n*eps*sum|w x| of the exact value */
    for (r = 0; r < rows; r++)
        for (t = 0; t < n; t++) {
            double exact = 0.0, magnitude = 0.0, bound;
            int c;
            for (c = 0; c < cols; c++) {
                double p = (double)wf[(size_t)r * cols + c] * x[(size_t)t * cols + c];
                exact += p;
                magnitude += fabs(p);
            }
            bound = (cols + 16) * (double)FLT_EPSILON * magnitude + 1e-30;
            tl->checks++;
            if (fabs(ref[(size_t)t * rows + r] - exact) > bound) {
                printf("FAIL reference: rows %d cols %d n %d: %g vs exact %g\n", rows, cols, n,
                       (double)ref[(size_t)t * rows + r], exact);
                tl->failures++;
            }
        }

    for (threads = 1; threads <= 3; threads++) {
        ctx.n_threads = threads;
        /* the kernels as the forward pass calls them, bf16 and f32 weights */
        bf16_kernels.matmul(&ctx, got, x, NULL, wb, n, rows, cols, 0);
        expect_same(tl, got, ref, on, "bf16 matmul vs plain C: rows %d cols %d n %d threads %d", rows, cols, n,
                    threads);
        f32_kernels.matmul(&ctx, got, x, NULL, wf, n, rows, cols, 0);
        expect_same(tl, got, ref, on, "f32 matmul vs plain C: rows %d cols %d n %d threads %d", rows, cols, n,
                    threads);
        /* one token at a time, as decoding does (2 threads: each call is a parallel region) */
        for (t = 0; t < n && threads == 2; t++) {
            bf16_kernels.matmul(&ctx, one, x + (size_t)t * cols, NULL, wb, 1, rows, cols, 0);
            expect_same(tl, one, ref + (size_t)t * rows, (size_t)rows,
                        "bf16 one token vs batch: rows %d cols %d n %d threads %d", rows, cols, n, threads);
            f32_kernels.matmul(&ctx, one, x + (size_t)t * cols, NULL, wf, 1, rows, cols, 0);
            expect_same(tl, one, ref + (size_t)t * rows, (size_t)rows,
                        "f32 one token vs batch: rows %d cols %d n %d threads %d", rows, cols, n, threads);
        }
    }
    /* the plain C row kernels too (they serve the rows the tiles leave over) */
    rows_bf16_portable(got, x, wb, n, rows, cols, 0, rows);
    expect_same(tl, got, ref, on, "rows_bf16_portable: rows %d cols %d n %d", rows, cols, n);
    rows_f32_portable(got, x, wf, n, rows, cols, 0, rows);
    expect_same(tl, got, ref, on, "rows_f32_portable: rows %d cols %d n %d", rows, cols, n);
    /* dot_f32 (attention) agrees with dot_bf16 on the same values */
    for (r = 0; r < rows; r++) {
        float d = dot_f32(wf + (size_t)r * cols, x, cols);
        expect_same(tl, &d, ref + r, 1, "dot_f32 vs dot_bf16: row %d of %d, cols %d", r, rows, cols);
    }
    free(wb);
    free(wf);
    free(x);
    free(ref);
    free(got);
    free(one);
}

/* The KV cache element types (section 6) and attention's accumulation. */
#define FOLD_QUERIES (ATT_FOLD_QUERIES + 1) /* a whole tile and a partial one */
static void check_kv_types(tally *tl, rng *g) {
    static uint16_t halves[65536];
    static float wide[65536], want[65536];
    static float values[9 * 200], acc[FOLD_QUERIES * 200], plain[FOLD_QUERIES * 200];
    static unsigned char value_rows[9 * 1024];
    static float wide_values[9 * 200];
    float x[200], back[200], p[FOLD_QUERIES * 9], correction[FOLD_QUERIES];
    unsigned char row[1024];
    const kv_type *q8 = kv_type_for(LUCIE_KV_Q8), *f16 = kv_type_for(LUCIE_KV_F16);
    int n = 0, i, j, q, n_queries, first, kv_dim, type;
    for (i = 0; i < 65536; i++)
        if ((i & 0x7c00) != 0x7c00) { /* a cache never holds inf/NaN halves: loads refuse them */
            halves[n] = (uint16_t)i;
            want[n++] = half_to_float((uint16_t)i);
        }
    for (first = 0; first < 3; first++) { /* unaligned starts and a tail */
        f16->widen(wide, halves + first, n - first);
        expect_same(tl, wide, want + first, (size_t)(n - first), "f16 widen: %d values from %d", n - first, first);
    }
    for (kv_dim = 1; kv_dim <= 200; kv_dim += 13) {
        for (i = 0; i < kv_dim; i++) x[i] = random_value(g);
        q8->store(row, x, kv_dim);
        q8->widen(back, row, kv_dim);
        tl->checks++;
        for (i = 0; i < kv_dim; i++) {
            float scale;
            memcpy(&scale, row + (size_t)(i / KV_Q8_GROUP) * 4, 4);
            if (!(fabsf(back[i] - x[i]) <= 0.5f * scale * 1.0001f) || !q8->row_finite(row, kv_dim)) {
                printf("FAIL q8 row of %d: value %d is %.9g, stored %.9g (scale %.9g)\n", kv_dim, i, (double)x[i],
                       (double)back[i], (double)scale);
                tl->failures++;
                break;
            }
        }
        /* attention's fold of a block's values into 1..FOLD_QUERIES running sums at once, against
         * the definition: block = sum of p[q][j] * values[j] from zero, then acc * correction + block */
        for (n_queries = 1; n_queries <= FOLD_QUERIES; n_queries++) {
            for (i = 0; i < FOLD_QUERIES * 9; i++) p[i] = fabsf(random_value(g));
            for (i = 0; i < FOLD_QUERIES; i++) correction[i] = fabsf(random_value(g));
            for (i = 0; i < 9 * kv_dim; i++) values[i] = random_value(g);
            for (i = 0; i < n_queries * kv_dim; i++) acc[i] = plain[i] = random_value(g);
            fold_block_values(acc, p, 9, correction, n_queries, values, LUCIE_KV_F32, 9, kv_dim, NULL);
            for (q = 0; q < n_queries; q++)
                for (i = 0; i < kv_dim; i++) {
                    float block = 0.0f;
                    for (j = 0; j < 9; j++) block = madd(block, p[q * 9 + j], values[(size_t)j * kv_dim + i]);
                    plain[q * kv_dim + i] = madd(block, plain[q * kv_dim + i], correction[q]);
                }
            expect_same(tl, acc, plain, (size_t)(n_queries * kv_dim),
                        "attention value fold: %d queries, rows of %d, 9 values", n_queries, kv_dim);
            /* the same values as f16 and q8 rows read as they are stored (attention_reads_rows):
             * the same sums as those rows widened to f32 first */
            for (type = LUCIE_KV_F16; type <= LUCIE_KV_Q8; type++) {
                const kv_type *kv = kv_type_for(type);
                size_t row_bytes = kv_row_bytes(kv->type, kv_dim);
                for (j = 0; j < 9; j++) {
                    kv->store(value_rows + j * row_bytes, values + (size_t)j * kv_dim, kv_dim);
                    kv->widen(wide_values + (size_t)j * kv_dim, value_rows + j * row_bytes, kv_dim);
                }
                for (i = 0; i < n_queries * kv_dim; i++) acc[i] = plain[i];
                fold_block_values(acc, p, 9, correction, n_queries, value_rows, type, 9, kv_dim,
                                  value_rows); /* (asking for lines changes nothing) */
                fold_block_values(plain, p, 9, correction, n_queries, wide_values, LUCIE_KV_F32, 9, kv_dim, NULL);
                expect_same(tl, acc, plain, (size_t)(n_queries * kv_dim),
                            "attention value fold of %s rows: %d queries, rows of %d, 9 values", kv->name, n_queries,
                            kv_dim);
            }
        }
    }
}

/* Attention's scores from f16 and q8 keys read as they are stored
 * (block_scores: the short-row kernel's loads that widen, the plain dot
 * product for a block's odd keys) equal the scores of the same keys widened
 * to f32, for whole and partial blocks, 1..9 queries (a partial token tile),
 * head sizes the kernel takes and some it does not. */
static void check_stored_scores(tally *tl, rng *g) {
    static const int head_dims[] = {32, 64, 128, 256, 48, 40, 288};
    static unsigned char key_rows[ATT_KEY_BLOCK * 288 * 4];
    static float keys[ATT_KEY_BLOCK * 288], queries[9 * 288], got[9 * ATT_KEY_BLOCK], want[9 * ATT_KEY_BLOCK];
    static float x[288], row[288];
    int d, n_keys, n_queries, i, k, type;
    for (type = LUCIE_KV_F16; type <= LUCIE_KV_Q8; type++)
        for (d = 0; d < (int)(sizeof head_dims / sizeof head_dims[0]); d++) {
            const kv_type *kv = kv_type_for(type);
            int hd = head_dims[d];
            size_t row_bytes = kv_row_bytes(kv->type, hd);
            for (k = 0; k < ATT_KEY_BLOCK; k++) {
                for (i = 0; i < hd; i++) x[i] = random_value(g);
                kv->store(key_rows + k * row_bytes, x, hd);
                kv->widen(keys + (size_t)k * hd, key_rows + k * row_bytes, hd);
            }
            for (i = 0; i < 9 * hd; i++) queries[i] = random_value(g);
            for (n_keys = 1; n_keys <= ATT_KEY_BLOCK; n_keys += n_keys < 16 ? 5 : 16)
                for (n_queries = 1; n_queries <= 9; n_queries += 4) {
                    block_scores(got, queries, key_rows, type, n_queries, n_keys, hd, row, key_rows);
                    block_scores(want, queries, keys, LUCIE_KV_F32, n_queries, n_keys, hd, row, NULL);
                    expect_same(tl, got, want, (size_t)(n_queries * n_keys), "scores of %s keys: %d keys of %d values, %d queries",
                                kv->name, n_keys, hd, n_queries);
                }
        }
}

/* read_rows (what attention reads a block of cache rows with) equals widen
 * row by row, for each type, with and without a next block to ask for. */
static void check_read_rows(tally *tl, rng *g) {
    static float row_store[2 * 5 * 1024 / sizeof(float)]; /* aligned as the cache is: f32 rows are read in place */
    unsigned char *rows = (unsigned char *)row_store;
    static float x[200], scratch[5 * 200], want[5 * 200];
    int type, n, n_rows, r, i, with_next;
    for (type = 0; type < (int)(sizeof kv_types / sizeof kv_types[0]); type++) {
        const kv_type *kv = &kv_types[type];
        for (n = 1; n <= 200; n += 19) {
            size_t row_bytes = kv_row_bytes(kv->type, n);
            for (r = 0; r < 10; r++) { /* a block of 5 rows and the next one */
                for (i = 0; i < n; i++) x[i] = random_value(g);
                kv->store(rows + (size_t)r * row_bytes, x, n);
            }
            for (n_rows = 1; n_rows <= 5; n_rows++)
                for (with_next = 0; with_next < 2; with_next++) {
                    const float *got = kv->read_rows(scratch, rows, n_rows, n,
                                                     with_next ? rows + (size_t)5 * row_bytes : NULL);
                    for (r = 0; r < n_rows; r++) kv->widen(want + (size_t)r * n, rows + (size_t)r * row_bytes, n);
                    expect_same(tl, got, want, (size_t)n_rows * n, "%s read_rows: %d rows of %d, %s", kv->name,
                                n_rows, n, with_next ? "with a next block" : "last block");
                }
        }
    }
}

/* attention's softmax exp (attention_exp) keeps what its comment promises:
 * within 1.011 ulp of double exp on [-87, 0] (every 7th float there, which
 * meets every exponent, and both ends), exp(0) = exp(-0) = 1 exactly, 0 for
 * -inf and below -87, NaN for NaN. */
static double exp_ulps(float x) {
    double want = exp((double)x);
    int e;
    frexp(want, &e);
    return fabs((double)attention_exp(x) - want) / ldexp(1.0, e - 24); /* the float spacing at want (normal there) */
}

static void check_attention_exp(tally *tl) {
    static const float specials[] = {0.0f, -0.0f, -1e-30f, -87.0001f, -88.0f, -1000.0f};
    static const float special_want[] = {1.0f, 1.0f, 1.0f, 0.0f, 0.0f, 0.0f};
    double worst = exp_ulps(-87.0f), worst_x = -87.0;
    uint32_t bits;
    size_t i;
    float nan_in = (float)NAN, got;
    for (bits = 0x80000000u; bits < 0xC2AE0000u; bits += 7) { /* -0 down to -87 (0xC2AE0000, checked above) */
        float x;
        double err;
        memcpy(&x, &bits, sizeof x);
        err = exp_ulps(x);
        if (!(err <= worst)) worst = err, worst_x = x;
    }
    tl->checks++;
    if (!(worst <= 1.011)) {
        printf("FAIL attention_exp: %.4f ulp at x = %.9g (bound 1.011)\n", worst, worst_x);
        tl->failures++;
    }
    for (i = 0; i < sizeof specials / sizeof *specials; i++) {
        got = attention_exp(specials[i]);
        tl->checks++;
        if (got != special_want[i]) {
            printf("FAIL attention_exp(%.9g) = %.9g, want %.9g\n", (double)specials[i], (double)got,
                   (double)special_want[i]);
            tl->failures++;
        }
    }
    got = attention_exp(-INFINITY);
    tl->checks++;
    if (got != 0.0f || !isnan(attention_exp(nan_in))) {
        printf("FAIL attention_exp(-inf) = %.9g (want 0), attention_exp(NaN) = %.9g (want NaN)\n", (double)got,
               (double)attention_exp(nan_in));
        tl->failures++;
    }
    printf("attention_exp: %.4f ulp at most on [-87, 0]; ", worst);
}

int main(void) {
    static const int rows_list[] = {1, 3, 4, 5, 8, 13, 17, 32, 37};
    static const int cols_list[] = {1, 7, 15, 16, 17, 31, 48, 100, 128, 511, 512, 513, 1029};
    static const int big_n[] = {12, 13, 63, 64, 65, 130};
    tally tl = {0, 0, 0xCBF29CE484222325ull};
    rng g = {0x9E3779B97F4A7C15ull};
    size_t a, b;
    int n;
    worker_pool *pool = pool_new(3, 0); /* the split over 1-3 threads is under test */
    if (!pool || pool_threads(pool) != (POOL_THREADS ? 3 : 1)) {
        printf("FAIL could not start a pool of 3 threads\n");
        return 1;
    }
    for (a = 0; a < sizeof rows_list / sizeof *rows_list; a++)
        for (b = 0; b < sizeof cols_list / sizeof *cols_list; b++)
            for (n = 1; n <= 9; n++) check_shape(pool, &tl, &g, rows_list[a], cols_list[b], n);
    for (a = 0; a < sizeof big_n / sizeof *big_n; a++) {
        check_shape(pool, &tl, &g, 37, 100, big_n[a]);
        check_shape(pool, &tl, &g, 20, 1100, big_n[a]);
    }
    check_shape(pool, &tl, &g, 64, 4096, 7);  /* several column passes */
    check_shape(pool, &tl, &g, 44, 2600, 66); /* and more than one token block */
    check_shape(pool, &tl, &g, 100, 1043, 70); /* several row blocks, partial panels, a tail */
    check_kv_types(&tl, &g);
    check_read_rows(&tl, &g);
    check_stored_scores(&tl, &g);
    check_attention_exp(&tl);
#ifdef FLOAT_SIMD
    printf("kernel: %s tiles %dx%d; ", FLOAT_SIMD_NAME, FLOAT_TILE_ROWS, FLOAT_TILE_TOKENS);
#else
    printf("kernel: plain C only; ");
#endif
    printf("fma: %s; ", LUCIE_HAVE_FMA ? "fused" : "multiply then add");
    printf("threads: %d; ", pool_threads(pool));
    printf("%d checks, %d failures; results hash %016llx\n", tl.checks, tl.failures, (unsigned long long)tl.hash);
    pool_free(pool);
    return tl.failures ? 1 : 0;
}
