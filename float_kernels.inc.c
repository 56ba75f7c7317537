/* f32 and bf16 weights: the kernels of the weight-type table for the two
 * float formats (part of section 4 of lucie.c).
 *
 * The arithmetic contract. Every dot product sum_c w[c] * x[c] of these
 * kernels (each matmul output out[t][r], and dot_f32 in attention) is
 * evaluated in one fixed order:
 *   1. DOT_LANES = 16 partial sums ("lanes"), all starting at +0; column c
 *      goes to lane c % 16, and each lane takes its columns in increasing
 *      order, one fused multiply-add each: lane = fma(w[c], x[c], lane), a
 *      single rounding (a multiply then an add, when the target has no FMA
 *      instruction at all);
 *   2. the lanes are then added by halves: lane k += lane k+8 (k < 8), then
 *      k += k+4, k += k+2, and finally lane 0 + lane 1.
 * bf16 weights are widened to f32 exactly (a shift), so bf16 and f32 weights
 * of the same values give the same results.
 * Why: the order does not depend on the batch size, the tile shape, the
 * thread count or the code path below, so every output is bit-identical
 * whether the tokens come in a batch (prefill) or one at a time (decoding),
 * and whether the SIMD kernel or the plain C one computed it (test/
 * test_float_kernels.c checks this). 16 lanes is one AVX-512 register (two
 * AVX2 ones, four SSE/NEON ones), enough independent sums to hide the FMA
 * latency, and fused multiply-adds are both faster and more accurate.
 *
 * The portable C code (dot_f32, dot_bf16, matmul_*_portable) is the
 * reference and runs everywhere; compilers vectorise it well enough to
 * stream weights near memory speed. On x86 with AVX-512 a register-tiled
 * kernel (below) does the same arithmetic in a cache-friendly order: a tile
 * of TILE_ROWS weight rows times TILE_TOKENS tokens is accumulated in
 * registers, so each weight vector is loaded and widened once per
 * TILE_TOKENS tokens, which is what makes prompt processing (prefill)
 * compute-bound instead of memory-bound. */

#define DOT_LANES 16

/* fma when the target has it (then fmaf() is one instruction and compilers
 * vectorise it); otherwise a multiply and an add, written as two statements
 * so that no compiler fuses them behind our back. */
#if defined(FP_FAST_FMAF) || defined(__FMA__) || defined(__ARM_FEATURE_FMA)
#define LUCIE_HAVE_FMA 1
static float madd(float acc, float w, float x) { return fmaf(w, x, acc); }
#else
#define LUCIE_HAVE_FMA 0
static float madd(float acc, float w, float x) {
    float product = w * x;
    return acc + product;
}
#endif

/* Step 2 of the contract: adds the lanes by halves (destroys acc). */
static float sum_lanes(float *acc) {
    int width, k;
    for (width = DOT_LANES / 2; width > 0; width /= 2)
        for (k = 0; k < width; k++) acc[k] = acc[k] + acc[k + width];
    return acc[0];
}

static float dot_f32(const float *w, const float *x, int n) {
    float acc[DOT_LANES] = {0};
    int i = 0, k;
    for (; i + DOT_LANES <= n; i += DOT_LANES)
        for (k = 0; k < DOT_LANES; k++) acc[k] = madd(acc[k], w[i + k], x[i + k]);
    for (k = 0; i + k < n; k++) acc[k] = madd(acc[k], w[i + k], x[i + k]);
    return sum_lanes(acc);
}

static float dot_bf16(const uint16_t *w, const float *x, int n) {
    float acc[DOT_LANES] = {0};
    int i = 0, k;
    for (; i + DOT_LANES <= n; i += DOT_LANES)
        for (k = 0; k < DOT_LANES; k++) acc[k] = madd(acc[k], bf16_to_f32(w[i + k]), x[i + k]);
    for (k = 0; i + k < n; k++) acc[k] = madd(acc[k], bf16_to_f32(w[i + k]), x[i + k]);
    return sum_lanes(acc);
}

/* Rows [r_begin, r_end) of out = W x for n tokens, one dot product at a time:
 * rows outer, tokens inner, so a weight row is read from memory once and
 * reused from cache for every token of the batch. */
static void rows_f32_portable(float *out, const float *x, const float *w, int n, int rows, int cols, int r_begin,
                              int r_end) {
    int r, t;
    for (r = r_begin; r < r_end; r++)
        for (t = 0; t < n; t++)
            out[(size_t)t * rows + r] = dot_f32(w + (size_t)r * cols, x + (size_t)t * cols, cols);
}

static void rows_bf16_portable(float *out, const float *x, const uint16_t *w, int n, int rows, int cols,
                               int r_begin, int r_end) {
    int r, t;
    for (r = r_begin; r < r_end; r++)
        for (t = 0; t < n; t++)
            out[(size_t)t * rows + r] = dot_bf16(w + (size_t)r * cols, x + (size_t)t * cols, cols);
}

/* ---- the AVX-512 tiled kernel ---------------------------------------- */

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__GNUC__) && !defined(LUCIE_NO_SIMD)
#include <immintrin.h>
#define LUCIE_AVX512 1

#define TILE_ROWS 4   /* weight rows per register tile */
#define TILE_TOKENS 6 /* tokens per register tile: 4 x 6 accumulators + 4 weights + 1 x = 29 of 32 registers */
#ifndef BLOCK_ROWS
#define BLOCK_ROWS 8 /* rows per panel: their weights are read from memory once */
#endif
#ifndef BLOCK_TOKENS
#define BLOCK_TOKENS 64 /* tokens whose lanes wait in the lanes buffer between column passes */
#endif
#ifndef BLOCK_COLS
#define BLOCK_COLS 512 /* columns per pass: the panel (16 KB) and a token tile of x (12 KB) stay in L1 */
#endif
#ifndef PACK_MIN_TOKENS
#define PACK_MIN_TOKENS 4 /* from this many tokens, widen bf16 panels once and reuse them */
#endif
#define ALWAYS_INLINE inline __attribute__((always_inline))

/* `count` (1..16) weights from p as f32, zeros after them. bf16 is the top
 * half of an f32, so widening puts each 16-bit word in the high half of a
 * 32-bit lane: one permute that also zeroes the low halves. */
static ALWAYS_INLINE __m512 load_w16(const void *p, int is_bf16, int count) {
    if (is_bf16) {
        const __m512i spread = _mm512_set_epi16(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8, 7, 7,
                                                6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
        __m512i words = count == 16 ? _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)p))
                                    : _mm512_maskz_loadu_epi16((__mmask32)((1u << count) - 1), p);
        return _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16((__mmask32)0xAAAAAAAAu, spread, words));
    }
    return count == 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps((__mmask16)((1u << count) - 1), p);
}

/* Step 2 of the contract on one register. */
static ALWAYS_INLINE float sum_lanes_avx512(__m512 v) {
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v),
                              _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

/* The micro-kernel: the lanes of an R x T tile (weight rows w + r * w_stride,
 * tokens x + t * x_stride) accumulate n_cols more columns. lanes[r * l_stride
 * + t] holds them between passes (ignored when first). R and T are constants
 * at every call, so the loops unroll and the accumulators stay in registers. */
static ALWAYS_INLINE void tile(const int R, const int T, const int w_bf16, __m512 *lanes, int l_stride,
                               const void *w, size_t w_stride, const float *x, size_t x_stride, int n_cols,
                               int first) {
    __m512 acc[TILE_ROWS][TILE_TOKENS], wv[TILE_ROWS];
    size_t w_size = w_bf16 ? 2 : 4;
    int r, t, c;
    for (r = 0; r < R; r++)
        for (t = 0; t < T; t++) acc[r][t] = first ? _mm512_setzero_ps() : lanes[r * l_stride + t];
    for (c = 0; c + DOT_LANES <= n_cols; c += DOT_LANES) {
        for (r = 0; r < R; r++) wv[r] = load_w16((const char *)w + (r * w_stride + c) * w_size, w_bf16, 16);
        for (t = 0; t < T; t++) {
            __m512 xv = _mm512_loadu_ps(x + t * x_stride + c);
            for (r = 0; r < R; r++) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
    if (c < n_cols) { /* the row tail: lanes past the end are left as they are */
        int count = n_cols - c;
        __mmask16 m = (__mmask16)((1u << count) - 1);
        for (r = 0; r < R; r++) wv[r] = load_w16((const char *)w + (r * w_stride + c) * w_size, w_bf16, count);
        for (t = 0; t < T; t++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, x + t * x_stride + c);
            for (r = 0; r < R; r++) acc[r][t] = _mm512_mask3_fmadd_ps(wv[r], xv, acc[r][t], m);
        }
    }
    for (r = 0; r < R; r++)
        for (t = 0; t < T; t++) lanes[r * l_stride + t] = acc[r][t];
}

/* One column pass over a block: every token tile times every row tile. The
 * switch turns the token count of the last tile into a constant. */
static ALWAYS_INLINE void block_pass(const int w_bf16, __m512 *lanes, const void *w, size_t w_stride, const float *x,
                                     size_t x_stride, int n_rows, int n_tokens, int n_cols, int first) {
    int t, r;
    size_t w_size = w_bf16 ? 2 : 4;
    for (t = 0; t < n_tokens; t += TILE_TOKENS) {
        const float *xt = x + t * x_stride;
        for (r = 0; r < n_rows; r += TILE_ROWS) {
            const void *wr = (const char *)w + r * w_stride * w_size;
            __m512 *l = lanes + r * BLOCK_TOKENS + t;
            switch (n_tokens - t) {
            case 1: tile(TILE_ROWS, 1, w_bf16, l, BLOCK_TOKENS, wr, w_stride, xt, x_stride, n_cols, first); break;
            case 2: tile(TILE_ROWS, 2, w_bf16, l, BLOCK_TOKENS, wr, w_stride, xt, x_stride, n_cols, first); break;
            case 3: tile(TILE_ROWS, 3, w_bf16, l, BLOCK_TOKENS, wr, w_stride, xt, x_stride, n_cols, first); break;
            case 4: tile(TILE_ROWS, 4, w_bf16, l, BLOCK_TOKENS, wr, w_stride, xt, x_stride, n_cols, first); break;
            case 5: tile(TILE_ROWS, 5, w_bf16, l, BLOCK_TOKENS, wr, w_stride, xt, x_stride, n_cols, first); break;
            default:
                tile(TILE_ROWS, TILE_TOKENS, w_bf16, l, BLOCK_TOKENS, wr, w_stride, xt, x_stride, n_cols, first);
            }
        }
    }
}

/* Widens n_rows x n_cols bf16 weights (row stride w_stride) into panel
 * (row stride BLOCK_COLS), zero-padding the last 16 columns. */
static void widen_panel(float *panel, const uint16_t *w, size_t w_stride, int n_rows, int n_cols) {
    int r, c;
    for (r = 0; r < n_rows; r++)
        for (c = 0; c < n_cols; c += DOT_LANES) {
            int count = n_cols - c < DOT_LANES ? n_cols - c : DOT_LANES;
            _mm512_store_ps(panel + r * BLOCK_COLS + c, load_w16(w + r * w_stride + c, 1, count));
        }
}

/* Rows [r_begin, r_end) (a multiple of TILE_ROWS of them) with the tiled
 * kernel. Loop order, outer to inner:
 *   blocks of BLOCK_ROWS rows: their weights are read from memory once;
 *   blocks of BLOCK_TOKENS tokens;
 *   passes of BLOCK_COLS columns: the weights of the row block (widened to
 *     f32 once, for a batch) and the x of a token tile stay in L1;
 *   token tiles, row tiles: the micro-kernel.
 * The 16 lanes of every output wait in `lanes` between column passes, so
 * each output still sees its columns in order, as the contract requires. */
static void rows_avx512(float *out, const float *x, const void *w, int is_bf16, int n, int rows, int cols,
                        int r_begin, int r_end) {
    __m512 lanes[BLOCK_ROWS * BLOCK_TOKENS];
    __m512 panel_store[BLOCK_ROWS * BLOCK_COLS / DOT_LANES]; /* __m512: 64-byte aligned */
    float *panel = (float *)panel_store;
    size_t w_size = is_bf16 ? 2 : 4;
    int rb, tb, kb, r, t;
    for (rb = r_begin; rb < r_end; rb += BLOCK_ROWS) {
        int nr = r_end - rb < BLOCK_ROWS ? r_end - rb : BLOCK_ROWS;
        for (tb = 0; tb < n; tb += BLOCK_TOKENS) {
            int nt = n - tb < BLOCK_TOKENS ? n - tb : BLOCK_TOKENS;
            const float *xb = x + (size_t)tb * cols;
            for (kb = 0; kb < cols; kb += BLOCK_COLS) {
                int nc = cols - kb < BLOCK_COLS ? cols - kb : BLOCK_COLS;
                const char *wb = (const char *)w + ((size_t)rb * cols + kb) * w_size;
                if (!is_bf16) {
                    block_pass(0, lanes, wb, (size_t)cols, xb + kb, (size_t)cols, nr, nt, nc, kb == 0);
                } else if (nt < PACK_MIN_TOKENS) {
                    block_pass(1, lanes, wb, (size_t)cols, xb + kb, (size_t)cols, nr, nt, nc, kb == 0);
                } else {
                    widen_panel(panel, (const uint16_t *)wb, (size_t)cols, nr, nc);
                    block_pass(0, lanes, panel, BLOCK_COLS, xb + kb, (size_t)cols, nr, nt, nc, kb == 0);
                }
            }
            for (r = 0; r < nr; r++)
                for (t = 0; t < nt; t++)
                    out[(size_t)(tb + t) * rows + rb + r] = sum_lanes_avx512(lanes[r * BLOCK_TOKENS + t]);
        }
    }
}
#endif

/* ---- the table entries -------------------------------------------------- */

static size_t no_input_bytes(int n, int cols, int group_size) {
    (void)n;
    (void)cols;
    (void)group_size;
    return 0;
}

/* One thread's share of a matmul: the SIMD kernel where there is one. */
static void compute_rows(float *out, const float *x, const void *w, int is_bf16, int n, int rows, int cols,
                         int r_begin, int r_end) {
#ifdef LUCIE_AVX512
    /* whole row tiles to the tiled kernel; a few odd rows (small models only) to the plain one */
    int r_tiled = r_begin + (r_end - r_begin) / TILE_ROWS * TILE_ROWS;
    rows_avx512(out, x, w, is_bf16, n, rows, cols, r_begin, r_tiled);
    r_begin = r_tiled;
#endif
    if (is_bf16) rows_bf16_portable(out, x, (const uint16_t *)w, n, rows, cols, r_begin, r_end);
    else rows_f32_portable(out, x, (const float *)w, n, rows, cols, r_begin, r_end);
}

/* Threads take contiguous, equal ranges of rows (whole multiples of 16 so
 * tiles stay aligned): each streams its own part of the weights. */
static void thread_rows(int rows, int part, int n_parts, int *begin, int *end) {
    int units = (rows + 15) / 16;
    *begin = (int)((long long)units * part / n_parts) * 16;
    *end = (int)((long long)units * (part + 1) / n_parts) * 16;
    if (*begin > rows) *begin = rows;
    if (*end > rows) *end = rows;
}

static void matmul_f32(const kernel_ctx *c, float *out, const float *x, const void *xq, const void *w, int n,
                       int rows, int cols, int group_size) {
    int part, n_parts = c->n_threads > 0 ? c->n_threads : 1;
    (void)xq;
    (void)group_size;
#pragma omp parallel for schedule(static) num_threads(n_parts)
    for (part = 0; part < n_parts; part++) {
        int begin, end;
        thread_rows(rows, part, n_parts, &begin, &end);
        compute_rows(out, x, w, 0, n, rows, cols, begin, end);
    }
}

static void matmul_bf16(const kernel_ctx *c, float *out, const float *x, const void *xq, const void *w, int n,
                        int rows, int cols, int group_size) {
    int part, n_parts = c->n_threads > 0 ? c->n_threads : 1;
    (void)xq;
    (void)group_size;
#pragma omp parallel for schedule(static) num_threads(n_parts)
    for (part = 0; part < n_parts; part++) {
        int begin, end;
        thread_rows(rows, part, n_parts, &begin, &end);
        compute_rows(out, x, w, 1, n, rows, cols, begin, end);
    }
}

static void embed_f32(float *out, const void *w, int row, int cols, int group_size) {
    (void)group_size;
    memcpy(out, (const float *)w + (size_t)row * cols, (size_t)cols * sizeof(float));
}

static void embed_bf16(float *out, const void *w, int row, int cols, int group_size) {
    const uint16_t *src = (const uint16_t *)w + (size_t)row * cols;
    int i;
    (void)group_size;
    for (i = 0; i < cols; i++) out[i] = bf16_to_f32(src[i]);
}

static const weight_kernels f32_kernels = {no_input_bytes, NULL, matmul_f32, embed_f32};
static const weight_kernels bf16_kernels = {no_input_bytes, NULL, matmul_bf16, embed_bf16};
