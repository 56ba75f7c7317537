/* fuzz_args.c - libFuzzer target: run.c's command line, whole program.
 *
 * run.c is compiled in with its main() renamed, and each input becomes an
 * argument vector (arguments separated by NUL bytes) after a fixed model path
 * and "--seed 7" (so that findings replay):
 * $LUCIE_FUZZ_MODEL, or the small Lucie-like seed model whose 64-token maximum
 * context bounds every generation, perplexity window and benchmark. Inputs
 * are skipped when they ask for things a fuzzer must not do: --help (exits),
 * and option values naming device or proc files (endless reads). stdin is
 * /dev/null, so --chat and '-' read an empty input. */
#include "fuzz_common.h"

#define main run_main
#include "../run.c"
#undef main

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ARGS 24

static const char *model_path;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    model_path = getenv("LUCIE_FUZZ_MODEL");
    if (!model_path || !*model_path) model_path = "test/fuzz_corpus/load/lucie-like";
    fuzz_check(freopen("/dev/null", "r", stdin) != NULL, "cannot redirect stdin");
    fuzz_check(freopen("/dev/null", "w", stdout) != NULL, "cannot redirect stdout");
    return 0;
}

static int forbidden(const char *arg) {
    return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0 || strcmp(arg, "--version") == 0 ||
           strcmp(arg, "--prompt-cache") == 0 /* writes a file */ || strstr(arg, "/dev") != NULL ||
           strstr(arg, "/proc") != NULL || strstr(arg, "/sys") != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *copy, *argv[MAX_ARGS + 5], *p, *end;
    int argc = 0, rc;
    if (size > 4096) return 0;
    copy = (char *)malloc(size + 1);
    fuzz_check(copy != NULL, "out of memory");
    memcpy(copy, data, size);
    copy[size] = '\0';
    argv[argc++] = (char *)"run";
    argv[argc++] = (char *)model_path;
    argv[argc++] = (char *)"--seed"; /* not the clock: a finding must replay; the input may override it */
    argv[argc++] = (char *)"7";
    for (p = copy, end = copy + size; p < end && argc < MAX_ARGS + 4; p += strlen(p) + 1) {
        if (forbidden(p)) {
            free(copy);
            return 0;
        }
        argv[argc++] = p;
    }
    argv[argc] = NULL;
    rc = run_main(argc, argv);
    fuzz_check(rc == 0 || rc == 1 || rc == 2, "run returned an undocumented exit code");
    clearerr(stdin);
    free(copy);
    return 0;
}
