/* The tokenizer: text <-> token ids, byte for byte as Hugging Face
 * `tokenizers` does it with the tokenizer.json the model was exported from.
 *
 * Encoding (lucie_tokenize) follows the reference pipeline:
 *   1. added tokens ("<s>", "<|eot_id|>", ...) are cut out of the raw text
 *      (special ones only with LUCIE_TOK_PARSE_SPECIAL);
 *   2. each remaining piece is normalized on its own: NFC, character
 *      removal/replacement, "insert a space after c when a space or a word
 *      character follows", prepending "▁" or " ";
 *   3. added tokens flagged "normalized" are cut out of the normalized text;
 *   4. BPE: every character becomes its token (or its bytes' <0xNN> tokens,
 *      or unk), then the adjacent pair with the lowest merge rank is merged,
 *      again and again. A heap of candidate pairs makes this O(n log n);
 *   5. the post-processor adds BOS/EOS (LUCIE_TOK_ADD_SPECIAL).
 * Encoding has no pre-tokenizer, so a whole piece of text is one BPE
 * "word"; it is cut where no merge can ever join the two sides (see
 * bpe_encode), which keeps the work local without changing the result.
 * Decoding runs the decoder chain of tokenizer.json (ByteFallback,
 * Metaspace, Fuse, Replace, Strip) as a stream: each token's piece flows
 * through the chain as soon as it is pushed, and only text that no later
 * token can change comes out; lucie_detok_stream_flush releases the rest at
 * the end. lucie_detokenize is the same stream pushed all at once and
 * flushed, so streamed and whole decodes agree by construction.
 * Where the reference has quirks, we reproduce them and say so in place.
 *
 * The section is parsed into a few arrays pointing into the (mapped) file,
 * and two hash tables built at load: token string -> id and merge pair ->
 * rank. Every count, offset, id and string is validated first.
 *
 * NFC and the regex class \w need Unicode data. They live in generated C
 * tables (the appendix, made by tools/gen_unicode.py), not in the model file:
 * the data describes the reference implementation's behaviour (its Unicode
 * 9.0 NFC, its regex engine's \w), which is the same for every model, so it
 * belongs with the code that emulates it; keeping it out of the format keeps
 * export.py simple and model files free of data they would all duplicate.
 * ======================================================================== */

/* Tables of the appendix (unicode_tables.inc.c). */
static int uni_ccc(uint32_t c);
static int uni_decompose1(uint32_t c, uint32_t out[2]);
static uint32_t uni_compose_pair(uint32_t a, uint32_t b);
static int uni_is_word(uint32_t c);

enum { /* section constants, see lucie.h */
    TOK_KIND_NORMAL = 0, TOK_KIND_BYTE = 1, TOK_KIND_ADDED = 2,
    TOK_FLAG_BYTE_FALLBACK = 1, TOK_FLAG_FUSE_UNK = 2,
    ADDED_SPECIAL = 1, ADDED_NORMALIZED = 2, ADDED_LSTRIP = 4, ADDED_RSTRIP = 8, ADDED_SINGLE_WORD = 16,
    NORM_NFC = 1, NORM_REPLACE_STRING = 2, NORM_REPLACE_CHARSET = 3, NORM_SPACE_AFTER = 4, NORM_PREPEND = 5,
    DEC_REPLACE_STRING = 16, DEC_BYTE_FALLBACK = 17, DEC_METASPACE = 18, DEC_FUSE = 19, DEC_STRIP = 20,
    METASPACE_NEVER = 2
};

/* ---- growable buffers ------------------------------------------------
 * Out-of-memory is sticky: appends after a failure do nothing and the
 * caller checks `oom` once at the end. */

typedef struct {
    unsigned char *data;
    size_t len, cap;
    int oom;
} byte_buf;

static int buf_reserve(byte_buf *b, size_t extra) {
    size_t cap;
    unsigned char *p;
    if (b->oom) return 0;
    if (extra <= b->cap - b->len) return 1;
    if (extra > (SIZE_MAX - b->len) / 2) {
        b->oom = 1;
        return 0;
    }
    cap = b->cap ? b->cap : 64;
    while (cap - b->len < extra) cap *= 2;
    p = (unsigned char *)realloc(b->data, cap);
    if (!p) {
        b->oom = 1;
        return 0;
    }
    b->data = p;
    b->cap = cap;
    return 1;
}

static void buf_append(byte_buf *b, const void *p, size_t n) {
    if (n == 0 || !buf_reserve(b, n)) return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void buf_free(byte_buf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

typedef struct {
    int *data;
    size_t len, cap;
    int oom;
} int_buf;

static void ints_push(int_buf *v, int x) {
    if (v->oom) return;
    if (v->len == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int *p = cap > SIZE_MAX / sizeof(int) ? NULL : (int *)realloc(v->data, cap * sizeof(int));
        if (!p) {
            v->oom = 1;
            return;
        }
        v->data = p;
        v->cap = cap;
    }
    v->data[v->len++] = x;
}

/* ---- UTF-8 -------------------------------------------------------------- */

/* Decodes the code point at s[0..n), n >= 1. Returns its length, or 0 when
 * the bytes are not well-formed UTF-8 (overlong forms, surrogates and values
 * above U+10FFFF included): the reference only ever sees valid strings. */
static int utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    uint32_t c = s[0];
    int len, i;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) len = 2, c &= 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, c &= 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, c &= 0x07;
    else return 0;
    if ((size_t)len > n) return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && (c < 0x800 || (c >= 0xD800 && c <= 0xDFFF))) || (len == 4 && (c < 0x10000 || c > 0x10FFFF)))
        return 0;
    *cp = c;
    return len;
}

/* Offset of the first invalid byte, or n when s[0..n) is valid UTF-8. */
static size_t utf8_invalid_at(const unsigned char *s, size_t n) {
    size_t i = 0;
    uint32_t cp;
    while (i < n) {
        int len;
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        len = utf8_decode(s + i, n - i, &cp);
        if (!len) return i;
        i += (size_t)len;
    }
    return n;
}

static int utf8_encode(uint32_t c, unsigned char *out) {
    if (c < 0x80) {
        out[0] = (unsigned char)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (unsigned char)(0xC0 | (c >> 6));
        out[1] = (unsigned char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (c >> 12));
        out[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (c & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (c >> 18));
    out[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (c & 0x3F));
    return 4;
}

static void buf_append_cp(byte_buf *b, uint32_t c) {
    unsigned char tmp[4];
    buf_append(b, tmp, (size_t)utf8_encode(c, tmp));
}

/* Length of the single code point s[0..n) encodes, 0 if it is not exactly one. */
static int utf8_single(const unsigned char *s, size_t n, uint32_t *cp) {
    return n > 0 && (size_t)utf8_decode(s, n, cp) == n;
}

/* ---- NFC ------------------------------------------------------------------
 * Canonical decomposition (recursive, Hangul by formula), canonical ordering
 * of combining marks, then canonical composition, as in UAX #15. Text is cut
 * into chunks at code points below U+0300: those are starters that never
 * combine with what precedes them (gen_unicode.py checks this), so each chunk
 * is normalized independently and the common all-Latin case costs nothing. */

enum { HANGUL_S = 0xAC00, HANGUL_L = 0x1100, HANGUL_V = 0x1161, HANGUL_T = 0x11A7,
       HANGUL_L_COUNT = 19, HANGUL_V_COUNT = 21, HANGUL_T_COUNT = 28, HANGUL_S_COUNT = 11172 };

typedef struct {
    uint32_t *cp;
    size_t len, cap;
    int oom;
} cp_buf;

static void cps_push(cp_buf *v, uint32_t c) {
    if (v->oom) return;
    if (v->len == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 32;
        uint32_t *p = cap > SIZE_MAX / sizeof(uint32_t) ? NULL : (uint32_t *)realloc(v->cp, cap * sizeof(uint32_t));
        if (!p) {
            v->oom = 1;
            return;
        }
        v->cp = p;
        v->cap = cap;
    }
    v->cp[v->len++] = c;
}

static void nfc_decompose(uint32_t c, cp_buf *out) {
    uint32_t parts[2];
    int n, i;
    if (c >= HANGUL_S && c < HANGUL_S + HANGUL_S_COUNT) {
        uint32_t s = c - HANGUL_S;
        cps_push(out, HANGUL_L + s / (HANGUL_V_COUNT * HANGUL_T_COUNT));
        cps_push(out, HANGUL_V + (s % (HANGUL_V_COUNT * HANGUL_T_COUNT)) / HANGUL_T_COUNT);
        if (s % HANGUL_T_COUNT) cps_push(out, HANGUL_T + s % HANGUL_T_COUNT);
        return;
    }
    n = c < 0xC0 ? 0 : uni_decompose1(c, parts);
    if (n == 0) {
        cps_push(out, c);
        return;
    }
    for (i = 0; i < n; i++) nfc_decompose(parts[i], out); /* depth <= 4 in Unicode data */
}

static uint32_t nfc_compose(uint32_t a, uint32_t b) {
    if (a >= HANGUL_L && a < HANGUL_L + HANGUL_L_COUNT && b >= HANGUL_V && b < HANGUL_V + HANGUL_V_COUNT)
        return HANGUL_S + ((a - HANGUL_L) * HANGUL_V_COUNT + (b - HANGUL_V)) * HANGUL_T_COUNT;
    if (a >= HANGUL_S && a < HANGUL_S + HANGUL_S_COUNT && (a - HANGUL_S) % HANGUL_T_COUNT == 0 && b > HANGUL_T &&
        b < HANGUL_T + HANGUL_T_COUNT)
        return a + (b - HANGUL_T);
    return uni_compose_pair(a, b);
}

/* Stable sort of marks by combining class. Runs are usually 1-3 long; a
 * counting sort keeps pathological inputs (thousands of marks) linear. */
static void nfc_sort_marks(uint32_t *cp, unsigned char *cls, size_t n, cp_buf *tmp) {
    size_t i, j;
    if (n < 32) {
        for (i = 1; i < n; i++) {
            uint32_t c = cp[i];
            unsigned char k = cls[i];
            for (j = i; j > 0 && cls[j - 1] > k; j--) cp[j] = cp[j - 1], cls[j] = cls[j - 1];
            cp[j] = c, cls[j] = k;
        }
        return;
    } else {
        size_t start[257];
        memset(start, 0, sizeof start);
        tmp->len = 0;
        for (i = 0; i < n; i++) start[cls[i] + 1]++;
        for (i = 1; i < 257; i++) start[i] += start[i - 1];
        for (i = 0; i < n; i++) cps_push(tmp, 0);
        if (tmp->oom) return;
        for (i = 0; i < n; i++) tmp->cp[start[cls[i]]++] = cp[i];
        for (i = 0; i < n; i++) cp[i] = tmp->cp[i], cls[i] = (unsigned char)uni_ccc(cp[i]);
    }
}

typedef struct {
    cp_buf decomposed, tmp;
    unsigned char *cls;
    size_t cls_cap;
    int oom;
} nfc_scratch;

static void nfc_chunk(const uint32_t *in, size_t n, nfc_scratch *s, byte_buf *out) {
    size_t i, run, len, starter = (size_t)-1;
    int last_cls = 0;
    cp_buf *d = &s->decomposed;
    if (n == 1 && in[0] < 0x300) {
        buf_append_cp(out, in[0]);
        return;
    }
    d->len = 0;
    for (i = 0; i < n; i++) nfc_decompose(in[i], d);
    if (d->oom) {
        s->oom = 1;
        return;
    }
    if (d->len > s->cls_cap) {
        unsigned char *p = (unsigned char *)realloc(s->cls, d->len);
        if (!p) {
            s->oom = 1;
            return;
        }
        s->cls = p;
        s->cls_cap = d->len;
    }
    for (i = 0; i < d->len; i++) s->cls[i] = (unsigned char)uni_ccc(d->cp[i]);
    for (i = 0; i < d->len; i = run) { /* canonical ordering of each run of marks */
        for (run = i; run < d->len && s->cls[run] != 0; run++) {}
        if (run - i > 1) nfc_sort_marks(d->cp + i, s->cls + i, run - i, &s->tmp);
        if (run == i) run++;
    }
    if (s->tmp.oom) {
        s->oom = 1;
        return;
    }
    /* Composition in place: d->cp[0..len) is the output so far. A mark
     * combines with the last starter unless a mark of the same or a higher
     * class (or a starter) stands between them. */
    for (i = 0, len = 0; i < d->len; i++) {
        uint32_t c = d->cp[i];
        int k = s->cls[i];
        if (starter != (size_t)-1 && (len - 1 == starter || (last_cls != 0 && last_cls < k))) {
            uint32_t composed = nfc_compose(d->cp[starter], c);
            if (composed) {
                d->cp[starter] = composed;
                continue;
            }
        }
        if (k == 0) starter = len;
        last_cls = k;
        d->cp[len++] = c;
    }
    for (i = 0; i < len; i++) buf_append_cp(out, d->cp[i]);
}

static void normalize_nfc(const unsigned char *s, size_t n, byte_buf *out) {
    nfc_scratch scratch;
    cp_buf chunk;
    size_t i = 0;
    memset(&scratch, 0, sizeof scratch);
    memset(&chunk, 0, sizeof chunk);
    while (i < n) {
        uint32_t c;
        int len = utf8_decode(s + i, n - i, &c);
        if (c < 0x300 && chunk.len > 0) {
            nfc_chunk(chunk.cp, chunk.len, &scratch, out);
            chunk.len = 0;
        }
        cps_push(&chunk, c);
        i += (size_t)len;
    }
    if (chunk.len > 0) nfc_chunk(chunk.cp, chunk.len, &scratch, out);
    if (chunk.oom || scratch.oom) out->oom = 1;
    free(chunk.cp);
    free(scratch.decomposed.cp);
    free(scratch.tmp.cp);
    free(scratch.cls);
}

/* ---- the tokenizer object ------------------------------------------------ */

typedef struct {
    int type;
    const unsigned char *a, *b; /* strings in the file */
    size_t a_len, b_len;
    int p1, p2;
    uint32_t cp;                /* a's code point (SPACE_AFTER, METASPACE, STRIP) */
    uint32_t *set;              /* REPLACE_CHARSET: a's code points */
    size_t n_set;
} tok_op;

typedef struct {
    int id;
    unsigned flags;
    const unsigned char *text; /* what is matched: the content, or its normalized form */
    size_t len;
    int next;                  /* next added token whose text has the same first byte, or -1 */
} added_token;

struct tokenizer {
    int vocab_size, n_merges, n_added, n_norm_ops, n_dec_ops;
    int unk_id, bos_id, eos_id, byte_fallback, fuse_unk;
    const unsigned char **piece; /* token strings, pointing into the file */
    uint32_t *piece_len;
    unsigned char *kind;
    int32_t *added_of;             /* id -> index in added[], or -1 */
    int32_t *vocab_slots;          /* open addressing: token string -> id (model vocab only) */
    uint32_t vocab_mask;
    int32_t *merges;               /* n_merges x {left, right, merged}, rank order */
    int32_t *merge_slots;          /* open addressing: (left, right) -> rank */
    uint32_t merge_mask;
    uint64_t *joins;               /* open addressing set: (last char of a merge's left side,
                                    * first char of its right side); 0 = empty slot */
    int byte_id[256];              /* id of "<0xNN>" in the vocab, or -1 */
    added_token *added;
    int raw_first[256], norm_first[256]; /* first added token by first byte, per matching stage */
    unsigned char **owned;         /* normalized added-token texts we allocated */
    tok_op *norm_ops, *dec_ops;
    int dec_fuse;                  /* index of the first FUSE decoder op, or n_dec_ops */
};

static uint32_t hash_bytes(const unsigned char *s, size_t n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ s[i]) * 16777619u;
    return h;
}

static uint32_t hash_pair(int32_t a, int32_t b) {
    uint64_t x = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (uint32_t)x;
}

static int vocab_lookup(const tokenizer *t, const unsigned char *s, size_t n) {
    uint32_t h = hash_bytes(s, n) & t->vocab_mask;
    for (;; h = (h + 1) & t->vocab_mask) {
        int32_t id = t->vocab_slots[h];
        if (id < 0) return -1;
        if (t->piece_len[id] == n && memcmp(t->piece[id], s, n) == 0) return id;
    }
}

static int merge_lookup(const tokenizer *t, int left, int right) {
    uint32_t h;
    if (t->n_merges == 0) return -1;
    for (h = hash_pair(left, right) & t->merge_mask;; h = (h + 1) & t->merge_mask) {
        int32_t rank = t->merge_slots[h];
        if (rank < 0) return -1;
        if (t->merges[3 * rank] == left && t->merges[3 * rank + 1] == right) return rank;
    }
}

static uint32_t first_char(const unsigned char *s, size_t n) {
    uint32_t c = 0;
    if (n > 0) utf8_decode(s, n, &c);
    return c;
}

static uint32_t last_char(const unsigned char *s, size_t n) {
    size_t i = n;
    uint32_t c = 0;
    if (n == 0) return 0;
    while (i > 0 && (s[i - 1] & 0xC0) == 0x80) i--;
    if (i > 0) utf8_decode(s + i - 1, n - i + 1, &c);
    return c;
}

static uint64_t join_key(uint32_t left_char, uint32_t right_char) {
    return (uint64_t)1 << 63 | (uint64_t)left_char << 21 | right_char;
}

/* Can some merge ever join a symbol ending like token a to one starting like
 * token b? If not, BPE never merges across that boundary. */
static int crossable(const tokenizer *t, int a, int b) {
    uint64_t key;
    uint32_t h;
    if (t->piece_len[a] == 0 || t->piece_len[b] == 0) return 1;
    key = join_key(last_char(t->piece[a], t->piece_len[a]), first_char(t->piece[b], t->piece_len[b]));
    for (h = (uint32_t)(key ^ key >> 29) * 2654435761u & t->merge_mask;; h = (h + 1) & t->merge_mask) {
        if (t->joins[h] == key) return 1;
        if (t->joins[h] == 0) return 0;
    }
}

static uint32_t table_size_for(uint32_t n) { /* power of two >= 2n, >= 16 */
    uint32_t size = 16;
    while (size < 2 * n) size *= 2;
    return size;
}

static void tokenizer_free(tokenizer *t) {
    int i;
    if (!t) return;
    if (t->owned)
        for (i = 0; i < t->n_added; i++) free(t->owned[i]);
    if (t->norm_ops)
        for (i = 0; i < t->n_norm_ops; i++) free(t->norm_ops[i].set);
    free(t->owned);
    free(t->piece);
    free(t->piece_len);
    free(t->kind);
    free(t->added_of);
    free(t->vocab_slots);
    free(t->merges);
    free(t->merge_slots);
    free(t->joins);
    free(t->added);
    free(t->norm_ops);
    free(t->dec_ops);
    free(t);
}

/* ---- reading the section ---------------------------------------------------- */

typedef struct {
    const unsigned char *data;
    size_t size, pos;
    int bad; /* ran past the end */
} section_reader;

static uint32_t rd_u32(section_reader *r) {
    const unsigned char *p;
    if (r->bad || r->size - r->pos < 4) {
        r->bad = 1;
        return 0;
    }
    p = r->data + r->pos;
    r->pos += 4;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int32_t rd_i32(section_reader *r) {
    uint32_t u = rd_u32(r);
    return u <= 0x7FFFFFFFu ? (int32_t)u : (int32_t)(u - 0x80000000u) - 0x7FFFFFFF - 1;
}

/* A length-prefixed string; NULL (with r->bad set) if it does not fit. */
static const unsigned char *rd_str(section_reader *r, size_t *len) {
    uint32_t n = rd_u32(r);
    const unsigned char *p;
    if (r->bad || r->size - r->pos < n) {
        r->bad = 1;
        *len = 0;
        return NULL;
    }
    p = r->data + r->pos;
    r->pos += n;
    *len = n;
    return p;
}

static void normalize_text(const tokenizer *t, const unsigned char *s, size_t n, byte_buf *out);

#ifdef __GNUC__
__attribute__((format(printf, 3, 4)))
#endif
static int tok_fail(char *err, size_t err_size, const char *fmt, ...);
static int tok_fail(char *err, size_t err_size, const char *fmt, ...) {
    char line[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    set_error(err, err_size, "tokenizer section: %s", line);
    return LUCIE_EFORMAT;
}

static int read_ops(section_reader *r, tok_op *ops, int n, int decoder, char *err, size_t err_size) {
    int i;
    for (i = 0; i < n; i++) {
        tok_op *op = &ops[i];
        op->type = (int)rd_u32(r);
        op->a = rd_str(r, &op->a_len);
        op->b = rd_str(r, &op->b_len);
        op->p1 = rd_i32(r);
        op->p2 = rd_i32(r);
        if (r->bad) return tok_fail(err, err_size, "truncated in operation %ld", (long)i);
        if (utf8_invalid_at(op->a, op->a_len) != op->a_len || utf8_invalid_at(op->b, op->b_len) != op->b_len)
            return tok_fail(err, err_size, "operation %ld has a string that is not UTF-8", (long)i);
        if (decoder ? (op->type < DEC_REPLACE_STRING || op->type > DEC_STRIP) : (op->type < NORM_NFC || op->type > NORM_PREPEND))
            return tok_fail(err, err_size, "unknown operation type %ld", (long)op->type);
        switch (op->type) {
        case NORM_REPLACE_STRING:
        case DEC_REPLACE_STRING:
            if (op->a_len == 0) return tok_fail(err, err_size, "operation %ld replaces an empty string", (long)i);
            break;
        case NORM_SPACE_AFTER:
        case DEC_METASPACE:
        case DEC_STRIP:
            if (!utf8_single(op->a, op->a_len, &op->cp))
                return tok_fail(err, err_size, "operation %ld needs exactly one character", (long)i);
            if (op->type == DEC_METASPACE && (op->p1 < 0 || op->p1 > METASPACE_NEVER))
                return tok_fail(err, err_size, "bad Metaspace prepend scheme %ld", (long)op->p1);
            if (op->type == DEC_STRIP && (op->p1 < 0 || op->p2 < 0))
                return tok_fail(err, err_size, "negative Strip count in operation %ld", (long)i);
            break;
        case NORM_REPLACE_CHARSET: {
            size_t at = 0;
            if (op->a_len == 0) return tok_fail(err, err_size, "operation %ld has an empty character set", (long)i);
            op->set = (uint32_t *)malloc(op->a_len * sizeof(uint32_t));
            if (!op->set) {
                set_error(err, err_size, "out of memory");
                return LUCIE_ENOMEM;
            }
            while (at < op->a_len) at += (size_t)utf8_decode(op->a + at, op->a_len - at, &op->set[op->n_set++]);
            break;
        }
        default:
            break;
        }
    }
    return LUCIE_OK;
}

static int tokenizer_load(tokenizer **out, const unsigned char *data, size_t size, char *err, size_t err_size) {
    section_reader r;
    tokenizer *t;
    uint32_t version, vocab_size, n_merges, n_added, n_norm, n_dec, flags, i, mask;
    int rc = LUCIE_EFORMAT;
    *out = NULL;
    r.data = data;
    r.size = size;
    r.pos = 0;
    r.bad = 0;
    if (size < 4 || memcmp(data, "LTOK", 4) != 0) return tok_fail(err, err_size, "bad magic");
    r.pos = 4;
    version = rd_u32(&r);
    vocab_size = rd_u32(&r);
    n_merges = rd_u32(&r);
    n_added = rd_u32(&r);
    n_norm = rd_u32(&r);
    n_dec = rd_u32(&r);
    if (r.bad) return tok_fail(err, err_size, "truncated header");
    if (version != 1) return tok_fail(err, err_size, "unsupported version %ld", (long)version);
    /* Each entry takes at least 8 bytes (4 for merges' ids...), so counts
     * larger than the section are corrupt; this also bounds allocations. */
    if (vocab_size == 0 || vocab_size > size / 8 || vocab_size > 0x7FFFFFF)
        return tok_fail(err, err_size, "bad vocab size %ld", (long)vocab_size);
    if (n_merges > size / 12 || n_added > size / 8 || n_norm > size / 20 || n_dec > size / 20)
        return tok_fail(err, err_size, "counts larger than the section");
    t = (tokenizer *)calloc(1, sizeof *t);
    if (!t) goto oom;
    t->vocab_size = (int)vocab_size;
    t->n_merges = (int)n_merges;
    t->n_added = (int)n_added;
    t->n_norm_ops = (int)n_norm;
    t->n_dec_ops = (int)n_dec;
    t->unk_id = rd_i32(&r);
    t->bos_id = rd_i32(&r);
    t->eos_id = rd_i32(&r);
    flags = rd_u32(&r);
    if (r.bad) goto truncated;
    if (t->unk_id < -1 || t->unk_id >= t->vocab_size || t->bos_id < -1 || t->bos_id >= t->vocab_size ||
        t->eos_id < -1 || t->eos_id >= t->vocab_size) {
        rc = tok_fail(err, err_size, "unk/bos/eos id out of range");
        goto fail;
    }
    if (flags > 3) {
        rc = tok_fail(err, err_size, "unknown flags 0x%lx", (long)flags);
        goto fail;
    }
    t->byte_fallback = (flags & TOK_FLAG_BYTE_FALLBACK) != 0;
    t->fuse_unk = (flags & TOK_FLAG_FUSE_UNK) != 0;

    /* vocab */
    t->piece = (const unsigned char **)malloc(vocab_size * sizeof *t->piece);
    t->piece_len = (uint32_t *)malloc(vocab_size * sizeof *t->piece_len);
    t->kind = (unsigned char *)malloc(vocab_size);
    t->added_of = (int32_t *)malloc(vocab_size * sizeof(int32_t));
    t->vocab_slots = (int32_t *)malloc(table_size_for(vocab_size) * sizeof(int32_t));
    if (!t->piece || !t->piece_len || !t->kind || !t->added_of || !t->vocab_slots) goto oom;
    for (i = 0; i < vocab_size; i++) t->added_of[i] = -1;
    mask = table_size_for(vocab_size) - 1;
    t->vocab_mask = mask;
    for (i = 0; i <= mask; i++) t->vocab_slots[i] = -1;
    for (i = 0; i < vocab_size; i++) {
        size_t len;
        uint32_t kind = rd_u32(&r), h;
        const unsigned char *s = rd_str(&r, &len);
        if (r.bad) goto truncated;
        if (kind > TOK_KIND_ADDED) {
            rc = tok_fail(err, err_size, "token %ld has an unknown kind", (long)i);
            goto fail;
        }
        if (utf8_invalid_at(s, len) != len) {
            rc = tok_fail(err, err_size, "token %ld is not valid UTF-8", (long)i);
            goto fail;
        }
        if (kind == TOK_KIND_BYTE && !(len == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>')) {
            rc = tok_fail(err, err_size, "byte token %ld is not of the form <0xNN>", (long)i);
            goto fail;
        }
        t->piece[i] = s;
        t->piece_len[i] = (uint32_t)len;
        t->kind[i] = (unsigned char)kind;
        /* Added tokens that are not model tokens are never produced by BPE. */
        if (kind == TOK_KIND_ADDED) continue;
        for (h = hash_bytes(s, len) & mask; t->vocab_slots[h] >= 0; h = (h + 1) & mask) {
            int32_t other = t->vocab_slots[h];
            if (t->piece_len[other] == len && memcmp(t->piece[other], s, len) == 0) {
                rc = tok_fail(err, err_size, "token string of id %ld appears twice", (long)i);
                goto fail;
            }
        }
        t->vocab_slots[h] = (int32_t)i;
    }
    for (i = 0; i < 256; i++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", (unsigned)i);
        t->byte_id[i] = vocab_lookup(t, (const unsigned char *)name, 6);
    }

    /* merges: ids in range, merged token = left + right, no pair twice */
    t->merges = (int32_t *)malloc((n_merges ? n_merges : 1) * 3 * sizeof(int32_t));
    t->merge_slots = (int32_t *)malloc(table_size_for(n_merges) * sizeof(int32_t));
    t->joins = (uint64_t *)calloc(table_size_for(n_merges), sizeof(uint64_t));
    if (!t->merges || !t->merge_slots || !t->joins) goto oom;
    t->merge_mask = table_size_for(n_merges) - 1;
    for (i = 0; i <= t->merge_mask; i++) t->merge_slots[i] = -1;
    for (i = 0; i < n_merges; i++) {
        uint32_t left = rd_u32(&r), right = rd_u32(&r), merged = rd_u32(&r), h;
        uint64_t key;
        if (r.bad) goto truncated;
        if (left >= vocab_size || right >= vocab_size || merged >= vocab_size || t->piece_len[left] == 0 ||
            t->piece_len[right] == 0 || t->piece_len[merged] != (uint64_t)t->piece_len[left] + t->piece_len[right] ||
            memcmp(t->piece[merged], t->piece[left], t->piece_len[left]) != 0 ||
            memcmp(t->piece[merged] + t->piece_len[left], t->piece[right], t->piece_len[right]) != 0) {
            rc = tok_fail(err, err_size, "merge %ld is not consistent with the vocab", (long)i);
            goto fail;
        }
        if (merge_lookup(t, (int)left, (int)right) >= 0) {
            rc = tok_fail(err, err_size, "merge %ld repeats an earlier pair", (long)i);
            goto fail;
        }
        t->merges[3 * i] = (int32_t)left;
        t->merges[3 * i + 1] = (int32_t)right;
        t->merges[3 * i + 2] = (int32_t)merged;
        for (h = hash_pair((int32_t)left, (int32_t)right) & t->merge_mask; t->merge_slots[h] >= 0;)
            h = (h + 1) & t->merge_mask;
        t->merge_slots[h] = (int32_t)i;
        key = join_key(last_char(t->piece[left], t->piece_len[left]), first_char(t->piece[right], t->piece_len[right]));
        for (h = (uint32_t)(key ^ key >> 29) * 2654435761u & t->merge_mask; t->joins[h] && t->joins[h] != key;)
            h = (h + 1) & t->merge_mask;
        t->joins[h] = key;
    }

    /* added tokens */
    t->added = (added_token *)calloc(n_added ? n_added : 1, sizeof *t->added);
    t->owned = (unsigned char **)calloc(n_added ? n_added : 1, sizeof *t->owned);
    if (!t->added || !t->owned) goto oom;
    for (i = 0; i < n_added; i++) {
        added_token *a = &t->added[i];
        uint32_t id = rd_u32(&r);
        a->flags = rd_u32(&r);
        if (r.bad) goto truncated;
        if (id >= vocab_size || a->flags > 31) {
            rc = tok_fail(err, err_size, "added token %ld has a bad id or flags", (long)i);
            goto fail;
        }
        if (a->flags & ADDED_SINGLE_WORD) {
            rc = tok_fail(err, err_size, "added token %ld: single_word is not supported", (long)i);
            goto fail;
        }
        if (t->piece_len[id] == 0) {
            rc = tok_fail(err, err_size, "added token %ld is empty", (long)i);
            goto fail;
        }
        if (t->added_of[id] >= 0) {
            rc = tok_fail(err, err_size, "token %ld is added twice", (long)id);
            goto fail;
        }
        a->id = (int)id;
        t->added_of[id] = (int32_t)i;
    }

    /* normalizer and decoder */
    t->norm_ops = (tok_op *)calloc(n_norm ? n_norm : 1, sizeof(tok_op));
    t->dec_ops = (tok_op *)calloc(n_dec ? n_dec : 1, sizeof(tok_op));
    if (!t->norm_ops || !t->dec_ops) goto oom;
    if ((rc = read_ops(&r, t->norm_ops, t->n_norm_ops, 0, err, err_size)) != LUCIE_OK) goto fail;
    if ((rc = read_ops(&r, t->dec_ops, t->n_dec_ops, 1, err, err_size)) != LUCIE_OK) goto fail;
    rc = LUCIE_EFORMAT;
    if (r.pos != r.size) {
        rc = tok_fail(err, err_size, "%ld unexpected bytes at the end", (long)(r.size - r.pos));
        goto fail;
    }
    t->dec_fuse = t->n_dec_ops;
    for (i = 0, mask = 0; i < n_dec; i++) {
        int type = t->dec_ops[i].type;
        if (type == DEC_FUSE && t->dec_fuse == t->n_dec_ops) t->dec_fuse = (int)i;
        else if (type == DEC_BYTE_FALLBACK && ((int)i > t->dec_fuse || mask++)) {
            rc = tok_fail(err, err_size, "decoder: only one ByteFallback, before any Fuse, is supported");
            goto fail;
        }
    }

    /* Matching tables for added tokens: normalized ones are matched by
     * their normalized form, as the reference does. */
    for (i = 0; i < 256; i++) t->raw_first[i] = t->norm_first[i] = -1;
    for (i = n_added; i-- > 0;) {
        added_token *a = &t->added[i];
        int *first;
        a->text = t->piece[a->id];
        a->len = t->piece_len[a->id];
        if (a->flags & ADDED_NORMALIZED) {
            byte_buf nb = {NULL, 0, 0, 0};
            normalize_text(t, a->text, a->len, &nb);
            if (nb.oom) {
                buf_free(&nb);
                goto oom;
            }
            t->owned[i] = nb.data;
            a->text = nb.data;
            a->len = nb.len;
            if (a->len == 0) continue; /* normalizes to nothing: never matches */
        }
        first = (a->flags & ADDED_NORMALIZED) ? t->norm_first : t->raw_first;
        a->next = first[a->text[0]];
        first[a->text[0]] = (int)i;
    }
    *out = t;
    return LUCIE_OK;
truncated:
    rc = tok_fail(err, err_size, "truncated (at byte %ld)", (long)r.pos);
    goto fail;
oom:
    set_error(err, err_size, "out of memory loading the tokenizer");
    rc = LUCIE_ENOMEM;
fail:
    tokenizer_free(t);
    return rc;
}

/* ---- normalizer ----------------------------------------------------------- */

static int charset_has(const tok_op *op, uint32_t c) {
    size_t i;
    for (i = 0; i < op->n_set; i++)
        if (op->set[i] == c) return 1;
    return 0;
}

/* Appends s[0..n) to out with every occurrence of `a` replaced by `b`,
 * matching left to right without overlaps (the reference's find_iter).
 * With `hold`, a tail that could be the beginning of a match is not written:
 * returns how many bytes were consumed (n without hold). */
static size_t replace_string(const unsigned char *s, size_t n, const unsigned char *a, size_t a_len,
                             const unsigned char *b, size_t b_len, byte_buf *out, int hold) {
    size_t i = 0, start = 0, end = n;
    while (i + a_len <= n) {
        const unsigned char *hit = (const unsigned char *)memchr(s + i, a[0], n - a_len + 1 - i);
        if (!hit) break;
        i = (size_t)(hit - s);
        if (memcmp(hit, a, a_len) == 0) {
            buf_append(out, s + start, i - start);
            buf_append(out, b, b_len);
            i += a_len;
            start = i;
        } else {
            i++;
        }
    }
    if (hold) /* the leftmost undecided position: too short to tell, so far a prefix of a */
        for (i = n + 1 > a_len + start ? n + 1 - a_len : start; i < n; i++)
            if (memcmp(s + i, a, n - i) == 0) {
                end = i;
                break;
            }
    buf_append(out, s + start, end - start);
    return end;
}

/* One normalizer operation: in -> out (out starts empty). */
static void normalize_op(const tok_op *op, const unsigned char *s, size_t n, byte_buf *out) {
    size_t i = 0;
    switch (op->type) {
    case NORM_NFC:
        normalize_nfc(s, n, out);
        break;
    case NORM_REPLACE_STRING:
        replace_string(s, n, op->a, op->a_len, op->b, op->b_len, out, 0);
        break;
    case NORM_REPLACE_CHARSET:
        while (i < n) {
            uint32_t c;
            int len = utf8_decode(s + i, n - i, &c);
            if (charset_has(op, c)) buf_append(out, op->b, op->b_len);
            else buf_append(out, s + i, (size_t)len);
            i += (size_t)len;
        }
        break;
    case NORM_SPACE_AFTER: { /* regex "c(?=[ \w])" -> "c" + b */
        size_t start = 0;
        while (i + op->a_len <= n) {
            const unsigned char *hit = (const unsigned char *)memchr(s + i, op->a[0], n - op->a_len + 1 - i);
            uint32_t next;
            if (!hit) break;
            i = (size_t)(hit - s);
            if (memcmp(hit, op->a, op->a_len) != 0) {
                i++;
                continue;
            }
            i += op->a_len;
            if (i < n && utf8_decode(s + i, n - i, &next) && (next == ' ' || uni_is_word(next))) {
                buf_append(out, s + start, i - start);
                buf_append(out, op->b, op->b_len);
                start = i;
            }
        }
        buf_append(out, s + start, n - start);
        break;
    }
    case NORM_PREPEND:
        if (n > 0) buf_append(out, op->a, op->a_len);
        buf_append(out, s, n);
        break;
    default:
        buf_append(out, s, n);
        break;
    }
}

static void normalize_text(const tokenizer *t, const unsigned char *s, size_t n, byte_buf *out) {
    byte_buf tmp = {NULL, 0, 0, 0};
    int i;
    out->len = 0;
    buf_append(out, s, n);
    for (i = 0; i < t->n_norm_ops; i++) {
        byte_buf swap;
        tmp.len = 0;
        normalize_op(&t->norm_ops[i], out->data, out->len, &tmp);
        swap = *out, *out = tmp, tmp = swap;
        if (out->oom || tmp.oom) out->oom = 1;
    }
    buf_free(&tmp);
}

/* ---- BPE ------------------------------------------------------------------- */

typedef struct {
    int id, prev, next;
    int len; /* bytes of text covered; 0 once merged into its left neighbour */
} bpe_symbol;

/* A candidate merge: the pair starting at symbol `pos`, to be merged with
 * priority `rank`; packed as rank << 32 | pos so that the smallest key is
 * the best rank, leftmost first, and the heap compares plain integers. The
 * token it produces is merges[rank]'s. */
typedef uint64_t bpe_candidate;

typedef struct {
    bpe_symbol *sym;
    bpe_candidate *heap; /* binary min-heap */
    size_t n_heap, heap_cap;
    int oom;
} bpe_work;

static void heap_push(bpe_work *w, bpe_candidate c) {
    size_t i;
    if (w->n_heap == w->heap_cap) {
        size_t cap = w->heap_cap ? w->heap_cap * 2 : 64;
        bpe_candidate *p = cap > SIZE_MAX / sizeof *p ? NULL : (bpe_candidate *)realloc(w->heap, cap * sizeof *p);
        if (!p) {
            w->oom = 1;
            return;
        }
        w->heap = p;
        w->heap_cap = cap;
    }
    for (i = w->n_heap++; i > 0 && c < w->heap[(i - 1) / 2]; i = (i - 1) / 2) w->heap[i] = w->heap[(i - 1) / 2];
    w->heap[i] = c;
}

static bpe_candidate heap_pop(bpe_work *w) {
    bpe_candidate top = w->heap[0], last = w->heap[--w->n_heap];
    size_t i = 0, n = w->n_heap, child;
    while ((child = 2 * i + 1) < n) {
        if (child + 1 < n && w->heap[child + 1] < w->heap[child]) child++;
        if (last <= w->heap[child]) break;
        w->heap[i] = w->heap[child];
        i = child;
    }
    if (n > 0) w->heap[i] = last;
    return top;
}

static void bpe_push_pair(const tokenizer *t, bpe_work *w, int pos) {
    int rank = merge_lookup(t, w->sym[pos].id, w->sym[w->sym[pos].next].id);
    if (rank >= 0) heap_push(w, (bpe_candidate)rank << 32 | (uint32_t)pos);
}

/* Merge the best-ranked pair, leftmost first, until none is left, within
 * symbols first..last (linked by prev/next). Stale candidates (a side already
 * merged away, or a pair that no longer produces that token) are skipped when
 * popped; like the reference we compare the produced token, not the rank. */
static void bpe_merge_chunk(const tokenizer *t, bpe_work *w, int first, int last) {
    int i;
    if (first == last) return;
    w->n_heap = 0;
    for (i = first; i < last; i++) bpe_push_pair(t, w, i);
    while (w->n_heap > 0 && !w->oom) {
        bpe_candidate top = heap_pop(w);
        int at = (int)(uint32_t)top, merged = t->merges[3 * (top >> 32) + 2], rank;
        bpe_symbol *left = &w->sym[at], *right;
        if (left->len == 0 || left->next < 0) continue;
        right = &w->sym[left->next];
        rank = merge_lookup(t, left->id, right->id);
        if (rank < 0 || t->merges[3 * rank + 2] != merged) continue;
        left->id = merged;
        left->len += right->len;
        right->len = 0;
        left->next = right->next;
        if (left->next >= 0) w->sym[left->next].prev = at;
        if (left->prev >= 0) bpe_push_pair(t, w, left->prev);
        if (left->next >= 0) bpe_push_pair(t, w, at);
    }
}

static void add_symbol(bpe_symbol *sym, int *n, int id, size_t len) {
    sym[*n].id = id;
    sym[*n].len = (int)len;
    sym[*n].prev = *n - 1;
    sym[*n].next = *n + 1;
    (*n)++;
}

/* Encodes one normalized piece of text, appending its ids. */
static int bpe_encode(const tokenizer *t, const unsigned char *s, size_t n, int_buf *ids) {
    bpe_work w;
    int n_sym = 0, unk_pending = 0, i, first, last;
    size_t unk_len = 0, pos = 0;
    if (n == 0) return LUCIE_OK;
    if (n >= (size_t)INT_MAX) return LUCIE_EINVAL; /* positions are ints */
    memset(&w, 0, sizeof w);
    w.sym = (bpe_symbol *)malloc(n * sizeof *w.sym); /* at most one symbol per byte */
    if (!w.sym) return LUCIE_ENOMEM;
    /* One symbol per character: its token, else its bytes' tokens, else
     * unk (consecutive unks fused when fuse_unk). As in the reference, a
     * pending unk is only written out before the next character found in
     * the vocab or at the end, even if byte tokens come in between. */
    while (pos < n) {
        uint32_t c;
        size_t len = (size_t)utf8_decode(s + pos, n - pos, &c);
        int id = vocab_lookup(t, s + pos, len), j, ok = 1;
        if (id >= 0) {
            if (unk_pending) add_symbol(w.sym, &n_sym, t->unk_id, unk_len), unk_pending = 0;
            add_symbol(w.sym, &n_sym, id, len);
        } else {
            if (t->byte_fallback) {
                for (j = 0; j < (int)len; j++) ok &= t->byte_id[s[pos + j]] >= 0;
                if (ok) {
                    for (j = 0; j < (int)len; j++) add_symbol(w.sym, &n_sym, t->byte_id[s[pos + j]], 1);
                }
            }
            if ((!t->byte_fallback || !ok) && t->unk_id >= 0) {
                if (unk_pending && t->fuse_unk) {
                    unk_len += len;
                } else {
                    if (unk_pending) add_symbol(w.sym, &n_sym, t->unk_id, unk_len);
                    unk_pending = 1;
                    unk_len = len;
                }
            }
        }
        pos += len;
    }
    if (unk_pending) add_symbol(w.sym, &n_sym, t->unk_id, unk_len);
    if (n_sym > 0) w.sym[n_sym - 1].next = -1;

    /* Merges never join symbols across a boundary whose characters no merge
     * joins, so the symbols are split there into chunks that are merged
     * independently: the same result, and in prose the chunks are a few
     * characters long, so the work stays in the cache. */
    for (first = 0; first < n_sym; first = last + 1) {
        for (last = first; last + 1 < n_sym && crossable(t, w.sym[last].id, w.sym[last + 1].id); last++) {}
        w.sym[first].prev = -1;
        w.sym[last].next = -1;
        bpe_merge_chunk(t, &w, first, last);
        for (i = first; i >= 0 && !w.oom; i = w.sym[i].next) ints_push(ids, w.sym[i].id);
    }
    free(w.sym);
    free(w.heap);
    return w.oom || ids->oom ? LUCIE_ENOMEM : LUCIE_OK;
}

/* ---- added tokens ---------------------------------------------------------- */

static int is_white_space(uint32_t c) { /* Unicode White_Space, Rust's char::is_whitespace */
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Finds the next added-token match in s[from..n): leftmost, then longest.
 * Returns the added index or -1; *start and *end get the byte range, widened by
 * lstrip/rstrip whitespace. Matches of special tokens are skipped (the text
 * stays text) when !parse_special, as the reference's encode_special_tokens. */
static int next_added(const tokenizer *t, const int *first, const unsigned char *s, size_t n, size_t from,
                      size_t min_start, int parse_special, size_t *start, size_t *end) {
    size_t i;
    for (i = from; i < n; i++) {
        int best = -1, k;
        for (k = first[s[i]]; k >= 0; k = t->added[k].next) {
            const added_token *a = &t->added[k];
            if (a->len <= n - i && memcmp(s + i, a->text, a->len) == 0 && (best < 0 || a->len > t->added[best].len))
                best = k;
        }
        if (best < 0) continue;
        if (!parse_special && (t->added[best].flags & ADDED_SPECIAL)) {
            i += t->added[best].len - 1; /* the match is consumed, as in the reference */
            continue;
        }
        *start = i;
        *end = i + t->added[best].len;
        if (t->added[best].flags & ADDED_LSTRIP) {
            while (*start > min_start) {
                size_t p = *start - 1;
                uint32_t c;
                while (p > min_start && (s[p] & 0xC0) == 0x80) p--;
                utf8_decode(s + p, n - p, &c);
                if (!is_white_space(c)) break;
                *start = p;
            }
        }
        if (t->added[best].flags & ADDED_RSTRIP) {
            uint32_t c;
            int len;
            while (*end < n && (len = utf8_decode(s + *end, n - *end, &c)) > 0 && is_white_space(c)) *end += (size_t)len;
        }
        return best;
    }
    return -1;
}

typedef struct {
    byte_buf norm;
    int rc;
} encode_scratch;

/* Normalizes one piece of raw text, cuts normalized added tokens out of it,
 * and BPE-encodes what is left. */
static void encode_piece(const tokenizer *t, const unsigned char *s, size_t n, int parse_special, int_buf *ids,
                         encode_scratch *sc) {
    size_t pos = 0, start, end;
    const unsigned char *text;
    int k;
    if (n == 0 || sc->rc != LUCIE_OK) return;
    normalize_text(t, s, n, &sc->norm);
    if (sc->norm.oom) {
        sc->rc = LUCIE_ENOMEM;
        return;
    }
    text = sc->norm.data;
    n = sc->norm.len;
    while ((k = next_added(t, t->norm_first, text, n, pos, pos, parse_special, &start, &end)) >= 0) {
        if (start > pos && (sc->rc = bpe_encode(t, text + pos, start - pos, ids)) != LUCIE_OK) return;
        ints_push(ids, t->added[k].id);
        pos = end;
    }
    if (pos < n) sc->rc = bpe_encode(t, text + pos, n - pos, ids);
}

int lucie_tokenize(const lucie_model *model, const char *text, size_t len, int flags, int *ids, int max_ids,
                   int *n_ids, char *err, size_t err_size) {
    const tokenizer *t;
    const unsigned char *s = (const unsigned char *)text;
    int parse_special = (flags & LUCIE_TOK_PARSE_SPECIAL) != 0, k;
    int_buf out = {NULL, 0, 0, 0};
    encode_scratch sc;
    size_t pos = 0, start, end, bad;
    if (n_ids) *n_ids = 0;
    if (!model || (!text && len > 0) || !n_ids || max_ids < 0 || (max_ids > 0 && !ids) ||
        (flags & ~(LUCIE_TOK_ADD_SPECIAL | LUCIE_TOK_PARSE_SPECIAL))) {
        set_error(err, err_size, "lucie_tokenize: invalid arguments");
        return LUCIE_EINVAL;
    }
    t = model_tokenizer(model);
    if ((bad = utf8_invalid_at(s, len)) != len) {
        set_error(err, err_size, "the text is not valid UTF-8 (byte %lu)", (unsigned long)bad);
        return LUCIE_EINVAL;
    }
    memset(&sc, 0, sizeof sc);
    sc.rc = LUCIE_OK;
    if ((flags & LUCIE_TOK_ADD_SPECIAL) && t->bos_id >= 0) ints_push(&out, t->bos_id);
    while ((k = next_added(t, t->raw_first, s, len, pos, pos, parse_special, &start, &end)) >= 0) {
        encode_piece(t, s + pos, start - pos, parse_special, &out, &sc);
        ints_push(&out, t->added[k].id);
        pos = end;
    }
    encode_piece(t, s + pos, len - pos, parse_special, &out, &sc);
    if ((flags & LUCIE_TOK_ADD_SPECIAL) && t->eos_id >= 0) ints_push(&out, t->eos_id);
    buf_free(&sc.norm);
    if (sc.rc == LUCIE_OK && out.oom) sc.rc = LUCIE_ENOMEM;
    if (sc.rc == LUCIE_OK && out.len > (size_t)INT_MAX) sc.rc = LUCIE_EINVAL;
    if (sc.rc != LUCIE_OK) {
        free(out.data);
        set_error(err, err_size, sc.rc == LUCIE_ENOMEM ? "out of memory while tokenizing" : "the text is too long");
        return sc.rc;
    }
    *n_ids = (int)out.len;
    if (max_ids > 0 && out.len > 0)
        memcpy(ids, out.data, (out.len < (size_t)max_ids ? out.len : (size_t)max_ids) * sizeof(int));
    free(out.data);
    if (out.len > (size_t)max_ids) {
        set_error(err, err_size, "the text needs %d tokens, the buffer holds %d", *n_ids, max_ids);
        return LUCIE_ESMALL;
    }
    return LUCIE_OK;
}

/* ---- decoding ------------------------------------------------------------------
 * The decoder chain splits in two at its first Fuse. Before it, operations
 * act on each token's piece (Metaspace's "first piece" is the first piece
 * that reaches it; ByteFallback gathers runs of <0xNN> pieces into one piece,
 * or into one U+FFFD per byte when the run is not valid UTF-8). After it,
 * there is a single piece, the concatenation, so its operations act on a
 * stream of text: Replace holds back a possible beginning of its pattern,
 * Strip its possibly-trailing characters, until more text or the end decides.
 * Without a Fuse the pieces are simply concatenated at the end. */

struct lucie_detok_stream {
    const tokenizer *tok;
    int flags;
    byte_buf bytes;         /* ByteFallback: the pending run of bytes */
    long *n_seen;           /* per decoder op: pieces seen (Metaspace's first-piece rule) */
    byte_buf *held;         /* per decoder op after Fuse: text held back */
    byte_buf out;           /* text ready for the caller */
    int whole;              /* lucie_detokenize: gather the fused text, process it once at the end */
    byte_buf fused;
    byte_buf scratch[2];
    int failed;
    long n_pushed;
    int ended;              /* flushed: no more tokens */
    size_t skip;            /* bytes of upcoming output the caller already has (see _prime) */
};

static void stream_text(lucie_detok_stream *st, int op, const unsigned char *s, size_t n, int final);

static int is_byte_piece(const unsigned char *s, size_t n, unsigned char *byte) {
    /* The reference accepts "<0x" + what u8::from_str_radix(_, 16) accepts + ">". */
    int hi, lo, i;
    int digit[2];
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return 0;
    for (i = 0; i < 2; i++) {
        unsigned char c = s[3 + i];
        digit[i] = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    }
    if (s[3] == '+' && digit[1] >= 0) hi = 0, lo = digit[1];
    else if (digit[0] >= 0 && digit[1] >= 0) hi = digit[0], lo = digit[1];
    else return 0;
    *byte = (unsigned char)(hi * 16 + lo);
    return 1;
}

static void piece_flow(lucie_detok_stream *st, int op, const unsigned char *s, size_t n);

static void flush_bytes(lucie_detok_stream *st, int op) {
    byte_buf run = st->bytes;
    size_t i;
    static const unsigned char replacement[3] = {0xEF, 0xBF, 0xBD}; /* U+FFFD */
    if (run.len == 0) return;
    memset(&st->bytes, 0, sizeof st->bytes);
    if (utf8_invalid_at(run.data, run.len) == run.len) piece_flow(st, op + 1, run.data, run.len);
    else
        for (i = 0; i < run.len; i++) piece_flow(st, op + 1, replacement, 3);
    buf_free(&run);
}

/* Sends one piece through decoder operation `op` and the ones after it. */
static void piece_flow(lucie_detok_stream *st, int op, const unsigned char *s, size_t n) {
    const tokenizer *t = st->tok;
    byte_buf piece = {NULL, 0, 0, 0};
    for (; op < t->dec_fuse && !st->failed; op++) {
        const tok_op *o = &t->dec_ops[op];
        size_t i = 0;
        byte_buf next = {NULL, 0, 0, 0};
        unsigned char byte;
        switch (o->type) {
        case DEC_BYTE_FALLBACK:
            if (is_byte_piece(s, n, &byte)) {
                buf_append(&st->bytes, &byte, 1);
                if (st->bytes.oom) st->failed = 1;
                buf_free(&piece);
                return;
            }
            flush_bytes(st, op);
            continue;
        case DEC_REPLACE_STRING:
            replace_string(s, n, o->a, o->a_len, o->b, o->b_len, &next, 0);
            break;
        case DEC_METASPACE: { /* the reference drops every replacement char of the first piece */
            int first = st->n_seen[op]++ == 0 && o->p1 != METASPACE_NEVER;
            while (i < n) {
                uint32_t c;
                int len = utf8_decode(s + i, n - i, &c);
                if (c != o->cp) buf_append(&next, s + i, (size_t)len);
                else if (!first) buf_append(&next, " ", 1);
                i += (size_t)len;
            }
            break;
        }
        case DEC_STRIP: {
            size_t start = 0, stop = n, k;
            long count = 0;
            while (count < o->p1 && start < n && n - start >= o->a_len && memcmp(s + start, o->a, o->a_len) == 0)
                start += o->a_len, count++;
            for (k = 0; k < (size_t)o->p2 && stop - start >= o->a_len && memcmp(s + stop - o->a_len, o->a, o->a_len) == 0; k++)
                stop -= o->a_len;
            buf_append(&next, s + start, stop - start);
            break;
        }
        default:
            buf_append(&next, s, n);
            break;
        }
        buf_free(&piece);
        piece = next;
        if (piece.oom) st->failed = 1;
        s = piece.data ? piece.data : (const unsigned char *)"";
        n = piece.len;
    }
    if (!st->failed) {
        if (op == t->n_dec_ops) buf_append(&st->out, s, n);
        else if (st->whole) buf_append(&st->fused, s, n); /* op is the Fuse */
        else stream_text(st, op + 1, s, n, 0);
    }
    buf_free(&piece);
}

/* The fused text flows through the operations after Fuse; `final` flushes
 * what each one holds back. */
static void stream_text(lucie_detok_stream *st, int op, const unsigned char *s, size_t n, int final) {
    const tokenizer *t = st->tok;
    for (; op < t->n_dec_ops && !st->failed; op++) {
        const tok_op *o = &t->dec_ops[op];
        byte_buf *held = &st->held[op], next = {NULL, 0, 0, 0};
        size_t i = 0, keep;
        buf_append(held, s, n);
        s = held->data ? held->data : (const unsigned char *)"";
        n = held->len;
        keep = 0;
        switch (o->type) {
        case DEC_REPLACE_STRING:
            keep = n - replace_string(s, n, o->a, o->a_len, o->b, o->b_len, &next, !final);
            break;
        case DEC_METASPACE: /* the fused text is the first and only piece */
            while (i < n) {
                uint32_t c;
                int len = utf8_decode(s + i, n - i, &c);
                if (c != o->cp) buf_append(&next, s + i, (size_t)len);
                else if (o->p1 == METASPACE_NEVER) buf_append(&next, " ", 1);
                i += (size_t)len;
            }
            break;
        case DEC_STRIP: {
            /* n_seen counts the leading characters already decided. */
            size_t trailing = 0, k;
            while (st->n_seen[op] < o->p1 && i < n) {
                if (n - i < o->a_len) break;
                if (memcmp(s + i, o->a, o->a_len) != 0) {
                    st->n_seen[op] = o->p1;
                    break;
                }
                i += o->a_len;
                st->n_seen[op]++;
            }
            if (st->n_seen[op] < o->p1 && !final && i == n) break; /* all stripped so far */
            st->n_seen[op] = o->p1;
            for (k = 0; k < (size_t)o->p2 && n - i - trailing >= o->a_len &&
                        memcmp(s + n - trailing - o->a_len, o->a, o->a_len) == 0; k++)
                trailing += o->a_len;
            keep = final ? 0 : trailing;
            buf_append(&next, s + i, n - i - (final ? trailing : keep));
            break;
        }
        default:
            buf_append(&next, s, n);
            break;
        }
        /* keep the held tail, hand the rest on */
        if (keep > 0) memmove(held->data, held->data + held->len - keep, keep);
        held->len = keep;
        if (next.oom) st->failed = 1;
        buf_free(&st->scratch[op & 1]);
        st->scratch[op & 1] = next;
        s = next.data ? next.data : (const unsigned char *)"";
        n = next.len;
    }
    if (!st->failed) buf_append(&st->out, s, n);
}

static int detok_push_id(lucie_detok_stream *st, int id) {
    const tokenizer *t = st->tok;
    const unsigned char *piece;
    size_t len;
    if (id < 0 || id >= t->vocab_size) return LUCIE_EINVAL;
    piece = t->piece[id];
    len = t->piece_len[id];
    if (t->added_of[id] >= 0) {
        const added_token *a = &t->added[t->added_of[id]];
        if ((st->flags & LUCIE_DETOK_SKIP_SPECIAL) && (a->flags & ADDED_SPECIAL)) return LUCIE_OK;
        /* The reference spells a normalized added token in its normalized form. */
        if ((a->flags & ADDED_NORMALIZED) && a->len > 0) piece = a->text, len = a->len;
    }
    piece_flow(st, 0, piece, len);
    return st->failed || st->out.oom ? LUCIE_ENOMEM : LUCIE_OK;
}

static int detok_finish(lucie_detok_stream *st) {
    int op;
    for (op = 0; op < st->tok->dec_fuse; op++)
        if (st->tok->dec_ops[op].type == DEC_BYTE_FALLBACK) flush_bytes(st, op);
    if (st->tok->dec_fuse < st->tok->n_dec_ops) {
        if (st->fused.oom) st->failed = 1;
        stream_text(st, st->tok->dec_fuse + 1, st->fused.data, st->fused.len, 1);
    }
    return st->failed || st->out.oom ? LUCIE_ENOMEM : LUCIE_OK;
}

static lucie_detok_stream *detok_stream_create(const tokenizer *t, int flags) {
    lucie_detok_stream *st = (lucie_detok_stream *)calloc(1, sizeof *st);
    if (!st) return NULL;
    st->tok = t;
    st->flags = flags;
    st->n_seen = (long *)calloc((size_t)t->n_dec_ops + 1, sizeof(long));
    st->held = (byte_buf *)calloc((size_t)t->n_dec_ops + 1, sizeof(byte_buf));
    if (!st->n_seen || !st->held) {
        free(st->n_seen);
        free(st->held);
        free(st);
        return NULL;
    }
    return st;
}

lucie_detok_stream *lucie_detok_stream_new(const lucie_model *model, int flags) {
    if (!model || (flags & ~LUCIE_DETOK_SKIP_SPECIAL)) return NULL;
    return detok_stream_create(model_tokenizer(model), flags);
}

void lucie_detok_stream_free(lucie_detok_stream *st) {
    int i;
    if (!st) return;
    for (i = 0; i <= st->tok->n_dec_ops; i++) buf_free(&st->held[i]);
    buf_free(&st->bytes);
    buf_free(&st->out);
    buf_free(&st->fused);
    buf_free(&st->scratch[0]);
    buf_free(&st->scratch[1]);
    free(st->held);
    free(st->n_seen);
    free(st);
}

static int detok_length(const tokenizer *t, const int *ids, int n_ids, int flags, size_t *len);

static const char *detok_take(lucie_detok_stream *st, size_t *len) {
    if (st->skip > 0 && st->out.len > 0) {
        size_t cut = st->skip < st->out.len ? st->skip : st->out.len;
        st->skip -= cut;
        /* never start the output inside a character (possible only if later
         * tokens changed text that was held back) */
        while (cut < st->out.len && (st->out.data[cut] & 0xC0) == 0x80) cut++;
        memmove(st->out.data, st->out.data + cut, st->out.len - cut);
        st->out.len -= cut;
    }
    *len = st->out.len;
    if (!buf_reserve(&st->out, 1)) return NULL;
    st->out.data[*len] = 0; /* keeps a NUL after the text, for convenience */
    st->out.len = 0;
    return (const char *)st->out.data;
}

const char *lucie_detok_stream_push(lucie_detok_stream *st, int token, size_t *len) {
    size_t dummy;
    if (!len) len = &dummy;
    *len = 0;
    if (!st || st->failed || st->ended) return NULL;
    st->out.len = 0;
    st->n_pushed++;
    if (detok_push_id(st, token) != LUCIE_OK) return NULL;
    return detok_take(st, len);
}

/* Pushes, into a fresh stream, tokens whose text the caller already has (a
 * prompt): the text they decode to is never returned, not even the part the
 * stream still holds back, and later tokens continue after it, as seen in
 * the decode of the whole sequence (a Metaspace decoder does not drop the
 * space of the first generated token, for instance). */
int lucie_detok_stream_prime(lucie_detok_stream *st, const int *ids, int n_ids) {
    size_t emitted = 0, total;
    int i, rc;
    if (!st || st->failed || st->n_pushed > 0 || n_ids < 0 || (n_ids > 0 && !ids)) return LUCIE_EINVAL;
    for (i = 0; i < n_ids; i++) {
        st->out.len = 0;
        st->n_pushed++;
        if ((rc = detok_push_id(st, ids[i])) != LUCIE_OK) return rc;
        emitted += st->out.len;
    }
    st->out.len = 0;
    rc = detok_length(st->tok, ids, n_ids, st->flags, &total);
    if (rc != LUCIE_OK) return rc;
    st->skip = total > emitted ? total - emitted : 0;
    return LUCIE_OK;
}

/* Ends the stream: returns the text still held back (an unfinished byte
 * run, a possible start of a Replace pattern...). All push outputs plus this
 * one equal lucie_detokenize of the pushed ids. Pushing after it fails. */
const char *lucie_detok_stream_flush(lucie_detok_stream *st, size_t *len) {
    size_t dummy;
    if (!len) len = &dummy;
    *len = 0;
    if (!st || st->failed || st->ended) return NULL;
    st->ended = 1;
    st->out.len = 0;
    if (detok_finish(st) != LUCIE_OK) return NULL;
    return detok_take(st, len);
}

/* The whole decode of ids into a stream's output buffer (*out_stream, to be
 * freed by the caller), or an error. */
static int detok_whole(const tokenizer *t, const int *ids, int n_ids, int flags, lucie_detok_stream **out_stream) {
    lucie_detok_stream *st = detok_stream_create(t, flags);
    int i, rc = LUCIE_OK;
    *out_stream = st;
    if (!st) return LUCIE_ENOMEM;
    st->whole = 1;
    for (i = 0; i < n_ids && rc == LUCIE_OK; i++) rc = detok_push_id(st, ids[i]);
    if (rc == LUCIE_OK) rc = detok_finish(st);
    return rc;
}

static int detok_length(const tokenizer *t, const int *ids, int n_ids, int flags, size_t *len) {
    lucie_detok_stream *st;
    int rc = detok_whole(t, ids, n_ids, flags, &st);
    *len = rc == LUCIE_OK ? st->out.len : 0;
    lucie_detok_stream_free(st);
    return rc;
}

int lucie_detokenize(const lucie_model *model, const int *ids, int n_ids, int flags, char *buf, size_t buf_size,
                     size_t *len) {
    lucie_detok_stream *st;
    int rc;
    if (len) *len = 0;
    if (!model || n_ids < 0 || (n_ids > 0 && !ids) || (buf_size > 0 && !buf) || !len ||
        (flags & ~LUCIE_DETOK_SKIP_SPECIAL))
        return LUCIE_EINVAL;
    rc = detok_whole(model_tokenizer(model), ids, n_ids, flags, &st);
    if (rc == LUCIE_OK) {
        *len = st->out.len;
        if (buf_size > 0) {
            size_t n = st->out.len < buf_size - 1 ? st->out.len : buf_size - 1;
            memcpy(buf, st->out.data ? (const char *)st->out.data : "", n);
            buf[n] = 0;
        }
        if (buf_size <= st->out.len) rc = LUCIE_ESMALL;
    }
    lucie_detok_stream_free(st);
    return rc;
}

#include "unicode_tables.inc.c"
