/* test/batch: several sessions evaluated together (lucie_eval_batch) and
 * forked sessions (lucie_session_fork) give bit for bit what each session
 * gives alone.
 *
 *   test/batch MODEL.bin [--threads N] [--kv f32|f16|q8] [--sessions B] [--steps N]
 *
 * Token ids are a fixed pseudo-random sequence inside the vocabulary. Checks:
 *   fork     a fork of a prompted session, and the session itself, continue
 *            exactly as a fresh session that evaluated the same prompt
 *            (logits; sampled tokens with the same seed);
 *   decode   B sessions at different depths (prompts of different lengths),
 *            N steps of one token each through lucie_eval_batch, against
 *            the same sessions stepped alone with lucie_eval;
 *   mixed    entries of several tokens, longer together than a forward
 *            chunk, some without logits, sessions of different KV types;
 *   refused  invalid batches change nothing.
 * Prints one "ok NAME" line per check; exit 1 at the first difference. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lucie.h"

#define MAX_SESSIONS 16

typedef struct {
    lucie_model *model;
    const lucie_config *config;
    lucie_session_options options;
    unsigned long long ids_state;
} fixture;

static int next_id(fixture *f) {
    f->ids_state = f->ids_state * 6364136223846793005ull + 1442695040888963407ull;
    return (int)((f->ids_state >> 33) % (unsigned long long)f->config->vocab_size);
}

static void fill_ids(fixture *f, int *ids, int n) {
    int i;
    for (i = 0; i < n; i++) ids[i] = next_id(f);
}

static lucie_session *new_session(fixture *f, int kv_type) {
    lucie_session_options o = f->options;
    lucie_session *s = NULL;
    char err[256];
    o.kv_type = kv_type;
    if (lucie_session_new(f->model, &o, &s, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "batch: session: %s\n", err);
        exit(1);
    }
    return s;
}

static void must(int status, lucie_session *s, const char *what) {
    if (status != LUCIE_OK) {
        fprintf(stderr, "batch: %s: %s (%s)\n", what, lucie_status_string(status), lucie_session_error(s));
        exit(1);
    }
}

static void same_logits(const float *a, const float *b, int n, const char *what) {
    if (memcmp(a, b, (size_t)n * sizeof(float)) != 0) {
        int i;
        for (i = 0; i < n && a[i] == b[i]; i++) {}
        fprintf(stderr, "batch: %s: logits differ (first at %d: %.9g vs %.9g)\n", what, i, a[i], b[i]);
        exit(1);
    }
}

static float *alloc_logits(const fixture *f, int rows) {
    float *p = (float *)malloc((size_t)rows * (size_t)f->config->vocab_size * sizeof(float));
    if (!p) {
        fprintf(stderr, "batch: out of memory\n");
        exit(1);
    }
    return p;
}

/* The token lucie_generate_tokens produces from the session's own last
 * logits (no new input): what a batch or a fork left the session holding. */
static int first_token_cb(const char *text, size_t len, int token, void *user) {
    (void)text;
    (void)len;
    if (token >= 0) *(int *)user = token;
    return 1;
}

static int argmax(const float *v, int n) {
    int i, best = 0;
    for (i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

static int continue_from_cache(lucie_session *s) {
    lucie_generate_options go;
    int token = -1;
    memset(&go, 0, sizeof go);
    go.max_tokens = 1;
    must(lucie_generate_tokens(s, NULL, 0, &go, first_token_cb, &token, NULL), s, "continue from the cache");
    return token;
}

/* A fork and its source each continue as a fresh session evaluating the
 * same prompt would: same logits for a common next token, same samples. */
static void check_fork(fixture *f) {
    int prompt[24], next, k, vocab = f->config->vocab_size;
    float *a = alloc_logits(f, 1), *b = alloc_logits(f, 1), *c = alloc_logits(f, 1);
    lucie_session *src = new_session(f, f->options.kv_type), *fresh = new_session(f, f->options.kv_type);
    lucie_session *fork = NULL;
    lucie_session_options sampled = f->options;
    char err[256];
    fill_ids(f, prompt, 24);
    must(lucie_eval(src, prompt, 24, a, 0), src, "fork: prompt");
    if (lucie_session_fork(src, &fork, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "batch: fork: %s\n", err);
        exit(1);
    }
    if (lucie_session_position(fork) != 24 || lucie_session_kv_type(fork) != lucie_session_kv_type(src) ||
        lucie_session_context(fork) != lucie_session_context(src)) {
        fprintf(stderr, "batch: fork: position, KV type or context not those of its source\n");
        exit(1);
    }
    {
        int ids[24];
        if (lucie_session_tokens(fork, ids, 24) != 24 || memcmp(ids, prompt, sizeof ids) != 0) {
            fprintf(stderr, "batch: fork: cached tokens differ from the source's\n");
            exit(1);
        }
    }
    {
        lucie_session *probe = NULL;
        int from_fork, from_src;
        if (lucie_session_fork(src, &probe, err, sizeof err) != LUCIE_OK) exit(1);
        from_fork = continue_from_cache(probe);
        lucie_session_free(probe);
        from_src = continue_from_cache(src);
        must(lucie_session_rewind(src, 24), src, "fork: rewind");
        if (from_fork != from_src || from_fork != argmax(a, vocab)) {
            fprintf(stderr, "batch: fork: continues with %d, its source with %d\n", from_fork, from_src);
            exit(1);
        }
    }
    /* the fork samples from its copy of the last logits without evaluating */
    sampled.temperature = 0.8f;
    sampled.top_k = 20;
    sampled.repetition_penalty = 1.3f;
    sampled.seed = 7;
    must(lucie_session_set_sampler(fork, &sampled), fork, "fork: sampler");
    must(lucie_session_set_sampler(fresh, &sampled), fresh, "fresh: sampler");
    must(lucie_eval(fresh, prompt, 24, b, 0), fresh, "fresh: prompt");
    for (k = 0; k < 12; k++) {
        int t1 = lucie_sample(fork, k == 0 ? a : c), t2 = lucie_sample(fresh, b);
        if (t1 < 0 || t1 != t2) {
            fprintf(stderr, "batch: fork: sample %d is %d, a fresh session samples %d\n", k, t1, t2);
            exit(1);
        }
        must(lucie_eval(fork, &t1, 1, c, 0), fork, "fork: step");
        must(lucie_eval(fresh, &t2, 1, b, 0), fresh, "fresh: step");
        same_logits(c, b, vocab, "fork: sampled continuation");
    }
    /* the source was not disturbed by its fork's work */
    next = next_id(f);
    must(lucie_eval(src, &next, 1, a, 0), src, "fork: source step");
    must(lucie_session_rewind(fresh, 24), fresh, "fresh: rewind");
    must(lucie_eval(fresh, &next, 1, b, 0), fresh, "fresh: step");
    same_logits(a, b, vocab, "fork: source after fork");
    lucie_session_free(fork);
    lucie_session_free(src);
    lucie_session_free(fresh);
    free(a);
    free(b);
    free(c);
    printf("ok fork\n");
}

/* B sessions at depths 5, 12, 19, ... step together and alone. */
static void check_decode(fixture *f, int n_sessions, int steps) {
    lucie_session *together[MAX_SESSIONS], *alone[MAX_SESSIONS];
    lucie_batch_entry entries[MAX_SESSIONS];
    int vocab = f->config->vocab_size, i, k, next[MAX_SESSIONS];
    float *batch_logits = alloc_logits(f, n_sessions), *one = alloc_logits(f, 1);
    for (i = 0; i < n_sessions; i++) {
        int prompt[64], len = 5 + 7 * i < 64 ? 5 + 7 * i : 64;
        fill_ids(f, prompt, len);
        together[i] = new_session(f, f->options.kv_type);
        alone[i] = new_session(f, f->options.kv_type);
        must(lucie_eval(together[i], prompt, len, NULL, 0), together[i], "decode: prompt");
        must(lucie_eval(alone[i], prompt, len, NULL, 0), alone[i], "decode: prompt");
    }
    for (k = 0; k < steps; k++) {
        for (i = 0; i < n_sessions; i++) {
            next[i] = next_id(f);
            entries[i].session = together[i];
            entries[i].tokens = &next[i];
            entries[i].n_tokens = 1;
            entries[i].logits = batch_logits + (size_t)i * vocab;
        }
        must(lucie_eval_batch(entries, n_sessions), together[0], "decode: batch");
        for (i = 0; i < n_sessions; i++) {
            must(lucie_eval(alone[i], &next[i], 1, one, 0), alone[i], "decode: alone");
            same_logits(batch_logits + (size_t)i * vocab, one, vocab, "decode: session in a batch vs alone");
            if (lucie_session_position(together[i]) != lucie_session_position(alone[i])) {
                fprintf(stderr, "batch: decode: positions differ\n");
                exit(1);
            }
        }
    }
    for (i = 0; i < n_sessions; i++) {
        lucie_session_free(together[i]);
        lucie_session_free(alone[i]);
    }
    free(batch_logits);
    free(one);
    printf("ok decode %d sessions x %d steps\n", n_sessions, steps);
}

/* Entries of 30, 1, 45 and 9 tokens (85 > one forward chunk), the second
 * without logits, sessions of each KV type: each entry's logits and what
 * its session then predicts equal a lone lucie_eval of the same tokens. */
static void check_mixed(fixture *f) {
    static const int lengths[4] = {30, 1, 45, 9};
    static const int kv_types[4] = {LUCIE_KV_F32, LUCIE_KV_F16, LUCIE_KV_Q8, LUCIE_KV_DEFAULT};
    lucie_session *together[4], *alone[4];
    lucie_batch_entry entries[4];
    int ids[4][45], vocab = f->config->vocab_size, i;
    float *batch_logits = alloc_logits(f, 4), *one = alloc_logits(f, 1), *more = alloc_logits(f, 1);
    for (i = 0; i < 4; i++) {
        int prompt[8];
        fill_ids(f, prompt, 3 + i);
        together[i] = new_session(f, kv_types[i]);
        alone[i] = new_session(f, kv_types[i]);
        must(lucie_eval(together[i], prompt, 3 + i, NULL, 0), together[i], "mixed: prompt");
        must(lucie_eval(alone[i], prompt, 3 + i, NULL, 0), alone[i], "mixed: prompt");
        fill_ids(f, ids[i], lengths[i]);
        entries[i].session = together[i];
        entries[i].tokens = ids[i];
        entries[i].n_tokens = lengths[i];
        entries[i].logits = i == 1 ? NULL : batch_logits + (size_t)i * vocab;
    }
    must(lucie_eval_batch(entries, 4), together[0], "mixed: batch");
    for (i = 0; i < 4; i++) {
        int t = next_id(f);
        must(lucie_eval(alone[i], ids[i], lengths[i], one, 0), alone[i], "mixed: alone");
        if (i != 1) {
            same_logits(batch_logits + (size_t)i * vocab, one, vocab, "mixed: entry vs alone");
            int expected = argmax(one, vocab);
            if (continue_from_cache(together[i]) != expected || continue_from_cache(alone[i]) != expected) {
                fprintf(stderr, "batch: mixed: the session continues differently after a batch\n");
                exit(1);
            }
            must(lucie_session_rewind(together[i], lucie_session_position(together[i]) - 1), together[i], "rewind");
            must(lucie_session_rewind(alone[i], lucie_session_position(alone[i]) - 1), alone[i], "rewind");
        }
        must(lucie_eval(together[i], &t, 1, more, 0), together[i], "mixed: next");
        must(lucie_eval(alone[i], &t, 1, one, 0), alone[i], "mixed: next");
        same_logits(more, one, vocab, "mixed: next token after the batch");
    }
    for (i = 0; i < 4; i++) {
        lucie_session_free(together[i]);
        lucie_session_free(alone[i]);
    }
    free(batch_logits);
    free(one);
    free(more);
    printf("ok mixed\n");
}

static void expect_refused(lucie_batch_entry *e, int n, int status, lucie_session *const *sessions, const int *pos,
                           const char *what) {
    int got = lucie_eval_batch(e, n), i;
    if (got != status) {
        fprintf(stderr, "batch: refused: %s gave %s, expected %s\n", what, lucie_status_string(got),
                lucie_status_string(status));
        exit(1);
    }
    for (i = 0; i < 2; i++)
        if (lucie_session_position(sessions[i]) != pos[i]) {
            fprintf(stderr, "batch: refused: %s changed a session's position\n", what);
            exit(1);
        }
    if (!lucie_session_error(e[0].session)[0]) {
        fprintf(stderr, "batch: refused: %s left no message\n", what);
        exit(1);
    }
}

static void check_refused(fixture *f) {
    lucie_session *s[2];
    lucie_batch_entry e[2];
    int good = 1, bad = f->config->vocab_size, pos[2] = {0, 0}, i, *many;
    for (i = 0; i < 2; i++) s[i] = new_session(f, f->options.kv_type);
    for (i = 0; i < 2; i++) {
        e[i].session = s[i];
        e[i].tokens = &good;
        e[i].n_tokens = 1;
        e[i].logits = NULL;
    }
    if (lucie_eval_batch(NULL, 1) != LUCIE_EINVAL || lucie_eval_batch(e, 0) != LUCIE_EINVAL) {
        fprintf(stderr, "batch: refused: NULL or empty batch accepted\n");
        exit(1);
    }
    e[1].session = s[0];
    expect_refused(e, 2, LUCIE_EINVAL, s, pos, "a session twice");
    e[1].session = s[1];
    e[1].tokens = &bad;
    expect_refused(e, 2, LUCIE_EINVAL, s, pos, "a token outside the vocabulary");
    e[1].tokens = NULL;
    expect_refused(e, 2, LUCIE_EINVAL, s, pos, "no tokens");
    many = (int *)calloc((size_t)lucie_session_context(s[1]) + 1, sizeof(int));
    if (!many) exit(1);
    e[1].tokens = many;
    e[1].n_tokens = lucie_session_context(s[1]) + 1;
    expect_refused(e, 2, LUCIE_ECONTEXT, s, pos, "tokens beyond the context");
    free(many);
    e[1].session = NULL;
    e[1].tokens = &good;
    e[1].n_tokens = 1;
    expect_refused(e, 2, LUCIE_EINVAL, s, pos, "a NULL session");
    for (i = 0; i < 2; i++) lucie_session_free(s[i]);
    printf("ok refused\n");
}

static int kv_type_named(const char *name) {
    if (strcmp(name, "f32") == 0) return LUCIE_KV_F32;
    if (strcmp(name, "f16") == 0) return LUCIE_KV_F16;
    if (strcmp(name, "q8") == 0) return LUCIE_KV_Q8;
    return -1;
}

int main(int argc, char **argv) {
    fixture f;
    char err[256];
    int i, n_sessions = 4, steps = 6;
    if (argc < 2) {
        fprintf(stderr, "usage: test/batch MODEL.bin [--threads N] [--kv f32|f16|q8] [--sessions B] [--steps N]\n");
        return 2;
    }
    memset(&f, 0, sizeof f);
    f.ids_state = 12345;
    if (lucie_open(argv[1], NULL, &f.model, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "batch: %s\n", err);
        return 1;
    }
    f.config = lucie_model_config(f.model);
    lucie_session_defaults(NULL, &f.options);
    f.options.temperature = 0.0f;
    f.options.context = 160;
    for (i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--threads") == 0) f.options.n_threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--kv") == 0) f.options.kv_type = kv_type_named(argv[i + 1]);
        else if (strcmp(argv[i], "--sessions") == 0) n_sessions = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--steps") == 0) steps = atoi(argv[i + 1]);
        else break;
    }
    if (i != argc || n_sessions < 1 || n_sessions > MAX_SESSIONS || steps < 1) {
        fprintf(stderr, "batch: bad arguments\n");
        return 2;
    }
    check_fork(&f);
    check_decode(&f, n_sessions, steps);
    check_mixed(&f);
    check_refused(&f);
    lucie_close(f.model);
    return 0;
}
