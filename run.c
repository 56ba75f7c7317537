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
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lucie.h"

static const char *USAGE =
    "usage: run MODEL.bin [options]\n"
    "\n"
    "Generation (default mode):\n"
    "  -p TEXT             prompt (default: empty, i.e. BOS only)\n"
    "  -f FILE             read the prompt from FILE\n"
    "  -n N                number of tokens to generate (default 256; stops early at an eos id)\n"
    "  --temp T            temperature, 0 = greedy (default: the model's generation_config)\n"
    "  --top-k K           keep the K most likely tokens, 0 = off (default: model's)\n"
    "  --top-p P           nucleus sampling threshold in (0,1] (default: model's)\n"
    "  --min-p P           drop tokens below P x the top probability (default 0 = off)\n"
    "  --repeat-penalty R  repetition penalty, 1 = off (default: model's)\n"
    "  --repeat-window N   penalise only the last N tokens, 0 = all (default 0)\n"
    "  --seed S            random seed (default: from the clock)\n"
    "  -c CTX              context length in tokens (default: min(model maximum, 4096))\n"
    "  -t N                threads (default: all cores)\n"
    "  --no-mmap           read the model into memory instead of mapping it\n"
    "\n"
    "Tokenizer:\n"
    "  --tokenize TEXT     print the token ids of TEXT ('-' reads stdin), BOS included\n"
    "  --no-bos            with --tokenize: no special tokens added\n"
    "  --detokenize IDS    print the text of the space-separated ids (no newline added)\n"
    "  --skip-special      with --detokenize: leave special tokens out\n"
    "\n"
    "Benchmark:\n"
    "  --bench             time prefill and decoding on synthetic tokens; prints one JSON line\n"
    "  --bench-prompt N    prompt length for --bench (default 64); -n sets decoded tokens (default 64)\n"
    "\n"
    "  -h, --help          this help\n"
    "\n"
    "Prompt + stdout is exactly the decoding of the whole token sequence; statistics go to stderr.\n";

typedef enum { MODE_GENERATE, MODE_TOKENIZE, MODE_DETOKENIZE, MODE_BENCH } run_mode;

typedef struct {
    const char *model_path, *prompt, *prompt_file, *tokenize_text, *detokenize_ids;
    run_mode mode;
    int n_tokens, context, threads, no_mmap, no_bos, skip_special, bench_prompt;
    int have_temp, have_top_k, have_top_p, have_penalty, have_seed;
    float temp, top_p, min_p, penalty;
    int top_k, repeat_window;
    unsigned long long seed;
} options;

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
    if (errno || end == s || *end || v != v || v < lo || v > hi) return 0;
    *out = (float)v;
    return 1;
}

static int parse_args(int argc, char **argv, options *o) {
    int i;
    memset(o, 0, sizeof *o);
    o->n_tokens = -1;
    o->bench_prompt = 64;
    o->prompt = "";
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE()                                                  \
    do {                                                              \
        if (!v) return usage_error("option %s needs a value", a);    \
        i++;                                                          \
    } while (0)
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(USAGE, stdout);
            exit(0);
        } else if (strcmp(a, "-p") == 0) {
            NEED_VALUE();
            o->prompt = v;
        } else if (strcmp(a, "-f") == 0) {
            NEED_VALUE();
            o->prompt_file = v;
        } else if (strcmp(a, "-n") == 0) {
            NEED_VALUE();
            if (!parse_int(v, 0, 1 << 24, &o->n_tokens)) return usage_error("-n wants a token count >= 0, got '%s'", v);
        } else if (strcmp(a, "--temp") == 0) {
            NEED_VALUE();
            if (!parse_float(v, 0.0f, 100.0f, &o->temp)) return usage_error("--temp wants a number in [0, 100], got '%s'", v);
            o->have_temp = 1;
        } else if (strcmp(a, "--top-k") == 0) {
            NEED_VALUE();
            if (!parse_int(v, 0, 1 << 24, &o->top_k)) return usage_error("--top-k wants an integer >= 0, got '%s'", v);
            o->have_top_k = 1;
        } else if (strcmp(a, "--top-p") == 0) {
            NEED_VALUE();
            if (!parse_float(v, 1e-6f, 1.0f, &o->top_p)) return usage_error("--top-p wants a number in (0, 1], got '%s'", v);
            o->have_top_p = 1;
        } else if (strcmp(a, "--min-p") == 0) {
            NEED_VALUE();
            if (!parse_float(v, 0.0f, 1.0f, &o->min_p)) return usage_error("--min-p wants a number in [0, 1], got '%s'", v);
        } else if (strcmp(a, "--repeat-penalty") == 0) {
            NEED_VALUE();
            if (!parse_float(v, 1e-3f, 100.0f, &o->penalty))
                return usage_error("--repeat-penalty wants a number in (0, 100], got '%s'", v);
            o->have_penalty = 1;
        } else if (strcmp(a, "--repeat-window") == 0) {
            NEED_VALUE();
            if (!parse_int(v, 0, 1 << 24, &o->repeat_window))
                return usage_error("--repeat-window wants an integer >= 0, got '%s'", v);
        } else if (strcmp(a, "--seed") == 0) {
            char *end;
            NEED_VALUE();
            errno = 0;
            o->seed = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') return usage_error("--seed wants an integer >= 0, got '%s'", v);
            o->have_seed = 1;
        } else if (strcmp(a, "-c") == 0) {
            NEED_VALUE();
            if (!parse_int(v, 1, 1 << 24, &o->context)) return usage_error("-c wants a context length >= 1, got '%s'", v);
        } else if (strcmp(a, "-t") == 0) {
            NEED_VALUE();
            if (!parse_int(v, 1, 1024, &o->threads)) return usage_error("-t wants a thread count in 1..1024, got '%s'", v);
        } else if (strcmp(a, "--no-mmap") == 0) {
            o->no_mmap = 1;
        } else if (strcmp(a, "--tokenize") == 0) {
            NEED_VALUE();
            o->mode = MODE_TOKENIZE;
            o->tokenize_text = v;
        } else if (strcmp(a, "--no-bos") == 0) {
            o->no_bos = 1;
        } else if (strcmp(a, "--detokenize") == 0) {
            NEED_VALUE();
            o->mode = MODE_DETOKENIZE;
            o->detokenize_ids = v;
        } else if (strcmp(a, "--skip-special") == 0) {
            o->skip_special = 1;
        } else if (strcmp(a, "--bench") == 0) {
            o->mode = MODE_BENCH;
        } else if (strcmp(a, "--bench-prompt") == 0) {
            NEED_VALUE();
            if (!parse_int(v, 1, 1 << 24, &o->bench_prompt))
                return usage_error("--bench-prompt wants a token count >= 1, got '%s'", v);
        } else if (a[0] == '-' && a[1] != '\0') {
            return usage_error("unknown option '%s'", a);
        } else if (!o->model_path) {
            o->model_path = a;
        } else {
            return usage_error("unexpected argument '%s'", a);
        }
#undef NEED_VALUE
    }
    if (!o->model_path) return usage_error("%s", "missing MODEL.bin");
    return 0;
}

/* Reads a whole file (or stdin for "-") into a NUL-terminated buffer. */
static char *read_all(const char *path, size_t *len) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
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

static int do_tokenize(const lucie_model *model, const options *o) {
    char err[256];
    size_t len;
    char *text;
    int *ids = NULL, n = 0, rc, i;
    int flags = LUCIE_TOK_PARSE_SPECIAL | (o->no_bos ? 0 : LUCIE_TOK_ADD_SPECIAL);
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
    rc = lucie_tokenize(model, text, len, flags, NULL, 0, &n, err, sizeof err);
    if (rc == LUCIE_ESMALL || (rc == LUCIE_OK && n > 0)) {
        ids = (int *)malloc((size_t)(n > 0 ? n : 1) * sizeof *ids);
        rc = ids ? lucie_tokenize(model, text, len, flags, ids, n, &n, err, sizeof err) : LUCIE_ENOMEM;
    }
    if (rc != LUCIE_OK) {
        fprintf(stderr, "run: %s\n", rc == LUCIE_ENOMEM ? "out of memory" : err);
        free(text);
        free(ids);
        return 1;
    }
    for (i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
    free(text);
    free(ids);
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

static void session_options(const lucie_model *model, const options *o, lucie_session_options *so) {
    lucie_session_defaults(model, so);
    so->context = o->context;
    so->n_threads = o->threads;
    if (o->have_temp) so->temperature = o->temp;
    if (o->have_top_k) so->top_k = o->top_k;
    if (o->have_top_p) so->top_p = o->top_p;
    if (o->have_penalty) so->repetition_penalty = o->penalty;
    so->min_p = o->min_p;
    so->repetition_window = o->repeat_window;
    so->seed = o->have_seed ? o->seed : (unsigned long long)time(NULL);
}

static int do_generate(const lucie_model *model, const options *o, double load_seconds) {
    lucie_session_options so;
    lucie_session *session;
    lucie_stats stats;
    char err[256];
    char *file_prompt = NULL;
    const char *prompt = o->prompt;
    int rc;
    if (o->prompt_file) {
        size_t len;
        file_prompt = read_all(o->prompt_file, &len);
        if (!file_prompt) {
            fprintf(stderr, "run: cannot read prompt file '%s'\n", o->prompt_file);
            return 1;
        }
        if (strlen(file_prompt) != len) {
            fprintf(stderr, "run: prompt file '%s' contains a NUL byte\n", o->prompt_file);
            free(file_prompt);
            return 1;
        }
        prompt = file_prompt;
    }
    session_options(model, o, &so);
    if (lucie_session_new(model, &so, &session, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "run: %s\n", err);
        free(file_prompt);
        return 1;
    }
    rc = lucie_generate(session, prompt, o->n_tokens < 0 ? 256 : o->n_tokens, print_piece, NULL, &stats);
    fflush(stdout);
    if (rc != LUCIE_OK) {
        fprintf(stderr, "run: %s\n", lucie_session_error(session));
    } else {
        if (stats.stop_reason == 3) fprintf(stderr, "\nrun: %s\n", lucie_session_error(session));
        fprintf(stderr, "\nprompt: %d tokens, %.2f tok/s | generated: %d tokens, %.2f tok/s | load: %.3f s\n",
                stats.n_prompt, stats.prompt_seconds > 0 ? stats.n_prompt / stats.prompt_seconds : 0.0,
                stats.n_generated, stats.generate_seconds > 0 ? stats.n_generated / stats.generate_seconds : 0.0,
                load_seconds);
    }
    lucie_session_free(session);
    free(file_prompt);
    return rc == LUCIE_OK ? 0 : 1;
}

static double wall_seconds(void) {
#ifdef _WIN32
    return (double)clock() / CLOCKS_PER_SEC;
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#endif
}

/* Synthetic prompt of bench_prompt tokens, then -n greedy decode steps. */
static int do_bench(const lucie_model *model, const options *o, double load_seconds) {
    const lucie_config *c = lucie_model_config(model);
    lucie_session_options so;
    lucie_session *session;
    char err[256];
    int n_gen = o->n_tokens < 0 ? 64 : o->n_tokens, i, token, rc;
    int *prompt = (int *)malloc((size_t)o->bench_prompt * sizeof *prompt);
    float *logits = (float *)malloc((size_t)c->vocab_size * sizeof *logits);
    double t0, prefill, decode = 0.0;
    if (!prompt || !logits) return 1;
    session_options(model, o, &so);
    so.temperature = 0.0f;
    so.repetition_penalty = 1.0f;
    if (so.context == 0) so.context = o->bench_prompt + n_gen;
    if (o->bench_prompt + n_gen > so.context) {
        fprintf(stderr, "run: --bench needs a context of at least %d tokens\n", o->bench_prompt + n_gen);
        return 2;
    }
    if (lucie_session_new(model, &so, &session, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "run: %s\n", err);
        return 1;
    }
    for (i = 0; i < o->bench_prompt; i++) prompt[i] = (int)((1000u + 7919u * (unsigned)i) % (unsigned)c->vocab_size);
    t0 = wall_seconds();
    rc = lucie_eval(session, prompt, o->bench_prompt, logits, 0);
    prefill = wall_seconds() - t0;
    for (i = 0; i < n_gen && rc == LUCIE_OK; i++) {
        token = lucie_sample(session, logits);
        t0 = wall_seconds();
        rc = lucie_eval(session, &token, 1, logits, 0);
        decode += wall_seconds() - t0;
    }
    if (rc != LUCIE_OK) {
        fprintf(stderr, "run: %s\n", lucie_session_error(session));
        return 1;
    }
    printf("{\"load_s\": %.4f, \"prompt_tokens\": %d, \"prefill_tok_s\": %.4f, \"gen_tokens\": %d, "
           "\"decode_tok_s\": %.4f, \"threads\": %d}\n",
           load_seconds, o->bench_prompt, o->bench_prompt / prefill, n_gen, n_gen > 0 ? n_gen / decode : 0.0,
           o->threads);
    lucie_session_free(session);
    free(prompt);
    free(logits);
    return 0;
}

int main(int argc, char **argv) {
    options o;
    lucie_model *model;
    lucie_open_options oo;
    char err[256];
    double t0, load_seconds;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc;
    memset(&oo, 0, sizeof oo);
    oo.no_mmap = o.no_mmap;
    t0 = wall_seconds();
    if (lucie_open(o.model_path, &oo, &model, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "run: %s\n", err);
        return 1;
    }
    load_seconds = wall_seconds() - t0;
    switch (o.mode) {
    case MODE_TOKENIZE: rc = do_tokenize(model, &o); break;
    case MODE_DETOKENIZE: rc = do_detokenize(model, &o); break;
    case MODE_BENCH: rc = do_bench(model, &o, load_seconds); break;
    default: rc = do_generate(model, &o, load_seconds); break;
    }
    lucie_close(model);
    return rc;
}
