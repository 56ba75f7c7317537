/* test/sampling: draws many tokens from one fixed set of logits, for the tests
 * that check the sampler keeps exactly the tokens transformers' logits warpers
 * keep, with the right frequencies.
 *
 *   test/sampling MODEL.bin LOGITS.f32 N_DRAWS [options] [--history IDS]
 *
 * LOGITS.f32 holds vocab_size little-endian float32. Options: --temp T
 * --top-k K --top-p P --min-p P --penalty R --window N --seed S (defaults:
 * temperature 1, everything else off). --history evaluates the comma-separated
 * ids first, so the repetition penalty has something to penalise.
 * Prints "ID COUNT" for every token drawn at least once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lucie.h"

/* Evaluates the comma-separated history ids one at a time. */
static int eval_history(lucie_session *session, const char *history) {
    while (*history) {
        char *end;
        int id = (int)strtol(history, &end, 10);
        if (end == history || lucie_eval(session, &id, 1, NULL, 0) != LUCIE_OK) {
            fprintf(stderr, "sampling: bad history at '%s'\n", history);
            return 0;
        }
        history = *end == ',' ? end + 1 : end;
    }
    return 1;
}

/* Reads exactly n floats from path. */
static int read_logits(const char *path, float *logits, int n) {
    FILE *f = fopen(path, "rb");
    int ok = f && fread(logits, sizeof(float), (size_t)n, f) == (size_t)n;
    if (f) fclose(f);
    if (!ok) fprintf(stderr, "sampling: cannot read %d floats from %s\n", n, path);
    return ok;
}

int main(int argc, char **argv) {
    lucie_model *model = NULL;
    lucie_session *session = NULL;
    lucie_session_options opts;
    const char *history = NULL;
    float *logits = NULL;
    long *counts = NULL;
    char err[256];
    int vocab, i, n_draws, ok = 0;
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL.bin LOGITS.f32 N_DRAWS [options] (see test/sampling.c)\n", argv[0]);
        return 2;
    }
    n_draws = atoi(argv[3]);
    lucie_session_defaults(NULL, &opts);
    opts.context = 256;
    for (i = 4; i + 1 < argc; i += 2) {
        const char *o = argv[i], *v = argv[i + 1];
        if (strcmp(o, "--temp") == 0) opts.temperature = (float)atof(v);
        else if (strcmp(o, "--top-k") == 0) opts.top_k = atoi(v);
        else if (strcmp(o, "--top-p") == 0) opts.top_p = (float)atof(v);
        else if (strcmp(o, "--min-p") == 0) opts.min_p = (float)atof(v);
        else if (strcmp(o, "--penalty") == 0) opts.repetition_penalty = (float)atof(v);
        else if (strcmp(o, "--window") == 0) opts.repetition_window = atoi(v);
        else if (strcmp(o, "--seed") == 0) opts.seed = strtoull(v, NULL, 10);
        else if (strcmp(o, "--history") == 0) history = v;
        else break;
    }
    if (i != argc) {
        fprintf(stderr, "sampling: unknown option or missing value at '%s'\n", argv[i]);
        return 2;
    }
    if (lucie_open(argv[1], NULL, &model, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "sampling: %s\n", err);
        return 1;
    }
    vocab = lucie_model_config(model)->vocab_size;
    logits = (float *)malloc((size_t)vocab * sizeof *logits);
    counts = (long *)calloc((size_t)vocab, sizeof *counts);
    if (lucie_session_new(model, &opts, &session, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "sampling: %s\n", err);
    } else if (logits && counts && (!history || eval_history(session, history)) &&
               read_logits(argv[2], logits, vocab)) {
        ok = 1;
        for (i = 0; i < n_draws && ok; i++) {
            int token = lucie_sample(session, logits);
            if (token < 0 || token >= vocab) {
                fprintf(stderr, "sampling: lucie_sample returned %d\n", token);
                ok = 0;
            } else {
                counts[token]++;
            }
        }
        for (i = 0; i < vocab && ok; i++)
            if (counts[i]) printf("%d %ld\n", i, counts[i]);
    }
    free(logits);
    free(counts);
    lucie_session_free(session);
    lucie_close(model);
    return ok ? 0 : 1;
}
