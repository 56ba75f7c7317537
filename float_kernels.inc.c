/* f32 and bf16 weights: the kernels of the weight-type table for the two
 * float formats (part of section 4).
 *
 * The arithmetic contract. Every dot product sum_c w[c] * x[c] computed here
 * (each matmul output out[t][r], and dot_f32 in attention) follows one fixed
 * order of operations:
 *   1. DOT_LANES = 16 partial sums ("lanes") start at +0; column c goes to
 *      lane c % 16, and each lane takes its columns in increasing order with
 *      a fused multiply-add, lane = fma(w[c], x[c], lane): one rounding per
 *      step (on a target without an FMA instruction: a multiply, then an add);
 *   2. then a balanced binary tree adds the lanes in order:
 *      ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)) + ...
 * bf16 weights widen to f32 exactly (a 16-bit shift), so bf16 and f32 weights
 * holding the same values give the same results.
 *
 * Why a contract: no batch size, tile shape, thread count or code path can
 * change the result of an output, so prefill (a batch of tokens) and decoding
 * (one token at a time) give bit-identical logits, on any machine with FMA
 * (test/test_float_kernels.c checks this, and prints a hash of its results to
 * compare builds). 16 lanes fill one AVX-512 register, two AVX2 ones or four
 * NEON ones: enough independent sums to hide the FMA latency.
 *
 * The plain C code right below is the reference and runs everywhere. The
 * SIMD kernel after it does the same arithmetic in a cache-friendly order;
 * it is what makes prefill compute-bound and decoding run at memory speed. */

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

/* Step 2 of the contract: a balanced binary tree over the lanes in order,
 * ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)) + ... (destroys acc). */
static float sum_lanes(float *acc) {
    int width, k;
    for (width = DOT_LANES / 2; width > 0; width /= 2)
        for (k = 0; k < width; k++) acc[k] = acc[2 * k] + acc[2 * k + 1];
    return acc[0];
}

/* The loops are written the way compilers vectorise best: a 16-lane step on
 * advancing pointers, then the tail into the first lanes. */
static float dot_f32(const float *w, const float *x, int n) {
    float acc[DOT_LANES] = {0};
    int i, k;
    for (i = 0; i + DOT_LANES <= n; i += DOT_LANES, w += DOT_LANES, x += DOT_LANES)
        for (k = 0; k < DOT_LANES; k++) acc[k] = madd(acc[k], w[k], x[k]);
    for (k = 0; i + k < n; k++) acc[k] = madd(acc[k], w[k], x[k]);
    return sum_lanes(acc);
}

static float dot_bf16(const uint16_t *w, const float *x, int n) {
    float acc[DOT_LANES] = {0};
    int i, k;
    for (i = 0; i + DOT_LANES <= n; i += DOT_LANES, w += DOT_LANES, x += DOT_LANES)
        for (k = 0; k < DOT_LANES; k++) acc[k] = madd(acc[k], bf16_to_f32(w[k]), x[k]);
    for (k = 0; i + k < n; k++) acc[k] = madd(acc[k], bf16_to_f32(w[k]), x[k]);
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

/* ---- the tiled SIMD kernel (AVX-512, AVX2 + FMA or NEON) ---------------
 *
 * Same arithmetic, reorganised for speed. A register tile of FLOAT_TILE_ROWS
 * weight rows x FLOAT_TILE_TOKENS tokens keeps all its lanes in registers, so
 * each weight vector loaded serves several tokens and each x vector several
 * rows. Around it, loops from outer to inner:
 *   blocks of FLOAT_BLOCK_ROWS rows: their weights are read from memory once;
 *   blocks of up to FLOAT_BLOCK_TOKENS tokens;
 *   passes of FLOAT_BLOCK_COLS columns: for a batch, the bf16 weights of the
 *     row block are first widened into an f32 panel that stays in L1, so the
 *     widening is paid once, not once per token tile (a batch is then
 *     limited by FMA throughput alone);
 *   token tiles, then row tiles: the micro-kernel.
 * The lanes of each output wait in a buffer between passes, so every lane
 * still takes its columns in increasing order. For one or a few tokens
 * (decoding) there is a single pass over the whole row, widening on the fly:
 * there is nothing to reuse, and the rows simply stream from memory.
 * Only whole 16-column chunks run in SIMD; the row tail and the adding up of
 * the lanes use the plain C code above, so the contract holds by
 * construction. Only vec16 (16 lanes) and five small functions differ between
 * instruction sets. Define LUCIE_NO_SIMD to build the plain C path only. */

#if defined(__GNUC__) && !defined(LUCIE_NO_SIMD) && LUCIE_HAVE_FMA &&                     \
    (defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__)) || \
     (defined(__aarch64__) && defined(__ARM_NEON)))
#define FLOAT_SIMD 1
#define FLOAT_INLINE inline __attribute__((always_inline))

#if defined(__aarch64__)
#include <arm_neon.h>
#define FLOAT_SIMD_NAME "neon"
#define FLOAT_TILE_ROWS 2 /* 32 registers: 2 x 2 x 4 accumulators + 2 x 4 weights + 4 x */
#define FLOAT_TILE_TOKENS 2
typedef struct {
    float32x4_t q[4];
} vec16;
static FLOAT_INLINE vec16 vec16_zero(void) {
    vec16 v;
    v.q[0] = v.q[1] = v.q[2] = v.q[3] = vdupq_n_f32(0.0f);
    return v;
}
static FLOAT_INLINE vec16 vec16_load(const float *p) {
    vec16 v;
    int j;
    for (j = 0; j < 4; j++) v.q[j] = vld1q_f32(p + 4 * j);
    return v;
}
static FLOAT_INLINE void vec16_store(float *p, vec16 v) {
    int j;
    for (j = 0; j < 4; j++) vst1q_f32(p + 4 * j, v.q[j]);
}
static FLOAT_INLINE vec16 vec16_fma(vec16 w, vec16 x, vec16 acc) {
    int j;
    for (j = 0; j < 4; j++) acc.q[j] = vfmaq_f32(acc.q[j], w.q[j], x.q[j]);
    return acc;
}
static FLOAT_INLINE vec16 vec16_load_bf16(const uint16_t *p) {
    vec16 v;
    int j;
    for (j = 0; j < 2; j++) {
        uint16x8_t h = vld1q_u16(p + 8 * j);
        v.q[2 * j] = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16));
        v.q[2 * j + 1] = vreinterpretq_f32_u32(vshll_n_u16(vget_high_u16(h), 16));
    }
    return v;
}
#elif defined(__AVX512F__)
#include <immintrin.h>
#define FLOAT_SIMD_NAME "avx512"
#define FLOAT_TILE_ROWS 4   /* 4 x 6 accumulators + 4 weights + 1 x = 29 of the 32 registers */
#define FLOAT_TILE_TOKENS 6
typedef __m512 vec16;
static FLOAT_INLINE vec16 vec16_zero(void) { return _mm512_setzero_ps(); }
static FLOAT_INLINE vec16 vec16_load(const float *p) { return _mm512_loadu_ps(p); }
static FLOAT_INLINE void vec16_store(float *p, vec16 v) { _mm512_storeu_ps(p, v); }
static FLOAT_INLINE vec16 vec16_fma(vec16 w, vec16 x, vec16 acc) { return _mm512_fmadd_ps(w, x, acc); }
/* bf16 is the top half of an f32: widening puts each 16-bit word in the high
 * half of a 32-bit lane and zeroes the low half (one permute with AVX-512BW). */
static FLOAT_INLINE vec16 vec16_load_bf16(const uint16_t *p) {
    __m256i words = _mm256_loadu_si256((const __m256i *)p);
#ifdef __AVX512BW__
    const __m512i spread = _mm512_set_epi16(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8, 7, 7, 6, 6,
                                            5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    return _mm512_castsi512_ps(
        _mm512_maskz_permutexvar_epi16((__mmask32)0xAAAAAAAAu, spread, _mm512_castsi256_si512(words)));
#else
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(words), 16));
#endif
}
#else
#include <immintrin.h>
#define FLOAT_SIMD_NAME "avx2"
#define FLOAT_TILE_ROWS 2   /* 16 registers: 2 x 3 x 2 accumulators + 2 x 2 weights (x comes from memory) */
#define FLOAT_TILE_TOKENS 3
typedef struct {
    __m256 lo, hi; /* lanes 0-7, 8-15 */
} vec16;
static FLOAT_INLINE vec16 vec16_zero(void) {
    vec16 v;
    v.lo = v.hi = _mm256_setzero_ps();
    return v;
}
static FLOAT_INLINE vec16 vec16_load(const float *p) {
    vec16 v;
    v.lo = _mm256_loadu_ps(p);
    v.hi = _mm256_loadu_ps(p + 8);
    return v;
}
static FLOAT_INLINE void vec16_store(float *p, vec16 v) {
    _mm256_storeu_ps(p, v.lo);
    _mm256_storeu_ps(p + 8, v.hi);
}
static FLOAT_INLINE vec16 vec16_fma(vec16 w, vec16 x, vec16 acc) {
    acc.lo = _mm256_fmadd_ps(w.lo, x.lo, acc.lo);
    acc.hi = _mm256_fmadd_ps(w.hi, x.hi, acc.hi);
    return acc;
}
static FLOAT_INLINE vec16 vec16_load_bf16(const uint16_t *p) {
    vec16 v;
    v.lo = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
    v.hi = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p + 8))), 16));
    return v;
}
#endif

#define FLOAT_BLOCK_ROWS 8    /* a multiple of FLOAT_TILE_ROWS */
#define FLOAT_BLOCK_TOKENS 64 /* lanes buffer: 8 x 64 x 16 floats = 32 KB of stack */
#define FLOAT_BLOCK_COLS 512  /* f32 panel: 8 x 512 floats = 16 KB; a token tile of x: 12 KB */
#define FLOAT_PACK_MIN_TOKENS (FLOAT_TILE_TOKENS + 1) /* fewer tokens make one token tile: nothing to reuse */

/* The micro-kernel: the lanes of an R x T tile (weight rows w + r * w_stride,
 * tokens x + t * x_stride) take n_chunks more 16-column chunks. The lanes of
 * row r, token t live at lanes + (r * FLOAT_BLOCK_TOKENS + t) * 16 between
 * passes (`first`: start from zero instead). R and T are constants at every
 * call, so the loops unroll and the accumulators stay in registers. */
static FLOAT_INLINE void float_tile(const int R, const int T, const int w_bf16, float *lanes, const void *w,
                                    size_t w_stride, const float *x, size_t x_stride, int n_chunks, int first) {
    vec16 acc[FLOAT_TILE_ROWS][FLOAT_TILE_TOKENS], wv[FLOAT_TILE_ROWS];
    int r, t, i;
    for (r = 0; r < R; r++)
        for (t = 0; t < T; t++)
            acc[r][t] = first ? vec16_zero() : vec16_load(lanes + (r * FLOAT_BLOCK_TOKENS + t) * DOT_LANES);
    for (i = 0; i < n_chunks; i++) {
        size_t c = (size_t)i * DOT_LANES;
        for (r = 0; r < R; r++)
            wv[r] = w_bf16 ? vec16_load_bf16((const uint16_t *)w + r * w_stride + c)
                           : vec16_load((const float *)w + r * w_stride + c);
        for (t = 0; t < T; t++) {
            vec16 xv = vec16_load(x + t * x_stride + c);
            for (r = 0; r < R; r++) acc[r][t] = vec16_fma(wv[r], xv, acc[r][t]);
        }
    }
    for (r = 0; r < R; r++)
        for (t = 0; t < T; t++) vec16_store(lanes + (r * FLOAT_BLOCK_TOKENS + t) * DOT_LANES, acc[r][t]);
}

/* One pass over a block: every token tile times every row tile. The switch
 * turns the size of the last token tile into a constant. */
#define FLOAT_TOKENS_CASE(k)                                                                                 \
    case k:                                                                                                  \
        float_tile(FLOAT_TILE_ROWS, k < FLOAT_TILE_TOKENS ? k : FLOAT_TILE_TOKENS, w_bf16, l, wr, w_stride, \
                   xt, x_stride, n_chunks, first);                                                           \
        break
static FLOAT_INLINE void float_block_pass(const int w_bf16, float *lanes, const void *w, size_t w_stride,
                                          const float *x, size_t x_stride, int n_rows, int n_tokens, int n_chunks,
                                          int first) {
    size_t w_size = w_bf16 ? 2 : 4;
    int t, r;
    for (t = 0; t < n_tokens; t += FLOAT_TILE_TOKENS) {
        const float *xt = x + t * x_stride;
        for (r = 0; r < n_rows; r += FLOAT_TILE_ROWS) {
            const void *wr = (const char *)w + r * w_stride * w_size;
            float *l = lanes + (r * FLOAT_BLOCK_TOKENS + t) * DOT_LANES;
            switch (n_tokens - t) {
                FLOAT_TOKENS_CASE(1);
                FLOAT_TOKENS_CASE(2);
                FLOAT_TOKENS_CASE(3);
                FLOAT_TOKENS_CASE(4);
                FLOAT_TOKENS_CASE(5);
            default:
                float_tile(FLOAT_TILE_ROWS, FLOAT_TILE_TOKENS, w_bf16, l, wr, w_stride, xt, x_stride, n_chunks,
                           first);
            }
        }
    }
}
#undef FLOAT_TOKENS_CASE

/* Widens n_rows x (16 * n_chunks) bf16 weights (row stride w_stride) into
 * an f32 panel of row stride FLOAT_BLOCK_COLS. */
static void widen_panel(float *panel, const uint16_t *w, size_t w_stride, int n_rows, int n_chunks) {
    int r, i;
    for (r = 0; r < n_rows; r++)
        for (i = 0; i < n_chunks; i++)
            vec16_store(panel + r * FLOAT_BLOCK_COLS + i * DOT_LANES,
                        vec16_load_bf16(w + r * w_stride + (size_t)i * DOT_LANES));
}

/* Rows [r_begin, r_end) (a multiple of FLOAT_TILE_ROWS of them) for n tokens. */
static void float_rows_simd(float *out, const float *x, const void *w, int is_bf16, int n, int rows, int cols,
                            int r_begin, int r_end) {
    float lanes[FLOAT_BLOCK_ROWS * FLOAT_BLOCK_TOKENS * DOT_LANES] __attribute__((aligned(64)));
    float panel[FLOAT_BLOCK_ROWS * FLOAT_BLOCK_COLS] __attribute__((aligned(64)));
    size_t w_size = is_bf16 ? 2 : 4;
    int whole = cols / DOT_LANES * DOT_LANES; /* columns done in SIMD; the tail after them in C */
    int rb, tb, kb, r, t, k;
    for (rb = r_begin; rb < r_end; rb += FLOAT_BLOCK_ROWS) {
        int nr = r_end - rb < FLOAT_BLOCK_ROWS ? r_end - rb : FLOAT_BLOCK_ROWS;
        for (tb = 0; tb < n; tb += FLOAT_BLOCK_TOKENS) {
            int nt = n - tb < FLOAT_BLOCK_TOKENS ? n - tb : FLOAT_BLOCK_TOKENS;
            int pass = nt < FLOAT_PACK_MIN_TOKENS ? whole : FLOAT_BLOCK_COLS; /* columns per pass */
            const float *xb = x + (size_t)tb * cols;
            kb = 0;
            do { /* at least one pass, which zeroes the lanes */
                int chunks = (whole - kb < pass ? whole - kb : pass) / DOT_LANES;
                const char *wb = (const char *)w + ((size_t)rb * cols + kb) * w_size;
                if (!is_bf16) {
                    float_block_pass(0, lanes, wb, (size_t)cols, xb + kb, (size_t)cols, nr, nt, chunks, kb == 0);
                } else if (nt < FLOAT_PACK_MIN_TOKENS) {
                    float_block_pass(1, lanes, wb, (size_t)cols, xb + kb, (size_t)cols, nr, nt, chunks, kb == 0);
                } else {
                    widen_panel(panel, (const uint16_t *)wb, (size_t)cols, nr, chunks);
                    float_block_pass(0, lanes, panel, FLOAT_BLOCK_COLS, xb + kb, (size_t)cols, nr, nt, chunks,
                                     kb == 0);
                }
                kb += pass;
            } while (kb < whole);
            for (r = 0; r < nr; r++)
                for (t = 0; t < nt; t++) {
                    float *acc = lanes + (r * FLOAT_BLOCK_TOKENS + t) * DOT_LANES;
                    size_t row = (size_t)(rb + r) * cols + whole, tok = (size_t)(tb + t) * cols + whole;
                    for (k = 0; whole + k < cols; k++) {
                        float wk = is_bf16 ? bf16_to_f32(((const uint16_t *)w)[row + k]) : ((const float *)w)[row + k];
                        acc[k] = madd(acc[k], wk, x[tok + k]);
                    }
                    out[(size_t)(tb + t) * rows + rb + r] = sum_lanes(acc);
                }
        }
    }
}
#endif

/* ---- the table entries ---------------------------------------------------- */

static size_t no_input_bytes(int n, int cols, int group_size) {
    (void)n;
    (void)cols;
    (void)group_size;
    return 0;
}

/* One thread's share of a matmul: rows [r_begin, r_end). */
static void float_rows(float *out, const float *x, const void *w, int is_bf16, int n, int rows, int cols,
                       int r_begin, int r_end) {
#ifdef FLOAT_SIMD
    /* whole row tiles to the SIMD kernel; a few odd rows (small models only) to the plain one */
    int r_tiled = r_begin + (r_end - r_begin) / FLOAT_TILE_ROWS * FLOAT_TILE_ROWS;
    float_rows_simd(out, x, w, is_bf16, n, rows, cols, r_begin, r_tiled);
    r_begin = r_tiled;
#endif
    if (is_bf16) rows_bf16_portable(out, x, (const uint16_t *)w, n, rows, cols, r_begin, r_end);
    else rows_f32_portable(out, x, (const float *)w, n, rows, cols, r_begin, r_end);
}

/* Each thread takes one contiguous range of rows, all of nearly equal size
 * (whole multiples of 16, so tiles stay aligned), and streams its own part
 * of the weights. Without OpenMP the parts simply run one after another. */
static void float_matmul(const kernel_ctx *c, float *out, const float *x, const void *w, int is_bf16, int n,
                         int rows, int cols) {
    int part, n_parts = c->n_threads > 0 ? c->n_threads : 1, units = (rows + 15) / 16;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(n_parts)
#endif
    for (part = 0; part < n_parts; part++) {
        int begin = (int)((long long)units * part / n_parts) * 16;
        int end = (int)((long long)units * (part + 1) / n_parts) * 16;
        float_rows(out, x, w, is_bf16, n, rows, cols, begin < rows ? begin : rows, end < rows ? end : rows);
    }
}

static void matmul_f32(const kernel_ctx *c, float *out, const float *x, const void *xq, const void *w, int n,
                       int rows, int cols, int group_size) {
    (void)xq;
    (void)group_size;
    float_matmul(c, out, x, w, 0, n, rows, cols);
}

static void matmul_bf16(const kernel_ctx *c, float *out, const float *x, const void *xq, const void *w, int n,
                        int rows, int cols, int group_size) {
    (void)xq;
    (void)group_size;
    float_matmul(c, out, x, w, 1, n, rows, cols);
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
