/* ---- 4b. Quantized weights: q8 and q4 -------------------------------------
 *
 * A q8 or q4 weight stores each run of QUANT_GROUP = 32 consecutive values of
 * a row as small integer codes plus one f16 scale: w = (code - zero) * scale.
 *   q8: 8-bit codes, zero = 128, scale = max|w| / 127      8.5 bits per weight
 *   q4: 4-bit codes, zero = 8                              4.5 bits per weight
 * A q4 scale starts from w_max / -8 (w_max, the value of largest magnitude,
 * becomes code 0 and all 16 levels are used); the exporter also tries a few
 * other scales and least-squares refits and keeps the best (relative error
 * 8.6% -> 8.3% on Gaussian weights, KL divergence against f32 -5% on
 * stories260K; it costs export time only).
 * Measured on Gaussian, heavy-tailed and the trained stories260K weights,
 * groups of 32 beat groups of 64 by ~10% relative error in q4 for 0.25 more
 * bits per weight, and a q4 min/offset (asymmetric codes) gains ~6% error
 * for 0.5 more bits: not worth its bytes, as decoding speed is bytes read.
 * The codes are unsigned with an implicit zero point because the integer
 * dot-product instructions (x86 VPDPBUSD, AVX2 VPMADDUBSW) multiply unsigned
 * by signed bytes; the activations are the signed side.
 *
 * Layout. Rows are taken 16 at a time (a block; the last block of a tensor is
 * padded with zero rows) and a row's last group is padded with zeros, so any
 * shape works. A block of ng = ceil(cols / 32) groups is
 *   scales: ng x 16 f16, scale of (group g, row r) at index g * 16 + r
 *   codes:  ng groups; group g holds 8 "quads" of 64 bytes, quad k being
 *           4 consecutive codes (elements 4k..4k+3 of the group) of each of
 *           the 16 rows in turn (q8: byte k*64 + r*4 + j = element 4k + j).
 *           q4 packs quads k and k + 4 into the low and high nibbles of the
 *           same 64 bytes (byte c*64 + r*4 + j: low nibble = element 4c + j,
 *           high nibble = element 16 + 4c + j), 256 bytes per group.
 * Tensor bytes: ceil(rows / 16) * 16 * ng * 34 (q8) or * 18 (q4).
 * Why interleave rows: one 64-byte load holds 4 codes of 16 rows, and one
 * 4-byte piece of the activation, broadcast, is what each of those rows
 * multiplies, so a single VPDPBUSD does 64 multiply-adds into 16 per-row
 * sums. No horizontal reductions, the 16 per-row scales of a group are one
 * contiguous load, and a 16-row block of a 4096-wide matrix (70 KB at q8)
 * stays in L2 while a batch of tokens streams past it (prefill). The plain
 * layout (each row's groups in order) lets gcc and clang vectorise a group's
 * dot product by themselves, but only as a reduction: one horizontal sum per
 * row and group, several times the work of the interleaved kernel.
 *
 * Activations are quantized once per matmul input (prepare), to int8 with a
 * float scale per group of 32 (scale = max|x| / 127). The products then are
 *   sum_g (dw_g * dx_g) * (sum_i code_i * xq_i  -  zero * sum_i xq_i)
 * with exact int32 arithmetic inside a group and one f32 fused multiply-add
 * per group. The portable C below is the definition; the AVX-512 VNNI and
 * AVX2 versions (compilers do not find VPDPBUSD for the per-row form) compute
 * the same int32 sums and then the very same float operations in the same
 * order, so every path gives bit-identical results (test/test_kernels.c).
 *
 * The embedding table and the lm_head are kept at 8 bits in q4 files: see
 * quant_target_dtype().
 * ------------------------------------------------------------------------ */

#define QUANT_GROUP 32   /* weights per scale, along a row */
#define QUANT_ROWS 16    /* rows interleaved in a block */
#define QUANT_TOKENS 4   /* tokens per register tile in the batched kernels */
#define Q8_ZERO 128
#define Q4_ZERO 8

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define QUANT_SIMD "avx512-vnni"
#define QUANT_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define QUANT_SIMD "avx2"
#define QUANT_AVX2 1
#endif
#ifdef QUANT_SIMD
#include <immintrin.h>
#endif

static int quant_groups(int cols) { return (cols + QUANT_GROUP - 1) / QUANT_GROUP; }
static int quant_zero(int dtype) { return dtype == LUCIE_DT_Q8 ? Q8_ZERO : Q4_ZERO; }
/* Bytes of one group of one row (its scale plus its codes). */
static size_t quant_unit_bytes(int dtype) { return dtype == LUCIE_DT_Q8 ? 2 + 32 : 2 + 16; }
static size_t quant_block_bytes(int dtype, int ng) { return (size_t)ng * QUANT_ROWS * quant_unit_bytes(dtype); }
static size_t quant_codes_per_group(int dtype) { return dtype == LUCIE_DT_Q8 ? 512 : 256; }

/* Exact f16 -> f32 without touching denormal floats (which are slow on x86):
 * the value is mantissa * 2^(exponent - 25), both parts built as integers. */
static float half_to_float(uint16_t h) {
    uint32_t exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff, bits;
    float power, v;
    if (exponent) mantissa |= 0x400;
    else exponent = 1;
    bits = (exponent + 102) << 23; /* 2^(exponent - 25) */
    memcpy(&power, &bits, 4);
    v = (float)mantissa * power;
    return (h & 0x8000) ? -v : v;
}

/* f32 -> f16, rounding to nearest even; saturates at +-65504 (the caller
 * checks the range first; saturating just avoids ever writing inf/NaN). */
static uint16_t float_to_half(float f) {
    uint32_t x, sign;
    memcpy(&x, &f, 4);
    sign = (x >> 16) & 0x8000;
    x &= 0x7fffffff;
    if (x >= 0x477fe000) return (uint16_t)(sign | 0x7bff); /* >= 65504, inf, NaN */
    if (x < 0x38800000) { /* below 2^-14: a subnormal half, in units of 2^-24 */
        float v;
        memcpy(&v, &x, 4);
        return (uint16_t)(sign | (uint32_t)lrintf(v * 16777216.0f)); /* 1024 rounds up to the smallest normal */
    }
    x -= 112u << 23; /* rebias the exponent from 127 to 15 */
    return (uint16_t)(sign | ((x + 0x0fff + ((x >> 13) & 1)) >> 13));
}

static uint16_t load_u16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* The nearest integer, ties to even (lrintf in the default rounding mode), for
 * |v| < 2^22, without a library call so that loops over it vectorise: adding
 * and subtracting 1.5 * 2^23 leaves no bits below the units. Only valid when
 * floats are evaluated as floats (not on x87) and not under -ffast-math.
 * Callers clamp v first (clamp_float), which also maps NaN to a number. */
static float clamp_float(float v, float lo, float hi) { return v > lo ? (v < hi ? v : hi) : lo; /* NaN -> lo */ }

static int round_to_int(float v) {
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0 && !defined(__FAST_MATH__)
    const float shift = 12582912.0f;
    return (int)((v + shift) - shift);
#else
    return (int)lrintf(v);
#endif
}

/* Bytes of a [rows, cols] tensor of this dtype; 0 when the shape is empty,
 * too large for the kernels, the group size unsupported, or on overflow. */
static int tensor_bytes(int dtype, size_t rows, size_t cols, int group_size, size_t *bytes) {
    size_t units;
    if (rows == 0 || cols == 0 || rows > INT_MAX || cols > INT_MAX) return 0;
    switch (dtype) {
    case LUCIE_DT_F32: return mul_size(rows, cols, &units) && mul_size(units, 4, bytes);
    case LUCIE_DT_BF16: return mul_size(rows, cols, &units) && mul_size(units, 2, bytes);
    case LUCIE_DT_Q8:
    case LUCIE_DT_Q4:
        if (group_size != QUANT_GROUP) return 0;
        rows = (rows + QUANT_ROWS - 1) / QUANT_ROWS * QUANT_ROWS;
        return mul_size(rows, (size_t)quant_groups((int)cols), &units) &&
               mul_size(units, quant_unit_bytes(dtype), bytes);
    default: return 0;
    }
}

/* ---- the activations: int8 per group, quantized once per input ---- */

/* One token's prepared input: ng*32 int8 codes, then ng f32 scales, then ng
 * int32 code sums (for the zero-point correction); padded to 64 bytes. */
static size_t quant_input_stride(int cols) {
    size_t ng = (size_t)quant_groups(cols);
    return (ng * (QUANT_GROUP + 4 + 4) + 63) / 64 * 64;
}

static size_t quant_input_bytes(int n, int cols, int group_size) {
    (void)group_size;
    if (n <= 0 || cols <= 0) return 0;
    return (size_t)n * quant_input_stride(cols);
}

static void quantize_input_row(const float *x, int cols, unsigned char *dst) {
    int ng = quant_groups(cols), g, i;
    signed char *codes = (signed char *)dst;
    float *scales = (float *)(dst + (size_t)ng * QUANT_GROUP);
    int32_t *sums = (int32_t *)(dst + (size_t)ng * (QUANT_GROUP + 4));
    for (g = 0; g < ng; g++) {
        int n = cols - g * QUANT_GROUP < QUANT_GROUP ? cols - g * QUANT_GROUP : QUANT_GROUP;
        const float *v = x + (size_t)g * QUANT_GROUP;
        float amax = 0.0f, inv;
        int32_t sum = 0;
        for (i = 0; i < n; i++) amax = fabsf(v[i]) > amax ? fabsf(v[i]) : amax;
        inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        for (i = 0; i < n; i++) {
            int q = round_to_int(clamp_float(v[i] * inv, -127.0f, 127.0f));
            codes[g * QUANT_GROUP + i] = (signed char)q;
            sum += q;
        }
        for (; i < QUANT_GROUP; i++) codes[g * QUANT_GROUP + i] = 0;
        scales[g] = amax / 127.0f;
        sums[g] = sum;
    }
}

static void quant_prepare(const kernel_ctx *c, const float *x, int n, int cols, int group_size, void *xq) {
    size_t stride = quant_input_stride(cols);
    int t;
    (void)c;
    (void)group_size;
    for (t = 0; t < n; t++) quantize_input_row(x + (size_t)t * cols, cols, (unsigned char *)xq + t * stride);
}

/* ---- the portable kernel: the definition of the arithmetic ---- */

/* a * b + c rounded once when the hardware can, so that compilers' own
 * contraction choices cannot make the SIMD and portable paths differ. */
static float quant_madd(float a, float b, float c) {
#if defined(__FMA__) || defined(FP_FAST_FMAF)
    return fmaf(a, b, c);
#else
    float p = a * b;
    return p + c;
#endif
}

/* Codes of group g of a block in plain order: u[r][i] = code of row r,
 * element 32g + i; dw[r] = its scale. */
static void quant_unpack_group(int dtype, const unsigned char *block, int ng, int g,
                               unsigned char u[QUANT_ROWS][QUANT_GROUP], float dw[QUANT_ROWS]) {
    const unsigned char *codes = block + (size_t)ng * QUANT_ROWS * 2 + (size_t)g * quant_codes_per_group(dtype);
    int r, k, j;
    for (r = 0; r < QUANT_ROWS; r++) dw[r] = half_to_float(load_u16(block + ((size_t)g * QUANT_ROWS + r) * 2));
    for (k = 0; k < 8; k++)
        for (r = 0; r < QUANT_ROWS; r++)
            for (j = 0; j < 4; j++) {
                if (dtype == LUCIE_DT_Q8) {
                    u[r][4 * k + j] = codes[k * 64 + r * 4 + j];
                } else if (k < 4) {
                    unsigned char b = codes[k * 64 + r * 4 + j];
                    u[r][4 * k + j] = b & 15;
                    u[r][16 + 4 * k + j] = b >> 4;
                }
            }
}

/* sums[r] = sum_i code(row r, element i) * xc[i] over one group: the 16 rows
 * are independent lanes, so compilers vectorise the r loops (NEON's 4-way
 * deinterleaving loads fit the 4-byte interleave exactly). */
static void quant_group_sums(int dtype, const unsigned char *codes, const signed char *xc, int32_t sums[QUANT_ROWS]) {
    int k, r, j;
    for (r = 0; r < QUANT_ROWS; r++) sums[r] = 0;
    if (dtype == LUCIE_DT_Q8) {
        for (k = 0; k < 8; k++)
            for (r = 0; r < QUANT_ROWS; r++)
                for (j = 0; j < 4; j++) sums[r] += codes[k * 64 + r * 4 + j] * xc[4 * k + j];
    } else {
        for (k = 0; k < 4; k++)
            for (r = 0; r < QUANT_ROWS; r++)
                for (j = 0; j < 4; j++) {
                    int b = codes[k * 64 + r * 4 + j];
                    sums[r] += (b & 15) * xc[4 * k + j] + (b >> 4) * xc[16 + 4 * k + j];
                }
    }
}

/* acc[t][r] = row r of the block . token t, for nt <= QUANT_TOKENS tokens. */
static void quant_block_portable(int dtype, const unsigned char *block, int ng, const unsigned char *xq,
                                 size_t stride, int nt, float acc[QUANT_TOKENS][QUANT_ROWS]) {
    const unsigned char *codes = block + (size_t)ng * QUANT_ROWS * 2;
    int zero = quant_zero(dtype), g, t, r;
    for (t = 0; t < nt; t++)
        for (r = 0; r < QUANT_ROWS; r++) acc[t][r] = 0.0f;
    for (g = 0; g < ng; g++) {
        float dw[QUANT_ROWS];
        for (r = 0; r < QUANT_ROWS; r++) dw[r] = half_to_float(load_u16(block + ((size_t)g * QUANT_ROWS + r) * 2));
        for (t = 0; t < nt; t++) {
            const unsigned char *x = xq + t * stride;
            int32_t sums[QUANT_ROWS], xsum;
            float dx;
            memcpy(&dx, x + (size_t)ng * QUANT_GROUP + (size_t)g * 4, 4);
            memcpy(&xsum, x + (size_t)ng * (QUANT_GROUP + 4) + (size_t)g * 4, 4);
            quant_group_sums(dtype, codes + g * quant_codes_per_group(dtype),
                             (const signed char *)x + (size_t)g * QUANT_GROUP, sums);
            for (r = 0; r < QUANT_ROWS; r++)
                acc[t][r] = quant_madd((float)(sums[r] - zero * xsum), dw[r] * dx, acc[t][r]);
        }
    }
}

/* ---- the same arithmetic with AVX-512 VNNI or AVX2 intrinsics ---- */

#ifdef QUANT_SIMD
static int32_t quant_load_i32(const unsigned char *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}
static float quant_load_f32(const unsigned char *p) {
    float v;
    memcpy(&v, p, 4);
    return v;
}
#endif

#ifdef QUANT_AVX512
/* The 8 quads of group g as 64 unsigned bytes each (q4 nibbles unpacked). */
static void quant_load_group_avx512(int dtype, const unsigned char *codes, __m512i w[8]) {
    int k;
    if (dtype == LUCIE_DT_Q8) {
        for (k = 0; k < 8; k++) w[k] = _mm512_loadu_si512((const void *)(codes + k * 64));
    } else {
        const __m512i low = _mm512_set1_epi8(15);
        for (k = 0; k < 4; k++) {
            __m512i b = _mm512_loadu_si512((const void *)(codes + k * 64));
            w[k] = _mm512_and_si512(b, low);
            w[k + 4] = _mm512_and_si512(_mm512_srli_epi16(b, 4), low);
        }
    }
}

static void quant_block_simd(int dtype, const unsigned char *block, int ng, const unsigned char *xq, size_t stride,
                             int nt, float out[QUANT_TOKENS][QUANT_ROWS]) {
    const unsigned char *codes = block + (size_t)ng * QUANT_ROWS * 2;
    size_t group_bytes = quant_codes_per_group(dtype);
    int zero = quant_zero(dtype), g, t;
    __m512 acc[QUANT_TOKENS];
    for (t = 0; t < QUANT_TOKENS; t++) acc[t] = _mm512_setzero_ps();
    for (g = 0; g < ng; g++) {
        __m512i w[8];
        __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(block + (size_t)g * QUANT_ROWS * 2)));
        quant_load_group_avx512(dtype, codes + g * group_bytes, w);
        for (t = 0; t < nt; t++) {
            const unsigned char *x = xq + t * stride, *xc = x + (size_t)g * QUANT_GROUP;
            __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512(), dot;
            int k;
            for (k = 0; k < 8; k += 2) {
                s0 = _mm512_dpbusd_epi32(s0, w[k], _mm512_set1_epi32(quant_load_i32(xc + 4 * k)));
                s1 = _mm512_dpbusd_epi32(s1, w[k + 1], _mm512_set1_epi32(quant_load_i32(xc + 4 * k + 4)));
            }
            dot = _mm512_sub_epi32(_mm512_add_epi32(s0, s1),
                                   _mm512_set1_epi32(zero * quant_load_i32(x + (size_t)ng * (QUANT_GROUP + 4) + g * 4)));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot),
                                     _mm512_mul_ps(dw, _mm512_set1_ps(quant_load_f32(x + (size_t)ng * QUANT_GROUP + g * 4))),
                                     acc[t]);
        }
    }
    for (t = 0; t < nt; t++) _mm512_storeu_ps(out[t], acc[t]);
}
#endif

#ifdef QUANT_AVX2
/* Sum over each 4-byte lane of u (unsigned, < 256) times x (signed), exact.
 * q4 codes are < 16 so VPMADDUBSW's 16-bit pair sums cannot saturate; q8
 * codes use |code - 128| times x with the sign moved onto x instead (the
 * pair sums then stay within 2 * 128 * 127), and the caller's zero-point
 * correction is skipped: q8 passes zero = 0. */
static __m256i quant_dot_avx2(int dtype, __m256i u, __m256i x) {
    const __m256i ones = _mm256_set1_epi16(1);
    if (dtype == LUCIE_DT_Q8) {
        __m256i q = _mm256_xor_si256(u, _mm256_set1_epi8((char)0x80)); /* code - 128 as int8 */
        return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(q), _mm256_sign_epi8(x, q)), ones);
    }
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), ones);
}

static void quant_block_simd(int dtype, const unsigned char *block, int ng, const unsigned char *xq, size_t stride,
                             int nt, float out[QUANT_TOKENS][QUANT_ROWS]) {
    const unsigned char *codes = block + (size_t)ng * QUANT_ROWS * 2;
    size_t group_bytes = quant_codes_per_group(dtype);
    int zero = dtype == LUCIE_DT_Q8 ? 0 : Q4_ZERO, g, t, h, k;
    __m256 acc[QUANT_TOKENS][2];
    for (t = 0; t < QUANT_TOKENS; t++) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    for (g = 0; g < ng; g++) {
        const unsigned char *gc = codes + g * group_bytes;
        for (h = 0; h < 2; h++) { /* rows 0-7, then rows 8-15: 32 bytes of each quad */
            __m256i w[8];
            __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(block + ((size_t)g * QUANT_ROWS + 8 * h) * 2)));
            if (dtype == LUCIE_DT_Q8) {
                for (k = 0; k < 8; k++) w[k] = _mm256_loadu_si256((const __m256i *)(gc + k * 64 + 32 * h));
            } else {
                const __m256i low = _mm256_set1_epi8(15);
                for (k = 0; k < 4; k++) {
                    __m256i b = _mm256_loadu_si256((const __m256i *)(gc + k * 64 + 32 * h));
                    w[k] = _mm256_and_si256(b, low);
                    w[k + 4] = _mm256_and_si256(_mm256_srli_epi16(b, 4), low);
                }
            }
            for (t = 0; t < nt; t++) {
                const unsigned char *x = xq + t * stride, *xc = x + (size_t)g * QUANT_GROUP;
                __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256(), dot;
                for (k = 0; k < 8; k += 2) {
                    s0 = _mm256_add_epi32(s0, quant_dot_avx2(dtype, w[k], _mm256_set1_epi32(quant_load_i32(xc + 4 * k))));
                    s1 = _mm256_add_epi32(s1, quant_dot_avx2(dtype, w[k + 1], _mm256_set1_epi32(quant_load_i32(xc + 4 * k + 4))));
                }
                dot = _mm256_sub_epi32(_mm256_add_epi32(s0, s1),
                                       _mm256_set1_epi32(zero * quant_load_i32(x + (size_t)ng * (QUANT_GROUP + 4) + g * 4)));
                acc[t][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot),
                                            _mm256_mul_ps(dw, _mm256_set1_ps(quant_load_f32(x + (size_t)ng * QUANT_GROUP + g * 4))),
                                            acc[t][h]);
            }
        }
    }
    for (t = 0; t < nt; t++) {
        _mm256_storeu_ps(out[t], acc[t][0]);
        _mm256_storeu_ps(out[t] + 8, acc[t][1]);
    }
}
#endif

/* ---- matmul, embedding, kernel tables ---- */

/* out[t * rows + r] = W[r] . x[t]: threads split the 16-row blocks evenly;
 * each block meets the batch QUANT_TOKENS tokens at a time, so its weights
 * are read from memory once and from cache for the rest of the batch.
 * portable = 1 forces the portable kernel (the tests compare the two). */
static void quant_matmul(const kernel_ctx *c, int dtype, float *out, const void *xq, const void *w, int n, int rows,
                         int cols, int portable) {
    int ng = quant_groups(cols), n_blocks = (rows + QUANT_ROWS - 1) / QUANT_ROWS, b;
    size_t block_bytes = quant_block_bytes(dtype, ng), stride = quant_input_stride(cols);
    (void)c;
    (void)portable;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(c->n_threads)
#endif
    for (b = 0; b < n_blocks; b++) {
        const unsigned char *block = (const unsigned char *)w + (size_t)b * block_bytes;
        int r0 = b * QUANT_ROWS, m = rows - r0 < QUANT_ROWS ? rows - r0 : QUANT_ROWS, t0, t, r;
        for (t0 = 0; t0 < n; t0 += QUANT_TOKENS) {
            float acc[QUANT_TOKENS][QUANT_ROWS];
            int nt = n - t0 < QUANT_TOKENS ? n - t0 : QUANT_TOKENS;
            const unsigned char *x = (const unsigned char *)xq + (size_t)t0 * stride;
#ifdef QUANT_SIMD
            if (!portable)
                quant_block_simd(dtype, block, ng, x, stride, nt, acc);
            else
#endif
                quant_block_portable(dtype, block, ng, x, stride, nt, acc);
            for (t = 0; t < nt; t++)
                for (r = 0; r < m; r++) out[(size_t)(t0 + t) * rows + r0 + r] = acc[t][r];
        }
    }
}

static void q8_matmul(const kernel_ctx *c, float *out, const float *x, const void *xq, const void *w, int n, int rows,
                      int cols, int group_size) {
    (void)x;
    (void)group_size;
    quant_matmul(c, LUCIE_DT_Q8, out, xq, w, n, rows, cols, 0);
}

static void q4_matmul(const kernel_ctx *c, float *out, const float *x, const void *xq, const void *w, int n, int rows,
                      int cols, int group_size) {
    (void)x;
    (void)group_size;
    quant_matmul(c, LUCIE_DT_Q4, out, xq, w, n, rows, cols, 0);
}

/* Row `row` of a quantized tensor as floats (the embedding lookup). */
static void quant_embed_row(int dtype, float *out, const void *w, int row, int cols) {
    int ng = quant_groups(cols), g, i, zero = quant_zero(dtype);
    const unsigned char *block = (const unsigned char *)w + (size_t)(row / QUANT_ROWS) * quant_block_bytes(dtype, ng);
    for (g = 0; g < ng; g++) {
        unsigned char u[QUANT_ROWS][QUANT_GROUP];
        float dw[QUANT_ROWS];
        int n = cols - g * QUANT_GROUP < QUANT_GROUP ? cols - g * QUANT_GROUP : QUANT_GROUP;
        quant_unpack_group(dtype, block, ng, g, u, dw);
        for (i = 0; i < n; i++) out[g * QUANT_GROUP + i] = (float)(u[row % QUANT_ROWS][i] - zero) * dw[row % QUANT_ROWS];
    }
}

static void q8_embed_row(float *out, const void *w, int row, int cols, int group_size) {
    (void)group_size;
    quant_embed_row(LUCIE_DT_Q8, out, w, row, cols);
}

static void q4_embed_row(float *out, const void *w, int row, int cols, int group_size) {
    (void)group_size;
    quant_embed_row(LUCIE_DT_Q4, out, w, row, cols);
}

/* q8 and q4 share the prepared input: q/k/v of any mix of the two reuse it. */
static const weight_kernels q8_kernels = {quant_input_bytes, quant_prepare, q8_matmul, q8_embed_row};
static const weight_kernels q4_kernels = {quant_input_bytes, quant_prepare, q4_matmul, q4_embed_row};

/* ---- quantizing weights (the exporter side) ---- */

/* Codes u of the 32 values v for the scale stored as h. */
static void quant_codes(int dtype, const float *v, uint16_t h, unsigned char *u) {
    float d = half_to_float(h), inv = d != 0.0f ? 1.0f / d : 0.0f;
    float lo = dtype == LUCIE_DT_Q8 ? -127.0f : -8.0f, hi = dtype == LUCIE_DT_Q8 ? 127.0f : 7.0f;
    int i, zero = quant_zero(dtype);
    for (i = 0; i < QUANT_GROUP; i++) u[i] = (unsigned char)(round_to_int(clamp_float(v[i] * inv, lo, hi)) + zero);
}

/* Squared error of codes u at scale h (8 partial sums, so the loop vectorises). */
static float quant_error(const float *v, const unsigned char *u, uint16_t h) {
    float d = half_to_float(h), partial[8] = {0}, err = 0.0f;
    int i, j;
    for (i = 0; i < QUANT_GROUP; i += 8)
        for (j = 0; j < 8; j++) {
            float e = v[i + j] - (float)(u[i + j] - Q4_ZERO) * d;
            partial[j] += e * e;
        }
    for (j = 0; j < 8; j++) err += partial[j];
    return err;
}

/* The f16 scale minimising the squared error of codes u: sum(q v) / sum(q q). */
static uint16_t quant_refit(const float *v, const unsigned char *u, uint16_t h) {
    float num8[8] = {0}, den8[8] = {0}, num = 0.0f, den = 0.0f;
    int i, j;
    for (i = 0; i < QUANT_GROUP; i += 8)
        for (j = 0; j < 8; j++) {
            float q = (float)(u[i + j] - Q4_ZERO);
            num8[j] += q * v[i + j];
            den8[j] += q * q;
        }
    for (j = 0; j < 8; j++) {
        num += num8[j];
        den += den8[j];
    }
    return den > 0.0f ? float_to_half(num / den) : h;
}

/* Codes and f16 scale of one group of 32 values (zero-padded). q8 simply
 * maps max|v| to 127. q4, with only 16 levels, also tries scales that put
 * the extreme value on other levels, the least-squares scale of each
 * candidate's codes, and the codes of that scale, and keeps whichever
 * reconstructs the group best. */
static uint16_t quantize_group(int dtype, const float *v, unsigned char *u) {
    float extreme = 0.0f, best_err;
    unsigned char trial[QUANT_GROUP], again[QUANT_GROUP];
    uint16_t best;
    int i, c;
    for (i = 0; i < QUANT_GROUP; i++)
        if (fabsf(v[i]) > fabsf(extreme)) extreme = v[i];
    if (dtype == LUCIE_DT_Q8) {
        best = float_to_half(fabsf(extreme) / 127.0f);
        quant_codes(dtype, v, best, u);
        return best;
    }
    best = float_to_half(extreme / -8.0f);
    quant_codes(dtype, v, best, u);
    best_err = quant_error(v, u, best);
    for (c = 0; c < 8 && extreme != 0.0f; c++) {
        /* extreme on level -8 (refit only), -7.5, -7, -6.5, or 7, 7.5, 8, 8.5 */
        float divisor = c < 4 ? -8.0f + 0.5f * (float)c : 7.0f + 0.5f * (float)(c - 4), err;
        uint16_t h = float_to_half(extreme / divisor), refit;
        quant_codes(dtype, v, h, trial);
        if (c > 0 && (err = quant_error(v, trial, h)) < best_err) {
            best_err = err;
            best = h;
            memcpy(u, trial, QUANT_GROUP);
        }
        refit = quant_refit(v, trial, h);
        if ((err = quant_error(v, trial, refit)) < best_err) {
            best_err = err;
            best = refit;
            memcpy(u, trial, QUANT_GROUP);
        }
        quant_codes(dtype, v, refit, again);
        if ((err = quant_error(v, again, refit)) < best_err) {
            best_err = err;
            best = refit;
            memcpy(u, again, QUANT_GROUP);
        }
    }
    return best;
}

/* Quantizes `rows` rows of src (row-major f32, `cols` wide) into dst, which
 * receives tensor_bytes(dtype, rows, cols) bytes. A tensor may be converted in
 * pieces of a multiple of 16 rows, concatenating the outputs. Returns 0 for
 * a dtype or group size this code cannot write. */
static int quantize_rows(int dtype, const float *src, void *dst, size_t rows, int cols, int group_size) {
    int ng = quant_groups(cols);
    size_t n_blocks = (rows + QUANT_ROWS - 1) / QUANT_ROWS, b;
    if ((dtype != LUCIE_DT_Q8 && dtype != LUCIE_DT_Q4) || group_size != QUANT_GROUP || cols <= 0) return 0;
    for (b = 0; b < n_blocks; b++) {
        unsigned char *block = (unsigned char *)dst + b * quant_block_bytes(dtype, ng);
        unsigned char *codes = block + (size_t)ng * QUANT_ROWS * 2;
        int r, g, i;
        for (r = 0; r < QUANT_ROWS; r++) {
            size_t row = b * QUANT_ROWS + (size_t)r;
            for (g = 0; g < ng; g++) {
                float v[QUANT_GROUP];
                unsigned char u[QUANT_GROUP], *gc = codes + (size_t)g * quant_codes_per_group(dtype);
                uint16_t h;
                for (i = 0; i < QUANT_GROUP; i++) {
                    int col = g * QUANT_GROUP + i;
                    v[i] = row < rows && col < cols ? src[row * (size_t)cols + col] : 0.0f;
                }
                h = quantize_group(dtype, v, u);
                block[((size_t)g * QUANT_ROWS + r) * 2] = (unsigned char)(h & 0xff);
                block[((size_t)g * QUANT_ROWS + r) * 2 + 1] = (unsigned char)(h >> 8);
                for (i = 0; i < QUANT_GROUP; i++) {
                    if (dtype == LUCIE_DT_Q8)
                        gc[(i / 4) * 64 + r * 4 + i % 4] = u[i];
                    else if (i < 16)
                        gc[(i / 4) * 64 + r * 4 + i % 4] = (unsigned char)(u[i] | u[i + 16] << 4);
                }
            }
        }
    }
    return 1;
}

/* ---- lucie_quantize_file: an f32/bf16 model file -> a q8/q4 one ---- */

/* Defined with the loader, below. */
static int read_entries(const file_view *f, uint32_t n_entries, const lucie_config *c, file_entry **out, char *err,
                        size_t err_size);

/* The dtype a tensor gets in a file quantized to `dtype`. The seven matrices
 * of every layer take it. The embedding table and the lm_head are kept at
 * 8 bits: in q4 files that cost 266 MB (7%) at the Lucie-7B shape, reads 3.7%
 * more bytes per token (the embedding is only gathered), and on stories260K
 * it cut the KL divergence against f32 by a fifth. Norms stay f32. */
static int quant_target_dtype(const file_entry *e, int dtype) {
    size_t n = strlen(e->name);
    if (e->dtype != LUCIE_DT_F32 && e->dtype != LUCIE_DT_BF16) return e->dtype;
    if (strcmp(e->name, "model.embed_tokens.weight") == 0 || strcmp(e->name, "lm_head.weight") == 0)
        return LUCIE_DT_Q8;
    if (n > 12 && strcmp(e->name + n - 12, "_proj.weight") == 0) return dtype;
    return e->dtype;
}

static void quant_put_u32(unsigned char *p, uint32_t v) {
    int i;
    for (i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void quant_put_u64(unsigned char *p, uint64_t v) {
    int i;
    for (i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static int quant_write(FILE *f, const void *data, size_t n, const char *path, char *err, size_t err_size) {
    if (n && fwrite(data, 1, n, f) != n) {
        set_error(err, err_size, "write error on '%s': %s", path, strerror(errno));
        return LUCIE_EIO;
    }
    return LUCIE_OK;
}

#define QUANT_CHUNK_ELEMENTS ((size_t)1 << 22) /* rows converted at once: ~16 MB of f32 */

/* Quantizes one tensor a chunk of rows at a time (bounded memory), the
 * 16-row blocks of a chunk in parallel. */
static int quant_convert_tensor(FILE *f, const char *tmp, const unsigned char *src, const file_entry *e, int dtype,
                                float *buf, unsigned char *qbuf, size_t chunk_rows, uint64_t *done, uint64_t total,
                                void (*progress)(const char *, double, void *), void *user, char *err,
                                size_t err_size) {
    size_t cols = e->cols, r0, block_out = quant_block_bytes(dtype, quant_groups((int)cols));
    for (r0 = 0; r0 < e->rows; r0 += chunk_rows) {
        size_t n = e->rows - r0 < chunk_rows ? e->rows - r0 : chunk_rows, i, bytes;
        long b, n_blocks = (long)((n + QUANT_ROWS - 1) / QUANT_ROWS);
        const unsigned char *p = src + r0 * cols * (e->dtype == LUCIE_DT_F32 ? 4 : 2);
        int rc;
        for (i = 0; i < n * cols; i++) {
            float v = e->dtype == LUCIE_DT_F32 ? read_f32(p + 4 * i) : bf16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
            if (!(fabsf(v) <= 65504.0f)) {
                set_error(err, err_size, "tensor '%s' holds %s value %g; cannot quantize it", e->name,
                          v == v ? "a huge" : "a NaN", (double)v);
                return LUCIE_EINVAL;
            }
            buf[i] = v;
        }
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
        for (b = 0; b < n_blocks; b++) {
            size_t rows = n - (size_t)b * QUANT_ROWS < QUANT_ROWS ? n - (size_t)b * QUANT_ROWS : QUANT_ROWS;
            quantize_rows(dtype, buf + (size_t)b * QUANT_ROWS * cols, qbuf + (size_t)b * block_out, rows, (int)cols,
                          QUANT_GROUP);
        }
        bytes = (size_t)n_blocks * block_out;
        if ((rc = quant_write(f, qbuf, bytes, tmp, err, err_size)) != LUCIE_OK) return rc;
        *done += n * cols * (e->dtype == LUCIE_DT_F32 ? 4 : 2);
        if (progress) progress(e->name, (double)*done / (double)total, user);
    }
    return LUCIE_OK;
}

int lucie_quantize_file(const char *in_path, const char *out_path, int dtype,
                        void (*progress)(const char *tensor, double fraction, void *user), void *user, char *err,
                        size_t err_size) {
    file_view in;
    lucie_config config;
    file_entry *entries = NULL;
    uint32_t n_entries = 0, i, *order = NULL;
    uint64_t *offsets = NULL, *sizes = NULL, pos, total = 0, done = 0;
    unsigned char header[HEADER_SIZE], entry[ENTRY_SIZE], zeros[SECTION_ALIGN] = {0}, *qbuf = NULL;
    float *buf = NULL;
    size_t widest = 1, chunk_rows, tmp_len;
    char *tmp = NULL;
    FILE *f = NULL;
    int rc;
    if (!in_path || !out_path || (dtype != LUCIE_DT_Q8 && dtype != LUCIE_DT_Q4)) {
        set_error(err, err_size, "lucie_quantize_file: need two paths and dtype q8 (%d) or q4 (%d)", LUCIE_DT_Q8,
                  LUCIE_DT_Q4);
        return LUCIE_EINVAL;
    }
    if (!host_is_little_endian()) {
        set_error(err, err_size, "big-endian hosts are not supported (the model file is little-endian)");
        return LUCIE_EFORMAT;
    }
    if ((rc = map_file(in_path, LUCIE_LOAD_MMAP, &in, err, err_size)) != LUCIE_OK) return rc;
    rc = parse_header(in.data, in.size, &config, &n_entries, err, err_size);
    if (rc == LUCIE_OK) rc = read_entries(&in, n_entries, &config, &entries, err, err_size);
    if (rc != LUCIE_OK) goto done;
    order = (uint32_t *)malloc(n_entries * sizeof *order + 1);
    offsets = (uint64_t *)malloc(n_entries * sizeof *offsets + 1);
    sizes = (uint64_t *)malloc(n_entries * sizeof *sizes + 1);
    tmp_len = strlen(out_path) + 5;
    tmp = (char *)malloc(tmp_len);
    if (!order || !offsets || !sizes || !tmp) goto oom;
    snprintf(tmp, tmp_len, "%s.tmp", out_path);

    /* New dtypes and sizes; sections keep their order in the file. */
    for (i = 0; i < n_entries; i++) {
        int target = quant_target_dtype(&entries[i], dtype);
        size_t bytes = (size_t)entries[i].size;
        uint32_t j = i;
        if (entries[i].dtype == LUCIE_DT_Q8 || entries[i].dtype == LUCIE_DT_Q4) {
            set_error(err, err_size, "'%s' is already quantized (tensor '%s')", in_path, entries[i].name);
            rc = LUCIE_EINVAL;
            goto done;
        }
        if (target != entries[i].dtype) {
            tensor_bytes(target, entries[i].rows, entries[i].cols, QUANT_GROUP, &bytes); /* fits: checked at load */
            if (entries[i].cols > widest) widest = entries[i].cols;
            total += entries[i].size;
        }
        sizes[i] = bytes;
        while (j > 0 && entries[order[j - 1]].offset > entries[i].offset) { /* insertion sort by offset */
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    pos = HEADER_SIZE + (uint64_t)n_entries * ENTRY_SIZE;
    for (i = 0; i < n_entries; i++) {
        pos = (pos + SECTION_ALIGN - 1) / SECTION_ALIGN * SECTION_ALIGN;
        offsets[order[i]] = pos;
        pos += sizes[order[i]];
    }

    chunk_rows = QUANT_CHUNK_ELEMENTS / widest / QUANT_ROWS * QUANT_ROWS;
    if (chunk_rows < QUANT_ROWS) chunk_rows = QUANT_ROWS;
    buf = (float *)malloc(chunk_rows * widest * sizeof *buf);
    qbuf = (unsigned char *)malloc(chunk_rows / QUANT_ROWS * quant_block_bytes(LUCIE_DT_Q8, quant_groups((int)widest)));
    if (!buf || !qbuf) goto oom;

    f = fopen(tmp, "wb");
    if (!f) {
        set_error(err, err_size, "cannot create '%s': %s", tmp, strerror(errno));
        rc = LUCIE_EIO;
        goto done;
    }
    memcpy(header, in.data, HEADER_SIZE);
    quant_put_u64(header + 16, pos);
    quant_put_u32(header + 28, (uint32_t)dtype);
    quant_put_u32(header + 144, QUANT_GROUP);
    rc = quant_write(f, header, HEADER_SIZE, tmp, err, err_size);
    for (i = 0; i < n_entries && rc == LUCIE_OK; i++) {
        memcpy(entry, in.data + HEADER_SIZE + (size_t)i * ENTRY_SIZE, ENTRY_SIZE);
        quant_put_u32(entry + 96, (uint32_t)quant_target_dtype(&entries[i], dtype));
        quant_put_u64(entry + 112, offsets[i]);
        quant_put_u64(entry + 120, sizes[i]);
        rc = quant_write(f, entry, ENTRY_SIZE, tmp, err, err_size);
    }
    pos = HEADER_SIZE + (uint64_t)n_entries * ENTRY_SIZE;
    for (i = 0; i < n_entries && rc == LUCIE_OK; i++) {
        const file_entry *e = &entries[order[i]];
        int target = quant_target_dtype(e, dtype);
        rc = quant_write(f, zeros, (size_t)(offsets[order[i]] - pos), tmp, err, err_size);
        if (rc != LUCIE_OK) break;
        if (target == e->dtype)
            rc = quant_write(f, in.data + e->offset, (size_t)e->size, tmp, err, err_size);
        else
            rc = quant_convert_tensor(f, tmp, in.data + e->offset, e, target, buf, qbuf, chunk_rows, &done, total,
                                      progress, user, err, err_size);
        pos = offsets[order[i]] + sizes[order[i]];
    }
    if (rc == LUCIE_OK && fflush(f) != 0) {
        set_error(err, err_size, "write error on '%s': %s", tmp, strerror(errno));
        rc = LUCIE_EIO;
    }
    if (fclose(f) != 0 && rc == LUCIE_OK) {
        set_error(err, err_size, "write error on '%s': %s", tmp, strerror(errno));
        rc = LUCIE_EIO;
    }
    f = NULL;
#ifdef _WIN32
    if (rc == LUCIE_OK) remove(out_path); /* rename does not replace there */
#endif
    if (rc == LUCIE_OK && rename(tmp, out_path) != 0) {
        set_error(err, err_size, "cannot rename '%s' to '%s': %s", tmp, out_path, strerror(errno));
        rc = LUCIE_EIO;
    }
    if (rc != LUCIE_OK) remove(tmp);
    goto done;
oom:
    set_error(err, err_size, "out of memory");
    rc = LUCIE_ENOMEM;
done:
    if (f) {
        fclose(f);
        remove(tmp);
    }
    free(buf);
    free(qbuf);
    free(tmp);
    free(order);
    free(offsets);
    free(sizes);
    free(entries);
    unmap_file(&in);
    return rc;
}
