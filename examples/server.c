/* server.c - an OpenAI-compatible HTTP/1.1 server on lucie.c.
 *
 *   examples/server MODEL.bin [--host 127.0.0.1] [--port 8080] [--slots 4] [--ctx 2048]
 *                             [--queue 16] [--threads N] [--api-key KEY] [--name NAME]
 *                             [--max-body BYTES] [--timeout SECONDS] [--prefill-chunk N] [--sequential]
 *
 * Endpoints: GET /v1/models, POST /v1/completions, POST /v1/chat/completions
 * (with "stream": true as server-sent events). Parameters: n, max_tokens
 * (max_completion_tokens), temperature, top_p, top_k, seed, stop (a string or
 * an array), stream_options.include_usage; other fields are ignored.
 *
 * Design. One model, one scheduler thread that owns every session: a fixed
 * pool of slots, each a session of --ctx tokens. A thread per connection reads
 * and checks the request, tokenizes it (the model is thread-safe for that) and
 * queues a job; the scheduler admits queued jobs into free slots, then each
 * step samples one token for every decoding slot and evaluates all of them,
 * together with a chunk of the prompts being prefilled (--prefill-chunk
 * tokens shared by them), in ONE lucie_eval_batch call: the weights are read
 * once per step for every client, and a long prompt delays the others' next
 * token by one chunk's work, not by its whole prefill. The n choices of a job
 * fork the session of its first choice once that has evaluated the prompt.
 * Text goes into the job's buffers under the server mutex and the connection
 * thread writes it out: a slow or vanished client never holds up the
 * scheduler. A job that finds no free slot waits in a bounded queue
 * (beyond it: 503). The request parsing is a function of its own
 * (parse_api_request), also run by the fuzz target test/fuzz_server.c, which
 * includes this file with SERVER_NO_MAIN defined. */
#if !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <unistd.h>

#include "../lucie.h"

#ifdef MSG_NOSIGNAL
#define SEND_FLAGS MSG_NOSIGNAL
#else
#define SEND_FLAGS 0 /* SIGPIPE is ignored in main() */
#endif

#define JSON_MAX_DEPTH 64
#define MAX_STOP 16
#define MAX_STOP_LEN 256
#define MAX_CHOICES 16
#define MAX_HEAD 16384

/* ========================================================================
 * Growable byte buffer
 * ======================================================================== */

typedef struct {
    char *data;
    size_t len, cap;
    int failed; /* an allocation failed: the content is incomplete */
} sbuf;

static void sb_append(sbuf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *bigger;
        while (cap < b->len + n + 1) {
            if (cap > ((size_t)-1) / 2) {
                b->failed = 1;
                return;
            }
            cap *= 2;
        }
        bigger = (char *)realloc(b->data, cap);
        if (!bigger) {
            b->failed = 1;
            return;
        }
        b->data = bigger;
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void sb_puts(sbuf *b, const char *s) { sb_append(b, s, strlen(s)); }

static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[512];
    int n;
    va_list ap;
    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        b->failed = 1;
        return;
    }
    sb_append(b, tmp, (size_t)n);
}

static void sb_free(sbuf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* ========================================================================
 * JSON: a small parser (RFC 8259: strict UTF-8, \u escapes with surrogate
 * pairs, nesting limited to JSON_MAX_DEPTH) into a tree, and a string writer.
 * ======================================================================== */

typedef enum { JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json {
    json_type type;
    double number;
    char *str; /* JSON_STRING: the decoded bytes, NUL-terminated (str_len excludes it) */
    size_t str_len;
    char *key; /* member name inside an object (NUL-terminated) */
    size_t key_len;
    struct json *child; /* first element / member */
    struct json *next;  /* next sibling */
} json;

typedef struct {
    const char *p, *end;
    const char *error;
} json_parser;

static void json_free(json *v) {
    while (v) {
        json *next = v->next;
        json_free(v->child);
        free(v->str);
        free(v->key);
        free(v);
        v = next;
    }
}

static void skip_space(json_parser *jp) {
    while (jp->p < jp->end && (*jp->p == ' ' || *jp->p == '\t' || *jp->p == '\n' || *jp->p == '\r')) jp->p++;
}

static int hex4(const char *p, unsigned *out) {
    unsigned v = 0;
    int i;
    for (i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

static void put_utf8(sbuf *b, unsigned cp) {
    char u[4];
    size_t n;
    if (cp < 0x80) u[0] = (char)cp, n = 1;
    else if (cp < 0x800) u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    else if (cp < 0x10000)
        u[0] = (char)(0xE0 | cp >> 12), u[1] = (char)(0x80 | ((cp >> 6) & 0x3F)), u[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    else
        u[0] = (char)(0xF0 | cp >> 18), u[1] = (char)(0x80 | ((cp >> 12) & 0x3F)),
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), u[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    sb_append(b, u, n);
}

/* Length of the valid UTF-8 character at p (strict: no overlongs, no
 * surrogates, <= U+10FFFF), or 0. */
static size_t utf8_char_len(const unsigned char *p, const unsigned char *end) {
    unsigned c = p[0], cp;
    size_t len, k;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
    else return 0;
    if ((size_t)(end - p) < len) return 0;
    for (k = 1; k < len; k++) {
        if ((p[k] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (p[k] & 0x3Fu);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return len;
}

/* Parses a string at jp->p (the opening quote) into a new NUL-terminated copy. */
static char *parse_string(json_parser *jp, size_t *len) {
    sbuf b = {NULL, 0, 0, 0};
    jp->p++; /* the quote */
    for (;;) {
        unsigned char c;
        if (jp->p >= jp->end) {
            jp->error = "unterminated string";
            break;
        }
        c = (unsigned char)*jp->p;
        if (c == '"') {
            jp->p++;
            sb_append(&b, "", 0);
            if (b.failed) {
                jp->error = "out of memory";
                break;
            }
            *len = b.len;
            return b.data;
        }
        if (c < 0x20) {
            jp->error = "control character in a string";
            break;
        }
        if (c == '\\') {
            char e;
            if (jp->end - jp->p < 2) {
                jp->error = "unterminated escape";
                break;
            }
            e = jp->p[1];
            jp->p += 2;
            switch (e) {
            case '"': sb_append(&b, "\"", 1); break;
            case '\\': sb_append(&b, "\\", 1); break;
            case '/': sb_append(&b, "/", 1); break;
            case 'b': sb_append(&b, "\b", 1); break;
            case 'f': sb_append(&b, "\f", 1); break;
            case 'n': sb_append(&b, "\n", 1); break;
            case 'r': sb_append(&b, "\r", 1); break;
            case 't': sb_append(&b, "\t", 1); break;
            case 'u': {
                unsigned cp, lo;
                if (jp->end - jp->p < 4 || !hex4(jp->p, &cp)) {
                    jp->error = "bad \\u escape";
                    goto fail;
                }
                jp->p += 4;
                if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    jp->error = "lone low surrogate in \\u escape";
                    goto fail;
                }
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (jp->end - jp->p < 6 || jp->p[0] != '\\' || jp->p[1] != 'u' || !hex4(jp->p + 2, &lo) ||
                        lo < 0xDC00 || lo > 0xDFFF) {
                        jp->error = "high surrogate without its low surrogate in \\u escape";
                        goto fail;
                    }
                    jp->p += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                put_utf8(&b, cp);
                break;
            }
            default: jp->error = "unknown escape"; goto fail;
            }
        } else {
            size_t n = utf8_char_len((const unsigned char *)jp->p, (const unsigned char *)jp->end);
            if (n == 0) {
                jp->error = "invalid UTF-8 in a string";
                break;
            }
            sb_append(&b, jp->p, n);
            jp->p += n;
        }
    }
fail:
    sb_free(&b);
    return NULL;
}

static int parse_number(json_parser *jp, double *out) {
    const char *s = jp->p;
    char tmp[64];
    size_t n;
    if (s < jp->end && *s == '-') s++;
    if (s >= jp->end) return 0;
    if (*s == '0') s++;
    else if (*s >= '1' && *s <= '9')
        while (s < jp->end && *s >= '0' && *s <= '9') s++;
    else return 0;
    if (s < jp->end && *s == '.') {
        s++;
        if (s >= jp->end || *s < '0' || *s > '9') return 0;
        while (s < jp->end && *s >= '0' && *s <= '9') s++;
    }
    if (s < jp->end && (*s == 'e' || *s == 'E')) {
        s++;
        if (s < jp->end && (*s == '+' || *s == '-')) s++;
        if (s >= jp->end || *s < '0' || *s > '9') return 0;
        while (s < jp->end && *s >= '0' && *s <= '9') s++;
    }
    n = (size_t)(s - jp->p);
    if (n >= sizeof tmp) return 0; /* absurdly long numbers are refused */
    memcpy(tmp, jp->p, n);
    tmp[n] = '\0';
    *out = strtod(tmp, NULL);
    jp->p = s;
    return 1;
}

static json *parse_value(json_parser *jp, int depth);

static json *new_node(json_parser *jp, json_type type) {
    json *v = (json *)calloc(1, sizeof *v);
    if (!v) jp->error = "out of memory";
    else v->type = type;
    return v;
}

static json *parse_container(json_parser *jp, int depth, int object) {
    json *v = new_node(jp, object ? JSON_OBJECT : JSON_ARRAY), *last = NULL;
    char close = object ? '}' : ']';
    if (!v) return NULL;
    if (depth >= JSON_MAX_DEPTH) {
        jp->error = "nesting too deep";
        free(v);
        return NULL;
    }
    jp->p++;
    skip_space(jp);
    if (jp->p < jp->end && *jp->p == close) {
        jp->p++;
        return v;
    }
    for (;;) {
        json *item;
        char *key = NULL;
        size_t key_len = 0;
        skip_space(jp);
        if (object) {
            if (jp->p >= jp->end || *jp->p != '"') {
                jp->error = "expected a member name";
                break;
            }
            if (!(key = parse_string(jp, &key_len))) break;
            skip_space(jp);
            if (jp->p >= jp->end || *jp->p != ':') {
                jp->error = "expected ':'";
                free(key);
                break;
            }
            jp->p++;
        }
        item = parse_value(jp, depth + 1);
        if (!item) {
            free(key);
            break;
        }
        item->key = key;
        item->key_len = key_len;
        if (last) last->next = item;
        else v->child = item;
        last = item;
        skip_space(jp);
        if (jp->p < jp->end && *jp->p == ',') {
            jp->p++;
            continue;
        }
        if (jp->p < jp->end && *jp->p == close) {
            jp->p++;
            return v;
        }
        jp->error = object ? "expected ',' or '}'" : "expected ',' or ']'";
        break;
    }
    json_free(v);
    return NULL;
}

static json *parse_value(json_parser *jp, int depth) {
    json *v;
    skip_space(jp);
    if (jp->p >= jp->end) {
        jp->error = "unexpected end of input";
        return NULL;
    }
    switch (*jp->p) {
    case '{': return parse_container(jp, depth, 1);
    case '[': return parse_container(jp, depth, 0);
    case '"':
        if (!(v = new_node(jp, JSON_STRING))) return NULL;
        if (!(v->str = parse_string(jp, &v->str_len))) {
            free(v);
            return NULL;
        }
        return v;
    case 't':
    case 'f':
    case 'n': {
        static const char *const words[3] = {"true", "false", "null"};
        static const json_type types[3] = {JSON_TRUE, JSON_FALSE, JSON_NULL};
        int i;
        for (i = 0; i < 3; i++) {
            size_t n = strlen(words[i]);
            if ((size_t)(jp->end - jp->p) >= n && memcmp(jp->p, words[i], n) == 0) {
                jp->p += n;
                return new_node(jp, types[i]);
            }
        }
        jp->error = "invalid literal";
        return NULL;
    }
    default:
        if (!(v = new_node(jp, JSON_NUMBER))) return NULL;
        if (!parse_number(jp, &v->number)) {
            jp->error = "invalid value";
            free(v);
            return NULL;
        }
        return v;
    }
}

/* Parses a whole document; NULL with *error set when it is not valid JSON. */
static json *json_parse(const char *text, size_t len, const char **error) {
    json_parser jp;
    json *v;
    jp.p = text;
    jp.end = text + len;
    jp.error = NULL;
    v = parse_value(&jp, 0);
    if (v) {
        skip_space(&jp);
        if (jp.p != jp.end) {
            jp.error = "trailing characters after the JSON value";
            json_free(v);
            v = NULL;
        }
    }
    if (!v && error) *error = jp.error ? jp.error : "invalid JSON";
    return v;
}

static const json *json_get(const json *obj, const char *key) {
    const json *m;
    size_t n = strlen(key);
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    for (m = obj->child; m; m = m->next)
        if (m->key_len == n && memcmp(m->key, key, n) == 0) return m;
    return NULL;
}

/* Writes s (n bytes of UTF-8) as a JSON string. */
static void json_put_string(sbuf *b, const char *s, size_t n) {
    size_t i, start = 0;
    sb_append(b, "\"", 1);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[8];
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c < 0x20) {
            snprintf(u, sizeof u, "\\u%04x", c);
            esc = u;
        }
        if (esc) {
            sb_append(b, s + start, i - start);
            sb_puts(b, esc);
            start = i + 1;
        }
    }
    sb_append(b, s + start, n - start);
    sb_append(b, "\"", 1);
}

/* Writes v back as compact JSON (numbers with 17 significant digits); the
 * fuzz target checks that parse -> write -> parse -> write is stable. */
void json_write(sbuf *b, const json *v) {
    const json *m;
    switch (v->type) {
    case JSON_NULL: sb_puts(b, "null"); break;
    case JSON_FALSE: sb_puts(b, "false"); break;
    case JSON_TRUE: sb_puts(b, "true"); break;
    case JSON_NUMBER:
        if (isfinite(v->number)) sb_printf(b, "%.17g", v->number);
        else sb_puts(b, v->number > 0 ? "1e999" : "-1e999");
        break;
    case JSON_STRING: json_put_string(b, v->str, v->str_len); break;
    case JSON_ARRAY:
    case JSON_OBJECT:
        sb_puts(b, v->type == JSON_ARRAY ? "[" : "{");
        for (m = v->child; m; m = m->next) {
            if (m != v->child) sb_puts(b, ",");
            if (v->type == JSON_OBJECT) {
                json_put_string(b, m->key, m->key_len);
                sb_puts(b, ":");
            }
            json_write(b, m);
        }
        sb_puts(b, v->type == JSON_ARRAY ? "]" : "}");
        break;
    }
}

/* ========================================================================
 * API requests: the JSON body of /v1/completions and /v1/chat/completions,
 * checked. Independent of the model and the network (the fuzz target runs it).
 * ======================================================================== */

typedef struct {
    int chat;
    const char *prompt; /* completions: the text (inside root) */
    size_t prompt_len;
    lucie_chat_message *messages; /* chat */
    int n_messages;
    int n, max_tokens; /* max_tokens -1: not given */
    int stream, include_usage;
    int has_temperature, has_top_p, has_top_k, has_seed;
    double temperature, top_p;
    int top_k;
    unsigned long long seed;
    const char *stop[MAX_STOP];
    int n_stop;
    json *root;
    char **owned; /* strings built from content parts */
    int n_owned;
} api_request;

typedef struct {
    int status; /* HTTP status */
    const char *type, *param, *code;
    char message[256];
} api_error;

static int vfail(api_error *e, int status, const char *type, const char *param, const char *code, const char *fmt,
                 va_list ap) {
    e->status = status;
    e->type = type;
    e->param = param;
    e->code = code;
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    return 0;
}

/* Fills in the error the client gets; returns 0 (the parse failed). */
static int fail(api_error *e, int status, const char *type, const char *param, const char *code, const char *fmt,
                ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(e, status, type, param, code, fmt, ap);
    va_end(ap);
    return 0;
}

/* A request field with a bad value: 400 invalid_request_error naming it. */
static int bad_param(api_error *e, const char *param, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(e, 400, "invalid_request_error", param, NULL, fmt, ap);
    va_end(ap);
    return 0;
}

void api_request_free(api_request *r) {
    int i;
    json_free(r->root);
    free(r->messages);
    for (i = 0; i < r->n_owned; i++) free(r->owned[i]);
    free(r->owned);
    memset(r, 0, sizeof *r);
}

/* A field that is absent or null counts as not given. */
static const json *field(const json *root, const char *key) {
    const json *v = json_get(root, key);
    return v && v->type != JSON_NULL ? v : NULL;
}

static int get_number(const json *root, const char *key, double lo, double hi, int *has, double *out,
                      api_error *e) {
    const json *v = field(root, key);
    if (!v) return 1;
    if (v->type != JSON_NUMBER || !(v->number >= lo && v->number <= hi))
        return bad_param(e, key, "'%s' must be a number in [%g, %g]", key, lo, hi);
    *has = 1;
    *out = v->number;
    return 1;
}

static int get_int(const json *root, const char *key, double lo, double hi, int *has, double *out, api_error *e) {
    const json *v = field(root, key);
    if (!v) return 1;
    if (v->type != JSON_NUMBER || !(v->number >= lo && v->number <= hi) || v->number != floor(v->number))
        return bad_param(e, key, "'%s' must be an integer in [%.0f, %.0f]", key, lo, hi);
    *has = 1;
    *out = v->number;
    return 1;
}

static int is_text(const json *v) { return v && v->type == JSON_STRING && strlen(v->str) == v->str_len; }

/* A message's content: a string, or an array of {"type": "text", "text": ...} parts. */
static const char *message_content(api_request *r, const json *content, api_error *e) {
    sbuf b = {NULL, 0, 0, 0};
    const json *part;
    char **owned;
    if (!content) return "";
    if (content->type == JSON_STRING) {
        if (!is_text(content)) return bad_param(e, "messages", "message content contains a NUL character"), NULL;
        return content->str;
    }
    if (content->type != JSON_ARRAY)
        return bad_param(e, "messages", "message content must be a string or an array of text parts"), NULL;
    for (part = content->child; part; part = part->next) {
        const json *type = json_get(part, "type"), *text = json_get(part, "text");
        if (!type || type->type != JSON_STRING || strcmp(type->str, "text") != 0 || !is_text(text)) {
            sb_free(&b);
            return bad_param(e, "messages", "only text content parts are supported"), NULL;
        }
        sb_append(&b, text->str, text->str_len);
    }
    sb_append(&b, "", 0);
    owned = (char **)realloc(r->owned, (size_t)(r->n_owned + 1) * sizeof *owned);
    if (b.failed || !owned) {
        if (owned) r->owned = owned;
        sb_free(&b);
        return fail(e, 500, "server_error", NULL, NULL, "out of memory"), NULL;
    }
    r->owned = owned;
    r->owned[r->n_owned++] = b.data;
    return b.data;
}

static int parse_messages(api_request *r, const json *list, api_error *e) {
    const json *m;
    int n = 0;
    if (!list || list->type != JSON_ARRAY || !list->child)
        return bad_param(e, "messages", "'messages' must be a non-empty array");
    for (m = list->child; m; m = m->next) n++;
    r->messages = (lucie_chat_message *)calloc((size_t)n, sizeof *r->messages);
    if (!r->messages) return fail(e, 500, "server_error", NULL, NULL, "out of memory");
    for (m = list->child; m; m = m->next) {
        const json *role = json_get(m, "role");
        if (m->type != JSON_OBJECT || !is_text(role) || role->str_len == 0)
            return bad_param(e, "messages", "each message must be an object with a 'role' string");
        r->messages[r->n_messages].role = role->str;
        if (!(r->messages[r->n_messages].content = message_content(r, field(m, "content"), e))) return 0;
        r->n_messages++;
    }
    return 1;
}

static int parse_stop(api_request *r, const json *stop, api_error *e) {
    const json *s;
    if (!stop) return 1;
    if (stop->type == JSON_STRING) s = stop;
    else if (stop->type == JSON_ARRAY) s = stop->child;
    else return bad_param(e, "stop", "'stop' must be a string or an array of strings");
    for (; s; s = stop->type == JSON_ARRAY ? s->next : NULL) {
        if (!is_text(s) || s->str_len > MAX_STOP_LEN)
            return bad_param(e, "stop", "each stop sequence must be a string of at most %d bytes", MAX_STOP_LEN);
        if (r->n_stop == MAX_STOP) return bad_param(e, "stop", "at most %d stop sequences", MAX_STOP);
        if (s->str_len > 0) r->stop[r->n_stop++] = s->str;
    }
    return 1;
}

/* Parses and checks a request body. Returns 1, or 0 with *e filled (an
 * OpenAI-style error: status, type, param, message). r is to be freed with
 * api_request_free in both cases. */
int parse_api_request(const char *body, size_t len, int chat, api_request *r, api_error *e) {
    const char *error = NULL;
    const json *v;
    double d;
    int has = 0;
    memset(r, 0, sizeof *r);
    r->chat = chat;
    r->n = 1;
    r->max_tokens = -1;
    if (!(r->root = json_parse(body, len, &error)))
        return bad_param(e, NULL, "the body is not valid JSON: %s", error ? error : "?");
    if (r->root->type != JSON_OBJECT) return bad_param(e, NULL, "the body must be a JSON object");
    if (chat) {
        if (!parse_messages(r, json_get(r->root, "messages"), e)) return 0;
    } else {
        v = json_get(r->root, "prompt");
        if (v && v->type == JSON_ARRAY && v->child && !v->child->next) v = v->child; /* ["text"] */
        if (!is_text(v)) return bad_param(e, "prompt", "'prompt' must be a string (or an array of one string)");
        r->prompt = v->str;
        r->prompt_len = v->str_len;
    }
    if ((v = field(r->root, "stream")) != NULL) {
        if (v->type != JSON_TRUE && v->type != JSON_FALSE) return bad_param(e, "stream", "'stream' must be a boolean");
        r->stream = v->type == JSON_TRUE;
    }
    if ((v = field(r->root, "stream_options")) != NULL) {
        const json *u = field(v, "include_usage");
        if (v->type != JSON_OBJECT || (u && u->type != JSON_TRUE && u->type != JSON_FALSE))
            return bad_param(e, "stream_options", "'stream_options' must be an object with a boolean 'include_usage'");
        r->include_usage = u && u->type == JSON_TRUE;
    }
    if (!get_int(r->root, "n", 1, MAX_CHOICES, &has, &d, e)) return 0;
    if (has) r->n = (int)d;
    has = 0;
    if (!get_int(r->root, chat && field(r->root, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens", 0,
                 INT_MAX, &has, &d, e))
        return 0;
    if (has) r->max_tokens = (int)d;
    if (!get_number(r->root, "temperature", 0, 100, &r->has_temperature, &r->temperature, e)) return 0;
    if (!get_number(r->root, "top_p", 0, 1, &r->has_top_p, &r->top_p, e)) return 0;
    if (r->has_top_p && r->top_p <= 0) return bad_param(e, "top_p", "'top_p' must be in (0, 1]");
    has = 0;
    if (!get_int(r->root, "top_k", 0, 1 << 24, &has, &d, e)) return 0;
    if (has) r->has_top_k = 1, r->top_k = (int)d;
    if (!get_int(r->root, "seed", -9007199254740992.0, 9007199254740992.0, &r->has_seed, &d, e)) return 0;
    if (r->has_seed) r->seed = d < 0 ? (unsigned long long)(long long)d : (unsigned long long)d;
    return parse_stop(r, field(r->root, "stop"), e);
}

/* ========================================================================
 * HTTP: the request head
 * ======================================================================== */

typedef struct {
    char method[16], path[256];
    long long content_length; /* -1: none */
    int chunked, expect_continue;
    char authorization[512];
} http_head;

static int header_is(const char *line, size_t len, const char *name, const char **value, size_t *value_len) {
    size_t n = strlen(name), i;
    if (len <= n || line[n] != ':') return 0;
    for (i = 0; i < n; i++) {
        char c = line[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (c != name[i]) return 0;
    }
    line += n + 1, len -= n + 1;
    while (len && (*line == ' ' || *line == '\t')) line++, len--;
    while (len && (line[len - 1] == ' ' || line[len - 1] == '\t')) len--;
    *value = line;
    *value_len = len;
    return 1;
}

static int ieq(const char *a, size_t n, const char *b) {
    size_t i;
    if (strlen(b) != n) return 0;
    for (i = 0; i < n; i++) {
        char c = a[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (c != b[i]) return 0;
    }
    return 1;
}

/* Parses the head (request line and headers, up to and without the blank
 * line) of len bytes. Returns 0 or the HTTP status to refuse it with. */
int parse_http_head(const char *head, size_t len, http_head *h) {
    const char *p = head, *end = head + len, *eol, *sp1, *sp2;
    memset(h, 0, sizeof *h);
    h->content_length = -1;
    eol = memchr(p, '\n', len);
    if (!eol) eol = end;
    sp1 = memchr(p, ' ', (size_t)(eol - p));
    if (!sp1) return 400;
    sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
    if (!sp2 || (size_t)(sp1 - p) >= sizeof h->method || sp1 == p) return 400;
    if ((size_t)(sp2 - sp1 - 1) >= sizeof h->path) return 414;
    memcpy(h->method, p, (size_t)(sp1 - p));
    memcpy(h->path, sp1 + 1, (size_t)(sp2 - sp1 - 1));
    if (memchr(h->path, '\0', (size_t)(sp2 - sp1 - 1)) || memchr(h->method, '\0', (size_t)(sp1 - p))) return 400;
    if ((size_t)(eol - sp2 - 1) < 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0) return 400;
    p = eol < end ? eol + 1 : end;
    while (p < end) {
        const char *value;
        size_t n, value_len;
        eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        n = (size_t)(eol - p);
        if (n && p[n - 1] == '\r') n--;
        if (header_is(p, n, "content-length", &value, &value_len)) {
            long long v = 0;
            size_t i;
            if (value_len == 0 || value_len > 15 || h->content_length >= 0) return 400;
            for (i = 0; i < value_len; i++) {
                if (value[i] < '0' || value[i] > '9') return 400;
                v = v * 10 + (value[i] - '0');
            }
            h->content_length = v;
        } else if (header_is(p, n, "transfer-encoding", &value, &value_len)) {
            h->chunked = 1;
        } else if (header_is(p, n, "expect", &value, &value_len)) {
            if (!ieq(value, value_len, "100-continue")) return 417;
            h->expect_continue = 1;
        } else if (header_is(p, n, "authorization", &value, &value_len)) {
            if (value_len >= sizeof h->authorization) return 400;
            memcpy(h->authorization, value, value_len);
            h->authorization[value_len] = '\0';
        }
        p = eol < end ? eol + 1 : end;
    }
    return 0;
}

#ifndef SERVER_NO_MAIN

/* ========================================================================
 * Jobs: one request's work, shared by its connection thread and the
 * scheduler under the server mutex.
 * ======================================================================== */

typedef struct {
    sbuf text;         /* the choice's output so far */
    size_t sent;       /* bytes of text already streamed */
    size_t *ends;      /* where each token's text ends in text: one event per token when streaming */
    int n_ends, cap_ends, ends_sent;
    int n_tokens;      /* tokens sampled */
    const char *finish; /* "stop" / "length" once done, else NULL */
    int started;       /* got a slot */
} choice_state;

typedef struct job {
    /* set by the connection thread before queueing, then read-only */
    int chat, n, max_tokens;
    int *prompt;
    int n_prompt;
    lucie_session_options sampler;
    char stop[MAX_STOP][MAX_STOP_LEN + 1];
    int n_stop;
    /* under the server mutex */
    choice_state *choices;
    int next_choice; /* choices not yet given a slot start here */
    int running;     /* choices in slots */
    int done;        /* choices finished */
    int cancelled;   /* the client left */
    int failed;      /* the library failed: error holds why */
    char error[256];
    int refs; /* connection thread + scheduler (while queued or running) */
    pthread_cond_t changed;
    struct job *next; /* in the queue */
} job;

/* What a slot that holds a choice is doing. */
enum {
    SLOT_PREFILL,   /* evaluating its prompt, a chunk per step */
    SLOT_FORK_WAIT, /* a sibling choice is evaluating the prompt: fork it when done */
    SLOT_DECODE     /* sampling a token per step */
};

typedef struct {
    lucie_session *session;
    float *logits;
    job *job; /* NULL: free */
    int choice;
    int phase;     /* SLOT_*, while it has a job */
    int prefilled; /* SLOT_PREFILL: prompt tokens already in the cache */
    int token; /* the token to evaluate in the next step */
    int generated;
    lucie_detok_stream *stream;
    sbuf held; /* text held back: it may be the start of a stop string */
} slot;

typedef struct {
    lucie_model *model;
    const lucie_config *config;
    char model_name[128];
    lucie_session_options defaults;
    int n_slots, ctx, threads, queue_limit, max_connections, timeout_s, sequential;
    int prefill_chunk; /* prompt tokens evaluated per step, shared by the prompts being prefilled */
    long max_body;
    const char *api_key;
    slot *slots;
    pthread_mutex_t lock;
    pthread_cond_t work; /* the scheduler waits here for jobs */
    job *queue_head, *queue_tail;
    int queued, connections;
    unsigned long next_id;
    /* measurement: tokens decoded, and steps */
    unsigned long long decoded_tokens, steps;
} server;

typedef struct {
    server *srv;
    int fd;
} connection;

static void job_release(server *srv, job *j) {
    int i;
    if (--j->refs > 0) return;
    (void)srv;
    for (i = 0; i < j->n; i++) {
        sb_free(&j->choices[i].text);
        free(j->choices[i].ends);
    }
    free(j->choices);
    free(j->prompt);
    pthread_cond_destroy(&j->changed);
    free(j);
}

static int is_eos(const lucie_config *c, int token) {
    int i;
    for (i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] == token) return 1;
    return 0;
}

/* ---- scheduler --------------------------------------------------------- */

/* Ends slot s's choice (under the lock). */
static void slot_finish(server *srv, slot *s, const char *finish) {
    job *j = s->job;
    choice_state *c = &j->choices[s->choice];
    if (!c->finish) {
        c->finish = finish;
        j->done++;
    }
    j->running--;
    lucie_detok_stream_free(s->stream);
    s->stream = NULL;
    s->held.len = 0;
    s->job = NULL;
    pthread_cond_broadcast(&j->changed);
    if (j->running == 0 && j->next_choice >= j->n) job_release(srv, j);
}

/* Marks every unfinished choice of j failed (under the lock). */
static void job_fail(job *j, const char *message) {
    int i;
    if (!j->failed) {
        j->failed = 1;
        snprintf(j->error, sizeof j->error, "%s", message);
    }
    for (i = 0; i < j->n; i++)
        if (!j->choices[i].finish) {
            j->choices[i].finish = "error";
            j->done++;
        }
    pthread_cond_broadcast(&j->changed);
}

/* The library's stop-string rule over the held text: the offset of the
 * earliest whole stop string (*found = 1), or how many bytes are safe to emit. */
static size_t stop_scan(const job *j, const sbuf *held, int *found) {
    const char *stops[MAX_STOP];
    int k;
    for (k = 0; k < j->n_stop; k++) stops[k] = j->stop[k];
    return lucie_stop_scan(held->data ? held->data : "", held->len, stops, j->n_stop, found);
}

/* Moves the emittable part of the held text to the choice's output (under
 * the lock). Returns 1 when a stop string ended the choice. */
static int emit_text(slot *s, const char *piece, size_t len, int final) {
    choice_state *c = &s->job->choices[s->choice];
    int found;
    size_t safe;
    sb_append(&s->held, piece, len);
    safe = stop_scan(s->job, &s->held, &found);
    if (final && !found) safe = s->held.len;
    sb_append(&c->text, s->held.data ? s->held.data : "", safe);
    if (safe > 0) {
        if (c->n_ends == c->cap_ends) {
            int cap = c->cap_ends ? 2 * c->cap_ends : 64;
            size_t *bigger = (size_t *)realloc(c->ends, (size_t)cap * sizeof *bigger);
            if (bigger) c->ends = bigger, c->cap_ends = cap;
        }
        if (c->n_ends < c->cap_ends) c->ends[c->n_ends++] = c->text.len; /* else: pieces coalesce */
    }
    if (s->held.len) memmove(s->held.data, s->held.data + safe, s->held.len - safe);
    s->held.len -= safe;
    if (s->held.data) s->held.data[s->held.len] = '\0';
    pthread_cond_broadcast(&s->job->changed);
    return found;
}

/* Ends slot s's choice with an error (under the lock): message says why. */
static void slot_fail(server *srv, slot *s, const char *message) {
    job_fail(s->job, message);
    slot_finish(srv, s, "error");
}

/* Frees slot s when its job was cancelled (the client left) or failed (a
 * sibling choice's error); returns 1 then. Takes the lock. */
static int slot_abandoned(server *srv, slot *s) {
    int abandoned;
    pthread_mutex_lock(&srv->lock);
    abandoned = s->job->cancelled || s->job->failed;
    if (abandoned) slot_finish(srv, s, "cancelled");
    pthread_mutex_unlock(&srv->lock);
    return abandoned;
}

/* Slot s's cache holds its whole prompt and s->logits the prediction after
 * it: give the choice its own sampler (seed + choice) and text stream, and
 * decode from the next step on. Returns 0 or a message in err. */
static int decode_begin(server *srv, slot *s, char *err, size_t err_size) {
    const job *j = s->job;
    lucie_session_options o = j->sampler;
    int rc;
    s->generated = 0;
    s->held.len = 0;
    o.seed = j->sampler.seed + (unsigned long long)s->choice;
    if ((rc = lucie_session_set_sampler(s->session, &o)) != LUCIE_OK) {
        snprintf(err, err_size, "%s", lucie_session_error(s->session));
        return rc;
    }
    s->stream = lucie_detok_stream_new(srv->model, LUCIE_DETOK_SKIP_SPECIAL);
    if (!s->stream) {
        snprintf(err, err_size, "out of memory");
        return LUCIE_ENOMEM;
    }
    /* a completion continues its prompt's text; a chat reply is decoded on its own */
    if (!j->chat && (rc = lucie_detok_stream_prime(s->stream, j->prompt, j->n_prompt)) != LUCIE_OK) {
        snprintf(err, err_size, "cannot decode the prompt");
        return rc;
    }
    s->phase = SLOT_DECODE;
    return 0;
}

/* Starts evaluating slot s's prompt from scratch (chunks follow in the steps). */
static void prefill_begin(server *srv, slot *s) {
    int rc = lucie_session_rewind(s->session, 0);
    s->phase = SLOT_PREFILL;
    s->prefilled = 0;
    if (rc != LUCIE_OK) {
        pthread_mutex_lock(&srv->lock);
        slot_fail(srv, s, lucie_session_error(s->session));
        pthread_mutex_unlock(&srv->lock);
    }
}

/* A slot that holds the same job's prompt and its prediction, nothing
 * sampled yet (a fork of it continues exactly as a prefill would); else
 * NULL. *prefilling is set when a sibling is still evaluating the prompt. */
static slot *fork_source(server *srv, const slot *s, int *prefilling) {
    int k;
    *prefilling = 0;
    for (k = 0; k < srv->n_slots; k++) {
        slot *o = &srv->slots[k];
        if (o == s || o->job != s->job) continue;
        if (o->phase == SLOT_DECODE && o->generated == 0) return o;
        if (o->phase == SLOT_PREFILL) *prefilling = 1;
    }
    return NULL;
}

/* A slot waiting for its prompt: forks a sibling that has just evaluated it,
 * goes on waiting while one is evaluating it, else evaluates it itself. */
static void fork_or_prefill(server *srv, slot *s) {
    int prefilling;
    slot *src = fork_source(srv, s, &prefilling);
    lucie_session *forked = NULL;
    char err[256];
    if (src) {
        if (lucie_session_fork(src->session, &forked, err, sizeof err) == LUCIE_OK) {
            lucie_session_free(s->session);
            s->session = forked;
            memcpy(s->logits, src->logits, (size_t)srv->config->vocab_size * sizeof *s->logits);
            if (decode_begin(srv, s, err, sizeof err) != 0) {
                pthread_mutex_lock(&srv->lock);
                slot_fail(srv, s, err);
                pthread_mutex_unlock(&srv->lock);
            }
            return;
        }
        /* no fork (out of memory): evaluate the prompt again */
    } else if (prefilling) {
        return;
    }
    prefill_begin(srv, s);
}

/* Gives free slots to queued choices. A choice starts waiting for its
 * prompt (SLOT_FORK_WAIT): start_waiting_slots then decides how it gets it. */
static void admit(server *srv) {
    int i;
    pthread_mutex_lock(&srv->lock);
    for (i = 0; i < srv->n_slots; i++) {
        slot *s = &srv->slots[i];
        job *j;
        int choice;
        if (s->job) continue;
        /* drop cancelled jobs from the head of the queue */
        while ((j = srv->queue_head) != NULL && (j->cancelled || j->failed)) {
            srv->queue_head = j->next;
            if (!srv->queue_head) srv->queue_tail = NULL;
            srv->queued--;
            j->next_choice = j->n;
            if (j->running == 0) job_release(srv, j);
        }
        if (!j) break;
        choice = j->next_choice++;
        if (j->next_choice == j->n) {
            srv->queue_head = j->next;
            if (!srv->queue_head) srv->queue_tail = NULL;
            srv->queued--;
        }
        j->running++;
        j->choices[choice].started = 1;
        s->job = j;
        s->choice = choice;
        s->phase = SLOT_FORK_WAIT;
    }
    pthread_mutex_unlock(&srv->lock);
}

/* Every waiting slot either forks, starts its prefill or goes on waiting;
 * slots of abandoned jobs are freed. The first waiting choice of a job
 * becomes its prefill and the others wait for it: a job's prompt is
 * evaluated once, however many choices it has. */
static void start_waiting_slots(server *srv) {
    int i;
    for (i = 0; i < srv->n_slots; i++) {
        slot *s = &srv->slots[i];
        if (!s->job || s->phase == SLOT_DECODE || slot_abandoned(srv, s)) continue;
        if (s->phase == SLOT_FORK_WAIT) fork_or_prefill(srv, s);
    }
}

/* Samples the next token of slot s and publishes its text. Returns 1 when
 * the slot goes on (its token must be evaluated), 0 when it finished. */
static int slot_sample(server *srv, slot *s) {
    int token, stop = 0;
    const char *piece, *finish = NULL;
    size_t len = 0;
    if (slot_abandoned(srv, s)) return 0;
    if (s->generated >= s->job->max_tokens || lucie_session_position(s->session) >= srv->ctx) {
        finish = "length";
    } else {
        token = lucie_sample(s->session, s->logits);
        if (token < 0) {
            pthread_mutex_lock(&srv->lock);
            slot_fail(srv, s, lucie_session_error(s->session));
            pthread_mutex_unlock(&srv->lock);
            return 0;
        }
        s->generated++;
        s->token = token;
        pthread_mutex_lock(&srv->lock);
        s->job->choices[s->choice].n_tokens++;
        pthread_mutex_unlock(&srv->lock);
        if (is_eos(srv->config, token)) finish = "stop";
        else {
            piece = lucie_detok_stream_push(s->stream, token, &len);
            pthread_mutex_lock(&srv->lock);
            stop = piece ? emit_text(s, piece, len, 0) : 0;
            if (stop) slot_finish(srv, s, "stop");
            pthread_mutex_unlock(&srv->lock);
            if (stop) return 0;
            if (s->generated >= s->job->max_tokens) finish = "length";
        }
    }
    if (finish) {
        piece = lucie_detok_stream_flush(s->stream, &len);
        pthread_mutex_lock(&srv->lock);
        stop = emit_text(s, piece ? piece : "", piece ? len : 0, 1);
        slot_finish(srv, s, stop ? "stop" : finish);
        pthread_mutex_unlock(&srv->lock);
        return 0;
    }
    return 1;
}

/* Adds this step's prompt chunks to entries (after n of them) and returns
 * the new count: at most srv->prefill_chunk prompt tokens in all, the
 * shortest remaining prompt first (a short request gets its first token
 * soon even behind a long one; a long one takes what is left). Only an
 * entry that ends its prompt asks for logits: the others skip lm_head.
 * chunk[i] gets the tokens given to slot i. */
static int plan_prefill(server *srv, lucie_batch_entry *entries, int n, int *chunk) {
    int budget = srv->prefill_chunk, i;
    for (i = 0; i < srv->n_slots; i++) chunk[i] = 0;
    while (budget > 0) {
        slot *best = NULL;
        int best_i = -1, take;
        for (i = 0; i < srv->n_slots; i++) {
            slot *s = &srv->slots[i];
            if (!s->job || s->phase != SLOT_PREFILL || chunk[i]) continue;
            if (!best || s->job->n_prompt - s->prefilled < best->job->n_prompt - best->prefilled) best = s, best_i = i;
        }
        if (!best) break;
        take = best->job->n_prompt - best->prefilled;
        if (take > budget) take = budget;
        chunk[best_i] = take;
        budget -= take;
        entries[n].session = best->session;
        entries[n].tokens = best->job->prompt + best->prefilled;
        entries[n].n_tokens = take;
        entries[n].logits = best->prefilled + take == best->job->n_prompt ? best->logits : NULL;
        n++;
    }
    return n;
}

/* After a step's evaluation: the prefilling slots advance by their chunk;
 * those whose prompt is complete decode from the next step on. */
static void prefill_advance(server *srv, const int *chunk) {
    int i;
    for (i = 0; i < srv->n_slots; i++) {
        slot *s = &srv->slots[i];
        char err[256];
        if (!chunk[i] || !s->job) continue;
        s->prefilled += chunk[i];
        if (s->prefilled == s->job->n_prompt && decode_begin(srv, s, err, sizeof err) != 0) {
            pthread_mutex_lock(&srv->lock);
            slot_fail(srv, s, err);
            pthread_mutex_unlock(&srv->lock);
        }
    }
}

/* One step: admit, start the waiting slots, sample every decoding slot, then
 * evaluate in one batch the sampled tokens and this step's prompt chunks: a
 * long prompt never stalls the other clients' streams for more than a step. */
static void scheduler_step(server *srv, lucie_batch_entry *entries, int *chunk) {
    int i, n = 0, n_decoding, rc = LUCIE_OK;
    admit(srv);
    start_waiting_slots(srv);
    for (i = 0; i < srv->n_slots; i++) {
        slot *s = &srv->slots[i];
        if (!s->job || s->phase != SLOT_DECODE || !slot_sample(srv, s)) continue;
        entries[n].session = s->session;
        entries[n].tokens = &s->token;
        entries[n].n_tokens = 1;
        entries[n].logits = s->logits;
        n++;
    }
    n_decoding = n;
    n = plan_prefill(srv, entries, n, chunk);
    if (n == 0) return;
    if (srv->sequential) {
        for (i = 0; i < n && rc == LUCIE_OK; i++)
            rc = lucie_eval(entries[i].session, entries[i].tokens, entries[i].n_tokens, entries[i].logits, 0);
    } else {
        rc = lucie_eval_batch(entries, n);
    }
    if (rc == LUCIE_OK) prefill_advance(srv, chunk);
    pthread_mutex_lock(&srv->lock);
    srv->decoded_tokens += (unsigned long long)n_decoding;
    srv->steps++;
    if (rc != LUCIE_OK) {
        /* every slot of the step fails: the batch is all or nothing */
        for (i = 0; i < srv->n_slots; i++) {
            slot *s = &srv->slots[i];
            int k;
            for (k = 0; k < n; k++)
                if (s->job && entries[k].session == s->session) {
                    slot_fail(srv, s, lucie_session_error(entries[0].session));
                    break;
                }
        }
    }
    pthread_mutex_unlock(&srv->lock);
}

static void *scheduler_main(void *arg) {
    server *srv = (server *)arg;
    lucie_batch_entry *entries = (lucie_batch_entry *)calloc((size_t)srv->n_slots, sizeof *entries);
    int *chunk = (int *)calloc((size_t)srv->n_slots, sizeof *chunk);
    if (!entries || !chunk) {
        fprintf(stderr, "server: out of memory\n");
        exit(1);
    }
    for (;;) {
        int i, active = 0;
        pthread_mutex_lock(&srv->lock);
        for (i = 0; i < srv->n_slots; i++) active |= srv->slots[i].job != NULL;
        while (!active && !srv->queue_head) pthread_cond_wait(&srv->work, &srv->lock);
        pthread_mutex_unlock(&srv->lock);
        scheduler_step(srv, entries, chunk);
    }
    return NULL;
}

/* ---- connections ------------------------------------------------------- */

static int send_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = send(fd, data, len, SEND_FLAGS);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return 0;
        data += n;
        len -= (size_t)n;
    }
    return 1;
}

static const char *status_text(int status) {
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

static int send_response(int fd, int status, const char *content_type, const char *body, size_t len,
                         const char *extra_headers) {
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %lu\r\nConnection: close\r\n%s\r\n",
                     status, status_text(status), content_type, (unsigned long)len, extra_headers ? extra_headers : "");
    return n > 0 && (size_t)n < sizeof head && send_all(fd, head, (size_t)n) && send_all(fd, body, len);
}

static void error_body(sbuf *b, const api_error *e) {
    sb_puts(b, "{\"error\":{\"message\":");
    json_put_string(b, e->message, strlen(e->message));
    sb_puts(b, ",\"type\":");
    json_put_string(b, e->type, strlen(e->type));
    sb_puts(b, ",\"param\":");
    if (e->param) json_put_string(b, e->param, strlen(e->param));
    else sb_puts(b, "null");
    sb_puts(b, ",\"code\":");
    if (e->code) json_put_string(b, e->code, strlen(e->code));
    else sb_puts(b, "null");
    sb_puts(b, "}}");
}

static void send_error(int fd, const api_error *e) {
    sbuf b = {NULL, 0, 0, 0};
    error_body(&b, e);
    if (!b.failed)
        send_response(fd, e->status, "application/json", b.data, b.len,
                      e->status == 401 ? "WWW-Authenticate: Bearer\r\n" : e->status == 405 ? "Allow: GET, POST\r\n" : NULL);
    sb_free(&b);
}

static void send_simple_error(int fd, int status, const char *type, const char *code, const char *message) {
    api_error e;
    fail(&e, status, type, NULL, code, "%s", message);
    send_error(fd, &e);
}

/* Reads into buf until the head's blank line; returns the head length (the
 * bytes after it, already read, are the body's start) or minus an HTTP status. */
static long read_head(int fd, char *buf, size_t cap, size_t *got, double deadline) {
    size_t n = 0;
    for (;;) {
        ssize_t r;
        char *end;
        if (n == cap) return -431;
        if (lucie_time_seconds() > deadline) return -408;
        r = recv(fd, buf + n, cap - n, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? -408 : -1;
        if (r == 0) return -1;
        n += (size_t)r;
        buf[n] = '\0';
        end = NULL;
        {
            size_t i;
            for (i = 3; i < n; i++)
                if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n' && buf[i - 3] == '\r') {
                    end = buf + i + 1;
                    break;
                }
        }
        if (end) {
            *got = n;
            return (long)(end - buf);
        }
    }
}

/* Whether the peer closed its end (a read would give end of file). */
static int peer_gone(int fd) {
    struct pollfd p;
    char c;
    p.fd = fd;
    p.events = POLLIN;
    p.revents = 0;
    if (poll(&p, 1, 0) <= 0) return 0;
    if (p.revents & (POLLERR | POLLHUP | POLLNVAL)) return 1;
    return recv(fd, &c, 1, MSG_PEEK) <= 0;
}

/* A fresh response id; returns its serial number. */
static unsigned long make_id(server *srv, int chat, char *out, size_t size) {
    unsigned long id;
    pthread_mutex_lock(&srv->lock);
    id = ++srv->next_id;
    pthread_mutex_unlock(&srv->lock);
    snprintf(out, size, "%s-%lx%06lu", chat ? "chatcmpl" : "cmpl", (unsigned long)time(NULL), id);
    return id;
}

static void put_usage(sbuf *b, const job *j) {
    int i, completion = 0;
    for (i = 0; i < j->n; i++) completion += j->choices[i].n_tokens;
    sb_printf(b, "{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d}", j->n_prompt, completion,
              j->n_prompt + completion);
}

/* The start of a response object or chunk, up to and including "choices":[ */
static void put_preamble(sbuf *b, server *srv, const char *id, const char *object, long created) {
    sb_puts(b, "{\"id\":\"");
    sb_puts(b, id);
    sb_puts(b, "\",\"object\":\"");
    sb_puts(b, object);
    sb_printf(b, "\",\"created\":%ld,\"model\":", created);
    json_put_string(b, srv->model_name, strlen(srv->model_name));
    sb_puts(b, ",\"choices\":[");
}

static void put_finish(sbuf *b, const char *finish) {
    sb_puts(b, ",\"logprobs\":null,\"finish_reason\":");
    if (finish) sb_printf(b, "\"%s\"}", finish);
    else sb_puts(b, "null}");
}

/* One SSE event for choice i: new text (may be empty) and/or its finish. */
static void put_chunk(sbuf *b, server *srv, const job *j, const char *id, long created, int i, const char *text,
                      size_t len, int first, const char *finish) {
    sb_puts(b, "data: ");
    put_preamble(b, srv, id, j->chat ? "chat.completion.chunk" : "text_completion", created);
    sb_printf(b, "{\"index\":%d,", i);
    if (j->chat) {
        sb_puts(b, "\"delta\":{");
        if (first) sb_puts(b, "\"role\":\"assistant\"");
        if (len || (first && !finish)) {
            if (first) sb_puts(b, ",");
            sb_puts(b, "\"content\":");
            json_put_string(b, text, len);
        }
        sb_puts(b, "}");
    } else {
        sb_puts(b, "\"text\":");
        json_put_string(b, text, len);
    }
    put_finish(b, finish);
    sb_puts(b, "]}\n\n");
}

static int stream_response(server *srv, int fd, job *j, const char *id, long created, int include_usage) {
    const char *head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                       "Connection: close\r\n\r\n";
    int *first = (int *)calloc((size_t)j->n, sizeof *first), *finished = (int *)calloc((size_t)j->n, sizeof *finished);
    int ok = first && finished && send_all(fd, head, strlen(head)), i, all_done = 0;
    sbuf out = {NULL, 0, 0, 0};
    for (i = 0; ok && i < j->n; i++) first[i] = 1;
    while (ok && !all_done) {
        struct timespec deadline;
        out.len = 0;
        pthread_mutex_lock(&srv->lock);
        all_done = 1;
        for (i = 0; i < j->n; i++) {
            choice_state *c = &j->choices[i];
            const char *finish = j->failed ? NULL : c->finish;
            if (finished[i]) continue;
            /* one event per token's text; the last carries the finish reason */
            while (c->sent < c->text.len) {
                size_t end = c->ends_sent < c->n_ends ? c->ends[c->ends_sent++] : c->text.len;
                int last = end >= c->text.len;
                if (end <= c->sent) continue;
                put_chunk(&out, srv, j, id, created, i, c->text.data + c->sent, end - c->sent, first[i],
                          last ? finish : NULL);
                c->sent = end;
                first[i] = 0;
                if (last && finish) finished[i] = 1;
            }
            if (!finished[i] && (finish || (first[i] && c->started && j->chat))) {
                put_chunk(&out, srv, j, id, created, i, "", 0, first[i], finish);
                first[i] = 0;
            }
            if (c->finish) finished[i] = 1;
            else all_done = 0;
        }
        if (out.len == 0 && !all_done) {
            clock_gettime(CLOCK_REALTIME, &deadline);
            deadline.tv_nsec += 200000000L;
            if (deadline.tv_nsec >= 1000000000L) deadline.tv_sec++, deadline.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&j->changed, &srv->lock, &deadline);
        }
        pthread_mutex_unlock(&srv->lock);
        if (out.failed) ok = 0;
        else if (out.len) ok = send_all(fd, out.data, out.len);
        else if (!all_done && peer_gone(fd)) ok = 0;
    }
    if (ok) {
        out.len = 0;
        pthread_mutex_lock(&srv->lock);
        if (j->failed) {
            api_error e;
            fail(&e, 500, "server_error", NULL, NULL, "%s", j->error);
            sb_puts(&out, "data: ");
            error_body(&out, &e);
            sb_puts(&out, "\n\n");
        } else if (include_usage) {
            sb_puts(&out, "data: ");
            put_preamble(&out, srv, id, j->chat ? "chat.completion.chunk" : "text_completion", created);
            sb_puts(&out, "],\"usage\":");
            put_usage(&out, j);
            sb_puts(&out, "}\n\n");
        }
        pthread_mutex_unlock(&srv->lock);
        sb_puts(&out, "data: [DONE]\n\n");
        ok = !out.failed && send_all(fd, out.data, out.len);
    }
    sb_free(&out);
    free(first);
    free(finished);
    return ok;
}

static int whole_response(server *srv, int fd, job *j, const char *id, long created) {
    sbuf out = {NULL, 0, 0, 0};
    int i, ok = 1;
    pthread_mutex_lock(&srv->lock);
    while (j->done < j->n) {
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_nsec += 200000000L;
        if (deadline.tv_nsec >= 1000000000L) deadline.tv_sec++, deadline.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&j->changed, &srv->lock, &deadline);
        if (j->done < j->n) {
            pthread_mutex_unlock(&srv->lock);
            if (peer_gone(fd)) ok = 0;
            pthread_mutex_lock(&srv->lock);
            if (!ok) break;
        }
    }
    if (ok && j->failed) {
        api_error e;
        fail(&e, 500, "server_error", NULL, NULL, "%s", j->error);
        pthread_mutex_unlock(&srv->lock);
        send_error(fd, &e);
        return 1;
    }
    if (ok) {
        put_preamble(&out, srv, id, j->chat ? "chat.completion" : "text_completion", created);
        for (i = 0; i < j->n; i++) {
            choice_state *c = &j->choices[i];
            if (i) sb_puts(&out, ",");
            sb_printf(&out, "{\"index\":%d,", i);
            if (j->chat) {
                sb_puts(&out, "\"message\":{\"role\":\"assistant\",\"content\":");
                json_put_string(&out, c->text.data ? c->text.data : "", c->text.len);
                sb_puts(&out, "}");
            } else {
                sb_puts(&out, "\"text\":");
                json_put_string(&out, c->text.data ? c->text.data : "", c->text.len);
            }
            put_finish(&out, c->finish);
        }
        sb_puts(&out, "],\"usage\":");
        put_usage(&out, j);
        sb_puts(&out, "}");
    }
    pthread_mutex_unlock(&srv->lock);
    if (ok && !out.failed) ok = send_response(fd, 200, "application/json", out.data, out.len, NULL);
    sb_free(&out);
    return ok;
}

/* Builds the job of a checked request: tokens and sampler settings. */
/* serial: the request's number, which seeds it when it gives no seed. */
static job *make_job(server *srv, const api_request *r, unsigned long serial, api_error *e) {
    job *j = (job *)calloc(1, sizeof *j);
    char err[256];
    int rc, k, room;
    if (!j || !(j->choices = (choice_state *)calloc((size_t)r->n, sizeof *j->choices))) {
        free(j);
        fail(e, 500, "server_error", NULL, NULL, "out of memory");
        return NULL;
    }
    err[0] = '\0';
    j->chat = r->chat;
    j->n = r->n;
    if (r->chat)
        rc = lucie_chat_tokens_alloc(srv->model, r->messages, r->n_messages, LUCIE_CHAT_GENERATION_PROMPT, &j->prompt,
                                     &j->n_prompt, err, sizeof err);
    else
        rc = lucie_tokenize_alloc(srv->model, r->prompt, r->prompt_len, LUCIE_TOK_ADD_SPECIAL | LUCIE_TOK_PARSE_SPECIAL,
                                  &j->prompt, &j->n_prompt, err, sizeof err);
    if (rc != LUCIE_OK) {
        fail(e, 400, "invalid_request_error", r->chat ? "messages" : "prompt", NULL, "%s", err);
    } else if (j->n_prompt == 0) {
        fail(e, 400, "invalid_request_error", "prompt", NULL, "the prompt encodes to no tokens");
    } else if (j->n_prompt >= srv->ctx) {
        fail(e, 400, "invalid_request_error", r->chat ? "messages" : "prompt", "context_length_exceeded",
             "this model's context is %d tokens per request; the prompt has %d tokens", srv->ctx, j->n_prompt);
    } else {
        room = srv->ctx - j->n_prompt;
        j->max_tokens = r->max_tokens >= 0 ? r->max_tokens : r->chat ? room : 16;
        j->sampler = srv->defaults;
        if (r->has_temperature) j->sampler.temperature = (float)r->temperature;
        if (r->has_top_p) j->sampler.top_p = (float)r->top_p;
        if (r->has_top_k) j->sampler.top_k = r->top_k;
        j->sampler.seed = r->has_seed ? r->seed : (unsigned long long)time(NULL) * 1000003ULL + serial;
        for (k = 0; k < r->n_stop; k++) memcpy(j->stop[k], r->stop[k], strlen(r->stop[k]) + 1);
        j->n_stop = r->n_stop;
        pthread_cond_init(&j->changed, NULL);
        j->refs = 1;
        return j;
    }
    lucie_free(j->prompt);
    free(j->choices);
    free(j);
    return NULL;
}

/* Slots without a job (under the lock): queued jobs up to this many start at once. */
static int free_slots(const server *srv) {
    int i, n = 0;
    for (i = 0; i < srv->n_slots; i++) n += srv->slots[i].job == NULL;
    return n;
}

static void serve_generation(server *srv, int fd, const char *body, size_t len, int chat) {
    api_request r;
    api_error e;
    job *j = NULL;
    char id[64];
    long created = (long)time(NULL);
    int *copy;
    unsigned long serial = make_id(srv, chat, id, sizeof id);
    if (!parse_api_request(body, len, chat, &r, &e) || !(j = make_job(srv, &r, serial, &e))) {
        api_request_free(&r);
        send_error(fd, &e);
        return;
    }
    /* the prompt came from the library's allocator: keep our own copy */
    copy = (int *)malloc((size_t)j->n_prompt * sizeof *copy);
    if (!copy) {
        lucie_free(j->prompt);
        j->prompt = NULL;
        job_release(srv, j);
        api_request_free(&r);
        send_simple_error(fd, 500, "server_error", NULL, "out of memory");
        return;
    }
    memcpy(copy, j->prompt, (size_t)j->n_prompt * sizeof *copy);
    lucie_free(j->prompt);
    j->prompt = copy;
    pthread_mutex_lock(&srv->lock);
    if (srv->queued >= srv->queue_limit + free_slots(srv)) {
        pthread_mutex_unlock(&srv->lock);
        job_release(srv, j);
        api_request_free(&r);
        send_simple_error(fd, 503, "server_error", "server_overloaded",
                          "the server is busy: every slot is taken and the queue is full; retry later");
        return;
    }
    j->refs++; /* the scheduler's */
    if (srv->queue_tail) srv->queue_tail->next = j;
    else srv->queue_head = j;
    srv->queue_tail = j;
    srv->queued++;
    pthread_cond_signal(&srv->work);
    pthread_mutex_unlock(&srv->lock);
    if (r.stream) stream_response(srv, fd, j, id, created, r.include_usage);
    else whole_response(srv, fd, j, id, created);
    pthread_mutex_lock(&srv->lock);
    j->cancelled = 1; /* finished or not, nobody reads it any more */
    pthread_cond_signal(&srv->work);
    job_release(srv, j);
    pthread_mutex_unlock(&srv->lock);
    api_request_free(&r);
}

static void serve_models(server *srv, int fd) {
    sbuf b = {NULL, 0, 0, 0};
    sb_puts(&b, "{\"object\":\"list\",\"data\":[{\"id\":");
    json_put_string(&b, srv->model_name, strlen(srv->model_name));
    sb_printf(&b, ",\"object\":\"model\",\"created\":%ld,\"owned_by\":\"lucie\",\"context_length\":%d}]}",
              (long)time(NULL), srv->ctx);
    if (!b.failed) send_response(fd, 200, "application/json", b.data, b.len, NULL);
    sb_free(&b);
}

/* Constant-time comparison of the bearer key (a wrong key gives no timing hint). */
static int authorized(const server *srv, const char *authorization) {
    size_t n = strlen(srv->api_key), m, i;
    unsigned diff = 0;
    if (strncmp(authorization, "Bearer ", 7) != 0) return 0;
    authorization += 7;
    m = strlen(authorization);
    if (m != n) return 0;
    for (i = 0; i < n; i++) diff |= (unsigned)(authorization[i] ^ srv->api_key[i]);
    return diff == 0;
}

static void handle_connection(server *srv, int fd) {
    char *buf = (char *)malloc(MAX_HEAD + 1), *body = NULL;
    size_t got = 0, have;
    long head_len;
    double deadline;
    http_head h;
    int status, chat;
    const char *path;
    if (!buf) return;
    /* the whole request must arrive within the timeout: a client trickling
       bytes cannot hold a connection for longer */
    deadline = lucie_time_seconds() + srv->timeout_s;
    head_len = read_head(fd, buf, MAX_HEAD, &got, deadline);
    if (head_len < 0) {
        if (head_len != -1) send_simple_error(fd, (int)-head_len, "invalid_request_error", NULL, "cannot read the request head");
        goto done;
    }
    if ((status = parse_http_head(buf, (size_t)head_len, &h)) != 0) {
        send_simple_error(fd, status, "invalid_request_error", NULL, "malformed HTTP request");
        goto done;
    }
    path = h.path;
    if (strncmp(path, "/v1/", 4) != 0 && strcmp(path, "/health") != 0) {
        send_simple_error(fd, 404, "invalid_request_error", "unknown_url", "unknown path");
        goto done;
    }
    if (srv->api_key && !authorized(srv, h.authorization)) {
        send_simple_error(fd, 401, "invalid_request_error", "invalid_api_key", "missing or wrong API key (Authorization: Bearer KEY)");
        goto done;
    }
    if (strcmp(path, "/v1/models") == 0 || strcmp(path, "/health") == 0) {
        if (strcmp(h.method, "GET") != 0) {
            send_simple_error(fd, 405, "invalid_request_error", "method_not_allowed", "use GET");
        } else if (path[1] == 'h') {
            send_response(fd, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
        } else {
            serve_models(srv, fd);
        }
        goto done;
    }
    chat = strcmp(path, "/v1/chat/completions") == 0;
    if (!chat && strcmp(path, "/v1/completions") != 0) {
        send_simple_error(fd, 404, "invalid_request_error", "unknown_url", "unknown path");
        goto done;
    }
    if (strcmp(h.method, "POST") != 0) {
        send_simple_error(fd, 405, "invalid_request_error", "method_not_allowed", "use POST");
        goto done;
    }
    if (h.chunked) {
        send_simple_error(fd, 411, "invalid_request_error", NULL, "send the body with a Content-Length");
        goto done;
    }
    if (h.content_length < 0) {
        send_simple_error(fd, 411, "invalid_request_error", NULL, "a Content-Length is required");
        goto done;
    }
    if (h.content_length > srv->max_body) {
        char message[128];
        snprintf(message, sizeof message, "the body is larger than %ld bytes", srv->max_body);
        send_simple_error(fd, 413, "invalid_request_error", "request_too_large", message);
        goto done;
    }
    if (!(body = (char *)malloc((size_t)h.content_length + 1))) {
        send_simple_error(fd, 500, "server_error", NULL, "out of memory");
        goto done;
    }
    have = got - (size_t)head_len;
    if (have > (size_t)h.content_length) have = (size_t)h.content_length;
    memcpy(body, buf + head_len, have);
    if (have < (size_t)h.content_length && h.expect_continue) {
        const char *cont = "HTTP/1.1 100 Continue\r\n\r\n";
        if (!send_all(fd, cont, strlen(cont))) goto done;
    }
    while (have < (size_t)h.content_length) {
        ssize_t r;
        if (lucie_time_seconds() > deadline) {
            send_simple_error(fd, 408, "invalid_request_error", NULL, "timed out reading the body");
            goto done;
        }
        r = recv(fd, body + have, (size_t)h.content_length - have, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                send_simple_error(fd, 408, "invalid_request_error", NULL, "timed out reading the body");
            goto done;
        }
        have += (size_t)r;
    }
    body[have] = '\0';
    serve_generation(srv, fd, body, have, chat);
done:
    free(body);
    free(buf);
}

static void *connection_main(void *arg) {
    connection *c = (connection *)arg;
    server *srv = c->srv;
    handle_connection(srv, c->fd);
    shutdown(c->fd, SHUT_WR);
    close(c->fd);
    pthread_mutex_lock(&srv->lock);
    srv->connections--;
    pthread_mutex_unlock(&srv->lock);
    free(c);
    return NULL;
}

/* ---- main -------------------------------------------------------------- */

/* Set by SIGINT/SIGTERM: the accept loop ends and the process exits (with
 * everything still referenced, so a leak checker reports only what requests lost). */
static volatile sig_atomic_t stop_requested;

static void request_stop(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void usage(void) {
    fprintf(stderr,
            "usage: server MODEL.bin [options]\n"
            "  --host ADDR        address to listen on (default 127.0.0.1)\n"
            "  --port N           port (default 8080; 0 picks a free one, printed on stderr)\n"
            "  --slots N          requests decoded together (default 4)\n"
            "  --ctx N            context per slot in tokens (default min(model maximum, 2048))\n"
            "  --queue N          requests waiting for a slot at most (default 16; beyond: 503)\n"
            "  --connections N    open connections at most (default 64; beyond: 503)\n"
            "  --threads N        compute threads (default: all the cores)\n"
            "  --api-key KEY      require Authorization: Bearer KEY\n"
            "  --name NAME        the model's name in responses (default: the file name)\n"
            "  --max-body BYTES   largest request body (default 1048576; beyond: 413)\n"
            "  --timeout S        seconds a client may take to send its request (default 10)\n"
            "  --prefill-chunk N  prompt tokens evaluated per step, shared by the prompts being\n"
            "                     prefilled, alongside the decoding slots' tokens (default 64)\n"
            "  --sequential       evaluate the slots one by one instead of in one batch (to compare)\n");
    exit(2);
}

static long int_arg(const char *v, long lo, long hi) {
    char *end;
    long x;
    errno = 0;
    x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "server: '%s' is not an integer in [%ld, %ld]\n", v, lo, hi);
        exit(2);
    }
    return x;
}

static int listen_on(const char *host, int port) {
    struct addrinfo hints, *res, *a;
    char service[16];
    int fd = -1, one = 1, rc;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    snprintf(service, sizeof service, "%d", port);
    if ((rc = getaddrinfo(host, service, &hints, &res)) != 0) {
        fprintf(stderr, "server: %s: %s\n", host, gai_strerror(rc));
        return -1;
    }
    for (a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) continue;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 64) == 0) break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) fprintf(stderr, "server: cannot listen on %s:%d: %s\n", host, port, strerror(errno));
    return fd;
}

static int bound_port(int fd) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) return -1;
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

int main(int argc, char **argv) {
    server srv;
    const char *host = "127.0.0.1", *name = NULL;
    int port = 8080, i, listen_fd;
    char err[256];
    pthread_t scheduler;
    struct sigaction ignore, stop;
    memset(&srv, 0, sizeof srv);
    srv.n_slots = 4;
    srv.queue_limit = 16;
    srv.max_connections = 64;
    srv.max_body = 1 << 20;
    srv.timeout_s = 10;
    srv.prefill_chunk = 64;
    if (argc < 2 || argv[1][0] == '-') usage();
    for (i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--sequential") == 0) {
            srv.sequential = 1;
            continue;
        }
        if (!v) usage();
        i++;
        if (strcmp(a, "--host") == 0) host = v;
        else if (strcmp(a, "--port") == 0) port = (int)int_arg(v, 0, 65535);
        else if (strcmp(a, "--slots") == 0) srv.n_slots = (int)int_arg(v, 1, 256);
        else if (strcmp(a, "--ctx") == 0) srv.ctx = (int)int_arg(v, 1, INT_MAX);
        else if (strcmp(a, "--queue") == 0) srv.queue_limit = (int)int_arg(v, 0, 1 << 20);
        else if (strcmp(a, "--connections") == 0) srv.max_connections = (int)int_arg(v, 1, 1 << 16);
        else if (strcmp(a, "--threads") == 0) srv.threads = (int)int_arg(v, 0, 4096);
        else if (strcmp(a, "--api-key") == 0) srv.api_key = v;
        else if (strcmp(a, "--name") == 0) name = v;
        else if (strcmp(a, "--max-body") == 0) srv.max_body = int_arg(v, 1, 1L << 30);
        else if (strcmp(a, "--timeout") == 0) srv.timeout_s = (int)int_arg(v, 1, 86400);
        else if (strcmp(a, "--prefill-chunk") == 0) srv.prefill_chunk = (int)int_arg(v, 1, 1 << 20);
        else usage();
    }
    memset(&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ignore, NULL); /* a vanished client is an error from send(), not a signal */
    memset(&stop, 0, sizeof stop);
    stop.sa_handler = request_stop; /* no SA_RESTART: accept() returns EINTR */
    sigaction(SIGINT, &stop, NULL);
    sigaction(SIGTERM, &stop, NULL);

    if (lucie_open(argv[1], NULL, &srv.model, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "server: %s\n", err);
        return 1;
    }
    srv.config = lucie_model_config(srv.model);
    if (srv.ctx == 0) srv.ctx = srv.config->max_seq_len < 2048 ? srv.config->max_seq_len : 2048;
    if (srv.ctx > srv.config->max_seq_len) {
        fprintf(stderr, "server: --ctx %d is longer than the model's %d\n", srv.ctx, srv.config->max_seq_len);
        return 2;
    }
    if (!name) {
        name = strrchr(argv[1], '/');
        name = name ? name + 1 : argv[1];
    }
    snprintf(srv.model_name, sizeof srv.model_name, "%s", name);
    lucie_session_defaults(srv.model, &srv.defaults);
    srv.defaults.context = srv.ctx;
    srv.defaults.n_threads = srv.threads;
    srv.slots = (slot *)calloc((size_t)srv.n_slots, sizeof *srv.slots);
    if (!srv.slots) return 1;
    for (i = 0; i < srv.n_slots; i++) {
        srv.slots[i].logits = (float *)malloc((size_t)srv.config->vocab_size * sizeof(float));
        if (!srv.slots[i].logits ||
            lucie_session_new(srv.model, &srv.defaults, &srv.slots[i].session, err, sizeof err) != LUCIE_OK) {
            fprintf(stderr, "server: slot %d: %s\n", i, srv.slots[i].logits ? err : "out of memory");
            return 1;
        }
    }
    pthread_mutex_init(&srv.lock, NULL);
    pthread_cond_init(&srv.work, NULL);
    if ((listen_fd = listen_on(host, port)) < 0) return 1;
    if (pthread_create(&scheduler, NULL, scheduler_main, &srv) != 0) {
        fprintf(stderr, "server: cannot start the scheduler thread\n");
        return 1;
    }
    fprintf(stderr, "server: %s, %d slots of %d tokens, listening on http://%s:%d\n", srv.model_name, srv.n_slots,
            srv.ctx, host, bound_port(listen_fd));
    while (!stop_requested) {
        struct timeval tv;
        pthread_t t;
        pthread_attr_t attr;
        connection *c;
        int fd = accept(listen_fd, NULL, NULL), busy;
        if (fd < 0) {
            if (errno != EINTR && errno != ECONNABORTED) sleep(1); /* out of descriptors: let some close */
            continue;
        }
        tv.tv_sec = srv.timeout_s;
        tv.tv_usec = 0;
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        pthread_mutex_lock(&srv.lock);
        busy = srv.connections >= srv.max_connections;
        if (!busy) srv.connections++;
        pthread_mutex_unlock(&srv.lock);
        if (busy) {
            send_simple_error(fd, 503, "server_error", "server_overloaded", "too many connections; retry later");
            close(fd);
            continue;
        }
        c = (connection *)malloc(sizeof *c);
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (c) c->srv = &srv, c->fd = fd;
        if (!c || pthread_create(&t, &attr, connection_main, c) != 0) {
            send_simple_error(fd, 503, "server_error", "server_overloaded", "cannot start a connection thread");
            close(fd);
            free(c);
            pthread_mutex_lock(&srv.lock);
            srv.connections--;
            pthread_mutex_unlock(&srv.lock);
        }
        pthread_attr_destroy(&attr);
    }
    close(listen_fd);
    fprintf(stderr, "server: stopped\n");
    exit(0); /* not return: srv stays on the stack, so what it holds is not a leak */
}

#endif /* SERVER_NO_MAIN */
