/* bench/verify_cost.c: what a speculative-decoding verification pass costs
 * next to a one-token step. Times lucie_eval of N = 1, 2, 4, 8, 16 tokens
 * (every position's logits, as verification asks for) at a given depth of
 * the cache, rewinding after each call, and prints the best of several runs
 * in milliseconds and as a multiple of the one-token step. With a pass of N
 * tokens costing r(N) steps, drafts accepted at rate a give about
 * (1 - a^(N)) / (1 - a) tokens per pass, hence a speedup of that over r(N).
 *   make measure && bench/verify_cost MODEL.bin [threads] [depth] [reps] */
#include "../lucie.c"

static double best_seconds(lucie_session *s, const int *tokens, int n, float *logits, int depth, int reps) {
    double best = 1e30;
    int r;
    for (r = 0; r < reps; r++) {
        double t0 = lucie_time_seconds(), t;
        if (lucie_eval(s, tokens, n, logits, n > 1 ? LUCIE_EVAL_ALL_LOGITS : 0) != LUCIE_OK) return -1.0;
        t = lucie_time_seconds() - t0;
        if (t < best) best = t;
        lucie_session_rewind(s, depth);
    }
    return best;
}

int main(int argc, char **argv) {
    static const int sizes[] = {1, 2, 4, 8, 16};
    lucie_model *model;
    lucie_session *s;
    lucie_session_options so;
    const lucie_config *c;
    char err[256];
    int threads = argc > 2 ? atoi(argv[2]) : 1, depth = argc > 3 ? atoi(argv[3]) : 256;
    int reps = argc > 4 ? atoi(argv[4]) : 20, i, *tokens;
    float *logits;
    double one = 0.0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.bin [threads] [depth] [reps]\n", argv[0]);
        return 2;
    }
    if (lucie_open(argv[1], NULL, &model, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    c = lucie_model_config(model);
    lucie_session_defaults(model, &so);
    so.n_threads = threads;
    so.context = depth + 16;
    if (lucie_session_new(model, &so, &s, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    tokens = (int *)malloc((size_t)(depth + 16) * sizeof *tokens);
    logits = (float *)malloc((size_t)16 * c->vocab_size * sizeof *logits);
    if (!tokens || !logits) return 1;
    for (i = 0; i < depth + 16; i++) tokens[i] = (int)((1000u + 7919u * (unsigned)i) % (unsigned)c->vocab_size);
    if (depth > 0 && lucie_eval(s, tokens, depth, logits, 0) != LUCIE_OK) {
        fprintf(stderr, "%s\n", lucie_session_error(s));
        return 1;
    }
    printf("dim %d, %d layers, vocab %d, weights %s, %d threads, depth %d, best of %d\n", c->dim, c->n_layers,
           c->vocab_size, lucie_dtype(c->weight_type)->name, lucie_session_threads(s), depth, reps);
    for (i = 0; i < (int)(sizeof sizes / sizeof sizes[0]); i++) {
        double t = best_seconds(s, tokens + depth, sizes[i], logits, depth, reps);
        if (t < 0) {
            fprintf(stderr, "%s\n", lucie_session_error(s));
            return 1;
        }
        if (sizes[i] == 1) one = t;
        printf("eval of %2d tokens: %8.3f ms = %5.2f one-token steps\n", sizes[i], t * 1e3, t / one);
    }
    free(tokens);
    free(logits);
    lucie_session_free(s);
    lucie_close(model);
    return 0;
}
