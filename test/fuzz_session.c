/* fuzz_session.c - libFuzzer target: the session file read by lucie_session_load.
 *
 * A session file is only accepted for the model it was saved with (its header
 * carries a fingerprint of the model), so the model is fixed: $LUCIE_FUZZ_MODEL
 * or the Lucie-like seed model, and the seeds in test/fuzz_corpus/session/ were
 * saved from that model (LUCIE_FUZZ_SAVE_SEEDS=DIR makes this target write
 * them again). Before each load the session holds two tokens; lucie.h promises
 * that a refused file leaves the session unchanged, and that an accepted one
 * can be evaluated further. */
#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CONTEXT 8

static lucie_model *model;
static lucie_session *session;
static int start[2];

static void save_seeds(const char *dir) {
    static const int tokens[5] = {0, 5, 7, 3, 1};
    int n;
    char path[512];
    for (n = 0; n <= 5; n += 1) {
        if (n == 2 || n == 4) continue;
        fuzz_check(lucie_session_rewind(session, 0) == LUCIE_OK, "rewind");
        if (n > 0) fuzz_check(lucie_eval(session, tokens, n, NULL, 0) == LUCIE_OK, "eval for a seed");
        snprintf(path, sizeof path, "%s/pos%d", dir, n);
        fuzz_check(lucie_session_save(session, path) == LUCIE_OK, "cannot save a seed");
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    const char *path = getenv("LUCIE_FUZZ_MODEL"), *seeds = getenv("LUCIE_FUZZ_SAVE_SEEDS");
    lucie_session_options so;
    char err[256];
    (void)argc;
    (void)argv;
    if (!path || !*path) path = "test/fuzz_corpus/load/lucie-like";
    if (lucie_open(path, NULL, &model, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "fuzz_session: cannot load %s: %s (set LUCIE_FUZZ_MODEL)\n", path, err);
        exit(1);
    }
    lucie_session_defaults(model, &so);
    so.context = CONTEXT;
    so.n_threads = 1;
    so.temperature = 1.0f;
    so.repetition_penalty = 1.2f;
    if (lucie_session_new(model, &so, &session, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "fuzz_session: %s\n", err);
        exit(1);
    }
    start[0] = lucie_model_config(model)->bos_id >= 0 ? lucie_model_config(model)->bos_id : 0;
    start[1] = lucie_model_config(model)->vocab_size - 1;
    if (seeds) save_seeds(seeds);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const lucie_config *c = lucie_model_config(model);
    const char *path = fuzz_write_file(data, size);
    float *logits = (float *)malloc((size_t)c->vocab_size * sizeof(float));
    int rc, tok, pos;
    fuzz_check(logits != NULL, "out of memory");
    lucie_session_rewind(session, 0);
    fuzz_check(lucie_eval(session, start, 2, NULL, 0) == LUCIE_OK, "eval of the starting tokens");
    rc = lucie_session_load(session, path);
    pos = lucie_session_position(session);
    if (rc != LUCIE_OK) {
        fuzz_check(rc == LUCIE_EFORMAT || rc == LUCIE_ECONTEXT, "unexpected status from lucie_session_load");
        fuzz_check(strchr(lucie_session_error(session), '\n') == NULL, "multi-line error");
        fuzz_check(pos == 2, "a refused session file changed the session");
        /* unchanged: the next token must see exactly the two starting tokens */
        fuzz_check(lucie_eval(session, start, 1, logits, 0) == LUCIE_OK, "eval after a refused load");
    } else {
        fuzz_check(pos >= 0 && pos <= CONTEXT, "position outside the context after a load");
        if (pos < CONTEXT) {
            fuzz_check(lucie_eval(session, start, 1, logits, 0) == LUCIE_OK, "eval after a load");
            tok = lucie_sample(session, logits);
            fuzz_check(tok >= 0 && tok < c->vocab_size, "sampled id outside the vocabulary");
        }
    }
    free(logits);
    return 0;
}
