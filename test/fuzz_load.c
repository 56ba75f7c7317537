/* fuzz_load.c - libFuzzer target: the whole model file is the input.
 *
 * Seeds are small but complete model files (test/fuzz_corpus/load/), so the
 * mutations reach past the header into the entry table, the tensor shapes,
 * the tokenizer tables and the weights. Whatever lucie_open() accepts is then
 * run (tokenizer, a short forward pass, sampling): see fuzz_common.h. The last
 * byte picks the load mode (mmap, mmap + advice, private copy), so every
 * loading path sees the same files. */
#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lucie_open_options opts;
    lucie_model *m = NULL;
    char err[256];
    int rc;
    const char *path = fuzz_write_file(data, size);
    memset(&opts, 0, sizeof opts);
    opts.load_mode = size > 0 ? data[size - 1] % 3 : LUCIE_LOAD_MMAP;
    err[0] = '\0';
    rc = lucie_open(path, &opts, &m, err, sizeof err);
    if (rc != LUCIE_OK) {
        fuzz_check(m == NULL, "failed lucie_open left a model");
        fuzz_check(err[0] != '\0' && strchr(err, '\n') == NULL, "lucie_open failed without a one-line message");
        return 0;
    }
    fuzz_exercise_model(m);
    lucie_close(m);
    return 0;
}
