/* bench/attention.c: time of attention() alone on one Lucie-7B-shaped layer
 * (32 query heads, 8 KV heads, head_dim 128), for each KV cache type:
 * decoding one token and a 64-token prefill chunk, at several depths (tokens
 * already in the cache). Prints the best of several runs in microseconds per
 * token. Build it like lucie.c, e.g.
 *   cc -std=c99 -O3 -march=native -fopenmp bench/attention.c -o attention -lm && ./attention [threads]
 * The cache holds random values; attention's cost does not depend on them.
 *   ./attention THREADS DEPTH N TYPE [REPS]   one case only (N tokens at DEPTH,
 * TYPE f32/f16/q8): one call, for instruction counts (valgrind
 * --tool=callgrind ./attention 1 4096 1 f32), or the best of REPS calls after
 * as many unmeasured ones, printed in microseconds per token.
 *   ./attention --layers THREADS DEPTH TYPE [REPS]   one decoded token through
 * the attention of all 32 layers over a cache of DEPTH positions each (as
 * decoding reads it: from memory, where one layer's cache would stay in the
 * last-level cache between calls): the best of REPS (default 5) passes, in
 * milliseconds per token and GB/s of cache read. */
#include "../lucie.c"

/* n tokens of session s, alone in the batch. */
static void attention_alone(lucie_session *s, int layer, int n) {
    batch_segment seg;
    seg.session = s;
    seg.first = 0;
    seg.count = n;
    attention(s, &seg, 1, layer);
}

/* A random cache of s->context positions (the values do not change the
 * cost, but untouched memory would read as one shared zero page). */
static void fill_cache(lucie_session *s, uint64_t *state) {
    const lucie_config *c = &s->model->config;
    size_t bytes = (size_t)s->context * c->n_kv_heads * s->kv_row_bytes;
    float *row = (float *)malloc((size_t)c->head_dim * sizeof(float));
    int d, h, i;
    s->key_cache = (unsigned char *)aligned_alloc64(bytes);
    s->value_cache = (unsigned char *)aligned_alloc64(bytes);
    for (d = 0; d < s->context; d++)
        for (h = 0; h < c->n_kv_heads; h++) {
            size_t at = (size_t)d * s->kv_row_bytes;
            for (i = 0; i < c->head_dim; i++) row[i] = (float)((*state = *state * 6364136223846793005ull + 1) >> 40) / 16777216.0f - 0.5f;
            s->kv->store(cache_rows(s, s->key_cache, 0, h) + at, row, c->head_dim);
            s->kv->store(cache_rows(s, s->value_cache, 0, h) + at, row, c->head_dim);
        }
    free(row);
}

static double best_us_per_token(lucie_session *s, int depth, int n, int reps) {
    double best = 1e30;
    int r;
    for (r = 0; r < reps; r++) {
        double t0;
        s->pos = depth;
        t0 = lucie_time_seconds();
        attention_alone(s, 0, n);
        t0 = lucie_time_seconds() - t0;
        if (t0 < best) best = t0;
    }
    return best * 1e6 / n;
}

static float random_unit(uint64_t *state) {
    return (float)((*state = *state * 6364136223846793005ull + 1) >> 40) / 16777216.0f - 0.5f;
}

/* --layers: s holds the queries and scratch; the cache is made here. */
static int all_layers(lucie_session *s, int depth, const char *type, int reps, uint64_t *state) {
    lucie_config *c = (lucie_config *)&s->model->config;
    size_t rows, r, bytes;
    float row[128];
    double best = 1e30;
    int l, i, rep;
    c->n_layers = 32;
    s->context = depth + 1;
    s->kv = kv_type_for(strcmp(type, "q8") == 0 ? LUCIE_KV_Q8 : strcmp(type, "f16") == 0 ? LUCIE_KV_F16 : LUCIE_KV_F32);
    s->kv_row_bytes = kv_row_bytes(s->kv->type, c->head_dim);
    rows = (size_t)c->n_layers * c->n_kv_heads * s->context;
    bytes = rows * s->kv_row_bytes;
    s->key_cache = (unsigned char *)aligned_alloc64(bytes);
    s->value_cache = (unsigned char *)aligned_alloc64(bytes);
    if (!s->key_cache || !s->value_cache) {
        fprintf(stderr, "attention: no memory for a cache of %d positions\n", depth);
        return 1;
    }
    for (r = 0; r < rows; r++) {
        for (i = 0; i < c->head_dim; i++) row[i] = random_unit(state);
        s->kv->store(s->key_cache + r * s->kv_row_bytes, row, c->head_dim);
        s->kv->store(s->value_cache + r * s->kv_row_bytes, row, c->head_dim);
    }
    for (rep = 0; rep < reps; rep++) {
        double t0 = lucie_time_seconds();
        s->pos = depth;
        for (l = 0; l < c->n_layers; l++) attention_alone(s, l, 1);
        t0 = lucie_time_seconds() - t0;
        if (t0 < best) best = t0;
    }
    printf("kv %s depth %d, all %d layers, %d threads: %.2f ms per token, %.1f GB/s of cache (best of %d)\n",
           s->kv->name, depth, c->n_layers, s->n_threads, best * 1e3,
           2.0 * c->n_layers * c->n_kv_heads * depth * s->kv_row_bytes / best / 1e9, reps);
    return 0;
}

int main(int argc, char **argv) {
    static const int depths[] = {512, 4096, 16384};
    static const int kinds[] = {LUCIE_KV_F32, LUCIE_KV_F16, LUCIE_KV_Q8};
    lucie_model model;
    lucie_session s;
    lucie_config *c = &model.config;
    int layers = argc > 1 && strcmp(argv[1], "--layers") == 0; /* then the arguments shift by one */
    int threads = argc > 1 + layers ? atoi(argv[1 + layers]) : 2, context = 16384 + 64, q_dim, k, d, i;
    uint64_t state = 88172645463325252ull;
    memset(&model, 0, sizeof model);
    memset(&s, 0, sizeof s);
    c->n_heads = 32;
    c->n_kv_heads = 8;
    c->head_dim = 128;
    q_dim = c->n_heads * c->head_dim;
    s.model = &model;
    s.context = context;
    s.n_threads = s.active_threads = threads;
    s.q = (float *)aligned_alloc64((size_t)64 * q_dim * sizeof(float));
    s.att_out = (float *)aligned_alloc64((size_t)64 * q_dim * sizeof(float));
    s.att_scratch = (float *)aligned_alloc64((size_t)threads * attention_scratch_floats(c) * sizeof(float));
    for (i = 0; i < 64 * q_dim; i++) s.q[i] = (float)((state = state * 6364136223846793005ull + 1) >> 40) / 16777216.0f - 0.5f;
    if (layers) {
        int depth = argc > 3 ? atoi(argv[3]) : -1;
        if (argc < 5 || depth < 0 || threads < 1) {
            fprintf(stderr, "usage: attention --layers THREADS DEPTH f32|f16|q8 [REPS]\n");
            return 2;
        }
        return all_layers(&s, depth, argv[4], argc > 5 ? atoi(argv[5]) : 5, &state);
    }
    if (argc > 4) { /* one case */
        int depth = atoi(argv[2]), n = atoi(argv[3]), reps = argc > 5 ? atoi(argv[5]) : 0;
        if (depth < 0 || n < 1 || n > 64 || depth + n > context) {
            fprintf(stderr, "attention: DEPTH + N must be at most %d, N 1..64\n", context);
            return 2;
        }
        s.kv = kv_type_for(strcmp(argv[4], "q8") == 0 ? LUCIE_KV_Q8 : strcmp(argv[4], "f16") == 0 ? LUCIE_KV_F16 : LUCIE_KV_F32);
        s.kv_row_bytes = kv_row_bytes(s.kv->type, c->head_dim);
        fill_cache(&s, &state);
        if (reps < 1) {
            s.pos = depth;
            attention_alone(&s, 0, n);
            return 0;
        }
        best_us_per_token(&s, depth, n, reps); /* unmeasured */
        printf("kv %s depth %d, %d tokens, %d threads: %.1f us per token (best of %d)\n", s.kv->name, depth, n, threads,
               best_us_per_token(&s, depth, n, reps), reps);
        return 0;
    }
    printf("attention, one layer of 32 heads / 8 KV heads / head_dim 128, %d threads, best of 5, us per token\n",
           threads);
    for (k = 0; k < 3; k++) {
        s.kv = kv_type_for(kinds[k]);
        s.kv_row_bytes = kv_row_bytes(s.kv->type, c->head_dim);
        fill_cache(&s, &state);
        for (d = 0; d < 3; d++)
            printf("kv %-3s depth %5d: decode %8.1f   prefill chunk of 64 %8.1f\n", s.kv->name, depths[d],
                   best_us_per_token(&s, depths[d], 1, 5), best_us_per_token(&s, depths[d], 64, 5));
        aligned_free64(s.key_cache);
        aligned_free64(s.value_cache);
    }
    return 0;
}
