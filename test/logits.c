/* test/logits: dumps lucie's logits for a token sequence, for the tests that
 * compare them with Hugging Face transformers.
 *
 *   test/logits [--kv f32|f16|q8] MODEL.bin MODE OUT.f32 ID [ID ...]
 *
 * --kv: the session's KV cache type (default: the library's default).
 * MODE: prefill (all tokens in one call), step (one token per call) or chunk
 * (calls of 3 tokens). OUT.f32 receives n * vocab_size little-endian float32:
 * the logits after every position. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lucie.h"

int main(int argc, char **argv) {
    lucie_model *model = NULL;
    lucie_session *session = NULL;
    lucie_session_options opts;
    char err[256];
    int n, i, step, vocab, rc;
    int *ids;
    float *logits;
    FILE *out;
    int kv_type = LUCIE_KV_DEFAULT;
    if (argc > 2 && strcmp(argv[1], "--kv") == 0) {
        if (strcmp(argv[2], "f32") == 0) kv_type = LUCIE_KV_F32;
        else if (strcmp(argv[2], "f16") == 0) kv_type = LUCIE_KV_F16;
        else if (strcmp(argv[2], "q8") == 0) kv_type = LUCIE_KV_Q8;
        else {
            fprintf(stderr, "logits: unknown KV cache type '%s'\n", argv[2]);
            return 2;
        }
        argv += 2;
        argc -= 2;
    }
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL.bin prefill|step|chunk OUT.f32 ID [ID ...]\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[2], "prefill") == 0) step = 0;
    else if (strcmp(argv[2], "step") == 0) step = 1;
    else if (strcmp(argv[2], "chunk") == 0) step = 3;
    else {
        fprintf(stderr, "logits: unknown mode '%s'\n", argv[2]);
        return 2;
    }
    if (lucie_open(argv[1], NULL, &model, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "logits: %s\n", err);
        return 1;
    }
    n = argc - 4;
    vocab = lucie_model_config(model)->vocab_size;
    ids = (int *)malloc((size_t)n * sizeof *ids);
    logits = (float *)malloc((size_t)n * (size_t)vocab * sizeof *logits);
    if (!ids || !logits) return 1;
    for (i = 0; i < n; i++) ids[i] = atoi(argv[4 + i]);
    lucie_session_defaults(model, &opts);
    opts.context = n;
    opts.kv_type = kv_type;
    if (lucie_session_new(model, &opts, &session, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "logits: %s\n", err);
        return 1;
    }
    if (step == 0) {
        rc = lucie_eval(session, ids, n, logits, LUCIE_EVAL_ALL_LOGITS);
    } else {
        rc = LUCIE_OK;
        for (i = 0; i < n && rc == LUCIE_OK; i += step) {
            int len = n - i < step ? n - i : step;
            rc = lucie_eval(session, ids + i, len, logits + (size_t)i * vocab, LUCIE_EVAL_ALL_LOGITS);
        }
    }
    if (rc != LUCIE_OK) {
        fprintf(stderr, "logits: %s\n", lucie_session_error(session));
        return 1;
    }
    out = fopen(argv[3], "wb");
    if (!out || fwrite(logits, sizeof(float), (size_t)n * vocab, out) != (size_t)n * vocab || fclose(out) != 0) {
        fprintf(stderr, "logits: cannot write %s\n", argv[3]);
        return 1;
    }
    lucie_session_free(session);
    lucie_close(model);
    free(ids);
    free(logits);
    return 0;
}
