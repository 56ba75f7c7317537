/* lucie.h - the whole public API of lucie.c, a single-file C99 library that runs
 * Lucie-7B (and any Llama-architecture model exported by export.py) on a CPU.
 *
 * Usage: compile lucie.c with your program (with -pthread on POSIX systems, or
 * -DLUCIE_NO_THREADS for a single-threaded build without it), include this
 * header. Nothing else is needed: no other C dependency.
 *
 * Conventions for every function below
 *   - Functions that can fail return an int status: LUCIE_OK (0) or a negative
 *     LUCIE_E* code. A human readable one-line message is then available from
 *     lucie_session_error() for calls on a session, or written to the caller's
 *     `err` buffer by the calls that take one (opening, tokenizing: a model
 *     is shared read-only between threads, so it has no error slot of its
 *     own); lucie_status_string() names any status.
 *   - The library never prints, never calls exit(), and has no global state.
 *   - A lucie_model is read-only once opened: any number of threads may use it
 *     at once (tokenize, detokenize, create sessions). A lucie_session belongs
 *     to one thread at a time.
 *   - Whoever creates an object frees it with the matching *_free/_close call.
 *
 * ========================================================================
 * FILE FORMAT (version 1). The one definition; export.py follows it.
 * ========================================================================
 * All integers little-endian. u32/i32/u64 = unsigned/signed 32/64-bit ints,
 * f32/f64 = IEEE-754 binary32/binary64.
 *
 *   offset  size  field
 *   0       8     magic "LUCIEBIN"
 *   8       4     u32 version (= 1)
 *   12      4     u32 header_size (= 256; the entry table starts here)
 *   16      8     u64 file_size (must equal the real file size)
 *   24      4     u32 n_entries
 *   28      4     u32 weight_type: the dtype of the big matrices (see dtypes)
 *   32      4     u32 dim              (hidden_size)
 *   36      4     u32 hidden_dim       (intermediate_size)
 *   40      4     u32 n_layers         (num_hidden_layers)
 *   44      4     u32 n_heads          (num_attention_heads)
 *   48      4     u32 n_kv_heads       (num_key_value_heads)
 *   52      4     u32 head_dim         (head_dim, or hidden_size / n_heads)
 *   56      4     u32 vocab_size
 *   60      4     u32 max_seq_len      (max_position_embeddings)
 *   64      8     f64 rope_theta
 *   72      4     f32 rms_norm_eps
 *   76      4     u32 tie_word_embeddings (0/1: lm_head is the embedding table)
 *   80      4     i32 bos_id           (-1 if none)
 *   84      4     u32 n_eos            (0..8)
 *   88      32    i32 eos_ids[8]
 *   120     4     i32 pad_id           (-1 if none)
 *   124     4     f32 temperature      (generation_config defaults ...)
 *   128     4     f32 top_p
 *   132     4     i32 top_k            (0 = off)
 *   136     4     f32 repetition_penalty (1 = off)
 *   140     4     u32 do_sample        (0 = greedy by default)
 *   144     4     u32 group_size       (quantization group size; 0 for f32/bf16)
 *   148     108   reserved, zero
 *   256     128*n_entries  the entry table
 *   ...           the sections, each starting at a multiple of 64 bytes
 *
 * Entry (128 bytes): a named, typed byte range of the file.
 *   0   96  name, NUL-padded UTF-8 (at least one NUL): the Hugging Face tensor
 *           name ("model.layers.0.self_attn.q_proj.weight") or a section name
 *           ("tokenizer", "chat_template")
 *   96  4   u32 dtype
 *   100 4   u32 rows   (tensor shape [rows, cols] as in PyTorch; a 1-D tensor
 *   104 4   u32 cols    has rows = 1; byte sections have rows = cols = 0)
 *   108 4   u32 reserved (0)
 *   112 8   u64 offset (multiple of 64, inside the file)
 *   120 8   u64 size   (bytes; must equal what dtype and shape imply)
 * Sections never overlap. The loader checks all of this before use.
 *
 * dtypes: 0 = bytes (untyped section), 1 = f32, 2 = bf16, 3 = q8, 4 = q4;
 * lucie_dtype() describes each. A tensor of [rows, cols] takes
 * ceil(rows/row_block)*row_block * ceil(cols/group) * unit_bytes bytes:
 *   f32: group 1, unit 4 bytes; bf16: group 1, unit 2 bytes (row_block 1);
 *   q8/q4: one f16 scale per 32 weights of a row (group_size must be 32), 16
 *   rows interleaved per block (row_block 16, the last block padded with zero
 *   rows, columns with zeros to 32); unit 34 (q8) or 18 (q4) bytes.
 * The exact block layout is defined next to its kernels in lucie.c. Each
 * tensor may have its own dtype; the header's weight_type is the narrowest
 * (fewest bytes per weight) of them: q4 files keep the embedding table and
 * lm_head in q8, and norms are f32 in every file.
 *
 * Tensors, for every layer l: model.layers.l.{input_layernorm,
 * post_attention_layernorm}.weight (f32, always), .self_attn.{q,k,v,o}_proj
 * .weight, .mlp.{gate,up,down}_proj.weight; then model.embed_tokens.weight,
 * model.norm.weight (f32) and lm_head.weight (absent when tied).
 *
 * The "tokenizer" section (all integers u32 unless said; strings are a u32
 * byte length followed by that many bytes, no NUL):
 *   magic "LTOK", u32 version (= 1)
 *   vocab_size, n_merges, n_added, n_normalizer_ops, n_decoder_ops
 *   i32 unk_id (-1 none), i32 bos_id, i32 eos_id: the post-processor adds
 *       bos_id in front / eos_id at the end when add_special_tokens (-1 none)
 *   flags: bit0 byte_fallback, bit1 fuse_unk
 *   vocab_size x { u32 kind (0 normal, 1 byte token <0xNN>, 2 added token that
 *                  is not in the BPE model's vocab), string }
 *   n_merges x { u32 left_id, u32 right_id, u32 merged_id }, in rank order
 *   n_added x { u32 id, u32 flags: bit0 special, bit1 normalized, bit2 lstrip,
 *               bit3 rstrip, bit4 single_word }
 *   n_normalizer_ops x op, then n_decoder_ops x op, where an op is
 *     { u32 type, string a, string b, i32 p1, i32 p2 }
 *   normalizer op types:
 *     1 NFC
 *     2 REPLACE_STRING   every occurrence of string a -> string b
 *     3 REPLACE_CHARSET  every code point listed in a (UTF-8) -> string b
 *     4 SPACE_AFTER      a = one code point c; regex "c(?=[ \w])" -> "c" + b
 *     5 PREPEND          a is prepended to non-empty text
 *   decoder op types:
 *     16 REPLACE_STRING  a -> b in each token piece
 *     17 BYTE_FALLBACK   runs of <0xNN> pieces -> bytes (invalid UTF-8 -> U+FFFD)
 *     18 METASPACE       a = replacement char; p1 = prepend scheme
 *                        (0 always, 1 first, 2 never): strips it off the first piece
 *     19 FUSE            concatenate all pieces
 *     20 STRIP           a = char, p1 = n from start, p2 = n from end
 * The "chat_template" section holds tokenizer_config.json's chat_template
 * (Jinja source) verbatim, when present.
 */
#ifndef LUCIE_H
#define LUCIE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LUCIE_VERSION "0.1.0"

/* Status codes (negative = error). */
enum {
    LUCIE_OK = 0,
    LUCIE_EIO = -1,        /* file cannot be opened / read / mapped */
    LUCIE_EFORMAT = -2,    /* file is not a valid lucie model / corrupt */
    LUCIE_ENOMEM = -3,     /* out of memory */
    LUCIE_EINVAL = -4,     /* bad argument (NULL, out of range, NaN...) */
    LUCIE_ECONTEXT = -5,   /* the tokens do not fit in the session's context */
    /* -6 is not used: a callback that stops generation is a normal end
       (lucie_stats.stop_reason = LUCIE_STOP_CALLBACK), not an error */
    LUCIE_ESMALL = -7      /* caller's output buffer too small (size reported) */
};

/* Weight types (file dtypes). */
enum { LUCIE_DT_BYTES = 0, LUCIE_DT_F32 = 1, LUCIE_DT_BF16 = 2, LUCIE_DT_Q8 = 3, LUCIE_DT_Q4 = 4 };

/* How a weight type is stored (see FILE FORMAT above for the size formula). */
typedef struct {
    const char *name; /* "f32", "bf16", "q8", "q4": as run and export.py spell it */
    int group;        /* weights per stored unit: 1, or the quantization group */
    int unit_bytes;   /* bytes per unit (for q8/q4: the f16 scale and the codes) */
    int row_block;    /* rows are stored in blocks of this many (padded) */
    int quantized;    /* 1: integer codes, written by lucie_quantize_file */
} lucie_dtype_info;

/* The description of dtype (LUCIE_DT_F32...), or NULL when it is not a weight
 * type (LUCIE_DT_BYTES, unknown numbers). Iterate from 1 until NULL. */
const lucie_dtype_info *lucie_dtype(int dtype);
/* The dtype named name ("q4"...), or LUCIE_EINVAL. */
int lucie_dtype_from_name(const char *name);

#define LUCIE_MAX_EOS 8

/* The model's hyperparameters, as read from the file (hence from config.json). */
typedef struct {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, head_dim;
    int vocab_size, max_seq_len;
    double rope_theta;
    float rms_norm_eps;
    int tie_word_embeddings;
    int bos_id, pad_id, n_eos, eos_ids[LUCIE_MAX_EOS];
    int weight_type, group_size;
    /* generation_config.json defaults */
    float temperature, top_p, repetition_penalty;
    int top_k, do_sample;
} lucie_config;

typedef struct lucie_model lucie_model;
typedef struct lucie_session lucie_session;

/* ---- models --------------------------------------------------------- */

/* How the weights get into memory. */
enum {
    LUCIE_LOAD_MMAP = 0,    /* map the file read-only (default): instant, shared page cache */
    LUCIE_LOAD_ADVISE = 1,  /* map, and advise the kernel (will-need, sequential, huge pages) */
    LUCIE_LOAD_READ = 2     /* read into private 2 MB-aligned memory (huge pages where the OS allows) */
};

/* Load options; pass NULL for defaults. */
typedef struct {
    int load_mode; /* LUCIE_LOAD_* */
} lucie_open_options;

/* Opens and validates a model file. On success *out owns the mapping.
 * On failure *out is NULL and err (if not NULL) holds a one-line message.
 * Every path in this API is UTF-8, on Windows too. */
int lucie_open(const char *path, const lucie_open_options *opts, lucie_model **out,
               char *err, size_t err_size);
void lucie_close(lucie_model *model);
const lucie_config *lucie_model_config(const lucie_model *model);
/* The chat template stored at export (NUL-terminated copy owned by the model),
 * or NULL when the model has none. */
const char *lucie_chat_template(const lucie_model *model);

/* ---- tokenizer (needs only a model; no session) ---------------------- */

#define LUCIE_TOK_ADD_SPECIAL 1   /* HF add_special_tokens=True (BOS etc.) */
#define LUCIE_TOK_PARSE_SPECIAL 2 /* recognise special-token strings in text; without it
                                     special tokens are plain text, as HF encode_special_tokens=True */

/* Encodes `len` bytes of UTF-8 text as HF tokenizers' encode() does.
 * Writes at most max_ids ids and sets *n_ids to the number the text needs;
 * returns LUCIE_ESMALL when max_ids was too small (call again), LUCIE_EINVAL on
 * invalid UTF-8 (err gets the message). Thread-safe. */
int lucie_tokenize(const lucie_model *model, const char *text, size_t len, int flags,
                   int *ids, int max_ids, int *n_ids, char *err, size_t err_size);
/* The same into an array the library allocates: *ids (free it with
 * lucie_free; never NULL on success, even for no ids) holds *n_ids ids. */
int lucie_tokenize_alloc(const lucie_model *model, const char *text, size_t len, int flags,
                         int **ids, int *n_ids, char *err, size_t err_size);
/* Frees what a lucie_*_alloc call returned (the library's own allocator,
 * which on Windows may not be the caller's). NULL is fine. */
void lucie_free(void *p);

#define LUCIE_DETOK_SKIP_SPECIAL 1 /* HF skip_special_tokens=True */

/* Decodes ids as HF decode() does. Writes at most buf_size - 1 bytes and a
 * NUL; *len gets the full length of the text (which may contain NUL bytes).
 * Ids of the model's vocabulary that the tokenizer has no piece for (padded
 * embedding rows) decode to nothing, as in HF. Returns LUCIE_ESMALL when
 * buf_size <= *len, LUCIE_EINVAL on an id outside the model's vocabulary.
 * Thread-safe. */
int lucie_detokenize(const lucie_model *model, const int *ids, int n_ids, int flags,
                     char *buf, size_t buf_size, size_t *len);

/* Streaming decode for generation: push one token at a time, get back the new
 * text it completes (only whole UTF-8 characters; text a later token could
 * still change, like a "\n" before a possible space, is held back). All
 * push outputs plus the final flush equal lucie_detokenize() of the ids.
 * A stream belongs to one thread; the model may be shared. */
typedef struct lucie_detok_stream lucie_detok_stream;
lucie_detok_stream *lucie_detok_stream_new(const lucie_model *model, int flags);
/* On a fresh stream: ids whose text the caller already has (a prompt). Their
 * text is never returned; later pushes continue it exactly as in the decode of
 * the whole sequence. */
int lucie_detok_stream_prime(lucie_detok_stream *stream, const int *ids, int n_ids);
/* Returns a pointer to the new text (valid until the next call) and its length
 * in *len, or NULL on error (an id outside the model's vocabulary, a stream
 * already flushed, no memory). */
const char *lucie_detok_stream_push(lucie_detok_stream *stream, int token, size_t *len);
/* Ends the stream and returns the text still held back (NULL on error). */
const char *lucie_detok_stream_flush(lucie_detok_stream *stream, size_t *len);
void lucie_detok_stream_free(lucie_detok_stream *stream);

/* ---- sessions: a KV cache, a sampler and its RNG --------------------- */

typedef struct {
    int context;      /* KV cache length in tokens; 0 = min(model max, 4096) */
    int n_threads;    /* threads at most, the caller's included; 0 = one per processor the
                         process may use (its affinity, where the OS tells it) */
    float temperature; /* 0 = greedy */
    int top_k;        /* 0 = off */
    float top_p;      /* 1 = off */
    float min_p;      /* 0 = off */
    float repetition_penalty; /* 1 = off */
    int repetition_window;    /* last N tokens penalised; 0 = whole context */
    unsigned long long seed;
    int kv_type;      /* LUCIE_KV_*: how the KV cache stores keys and values; 0 = LUCIE_KV_DEFAULT */
    int no_pinning;   /* 1: leave the threads where the OS puts them. 0: with one thread per
                         processor the process may use, each keeps to its own processor (the
                         caller's thread only while lucie_eval* computes, when it is not pinned
                         already); on Linux and Windows (README, "Threads") */
} lucie_session_options;

/* KV cache element types. The cache holds, per layer, KV head and position,
 * a row of head_dim keys (after RoPE) and one of values, in one of:
 *   F32: the floats as computed (4 bytes per value);
 *   F16: IEEE half, rounded to nearest even, |x| saturating at 65504 (2 bytes);
 *   Q8:  the row in groups of 32 consecutive values (the last one shorter when
 *        head_dim is not a multiple of 32), each an f32 scale = max|x| / 127 of
 *        its group and int8 codes round_half_even(x / scale); a value reads
 *        back as code * scale (scales first, then the codes: 1.125 bytes per
 *        value at head_dim 128).
 * Attention reads every row back as f32, so the types differ only in these
 * roundings (bench/kv_types.md measures what they cost in accuracy). */
enum { LUCIE_KV_DEFAULT = 0, LUCIE_KV_F32 = 1, LUCIE_KV_F16 = 2, LUCIE_KV_Q8 = 3 };

/* Fills *opts with the defaults (model file's generation settings when model
 * is not NULL). */
void lucie_session_defaults(const lucie_model *model, lucie_session_options *opts);
int lucie_session_new(const lucie_model *model, const lucie_session_options *opts,
                      lucie_session **out, char *err, size_t err_size);
/* Changes the sampler settings of a session (checked as lucie_session_new
 * checks them; LUCIE_EINVAL leaves the sampler as it was) and reseeds its RNG
 * from opts->seed; context, n_threads, kv_type and no_pinning are fixed at
 * creation and ignored. The cache and the repetition-penalty history are kept. */
int lucie_session_set_sampler(lucie_session *session, const lucie_session_options *opts);
void lucie_session_free(lucie_session *session);
const char *lucie_session_error(const lucie_session *session);
int lucie_session_position(const lucie_session *session); /* tokens in the cache */
int lucie_session_context(const lucie_session *session);
int lucie_session_threads(const lucie_session *session); /* threads it may compute with (small
                                                           steps use fewer: a second thread only
                                                           joins work large enough to pay for it) */
/* Copies the first min(position, max_ids) cached token ids to ids and
 * returns the position (ids may be NULL when max_ids is 0). */
int lucie_session_tokens(const lucie_session *session, int *ids, int max_ids);
/* Restarts the sampler's random sequence from seed, as a new session with
 * this seed would start it (e.g. after lucie_session_load restored another). */
int lucie_session_set_seed(lucie_session *session, unsigned long long seed);
int lucie_session_kv_type(const lucie_session *session); /* LUCIE_KV_F32, _F16 or _Q8 */
/* Forgets the cache from position pos on (0 = start over). */
int lucie_session_rewind(lucie_session *session, int pos);
/* A new session that continues from where src stands: the same options
 * (context, threads, KV type, sampler settings), a copy of src's cached
 * tokens, KV cache and last logits, and the same random state (give it its
 * own sequence with lucie_session_set_seed). Evaluating or sampling in either
 * afterwards gives exactly what src alone would have given: N continuations
 * of one prompt cost one prefill. err as lucie_session_new. */
int lucie_session_fork(const lucie_session *src, lucie_session **out, char *err, size_t err_size);

/* ---- saving a session (prompt caching) -------------------------------- */

/* Writes the session's tokens, KV cache and sampler state to path; restoring it
 * into a session of the same model with a context at least as long, then
 * evaluating more tokens, gives exactly the logits the original session would
 * have produced (the last logits themselves are not stored: evaluate at least
 * one token after a load). The file is validated on load like a model file
 * (LUCIE_EFORMAT when it does not match this model; the session is unchanged).
 * The file records the KV cache type and loads only into a session of the same
 * type (files written before cache types existed hold f32 caches). Files of
 * earlier versions load too, except a q8 cache of a model whose head_dim is
 * not a multiple of 32 (LUCIE_EFORMAT: evaluate the prompt again).
 * Saving writes path + ".tmp" and renames it over path: a save that fails
 * (full disk, crash) leaves the previous file as it was. */
int lucie_session_save(const lucie_session *session, const char *path);
int lucie_session_load(lucie_session *session, const char *path);

#define LUCIE_EVAL_ALL_LOGITS 1 /* logits for every evaluated token, not just the last */

/* Runs the transformer over n tokens at the session's position (batched
 * prefill when n > 1), appending them to the KV cache. logits, if not NULL,
 * receives vocab_size floats (or n * vocab_size with LUCIE_EVAL_ALL_LOGITS).
 * LUCIE_ECONTEXT (nothing changed) when the tokens do not fit. */
int lucie_eval(lucie_session *session, const int *tokens, int n, float *logits, int flags);

/* Several sessions of one model evaluated together: each entry appends its
 * tokens to its own session's cache at that session's position, as lucie_eval
 * would, but one forward pass serves all of them, so every weight is read once
 * per step for the whole batch (decoding B conversations costs about one
 * weight read per token step, not B). Entry i's logits (NULL, or vocab_size
 * floats) receive the prediction after its last token, and its session keeps
 * them (lucie_generate_tokens can continue with n_ids = 0). Results are bit
 * for bit those of lucie_eval on each session alone. The sessions must be
 * distinct, of the same model; the first entry's session lends its threads
 * and buffers. Nothing changes unless every entry is valid (LUCIE_EINVAL, or
 * LUCIE_ECONTEXT when an entry's tokens do not fit); the message is then in
 * the first entry's session (lucie_session_error). Not thread-safe with
 * respect to any of the sessions involved. */
typedef struct {
    lucie_session *session;
    const int *tokens;
    int n_tokens; /* >= 1 */
    float *logits;
} lucie_batch_entry;
int lucie_eval_batch(lucie_batch_entry *entries, int n_entries);

/* Samples a token from logits with the session's sampler settings (greedy at
 * temperature 0). The session remembers evaluated tokens for the repetition
 * penalty. Returns the token, or a negative status: LUCIE_EINVAL for NULL
 * arguments, LUCIE_EFORMAT when the logits are not finite (corrupt weights). */
int lucie_sample(lucie_session *session, const float *logits);

/* Per-token callback for generation: the newly decoded text (whole UTF-8
 * characters; may be empty) and the token id. A last call with token -1 may
 * carry text held back until the end (an unfinished stop-string prefix, a
 * byte sequence). Return non-zero to stop. */
typedef int (*lucie_token_callback)(const char *text, size_t len, int token, void *user);

/* Why generation ended. */
enum {
    LUCIE_STOP_MAX_TOKENS = 0,   /* produced max_tokens */
    LUCIE_STOP_EOS = 1,          /* sampled an eos id */
    LUCIE_STOP_CALLBACK = 2,     /* the callback returned non-zero */
    LUCIE_STOP_CONTEXT_FULL = 3, /* no room left in the context */
    LUCIE_STOP_STRING = 4        /* a stop string was produced */
};
/* "max_tokens", "eos", "callback", "context_full", "stop_string" ("unknown"
 * for other values). */
const char *lucie_stop_reason_string(int stop_reason);

typedef struct {
    int n_prompt, n_generated;
    double load_seconds, prompt_seconds, generate_seconds;
    int stop_reason; /* LUCIE_STOP_* */
    /* Speculative decoding (lucie_generate_options.lookup). n_forward counts
     * the forward passes (lucie_eval calls) after the input's: without lookup
     * one per generated token, with it n_generated / n_forward tokens per pass.
     * n_drafted tokens were proposed, n_accepted of them were what the sampler
     * chose (n_accepted / n_drafted is the acceptance rate). */
    int n_forward, n_drafted, n_accepted;
} lucie_stats;

/* Encodes prompt (HF way, BOS added), evaluates it, then samples up to
 * max_tokens new tokens, calling cb for each; stops early at an eos id, when the
 * callback returns non-zero, or when the context is full. stats may be NULL. */
int lucie_generate(lucie_session *session, const char *prompt, int max_tokens,
                   lucie_token_callback cb, void *user, lucie_stats *stats);

/* Finer control over generation. */
typedef struct {
    int max_tokens;                 /* new tokens at most */
    const char *const *stop;        /* stop strings (not included in the output) */
    int n_stop;
    int fresh_text; /* 1: decode the new tokens on their own (a chat reply);
                       0: as the continuation of the input (prompt + output
                       equals the decoding of the whole sequence) */
    int lookup; /* speculative decoding by prompt lookup: up to this many draft
                   tokens per forward pass, 0 = off. After each sampled token,
                   the tokens that followed the latest earlier occurrence of the
                   last few tokens (input and output) are evaluated with it in
                   one pass, and kept as long as the sampler picks them. The
                   output, stop reason, cache and random state are exactly
                   those without lookup, for any sampler settings: it only
                   saves time when the text repeats itself (quoting, editing,
                   summarising). */
} lucie_generate_options;

/* Evaluates n_ids input tokens (appended to the cache; n_ids may be 0 when the
 * session already holds the input and its logits: the text then continues
 * the cached tokens'), then generates like lucie_generate, stopping also at
 * a stop string (LUCIE_STOP_STRING). On return the cache holds every
 * sampled token (an eos too, as chat needs). */
int lucie_generate_tokens(lucie_session *session, const int *ids, int n_ids, const lucie_generate_options *opts,
                          lucie_token_callback cb, void *user, lucie_stats *stats);

/* The stop-string rule lucie_generate_tokens applies to the text it holds
 * back, for callers that run their own generation loop (a server decoding
 * many sequences together): returns how many leading bytes of text can be
 * emitted (no stop string can start inside them) and sets *found to 0; or,
 * when a whole stop string occurs, sets *found to 1 and returns the offset
 * of the earliest one (text from there on is dropped). Empty or NULL stop
 * strings are ignored. */
size_t lucie_stop_scan(const char *text, size_t len, const char *const *stop, int n_stop, int *found);

/* ---- chat ------------------------------------------------------------- */

typedef struct {
    const char *role;    /* "system", "user", "assistant" */
    const char *content;
} lucie_chat_message;

#define LUCIE_CHAT_GENERATION_PROMPT 1 /* end with the assistant header */
#define LUCIE_CHAT_CONTINUE 2          /* omit the leading BOS (later turns) */

/* Renders messages with the model's chat template straight to token ids,
 * placing special tokens only where the template does: special-token strings
 * typed in a message are tokenized as plain text. Supports the Llama-3-style
 * header template of Lucie-7B-Instruct (<|start_header_id|>ROLE<|end_header_id|>
 * \n\nCONTENT|trim<|eot_id|>); other templates give LUCIE_EINVAL. Same buffer
 * protocol as lucie_tokenize. Thread-safe. */
int lucie_chat_tokens(const lucie_model *model, const lucie_chat_message *messages, int n_messages, int flags,
                      int *ids, int max_ids, int *n_ids, char *err, size_t err_size);
/* The same into an array the library allocates (as lucie_tokenize_alloc). */
int lucie_chat_tokens_alloc(const lucie_model *model, const lucie_chat_message *messages, int n_messages,
                            int flags, int **ids, int *n_ids, char *err, size_t err_size);

/* ---- utilities ----------------------------------------------------------- */

const char *lucie_status_string(int status);
/* A monotonic clock in seconds (arbitrary origin), the one lucie_stats uses:
 * differences of two calls measure wall time. */
double lucie_time_seconds(void);

/* One line saying what this build computes with: version, the SIMD kernels
 * compiled in (float and quantized), FMA, threads. */
const char *lucie_build_info(void);

/* ---- quantization ------------------------------------------------------ */

/* Converts an f32/bf16 model file to a quantized type (lucie_dtype(dtype)->
 * quantized: LUCIE_DT_Q8, LUCIE_DT_Q4): the layer matrices take that type,
 * the embedding table and lm_head q8, the rest is copied. Reads a chunk at a time (bounded memory), writes
 * out_path + ".tmp" and renames it. progress (may be NULL) gets the tensor
 * being converted and the fraction done. */
int lucie_quantize_file(const char *in_path, const char *out_path, int dtype,
                        void (*progress)(const char *tensor, double fraction, void *user), void *user, char *err,
                        size_t err_size);

#ifdef __cplusplus
}
#endif
#endif /* LUCIE_H */
