/* fuzz_replay.c - runs a fuzz target's inputs without libFuzzer.
 *
 *     test/replay_TARGET FILE...
 *
 * Linked with one test/fuzz_TARGET.c instead of -fsanitize=fuzzer, so any C
 * compiler (and `make test SANITIZE=1`) can replay the seed corpus and every
 * saved crash as ordinary regression tests. Each file is one input; a broken
 * invariant aborts, as under libFuzzer. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    unsigned char *data = NULL;
    size_t cap = 0, n = 0, got;
    if (!f) return NULL;
    do {
        if (cap - n < 4096) {
            unsigned char *bigger = (unsigned char *)realloc(data, cap ? cap * 2 : 65536);
            if (!bigger) {
                free(data);
                fclose(f);
                return NULL;
            }
            data = bigger;
            cap = cap ? cap * 2 : 65536;
        }
        got = fread(data + n, 1, cap - n, f);
        n += got;
    } while (got > 0);
    fclose(f);
    *size = n;
    return data;
}

int main(int argc, char **argv) {
    int i;
    LLVMFuzzerInitialize(&argc, &argv);
    for (i = 1; i < argc; i++) {
        size_t size = 0;
        unsigned char *data = read_file(argv[i], &size);
        if (!data) {
            fprintf(stderr, "replay: cannot read %s\n", argv[i]);
            return 2;
        }
        LLVMFuzzerTestOneInput(data, size);
        free(data);
    }
    return 0;
}
