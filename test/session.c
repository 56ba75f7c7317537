/* test/session: runs a small script of session operations, for the tests of
 * sampling (against transformers' generate) and of session save/restore.
 *
 *   test/session MODEL.bin [options] COMMAND [COMMAND ...]
 *
 * options (before the first command; sampler settings default to greedy):
 *   --ctx N  --threads N  --temp T  --top-k K  --top-p P  --min-p P
 *   --penalty R  --window N  --seed S  --logits OUT.f32  --kv f32|f16|q8
 * commands, run in order on one session:
 *   eval IDS       evaluate the comma-separated ids in one call (prefill)
 *   step IDS       evaluate them one call per token; every step's logits are
 *                  appended to --logits OUT.f32 (little-endian float32)
 *   sample N       N times: sample a token, print it, evaluate it; stops after
 *                  an eos id. Prints "sample: ID ID ..."
 *   generate N IDS lucie_generate_tokens with IDS as input ("-": none, the
 *                  session's own last logits are used); prints the ids the
 *                  callback receives, "generate: ID ID ...", the bytes of the
 *                  text it receives, "text: B B ..." (decimal), then
 *                  "stats: n_prompt n_generated stop_reason" and
 *                  "stop: NAME" (lucie_stop_reason_string), then
 *                  "lookup: n_forward n_drafted n_accepted"
 *   lookup N       later generate commands draft up to N tokens by prompt
 *                  lookup (lucie_generate_options.lookup)
 *   stop TEXT      later generate commands also stop at TEXT (repeatable)
 *   cbstop N       in later generate commands the callback asks to stop on
 *                  its N-th call (0 = never)
 *   tokens         prints "tokens: ID ID ..." (lucie_session_tokens)
 *   sampler SPEC   lucie_session_set_sampler with the session's options
 *                  changed by SPEC, "temp=0.9,top-k=50,seed=3" (the names of
 *                  the sampler options above, without dashes)
 *   save FILE      lucie_session_save
 *   load FILE      lucie_session_load; prints "load: ok" or
 *                  "load: STATUS MESSAGE" and carries on either way
 *   rewind N       lucie_session_rewind
 *   pos            prints "pos: N"
 * Exit code 0 unless a command other than load failed (1) or bad usage (2). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lucie.h"

typedef struct {
    int *ids;
    int n, cap;
} id_list;

static int push_id(id_list *l, int id) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        int *bigger = (int *)realloc(l->ids, (size_t)cap * sizeof *bigger);
        if (!bigger) return 0;
        l->ids = bigger;
        l->cap = cap;
    }
    l->ids[l->n++] = id;
    return 1;
}

/* "1,2,3" -> ids; returns 0 on a malformed list. */
static int parse_ids(const char *s, id_list *out) {
    out->n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || !push_id(out, (int)v)) return 0;
        s = end;
        if (*s == ',') s++;
        else if (*s) return 0;
    }
    return 1;
}

/* LUCIE_KV_* by name; an unknown name gives -1, which lucie_session_new refuses. */
static int kv_type_named(const char *name) {
    if (strcmp(name, "f32") == 0) return LUCIE_KV_F32;
    if (strcmp(name, "f16") == 0) return LUCIE_KV_F16;
    if (strcmp(name, "q8") == 0) return LUCIE_KV_Q8;
    return -1;
}

static int is_eos(const lucie_config *c, int token) {
    int i;
    for (i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] == token) return 1;
    return 0;
}

typedef struct {
    char *bytes;
    size_t len;
    int failed;
    int calls, stop_after; /* the callback returns 1 on call stop_after (0 = never) */
} text_log;

/* Prints the token and keeps its text for the "text:" line. */
static int collect_token(const char *text, size_t len, int token, void *user) {
    text_log *log = (text_log *)user;
    char *bigger = (char *)realloc(log->bytes, log->len + len + 1);
    if (token >= 0) printf(" %d", token);
    if (!bigger) {
        log->failed = 1;
        return 1;
    }
    memcpy(bigger + log->len, text, len);
    log->bytes = bigger;
    log->len += len;
    return ++log->calls == log->stop_after;
}

/* Applies one sampler setting NAME (an option without its dashes) = VALUE;
 * returns 0 when NAME is not a sampler setting. */
static int set_sampler_option(lucie_session_options *opts, const char *name, const char *value) {
    if (strcmp(name, "temp") == 0) opts->temperature = (float)atof(value);
    else if (strcmp(name, "top-k") == 0) opts->top_k = atoi(value);
    else if (strcmp(name, "top-p") == 0) opts->top_p = (float)atof(value);
    else if (strcmp(name, "min-p") == 0) opts->min_p = (float)atof(value);
    else if (strcmp(name, "penalty") == 0) opts->repetition_penalty = (float)atof(value);
    else if (strcmp(name, "window") == 0) opts->repetition_window = atoi(value);
    else if (strcmp(name, "seed") == 0) opts->seed = strtoull(value, NULL, 10);
    else return 0;
    return 1;
}

/* "temp=0.9,top-k=50" applied to opts; returns 0 on a malformed spec. */
static int parse_sampler_spec(const char *spec, lucie_session_options *opts) {
    char item[64];
    while (*spec) {
        size_t n = strcspn(spec, ",");
        char *eq;
        if (n == 0 || n >= sizeof item) return 0;
        memcpy(item, spec, n);
        item[n] = '\0';
        eq = strchr(item, '=');
        if (!eq) return 0;
        *eq = '\0';
        if (!set_sampler_option(opts, item, eq + 1)) return 0;
        spec += n;
        if (*spec == ',') spec++;
    }
    return 1;
}

/* Runs the commands argv[first..]; returns a lucie status, or 2 on bad usage. */
static int run_commands(lucie_session *session, const lucie_config *c, lucie_session_options *opts, char **argv,
                        int first, int argc, FILE *logits_out, float *logits) {
    id_list ids = {NULL, 0, 0};
    const char *stop[16];
    int i, k, rc = LUCIE_OK, usage = 0, lookup = 0, n_stop = 0, stop_after = 0;
    for (i = first; i < argc && rc == LUCIE_OK && !usage; i++) {
        const char *cmd = argv[i], *arg = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(cmd, "pos") == 0) {
            printf("pos: %d\n", lucie_session_position(session));
            continue;
        }
        if (strcmp(cmd, "tokens") == 0) {
            int n = lucie_session_tokens(session, NULL, 0);
            int *all = (int *)malloc((size_t)(n > 0 ? n : 1) * sizeof *all);
            if (!all) {
                rc = LUCIE_ENOMEM;
                break;
            }
            lucie_session_tokens(session, all, n);
            printf("tokens:");
            for (k = 0; k < n; k++) printf(" %d", all[k]);
            printf("\n");
            free(all);
            continue;
        }
        if (!arg) {
            fprintf(stderr, "session: %s needs an argument\n", cmd);
            usage = 1;
            break;
        }
        i++;
        if (strcmp(cmd, "eval") == 0 || strcmp(cmd, "step") == 0) {
            if (!parse_ids(arg, &ids)) {
                fprintf(stderr, "session: bad id list '%s'\n", arg);
                usage = 1;
            } else if (strcmp(cmd, "eval") == 0) {
                rc = lucie_eval(session, ids.ids, ids.n, logits, 0);
            } else {
                for (k = 0; k < ids.n && rc == LUCIE_OK; k++) {
                    rc = lucie_eval(session, ids.ids + k, 1, logits, 0);
                    if (rc == LUCIE_OK && logits_out)
                        fwrite(logits, sizeof(float), (size_t)c->vocab_size, logits_out);
                }
            }
        } else if (strcmp(cmd, "sample") == 0) {
            int n = atoi(arg), token;
            printf("sample:");
            for (k = 0; k < n && rc == LUCIE_OK; k++) {
                token = lucie_sample(session, logits);
                printf(" %d", token);
                if (token < 0) rc = token;
                else rc = lucie_eval(session, &token, 1, logits, 0);
                if (is_eos(c, token)) break;
            }
            printf("\n");
        } else if (strcmp(cmd, "generate") == 0) {
            lucie_generate_options go;
            lucie_stats stats;
            text_log log = {NULL, 0, 0, 0, 0};
            size_t b;
            const char *input = i + 1 < argc ? argv[++i] : "-";
            ids.n = 0;
            if (strcmp(input, "-") != 0 && !parse_ids(input, &ids)) {
                fprintf(stderr, "session: bad id list '%s'\n", input);
                usage = 1;
                break;
            }
            memset(&go, 0, sizeof go);
            memset(&stats, 0, sizeof stats);
            go.max_tokens = atoi(arg);
            go.lookup = lookup;
            log.stop_after = stop_after;
            go.stop = stop;
            go.n_stop = n_stop;
            printf("generate:");
            rc = lucie_generate_tokens(session, ids.ids, ids.n, &go, collect_token, &log, &stats);
            printf("\ntext:");
            for (b = 0; b < log.len; b++) printf(" %d", (unsigned char)log.bytes[b]);
            printf("\nstats: %d %d %d\nstop: %s\nlookup: %d %d %d\n", stats.n_prompt, stats.n_generated,
                   stats.stop_reason, lucie_stop_reason_string(stats.stop_reason), stats.n_forward, stats.n_drafted,
                   stats.n_accepted);
            free(log.bytes);
            if (log.failed) rc = LUCIE_ENOMEM;
        } else if (strcmp(cmd, "save") == 0) {
            rc = lucie_session_save(session, arg);
        } else if (strcmp(cmd, "load") == 0) {
            int status = lucie_session_load(session, arg);
            if (status == LUCIE_OK) printf("load: ok\n");
            else printf("load: %d %s\n", status, lucie_session_error(session));
        } else if (strcmp(cmd, "sampler") == 0) {
            if (!parse_sampler_spec(arg, opts)) {
                fprintf(stderr, "session: bad sampler settings '%s'\n", arg);
                usage = 1;
            } else {
                rc = lucie_session_set_sampler(session, opts);
            }
        } else if (strcmp(cmd, "lookup") == 0) {
            lookup = atoi(arg);
        } else if (strcmp(cmd, "cbstop") == 0) {
            stop_after = atoi(arg);
        } else if (strcmp(cmd, "stop") == 0) {
            if (n_stop == (int)(sizeof stop / sizeof stop[0])) {
                fprintf(stderr, "session: too many stop strings\n");
                usage = 1;
            } else {
                stop[n_stop++] = arg;
            }
        } else if (strcmp(cmd, "rewind") == 0) {
            rc = lucie_session_rewind(session, atoi(arg));
        } else {
            fprintf(stderr, "session: unknown command '%s'\n", cmd);
            usage = 1;
        }
        fflush(stdout);
    }
    free(ids.ids);
    if (rc != LUCIE_OK) fprintf(stderr, "session: %s (%s)\n", lucie_session_error(session), lucie_status_string(rc));
    return usage ? 2 : rc;
}

int main(int argc, char **argv) {
    lucie_model *model = NULL;
    lucie_session *session = NULL;
    lucie_session_options opts;
    const char *logits_path = NULL;
    FILE *logits_out = NULL;
    float *logits = NULL;
    char err[256];
    int i, rc;
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.bin [options] COMMAND [COMMAND ...] (see test/session.c)\n", argv[0]);
        return 2;
    }
    lucie_session_defaults(NULL, &opts);
    opts.temperature = 0.0f;
    for (i = 2; i + 1 < argc && argv[i][0] == '-'; i += 2) {
        const char *o = argv[i], *v = argv[i + 1];
        if (strcmp(o, "--ctx") == 0) opts.context = atoi(v);
        else if (strcmp(o, "--threads") == 0) opts.n_threads = atoi(v);
        else if (strncmp(o, "--", 2) == 0 && set_sampler_option(&opts, o + 2, v)) continue;
        else if (strcmp(o, "--logits") == 0) logits_path = v;
        else if (strcmp(o, "--kv") == 0) opts.kv_type = kv_type_named(v);
        else {
            fprintf(stderr, "session: unknown option '%s'\n", o);
            return 2;
        }
    }
    if (lucie_open(argv[1], NULL, &model, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "session: %s\n", err);
        return 1;
    }
    rc = lucie_session_new(model, &opts, &session, err, sizeof err);
    if (rc != LUCIE_OK) {
        fprintf(stderr, "session: %s\n", err);
    } else if (!(logits = (float *)malloc((size_t)lucie_model_config(model)->vocab_size * sizeof *logits))) {
        rc = LUCIE_ENOMEM;
    } else if (logits_path && !(logits_out = fopen(logits_path, "wb"))) {
        fprintf(stderr, "session: cannot write %s\n", logits_path);
        rc = LUCIE_EIO;
    } else {
        rc = run_commands(session, lucie_model_config(model), &opts, argv, i, argc, logits_out, logits);
    }
    if (logits_out && fclose(logits_out) != 0 && rc == LUCIE_OK) rc = LUCIE_EIO;
    free(logits);
    lucie_session_free(session);
    lucie_close(model);
    return rc == LUCIE_OK ? 0 : rc == 2 ? 2 : 1;
}
