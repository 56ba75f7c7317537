/* two_sessions.c - one model, two sessions alive at the same time.
 *
 *   cc -std=c99 -O2 -fopenmp -o two_sessions examples/two_sessions.c lucie.c -lm
 *   ./two_sessions MODEL.bin [TOKENS ["first prompt" "second prompt"]]
 *
 * A lucie_model is read-only once opened, so any number of sessions can share
 * it; each session owns its KV cache, its sampler and its random generator.
 * This program first runs each prompt alone, then runs both together, one
 * token each per round; with OpenMP the two sessions of a round advance on two
 * threads at once (without it, the same program interleaves them on one).
 * Both sample (temperature 0.8, different seeds), so any leak of state from
 * one session into the other -- cache, history, random numbers -- would change
 * the text. It prints both texts and checks they equal the solo runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lucie.h"

#define MAX_TOKENS 512

/* One generation in progress. */
typedef struct {
    lucie_session *session;
    float *logits; /* the model's prediction for the next token */
    int ids[MAX_TOKENS], n_ids;
    int n_prompt, finished;
} generation;

/* Creates the session, encodes and evaluates the prompt. */
static int start(generation *g, const lucie_model *model, const char *prompt, unsigned long long seed) {
    lucie_session_options opts;
    char err[256];
    memset(g, 0, sizeof *g);
    lucie_session_defaults(model, &opts);
    opts.temperature = 0.8f;
    opts.top_p = 0.95f;
    opts.seed = seed;
    opts.context = MAX_TOKENS;
    opts.n_threads = 1; /* the parallelism is across sessions here */
    if (lucie_session_new(model, &opts, &g->session, err, sizeof err) != LUCIE_OK ||
        lucie_tokenize(model, prompt, strlen(prompt), LUCIE_TOK_ADD_SPECIAL, g->ids, MAX_TOKENS, &g->n_ids, err,
                       sizeof err) != LUCIE_OK) {
        fprintf(stderr, "two_sessions: %s\n", err);
        return 0;
    }
    g->n_prompt = g->n_ids;
    g->logits = (float *)malloc((size_t)lucie_model_config(model)->vocab_size * sizeof(float));
    return g->logits && g->n_ids > 0 && lucie_eval(g->session, g->ids, g->n_ids, g->logits, 0) == LUCIE_OK;
}

/* Samples one token and feeds it back; marks the generation finished at an
 * end-of-sequence token or when the context is full. */
static void step(generation *g, const lucie_config *config) {
    int token, i;
    if (g->finished) return;
    token = lucie_sample(g->session, g->logits);
    for (i = 0; i < config->n_eos; i++)
        if (token == config->eos_ids[i]) g->finished = 1;
    if (token < 0 || g->finished || g->n_ids == MAX_TOKENS) {
        g->finished = 1;
        return;
    }
    g->ids[g->n_ids++] = token;
    if (lucie_eval(g->session, &token, 1, g->logits, 0) != LUCIE_OK) g->finished = 1;
}

static void finish(generation *g) {
    lucie_session_free(g->session);
    free(g->logits);
}

static void print_text(const lucie_model *model, const char *label, const generation *g) {
    static char text[16 * MAX_TOKENS];
    size_t len = 0;
    int rc = lucie_detokenize(model, g->ids, g->n_ids, LUCIE_DETOK_SKIP_SPECIAL, text, sizeof text, &len);
    if (rc == LUCIE_ESMALL) len = sizeof text - 1; /* what fits */
    else if (rc != LUCIE_OK) len = 0;
    printf("%s (%d prompt + %d new tokens):\n%.*s\n\n", label, g->n_prompt, g->n_ids - g->n_prompt, (int)len, text);
}

int main(int argc, char **argv) {
    const char *prompts[2] = {"Once upon a time", "The little dog"};
    unsigned long long seeds[2] = {1, 2};
    generation alone[2], together[2];
    lucie_model *model;
    char err[256];
    int n_new = argc > 2 ? atoi(argv[2]) : 48, k, round, same = 1;
    if (argc < 2 || argc == 4 || argc > 5 || n_new < 0 || n_new > MAX_TOKENS / 2) {
        fprintf(stderr, "usage: %s MODEL.bin [TOKENS (<= %d) [PROMPT1 PROMPT2]]\n", argv[0], MAX_TOKENS / 2);
        return 2;
    }
    if (argc == 5) {
        prompts[0] = argv[3];
        prompts[1] = argv[4];
    }
    if (lucie_open(argv[1], NULL, &model, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "two_sessions: %s\n", err);
        return 1;
    }
    /* Each prompt on its own: the reference. */
    for (k = 0; k < 2; k++) {
        if (!start(&alone[k], model, prompts[k], seeds[k])) return 1;
        for (round = 0; round < n_new; round++) step(&alone[k], lucie_model_config(model));
    }
    /* Both at once: two sessions on one model, advancing side by side. */
    for (k = 0; k < 2; k++)
        if (!start(&together[k], model, prompts[k], seeds[k])) return 1;
    for (round = 0; round < n_new; round++) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(2)
#endif
        for (k = 0; k < 2; k++) step(&together[k], lucie_model_config(model));
    }
    for (k = 0; k < 2; k++) {
        print_text(model, k == 0 ? "session 1" : "session 2", &together[k]);
        if (together[k].n_ids != alone[k].n_ids ||
            memcmp(together[k].ids, alone[k].ids, (size_t)alone[k].n_ids * sizeof(int)) != 0)
            same = 0;
        finish(&alone[k]);
        finish(&together[k]);
    }
    printf("same text as each session alone: %s\n", same ? "yes" : "NO");
    lucie_close(model);
    return same ? 0 : 1;
}
