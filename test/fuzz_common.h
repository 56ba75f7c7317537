/* fuzz_common.h - helpers shared by the libFuzzer targets in test/fuzz_*.c.
 *
 * The targets feed hostile bytes to the library and then use whatever it
 * accepted, because a loader that says "ok" to a file the forward pass cannot
 * run is as much a bug as a crash. Invariants the library promises in lucie.h
 * are checked with fuzz_check(), which aborts so libFuzzer records the input. */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#if !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../lucie.h"

/* Each target uses only some helpers; fuzz builds are clang-only, so the
 * attribute is always available. */
#define FUZZ_HELPER static __attribute__((unused))

#define fuzz_check(cond, what)                                                        \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "fuzz invariant broken at %s:%d: %s\n", __FILE__, __LINE__, what); \
            abort();                                                                  \
        }                                                                             \
    } while (0)

/* lucie_open() takes a path, so each input goes through a per-process file,
 * in /dev/shm when there is one (a page-cache write, no disk). */
FUZZ_HELPER const char *fuzz_write_file(const uint8_t *data, size_t size) {
    static char path[256];
    FILE *f;
    if (!path[0]) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(path, sizeof path, "%s/lucie_fuzz_%ld.bin", dir, (long)getpid());
    }
    f = fopen(path, "wb");
    fuzz_check(f != NULL, "cannot create the scratch file");
    fuzz_check(size == 0 || fwrite(data, 1, size, f) == size, "cannot write the scratch file");
    fuzz_check(fclose(f) == 0, "cannot close the scratch file");
    return path;
}

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF): what HF accepts. */
FUZZ_HELPER int fuzz_valid_utf8(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len, k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            len = 2, cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3, cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4, cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + len > n) return 0;
        for (k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        i += len;
    }
    return 1;
}

/* Tokenizes text with every protocol the API offers and checks they agree:
 * the size query, an exact buffer, a buffer one id short, and (for valid
 * input) that decoding whole equals decoding as a stream. Returns the id count
 * or -1 when the text was refused. */
FUZZ_HELPER int fuzz_tokenize_checked(const lucie_model *m, const uint8_t *text, size_t len, int flags,
                                      int detok_flags) {
    const lucie_config *c = lucie_model_config(m);
    char err[256];
    int n = -1, n2 = -1, rc, i, *ids;
    size_t out_len = 0, stream_len = 0;
    char *buf, *joined;
    lucie_detok_stream *stream;
    err[0] = '\0';
    rc = lucie_tokenize(m, (const char *)text, len, flags, NULL, 0, &n, err, sizeof err);
    if (!fuzz_valid_utf8(text, len)) {
        fuzz_check(rc == LUCIE_EINVAL, "invalid UTF-8 was not refused with LUCIE_EINVAL");
        fuzz_check(err[0] != '\0' && strchr(err, '\n') == NULL, "refusal without a one-line message");
        return -1;
    }
    fuzz_check(rc == LUCIE_OK || rc == LUCIE_ESMALL, "valid UTF-8 was refused");
    fuzz_check(n >= 0 && (rc == LUCIE_OK) == (n == 0), "size query disagrees with its status");
    ids = (int *)malloc((size_t)(n + 1) * sizeof *ids);
    fuzz_check(ids != NULL, "out of memory");
    if (n > 0) {
        rc = lucie_tokenize(m, (const char *)text, len, flags, ids, n - 1, &n2, err, sizeof err);
        fuzz_check(rc == LUCIE_ESMALL && n2 == n, "a short buffer did not give LUCIE_ESMALL and the same count");
    }
    rc = lucie_tokenize(m, (const char *)text, len, flags, ids, n, &n2, err, sizeof err);
    fuzz_check(rc == LUCIE_OK && n2 == n, "tokenizing twice gave different counts");
    for (i = 0; i < n; i++) fuzz_check(ids[i] >= 0 && ids[i] < c->vocab_size, "token id outside the vocabulary");

    /* Decode whole (size query first), then as a stream: lucie.h promises equality. */
    rc = lucie_detokenize(m, ids, n, detok_flags, NULL, 0, &out_len);
    fuzz_check(rc == LUCIE_ESMALL || rc == LUCIE_OK, "detokenize size query failed on ids from tokenize");
    buf = (char *)malloc(out_len + 1);
    joined = (char *)malloc(out_len + 1);
    fuzz_check(buf && joined, "out of memory");
    rc = lucie_detokenize(m, ids, n, detok_flags, buf, out_len + 1, &stream_len);
    fuzz_check(rc == LUCIE_OK && stream_len == out_len && buf[out_len] == '\0', "detokenize into an exact buffer");
    stream = lucie_detok_stream_new(m, detok_flags);
    fuzz_check(stream != NULL, "lucie_detok_stream_new failed");
    stream_len = 0;
    for (i = 0; i <= n; i++) {
        size_t piece_len = 0;
        const char *piece = i < n ? lucie_detok_stream_push(stream, ids[i], &piece_len)
                                  : lucie_detok_stream_flush(stream, &piece_len);
        fuzz_check(piece != NULL, "stream push/flush failed on valid ids");
        fuzz_check(stream_len + piece_len <= out_len, "the stream produced more text than detokenize");
        memcpy(joined + stream_len, piece, piece_len);
        stream_len += piece_len;
    }
    lucie_detok_stream_free(stream);
    fuzz_check(stream_len == out_len && memcmp(joined, buf, out_len) == 0,
               "streamed decoding (pushes + flush) differs from lucie_detokenize");

    /* A stream primed with the first ids continues the whole decode: what it
     * returns is a suffix of it. */
    if (n > 0) {
        int k = (int)(len % (size_t)n);
        stream = lucie_detok_stream_new(m, detok_flags);
        fuzz_check(stream != NULL && lucie_detok_stream_prime(stream, ids, k) == LUCIE_OK, "prime failed");
        stream_len = 0;
        for (i = k; i <= n; i++) {
            size_t piece_len = 0;
            const char *piece = i < n ? lucie_detok_stream_push(stream, ids[i], &piece_len)
                                      : lucie_detok_stream_flush(stream, &piece_len);
            fuzz_check(piece != NULL, "stream push/flush failed after prime");
            fuzz_check(stream_len + piece_len <= out_len, "a primed stream produced more text than detokenize");
            memcpy(joined + stream_len, piece, piece_len);
            stream_len += piece_len;
        }
        lucie_detok_stream_free(stream);
        fuzz_check(memcmp(joined, buf + out_len - stream_len, stream_len) == 0,
                   "a primed stream's text is not the end of lucie_detokenize's");
    }
    free(buf);
    free(joined);
    free(ids);
    return n;
}

/* Decodes arbitrary ids (some out of range): an id outside the vocabulary must
 * give LUCIE_EINVAL, anything else must decode and agree with the stream. */
FUZZ_HELPER void fuzz_detokenize_checked(const lucie_model *m, const int *ids, int n, int flags) {
    const lucie_config *c = lucie_model_config(m);
    int i, bad = 0, rc;
    size_t len = 0, len2 = 0, streamed = 0;
    char small[4], *buf;
    lucie_detok_stream *stream;
    for (i = 0; i < n; i++) bad |= ids[i] < 0 || ids[i] >= c->vocab_size;
    rc = lucie_detokenize(m, ids, n, flags, small, sizeof small, &len);
    if (bad) {
        fuzz_check(rc == LUCIE_EINVAL, "an out-of-range id was not refused");
        return;
    }
    fuzz_check(rc == (len < sizeof small ? LUCIE_OK : LUCIE_ESMALL), "detokenize status vs length");
    if (rc == LUCIE_OK) fuzz_check(small[len] == '\0', "detokenize did not NUL-terminate");
    buf = (char *)malloc(len + 1);
    fuzz_check(buf != NULL, "out of memory");
    rc = lucie_detokenize(m, ids, n, flags, buf, len + 1, &len2);
    fuzz_check(rc == LUCIE_OK && len2 == len, "detokenize twice gave different lengths");
    stream = lucie_detok_stream_new(m, flags);
    fuzz_check(stream != NULL, "lucie_detok_stream_new failed");
    for (i = 0; i <= n; i++) {
        size_t piece_len = 0;
        const char *piece = i < n ? lucie_detok_stream_push(stream, ids[i], &piece_len)
                                  : lucie_detok_stream_flush(stream, &piece_len);
        fuzz_check(piece != NULL, "stream push/flush failed on valid ids");
        fuzz_check(streamed + piece_len <= len && memcmp(buf + streamed, piece, piece_len) == 0,
                   "streamed decoding differs from lucie_detokenize");
        streamed += piece_len;
    }
    fuzz_check(streamed == len, "streamed decoding is shorter than lucie_detokenize");
    lucie_detok_stream_free(stream);
    free(buf);
}

/* Runs a model the loader accepted: a tiny session, a batched eval, sampling
 * with every sampler stage on, a rewind and a short generation. Whatever the
 * weights contain (NaN, inf), nothing may crash, and every sampled id must be
 * inside the vocabulary or the sampler must refuse non-finite logits. */
FUZZ_HELPER void fuzz_exercise_model(const lucie_model *m) {
    const lucie_config *c = lucie_model_config(m);
    static const char *texts[] = {"", "a", "Once upon a time", "<s>x</s>", "\xc3\xa9\n( 'z"};
    lucie_session_options so;
    lucie_session *s = NULL;
    char err[256];
    float *logits;
    int tokens[3], i, tok;
    fuzz_check(c != NULL, "no config");
    (void)lucie_chat_template(m);
    for (i = 0; i < (int)(sizeof texts / sizeof *texts); i++)
        (void)fuzz_tokenize_checked(m, (const uint8_t *)texts[i], strlen(texts[i]),
                                    LUCIE_TOK_ADD_SPECIAL | LUCIE_TOK_PARSE_SPECIAL, LUCIE_DETOK_SKIP_SPECIAL);
    for (i = 0; i < c->vocab_size && i < 300; i++) fuzz_detokenize_checked(m, &i, 1, 0);

    lucie_session_defaults(m, &so);
    so.context = c->max_seq_len < 6 ? c->max_seq_len : 6;
    so.n_threads = 1;
    so.temperature = 0.8f;
    so.top_k = 3;
    so.top_p = 0.9f;
    so.min_p = 0.05f;
    so.repetition_penalty = 1.3f;
    so.seed = 42;
    if (lucie_session_new(m, &so, &s, err, sizeof err) != LUCIE_OK) {
        fuzz_check(s == NULL && strchr(err, '\n') == NULL, "failed session_new left a session or a bad message");
        return;
    }
    logits = (float *)malloc((size_t)c->vocab_size * 2 * sizeof(float));
    fuzz_check(logits != NULL, "out of memory");
    tokens[0] = c->bos_id >= 0 ? c->bos_id : 0;
    tokens[1] = c->vocab_size - 1;
    tokens[2] = c->vocab_size; /* out of range: must be refused, nothing evaluated */
    fuzz_check(lucie_eval(s, tokens + 1, 2, logits, 0) == LUCIE_EINVAL && lucie_session_position(s) == 0,
               "an out-of-range token was evaluated");
    if (lucie_session_context(s) >= 2) {
        fuzz_check(lucie_eval(s, tokens, 2, logits, LUCIE_EVAL_ALL_LOGITS) == LUCIE_OK, "eval of 2 tokens failed");
        for (i = 0; i < 3; i++) {
            /* weights may be NaN/inf here: then the sampler must refuse, not guess */
            tok = lucie_sample(s, logits + c->vocab_size);
            fuzz_check((tok >= 0 && tok < c->vocab_size) ||
                           (tok == LUCIE_EFORMAT && strchr(lucie_session_error(s), '\n') == NULL),
                       "sampled id outside the vocabulary");
        }
        fuzz_check(lucie_session_rewind(s, 1) == LUCIE_OK && lucie_session_position(s) == 1, "rewind");
        fuzz_check(lucie_session_rewind(s, 2) == LUCIE_EINVAL, "rewind past the position was accepted");
        lucie_session_rewind(s, 0);
    }
    {
        lucie_stats st;
        int rc = lucie_generate(s, "a", 3, NULL, NULL, &st);
        fuzz_check(rc == LUCIE_OK || rc == LUCIE_ECONTEXT || rc == LUCIE_EINVAL || rc == LUCIE_EFORMAT,
                   "generate failed oddly");
        if (rc != LUCIE_OK) fuzz_check(strchr(lucie_session_error(s), '\n') == NULL, "multi-line error");
    }
    free(logits);
    lucie_session_free(s);
}

#endif
