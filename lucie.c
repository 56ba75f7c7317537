/* lucie.c - run Lucie-7B (a Llama-architecture language model) on a CPU.
 *
 * One file, C99 and its standard library (plus POSIX mmap or the Windows
 * equivalent), OpenMP optional. Read it top to bottom:
 *
 *   1. Plumbing: errors, clocks, little-endian reads.
 *   2. The model file: mapping it and checking every byte range before use.
 *   3. The tokenizer: text <-> token ids, exactly like Hugging Face tokenizers.
 *   4. Math kernels: matrix products for each weight type (f32, bf16, q8, q4).
 *   5. The transformer forward pass, mirroring Hugging Face LlamaForCausalLM.
 *   6. Sampling: temperature, top-k, top-p, min-p, repetition penalty.
 *   7. Generation: prompt in, streamed text out.
 *
 * The file format itself is specified in lucie.h; export.py writes it.
 */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#if !defined(_WIN32) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE /* madvise() hints, MAP_ANONYMOUS: optional, used when present */
#endif
#include "lucie.h"

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _WIN32
#include <windows.h>
#else
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

/* ========================================================================
 * 1. Plumbing
 *
 * Every failure is reported as a status code plus a one-line message in a
 * buffer the caller owns (or the session's own buffer). Multi-byte values in
 * the file are little-endian; we read them byte by byte so the header parses
 * on any host, and refuse big-endian hosts where the raw tensors are used.
 * ======================================================================== */

static void set_error(char *err, size_t err_size, const char *fmt, ...) {
    va_list ap;
    if (!err || err_size == 0) return;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
}

const char *lucie_status_string(int status) {
    switch (status) {
    case LUCIE_OK: return "ok";
    case LUCIE_EIO: return "i/o error";
    case LUCIE_EFORMAT: return "invalid model file";
    case LUCIE_ENOMEM: return "out of memory";
    case LUCIE_EINVAL: return "invalid argument";
    case LUCIE_ECONTEXT: return "context is full";
    case LUCIE_ECANCELLED: return "cancelled";
    case LUCIE_ESMALL: return "buffer too small";
    default: return "unknown error";
    }
}

static double now_seconds(void) {
#ifdef _WIN32
    LARGE_INTEGER f, c;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&c);
    return (double)c.QuadPart / (double)f.QuadPart;
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#endif
}

static uint32_t read_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t read_u64(const unsigned char *p) { return read_u32(p) | (uint64_t)read_u32(p + 4) << 32; }
static int32_t read_i32(const unsigned char *p) {
    uint32_t u = read_u32(p);
    int32_t i;
    memcpy(&i, &u, 4);
    return i;
}
static float read_f32(const unsigned char *p) {
    uint32_t u = read_u32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static double read_f64(const unsigned char *p) {
    uint64_t u = read_u64(p);
    double d;
    memcpy(&d, &u, 8);
    return d;
}

static int host_is_little_endian(void) {
    const uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* a * b without overflow: returns 0 when it would not fit in size_t. */
static int mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

static void *aligned_alloc64(size_t size) {
    /* C99 has no aligned allocator: over-allocate and keep the original pointer
     * just before the aligned block. */
    unsigned char *raw, *aligned;
    if (size > SIZE_MAX - 64 - sizeof(void *)) return NULL;
    raw = (unsigned char *)calloc(1, size + 64 + sizeof(void *));
    if (!raw) return NULL;
    aligned = raw + sizeof(void *);
    aligned += (64 - ((uintptr_t)aligned & 63)) & 63;
    memcpy(aligned - sizeof(void *), &raw, sizeof(void *));
    return aligned;
}
static void aligned_free64(void *p) {
    unsigned char *raw;
    if (!p) return;
    memcpy(&raw, (unsigned char *)p - sizeof(void *), sizeof(void *));
    free(raw);
}

static float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ========================================================================
 * 2. The model file
 *
 * The file (layout in lucie.h) is memory-mapped read-only and the weights are
 * used in place: loading costs no copy, and the OS shares the pages between
 * processes. Because a mapped file is trusted memory as soon as we index into
 * it, everything is validated first: magic, version, the size, every entry's
 * range (aligned, inside the file, not overlapping another) and that each
 * tensor has exactly the shape and byte size the config implies.
 * ======================================================================== */

#define FILE_MAGIC "LUCIEBIN"
#define FILE_VERSION 1
#define HEADER_SIZE 256
#define ENTRY_SIZE 128
#define ENTRY_NAME_SIZE 96
#define SECTION_ALIGN 64

typedef struct {
    const unsigned char *data; /* the whole file */
    size_t size;
    int is_mapped; /* 1: mmap/MapViewOfFile, 0: private copy (LUCIE_LOAD_READ) */
    size_t alloc_size;
} file_view;

/* Private memory for LUCIE_LOAD_READ: on Linux an anonymous mapping aligned to
 * 2 MB with transparent huge pages requested, so the TLB covers the weights
 * with few entries; elsewhere plain aligned heap memory. */
#define HUGE_PAGE ((size_t)2 << 20)

static void *private_alloc(size_t size, size_t *alloc_size) {
#if !defined(_WIN32) && defined(MAP_ANONYMOUS)
    unsigned char *raw, *aligned;
    size_t total;
    if (size > SIZE_MAX - HUGE_PAGE) return NULL;
    total = size + HUGE_PAGE;
    raw = (unsigned char *)mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == (unsigned char *)MAP_FAILED) return NULL;
    aligned = raw + ((HUGE_PAGE - ((uintptr_t)raw & (HUGE_PAGE - 1))) & (HUGE_PAGE - 1));
    /* give back the unaligned head and the unused tail */
    if (aligned > raw) munmap(raw, (size_t)(aligned - raw));
    if (raw + total > aligned + size + (HUGE_PAGE - 1)) {
        size_t keep = (size + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
        munmap(aligned + keep, (size_t)(raw + total - (aligned + keep)));
        *alloc_size = keep;
    } else {
        *alloc_size = (size_t)(raw + total - aligned);
    }
#if defined(MADV_HUGEPAGE)
    madvise(aligned, *alloc_size, MADV_HUGEPAGE);
#endif
    return aligned;
#else
    *alloc_size = size;
    return aligned_alloc64(size);
#endif
}

static void private_free(void *p, size_t alloc_size) {
#if !defined(_WIN32) && defined(MAP_ANONYMOUS)
    munmap(p, alloc_size);
#else
    (void)alloc_size;
    aligned_free64(p);
#endif
}

typedef struct {
    char name[ENTRY_NAME_SIZE];
    int dtype;
    uint32_t rows, cols;
    uint64_t offset, size;
} file_entry;

/* A weight matrix [rows, cols] as stored: the kernels know how to read dtype. */
typedef struct {
    const void *data;
    int dtype;
    int rows, cols;
} tensor;

typedef struct {
    const float *attn_norm, *ffn_norm; /* input_layernorm, post_attention_layernorm */
    tensor wq, wk, wv, wo;             /* self_attn.{q,k,v,o}_proj */
    tensor w_gate, w_up, w_down;       /* mlp.{gate,up,down}_proj */
} layer_weights;

typedef struct tokenizer tokenizer;

struct lucie_model {
    lucie_config config;
    file_view file;
    layer_weights *layers;
    tensor embed;             /* model.embed_tokens */
    const float *final_norm;  /* model.norm */
    tensor lm_head;           /* lm_head, or the embedding when tied */
    tokenizer *tok;
    char *chat_template;      /* NUL-terminated copy, or NULL */
};

static const tokenizer *model_tokenizer(const lucie_model *m) { return m->tok; }

static int map_file(const char *path, int load_mode, file_view *view, char *err, size_t err_size) {
#ifdef _WIN32
    HANDLE file, mapping;
    LARGE_INTEGER size;
    memset(view, 0, sizeof *view);
    file = CreateFileA(path, GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
    if (file == INVALID_HANDLE_VALUE) {
        set_error(err, err_size, "cannot open '%s'", path);
        return LUCIE_EIO;
    }
    if (!GetFileSizeEx(file, &size) || size.QuadPart <= 0 || (unsigned long long)size.QuadPart > SIZE_MAX) {
        CloseHandle(file);
        set_error(err, err_size, "'%s': empty or unreadable file", path);
        return LUCIE_EFORMAT;
    }
    view->size = (size_t)size.QuadPart;
    if (load_mode == LUCIE_LOAD_READ) {
        unsigned char *buf = (unsigned char *)private_alloc(view->size, &view->alloc_size);
        size_t done = 0;
        if (!buf) {
            CloseHandle(file);
            set_error(err, err_size, "out of memory reading '%s'", path);
            return LUCIE_ENOMEM;
        }
        while (done < view->size) {
            DWORD want = (DWORD)((view->size - done) > (1u << 30) ? (1u << 30) : (view->size - done)), got = 0;
            if (!ReadFile(file, buf + done, want, &got, NULL) || got == 0) {
                private_free(buf, view->alloc_size);
                CloseHandle(file);
                set_error(err, err_size, "read error on '%s'", path);
                return LUCIE_EIO;
            }
            done += got;
        }
        CloseHandle(file);
        view->data = buf;
        return LUCIE_OK;
    }
    mapping = CreateFileMappingA(file, NULL, PAGE_READONLY, 0, 0, NULL);
    CloseHandle(file);
    if (!mapping) {
        set_error(err, err_size, "cannot map '%s'", path);
        return LUCIE_EIO;
    }
    view->data = (const unsigned char *)MapViewOfFile(mapping, FILE_MAP_READ, 0, 0, 0);
    CloseHandle(mapping);
    if (!view->data) {
        set_error(err, err_size, "cannot map '%s'", path);
        return LUCIE_EIO;
    }
    view->is_mapped = 1;
    return LUCIE_OK;
#else
    struct stat st;
    int fd;
    memset(view, 0, sizeof *view);
    fd = open(path, O_RDONLY);
    if (fd < 0) {
        set_error(err, err_size, "cannot open '%s': %s", path, strerror(errno));
        return LUCIE_EIO;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
        (unsigned long long)st.st_size > (unsigned long long)SIZE_MAX) {
        close(fd);
        set_error(err, err_size, "'%s' is not a regular, non-empty file", path);
        return LUCIE_EFORMAT;
    }
    view->size = (size_t)st.st_size;
    if (load_mode == LUCIE_LOAD_READ) {
        unsigned char *buf = (unsigned char *)private_alloc(view->size, &view->alloc_size);
        size_t done = 0;
        if (!buf) {
            close(fd);
            set_error(err, err_size, "out of memory reading '%s'", path);
            return LUCIE_ENOMEM;
        }
        while (done < view->size) {
            size_t want = view->size - done;
            ssize_t got = read(fd, buf + done, want > ((size_t)1 << 30) ? ((size_t)1 << 30) : want);
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) {
                private_free(buf, view->alloc_size);
                close(fd);
                set_error(err, err_size, "read error on '%s'", path);
                return LUCIE_EIO;
            }
            done += (size_t)got;
        }
        close(fd);
        view->data = buf;
        return LUCIE_OK;
    }
    view->data = (const unsigned char *)mmap(NULL, view->size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (view->data == (const unsigned char *)MAP_FAILED) {
        view->data = NULL;
        set_error(err, err_size, "cannot map '%s': %s", path, strerror(errno));
        return LUCIE_EIO;
    }
    view->is_mapped = 1;
    if (load_mode == LUCIE_LOAD_ADVISE) {
        /* Hints only: their failure changes speed, never results. */
#if defined(MADV_HUGEPAGE)
        madvise((void *)view->data, view->size, MADV_HUGEPAGE);
#endif
        posix_madvise((void *)view->data, view->size, POSIX_MADV_WILLNEED);
    }
    return LUCIE_OK;
#endif
}

static void unmap_file(file_view *view) {
    if (!view->data) return;
    if (!view->is_mapped) {
        private_free((void *)view->data, view->alloc_size);
    } else {
#ifdef _WIN32
        UnmapViewOfFile(view->data);
#else
        munmap((void *)view->data, view->size);
#endif
    }
    view->data = NULL;
}

/* The sanity limits below are far above any Llama but low enough that every
 * product of two of them fits in 64 bits; the real protection is the
 * overflow-checked arithmetic and the comparison with the file's size. */
#define MAX_DIM (1 << 20)
#define MAX_LAYERS 4096
#define MAX_VOCAB (1 << 24)
#define MAX_CONTEXT (1 << 24)

static int parse_header(const unsigned char *h, size_t file_size, lucie_config *c, uint32_t *n_entries,
                        char *err, size_t err_size) {
    uint32_t version, header_size, i;
    uint64_t declared_size;
    if (file_size < HEADER_SIZE || memcmp(h, FILE_MAGIC, 8) != 0) {
        set_error(err, err_size, "not a lucie model file (bad magic)");
        return LUCIE_EFORMAT;
    }
    version = read_u32(h + 8);
    header_size = read_u32(h + 12);
    declared_size = read_u64(h + 16);
    if (version != FILE_VERSION) {
        set_error(err, err_size, "unsupported file format version %u (this build reads %d)", version, FILE_VERSION);
        return LUCIE_EFORMAT;
    }
    if (header_size != HEADER_SIZE) {
        set_error(err, err_size, "bad header size %u", header_size);
        return LUCIE_EFORMAT;
    }
    if (declared_size != file_size) {
        set_error(err, err_size, "file is %llu bytes but its header says %llu (truncated or corrupt)",
                  (unsigned long long)file_size, (unsigned long long)declared_size);
        return LUCIE_EFORMAT;
    }
    *n_entries = read_u32(h + 24);
    memset(c, 0, sizeof *c);
    c->weight_type = (int)read_u32(h + 28);
    {
        const uint32_t dims[8] = {read_u32(h + 32), read_u32(h + 36), read_u32(h + 40), read_u32(h + 44),
                                  read_u32(h + 48), read_u32(h + 52), read_u32(h + 56), read_u32(h + 60)};
        const char *names[8] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "vocab_size",
                                "max_seq_len"};
        const uint32_t limits[8] = {MAX_DIM, MAX_DIM, MAX_LAYERS, MAX_DIM, MAX_DIM, MAX_DIM, MAX_VOCAB, MAX_CONTEXT};
        for (i = 0; i < 8; i++) {
            if (dims[i] == 0 || dims[i] > limits[i]) {
                set_error(err, err_size, "header: %s = %u is out of range", names[i], dims[i]);
                return LUCIE_EFORMAT;
            }
        }
        c->dim = (int)dims[0];
        c->hidden_dim = (int)dims[1];
        c->n_layers = (int)dims[2];
        c->n_heads = (int)dims[3];
        c->n_kv_heads = (int)dims[4];
        c->head_dim = (int)dims[5];
        c->vocab_size = (int)dims[6];
        c->max_seq_len = (int)dims[7];
    }
    if (c->n_heads % c->n_kv_heads != 0) {
        set_error(err, err_size, "header: n_kv_heads (%d) does not divide n_heads (%d)", c->n_kv_heads, c->n_heads);
        return LUCIE_EFORMAT;
    }
    if (c->head_dim % 2 != 0 || (uint64_t)c->n_heads * (uint64_t)c->head_dim > MAX_DIM) {
        set_error(err, err_size, "header: head_dim %d with %d heads is not usable", c->head_dim, c->n_heads);
        return LUCIE_EFORMAT;
    }
    c->rope_theta = read_f64(h + 64);
    c->rms_norm_eps = read_f32(h + 72);
    if (!(c->rope_theta > 1.0 && c->rope_theta < 1e300) || !(c->rms_norm_eps > 0.0f && c->rms_norm_eps < 1.0f)) {
        set_error(err, err_size, "header: rope_theta or rms_norm_eps out of range");
        return LUCIE_EFORMAT;
    }
    c->tie_word_embeddings = read_u32(h + 76) != 0;
    c->bos_id = read_i32(h + 80);
    c->n_eos = (int)read_u32(h + 84);
    if (c->n_eos < 0 || c->n_eos > LUCIE_MAX_EOS) {
        set_error(err, err_size, "header: %d eos ids (at most %d)", c->n_eos, LUCIE_MAX_EOS);
        return LUCIE_EFORMAT;
    }
    for (i = 0; i < (uint32_t)c->n_eos; i++) {
        c->eos_ids[i] = read_i32(h + 88 + 4 * i);
        if (c->eos_ids[i] < 0 || c->eos_ids[i] >= c->vocab_size) {
            set_error(err, err_size, "header: eos id %d outside the vocabulary", c->eos_ids[i]);
            return LUCIE_EFORMAT;
        }
    }
    c->pad_id = read_i32(h + 120);
    if (c->bos_id < -1 || c->bos_id >= c->vocab_size || c->pad_id < -1 || c->pad_id >= c->vocab_size) {
        set_error(err, err_size, "header: bos/pad id outside the vocabulary");
        return LUCIE_EFORMAT;
    }
    c->temperature = read_f32(h + 124);
    c->top_p = read_f32(h + 128);
    c->top_k = read_i32(h + 132);
    c->repetition_penalty = read_f32(h + 136);
    c->do_sample = read_u32(h + 140) != 0;
    c->group_size = (int)read_u32(h + 144);
    if (c->group_size != 0 && c->group_size != 32) {
        set_error(err, err_size, "header: quantization group size %d is not supported (only 32)", c->group_size);
        return LUCIE_EFORMAT;
    }
    if (!(c->temperature >= 0.0f && c->temperature <= 100.0f) || !(c->top_p > 0.0f && c->top_p <= 1.0f) ||
        c->top_k < 0 || !(c->repetition_penalty > 0.0f && c->repetition_penalty <= 100.0f)) {
        set_error(err, err_size, "header: generation defaults out of range");
        return LUCIE_EFORMAT;
    }
    if (*n_entries == 0 || *n_entries > 100000 ||
        (uint64_t)HEADER_SIZE + (uint64_t)*n_entries * ENTRY_SIZE > (uint64_t)file_size) {
        set_error(err, err_size, "header: entry table (%u entries) does not fit in the file", *n_entries);
        return LUCIE_EFORMAT;
    }
    return LUCIE_OK;
}

/* ========================================================================
 * 3. The tokenizer
 * ======================================================================== */

#include "tokenizer.inc.c"

/* ========================================================================
 * 4. Math kernels
 *
 * Almost all the time goes into multiplying a weight matrix W [rows, cols]
 * by a batch of n activation vectors. Each weight type provides the same small
 * table of kernels, so the forward pass is written once:
 *   input_bytes/prepare: quantize the activations once per input (int8 types)
 *                        so q, k and v (or gate and up) reuse them;
 *   matmul:   out[t][r] = sum_c W[r][c] * x[t][c], f32 accumulation;
 *   embed_row: one row of W as f32 (the embedding lookup).
 * Threads split the output rows; every output element is computed by the
 * same code whatever the thread count, so results do not depend on it.
 * ======================================================================== */

typedef struct {
    int n_threads;
} kernel_ctx;

typedef struct {
    size_t (*input_bytes)(int n, int cols, int group_size);
    void (*prepare)(const kernel_ctx *c, const float *x, int n, int cols, int group_size, void *xq);
    void (*matmul)(const kernel_ctx *c, float *out, const float *x, const void *xq, const void *w, int n, int rows,
                   int cols, int group_size);
    void (*embed_row)(float *out, const void *w, int row, int cols, int group_size);
} weight_kernels;

#include "float_kernels.inc.c"

#include "quant.inc.c"

static const weight_kernels *kernels_for(int dtype) {
    switch (dtype) {
    case LUCIE_DT_F32: return &f32_kernels;
    case LUCIE_DT_BF16: return &bf16_kernels;
    case LUCIE_DT_Q8: return &q8_kernels;
    case LUCIE_DT_Q4: return &q4_kernels;
    default: return NULL;
    }
}

/* ---- loading, now that the tokenizer and the tensor sizes are known ---- */

static int read_entries(const file_view *f, uint32_t n_entries, const lucie_config *c, file_entry **out, char *err,
                        size_t err_size) {
    file_entry *e = (file_entry *)calloc(n_entries, sizeof *e);
    uint64_t table_end = HEADER_SIZE + (uint64_t)n_entries * ENTRY_SIZE;
    uint32_t i, j;
    if (!e) {
        set_error(err, err_size, "out of memory");
        return LUCIE_ENOMEM;
    }
    for (i = 0; i < n_entries; i++) {
        const unsigned char *p = f->data + HEADER_SIZE + (size_t)i * ENTRY_SIZE;
        size_t expect;
        if (memchr(p, 0, ENTRY_NAME_SIZE) == NULL) {
            set_error(err, err_size, "entry %u: name is not NUL-terminated", i);
            goto fail;
        }
        memcpy(e[i].name, p, ENTRY_NAME_SIZE);
        e[i].dtype = (int)read_u32(p + 96);
        e[i].rows = read_u32(p + 100);
        e[i].cols = read_u32(p + 104);
        e[i].offset = read_u64(p + 112);
        e[i].size = read_u64(p + 120);
        if (e[i].offset % SECTION_ALIGN != 0 || e[i].offset < table_end || e[i].offset > f->size ||
            e[i].size > f->size - e[i].offset) {
            set_error(err, err_size, "entry '%s': range %llu+%llu is misaligned or outside the file", e[i].name,
                      (unsigned long long)e[i].offset, (unsigned long long)e[i].size);
            goto fail;
        }
        if (e[i].dtype == LUCIE_DT_BYTES) {
            if (e[i].rows != 0 || e[i].cols != 0) {
                set_error(err, err_size, "entry '%s': byte section with a shape", e[i].name);
                goto fail;
            }
            continue;
        }
        if (!kernels_for(e[i].dtype) || e[i].rows == 0 || e[i].cols == 0 || e[i].rows > MAX_VOCAB ||
            e[i].cols > MAX_DIM ||
            !tensor_bytes(e[i].dtype, e[i].rows, e[i].cols, c->group_size, &expect) || expect != e[i].size) {
            set_error(err, err_size, "entry '%s': dtype %d, shape [%u, %u] and size %llu do not agree", e[i].name,
                      e[i].dtype, e[i].rows, e[i].cols, (unsigned long long)e[i].size);
            goto fail;
        }
    }
    /* No two sections may share bytes (quadratic, but n is a few hundred). */
    for (i = 0; i < n_entries; i++)
        for (j = i + 1; j < n_entries; j++) {
            if (strcmp(e[i].name, e[j].name) == 0) {
                set_error(err, err_size, "entry '%s' appears twice", e[i].name);
                goto fail;
            }
            if (e[i].size && e[j].size && e[i].offset < e[j].offset + e[j].size &&
                e[j].offset < e[i].offset + e[i].size) {
                set_error(err, err_size, "entries '%s' and '%s' overlap", e[i].name, e[j].name);
                goto fail;
            }
        }
    *out = e;
    return LUCIE_OK;
fail:
    free(e);
    return LUCIE_EFORMAT;
}

static const file_entry *find_entry(const file_entry *e, uint32_t n, const char *name) {
    uint32_t i;
    for (i = 0; i < n; i++)
        if (strcmp(e[i].name, name) == 0) return &e[i];
    return NULL;
}

/* Binds a named tensor of the expected shape; norms must be f32. */
static int bind_tensor(const lucie_model *m, const file_entry *e, uint32_t n, const char *name, int rows, int cols,
                       int want_f32, tensor *t, char *err, size_t err_size) {
    const file_entry *x = find_entry(e, n, name);
    if (!x) {
        set_error(err, err_size, "missing tensor '%s'", name);
        return LUCIE_EFORMAT;
    }
    if (x->dtype == LUCIE_DT_BYTES || x->rows != (uint32_t)rows || x->cols != (uint32_t)cols) {
        set_error(err, err_size, "tensor '%s' has shape [%u, %u], expected [%d, %d]", name, x->rows, x->cols, rows,
                  cols);
        return LUCIE_EFORMAT;
    }
    if (want_f32 && x->dtype != LUCIE_DT_F32) {
        set_error(err, err_size, "tensor '%s' must be f32", name);
        return LUCIE_EFORMAT;
    }
    t->data = m->file.data + x->offset;
    t->dtype = x->dtype;
    t->rows = rows;
    t->cols = cols;
    return LUCIE_OK;
}

static int bind_weights(lucie_model *m, const file_entry *e, uint32_t n, char *err, size_t err_size) {
    const lucie_config *c = &m->config;
    int q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim, l, rc;
    char name[ENTRY_NAME_SIZE];
    tensor t;
    m->layers = (layer_weights *)calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) {
        set_error(err, err_size, "out of memory");
        return LUCIE_ENOMEM;
    }
#define BIND(field, suffix, rows, cols, want_f32)                                                                  \
    do {                                                                                                           \
        snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix);                                              \
        if ((rc = bind_tensor(m, e, n, name, rows, cols, want_f32, &field, err, err_size)) != LUCIE_OK) return rc; \
    } while (0)
    for (l = 0; l < c->n_layers; l++) {
        layer_weights *w = &m->layers[l];
        BIND(t, "input_layernorm.weight", 1, c->dim, 1);
        w->attn_norm = (const float *)t.data;
        BIND(t, "post_attention_layernorm.weight", 1, c->dim, 1);
        w->ffn_norm = (const float *)t.data;
        BIND(w->wq, "self_attn.q_proj.weight", q_dim, c->dim, 0);
        BIND(w->wk, "self_attn.k_proj.weight", kv_dim, c->dim, 0);
        BIND(w->wv, "self_attn.v_proj.weight", kv_dim, c->dim, 0);
        BIND(w->wo, "self_attn.o_proj.weight", c->dim, q_dim, 0);
        BIND(w->w_gate, "mlp.gate_proj.weight", c->hidden_dim, c->dim, 0);
        BIND(w->w_up, "mlp.up_proj.weight", c->hidden_dim, c->dim, 0);
        BIND(w->w_down, "mlp.down_proj.weight", c->dim, c->hidden_dim, 0);
    }
#undef BIND
    if ((rc = bind_tensor(m, e, n, "model.embed_tokens.weight", c->vocab_size, c->dim, 0, &m->embed, err,
                          err_size)) != LUCIE_OK)
        return rc;
    if ((rc = bind_tensor(m, e, n, "model.norm.weight", 1, c->dim, 1, &t, err, err_size)) != LUCIE_OK) return rc;
    m->final_norm = (const float *)t.data;
    if (c->tie_word_embeddings) {
        if (find_entry(e, n, "lm_head.weight")) {
            set_error(err, err_size, "tied embeddings but the file has an lm_head.weight");
            return LUCIE_EFORMAT;
        }
        m->lm_head = m->embed;
    } else if ((rc = bind_tensor(m, e, n, "lm_head.weight", c->vocab_size, c->dim, 0, &m->lm_head, err,
                                 err_size)) != LUCIE_OK) {
        return rc;
    }
    return LUCIE_OK;
}

int lucie_open(const char *path, const lucie_open_options *opts, lucie_model **out, char *err, size_t err_size) {
    lucie_model *m;
    file_entry *entries = NULL;
    const file_entry *section;
    uint32_t n_entries;
    int rc;
    if (out) *out = NULL;
    if (!path || !out) {
        set_error(err, err_size, "lucie_open: NULL argument");
        return LUCIE_EINVAL;
    }
    if (!host_is_little_endian()) {
        set_error(err, err_size, "big-endian hosts are not supported (the model file is little-endian)");
        return LUCIE_EFORMAT;
    }
    m = (lucie_model *)calloc(1, sizeof *m);
    if (!m) {
        set_error(err, err_size, "out of memory");
        return LUCIE_ENOMEM;
    }
    if (opts && (opts->load_mode < LUCIE_LOAD_MMAP || opts->load_mode > LUCIE_LOAD_READ)) {
        set_error(err, err_size, "unknown load mode %d", opts->load_mode);
        free(m);
        return LUCIE_EINVAL;
    }
    rc = map_file(path, opts ? opts->load_mode : LUCIE_LOAD_MMAP, &m->file, err, err_size);
    if (rc == LUCIE_OK) rc = parse_header(m->file.data, m->file.size, &m->config, &n_entries, err, err_size);
    if (rc == LUCIE_OK) rc = read_entries(&m->file, n_entries, &m->config, &entries, err, err_size);
    if (rc == LUCIE_OK) rc = bind_weights(m, entries, n_entries, err, err_size);
    if (rc == LUCIE_OK) {
        section = find_entry(entries, n_entries, "tokenizer");
        if (!section || section->dtype != LUCIE_DT_BYTES) {
            set_error(err, err_size, "the file has no tokenizer section");
            rc = LUCIE_EFORMAT;
        } else {
            rc = tokenizer_load(&m->tok, m->file.data + section->offset, (size_t)section->size, err, err_size);
        }
    }
    if (rc == LUCIE_OK && (section = find_entry(entries, n_entries, "chat_template")) != NULL &&
        section->dtype == LUCIE_DT_BYTES) {
        m->chat_template = (char *)malloc((size_t)section->size + 1);
        if (!m->chat_template) {
            set_error(err, err_size, "out of memory");
            rc = LUCIE_ENOMEM;
        } else {
            memcpy(m->chat_template, m->file.data + section->offset, (size_t)section->size);
            m->chat_template[section->size] = '\0';
        }
    }
    free(entries);
    if (rc != LUCIE_OK) {
        lucie_close(m);
        return rc;
    }
    *out = m;
    return LUCIE_OK;
}

void lucie_close(lucie_model *m) {
    if (!m) return;
    if (m->tok) tokenizer_free(m->tok);
    free(m->chat_template);
    free(m->layers);
    unmap_file(&m->file);
    free(m);
}

const lucie_config *lucie_model_config(const lucie_model *m) { return m ? &m->config : NULL; }
const char *lucie_chat_template(const lucie_model *m) { return m ? m->chat_template : NULL; }

/* ========================================================================
 * 5. The transformer forward pass
 *
 * Mirrors transformers' LlamaForCausalLM (modeling_llama.py) step by step:
 *   h = embed_tokens(ids)
 *   for each layer:  h = h + o_proj(attention(rope(q_proj(n)), rope(k_proj(n)), v_proj(n)))
 *                        where n = input_layernorm(h)
 *                    h = h + down_proj(silu(gate_proj(m)) * up_proj(m)),  m = post_attention_layernorm(h)
 *   logits = lm_head(norm(h))
 * A batch of tokens goes through each layer together so that every weight
 * is read once per batch (prefill); decoding is the batch of one. Keys and
 * values of past positions live in the session's KV cache.
 * ======================================================================== */

#define MAX_BATCH 64 /* tokens per forward chunk: bounds the activation buffers */

typedef struct {
    float temperature, top_p, min_p, repetition_penalty;
    int top_k, repetition_window;
    uint64_t rng;
    unsigned stamp; /* current mark in lucie_session.penalised */
} sampler;

typedef struct {
    float prob;
    int id;
} prob_index;

struct lucie_session {
    const lucie_model *model;
    int context, pos, n_threads;
    /* activations for a batch of up to MAX_BATCH tokens */
    float *x, *xb, *q, *k, *v, *att_out, *hb, *hb2, *scores, *logits;
    void *xq;          /* prepared (quantized) activations */
    float *key_cache;  /* [n_layers][context][kv_dim] */
    float *value_cache;
    float *rope_cos, *rope_sin; /* [context][head_dim / 2] */
    int *history;      /* every token in the cache, for the repetition penalty */
    const void *prepared_by; /* kernels whose prepare() last filled xq */
    int prepared_cols;
    prob_index *candidates;
    unsigned *penalised; /* [vocab]: stamp of the last penalty call that saw the token */
    int have_logits;   /* logits holds the prediction after the last cached token */
    float *sample_logits; /* lucie_sample's working copy (penalised, never the caller's) */
    sampler samp;
    char error[256];
};

/* HF LlamaRMSNorm: x / sqrt(mean(x^2) + eps), in f32, then times the weight. */
static void rmsnorm(float *out, const float *x, const float *weight, int n, float eps) {
    double ss = 0.0;
    float scale;
    int i;
    for (i = 0; i < n; i++) ss += (double)x[i] * x[i];
    scale = 1.0f / sqrtf((float)(ss / n) + eps);
    for (i = 0; i < n; i++) out[i] = weight[i] * (x[i] * scale);
}

/* HF rotate_half layout: dimension i pairs with i + head_dim/2 (not i+1 as in
 * the original Meta checkpoints; HF permutes q/k weights at conversion). */
static void apply_rope(float *vec, int n_heads, int head_dim, const float *cos_row, const float *sin_row) {
    int h, i, half = head_dim / 2;
    for (h = 0; h < n_heads; h++) {
        float *v = vec + (size_t)h * head_dim;
        for (i = 0; i < half; i++) {
            float a = v[i], b = v[i + half];
            v[i] = a * cos_row[i] - b * sin_row[i];
            v[i + half] = b * cos_row[i] + a * sin_row[i];
        }
    }
}

/* inv_freq and angles in f32 like LlamaRotaryEmbedding, so long positions
 * round the same way as the reference. */
static void rope_tables(float *cos_t, float *sin_t, int context, int head_dim, double theta) {
    int half = head_dim / 2, p, i;
    for (i = 0; i < half; i++) {
        float inv_freq = (float)(1.0 / pow(theta, (double)(2 * i) / (double)head_dim));
        for (p = 0; p < context; p++) {
            float angle = (float)p * inv_freq;
            cos_t[(size_t)p * half + i] = (float)cos((double)angle);
            sin_t[(size_t)p * half + i] = (float)sin((double)angle);
        }
    }
}

static void softmax(float *x, int n) {
    float max = x[0], sum = 0.0f;
    int i;
    for (i = 1; i < n; i++)
        if (x[i] > max) max = x[i];
    for (i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    for (i = 0; i < n; i++) x[i] /= sum;
}

static float silu(float x) { return x / (1.0f + expf(-x)); }

static int thread_index(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* W x for a batch. Quantized weights first need the input quantized
 * ("prepared"); q, k and v (and gate and up) multiply the same input, so
 * same_input lets them reuse it when the previous call prepared it the same
 * way. */
static void linear(lucie_session *s, float *out, const float *x, const tensor *w, int n, int same_input) {
    const weight_kernels *k = kernels_for(w->dtype);
    int group_size = s->model->config.group_size;
    kernel_ctx ctx;
    ctx.n_threads = s->n_threads;
    if (k->prepare && !(same_input && s->prepared_by == k && s->prepared_cols == w->cols)) {
        k->prepare(&ctx, x, n, w->cols, group_size, s->xq);
        s->prepared_by = k;
        s->prepared_cols = w->cols;
    }
    k->matmul(&ctx, out, x, s->xq, w->data, n, w->rows, w->cols, group_size);
}

/* Causal grouped-query attention for n new tokens at positions pos..pos+n-1:
 * query head h reads key/value head h / (n_heads / n_kv_heads), as HF's
 * repeat_kv does. */
static void attention(lucie_session *s, int layer, int n) {
    const lucie_config *c = &s->model->config;
    int kv_dim = c->n_kv_heads * c->head_dim, group = c->n_heads / c->n_kv_heads, hd = c->head_dim;
    float scale = 1.0f / sqrtf((float)hd);
    const float *kc = s->key_cache + (size_t)layer * s->context * kv_dim;
    const float *vc = s->value_cache + (size_t)layer * s->context * kv_dim;
    int work, total = n * c->n_heads;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) num_threads(s->n_threads)
#endif
    for (work = 0; work < total; work++) {
        int t = work / c->n_heads, h = work % c->n_heads, len = s->pos + t + 1, p, i;
        const float *q = s->q + (size_t)t * c->n_heads * hd + (size_t)h * hd;
        float *att = s->scores + (size_t)thread_index() * s->context;
        float *out = s->att_out + (size_t)t * c->n_heads * hd + (size_t)h * hd;
        size_t kv_off = (size_t)(h / group) * hd;
        for (p = 0; p < len; p++) att[p] = dot_f32(q, kc + (size_t)p * kv_dim + kv_off, hd) * scale;
        softmax(att, len);
        for (i = 0; i < hd; i++) out[i] = 0.0f;
        for (p = 0; p < len; p++) {
            const float *v = vc + (size_t)p * kv_dim + kv_off;
            float a = att[p];
            for (i = 0; i < hd; i++) out[i] += a * v[i];
        }
    }
}

/* Runs n (<= MAX_BATCH) tokens through the model. logits receives vocab_size
 * floats per token when all_logits, else for the last token only. */
static void forward_batch(lucie_session *s, const int *tokens, int n, float *logits, int all_logits) {
    const lucie_model *m = s->model;
    const lucie_config *c = &m->config;
    int dim = c->dim, hd = c->head_dim, q_dim = c->n_heads * hd, kv_dim = c->n_kv_heads * hd;
    int hidden = c->hidden_dim, half = hd / 2, l, t, i;
    const weight_kernels *ek = kernels_for(m->embed.dtype);
    for (t = 0; t < n; t++) ek->embed_row(s->x + (size_t)t * dim, m->embed.data, tokens[t], dim, c->group_size);
    for (l = 0; l < c->n_layers; l++) {
        const layer_weights *w = &m->layers[l];
        float *kc = s->key_cache + (size_t)l * s->context * kv_dim;
        float *vc = s->value_cache + (size_t)l * s->context * kv_dim;
        /* attention block */
        for (t = 0; t < n; t++) rmsnorm(s->xb + (size_t)t * dim, s->x + (size_t)t * dim, w->attn_norm, dim, c->rms_norm_eps);
        linear(s, s->q, s->xb, &w->wq, n, 0);
        linear(s, s->k, s->xb, &w->wk, n, 1);
        linear(s, s->v, s->xb, &w->wv, n, 1);
        for (t = 0; t < n; t++) {
            int p = s->pos + t;
            const float *cr = s->rope_cos + (size_t)p * half, *sr = s->rope_sin + (size_t)p * half;
            apply_rope(s->q + (size_t)t * q_dim, c->n_heads, hd, cr, sr);
            apply_rope(s->k + (size_t)t * kv_dim, c->n_kv_heads, hd, cr, sr);
            memcpy(kc + (size_t)p * kv_dim, s->k + (size_t)t * kv_dim, (size_t)kv_dim * sizeof(float));
            memcpy(vc + (size_t)p * kv_dim, s->v + (size_t)t * kv_dim, (size_t)kv_dim * sizeof(float));
        }
        attention(s, l, n);
        linear(s, s->xb, s->att_out, &w->wo, n, 0);
        for (i = 0; i < n * dim; i++) s->x[i] += s->xb[i];
        /* MLP block */
        for (t = 0; t < n; t++) rmsnorm(s->xb + (size_t)t * dim, s->x + (size_t)t * dim, w->ffn_norm, dim, c->rms_norm_eps);
        linear(s, s->hb, s->xb, &w->w_gate, n, 0);
        linear(s, s->hb2, s->xb, &w->w_up, n, 1);
        for (i = 0; i < n * hidden; i++) s->hb[i] = silu(s->hb[i]) * s->hb2[i];
        linear(s, s->xb, s->hb, &w->w_down, n, 0);
        for (i = 0; i < n * dim; i++) s->x[i] += s->xb[i];
    }
    s->pos += n;
    if (!logits) return;
    if (all_logits) {
        for (t = 0; t < n; t++) rmsnorm(s->xb + (size_t)t * dim, s->x + (size_t)t * dim, m->final_norm, dim, c->rms_norm_eps);
        linear(s, logits, s->xb, &m->lm_head, n, 0);
    } else {
        rmsnorm(s->xb, s->x + (size_t)(n - 1) * dim, m->final_norm, dim, c->rms_norm_eps);
        linear(s, logits, s->xb, &m->lm_head, 1, 0);
    }
}

int lucie_eval(lucie_session *s, const int *tokens, int n, float *logits, int flags) {
    const lucie_config *c;
    int done = 0, i, all = (flags & LUCIE_EVAL_ALL_LOGITS) != 0;
    if (!s || (!tokens && n > 0) || n < 0) return LUCIE_EINVAL;
    c = &s->model->config;
    if (n == 0) {
        snprintf(s->error, sizeof s->error, "no tokens to evaluate");
        return LUCIE_EINVAL;
    }
    for (i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size) {
            snprintf(s->error, sizeof s->error, "token id %d is outside the vocabulary (0..%d)", tokens[i],
                     c->vocab_size - 1);
            return LUCIE_EINVAL;
        }
    if (n > s->context - s->pos) {
        snprintf(s->error, sizeof s->error, "%d tokens do not fit: %d of the context's %d are used", n, s->pos,
                 s->context);
        return LUCIE_ECONTEXT;
    }
    while (done < n) {
        int chunk = n - done < MAX_BATCH ? n - done : MAX_BATCH;
        float *out = NULL;
        if (logits) out = all ? logits + (size_t)done * c->vocab_size : (done + chunk == n ? logits : NULL);
        forward_batch(s, tokens + done, chunk, out, all);
        /* The session keeps its own copy of the last prediction: it is what
         * lucie_generate_tokens continues from when given no input. */
        if (out && done + chunk == n) {
            const float *last = all ? out + (size_t)(chunk - 1) * c->vocab_size : out;
            if (last != s->logits) memcpy(s->logits, last, (size_t)c->vocab_size * sizeof(float));
        }
        for (i = 0; i < chunk; i++) s->history[s->pos - chunk + i] = tokens[done + i];
        done += chunk;
    }
    s->have_logits = logits != NULL;
    return LUCIE_OK;
}

/* ---- sessions ---- */

void lucie_session_defaults(const lucie_model *m, lucie_session_options *o) {
    memset(o, 0, sizeof *o);
    o->temperature = 1.0f;
    o->top_p = 1.0f;
    o->repetition_penalty = 1.0f;
    o->seed = 0;
    if (m) {
        const lucie_config *c = &m->config;
        o->temperature = c->do_sample ? c->temperature : 0.0f;
        o->top_p = c->top_p;
        o->top_k = c->top_k;
        o->repetition_penalty = c->repetition_penalty;
    }
}

void lucie_session_free(lucie_session *s) {
    if (!s) return;
    aligned_free64(s->x);
    aligned_free64(s->xb);
    aligned_free64(s->q);
    aligned_free64(s->k);
    aligned_free64(s->v);
    aligned_free64(s->att_out);
    aligned_free64(s->hb);
    aligned_free64(s->hb2);
    aligned_free64(s->scores);
    aligned_free64(s->logits);
    aligned_free64(s->sample_logits);
    aligned_free64(s->xq);
    aligned_free64(s->key_cache);
    aligned_free64(s->value_cache);
    aligned_free64(s->rope_cos);
    aligned_free64(s->rope_sin);
    free(s->history);
    free(s->candidates);
    free(s->penalised);
    free(s);
}

static int valid_sampler_options(const lucie_session_options *o, char *err, size_t err_size) {
    if (!(o->temperature >= 0.0f && o->temperature <= 100.0f)) {
        set_error(err, err_size, "temperature must be in [0, 100]");
        return 0;
    }
    if (!(o->top_p > 0.0f && o->top_p <= 1.0f)) {
        set_error(err, err_size, "top_p must be in (0, 1]");
        return 0;
    }
    if (!(o->min_p >= 0.0f && o->min_p <= 1.0f)) {
        set_error(err, err_size, "min_p must be in [0, 1]");
        return 0;
    }
    if (!(o->repetition_penalty > 0.0f && o->repetition_penalty <= 100.0f)) {
        set_error(err, err_size, "repetition penalty must be in (0, 100]");
        return 0;
    }
    if (o->top_k < 0 || o->repetition_window < 0) {
        set_error(err, err_size, "top_k and repetition window must be >= 0");
        return 0;
    }
    return 1;
}

static void seed_sampler(sampler *sp, const lucie_session_options *o) {
    sp->temperature = o->temperature;
    sp->top_k = o->top_k;
    sp->top_p = o->top_p;
    sp->min_p = o->min_p;
    sp->repetition_penalty = o->repetition_penalty;
    sp->repetition_window = o->repetition_window;
    sp->rng = o->seed ^ 0x9E3779B97F4A7C15ull;
    if (sp->rng == 0) sp->rng = 1;
}

int lucie_session_new(const lucie_model *m, const lucie_session_options *opts, lucie_session **out, char *err,
                      size_t err_size) {
    lucie_session_options defaults;
    lucie_session *s;
    const lucie_config *c;
    size_t kv_elems, xq_bytes = 0;
    int context, q_dim, kv_dim, n_threads, widest, dt;
    if (out) *out = NULL;
    if (!m || !out) {
        set_error(err, err_size, "lucie_session_new: NULL argument");
        return LUCIE_EINVAL;
    }
    c = &m->config;
    if (!opts) {
        lucie_session_defaults(m, &defaults);
        opts = &defaults;
    }
    if (!valid_sampler_options(opts, err, err_size)) return LUCIE_EINVAL;
    context = opts->context;
    if (context < 0 || context > c->max_seq_len) {
        set_error(err, err_size, "context %d is outside 1..%d (the model's maximum)", context, c->max_seq_len);
        return LUCIE_EINVAL;
    }
    if (context == 0) context = c->max_seq_len < 4096 ? c->max_seq_len : 4096;
#ifdef _OPENMP
    n_threads = opts->n_threads > 0 ? opts->n_threads : omp_get_num_procs();
#else
    n_threads = 1;
#endif
    if (opts->n_threads < 0 || n_threads > 1024) {
        set_error(err, err_size, "thread count %d is out of range", opts->n_threads);
        return LUCIE_EINVAL;
    }
    q_dim = c->n_heads * c->head_dim;
    kv_dim = c->n_kv_heads * c->head_dim;
    widest = c->dim;
    if (c->hidden_dim > widest) widest = c->hidden_dim;
    if (q_dim > widest) widest = q_dim;
    for (dt = LUCIE_DT_F32; dt <= LUCIE_DT_Q4; dt++) {
        size_t b = kernels_for(dt)->input_bytes(MAX_BATCH, widest, c->group_size);
        if (b > xq_bytes) xq_bytes = b;
    }
    if (!mul_size((size_t)c->n_layers * (size_t)context, (size_t)kv_dim, &kv_elems) ||
        kv_elems > SIZE_MAX / sizeof(float)) {
        set_error(err, err_size, "KV cache for context %d does not fit in memory", context);
        return LUCIE_ENOMEM;
    }
    s = (lucie_session *)calloc(1, sizeof *s);
    if (!s) {
        set_error(err, err_size, "out of memory");
        return LUCIE_ENOMEM;
    }
    s->model = m;
    s->context = context;
    s->n_threads = n_threads;
    s->x = (float *)aligned_alloc64((size_t)MAX_BATCH * c->dim * sizeof(float));
    s->xb = (float *)aligned_alloc64((size_t)MAX_BATCH * widest * sizeof(float));
    s->q = (float *)aligned_alloc64((size_t)MAX_BATCH * q_dim * sizeof(float));
    s->k = (float *)aligned_alloc64((size_t)MAX_BATCH * kv_dim * sizeof(float));
    s->v = (float *)aligned_alloc64((size_t)MAX_BATCH * kv_dim * sizeof(float));
    s->att_out = (float *)aligned_alloc64((size_t)MAX_BATCH * q_dim * sizeof(float));
    s->hb = (float *)aligned_alloc64((size_t)MAX_BATCH * c->hidden_dim * sizeof(float));
    s->hb2 = (float *)aligned_alloc64((size_t)MAX_BATCH * c->hidden_dim * sizeof(float));
    s->scores = (float *)aligned_alloc64((size_t)n_threads * context * sizeof(float));
    s->logits = (float *)aligned_alloc64((size_t)c->vocab_size * sizeof(float));
    s->sample_logits = (float *)aligned_alloc64((size_t)c->vocab_size * sizeof(float));
    s->xq = aligned_alloc64(xq_bytes ? xq_bytes : 64);
    s->key_cache = (float *)aligned_alloc64(kv_elems * sizeof(float));
    s->value_cache = (float *)aligned_alloc64(kv_elems * sizeof(float));
    s->rope_cos = (float *)aligned_alloc64((size_t)context * (c->head_dim / 2) * sizeof(float));
    s->rope_sin = (float *)aligned_alloc64((size_t)context * (c->head_dim / 2) * sizeof(float));
    s->history = (int *)calloc((size_t)context, sizeof(int));
    s->candidates = (prob_index *)calloc((size_t)c->vocab_size, sizeof(prob_index));
    s->penalised = (unsigned *)calloc((size_t)c->vocab_size, sizeof(unsigned));
    if (!s->x || !s->xb || !s->q || !s->k || !s->v || !s->att_out || !s->hb || !s->hb2 || !s->scores || !s->logits || !s->sample_logits ||
        !s->xq || !s->key_cache || !s->value_cache || !s->rope_cos || !s->rope_sin || !s->history || !s->candidates || !s->penalised) {
        lucie_session_free(s);
        set_error(err, err_size, "out of memory for a session with context %d", context);
        return LUCIE_ENOMEM;
    }
    rope_tables(s->rope_cos, s->rope_sin, context, c->head_dim, c->rope_theta);
    seed_sampler(&s->samp, opts);
    *out = s;
    return LUCIE_OK;
}

const char *lucie_session_error(const lucie_session *s) { return s ? s->error : "no session"; }
int lucie_session_position(const lucie_session *s) { return s ? s->pos : 0; }
int lucie_session_context(const lucie_session *s) { return s ? s->context : 0; }
int lucie_session_threads(const lucie_session *s) { return s ? s->n_threads : 0; }

int lucie_session_rewind(lucie_session *s, int pos) {
    if (!s || pos < 0 || pos > s->pos) return LUCIE_EINVAL;
    if (pos != s->pos) s->have_logits = 0;
    s->pos = pos; /* the cache beyond pos is simply overwritten later */
    return LUCIE_OK;
}

/* ========================================================================
 * 6. Sampling
 *
 * The order follows transformers' generate(): repetition penalty on the raw
 * logits, then temperature, top-k, top-p and min-p, then a draw. The full
 * vocabulary is never sorted: top-k is a quickselect, top-p sorts only the
 * tokens that can possibly be inside the nucleus, min-p is a filter.
 * ======================================================================== */

static uint32_t random_u32(uint64_t *state) { /* xorshift64* */
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}
static float random_f32(uint64_t *state) { return (random_u32(state) >> 8) / 16777216.0f; }

static int compare_prob_desc(const void *a, const void *b) {
    const prob_index *x = (const prob_index *)a, *y = (const prob_index *)b;
    if (x->prob != y->prob) return x->prob < y->prob ? 1 : -1;
    return x->id - y->id;
}

static int argmax(const float *v, int n) {
    int best = 0, i;
    for (i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

/* HF RepetitionPenaltyLogitsProcessor: each distinct previous token's logit is
 * divided by the penalty if positive, multiplied if negative. A per-token
 * stamp marks the tokens already penalised in this call: O(window). */
static void apply_repetition_penalty(lucie_session *s, float *logits) {
    sampler *sp = &s->samp;
    int start = 0, i;
    if (sp->repetition_penalty == 1.0f) return;
    if (sp->repetition_window > 0 && s->pos > sp->repetition_window) start = s->pos - sp->repetition_window;
    if (++sp->stamp == 0) { /* wrapped: forget every old stamp */
        memset(s->penalised, 0, (size_t)s->model->config.vocab_size * sizeof *s->penalised);
        sp->stamp = 1;
    }
    for (i = start; i < s->pos; i++) {
        int id = s->history[i];
        if (s->penalised[id] == sp->stamp) continue;
        s->penalised[id] = sp->stamp;
        logits[id] = logits[id] > 0 ? logits[id] / sp->repetition_penalty : logits[id] * sp->repetition_penalty;
    }
}

/* Moves the k largest candidates to the front (unordered): quickselect. */
static void select_top_k(prob_index *c, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        float pivot = c[(lo + hi) / 2].prob;
        int i = lo, j = hi;
        while (i <= j) {
            while (c[i].prob > pivot) i++;
            while (c[j].prob < pivot) j--;
            if (i <= j) {
                prob_index tmp = c[i];
                c[i] = c[j];
                c[j] = tmp;
                i++;
                j--;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
}

int lucie_sample(lucie_session *s, const float *logits_in) {
    const sampler *sp;
    int vocab, i, n;
    float *logits, max, sum, cumulative, r;
    prob_index *c;
    if (!s || !logits_in) return LUCIE_EINVAL;
    sp = &s->samp;
    vocab = s->model->config.vocab_size;
    logits = s->sample_logits;
    memcpy(logits, logits_in, (size_t)vocab * sizeof(float));
    apply_repetition_penalty(s, logits);
    if (sp->temperature == 0.0f) return argmax(logits, vocab);
    c = s->candidates;
    max = logits[argmax(logits, vocab)];
    sum = 0.0f;
    for (i = 0; i < vocab; i++) {
        c[i].id = i;
        c[i].prob = expf((logits[i] - max) / sp->temperature);
        sum += c[i].prob;
    }
    for (i = 0; i < vocab; i++) c[i].prob /= sum;
    n = vocab;
    if (sp->top_k > 0 && sp->top_k < n) {
        select_top_k(c, n, sp->top_k);
        n = sp->top_k;
        /* top-p and min-p see the distribution renormalised over the k survivors,
         * as transformers applies its softmax after TopKLogitsWarper. */
        sum = 0.0f;
        for (i = 0; i < n; i++) sum += c[i].prob;
        for (i = 0; i < n; i++) c[i].prob /= sum;
    }
    if (sp->top_p < 1.0f) {
        /* Tokens below (1 - top_p) / (n - 1) can never be needed to reach top_p. */
        float cutoff = (1.0f - sp->top_p) / (float)(n > 1 ? n - 1 : 1);
        int kept = 0;
        for (i = 0; i < n; i++)
            if (c[i].prob >= cutoff) c[kept++] = c[i];
        n = kept > 0 ? kept : 1;
    }
    if (sp->top_p < 1.0f) {
        /* Only the nucleus needs an order: sort the few survivors of the cutoff. */
        qsort(c, (size_t)n, sizeof *c, compare_prob_desc);
        cumulative = 0.0f;
        for (i = 0; i < n; i++) {
            cumulative += c[i].prob;
            if (cumulative >= sp->top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (sp->min_p > 0.0f) {
        float top = 0.0f, floor_p;
        int kept = 0;
        for (i = 0; i < n; i++)
            if (c[i].prob > top) top = c[i].prob;
        floor_p = sp->min_p * top;
        for (i = 0; i < n; i++)
            if (c[i].prob >= floor_p) c[kept++] = c[i];
        n = kept;
    }
    sum = 0.0f;
    for (i = 0; i < n; i++) sum += c[i].prob;
    r = random_f32(&s->samp.rng) * sum;
    cumulative = 0.0f;
    for (i = 0; i < n; i++) {
        cumulative += c[i].prob;
        if (r < cumulative) return c[i].id;
    }
    return c[n - 1].id;
}

/* ========================================================================
 * 7. Generation
 *
 * Prompt -> tokens (BOS added, as HF encode() does) -> one batched prefill ->
 * sample, stream, evaluate, one token at a time. Text is streamed through a
 * decoder that has already seen the prompt, so the prompt followed by the
 * streamed text is exactly the decoding of the whole sequence. Stop strings
 * are matched on that text; a piece that could be the start of a stop string
 * is held back until it is known not to be one.
 * ======================================================================== */

static int is_eos(const lucie_config *c, int token) {
    int i;
    for (i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] == token) return 1;
    return 0;
}

/* Output text waiting for stop-string decisions. */
typedef struct {
    char *text;
    size_t len, cap;
} text_buffer;

static int text_append(text_buffer *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *bigger;
        while (cap < b->len + n + 1) cap *= 2;
        bigger = (char *)realloc(b->text, cap);
        if (!bigger) return 0;
        b->text = bigger;
        b->cap = cap;
    }
    memcpy(b->text + b->len, s, n);
    b->len += n;
    b->text[b->len] = '\0';
    return 1;
}

/* Finds the first stop string in the pending text (*found = its offset), or
 * the length of the pending text that can safely be emitted because no stop
 * string can start inside it. */
static size_t stop_scan(const text_buffer *b, const lucie_generate_options *o, int *found) {
    size_t safe = b->len, i;
    int k;
    *found = 0;
    for (k = 0; k < o->n_stop; k++) {
        const char *stop = o->stop[k];
        size_t n = strlen(stop);
        if (n == 0) continue;
        for (i = 0; i < b->len; i++) {
            size_t m = b->len - i < n ? b->len - i : n;
            if (memcmp(b->text + i, stop, m) == 0) {
                if (m == n) {
                    if (!*found || i < safe) safe = i;
                    *found = 1;
                } else if (!*found && i < safe) {
                    safe = i;
                }
                break;
            }
        }
    }
    return safe;
}

int lucie_generate_tokens(lucie_session *s, const int *ids, int n_ids, const lucie_generate_options *o,
                          lucie_token_callback cb, void *user, lucie_stats *stats) {
    const lucie_config *c;
    lucie_stats st;
    lucie_detok_stream *stream = NULL;
    text_buffer pending = {NULL, 0, 0};
    int rc = LUCIE_OK, token, found = 0;
    double t0;
    memset(&st, 0, sizeof st);
    if (!s || !o || n_ids < 0 || (n_ids > 0 && !ids) || o->max_tokens < 0 || o->n_stop < 0 ||
        (o->n_stop > 0 && !o->stop)) {
        if (s) snprintf(s->error, sizeof s->error, "lucie_generate_tokens: invalid arguments");
        return LUCIE_EINVAL;
    }
    c = &s->model->config;
    if (n_ids == 0 && !s->have_logits) {
        snprintf(s->error, sizeof s->error,
                 "nothing to generate from: no input tokens and no prediction in the session (evaluate a token first)");
        return LUCIE_EINVAL;
    }
    if (n_ids > s->context - s->pos) {
        snprintf(s->error, sizeof s->error, "the input is %d tokens but only %d of the context (%d) are free", n_ids,
                 s->context - s->pos, s->context);
        return LUCIE_ECONTEXT;
    }
    stream = lucie_detok_stream_new(s->model, LUCIE_DETOK_SKIP_SPECIAL);
    if (!stream) {
        snprintf(s->error, sizeof s->error, "out of memory");
        return LUCIE_ENOMEM;
    }
    /* The decoder learns the input so the output continues it seamlessly; a
     * chat reply (fresh_text) is decoded on its own, as HF decodes replies. */
    if (!o->fresh_text && n_ids > 0 && (rc = lucie_detok_stream_prime(stream, ids, n_ids)) != LUCIE_OK) {
        snprintf(s->error, sizeof s->error, "cannot decode the input: %s", lucie_status_string(rc));
        goto done;
    }
    st.n_prompt = n_ids;
    t0 = now_seconds();
    if (n_ids > 0 && (rc = lucie_eval(s, ids, n_ids, s->logits, 0)) != LUCIE_OK) goto done;
    st.prompt_seconds = now_seconds() - t0;
    t0 = now_seconds();
    while (st.n_generated < o->max_tokens) {
        const char *piece;
        size_t len = 0, safe;
        if (s->pos >= s->context) {
            st.stop_reason = 3;
            snprintf(s->error, sizeof s->error, "context full (%d tokens)", s->context);
            break;
        }
        token = lucie_sample(s, s->logits);
        st.n_generated++;
        /* The sampled token joins the cache even when it ends the text, so a
         * chat can go on after an eos with the cache in the template's shape. */
        rc = lucie_eval(s, &token, 1, s->logits, 0);
        if (rc != LUCIE_OK) break;
        if (is_eos(c, token)) {
            st.stop_reason = 1;
            break;
        }
        piece = lucie_detok_stream_push(stream, token, &len);
        if (!piece || !text_append(&pending, piece, len)) {
            rc = LUCIE_ENOMEM;
            snprintf(s->error, sizeof s->error, "out of memory");
            break;
        }
        safe = stop_scan(&pending, o, &found);
        if (cb && cb(pending.text, safe, token, user)) {
            st.stop_reason = 2;
            break;
        }
        memmove(pending.text, pending.text + safe, pending.len - safe + 1);
        pending.len -= safe;
        if (found) {
            st.stop_reason = 4;
            pending.len = 0;
            break;
        }
    }
    /* Text the decoder held back, and text held back for a stop string that
     * never came, is output now. */
    if (rc == LUCIE_OK && st.stop_reason != 2 && st.stop_reason != 4) {
        size_t len = 0;
        const char *rest = lucie_detok_stream_flush(stream, &len);
        if (rest && text_append(&pending, rest, len)) {
            size_t safe = stop_scan(&pending, o, &found);
            if (found) st.stop_reason = 4;
            if (cb && (found ? safe : pending.len) > 0) cb(pending.text, found ? safe : pending.len, -1, user);
        }
    }
    st.generate_seconds = now_seconds() - t0;
done:
    if (stats) *stats = st;
    free(pending.text);
    lucie_detok_stream_free(stream);
    return rc;
}

/* Encodes text into a fresh malloc'ed array. */
static int tokenize_alloc(const lucie_model *m, const char *text, size_t len, int flags, int **ids, int *n_ids,
                          char *err, size_t err_size) {
    int rc = lucie_tokenize(m, text, len, flags, NULL, 0, n_ids, err, err_size);
    *ids = NULL;
    if (rc != LUCIE_OK && rc != LUCIE_ESMALL) return rc;
    *ids = (int *)malloc((size_t)(*n_ids > 0 ? *n_ids : 1) * sizeof(int));
    if (!*ids) {
        set_error(err, err_size, "out of memory");
        return LUCIE_ENOMEM;
    }
    if (*n_ids == 0) return LUCIE_OK;
    rc = lucie_tokenize(m, text, len, flags, *ids, *n_ids, n_ids, err, err_size);
    if (rc != LUCIE_OK) {
        free(*ids);
        *ids = NULL;
    }
    return rc;
}

int lucie_generate(lucie_session *s, const char *prompt, int max_tokens, lucie_token_callback cb, void *user,
                   lucie_stats *stats) {
    lucie_generate_options o;
    int *ids, n_ids, rc;
    if (!s || !prompt || max_tokens < 0) return LUCIE_EINVAL;
    rc = tokenize_alloc(s->model, prompt, strlen(prompt), LUCIE_TOK_ADD_SPECIAL | LUCIE_TOK_PARSE_SPECIAL, &ids,
                        &n_ids, s->error, sizeof s->error);
    if (rc != LUCIE_OK) return rc;
    if (n_ids == 0) {
        free(ids);
        snprintf(s->error, sizeof s->error, "the prompt encodes to no tokens");
        return LUCIE_EINVAL;
    }
    memset(&o, 0, sizeof o);
    o.max_tokens = max_tokens;
    rc = lucie_generate_tokens(s, ids, n_ids, &o, cb, user, stats);
    free(ids);
    return rc;
}

/* ---- chat: the model's chat template, rendered straight to token ids ----
 *
 * transformers renders the Jinja template to a string and tokenizes it,
 * splitting out special-token strings first and normalizing each text segment
 * on its own. We produce the same ids by tokenizing each text segment on its
 * own and inserting the special ids ourselves, which also keeps text typed by
 * a user from ever becoming a special token. Only templates with the known
 * header structure are accepted; anything else is refused rather than guessed. */

static int special_token_id(const lucie_model *m, const char *text, int *id) {
    int ids[2], n = 0;
    char err[64];
    if (lucie_tokenize(m, text, strlen(text), LUCIE_TOK_PARSE_SPECIAL, ids, 2, &n, err, sizeof err) != LUCIE_OK ||
        n != 1)
        return 0;
    *id = ids[0];
    return 1;
}

static int chat_template_supported(const char *t) {
    return t && strstr(t, "<|start_header_id|>") && strstr(t, "<|end_header_id|>") && strstr(t, "<|eot_id|>") &&
           strstr(t, "message['role']") && strstr(t, "trim") && strstr(t, "add_generation_prompt") &&
           strstr(t, "bos_token");
}

/* Appends the ids of one piece of text (no special tokens, no BOS). */
static int chat_append_text(const lucie_model *m, const char *text, size_t len, int *ids, int max_ids, int *n,
                            char *err, size_t err_size) {
    int *piece, n_piece, rc, i;
    if (len == 0) return LUCIE_OK;
    rc = tokenize_alloc(m, text, len, 0, &piece, &n_piece, err, err_size);
    if (rc != LUCIE_OK) return rc;
    for (i = 0; i < n_piece; i++, (*n)++)
        if (*n < max_ids) ids[*n] = piece[i];
    free(piece);
    return LUCIE_OK;
}

static void chat_append_id(int id, int *ids, int max_ids, int *n) {
    if (*n < max_ids) ids[*n] = id;
    (*n)++;
}

/* Jinja's trim is Python's str.strip(): it removes the code points for which
 * str.isspace() is true, Unicode spaces (U+00A0, U+3000...) and the ASCII
 * separators U+001C..U+001F included. */
static int is_python_space(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

/* Narrows [*start, *end) to the text without leading and trailing spaces. */
static void jinja_trim(const char **start, const char **end) {
    uint32_t cp;
    int len;
    while (*start < *end &&
           (len = utf8_decode((const unsigned char *)*start, (size_t)(*end - *start), &cp)) > 0 && is_python_space(cp))
        *start += len;
    while (*end > *start) {
        const char *last = *end - 1;
        while (last > *start && *end - last < 4 && ((unsigned char)*last & 0xC0) == 0x80) last--;
        len = utf8_decode((const unsigned char *)last, (size_t)(*end - last), &cp);
        if (len <= 0 || last + len != *end || !is_python_space(cp)) break;
        *end = last;
    }
}

int lucie_chat_tokens(const lucie_model *m, const lucie_chat_message *msgs, int n_msgs, int flags, int *ids,
                      int max_ids, int *n_ids, char *err, size_t err_size) {
    int start_header, end_header, eot, n = 0, i, rc;
    if (!m || !n_ids || n_msgs < 0 || (n_msgs > 0 && !msgs) || max_ids < 0 || (max_ids > 0 && !ids)) {
        set_error(err, err_size, "lucie_chat_tokens: invalid arguments");
        return LUCIE_EINVAL;
    }
    *n_ids = 0;
    if (!chat_template_supported(m->chat_template) || !special_token_id(m, "<|start_header_id|>", &start_header) ||
        !special_token_id(m, "<|end_header_id|>", &end_header) || !special_token_id(m, "<|eot_id|>", &eot)) {
        set_error(err, err_size, m->chat_template ? "this model's chat template is not supported"
                                                  : "this model has no chat template");
        return LUCIE_EINVAL;
    }
    if (!(flags & LUCIE_CHAT_CONTINUE) && m->config.bos_id >= 0) chat_append_id(m->config.bos_id, ids, max_ids, &n);
    for (i = 0; i < n_msgs; i++) {
        const char *content = msgs[i].content, *end;
        char *body;
        size_t len;
        if (!msgs[i].role || !content) {
            set_error(err, err_size, "chat message %d has no role or content", i);
            return LUCIE_EINVAL;
        }
        end = content + strlen(content);
        jinja_trim(&content, &end);
        len = (size_t)(end - content);
        body = (char *)malloc(len + 3);
        if (!body) {
            set_error(err, err_size, "out of memory");
            return LUCIE_ENOMEM;
        }
        body[0] = '\n';
        body[1] = '\n';
        memcpy(body + 2, content, len);
        body[len + 2] = '\0';
        chat_append_id(start_header, ids, max_ids, &n);
        rc = chat_append_text(m, msgs[i].role, strlen(msgs[i].role), ids, max_ids, &n, err, err_size);
        if (rc == LUCIE_OK) {
            chat_append_id(end_header, ids, max_ids, &n);
            rc = chat_append_text(m, body, len + 2, ids, max_ids, &n, err, err_size);
        }
        free(body);
        if (rc != LUCIE_OK) return rc;
        chat_append_id(eot, ids, max_ids, &n);
    }
    if (flags & LUCIE_CHAT_GENERATION_PROMPT) {
        chat_append_id(start_header, ids, max_ids, &n);
        rc = chat_append_text(m, "assistant", 9, ids, max_ids, &n, err, err_size);
        if (rc != LUCIE_OK) return rc;
        chat_append_id(end_header, ids, max_ids, &n);
        rc = chat_append_text(m, "\n\n", 2, ids, max_ids, &n, err, err_size);
        if (rc != LUCIE_OK) return rc;
    }
    *n_ids = n;
    return n > max_ids ? LUCIE_ESMALL : LUCIE_OK;
}

/* ---- saving and restoring a session ----
 *
 * Layout (little-endian like the model file): magic "LUCIESES", u32 version,
 * u32 kv_dim, u32 n_layers, u32 pos, u64 model fingerprint (FNV-1a of the
 * model's header and entry table), u64 RNG state, then pos token ids (i32),
 * then for each layer the pos key vectors and pos value vectors (f32).
 * The raw float arrays are written in host order, which the loader's
 * little-endian check guarantees. */

#define SESSION_MAGIC "LUCIESES"
#define SESSION_VERSION 1
#define SESSION_HEADER 40

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* Identifies the model a cache belongs to: the header and entry table (the
 * shapes), plus the first and last 4 KB of every section, so that two models
 * of the same shape with different weights (a fine-tune, another seed) differ
 * without reading gigabytes. Entry ranges were validated at load. */
static uint64_t model_fingerprint(const lucie_model *m) {
    const unsigned char *d = m->file.data;
    uint32_t i, n_entries = read_u32(d + 24);
    uint64_t h = fnv1a(1469598103934665603ull, d, HEADER_SIZE + (size_t)n_entries * ENTRY_SIZE);
    for (i = 0; i < n_entries; i++) {
        const unsigned char *e = d + HEADER_SIZE + (size_t)i * ENTRY_SIZE;
        uint64_t offset = read_u64(e + 112), size = read_u64(e + 120);
        size_t head = size < 4096 ? (size_t)size : 4096;
        h = fnv1a(h, d + offset, head);
        h = fnv1a(h, d + offset + size - head, head);
    }
    return h;
}

static void put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}
static void put_u64(unsigned char *p, uint64_t v) {
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}

int lucie_session_save(const lucie_session *s, const char *path) {
    const lucie_config *c;
    unsigned char header[SESSION_HEADER];
    size_t kv_dim, l;
    FILE *f;
    int ok, i;
    if (!s || !path) return LUCIE_EINVAL;
    c = &s->model->config;
    kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    memcpy(header, SESSION_MAGIC, 8);
    put_u32(header + 8, SESSION_VERSION);
    put_u32(header + 12, (uint32_t)kv_dim);
    put_u32(header + 16, (uint32_t)c->n_layers);
    put_u32(header + 20, (uint32_t)s->pos);
    put_u64(header + 24, model_fingerprint(s->model));
    put_u64(header + 32, s->samp.rng);
    f = fopen(path, "wb");
    if (!f) {
        snprintf(((lucie_session *)s)->error, sizeof s->error, "cannot write '%s'", path);
        return LUCIE_EIO;
    }
    ok = fwrite(header, 1, SESSION_HEADER, f) == SESSION_HEADER;
    for (i = 0; i < s->pos && ok; i++) {
        unsigned char b[4];
        put_u32(b, (uint32_t)s->history[i]);
        ok = fwrite(b, 1, 4, f) == 4;
    }
    for (l = 0; l < (size_t)c->n_layers && ok; l++) {
        size_t count = (size_t)s->pos * kv_dim;
        ok = fwrite(s->key_cache + l * s->context * kv_dim, sizeof(float), count, f) == count &&
             fwrite(s->value_cache + l * s->context * kv_dim, sizeof(float), count, f) == count;
    }
    if (fclose(f) != 0) ok = 0;
    if (!ok) {
        snprintf(((lucie_session *)s)->error, sizeof s->error, "write error on '%s'", path);
        return LUCIE_EIO;
    }
    return LUCIE_OK;
}

int lucie_session_load(lucie_session *s, const char *path) {
    const lucie_config *c;
    unsigned char header[SESSION_HEADER];
    size_t kv_dim, l, count;
    uint32_t pos;
    long size;
    FILE *f;
    unsigned char *ids;
    int i, ok = 1;
    if (!s || !path) return LUCIE_EINVAL;
    c = &s->model->config;
    kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    f = fopen(path, "rb");
    if (!f) {
        snprintf(s->error, sizeof s->error, "cannot open '%s'", path);
        return LUCIE_EIO;
    }
    if (fread(header, 1, SESSION_HEADER, f) != SESSION_HEADER || memcmp(header, SESSION_MAGIC, 8) != 0 ||
        read_u32(header + 8) != SESSION_VERSION) {
        fclose(f);
        snprintf(s->error, sizeof s->error, "'%s' is not a lucie session file", path);
        return LUCIE_EFORMAT;
    }
    pos = read_u32(header + 20);
    if (read_u32(header + 12) != kv_dim || read_u32(header + 16) != (uint32_t)c->n_layers ||
        read_u64(header + 24) != model_fingerprint(s->model)) {
        fclose(f);
        snprintf(s->error, sizeof s->error, "session file '%s' was saved with another model", path);
        return LUCIE_EFORMAT;
    }
    if (pos > (uint32_t)s->context) {
        fclose(f);
        snprintf(s->error, sizeof s->error, "session file holds %u tokens, more than this session's context (%d)", pos,
                 s->context);
        return LUCIE_ECONTEXT;
    }
    /* The exact size must match before anything is overwritten. */
    count = (size_t)pos * kv_dim;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 ||
        (unsigned long)size != SESSION_HEADER + (unsigned long)pos * 4 +
                                   (unsigned long)c->n_layers * 2 * count * sizeof(float) ||
        fseek(f, SESSION_HEADER, SEEK_SET) != 0) {
        fclose(f);
        snprintf(s->error, sizeof s->error, "session file '%s' is truncated or has trailing data", path);
        return LUCIE_EFORMAT;
    }
    /* The token ids are checked before the session is touched, so a corrupt
     * file leaves it as it was. */
    ids = (unsigned char *)malloc((size_t)pos * 4 + 1);
    if (!ids) {
        fclose(f);
        snprintf(s->error, sizeof s->error, "out of memory");
        return LUCIE_ENOMEM;
    }
    ok = fread(ids, 4, pos, f) == pos;
    for (i = 0; i < (int)pos && ok; i++) {
        int32_t id = read_i32(ids + 4 * (size_t)i);
        if (id < 0 || id >= c->vocab_size) ok = 0;
    }
    if (!ok) {
        free(ids);
        fclose(f);
        snprintf(s->error, sizeof s->error, "session file '%s' is corrupt (token id out of range)", path);
        return LUCIE_EFORMAT;
    }
    for (i = 0; i < (int)pos; i++) s->history[i] = read_i32(ids + 4 * (size_t)i);
    free(ids);
    for (l = 0; l < (size_t)c->n_layers && ok; l++)
        ok = fread(s->key_cache + l * s->context * kv_dim, sizeof(float), count, f) == count &&
             fread(s->value_cache + l * s->context * kv_dim, sizeof(float), count, f) == count;
    fclose(f);
    if (!ok) { /* a read error after the size check: the cache is half overwritten */
        s->pos = 0;
        s->have_logits = 0;
        snprintf(s->error, sizeof s->error, "read error on session file '%s'; the session was reset", path);
        return LUCIE_EIO;
    }
    s->pos = (int)pos;
    s->have_logits = 0; /* the file holds no logits: evaluate a token next */
    s->samp.rng = read_u64(header + 32);
    return LUCIE_OK;
}
