/* thread_thresholds.c - where a second thread starts to pay, per kernel.
 *
 * Times each kernel alone with 1 and with 2 threads (the size thresholds of
 * threads_for switched off, so the split is forced) on growing sizes, the
 * best of many repetitions, and prints the ratio. The crossover (ratio < 1)
 * is what the thresholds in lucie.c's section 4 are set from. A measurement,
 * not a test: run it on an otherwise idle machine.
 *
 *   make measure && ./test/thread_thresholds
 */
#include "../lucie.c"

static double best_seconds(void (*fn)(void *), void *arg, int repeats) {
    double best = 1e30;
    int i;
    fn(arg); /* warm: caches, thread pool */
    for (i = 0; i < repeats; i++) {
        double t0 = lucie_time_seconds(), dt;
        fn(arg);
        dt = lucie_time_seconds() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

typedef struct {
    kernel_ctx ctx;
    const weight_kernels *k;
    float *out, *x;
    void *xq, *w;
    int n, rows, cols;
} matmul_job;

static void run_matmul(void *arg) {
    matmul_job *j = (matmul_job *)arg;
    j->k->matmul(&j->ctx, j->out, j->x, j->xq, j->w, j->n, j->rows, j->cols, 32);
}

static void run_prepare(void *arg) {
    matmul_job *j = (matmul_job *)arg;
    quant_prepare(&j->ctx, j->x, j->n, j->cols, 32, j->xq);
}

static void *xcalloc(size_t n) {
    void *p = calloc(n ? n : 1, 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

int main(void) {
    static const int dims[] = {64, 128, 256, 512, 1024, 2048};
    static const int dtypes[] = {LUCIE_DT_F32, LUCIE_DT_Q8};
    size_t d, di;
    int n;
    worker_pool *pool = pool_new(2, 1); /* placed as a session's threads are */
    if (!pool || pool_threads(pool) < 2) {
        fprintf(stderr, "could not start a second thread\n");
        return 1;
    }
    pool_pin_caller(pool);
    printf("kernel  n  rows x cols   MACs/thread  1 thread us  2 threads us  ratio\n");
    for (di = 0; di < 2; di++)
        for (n = 1; n <= 16; n *= 16)
            for (d = 0; d < sizeof dims / sizeof dims[0]; d++) {
                matmul_job j;
                size_t bytes = 0, i;
                double one, two;
                float *wf;
                j.rows = dims[d];
                j.cols = dims[d];
                j.n = n;
                j.k = kernels_for(dtypes[di]);
                j.ctx.pool = pool;
        j.ctx.split_any_size = 1;
                j.out = (float *)xcalloc((size_t)n * j.rows * sizeof(float));
                j.x = (float *)xcalloc((size_t)n * j.cols * sizeof(float));
                wf = (float *)xcalloc((size_t)j.rows * j.cols * sizeof(float));
                for (i = 0; i < (size_t)n * j.cols; i++) j.x[i] = (float)((i * 7919) % 101) / 101.0f - 0.5f;
                for (i = 0; i < (size_t)j.rows * j.cols; i++) wf[i] = (float)((i * 104729) % 97) / 97.0f - 0.5f;
                tensor_bytes(dtypes[di], (size_t)j.rows, (size_t)j.cols, 32, &bytes);
                j.w = xcalloc(bytes);
                if (dtypes[di] == LUCIE_DT_F32) memcpy(j.w, wf, bytes);
                else quantize_rows(dtypes[di], wf, j.w, (size_t)j.rows, j.cols, 32);
                j.xq = xcalloc(quant_input_bytes(n, j.cols, 32) + 64);
                j.ctx.n_threads = 1;
                if (j.k->prepare) quant_prepare(&j.ctx, j.x, n, j.cols, 32, j.xq);
                one = best_seconds(run_matmul, &j, 200);
                j.ctx.n_threads = 2;
                two = best_seconds(run_matmul, &j, 200);
                printf("%-6s %2d %5d x %-5d %11.0f %12.1f %13.1f %6.2f\n", dtypes[di] == LUCIE_DT_F32 ? "f32" : "q8",
                       n, j.rows, j.cols, (double)n * j.rows * j.cols / 2, one * 1e6, two * 1e6, two / one);
                free(j.out);
                free(j.x);
                free(wf);
                free(j.w);
                free(j.xq);
            }
    printf("\nelement-wise (activation quantization)\nelements/thread  1 thread us  2 threads us  ratio\n");
    for (n = 1024; n <= 262144; n *= 4) {
        matmul_job j;
        double one, two;
        size_t i;
        j.n = n / 1024;
        j.cols = 1024;
        j.ctx.pool = pool;
        j.ctx.split_any_size = 1;
        j.x = (float *)xcalloc((size_t)n * sizeof(float));
        for (i = 0; i < (size_t)n; i++) j.x[i] = (float)((i * 7919) % 101) / 101.0f - 0.5f;
        j.xq = xcalloc(quant_input_bytes(j.n, j.cols, 32) + 64);
        j.ctx.n_threads = 1;
        one = best_seconds(run_prepare, &j, 200);
        j.ctx.n_threads = 2;
        two = best_seconds(run_prepare, &j, 200);
        printf("%15d %12.1f %13.1f %6.2f\n", n / 2, one * 1e6, two * 1e6, two / one);
        free(j.x);
        free(j.xq);
    }
    pool_free(pool);
    return 0;
}
