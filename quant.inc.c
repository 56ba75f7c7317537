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
 * per group. The portable C below is the definition; the AVX-512 VNNI, AVX2
 * and NEON dot-product versions (compilers do not find these instructions
 * for the per-row form by themselves) compute the same int32 sums and then
 * the very same float operations in the same order, so every path gives
 * bit-identical results (test/test_kernels.c, run for each path).
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
#elif defined(__aarch64__) && defined(__ARM_NEON) && defined(__ARM_FEATURE_DOTPROD)
#define QUANT_SIMD "neon-dotprod"
#define QUANT_NEON 1
#endif
#if defined(QUANT_AVX512) || defined(QUANT_AVX2)
#include <immintrin.h>
#elif defined(QUANT_NEON)
#include <arm_neon.h>
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

/* v limited to [lo, hi]; NaN becomes lo, so that converting it is defined. */
static float clamp_float(float v, float lo, float hi) { return v > lo ? (v < hi ? v : hi) : lo; }

/* The nearest integer, ties to even (lrintf in the default rounding mode), for
 * |v| < 2^22 (callers clamp first), without a library call so that loops over
 * it vectorise: adding and subtracting 1.5 * 2^23 leaves no bits below the
 * units. Only when floats are evaluated as floats (not on x87) and without
 * -ffast-math, which would fold the two additions away. */
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
    int ng = quant_groups(cols), g, i, j;
    signed char *codes = (signed char *)dst;
    float *scales = (float *)(dst + (size_t)ng * QUANT_GROUP);
    int32_t *sums = (int32_t *)(dst + (size_t)ng * (QUANT_GROUP + 4));
    for (g = 0; g < ng; g++) {
        float v[QUANT_GROUP], lane_max[8] = {0}, amax = 0.0f, inv;
        int32_t sum = 0;
        /* fixed-size loops with 8 partial maxima: the compiler vectorises them */
        for (i = 0; i < QUANT_GROUP; i++) v[i] = g * QUANT_GROUP + i < cols ? x[g * QUANT_GROUP + i] : 0.0f;
        for (i = 0; i < QUANT_GROUP; i += 8)
            for (j = 0; j < 8; j++) lane_max[j] = fabsf(v[i + j]) > lane_max[j] ? fabsf(v[i + j]) : lane_max[j];
        for (j = 0; j < 8; j++) amax = lane_max[j] > amax ? lane_max[j] : amax;
        inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        for (i = 0; i < QUANT_GROUP; i++) {
            int q = round_to_int(clamp_float(v[i] * inv, -127.0f, 127.0f));
            codes[g * QUANT_GROUP + i] = (signed char)q;
            sum += q;
        }
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
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA) || defined(FP_FAST_FMAF)
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

/* ---- the same arithmetic with AVX-512 VNNI, AVX2 or NEON intrinsics ---- */

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

#ifdef QUANT_NEON
/* SDOT multiplies signed bytes: q8 codes become code - 128 (flip the top
 * bit) and skip the zero-point correction (zero = 0); q4 codes (0..15) are
 * already valid signed bytes. Lane i of a vector holds rows 4i..4i+3 of one
 * quad of a quarter block, exactly SDOT's 4-bytes-per-lane layout. */
static void quant_block_simd(int dtype, const unsigned char *block, int ng, const unsigned char *xq, size_t stride,
                             int nt, float out[QUANT_TOKENS][QUANT_ROWS]) {
    const unsigned char *codes = block + (size_t)ng * QUANT_ROWS * 2;
    size_t group_bytes = quant_codes_per_group(dtype);
    int zero = dtype == LUCIE_DT_Q8 ? 0 : Q4_ZERO, g, t, k, i;
    float32x4_t acc[QUANT_TOKENS][4];
    for (t = 0; t < QUANT_TOKENS; t++)
        for (i = 0; i < 4; i++) acc[t][i] = vdupq_n_f32(0.0f);
    for (g = 0; g < ng; g++) {
        const unsigned char *gc = codes + g * group_bytes;
        int8x16_t w[8][4];
        float32x4_t dw[4];
        for (i = 0; i < 4; i++)
            dw[i] = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)(block + ((size_t)g * QUANT_ROWS + 4 * i) * 2))));
        if (dtype == LUCIE_DT_Q8) {
            for (k = 0; k < 8; k++)
                for (i = 0; i < 4; i++)
                    w[k][i] = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(gc + k * 64 + 16 * i), vdupq_n_u8(0x80)));
        } else {
            for (k = 0; k < 4; k++)
                for (i = 0; i < 4; i++) {
                    uint8x16_t b = vld1q_u8(gc + k * 64 + 16 * i);
                    w[k][i] = vreinterpretq_s8_u8(vandq_u8(b, vdupq_n_u8(15)));
                    w[k + 4][i] = vreinterpretq_s8_u8(vshrq_n_u8(b, 4));
                }
        }
        for (t = 0; t < nt; t++) {
            const unsigned char *x = xq + t * stride, *xc = x + (size_t)g * QUANT_GROUP;
            float dx = quant_load_f32(x + (size_t)ng * QUANT_GROUP + g * 4);
            int32x4_t correction = vdupq_n_s32(zero * quant_load_i32(x + (size_t)ng * (QUANT_GROUP + 4) + g * 4));
            for (i = 0; i < 4; i++) {
                int32x4_t dot = vdupq_n_s32(0);
                for (k = 0; k < 8; k++)
                    dot = vdotq_s32(dot, w[k][i], vreinterpretq_s8_s32(vdupq_n_s32(quant_load_i32(xc + 4 * k))));
                acc[t][i] = vfmaq_f32(acc[t][i], vcvtq_f32_s32(vsubq_s32(dot, correction)), vmulq_n_f32(dw[i], dx));
            }
        }
    }
    for (t = 0; t < nt; t++)
        for (i = 0; i < 4; i++) vst1q_f32(out[t] + 4 * i, acc[t][i]);
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

/* Squared error of q4 codes u at scale h (8 partial sums: the loop vectorises). */
static float q4_error(const float *v, const unsigned char *u, uint16_t h) {
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

/* The f16 scale minimising the squared error of q4 codes u: sum(q v) / sum(q q). */
static uint16_t q4_refit(const float *v, const unsigned char *u, uint16_t h) {
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
    best_err = q4_error(v, u, best);
    for (c = 0; c < 8 && extreme != 0.0f; c++) {
        /* extreme on level -8 (refit only), -7.5, -7, -6.5, or 7, 7.5, 8, 8.5 */
        float divisor = c < 4 ? -8.0f + 0.5f * (float)c : 7.0f + 0.5f * (float)(c - 4), err;
        uint16_t h = float_to_half(extreme / divisor), refit;
        quant_codes(dtype, v, h, trial);
        if (c > 0 && (err = q4_error(v, trial, h)) < best_err) {
            best_err = err;
            best = h;
            memcpy(u, trial, QUANT_GROUP);
        }
        refit = q4_refit(v, trial, h);
        if ((err = q4_error(v, trial, refit)) < best_err) {
            best_err = err;
            best = refit;
            memcpy(u, trial, QUANT_GROUP);
        }
        quant_codes(dtype, v, refit, again);
        if ((err = q4_error(v, again, refit)) < best_err) {
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

#define QUANT_CHUNK_ELEMENTS ((size_t)1 << 22) /* rows converted at once: ~16 MB of f32 */

/* Drops input pages already converted from this process's mapping (they stay
 * in the page cache), so converting a 15 GB file keeps a small resident set. */
static void quant_release(const file_view *in, const unsigned char *p, size_t n) {
#if !defined(_WIN32) && defined(MADV_DONTNEED)
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t begin = (uintptr_t)p, end = (uintptr_t)p + n;
    if (!in->is_mapped || page <= 0) return;
    begin = (begin + (uintptr_t)page - 1) / (uintptr_t)page * (uintptr_t)page;
    end = end / (uintptr_t)page * (uintptr_t)page;
    if (end > begin) madvise((void *)begin, end - begin, MADV_DONTNEED);
#else
    (void)in;
    (void)p;
    (void)n;
#endif
}

/* One conversion: the input, the plan for the output, the work buffers. */
typedef struct {
    file_view in;
    file_entry *entries; /* the input's entry table, in table order */
    uint32_t n_entries;
    uint32_t *order;     /* entry indices by increasing offset: sections keep their order */
    int dtype;           /* LUCIE_DT_Q8 or LUCIE_DT_Q4 */
    int *targets;        /* each entry's dtype in the output */
    uint64_t *offsets, *sizes, file_size;
    uint64_t total, done; /* input bytes to convert, converted so far (progress) */
    float *buf;          /* a chunk of rows as f32 */
    unsigned char *qbuf; /* the same chunk quantized */
    size_t chunk_rows;
    FILE *out;
    char *tmp_path;
    void (*progress)(const char *tensor, double fraction, void *user);
    void *user;
    char *err;
    size_t err_size;
} quant_job;

static int quant_write(quant_job *j, const void *data, size_t n) {
    if (n && fwrite(data, 1, n, j->out) != n) {
        set_error(j->err, j->err_size, "write error on '%s': %s", j->tmp_path, strerror(errno));
        return LUCIE_EIO;
    }
    return LUCIE_OK;
}

/* Output dtypes, sizes and offsets, and the work buffers. */
static int quant_plan(quant_job *j) {
    uint32_t i, k;
    uint64_t pos = HEADER_SIZE + (uint64_t)j->n_entries * ENTRY_SIZE;
    size_t widest = 1;
    for (i = 0; i < j->n_entries; i++) {
        const file_entry *e = &j->entries[i];
        size_t bytes = (size_t)e->size;
        if (e->dtype == LUCIE_DT_Q8 || e->dtype == LUCIE_DT_Q4) {
            set_error(j->err, j->err_size, "the input is already quantized (tensor '%s')", e->name);
            return LUCIE_EINVAL;
        }
        j->targets[i] = quant_target_dtype(e, j->dtype);
        if (j->targets[i] != e->dtype) {
            if (!tensor_bytes(j->targets[i], e->rows, e->cols, QUANT_GROUP, &bytes)) {
                set_error(j->err, j->err_size, "tensor '%s' is too large to quantize here", e->name);
                return LUCIE_ENOMEM;
            }
            if (e->cols > widest) widest = e->cols;
            j->total += e->size;
        }
        j->sizes[i] = bytes;
        for (k = i; k > 0 && j->entries[j->order[k - 1]].offset > e->offset; k--) j->order[k] = j->order[k - 1];
        j->order[k] = i;
    }
    for (i = 0; i < j->n_entries; i++) {
        pos = (pos + SECTION_ALIGN - 1) / SECTION_ALIGN * SECTION_ALIGN;
        j->offsets[j->order[i]] = pos;
        pos += j->sizes[j->order[i]];
    }
    j->file_size = pos;
    j->chunk_rows = QUANT_CHUNK_ELEMENTS / widest / QUANT_ROWS * QUANT_ROWS;
    if (j->chunk_rows < QUANT_ROWS) j->chunk_rows = QUANT_ROWS;
    j->buf = (float *)malloc(j->chunk_rows * widest * sizeof *j->buf);
    j->qbuf = (unsigned char *)malloc(j->chunk_rows / QUANT_ROWS *
                                      quant_block_bytes(LUCIE_DT_Q8, quant_groups((int)widest)));
    if (!j->buf || !j->qbuf) {
        set_error(j->err, j->err_size, "out of memory");
        return LUCIE_ENOMEM;
    }
    return LUCIE_OK;
}

/* The input's header and entry table with the new weight type, group size,
 * dtypes, sizes and offsets. */
static int quant_write_tables(quant_job *j) {
    unsigned char header[HEADER_SIZE], entry[ENTRY_SIZE];
    uint32_t i;
    int rc;
    memcpy(header, j->in.data, HEADER_SIZE);
    quant_put_u64(header + 16, j->file_size);
    quant_put_u32(header + 28, (uint32_t)j->dtype);
    quant_put_u32(header + 144, QUANT_GROUP);
    rc = quant_write(j, header, HEADER_SIZE);
    for (i = 0; i < j->n_entries && rc == LUCIE_OK; i++) {
        memcpy(entry, j->in.data + HEADER_SIZE + (size_t)i * ENTRY_SIZE, ENTRY_SIZE);
        quant_put_u32(entry + 96, (uint32_t)j->targets[i]);
        quant_put_u64(entry + 112, j->offsets[i]);
        quant_put_u64(entry + 120, j->sizes[i]);
        rc = quant_write(j, entry, ENTRY_SIZE);
    }
    return rc;
}

/* Quantizes one tensor a chunk of rows at a time (bounded memory), the
 * 16-row blocks of a chunk in parallel. */
static int quant_convert_tensor(quant_job *j, const file_entry *e, int dtype) {
    size_t cols = e->cols, element = e->dtype == LUCIE_DT_F32 ? 4 : 2, r0;
    size_t block_out = quant_block_bytes(dtype, quant_groups((int)cols));
    for (r0 = 0; r0 < e->rows; r0 += j->chunk_rows) {
        size_t n = e->rows - r0 < j->chunk_rows ? e->rows - r0 : j->chunk_rows, i;
        long b, n_blocks = (long)((n + QUANT_ROWS - 1) / QUANT_ROWS);
        const unsigned char *p = j->in.data + e->offset + r0 * cols * element;
        int rc;
        for (i = 0; i < n * cols; i++) {
            float v = element == 4 ? read_f32(p + 4 * i) : bf16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
            if (!(fabsf(v) <= 65504.0f)) {
                set_error(j->err, j->err_size, "tensor '%s' holds %s value %g; cannot quantize it", e->name,
                          v == v ? "a huge" : "a NaN", (double)v);
                return LUCIE_EINVAL;
            }
            j->buf[i] = v;
        }
        quant_release(&j->in, p, n * cols * element);
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
        for (b = 0; b < n_blocks; b++) {
            size_t rows = n - (size_t)b * QUANT_ROWS < QUANT_ROWS ? n - (size_t)b * QUANT_ROWS : QUANT_ROWS;
            quantize_rows(dtype, j->buf + (size_t)b * QUANT_ROWS * cols, j->qbuf + (size_t)b * block_out, rows,
                          (int)cols, QUANT_GROUP);
        }
        if ((rc = quant_write(j, j->qbuf, (size_t)n_blocks * block_out)) != LUCIE_OK) return rc;
        j->done += n * cols * element;
        if (j->progress) j->progress(e->name, (double)j->done / (double)j->total, j->user);
    }
    return LUCIE_OK;
}

/* Every section in file order: converted, or copied as it is. */
static int quant_write_sections(quant_job *j) {
    static const unsigned char zeros[SECTION_ALIGN] = {0};
    uint64_t pos = HEADER_SIZE + (uint64_t)j->n_entries * ENTRY_SIZE;
    uint32_t i;
    int rc = LUCIE_OK;
    for (i = 0; i < j->n_entries && rc == LUCIE_OK; i++) {
        uint32_t k = j->order[i];
        const file_entry *e = &j->entries[k];
        if ((rc = quant_write(j, zeros, (size_t)(j->offsets[k] - pos))) != LUCIE_OK) break;
        if (j->targets[k] != e->dtype) {
            rc = quant_convert_tensor(j, e, j->targets[k]);
        } else {
            rc = quant_write(j, j->in.data + e->offset, (size_t)e->size);
            quant_release(&j->in, j->in.data + e->offset, (size_t)e->size);
        }
        pos = j->offsets[k] + j->sizes[k];
    }
    return rc;
}

int lucie_quantize_file(const char *in_path, const char *out_path, int dtype,
                        void (*progress)(const char *tensor, double fraction, void *user), void *user, char *err,
                        size_t err_size) {
    quant_job j;
    size_t tmp_len;
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
    memset(&j, 0, sizeof j);
    j.dtype = dtype;
    j.progress = progress;
    j.user = user;
    j.err = err;
    j.err_size = err_size;
    if ((rc = map_file(in_path, LUCIE_LOAD_MMAP, &j.in, err, err_size)) != LUCIE_OK) return rc;
    {
        lucie_config config;
        rc = parse_header(j.in.data, j.in.size, &config, &j.n_entries, err, err_size);
        if (rc == LUCIE_OK) rc = read_entries(&j.in, j.n_entries, &config, &j.entries, err, err_size);
    }
    if (rc == LUCIE_OK) {
        j.order = (uint32_t *)malloc(j.n_entries * sizeof *j.order + 1);
        j.targets = (int *)malloc(j.n_entries * sizeof *j.targets + 1);
        j.offsets = (uint64_t *)malloc(j.n_entries * sizeof *j.offsets + 1);
        j.sizes = (uint64_t *)malloc(j.n_entries * sizeof *j.sizes + 1);
        tmp_len = strlen(out_path) + 5;
        j.tmp_path = (char *)malloc(tmp_len);
        if (!j.order || !j.targets || !j.offsets || !j.sizes || !j.tmp_path) {
            set_error(err, err_size, "out of memory");
            rc = LUCIE_ENOMEM;
        } else {
            snprintf(j.tmp_path, tmp_len, "%s.tmp", out_path);
            rc = quant_plan(&j);
        }
    }
    if (rc == LUCIE_OK && (j.out = fopen(j.tmp_path, "wb")) == NULL) {
        set_error(err, err_size, "cannot create '%s': %s", j.tmp_path, strerror(errno));
        rc = LUCIE_EIO;
    }
    if (rc == LUCIE_OK) rc = quant_write_tables(&j);
    if (rc == LUCIE_OK) rc = quant_write_sections(&j);
    if (j.out) {
        int failed = fflush(j.out) != 0;
        failed |= fclose(j.out) != 0;
        if (failed && rc == LUCIE_OK) {
            set_error(err, err_size, "write error on '%s': %s", j.tmp_path, strerror(errno));
            rc = LUCIE_EIO;
        }
#ifdef _WIN32
        if (rc == LUCIE_OK) remove(out_path); /* rename does not replace there */
#endif
        if (rc == LUCIE_OK && rename(j.tmp_path, out_path) != 0) {
            set_error(err, err_size, "cannot rename '%s' to '%s': %s", j.tmp_path, out_path, strerror(errno));
            rc = LUCIE_EIO;
        }
        if (rc != LUCIE_OK) remove(j.tmp_path);
    }
    free(j.buf);
    free(j.qbuf);
    free(j.tmp_path);
    free(j.order);
    free(j.targets);
    free(j.offsets);
    free(j.sizes);
    free(j.entries);
    unmap_file(&j.in);
    return rc;
}
