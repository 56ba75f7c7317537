/* fuzz_session.c - libFuzzer target: the session file read by lucie_session_load.
 *
 * A session file is only accepted for the model it was saved with (its header
 * carries a fingerprint of the model), so the model is fixed: $LUCIE_FUZZ_MODEL
 * or the Lucie-like seed model, and the seeds in test/fuzz_corpus/session/ were
 * saved from that model (LUCIE_FUZZ_SAVE_SEEDS=DIR makes this target write
 * them again). So that the seeds survive changes to how the fingerprint is
 * computed, they hold the placeholder "MODEL-FP" in its place (bytes 24..31 of
 * the layout described in lucie.c), which this target replaces by the real
 * fingerprint; any other value tests the "another model" refusal.
 * Before each load the session holds two tokens; lucie.h promises that a
 * refused file leaves the session unchanged, and that an accepted one can be
 * evaluated further. */
#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CONTEXT 8

#define FINGERPRINT_AT 24
#define PLACEHOLDER "MODEL-FP"

static lucie_model *model;
static lucie_session *session;
static int start[2];
static unsigned char fingerprint[8]; /* this model's, as lucie_session_save writes it */

/* Saves the session to path, with the placeholder instead of the fingerprint
 * when placeholder is set; reads the real fingerprint back otherwise. */
static void save(const char *path, int placeholder) {
    FILE *f;
    unsigned char *data;
    long size;
    fuzz_check(lucie_session_save(session, path) == LUCIE_OK, "lucie_session_save failed");
    f = fopen(path, "r+b");
    fuzz_check(f && fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= FINGERPRINT_AT + 8, "saved file");
    data = (unsigned char *)malloc((size_t)size);
    fuzz_check(data && fseek(f, 0, SEEK_SET) == 0 && fread(data, 1, (size_t)size, f) == (size_t)size, "read back");
    if (placeholder) {
        memcpy(data + FINGERPRINT_AT, PLACEHOLDER, 8);
        fuzz_check(fseek(f, 0, SEEK_SET) == 0 && fwrite(data, 1, (size_t)size, f) == (size_t)size, "rewrite");
    } else {
        memcpy(fingerprint, data + FINGERPRINT_AT, 8);
    }
    free(data);
    fuzz_check(fclose(f) == 0, "close");
}

static void save_seeds(const char *dir) {
    static const int tokens[5] = {0, 5, 7, 3, 1};
    int n;
    char path[512];
    for (n = 0; n <= 5; n += 1) {
        if (n == 2 || n == 4) continue;
        fuzz_check(lucie_session_rewind(session, 0) == LUCIE_OK, "rewind");
        if (n > 0) fuzz_check(lucie_eval(session, tokens, n, NULL, 0) == LUCIE_OK, "eval for a seed");
        snprintf(path, sizeof path, "%s/pos%d", dir, n);
        save(path, 1);
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
    save(fuzz_write_file(NULL, 0), 0);
    if (seeds) save_seeds(seeds);
    lucie_session_rewind(session, 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const lucie_config *c = lucie_model_config(model);
    const char *path;
    float *logits = (float *)malloc((size_t)c->vocab_size * sizeof(float));
    int rc, tok, pos;
    fuzz_check(logits != NULL, "out of memory");
    if (size >= FINGERPRINT_AT + 8 && memcmp(data + FINGERPRINT_AT, PLACEHOLDER, 8) == 0) {
        unsigned char *fixed = (unsigned char *)malloc(size);
        fuzz_check(fixed != NULL, "out of memory");
        memcpy(fixed, data, size);
        memcpy(fixed + FINGERPRINT_AT, fingerprint, 8);
        path = fuzz_write_file(fixed, size);
        free(fixed);
    } else {
        path = fuzz_write_file(data, size);
    }
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
            /* finite but extreme cached values can still overflow to non-finite
             * logits: then the sampler must refuse them with a one-line error */
            fuzz_check((tok >= 0 && tok < c->vocab_size) ||
                           (tok == LUCIE_EFORMAT && strchr(lucie_session_error(session), '\n') == NULL),
                       "sampled id outside the vocabulary");
        }
    }
    free(logits);
    return 0;
}
