/* fuzz_tokenize.c - libFuzzer target: arbitrary bytes through the tokenizer.
 *
 * The model is loaded once: $LUCIE_FUZZ_MODEL, or the small Lucie-like seed
 * model in test/fuzz_corpus/load/ (test/fuzz.sh passes a model carrying the
 * real 65024-token Lucie tokenizer). The first input byte chooses what the
 * rest is:
 *   bits 0-1  0, 1: text to encode (any bytes: invalid UTF-8, NUL, special
 *             token strings), with add-special/parse-special from bits 2-3
 *             and skip-special (decoding back) from bit 4;
 *             2: little-endian u16 token ids to decode (some out of range);
 *             3: chat messages (NUL-separated role/content pairs) rendered
 *             with lucie_chat_tokens.
 * fuzz_common.h checks the API's promises: invalid UTF-8 refused, the size
 * query and buffer protocol consistent, ids in range, streaming decode equal
 * to whole decode. */
#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lucie_model *model;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    const char *path = getenv("LUCIE_FUZZ_MODEL");
    char err[256];
    (void)argc;
    (void)argv;
    if (!path || !*path) path = "test/fuzz_corpus/load/lucie-like";
    if (lucie_open(path, NULL, &model, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "fuzz_tokenize: cannot load %s: %s (set LUCIE_FUZZ_MODEL)\n", path, err);
        exit(1);
    }
    return 0;
}

static void fuzz_chat(const uint8_t *data, size_t size) {
    lucie_chat_message msgs[8];
    static const char *roles[] = {"system", "user", "assistant", "tool"};
    char *copy = (char *)malloc(size + 1), *p, *end;
    char err[256];
    int n = 0, n_ids = 0, rc, *ids;
    fuzz_check(copy != NULL, "out of memory");
    memcpy(copy, data, size);
    copy[size] = '\0';
    p = copy;
    end = copy + size;
    while (p < end && n < 8) {
        /* one byte picks the role, then the content up to the next NUL */
        msgs[n].role = roles[(unsigned char)*p % 4];
        p++;
        msgs[n].content = p;
        p += strlen(p) + 1;
        n++;
    }
    rc = lucie_chat_tokens(model, msgs, n, size > 0 ? data[0] >> 4 & 3 : 0, NULL, 0, &n_ids, err, sizeof err);
    if (rc == LUCIE_ESMALL || (rc == LUCIE_OK && n_ids > 0)) {
        int i, n2 = -1;
        ids = (int *)malloc((size_t)n_ids * sizeof *ids);
        fuzz_check(ids != NULL, "out of memory");
        rc = lucie_chat_tokens(model, msgs, n, size > 0 ? data[0] >> 4 & 3 : 0, ids, n_ids, &n2, err, sizeof err);
        fuzz_check(rc == LUCIE_OK && n2 == n_ids, "chat_tokens twice gave different results");
        for (i = 0; i < n_ids; i++)
            fuzz_check(ids[i] >= 0 && ids[i] < lucie_model_config(model)->vocab_size, "chat id out of range");
        free(ids);
    } else if (rc != LUCIE_OK) {
        fuzz_check(rc == LUCIE_EINVAL && err[0] && strchr(err, '\n') == NULL, "chat_tokens failed without a message");
    }
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t mode;
    if (size == 0) return 0;
    mode = data[0];
    data++;
    size--;
    switch (mode & 3) {
    case 0:
    case 1:
        (void)fuzz_tokenize_checked(model, data, size,
                                    ((mode >> 2) & 1 ? LUCIE_TOK_ADD_SPECIAL : 0) |
                                        ((mode >> 3) & 1 ? LUCIE_TOK_PARSE_SPECIAL : 0),
                                    (mode >> 4) & 1 ? LUCIE_DETOK_SKIP_SPECIAL : 0);
        break;
    case 2: {
        int ids[512], n = 0, vocab = lucie_model_config(model)->vocab_size;
        size_t i;
        for (i = 0; i + 1 < size && n < 512; i += 2) {
            int v = data[i] | data[i + 1] << 8;
            /* spread u16 over the vocabulary (and a little past it, and below 0) */
            ids[n++] = (int)((long)v * (vocab + 16) / 65536) - 8;
        }
        fuzz_detokenize_checked(model, ids, n, (mode >> 4) & 1 ? LUCIE_DETOK_SKIP_SPECIAL : 0);
        break;
    }
    default:
        fuzz_chat(data, size);
        break;
    }
    return 0;
}
