/* f32 and bf16 weights: the kernels of the weight-type table for the two
 * float formats (part of section 4 of lucie.c). */

/* Dot products with DOT_LANES independent partial sums: the compiler maps
 * them onto SIMD registers without needing -ffast-math, and the summation
 * order is fixed, so every build gives the same result for the same input.
 * (The tail goes to its own scalar so the lanes can stay in registers.) */
#define DOT_LANES 32

static float dot_f32(const float *w, const float *x, int n) {
    float acc[DOT_LANES] = {0};
    float sum = 0.0f, tail = 0.0f;
    int i = 0, j;
    for (; i + DOT_LANES <= n; i += DOT_LANES)
        for (j = 0; j < DOT_LANES; j++) acc[j] += w[i + j] * x[i + j];
    for (; i < n; i++) tail += w[i] * x[i];
    for (j = 0; j < DOT_LANES; j++) sum += acc[j];
    return sum + tail;
}

static float dot_bf16(const uint16_t *w, const float *x, int n) {
    float acc[DOT_LANES] = {0};
    float sum = 0.0f, tail = 0.0f;
    int i = 0, j;
    for (; i + DOT_LANES <= n; i += DOT_LANES)
        for (j = 0; j < DOT_LANES; j++) {
            uint32_t bits = (uint32_t)w[i + j] << 16;
            float wf;
            memcpy(&wf, &bits, 4);
            acc[j] += wf * x[i + j];
        }
    for (; i < n; i++) tail += bf16_to_f32(w[i]) * x[i];
    for (j = 0; j < DOT_LANES; j++) sum += acc[j];
    return sum + tail;
}

static size_t no_input_bytes(int n, int cols, int group_size) {
    (void)n;
    (void)cols;
    (void)group_size;
    return 0;
}

/* Rows outer, tokens inner: a weight row is read from memory once and reused
 * from cache for every token of the batch. */
static void matmul_f32(const kernel_ctx *c, float *out, const float *x, const void *xq, const void *w, int n,
                       int rows, int cols, int group_size) {
    const float *wf = (const float *)w;
    int r;
    (void)xq;
    (void)group_size;
    (void)c;
#pragma omp parallel for schedule(static) num_threads(c->n_threads)
    for (r = 0; r < rows; r++) {
        const float *row = wf + (size_t)r * cols;
        int t;
        for (t = 0; t < n; t++) out[(size_t)t * rows + r] = dot_f32(row, x + (size_t)t * cols, cols);
    }
}

static void matmul_bf16(const kernel_ctx *c, float *out, const float *x, const void *xq, const void *w, int n,
                        int rows, int cols, int group_size) {
    const uint16_t *wb = (const uint16_t *)w;
    int r;
    (void)xq;
    (void)group_size;
    (void)c;
#pragma omp parallel for schedule(static) num_threads(c->n_threads)
    for (r = 0; r < rows; r++) {
        const uint16_t *row = wb + (size_t)r * cols;
        int t;
        for (t = 0; t < n; t++) out[(size_t)t * rows + r] = dot_bf16(row, x + (size_t)t * cols, cols);
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

