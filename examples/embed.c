/* embed.c - the smallest program using lucie.c as a library: load a model,
 * stream a completion through a callback, print the statistics.
 *
 *   cc -std=c99 -O2 -pthread -o embed examples/embed.c lucie.c -lm
 *   ./embed MODEL.bin "Once upon a time" 64
 *
 * The completion goes to stdout as it is generated; the statistics to stderr.
 * Sampling follows the model file's generation settings (greedy when it has
 * none); see lucie_session_options to change them. */
#include <stdio.h>
#include <stdlib.h>

#include "../lucie.h"

/* Called once per generated token with the text it completes. */
static int print_text(const char *text, size_t len, int token, void *user) {
    (void)token;
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0; /* non-zero would stop the generation */
}

int main(int argc, char **argv) {
    lucie_model *model;
    lucie_session *session;
    lucie_stats stats;
    char err[256];
    int rc;
    const char *prompt = argc > 2 ? argv[2] : "Once upon a time";
    int max_tokens = argc > 3 ? atoi(argv[3]) : 64;
    if (argc < 2 || max_tokens < 0) {
        fprintf(stderr, "usage: %s MODEL.bin [PROMPT] [MAX_TOKENS]\n", argv[0]);
        return 2;
    }
    if (lucie_open(argv[1], NULL, &model, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "embed: %s\n", err);
        return 1;
    }
    /* NULL options: the model's defaults (context up to 4096 tokens, all cores). */
    if (lucie_session_new(model, NULL, &session, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "embed: %s\n", err);
        lucie_close(model);
        return 1;
    }
    fputs(prompt, stdout);
    rc = lucie_generate(session, prompt, max_tokens, print_text, NULL, &stats);
    if (rc != LUCIE_OK) {
        fprintf(stderr, "\nembed: %s\n", lucie_session_error(session));
    } else {
        fprintf(stderr, "\n[prompt %d tokens in %.3f s | generated %d tokens in %.3f s, %.1f tok/s | stopped: %s]\n",
                stats.n_prompt, stats.prompt_seconds, stats.n_generated, stats.generate_seconds,
                stats.generate_seconds > 0 ? stats.n_generated / stats.generate_seconds : 0.0,
                lucie_stop_reason_string(stats.stop_reason));
    }
    lucie_session_free(session);
    lucie_close(model);
    return rc == LUCIE_OK ? 0 : 1;
}
