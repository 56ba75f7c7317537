/* run.c - the command-line program for lucie.c: generate, tokenize,
 * detokenize, benchmark. Everything it does goes through lucie.h.
 *
 * stdout carries only the product (generated text, ids, decoded text, the
 * benchmark's JSON line); messages and statistics go to stderr. Exit codes:
 * 0 success, 1 runtime error (bad model file, context full...), 2 bad usage. */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lucie.h"

#ifdef _WIN32
/* Windows hands main() its arguments in the ANSI code page and translates
 * newlines on stdout. lucie speaks UTF-8 and stdout carries exact bytes, so
 * there the arguments are taken again from the UTF-16 command line, file
 * names go back through UTF-16, and the standard streams are binary with a
 * UTF-8 console. (CommandLineToArgvW is in shell32, a default library of
 * mingw-w64.) */
#include <windows.h> /* before shellapi.h, which needs its macros */
#include <fcntl.h>
#include <io.h>
#include <shellapi.h>

static char *wide_to_utf8(const wchar_t *w) {
    int n = WideCharToMultiByte(CP_UTF8, 0, w, -1, NULL, 0, NULL, NULL);
    char *s = n > 0 ? (char *)malloc((size_t)n) : NULL;
    if (s && WideCharToMultiByte(CP_UTF8, 0, w, -1, s, n, NULL, NULL) != n) {
        free(s);
        s = NULL;
    }
    return s;
}

/* The UTF-8 argv, or NULL (then the ANSI one is kept). Lives until exit. */
static char **utf8_arguments(int *argc) {
    int n = 0, i;
    wchar_t **wide = CommandLineToArgvW(GetCommandLineW(), &n);
    char **args = wide && n > 0 ? (char **)calloc((size_t)n + 1, sizeof(char *)) : NULL;
    for (i = 0; args && i < n; i++)
        if ((args[i] = wide_to_utf8(wide[i])) == NULL) args = NULL; /* leaks a little; we keep the ANSI argv */
    if (wide) LocalFree(wide);
    if (args) *argc = n;
    return args;
}

static void setup_console(void) {
    SetConsoleOutputCP(CP_UTF8);
    SetConsoleCP(CP_UTF8);
    _setmode(_fileno(stdout), _O_BINARY);
    _setmode(_fileno(stdin), _O_BINARY);
}

static FILE *open_read(const char *path) {
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, NULL, 0);
    wchar_t *w = n > 0 ? (wchar_t *)malloc((size_t)n * sizeof(wchar_t)) : NULL;
    FILE *f = NULL;
    if (w && MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, w, n) == n) f = _wfopen(w, L"rb");
    free(w);
    return f;
}
#else
#include <unistd.h> /* isatty */
static FILE *open_read(const char *path) { return fopen(path, "rb"); }
#endif

static const char *USAGE =
    "usage: run MODEL.bin [options]\n"
    "       run quantize IN.bin OUT.bin TYPE   (convert an f32/bf16 model file to TYPE: %s)\n"
    "       run --version\n"
    "\n"
    "Generation (default mode):\n"
    "  -p TEXT             prompt (default: empty, i.e. BOS only)\n"
    "  -f FILE             read the prompt from FILE\n"
    "  -n N                tokens to generate (default 256; with --chat: until the reply ends or the\n"
    "                      context is full; with --bench: 64); stops early at an eos id\n"
    "  --temp T            temperature, 0 = greedy (default: the model's generation_config)\n"
    "  --top-k K           keep the K most likely tokens, 0 = off (default: model's)\n"
    "  --top-p P           nucleus sampling threshold in (0,1] (default: model's)\n"
    "  --min-p P           drop tokens below P x the top probability (default 0 = off)\n"
    "  --repeat-penalty R  repetition penalty, 1 = off (default: model's)\n"
    "  --repeat-window N   penalise only the last N tokens, 0 = all (default 0)\n"
    "  --seed S            random seed (default: from the clock, printed on stderr when sampling)\n"
    "  -c CTX              context length in tokens, 1..the model's maximum\n"
    "                      (default: min(model maximum, 4096); --ppl: the window, 2..maximum,\n"
    "                      default 512)\n"
    "  -t N                threads at most (default: one per processor this process may use);\n"
    "                      small steps of small models use fewer, since a thread only joins\n"
    "                      work large enough to pay for it\n"
    "  --no-pin            leave the threads where the OS puts them (default: with one thread per\n"
    "                      processor, each keeps to its own, on Linux and Windows)\n"
    "  --kv TYPE           KV cache type: f32, f16 or q8 (default: the library's, see README)\n"
    "  --stop TEXT         stop when TEXT is generated (repeatable; TEXT is not printed)\n"
    "  --lookup N          speculative decoding by prompt lookup: up to N tokens that followed an\n"
    "                      earlier occurrence of the last tokens are checked in one forward pass\n"
    "                      (default 0 = off); the same output, faster when it repeats the prompt\n"
    "  --prompt-cache FILE keep the evaluated prompt in FILE: a later run whose prompt starts with\n"
    "                      the same tokens evaluates only the rest\n"
    "  --variants N        N continuations of one prompt evaluation (default 1); variant i uses seed\n"
    "                      S+i-1 (what a separate run with that --seed prints), after a '--- variant' line\n"
    "  --load MODE         how weights get into memory: mmap (default), madvise (mmap + kernel\n"
    "                      hints), read (private 2 MB-aligned copy, huge pages where possible)\n"
    "  --no-mmap           same as --load read\n"
    "\n"
    "Chat (models with a chat template, e.g. Lucie-7B-Instruct):\n"
    "  --chat              interactive multi-turn chat on stdin/stdout; /reset forgets, /quit ends;\n"
    "                      Ctrl-C stops the current answer, a second Ctrl-C exits\n"
    "  --system TEXT       system message for --chat\n"
    "  (-n, -c, -t, --temp and the other sampling options, --stop, --seed, --load apply)\n"
    "\n"
    "Perplexity:\n"
    "  --ppl FILE          perplexity of FILE's text (BOS added), in windows of -c tokens\n"
    "                      (2 or more, default 512); prints 'perplexity P tokens N windows W'\n"
    "\n"
    "Tokenizer:\n"
    "  --tokenize TEXT     print the token ids of TEXT ('-' reads stdin), BOS included\n"
    "  --no-bos            with --tokenize: no special tokens added\n"
    "  --special-as-text   with --tokenize: special-token strings in TEXT are plain text\n"
    "  --detokenize IDS    print the text of the space-separated ids (no newline added)\n"
    "  --skip-special      with --detokenize: leave special tokens out\n"
    "\n";
/* The rest of the help (C99 promises string literals of 4095 bytes only). */
static const char *USAGE_MORE =
    "Benchmark:\n"
    "  --bench             time prefill and decoding on synthetic tokens; prints one JSON line\n"
    "  --bench-prompt N    prompt length for --bench (default 64); -n sets decoded tokens (default 64)\n"
    "  --bench-ttft N      also time the first token of an N-token prompt: the first N prompt tokens\n"
    "                      are evaluated and a token sampled, then the rest of the prompt (N < the\n"
    "                      --bench-prompt length); ttft_s counts the load too (default 0: not timed)\n"
    "  --bench-batch B     decode B sequences together (lucie_eval_batch): the prompt's session is\n"
    "                      forked B-1 times; decode_tok_s is then the aggregate of the B (default 1)\n"
    "  --prompt-cache FILE with --bench: start from the session saved in FILE (the depth at which the\n"
    "                      prompt and decoding are timed; FILE is not written; -c must hold it all)\n"
    "\n"
    "Information:\n"
    "  --info              print the model's configuration, weight type, size and tokenizer\n"
    "  --version           print the version and what this build computes with (SIMD, threads)\n"
    "  -h, --help          this help\n"
    "\n"
    "An option that does not apply to the chosen mode is an error (exit code 2).\n"
    "Prompt + stdout is exactly the decoding of the whole token sequence; statistics go to stderr.\n";

typedef enum { MODE_GENERATE, MODE_TOKENIZE, MODE_DETOKENIZE, MODE_BENCH, MODE_CHAT, MODE_PPL, MODE_INFO, N_MODES } run_mode;

static const char *const MODE_NAMES[N_MODES] = {"generation", "--tokenize", "--detokenize", "--bench",
                                                "--chat",     "--ppl",      "--info"};

/* The modes an option applies to (bit 1 << mode). */
#define MODE_BIT(mode) (1u << (mode))
#define SAMPLING_MODES (MODE_BIT(MODE_GENERATE) | MODE_BIT(MODE_CHAT))
#define COMPUTE_MODES (SAMPLING_MODES | MODE_BIT(MODE_BENCH) | MODE_BIT(MODE_PPL))
#define ALL_MODES ((1u << N_MODES) - 1)

#define MAX_STOP 16

typedef struct {
    const char *model_path, *prompt, *prompt_file, *tokenize_text, *detokenize_ids, *system, *ppl_file;
    const char *prompt_cache;
    const char *stop[MAX_STOP];
    int n_stop;
    run_mode mode;
    const char *mode_flag;                   /* the option that chose the mode */
    const char *misplaced[N_MODES];          /* per mode: the first option given that does not apply to it */
    unsigned misplaced_modes[N_MODES];       /* ... and the modes that option applies to */
    int n_tokens, threads, no_pin, load_mode, no_bos, special_as_text, skip_special, bench_prompt, bench_ttft,
        bench_batch;
    long context;                            /* checked against the model's maximum once it is open */
    const char *context_arg;
    int have_temp, have_top_k, have_top_p, have_penalty, have_seed;
    float temp, top_p, min_p, penalty;
    int top_k, repeat_window, kv_type, lookup;
    int variants; /* continuations of the prompt to generate, 1 by default */
    unsigned long long seed;
} options;

/* The --kv name of a KV cache type (LUCIE_KV_F32..LUCIE_KV_Q8). */
static const char *kv_type_name(int kv_type) {
    static const char *const names[] = {"default", "f32", "f16", "q8"};
    return kv_type >= 0 && kv_type <= LUCIE_KV_Q8 ? names[kv_type] : "unknown";
}

/* "q8|q4": the weight types `run quantize` writes, as the library names them. */
static const char *quantized_type_names(void) {
    static char names[64];
    size_t used = 0;
    int d;
    const lucie_dtype_info *t;
    names[0] = '\0';
    for (d = 1; (t = lucie_dtype(d)) != NULL; d++)
        if (t->quantized && used + strlen(t->name) + 2 < sizeof names)
            used += (size_t)sprintf(names + used, "%s%s", used ? "|" : "", t->name);
    return names;
}

static void print_usage(void) {
    printf(USAGE, quantized_type_names());
    fputs(USAGE_MORE, stdout);
}

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "run: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see run --help)\n");
    return 2;
}

static int parse_int(const char *s, int lo, int hi, int *out) {
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return 0;
    *out = (int)v;
    return 1;
}

static int parse_float(const char *s, float lo, float hi, float *out) {
    char *end;
    double v;
    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end || v != v || v < (double)lo || v > (double)hi) return 0;
    *out = (float)v;
    return 1;
}

/* Notes that option a (applying to the modes in `modes`) was given. */
static void option_applies(options *o, const char *a, unsigned modes) {
    int m;
    for (m = 0; m < N_MODES; m++)
        if (!(modes & MODE_BIT(m)) && !o->misplaced[m]) {
            o->misplaced[m] = a;
            o->misplaced_modes[m] = modes;
        }
}

/* Chooses the mode; a second mode option is an error. */
static int choose_mode(options *o, run_mode mode, const char *a) {
    if (o->mode_flag && o->mode != mode) {
        fprintf(stderr, "run: %s and %s are two modes; choose one (see run --help)\n", o->mode_flag, a);
        return 0;
    }
    o->mode = mode;
    o->mode_flag = a;
    return 1;
}

static int parse_args(int argc, char **argv, options *o) {
    int i;
    memset(o, 0, sizeof *o);
    o->n_tokens = -1;
    o->bench_prompt = 64;
    o->variants = 1;
    o->bench_batch = 1;
    o->prompt = "";
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE()                                                  \
    do {                                                              \
        if (!v) return usage_error("option %s needs a value", a);    \
        i++;                                                          \
    } while (0)
#define APPLIES(modes) option_applies(o, a, (modes))
#define MODE(m)                              \
    do {                                     \
        if (!choose_mode(o, (m), a)) return 2; \
    } while (0)
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            print_usage();
            exit(0);
        } else if (strcmp(a, "--version") == 0) {
            printf("%s\n", lucie_build_info());
            exit(0);
        } else if (strcmp(a, "-p") == 0) {
            NEED_VALUE();
            APPLIES(MODE_BIT(MODE_GENERATE));
            o->prompt = v;
        } else if (strcmp(a, "-f") == 0) {
            NEED_VALUE();
            APPLIES(MODE_BIT(MODE_GENERATE));
            o->prompt_file = v;
        } else if (strcmp(a, "-n") == 0) {
            NEED_VALUE();
            APPLIES(SAMPLING_MODES | MODE_BIT(MODE_BENCH));
            if (!parse_int(v, 0, 1 << 24, &o->n_tokens)) return usage_error("-n wants a token count >= 0, got '%s'", v);
        } else if (strcmp(a, "--temp") == 0) {
            NEED_VALUE();
            APPLIES(SAMPLING_MODES);
            if (!parse_float(v, 0.0f, 100.0f, &o->temp)) return usage_error("--temp wants a number in [0, 100], got '%s'", v);
            o->have_temp = 1;
        } else if (strcmp(a, "--top-k") == 0) {
            NEED_VALUE();
            APPLIES(SAMPLING_MODES);
            if (!parse_int(v, 0, 1 << 24, &o->top_k)) return usage_error("--top-k wants an integer >= 0, got '%s'", v);
            o->have_top_k = 1;
        } else if (strcmp(a, "--top-p") == 0) {
            NEED_VALUE();
            APPLIES(SAMPLING_MODES);
            if (!parse_float(v, 1e-6f, 1.0f, &o->top_p)) return usage_error("--top-p wants a number in (0, 1], got '%s'", v);
            o->have_top_p = 1;
        } else if (strcmp(a, "--min-p") == 0) {
            NEED_VALUE();
            APPLIES(SAMPLING_MODES);
            if (!parse_float(v, 0.0f, 1.0f, &o->min_p)) return usage_error("--min-p wants a number in [0, 1], got '%s'", v);
        } else if (strcmp(a, "--repeat-penalty") == 0) {
            NEED_VALUE();
            APPLIES(SAMPLING_MODES);
            if (!parse_float(v, 1e-6f, 100.0f, &o->penalty))
                return usage_error("--repeat-penalty wants a number in (0, 100], got '%s'", v);
            o->have_penalty = 1;
        } else if (strcmp(a, "--repeat-window") == 0) {
            NEED_VALUE();
            APPLIES(SAMPLING_MODES);
            if (!parse_int(v, 0, 1 << 24, &o->repeat_window))
                return usage_error("--repeat-window wants an integer >= 0, got '%s'", v);
        } else if (strcmp(a, "--seed") == 0) {
            char *end;
            NEED_VALUE();
            APPLIES(SAMPLING_MODES);
            errno = 0;
            o->seed = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') return usage_error("--seed wants an integer >= 0, got '%s'", v);
            o->have_seed = 1;
        } else if (strcmp(a, "-c") == 0) {
            char *end;
            NEED_VALUE();
            APPLIES(COMPUTE_MODES);
            errno = 0;
            o->context = strtol(v, &end, 10);
            if (end == v || *end) return usage_error("-c wants a context length in tokens, got '%s'", v);
            if (errno || o->context < 1 || o->context > INT_MAX) o->context = -1; /* out of range: said with the range */
            o->context_arg = v;
        } else if (strcmp(a, "--kv") == 0) {
            NEED_VALUE();
            for (o->kv_type = LUCIE_KV_F32; o->kv_type <= LUCIE_KV_Q8; o->kv_type++)
                if (strcmp(v, kv_type_name(o->kv_type)) == 0) break;
            if (o->kv_type > LUCIE_KV_Q8) return usage_error("--kv wants f32, f16 or q8, got '%s'", v);
        } else if (strcmp(a, "-t") == 0) {
            NEED_VALUE();
            APPLIES(COMPUTE_MODES);
            if (!parse_int(v, 1, 1024, &o->threads)) return usage_error("-t wants a thread count in 1..1024, got '%s'", v);
        } else if (strcmp(a, "--no-pin") == 0) {
            APPLIES(COMPUTE_MODES);
            o->no_pin = 1;
        } else if (strcmp(a, "--stop") == 0) {
            NEED_VALUE();
            APPLIES(SAMPLING_MODES);
            if (o->n_stop == MAX_STOP) return usage_error("at most %s stop strings", "16");
            if (!*v) return usage_error("%s: empty stop string", a);
            o->stop[o->n_stop++] = v;
        } else if (strcmp(a, "--variants") == 0) {
            NEED_VALUE();
            APPLIES(MODE_BIT(MODE_GENERATE));
            if (!parse_int(v, 1, 1000, &o->variants))
                return usage_error("--variants wants an integer in 1..1000, got '%s'", v);
        } else if (strcmp(a, "--lookup") == 0) {
            NEED_VALUE();
            APPLIES(SAMPLING_MODES);
            if (!parse_int(v, 0, 1 << 16, &o->lookup)) return usage_error("--lookup wants a token count >= 0, got '%s'", v);
        } else if (strcmp(a, "--prompt-cache") == 0) {
            NEED_VALUE();
            APPLIES(MODE_BIT(MODE_GENERATE) | MODE_BIT(MODE_BENCH));
            if (!*v) return usage_error("%s wants a file name", a);
            o->prompt_cache = v;
        } else if (strcmp(a, "--chat") == 0) {
            MODE(MODE_CHAT);
        } else if (strcmp(a, "--system") == 0) {
            NEED_VALUE();
            APPLIES(MODE_BIT(MODE_CHAT));
            o->system = v;
        } else if (strcmp(a, "--ppl") == 0) {
            NEED_VALUE();
            MODE(MODE_PPL);
            o->ppl_file = v;
        } else if (strcmp(a, "--info") == 0) {
            MODE(MODE_INFO);
        } else if (strcmp(a, "--no-mmap") == 0) {
            APPLIES(ALL_MODES);
            o->load_mode = LUCIE_LOAD_READ;
        } else if (strcmp(a, "--load") == 0) {
            NEED_VALUE();
            APPLIES(ALL_MODES);
            if (strcmp(v, "mmap") == 0) o->load_mode = LUCIE_LOAD_MMAP;
            else if (strcmp(v, "madvise") == 0) o->load_mode = LUCIE_LOAD_ADVISE;
            else if (strcmp(v, "read") == 0) o->load_mode = LUCIE_LOAD_READ;
            else return usage_error("--load wants mmap, madvise or read, got '%s'", v);
        } else if (strcmp(a, "--tokenize") == 0) {
            NEED_VALUE();
            MODE(MODE_TOKENIZE);
            o->tokenize_text = v;
        } else if (strcmp(a, "--no-bos") == 0) {
            APPLIES(MODE_BIT(MODE_TOKENIZE));
            o->no_bos = 1;
        } else if (strcmp(a, "--special-as-text") == 0) {
            APPLIES(MODE_BIT(MODE_TOKENIZE));
            o->special_as_text = 1;
        } else if (strcmp(a, "--detokenize") == 0) {
            NEED_VALUE();
            MODE(MODE_DETOKENIZE);
            o->detokenize_ids = v;
        } else if (strcmp(a, "--skip-special") == 0) {
            APPLIES(MODE_BIT(MODE_DETOKENIZE));
            o->skip_special = 1;
        } else if (strcmp(a, "--bench") == 0) {
            MODE(MODE_BENCH);
        } else if (strcmp(a, "--bench-prompt") == 0) {
            NEED_VALUE();
            APPLIES(MODE_BIT(MODE_BENCH));
            if (!parse_int(v, 1, 1 << 24, &o->bench_prompt))
                return usage_error("--bench-prompt wants a token count >= 1, got '%s'", v);
        } else if (strcmp(a, "--bench-ttft") == 0) {
            NEED_VALUE();
            APPLIES(MODE_BIT(MODE_BENCH));
            if (!parse_int(v, 1, 1 << 24, &o->bench_ttft))
                return usage_error("--bench-ttft wants a token count >= 1, got '%s'", v);
        } else if (strcmp(a, "--bench-batch") == 0) {
            NEED_VALUE();
            APPLIES(MODE_BIT(MODE_BENCH));
            if (!parse_int(v, 1, 1024, &o->bench_batch))
                return usage_error("--bench-batch wants a sequence count in 1..1024, got '%s'", v);
        } else if (a[0] == '-' && a[1] != '\0') {
            return usage_error("unknown option '%s'", a);
        } else if (!o->model_path) {
            o->model_path = a;
        } else {
            return usage_error("unexpected argument '%s'", a);
        }
#undef NEED_VALUE
#undef APPLIES
#undef MODE
    }
    if (o->misplaced[o->mode]) {
        int m, listed = 0;
        fprintf(stderr, "run: %s does not apply to %s mode (only to", o->misplaced[o->mode], MODE_NAMES[o->mode]);
        for (m = 0; m < N_MODES; m++)
            if (o->misplaced_modes[o->mode] & MODE_BIT(m)) fprintf(stderr, "%s %s", listed++ ? "," : "", MODE_NAMES[m]);
        fprintf(stderr, "; see run --help)\n");
        return 2;
    }
    if (!o->model_path) return usage_error("%s", "missing MODEL.bin");
    return 0;
}

/* -c against the model's range, once the model is known: 0 when fine. */
static int check_context(const options *o, const lucie_model *model) {
    int max = lucie_model_config(model)->max_seq_len;
    if (o->context_arg && (o->context < 1 || o->context > max)) {
        fprintf(stderr, "run: -c '%s' is out of range: this model's context is 1..%d tokens\n", o->context_arg, max);
        return 2;
    }
    if (o->mode == MODE_PPL && o->context_arg && o->context < 2) { /* a window predicts its tokens after the first */
        fprintf(stderr, "run: -c '%s' is out of range for --ppl: a window needs 2..%d tokens\n", o->context_arg, max);
        return 2;
    }
    return 0;
}

/* Reads a whole file (or stdin for "-") into a NUL-terminated buffer. */
static char *read_all(const char *path, size_t *len) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : open_read(path);
    char *buf = NULL;
    size_t cap = 0, n = 0;
    if (!f) return NULL;
    for (;;) {
        size_t got;
        if (cap - n < 4096) {
            char *bigger = (char *)realloc(buf, cap ? cap * 2 : 65536);
            if (!bigger) {
                free(buf);
                if (f != stdin) fclose(f);
                return NULL;
            }
            buf = bigger;
            cap = cap ? cap * 2 : 65536;
        }
        got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    if (f != stdin) fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Encodes text into an array from the library (free it with lucie_free);
 * prints the error. */
static int encode(const lucie_model *model, const char *text, size_t len, int flags, int **ids, int *n) {
    char err[256];
    int rc = lucie_tokenize_alloc(model, text, len, flags, ids, n, err, sizeof err);
    if (rc != LUCIE_OK) fprintf(stderr, "run: %s\n", err);
    return rc;
}

static int do_tokenize(const lucie_model *model, const options *o) {
    size_t len;
    char *text;
    int *ids = NULL, n = 0, rc, i;
    int flags = (o->special_as_text ? 0 : LUCIE_TOK_PARSE_SPECIAL) | (o->no_bos ? 0 : LUCIE_TOK_ADD_SPECIAL);
    if (strcmp(o->tokenize_text, "-") == 0) {
        text = read_all("-", &len);
        if (!text) {
            fprintf(stderr, "run: cannot read stdin\n");
            return 1;
        }
    } else {
        len = strlen(o->tokenize_text);
        text = (char *)malloc(len + 1);
        if (!text) return 1;
        memcpy(text, o->tokenize_text, len + 1);
    }
    rc = encode(model, text, len, flags, &ids, &n);
    free(text);
    if (rc != LUCIE_OK) return 1;
    for (i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
    lucie_free(ids);
    return 0;
}

static int do_detokenize(const lucie_model *model, const options *o) {
    const char *p = o->detokenize_ids;
    int *ids = NULL, n = 0, cap = 0, rc;
    size_t len = 0, size = 256;
    char *buf = NULL;
    while (*p) {
        char *end;
        long v;
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') p++;
        if (!*p) break;
        errno = 0;
        v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v >= lucie_model_config(model)->vocab_size) {
            fprintf(stderr, "run: --detokenize: '%s' is not a token id of this model\n", p);
            free(ids);
            return 2;
        }
        if (n == cap) {
            int *bigger = (int *)realloc(ids, (size_t)(cap = cap ? cap * 2 : 64) * sizeof *ids);
            if (!bigger) {
                free(ids);
                return 1;
            }
            ids = bigger;
        }
        ids[n++] = (int)v;
        p = end;
    }
    for (;;) {
        buf = (char *)malloc(size);
        if (!buf) break;
        rc = lucie_detokenize(model, ids, n, o->skip_special ? LUCIE_DETOK_SKIP_SPECIAL : 0, buf, size, &len);
        if (rc != LUCIE_ESMALL) break;
        free(buf);
        size = len + 1;
    }
    if (!buf || rc != LUCIE_OK) {
        fprintf(stderr, "run: cannot decode: %s\n", lucie_status_string(buf ? rc : LUCIE_ENOMEM));
        free(buf);
        free(ids);
        return 1;
    }
    fwrite(buf, 1, len, stdout);
    free(buf);
    free(ids);
    return 0;
}

static int print_piece(const char *text, size_t len, int token, void *user) {
    (void)token;
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

/* A seed from the clock, when none is given: nanoseconds where the system
 * has them, so that two runs in the same second differ. */
static unsigned long long clock_seed(void) {
#ifdef _WIN32
    LARGE_INTEGER c;
    QueryPerformanceCounter(&c);
    return ((unsigned long long)time(NULL) * 1000003ull ^ (unsigned long long)c.QuadPart) % 4294967296ull;
#else
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec) % 4294967296ull;
#endif
}

/* The session's options from the model's defaults and the command line. */
static void session_options(const lucie_model *model, const options *o, lucie_session_options *so) {
    lucie_session_defaults(model, so);
    so->context = (int)o->context;
    so->n_threads = o->threads;
    so->no_pinning = o->no_pin;
    so->kv_type = o->kv_type;
    if (o->have_temp) so->temperature = o->temp;
    if (o->have_top_k) so->top_k = o->top_k;
    if (o->have_top_p) so->top_p = o->top_p;
    if (o->have_penalty) so->repetition_penalty = o->penalty;
    so->min_p = o->min_p;
    so->repetition_window = o->repeat_window;
    so->seed = o->have_seed ? o->seed : clock_seed();
}

/* When tokens were drawn with a seed from the clock, says which (stderr), so
 * that a good sample can be reproduced with --seed. */
static void print_clock_seed(const options *o, const lucie_session_options *so) {
    if (!o->have_seed && so->temperature > 0.0f)
        fprintf(stderr, "seed: %llu (use --seed %llu to repeat)\n", so->seed, so->seed);
}

static void print_stats(const lucie_stats *st, double load_seconds, int lookup) {
    fprintf(stderr, "\nprompt: %d tokens, %.2f tok/s | generated: %d tokens, %.2f tok/s | load: %.3f s\n",
            st->n_prompt, st->prompt_seconds > 0 ? st->n_prompt / st->prompt_seconds : 0.0, st->n_generated,
            st->generate_seconds > 0 ? st->n_generated / st->generate_seconds : 0.0, load_seconds);
    if (lookup > 0)
        fprintf(stderr, "lookup: %d drafted, %d accepted (%.1f%%) | %d forward passes, %.2f tokens per pass\n",
                st->n_drafted, st->n_accepted, st->n_drafted > 0 ? 100.0 * st->n_accepted / st->n_drafted : 0.0,
                st->n_forward, st->n_forward > 0 ? (double)st->n_generated / st->n_forward : 0.0);
}

/* ---- the prompt cache (--prompt-cache FILE) ----
 * Like llama.cpp's --prompt-cache: FILE holds a saved session (lucie.h's
 * lucie_session_save) of an earlier prompt. When it belongs to this model,
 * the longest common prefix of its tokens and this prompt's stays in the
 * cache (the rest of the saved cache is rewound away) and only the tokens
 * after it are evaluated; at least one always is, since the file holds no
 * logits. The evaluated prompt is then saved back, before generation. A
 * session file that does not fit (another model, a longer context) is
 * reported, not used, and replaced; a file that is not a session file at all
 * is left alone (-1: a mistyped name must not overwrite a model). */
static int reuse_prompt_cache(lucie_session *session, const char *path, const int *ids, int n_ids,
                              unsigned long long seed) {
    int n_cached, keep = 0, *cached;
    char magic[8];
    FILE *f = open_read(path);
    if (!f) return 0; /* no cache yet */
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "LUCIESES", 8) != 0) {
        fclose(f);
        fprintf(stderr, "run: --prompt-cache: '%s' exists and is not a session file; not overwriting it\n", path);
        return -1;
    }
    fclose(f);
    if (lucie_session_load(session, path) != LUCIE_OK) {
        fprintf(stderr, "run: prompt cache not used: %s\n", lucie_session_error(session));
        return 0;
    }
    lucie_session_set_seed(session, seed); /* this run's randomness, not the saved run's */
    n_cached = lucie_session_position(session);
    cached = (int *)malloc((size_t)(n_cached > 0 ? n_cached : 1) * sizeof *cached);
    if (cached) {
        lucie_session_tokens(session, cached, n_cached);
        while (keep < n_cached && keep < n_ids - 1 && cached[keep] == ids[keep]) keep++;
    }
    free(cached);
    lucie_session_rewind(session, keep);
    return keep;
}

/* Evaluates the prompt into the session (reusing and refreshing the prompt
 * cache when there is one): *reused gets the cached tokens kept, -1 when the
 * cache file was refused. */
static int evaluate_prompt(const lucie_model *model, lucie_session *session, const options *o, const int *ids,
                           int n_ids, unsigned long long seed, int *reused, lucie_stats *stats) {
    float *logits = (float *)malloc((size_t)lucie_model_config(model)->vocab_size * sizeof *logits);
    double t0 = lucie_time_seconds();
    int rc;
    *reused = o->prompt_cache ? reuse_prompt_cache(session, o->prompt_cache, ids, n_ids, seed) : 0;
    rc = *reused < 0 ? LUCIE_EIO : logits ? lucie_eval(session, ids + *reused, n_ids - *reused, logits, 0) : LUCIE_ENOMEM;
    free(logits);
    if (rc != LUCIE_OK) return rc;
    stats->n_prompt = n_ids - *reused;
    stats->prompt_seconds = lucie_time_seconds() - t0;
    if (o->prompt_cache) {
        if (lucie_session_save(session, o->prompt_cache) != LUCIE_OK)
            fprintf(stderr, "run: prompt cache not saved: %s\n", lucie_session_error(session));
        fprintf(stderr, "prompt cache: %d of %d prompt tokens reused\n", *reused, n_ids);
    }
    return LUCIE_OK;
}

/* --variants N: forks of the evaluated prompt, one after the other (the last
 * variant continues the session itself), variant i seeded with seed + i - 1. */
static int generate_variants(lucie_session *session, const options *o, const lucie_generate_options *go,
                             unsigned long long seed, lucie_stats *stats) {
    int v, rc = LUCIE_OK;
    stats->n_generated = stats->n_forward = stats->n_drafted = stats->n_accepted = 0;
    stats->generate_seconds = 0.0;
    for (v = 0; v < o->variants && rc == LUCIE_OK; v++) {
        lucie_session *variant = session;
        lucie_stats one;
        char err[256];
        if (v + 1 < o->variants && lucie_session_fork(session, &variant, err, sizeof err) != LUCIE_OK) {
            fprintf(stderr, "run: %s\n", err);
            return LUCIE_ENOMEM;
        }
        lucie_session_set_seed(variant, seed + (unsigned long long)v);
        if (o->variants > 1) {
            printf("%s--- variant %d of %d (seed %llu) ---\n", v ? "\n" : "", v + 1, o->variants,
                   seed + (unsigned long long)v);
            fflush(stdout);
        }
        rc = lucie_generate_tokens(variant, NULL, 0, go, print_piece, NULL, &one);
        if (rc != LUCIE_OK) fprintf(stderr, "run: %s\n", lucie_session_error(variant));
        if (one.stop_reason == LUCIE_STOP_CONTEXT_FULL) stats->stop_reason = LUCIE_STOP_CONTEXT_FULL;
        stats->n_generated += one.n_generated;
        stats->generate_seconds += one.generate_seconds;
        stats->n_forward += one.n_forward;
        stats->n_drafted += one.n_drafted;
        stats->n_accepted += one.n_accepted;
        if (stats->stop_reason != LUCIE_STOP_CONTEXT_FULL) stats->stop_reason = one.stop_reason;
        if (variant != session) lucie_session_free(variant);
    }
    if (o->variants > 1) printf("\n");
    return rc;
}

static int do_generate(const lucie_model *model, const options *o, double load_seconds) {
    lucie_session_options so;
    lucie_session *session;
    lucie_generate_options go;
    lucie_stats stats;
    char err[256];
    char *file_prompt = NULL;
    const char *prompt = o->prompt;
    size_t prompt_len = strlen(o->prompt);
    int rc, *ids = NULL, n_ids = 0, reused = 0;
    if (o->prompt_file) {
        file_prompt = read_all(o->prompt_file, &prompt_len);
        if (!file_prompt) {
            fprintf(stderr, "run: cannot read prompt file '%s'\n", o->prompt_file);
            return 1;
        }
        prompt = file_prompt;
    }
    rc = encode(model, prompt, prompt_len, LUCIE_TOK_ADD_SPECIAL | LUCIE_TOK_PARSE_SPECIAL, &ids, &n_ids);
    free(file_prompt);
    if (rc != LUCIE_OK) return 1;
    if (n_ids == 0) {
        fprintf(stderr, "run: the prompt encodes to no tokens (this model adds no BOS)\n");
        lucie_free(ids);
        return 1;
    }
    session_options(model, o, &so);
    if (lucie_session_new(model, &so, &session, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "run: %s\n", err);
        lucie_free(ids);
        return 1;
    }
    memset(&go, 0, sizeof go);
    memset(&stats, 0, sizeof stats);
    go.max_tokens = o->n_tokens < 0 ? 256 : o->n_tokens;
    go.stop = o->stop;
    go.n_stop = o->n_stop;
    go.lookup = o->lookup;
    if (o->prompt_cache || o->variants > 1) {
        /* the prompt is evaluated here (and saved); generation continues from the session */
        rc = evaluate_prompt(model, session, o, ids, n_ids, so.seed, &reused, &stats);
        if (rc == LUCIE_OK) rc = generate_variants(session, o, &go, so.seed, &stats);
        else if (reused >= 0)
            fprintf(stderr, "run: %s\n", rc == LUCIE_ENOMEM ? "out of memory" : lucie_session_error(session));
    } else {
        rc = lucie_generate_tokens(session, ids, n_ids, &go, print_piece, NULL, &stats);
        if (rc != LUCIE_OK) fprintf(stderr, "run: %s\n", lucie_session_error(session));
    }
    fflush(stdout);
    if (rc == LUCIE_OK) {
        print_stats(&stats, load_seconds, o->lookup);
        print_clock_seed(o, &so);
        if (stats.stop_reason == LUCIE_STOP_CONTEXT_FULL) {
            fprintf(stderr, "run: %s: the output stopped before -n tokens (use a larger -c)\n",
                    lucie_session_error(session));
            rc = LUCIE_ECONTEXT;
        }
    }
    lucie_session_free(session);
    lucie_free(ids);
    return rc == LUCIE_OK ? 0 : 1;
}

/* ---- chat ---- */

static volatile sig_atomic_t interrupted = 0;

static void on_sigint(int sig) {
    (void)sig;
    if (interrupted) {
        /* second Ctrl-C while the first is still pending: leave now */
        signal(SIGINT, SIG_DFL);
        raise(SIGINT);
    }
    interrupted = 1;
    signal(SIGINT, on_sigint);
}

static int print_piece_interruptible(const char *text, size_t len, int token, void *user) {
    (void)token;
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return interrupted != 0;
}

/* Reads one line from stdin without its newline; NULL at end of input. */
static char *read_line(void) {
    size_t cap = 256, n = 0;
    char *line = (char *)malloc(cap);
    int ch;
    if (!line) return NULL;
    while ((ch = getchar()) != EOF && ch != '\n') {
        if (ch == '\r') continue; /* a Windows line end (stdin is binary there) */
        if (n + 2 > cap) {
            char *bigger = (char *)realloc(line, cap *= 2);
            if (!bigger) {
                free(line);
                return NULL;
            }
            line = bigger;
        }
        line[n++] = (char)ch;
    }
    if (ch == EOF && n == 0) {
        free(line);
        return NULL;
    }
    line[n] = '\0';
    return line;
}

static void print_turn_stats(const lucie_session *session, const lucie_stats *stats) {
    fprintf(stderr, "[%d tokens, %.2f tok/s; %d/%d context used]\n", stats->n_generated,
            stats->generate_seconds > 0 ? stats->n_generated / stats->generate_seconds : 0.0,
            lucie_session_position(session), lucie_session_context(session));
}

static int do_chat(const lucie_model *model, const options *o, double load_seconds) {
    lucie_session_options so;
    lucie_session *session;
    char err[256];
    int turn = 0, rc = 0;
    (void)load_seconds;
    if (!lucie_chat_template(model)) {
        fprintf(stderr, "run: this model has no chat template (use an instruct model, or -p for completion)\n");
        return 1;
    }
    session_options(model, o, &so);
    if (lucie_session_new(model, &so, &session, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "run: %s\n", err);
        return 1;
    }
    signal(SIGINT, on_sigint);
    fprintf(stderr, "chat: type a message, /reset to start over, /quit or end of input to leave\n");
    print_clock_seed(o, &so);
    for (;;) {
        lucie_chat_message msgs[2];
        lucie_generate_options go;
        lucie_stats stats;
        int n_msgs = 0, *ids = NULL, n_ids = 0, flags = LUCIE_CHAT_GENERATION_PROMPT;
        char *line;
        fprintf(stderr, "> ");
        fflush(stderr);
        interrupted = 0;
        line = read_line();
        if (!line || strcmp(line, "/quit") == 0) {
            free(line);
            break;
        }
        if (strcmp(line, "/reset") == 0) {
            lucie_session_rewind(session, 0);
            turn = 0;
            fprintf(stderr, "(conversation reset)\n");
            free(line);
            continue;
        }
        if (turn == 0 && o->system) {
            msgs[n_msgs].role = "system";
            msgs[n_msgs++].content = o->system;
        }
        msgs[n_msgs].role = "user";
        msgs[n_msgs++].content = line;
        if (turn > 0) flags |= LUCIE_CHAT_CONTINUE;
        rc = lucie_chat_tokens_alloc(model, msgs, n_msgs, flags, &ids, &n_ids, err, sizeof err);
        free(line);
        if (rc != LUCIE_OK) {
            fprintf(stderr, "run: %s\n", err);
            rc = 1;
            break;
        }
        memset(&go, 0, sizeof go);
        go.max_tokens = o->n_tokens < 0 ? lucie_session_context(session) : o->n_tokens; /* default: the whole reply */
        go.stop = o->stop;
        go.n_stop = o->n_stop;
    go.lookup = o->lookup;
        go.fresh_text = 1;
        rc = lucie_generate_tokens(session, ids, n_ids, &go, print_piece_interruptible, NULL, &stats);
        lucie_free(ids);
        printf("\n");
        fflush(stdout);
        if (rc == LUCIE_ECONTEXT || (rc == LUCIE_OK && stats.stop_reason == LUCIE_STOP_CONTEXT_FULL)) {
            if (rc == LUCIE_OK) print_turn_stats(session, &stats);
            fprintf(stderr, "run: the conversation no longer fits in the context (%d tokens); /reset to start over "
                            "or use a larger -c\n", lucie_session_context(session));
            rc = 0;
            continue;
        }
        if (rc != LUCIE_OK) {
            fprintf(stderr, "run: %s\n", lucie_session_error(session));
            rc = 1;
            break;
        }
        /* Close the assistant turn as the template would if it did not end on
         * its own (max tokens, Ctrl-C, stop string). */
        if (stats.stop_reason != LUCIE_STOP_EOS && lucie_model_config(model)->n_eos > 0 &&
            lucie_session_position(session) < lucie_session_context(session)) {
            int eot = lucie_model_config(model)->eos_ids[0];
            float *logits = (float *)malloc((size_t)lucie_model_config(model)->vocab_size * sizeof *logits);
            if (logits) lucie_eval(session, &eot, 1, logits, 0);
            free(logits);
        }
        if (interrupted) fprintf(stderr, "(stopped)\n");
        print_turn_stats(session, &stats);
        turn++;
    }
    signal(SIGINT, SIG_DFL);
    lucie_session_free(session);
    return rc;
}

/* ---- perplexity ----
 * The text is encoded once (BOS added); the ids are cut into windows of
 * -c tokens (default 512) evaluated independently from an empty cache, and
 * each window predicts its own tokens 2..n. */
static int do_ppl(const lucie_model *model, const options *o) {
    const lucie_config *c = lucie_model_config(model);
    lucie_session_options so;
    lucie_session *session;
    char err[256], *text;
    size_t len;
    int *ids, n_ids, window = o->context ? (int)o->context : 512, start, predicted = 0, windows = 0, rc = 0;
    float *logits;
    double nll = 0.0;
    text = read_all(o->ppl_file, &len);
    if (!text) {
        fprintf(stderr, "run: cannot read '%s'\n", o->ppl_file);
        return 1;
    }
    rc = encode(model, text, len, LUCIE_TOK_ADD_SPECIAL | LUCIE_TOK_PARSE_SPECIAL, &ids, &n_ids);
    free(text);
    if (rc != LUCIE_OK) return 1;
    if (n_ids < 2) {
        fprintf(stderr, "run: '%s' is too short for a perplexity (fewer than 2 tokens)\n", o->ppl_file);
        lucie_free(ids);
        return 1;
    }
    if (window > c->max_seq_len) window = c->max_seq_len;
    if (window < 2) {
        fprintf(stderr, "run: a perplexity needs windows of 2 tokens or more; this model's context is %d\n", window);
        lucie_free(ids);
        return 1;
    }
    session_options(model, o, &so);
    so.context = window;
    logits = (float *)malloc((size_t)window * c->vocab_size * sizeof *logits);
    if (!logits || lucie_session_new(model, &so, &session, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "run: %s\n", logits ? err : "out of memory");
        lucie_free(ids);
        free(logits);
        return 1;
    }
    for (start = 0; start + 1 < n_ids; start += window) {
        int n = n_ids - start < window ? n_ids - start : window, t;
        lucie_session_rewind(session, 0);
        if (lucie_eval(session, ids + start, n, logits, LUCIE_EVAL_ALL_LOGITS) != LUCIE_OK) {
            fprintf(stderr, "run: %s\n", lucie_session_error(session));
            rc = 1;
            break;
        }
        for (t = 0; t + 1 < n; t++) {
            const float *l = logits + (size_t)t * c->vocab_size;
            double max = l[0], sum = 0.0;
            int v;
            for (v = 1; v < c->vocab_size; v++)
                if (l[v] > max) max = l[v];
            for (v = 0; v < c->vocab_size; v++) sum += exp((double)l[v] - max);
            nll -= (double)l[ids[start + t + 1]] - max - log(sum);
            predicted++;
        }
        windows++;
    }
    if (rc == 0) printf("perplexity %.6f tokens %d windows %d\n", exp(nll / predicted), predicted, windows);
    lucie_session_free(session);
    lucie_free(ids);
    free(logits);
    return rc;
}

/* ---- --bench ----
 * A synthetic prompt of --bench-prompt tokens, then -n greedy decode steps,
 * timed apart. Optionally: the session starts from a saved cache
 * (--prompt-cache: decoding at depth), the first token of a shorter prompt is
 * timed on the way (--bench-ttft), or B sequences forked from the prompt are
 * decoded together (--bench-batch). */

typedef struct {
    int depth;            /* tokens in the cache before the prompt (from --prompt-cache) */
    double prefill_s;     /* evaluating the prompt, sampling excluded */
    double ttft_s;        /* --bench-ttft: load + session + first N tokens + one sample */
    double decode_s;      /* the decode steps of all the sequences */
} bench_times;

/* The synthetic prompt: ids spread over the vocabulary (speed does not depend on values). */
static void bench_prompt_ids(int *ids, int n, int vocab_size) {
    int i;
    for (i = 0; i < n; i++) ids[i] = (int)((1000u + 7919u * (unsigned)i) % (unsigned)vocab_size);
}

/* Evaluates the prompt, in two calls when the first token of its first `ttft`
 * tokens is timed (t_start: when the session was started). */
static int bench_prefill(lucie_session *session, const int *prompt, int n, int ttft, float *logits, double t_start,
                         bench_times *times) {
    double t0 = lucie_time_seconds();
    int first = ttft > 0 ? ttft : n, rc = lucie_eval(session, prompt, first, logits, 0);
    times->prefill_s = lucie_time_seconds() - t0;
    if (rc != LUCIE_OK || ttft <= 0) return rc;
    rc = lucie_sample(session, logits);
    times->ttft_s += lucie_time_seconds() - t_start;
    if (rc < 0) return rc;
    t0 = lucie_time_seconds();
    rc = lucie_eval(session, prompt + first, n - first, logits, 0);
    times->prefill_s += lucie_time_seconds() - t0;
    return rc;
}

/* n_gen greedy steps of one session, each timed from its token to its logits. */
static int bench_decode(lucie_session *session, int n_gen, float *logits, bench_times *times) {
    int i, token, rc = LUCIE_OK;
    for (i = 0; i < n_gen && rc == LUCIE_OK; i++) {
        double t0;
        token = lucie_sample(session, logits);
        if (token < 0) return token;
        t0 = lucie_time_seconds();
        rc = lucie_eval(session, &token, 1, logits, 0);
        times->decode_s += lucie_time_seconds() - t0;
    }
    return rc;
}

/* n_gen steps of n_seq sessions evaluated together (lucie_eval_batch), which
 * start from the logits in the first vocab floats of `logits` (n_seq x vocab). */
static int bench_decode_batch(lucie_session **sessions, int n_seq, int n_gen, float *logits, int vocab,
                              bench_times *times) {
    lucie_batch_entry *entries = (lucie_batch_entry *)malloc((size_t)n_seq * sizeof *entries);
    int *tokens = (int *)malloc((size_t)n_seq * sizeof *tokens);
    int i, b, rc = entries && tokens ? LUCIE_OK : LUCIE_ENOMEM;
    for (b = 1; b < n_seq && rc == LUCIE_OK; b++) memcpy(logits + (size_t)b * vocab, logits, (size_t)vocab * sizeof *logits);
    for (i = 0; i < n_gen && rc == LUCIE_OK; i++) {
        double t0;
        for (b = 0; b < n_seq && rc == LUCIE_OK; b++) {
            tokens[b] = lucie_sample(sessions[b], logits + (size_t)b * vocab);
            if (tokens[b] < 0) rc = tokens[b];
            entries[b].session = sessions[b];
            entries[b].tokens = tokens + b;
            entries[b].n_tokens = 1;
            entries[b].logits = logits + (size_t)b * vocab;
        }
        if (rc != LUCIE_OK) break;
        t0 = lucie_time_seconds();
        rc = lucie_eval_batch(entries, n_seq);
        times->decode_s += lucie_time_seconds() - t0;
    }
    free(entries);
    free(tokens);
    return rc;
}

static int do_bench(const lucie_model *model, const options *o, double load_seconds) {
    const lucie_config *c = lucie_model_config(model);
    lucie_session_options so;
    lucie_session **sessions;
    char err[256];
    int n_gen = o->n_tokens < 0 ? 64 : o->n_tokens, n_seq = o->bench_batch, rc = LUCIE_OK, b, made = 0;
    int *prompt = (int *)malloc((size_t)o->bench_prompt * sizeof *prompt);
    float *logits = (float *)malloc((size_t)n_seq * (size_t)c->vocab_size * sizeof *logits);
    bench_times times = {0, 0.0, 0.0, 0.0};
    double t_start;
    sessions = (lucie_session **)calloc((size_t)n_seq, sizeof *sessions);
    if (!prompt || !logits || !sessions) {
        fprintf(stderr, "run: out of memory\n");
        free(prompt);
        free(logits);
        free(sessions);
        return 1;
    }
    if (o->bench_ttft >= o->bench_prompt) {
        fprintf(stderr, "run: --bench-ttft %d must be shorter than the --bench-prompt length (%d)\n", o->bench_ttft,
                o->bench_prompt);
        rc = 2;
    } else if (o->prompt_cache && o->context == 0) {
        fprintf(stderr, "run: --bench with --prompt-cache needs -c (the saved tokens + the prompt + -n)\n");
        rc = 2;
    }
    session_options(model, o, &so);
    so.temperature = 0.0f;
    so.repetition_penalty = 1.0f;
    if (so.context == 0) so.context = o->bench_prompt + n_gen;
    if (rc == LUCIE_OK && o->bench_prompt + n_gen > so.context) {
        fprintf(stderr, "run: --bench needs a context of at least %d tokens\n", o->bench_prompt + n_gen);
        rc = 2;
    }
    if (rc != LUCIE_OK) {
        free(prompt);
        free(logits);
        free(sessions);
        return rc;
    }
    bench_prompt_ids(prompt, o->bench_prompt, c->vocab_size);
    times.ttft_s = load_seconds;
    t_start = lucie_time_seconds();
    if (lucie_session_new(model, &so, &sessions[0], err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "run: %s\n", err);
        free(prompt);
        free(logits);
        free(sessions);
        return 1;
    }
    made = 1;
    if (o->prompt_cache) {
        rc = lucie_session_load(sessions[0], o->prompt_cache);
        times.depth = lucie_session_position(sessions[0]);
        if (rc == LUCIE_OK && times.depth + o->bench_prompt + n_gen > so.context) {
            snprintf(err, sizeof err, "-c %d does not hold the %d saved tokens + the prompt + -n", so.context,
                     times.depth);
            rc = LUCIE_ECONTEXT;
        }
    }
    if (rc == LUCIE_OK) rc = bench_prefill(sessions[0], prompt, o->bench_prompt, o->bench_ttft, logits, t_start, &times);
    for (b = 1; b < n_seq && rc == LUCIE_OK; b++) {
        rc = lucie_session_fork(sessions[0], &sessions[b], err, sizeof err);
        if (rc == LUCIE_OK) made++;
    }
    if (rc == LUCIE_OK && n_seq == 1) rc = bench_decode(sessions[0], n_gen, logits, &times);
    else if (rc == LUCIE_OK) rc = bench_decode_batch(sessions, n_seq, n_gen, logits, c->vocab_size, &times);
    if (rc != LUCIE_OK) {
        fprintf(stderr, "run: %s\n", rc == LUCIE_ECONTEXT || made < n_seq ? err : lucie_session_error(sessions[0]));
    } else {
        printf("{\"load_s\": %.4f, \"depth\": %d, \"prompt_tokens\": %d, \"prefill_tok_s\": %.4f, "
               "\"ttft_tokens\": %d, \"ttft_s\": %.4f, \"batch\": %d, \"gen_tokens\": %d, \"decode_tok_s\": %.4f, "
               "\"threads\": %d, \"kv\": \"%s\"}\n",
               load_seconds, times.depth, o->bench_prompt, o->bench_prompt / times.prefill_s, o->bench_ttft,
               o->bench_ttft > 0 ? times.ttft_s : 0.0, n_seq, n_gen,
               n_gen > 0 ? (double)n_seq * n_gen / times.decode_s : 0.0, lucie_session_threads(sessions[0]),
               kv_type_name(lucie_session_kv_type(sessions[0])));
    }
    for (b = 0; b < made; b++) lucie_session_free(sessions[b]);
    free(sessions);
    free(prompt);
    free(logits);
    return rc == LUCIE_OK ? 0 : 1;
}

/* The size of a file in bytes (64-bit everywhere), or -1. */
static double file_bytes(const char *path) {
    FILE *f = open_read(path);
    double size = -1.0;
    if (!f) return -1.0;
#ifdef _WIN32
    if (_fseeki64(f, 0, SEEK_END) == 0) size = (double)_ftelli64(f);
#else
    if (fseeko(f, 0, SEEK_END) == 0) size = (double)ftello(f);
#endif
    fclose(f);
    return size;
}

static int stderr_is_terminal(void) {
#ifdef _WIN32
    return _isatty(_fileno(stderr));
#else
    return isatty(fileno(stderr));
#endif
}

static void human_bytes(double bytes, char *out, size_t size) {
    if (bytes >= 1e9) snprintf(out, size, "%.2f GB", bytes / 1e9);
    else if (bytes >= 1e6) snprintf(out, size, "%.1f MB", bytes / 1e6);
    else snprintf(out, size, "%.0f KB", bytes / 1e3);
}

/* Quantization progress: on a terminal one line that updates itself; in a
 * pipe or log a plain line every PROGRESS_LINE_SECONDS at most. */
#define PROGRESS_LINE_SECONDS 10.0

typedef struct {
    int terminal;
    double total_bytes, start, last_line;
} progress_state;

static void print_progress(const char *tensor, double fraction, void *user) {
    progress_state *p = (progress_state *)user;
    double now = lucie_time_seconds(), elapsed = now - p->start, done = fraction * p->total_bytes;
    double rate = elapsed > 0 ? done / elapsed : 0.0, left = rate > 0 ? (p->total_bytes - done) / rate : 0.0;
    char done_text[32], total_text[32];
    (void)tensor;
    if (!p->terminal && now - p->last_line < PROGRESS_LINE_SECONDS) return;
    p->last_line = now;
    human_bytes(done, done_text, sizeof done_text);
    human_bytes(p->total_bytes, total_text, sizeof total_text);
    fprintf(stderr, "%squantize: %5.1f%%  %s / %s  %.0f MB/s  ETA %.0f s%s", p->terminal ? "\r" : "",
            100.0 * fraction, done_text, total_text, rate / 1e6, left, p->terminal ? "   " : "\n");
    fflush(stderr);
}

/* run quantize IN.bin OUT.bin TYPE */
static int do_quantize(int argc, char **argv) {
    char err[256];
    int dtype, i;
    progress_state progress;
    for (i = 2; i < argc; i++)
        if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "run: %s does not apply to quantize mode (usage: run quantize IN.bin OUT.bin %s)\n",
                    argv[i], quantized_type_names());
            return 2;
        }
    if (argc != 5) return usage_error("usage: run quantize IN.bin OUT.bin %s", quantized_type_names());
    dtype = lucie_dtype_from_name(argv[4]);
    if (dtype < 0 || !lucie_dtype(dtype)->quantized) {
        fprintf(stderr, "run: quantize: unknown type '%s' (%s) (see run --help)\n", argv[4], quantized_type_names());
        return 2;
    }
    progress.terminal = stderr_is_terminal();
    progress.total_bytes = file_bytes(argv[2]);
    progress.start = progress.last_line = lucie_time_seconds();
    if (lucie_quantize_file(argv[2], argv[3], dtype, print_progress, &progress, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "%srun: %s\n", progress.terminal ? "\n" : "", err);
        return 1;
    }
    fprintf(stderr, "%swrote %s (%s, %.1f s)\n", progress.terminal ? "\n" : "", argv[3], argv[4],
            lucie_time_seconds() - progress.start);
    return 0;
}

/* ---- --info ---- */

static int do_info(const lucie_model *model, const options *o) {
    const lucie_config *c = lucie_model_config(model);
    double q_dim = (double)c->n_heads * c->head_dim, kv_dim = (double)c->n_kv_heads * c->head_dim;
    double per_layer = c->dim * (2.0 * q_dim + 2.0 * kv_dim) + 3.0 * c->dim * c->hidden_dim + 2.0 * c->dim;
    double params = c->n_layers * per_layer + (double)c->vocab_size * c->dim * (c->tie_word_embeddings ? 1 : 2) + c->dim;
    double size = file_bytes(o->model_path);
    char size_text[32];
    int i;
    human_bytes(size, size_text, sizeof size_text);
    printf("file: %s (%s, %.0f bytes)\n", o->model_path, size_text, size);
    printf("weights: %s%s\n", lucie_dtype(c->weight_type) ? lucie_dtype(c->weight_type)->name : "unknown",
           c->weight_type == LUCIE_DT_Q4 ? " (embedding and lm_head q8)" : "");
    printf("parameters: %.0f (%.2f %s)\n", params, params >= 1e9 ? params / 1e9 : params / 1e6, params >= 1e9 ? "B" : "M");
    printf("layers: %d, dim: %d, hidden_dim: %d, heads: %d, kv_heads: %d, head_dim: %d\n", c->n_layers, c->dim,
           c->hidden_dim, c->n_heads, c->n_kv_heads, c->head_dim);
    printf("context: %d tokens (maximum); rope_theta: %g, rms_norm_eps: %g\n", c->max_seq_len, c->rope_theta,
           (double)c->rms_norm_eps);
    printf("vocabulary: %d tokens; bos: %d; eos:", c->vocab_size, c->bos_id);
    for (i = 0; i < c->n_eos; i++) printf(" %d", c->eos_ids[i]);
    printf("%s; tied embeddings: %s\n", c->n_eos ? "" : " none", c->tie_word_embeddings ? "yes" : "no");
    printf("chat template: %s\n", lucie_chat_template(model) ? "yes" : "no");
    printf("generation defaults: %s, temperature %g, top_p %g, top_k %d, repetition_penalty %g\n",
           c->do_sample ? "sampling" : "greedy", (double)c->temperature, (double)c->top_p, c->top_k,
           (double)c->repetition_penalty);
    return 0;
}

int main(int argc, char **argv) {
    options o;
    lucie_model *model;
    lucie_open_options oo;
    char err[256];
    double t0, load_seconds;
    int rc;
#ifdef _WIN32
    {
        char **utf8 = utf8_arguments(&argc);
        if (utf8) argv = utf8;
        setup_console();
    }
#endif
#ifdef SIGXFSZ
    signal(SIGXFSZ, SIG_IGN); /* a file-size limit then fails the write with a message, not a kill */
#endif
    if (argc > 1 && strcmp(argv[1], "quantize") == 0) return do_quantize(argc, argv);
    rc = parse_args(argc, argv, &o);
    if (rc) return rc;
    memset(&oo, 0, sizeof oo);
    oo.load_mode = o.load_mode;
    t0 = lucie_time_seconds();
    if (lucie_open(o.model_path, &oo, &model, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "run: %s\n", err);
        return 1;
    }
    load_seconds = lucie_time_seconds() - t0;
    rc = check_context(&o, model);
    if (rc) {
        lucie_close(model);
        return rc;
    }
    switch (o.mode) {
    case MODE_INFO: rc = do_info(model, &o); break;
    case MODE_TOKENIZE: rc = do_tokenize(model, &o); break;
    case MODE_DETOKENIZE: rc = do_detokenize(model, &o); break;
    case MODE_BENCH: rc = do_bench(model, &o, load_seconds); break;
    case MODE_CHAT: rc = do_chat(model, &o, load_seconds); break;
    case MODE_PPL: rc = do_ppl(model, &o); break;
    default: rc = do_generate(model, &o, load_seconds); break;
    }
    lucie_close(model);
    return rc;
}
