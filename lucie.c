/* lucie.c - run Lucie-7B (a Llama-architecture language model) on a CPU.
 *
 * One file, C99 and its standard library (plus POSIX mmap and threads, or
 * their Windows equivalents). Read it top to bottom:
 *
 *   1. Plumbing: errors, clocks, little-endian reads, a pool of threads.
 *   2. The model file: mapping it and checking every byte range before use.
 *   3. The tokenizer: text <-> token ids, exactly like Hugging Face tokenizers.
 *   4. Math kernels: matrix products for each weight format (f32, bf16, q8, q4),
 *      and the one table describing those formats.
 *   5. Loading a model: binding every tensor to its checked bytes.
 *   6. Sessions: KV cache, buffers, sampler state; rewinding, saving, restoring.
 *   7. The transformer forward pass, mirroring Hugging Face LlamaForCausalLM.
 *   8. Sampling: temperature, top-k, top-p, min-p, repetition penalty.
 *   9. Generation: prompt in, streamed text out; chat.
 *  10. Quantization: converting an f32/bf16 model file to q8/q4.
 * Appendix: generated Unicode tables for the tokenizer.
 *
 * The file format itself is specified in lucie.h; export.py writes it.
 */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#if !defined(_WIN32) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE /* madvise() hints, MAP_ANONYMOUS: optional, used when present */
#endif
#if defined(__linux__) && !defined(LUCIE_NO_THREADS) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* sched_getaffinity, sched_setaffinity: which processor each thread runs on */
#endif
#if !defined(_FILE_OFFSET_BITS)
#define _FILE_OFFSET_BITS 64 /* 64-bit off_t for session files on 32-bit hosts */
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
#if !defined(_WIN32) && !defined(LUCIE_NO_THREADS)
#include <pthread.h>
#endif
#if defined(__linux__) && !defined(LUCIE_NO_THREADS)
#include <sched.h>
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
    case LUCIE_ESMALL: return "buffer too small";
    default: return "unknown error";
    }
}

const char *lucie_stop_reason_string(int stop_reason) {
    switch (stop_reason) {
    case LUCIE_STOP_MAX_TOKENS: return "max_tokens";
    case LUCIE_STOP_EOS: return "eos";
    case LUCIE_STOP_CALLBACK: return "callback";
    case LUCIE_STOP_CONTEXT_FULL: return "context_full";
    case LUCIE_STOP_STRING: return "stop_string";
    default: return "unknown";
    }
}

void lucie_free(void *p) { free(p); }

double lucie_time_seconds(void) {
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

/* File names are UTF-8 throughout the API. Windows' C library and its *A
 * functions would read them in the ANSI code page instead, so there they go
 * through UTF-16 to the *W functions. */
#ifdef _WIN32
static wchar_t *utf8_to_wide(const char *s) {
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
    wchar_t *w = n > 0 ? (wchar_t *)malloc((size_t)n * sizeof(wchar_t)) : NULL;
    if (w && MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w, n) != n) {
        free(w);
        w = NULL;
    }
    return w;
}
#endif

static FILE *open_file(const char *path, const char *mode) {
#ifdef _WIN32
    wchar_t *wide_path = utf8_to_wide(path), wide_mode[8];
    FILE *f = NULL;
    size_t i;
    for (i = 0; mode[i] && i + 1 < sizeof wide_mode / sizeof wide_mode[0]; i++) wide_mode[i] = (wchar_t)mode[i];
    wide_mode[i] = 0;
    if (wide_path) f = _wfopen(wide_path, wide_mode);
    free(wide_path);
    return f;
#else
    return fopen(path, mode);
#endif
}

static void remove_file(const char *path) {
#ifdef _WIN32
    wchar_t *wide_path = utf8_to_wide(path);
    if (wide_path) DeleteFileW(wide_path);
    free(wide_path);
#else
    remove(path);
#endif
}

/* Atomically puts `from` in place of `to` (rename does not replace an
 * existing file on Windows). Returns 0 on success. */
static int replace_file(const char *from, const char *to) {
#ifdef _WIN32
    wchar_t *wide_from = utf8_to_wide(from), *wide_to = utf8_to_wide(to);
    int ok = wide_from && wide_to && MoveFileExW(wide_from, wide_to, MOVEFILE_REPLACE_EXISTING);
    free(wide_from);
    free(wide_to);
    return ok ? 0 : -1;
#else
    return rename(from, to);
#endif
}

/* Writing a file so that a failure (a full disk, a crash) never leaves a
 * half-written one in its place: the bytes go to path + ".tmp", which
 * replaces path only once it is complete. atomic_create returns the open
 * temporary file and its name (*tmp_path, to free), or NULL with the reason
 * in err. */
static FILE *atomic_create(const char *path, char **tmp_path, char *err, size_t err_size) {
    size_t len = strlen(path) + 5;
    FILE *f;
    *tmp_path = (char *)malloc(len);
    if (!*tmp_path) {
        set_error(err, err_size, "out of memory");
        return NULL;
    }
    snprintf(*tmp_path, len, "%s.tmp", path);
    f = open_file(*tmp_path, "wb");
    if (!f) set_error(err, err_size, "cannot create '%s': %s", *tmp_path, strerror(errno));
    return f;
}

/* Closes the temporary file and, when everything written so far went well
 * (ok), puts it in place of path; otherwise (or when that fails: err says
 * why) removes it. Returns LUCIE_OK or LUCIE_EIO. */
static int atomic_finish(FILE *f, const char *tmp_path, const char *path, int ok, char *err, size_t err_size) {
    int failed = fflush(f) != 0;
    failed |= fclose(f) != 0;
    if (ok && failed) {
        set_error(err, err_size, "write error on '%s': %s", tmp_path, strerror(errno));
        ok = 0;
    }
    if (ok && replace_file(tmp_path, path) != 0) {
        set_error(err, err_size, "cannot rename '%s' to '%s': %s", tmp_path, path, strerror(errno));
        ok = 0;
    }
    if (!ok) remove_file(tmp_path);
    return ok ? LUCIE_OK : LUCIE_EIO;
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

/* ---- threads: a pool whose caller never waits for a thread that has not started ----
 *
 * The kernels cut their work into items (blocks of rows, KV heads, tokens)
 * and run them with pool_run: the pool's threads and the caller take items
 * one at a time until none is left, and every item is computed the same way
 * whoever takes it, so results do not depend on the thread count. The caller
 * then waits only for the items other threads are still computing, never for
 * a thread that has not started: a worker takes items only of the job it saw
 * posted, checked under the lock before each item, so one that the OS runs
 * late finds nothing left and goes back to waiting. That is why lucie.c has
 * its own pool rather than OpenMP, whose parallel regions end in a barrier
 * that waits for every thread of the team: beside another process that keeps
 * a core busy, every region then waited for the scheduler to run a thread
 * that had nothing left to do (milliseconds, however small the region).
 *
 * Waiting threads spin for POOL_SPIN_SECONDS before they sleep: within a
 * layer, jobs follow each other within microseconds, sooner than a sleeping
 * thread wakes, and a thread that wakes late costs the caller nothing (it
 * takes the items alone meanwhile). Longer spins cost beside a CPU hog: a
 * spinning thread takes turns on a core the caller could use. Prefill of 64
 * tokens on a 4-layer model of width 1536 (q4, ~60 ms) beside a hog, 2
 * threads against 1, medians of 20 alternating runs: 0.89x with 2 ms of
 * spinning, 0.94x with 0.3 ms (decoding 0.92x and 0.99x); idle, the same.
 * The caller itself, waiting for items still running on other threads,
 * spins only POOL_JOIN_SPIN_SECONDS before it sleeps, so that a preempted
 * thread can move to the core it leaves. POSIX threads or Windows threads;
 * -DLUCIE_NO_THREADS builds a library that runs everything on the caller's
 * thread (no pthreads needed). */
typedef void (*range_fn)(void *job, int begin, int end, int worker);

#define POOL_SPIN_SECONDS 0.0003
#define POOL_JOIN_SPIN_SECONDS 0.0001

#if defined(LUCIE_NO_THREADS)
#define POOL_THREADS 0
#else
#define POOL_THREADS 1
#ifdef _WIN32
typedef SRWLOCK pool_mutex;
typedef CONDITION_VARIABLE pool_cond;
typedef HANDLE pool_thread;
#define POOL_THREAD_RESULT DWORD WINAPI
static void pool_mutex_init(pool_mutex *m) { InitializeSRWLock(m); }
static void pool_mutex_destroy(pool_mutex *m) { (void)m; }
static void pool_lock(pool_mutex *m) { AcquireSRWLockExclusive(m); }
static void pool_unlock(pool_mutex *m) { ReleaseSRWLockExclusive(m); }
static void pool_cond_init(pool_cond *c) { InitializeConditionVariable(c); }
static void pool_cond_destroy(pool_cond *c) { (void)c; }
static void pool_cond_wait(pool_cond *c, pool_mutex *m) { SleepConditionVariableSRW(c, m, INFINITE, 0); }
static void pool_cond_signal(pool_cond *c) { WakeConditionVariable(c); }
static void pool_cond_broadcast(pool_cond *c) { WakeAllConditionVariable(c); }
#else
typedef pthread_mutex_t pool_mutex;
typedef pthread_cond_t pool_cond;
typedef pthread_t pool_thread;
#define POOL_THREAD_RESULT void *
static void pool_mutex_init(pool_mutex *m) { pthread_mutex_init(m, NULL); }
static void pool_mutex_destroy(pool_mutex *m) { pthread_mutex_destroy(m); }
static void pool_lock(pool_mutex *m) { pthread_mutex_lock(m); }
static void pool_unlock(pool_mutex *m) { pthread_mutex_unlock(m); }
static void pool_cond_init(pool_cond *c) { pthread_cond_init(c, NULL); }
static void pool_cond_destroy(pool_cond *c) { pthread_cond_destroy(c); }
static void pool_cond_wait(pool_cond *c, pool_mutex *m) { pthread_cond_wait(c, m); }
static void pool_cond_signal(pool_cond *c) { pthread_cond_signal(c); }
static void pool_cond_broadcast(pool_cond *c) { pthread_cond_broadcast(c); }
#endif

/* What a spinning thread reads without the lock: the job counter and the
 * count of running items, also written under the lock. A read here only says
 * when to take the lock and look; every decision is made under the lock, so
 * a compiler without these builtins simply does not spin. */
#if defined(__GNUC__) || defined(__clang__)
#define POOL_CAN_SPIN 1
static long spin_read(const long *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static void spin_write(long *p, long v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
#elif defined(_MSC_VER)
#define POOL_CAN_SPIN 1
static long spin_read(const long *p) { return InterlockedCompareExchange((volatile LONG *)p, 0, 0); }
static void spin_write(long *p, long v) { InterlockedExchange((volatile LONG *)p, v); }
#else
#define POOL_CAN_SPIN 0
static long spin_read(const long *p) { return *p; }
static void spin_write(long *p, long v) { *p = v; }
#endif

static void spin_pause(void) {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_ia32_pause();
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
    YieldProcessor();
#endif
}

/* Spins until (*p == value) == until_equal, or for `seconds`. */
static void spin_until(const long *p, long value, int until_equal, double seconds) {
    double deadline = 0.0;
    int i;
    if (!POOL_CAN_SPIN) return;
    for (;;) {
        for (i = 0; i < 256; i++) {
            if ((spin_read(p) == value) == until_equal) return;
            spin_pause();
        }
        if (deadline == 0.0) deadline = lucie_time_seconds() + seconds;
        else if (lucie_time_seconds() > deadline) return;
    }
}
#endif

/* Where the threads run. The OS balances its run queues by load, and a
 * pool's two threads that each wait now and then for the other count as
 * less than two busy ones: beside a process that keeps a core busy, Linux
 * ran both on one core most of the time and left the other core to that
 * process (a 7B prefill of 128 tokens with 2 threads: `perf sched` gave the
 * two threads 2.9 and 2.8 s of 5.3 s, the busy process 4.6 s; 24.5 tok/s,
 * about what one thread alone gets). So when a pool has one thread per
 * processor the process may use, each thread keeps to its own processor:
 * the workers from their start, the caller while it computes
 * (pool_pin_caller, then given back its processors; the same prefill: 24-31
 * tok/s, 27.3 the median of 8 runs alternating with the threads left to the
 * OS, which gave 26.0). A caller the application pinned itself is left
 * where it is, and a pool with fewer threads than processors is left to the
 * OS (two such processes would otherwise crowd the same processors). Linux
 * and Windows; elsewhere the OS places the threads. */
#if POOL_THREADS && defined(__linux__)
#define POOL_CAN_PIN 1
typedef cpu_set_t processor_set;
static int allowed_processors(processor_set *allowed) {
    CPU_ZERO(allowed);
    return sched_getaffinity(0, sizeof *allowed, allowed) == 0 ? CPU_COUNT(allowed) : 0;
}
static int processor_allowed(const processor_set *allowed, int cpu) { return CPU_ISSET(cpu, allowed); }
static void pin_to(int cpu) {
    processor_set one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    sched_setaffinity(0, sizeof one, &one);
}
/* Moves the calling thread to `cpu` when it may run on every allowed
 * processor; returns whether it did (*saved: its processors before). */
static int pin_caller_to(int cpu, const processor_set *allowed, processor_set *saved) {
    if (sched_getaffinity(0, sizeof *saved, saved) != 0 || !CPU_EQUAL(saved, allowed)) return 0;
    pin_to(cpu);
    return 1;
}
static void unpin_caller(const processor_set *saved) { sched_setaffinity(0, sizeof *saved, saved); }
#define MAX_PROCESSOR CPU_SETSIZE
#elif POOL_THREADS && defined(_WIN32)
#define POOL_CAN_PIN 1
typedef DWORD_PTR processor_set;
static int allowed_processors(processor_set *allowed) {
    DWORD_PTR system;
    int n = 0;
    processor_set m;
    if (!GetProcessAffinityMask(GetCurrentProcess(), allowed, &system)) return 0;
    for (m = *allowed; m; m &= m - 1) n++;
    return n;
}
static int processor_allowed(const processor_set *allowed, int cpu) { return (int)((*allowed >> cpu) & 1); }
static void pin_to(int cpu) { SetThreadAffinityMask(GetCurrentThread(), (DWORD_PTR)1 << cpu); }
static int pin_caller_to(int cpu, const processor_set *allowed, processor_set *saved) {
    /* Windows tells a thread's processors only in exchange for new ones */
    *saved = SetThreadAffinityMask(GetCurrentThread(), (DWORD_PTR)1 << cpu);
    if (*saved == *allowed) return 1;
    if (*saved) SetThreadAffinityMask(GetCurrentThread(), *saved);
    return 0;
}
static void unpin_caller(const processor_set *saved) { SetThreadAffinityMask(GetCurrentThread(), *saved); }
#define MAX_PROCESSOR ((int)sizeof(DWORD_PTR) * CHAR_BIT)
#else
#define POOL_CAN_PIN 0
#endif

typedef struct worker_pool worker_pool;

typedef struct {
    worker_pool *pool;
    int index; /* 1.. (the caller is worker 0) */
    int cpu;   /* the processor it keeps to, or -1 */
} pool_worker;

struct worker_pool {
    int n_threads; /* the caller and n_threads - 1 workers */
#if POOL_THREADS
    pool_mutex lock;
    pool_cond wake; /* a job was posted, or the pool closes */
    pool_cond idle; /* the last item running on a worker finished */
    /* the current job, written under the lock */
    range_fn fn;
    void *job;
    int n, chunk, next, max_threads;
    long generation; /* jobs posted so far */
    long running;    /* items the workers took and have not finished */
    int sleepers, caller_waits, quit;
    pool_thread *threads;
    pool_worker *workers;
#endif
#if POOL_CAN_PIN
    int pinned;                 /* one thread per allowed processor, each kept to its own */
    int caller_pinned;          /* pool_pin_caller moved the caller */
    processor_set allowed;      /* the processors of the thread that made the pool */
    processor_set caller_saved; /* the caller's processors before pool_pin_caller */
#endif
};

#if POOL_THREADS
/* Takes items of job `generation` until none is left; called and returns
 * with the lock held. */
static void pool_take_items(worker_pool *p, long generation, int worker) {
    while (p->generation == generation && p->next < p->n && worker < p->max_threads) {
        range_fn fn = p->fn;
        void *job = p->job;
        int begin = p->next, end = p->n - begin > p->chunk ? begin + p->chunk : p->n;
        p->next = end;
        if (worker) spin_write(&p->running, p->running + 1);
        pool_unlock(&p->lock);
        fn(job, begin, end, worker);
        pool_lock(&p->lock);
        if (worker) {
            spin_write(&p->running, p->running - 1);
            if (p->running == 0 && p->caller_waits) pool_cond_signal(&p->idle);
        }
    }
}

static POOL_THREAD_RESULT pool_worker_main(void *arg) {
    pool_worker *w = (pool_worker *)arg;
    worker_pool *p = w->pool;
    long seen = 0;
#if POOL_CAN_PIN
    if (w->cpu >= 0) pin_to(w->cpu);
#endif
    pool_lock(&p->lock);
    for (;;) {
        if (p->generation == seen && !p->quit) {
            pool_unlock(&p->lock);
            spin_until(&p->generation, seen, 0, POOL_SPIN_SECONDS);
            pool_lock(&p->lock);
            while (p->generation == seen && !p->quit) {
                p->sleepers++;
                pool_cond_wait(&p->wake, &p->lock);
                p->sleepers--;
            }
        }
        if (p->quit) break;
        seen = p->generation;
        pool_take_items(p, seen, w->index);
    }
    pool_unlock(&p->lock);
    return 0;
}

static int pool_start_thread(pool_thread *t, pool_worker *w) {
#ifdef _WIN32
    *t = CreateThread(NULL, 0, pool_worker_main, w, 0, NULL);
    return *t != NULL;
#else
    return pthread_create(t, NULL, pool_worker_main, w) == 0;
#endif
}

static void pool_join_thread(pool_thread t) {
#ifdef _WIN32
    WaitForSingleObject(t, INFINITE);
    CloseHandle(t);
#else
    pthread_join(t, NULL);
#endif
}
#endif

static void pool_free(worker_pool *p) {
    if (!p) return;
#if POOL_THREADS
    if (p->threads) {
        int i;
        pool_lock(&p->lock);
        p->quit = 1;
        pool_cond_broadcast(&p->wake);
        pool_unlock(&p->lock);
        for (i = 1; i < p->n_threads; i++) pool_join_thread(p->threads[i - 1]);
    }
    pool_cond_destroy(&p->idle);
    pool_cond_destroy(&p->wake);
    pool_mutex_destroy(&p->lock);
    free(p->threads);
    free(p->workers);
#endif
    free(p);
}

#if POOL_THREADS
/* The processor pool thread i (0: the caller) keeps to, or -1: where the OS
 * puts it. */
static int pool_thread_processor(const worker_pool *p, int i) {
#if POOL_CAN_PIN
    int cpu;
    if (p->pinned)
        for (cpu = 0; cpu < MAX_PROCESSOR; cpu++)
            if (processor_allowed(&p->allowed, cpu) && i-- == 0) return cpu;
#else
    (void)p;
    (void)i;
#endif
    return -1;
}
#endif

/* A pool of up to n_threads threads (the caller included), NULL when out of
 * memory. If the OS refuses a thread, the pool has those it could start.
 * pin: keep each thread to its own processor when there is one per
 * processor (see "Where the threads run"). */
static worker_pool *pool_new(int n_threads, int pin) {
    worker_pool *p = (worker_pool *)calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_threads = 1;
#if POOL_CAN_PIN
    p->pinned = pin && n_threads > 1 && allowed_processors(&p->allowed) == n_threads;
#else
    (void)pin;
#endif
#if POOL_THREADS
    pool_mutex_init(&p->lock);
    pool_cond_init(&p->wake);
    pool_cond_init(&p->idle);
    if (n_threads > 1) {
        int i;
        p->threads = (pool_thread *)calloc((size_t)n_threads, sizeof *p->threads);
        p->workers = (pool_worker *)calloc((size_t)n_threads, sizeof *p->workers);
        if (!p->threads || !p->workers) {
            pool_free(p);
            return NULL;
        }
        for (i = 1; i < n_threads; i++) {
            p->workers[i - 1].pool = p;
            p->workers[i - 1].index = i;
            p->workers[i - 1].cpu = pool_thread_processor(p, i);
            if (!pool_start_thread(&p->threads[i - 1], &p->workers[i - 1])) break;
            p->n_threads = i + 1;
        }
    }
#else
    (void)n_threads;
#endif
    return p;
}

/* While the caller computes on a pool that pins, it keeps to its own
 * processor; pool_unpin_caller gives it back the ones it had. */
static void pool_pin_caller(worker_pool *p) {
#if POOL_CAN_PIN
    if (p && p->pinned && !p->caller_pinned)
        p->caller_pinned = pin_caller_to(pool_thread_processor(p, 0), &p->allowed, &p->caller_saved);
#else
    (void)p;
#endif
}

static void pool_unpin_caller(worker_pool *p) {
#if POOL_CAN_PIN
    if (p && p->caller_pinned) {
        unpin_caller(&p->caller_saved);
        p->caller_pinned = 0;
    }
#else
    (void)p;
#endif
}

static int pool_threads(const worker_pool *p) { return p ? p->n_threads : 1; }

/* fn(job, begin, end, worker) over [0, n) in pieces of `chunk`, on up to
 * `threads` threads; worker is 0 for the caller, else 1..threads-1 (an index
 * for per-thread scratch). Returns when every piece is done. */
static void pool_run(worker_pool *p, int threads, int n, int chunk, range_fn fn, void *job) {
    int begin;
    if (n <= 0) return;
    if (chunk < 1) chunk = 1;
#if POOL_THREADS
    if (p && threads > 1 && p->n_threads > 1 && n > chunk) {
        pool_lock(&p->lock);
        p->fn = fn;
        p->job = job;
        p->n = n;
        p->chunk = chunk;
        p->next = 0;
        p->max_threads = threads;
        spin_write(&p->generation, p->generation + 1);
        if (p->sleepers) pool_cond_broadcast(&p->wake);
        pool_take_items(p, p->generation, 0);
        while (p->running > 0) { /* items still running on workers: spin, then sleep */
            pool_unlock(&p->lock);
            spin_until(&p->running, 0, 1, POOL_JOIN_SPIN_SECONDS);
            pool_lock(&p->lock);
            if (p->running > 0) {
                p->caller_waits = 1;
                pool_cond_wait(&p->idle, &p->lock);
                p->caller_waits = 0;
            }
        }
        pool_unlock(&p->lock);
        return;
    }
#else
    (void)p;
    (void)threads;
#endif
    for (begin = 0; begin < n; begin += chunk) fn(job, begin, n - begin > chunk ? begin + chunk : n, 0);
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
    wchar_t *wide_path = utf8_to_wide(path);
    file = wide_path ? CreateFileW(wide_path, GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING,
                                   FILE_ATTRIBUTE_NORMAL, NULL)
                     : INVALID_HANDLE_VALUE;
    free(wide_path);
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
    if (memcmp(h, FILE_MAGIC, file_size < 8 ? file_size : 8) != 0) {
        set_error(err, err_size, "not a lucie model file (bad magic)");
        return LUCIE_EFORMAT;
    }
    if (file_size < HEADER_SIZE) {
        set_error(err, err_size, "file is truncated: %llu bytes, the header alone is %d",
                  (unsigned long long)file_size, HEADER_SIZE);
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

/* Tables of the appendix at the end of this file (generated). */
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

/* The one growth rule of every buffer below: room for `need` elements of
 * `elem` bytes, the capacity doubling from `first`. Returns the (possibly
 * moved) array, or NULL on overflow or out of memory (data is then intact). */
static void *grow_array(void *data, size_t *cap, size_t need, size_t elem, size_t first) {
    size_t n = *cap ? *cap : first;
    void *p;
    if (need <= *cap) return data;
    while (n < need) {
        if (n > SIZE_MAX / 2) return NULL;
        n *= 2;
    }
    if (n > SIZE_MAX / elem || (p = realloc(data, n * elem)) == NULL) return NULL;
    *cap = n;
    return p;
}

typedef struct {
    unsigned char *data;
    size_t len, cap;
    int oom;
} byte_buf;

static int buf_reserve(byte_buf *b, size_t extra) {
    unsigned char *p;
    if (b->oom) return 0;
    p = extra > SIZE_MAX - b->len ? NULL : (unsigned char *)grow_array(b->data, &b->cap, b->len + extra, 1, 64);
    if (!p) {
        b->oom = 1;
        return 0;
    }
    b->data = p;
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
    int *p;
    if (v->oom) return;
    if ((p = (int *)grow_array(v->data, &v->cap, v->len + 1, sizeof(int), 64)) == NULL) {
        v->oom = 1;
        return;
    }
    v->data = p;
    v->data[v->len++] = x;
}

/* ---- UTF-8 ---------------------------------------------------------------
 * Decoding and validating UTF-8 exactly as strictly as Rust's str, which the
 * reference tokenizer works on. */

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
    uint32_t *p;
    if (v->oom) return;
    if ((p = (uint32_t *)grow_array(v->cp, &v->cap, v->len + 1, sizeof(uint32_t), 32)) == NULL) {
        v->oom = 1;
        return;
    }
    v->cp = p;
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

/* ---- the tokenizer object ------------------------------------------------
 * The vocabulary, merges, added tokens and normalizer/decoder operations of
 * the file's "tokenizer" section, with the lookup tables built at load. */

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

/* ---- reading the section ----------------------------------------------------
 * Parsing the "tokenizer" section (layout in lucie.h), every count, id and
 * length checked against the bytes that remain. */

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

/* ---- normalizer -----------------------------------------------------------
 * The normalizer operations (NFC, replacements, prepend) applied to the text
 * between added tokens, before BPE. */

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

/* ---- BPE -------------------------------------------------------------------
 * Byte-pair encoding of one normalized piece: merges applied by rank with a
 * heap of candidate pairs, byte fallback for what the vocabulary lacks. */

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
    bpe_candidate *p = (bpe_candidate *)grow_array(w->heap, &w->heap_cap, w->n_heap + 1, sizeof *p, 64);
    if (!p) {
        w->oom = 1;
        return;
    }
    w->heap = p;
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

/* ---- added tokens ----------------------------------------------------------
 * Special and added tokens are found in the raw text first (leftmost, then
 * longest), and only the text between them is normalized and BPE-encoded;
 * lucie_tokenize and its allocating form are here. */

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

/* The calls that produce token ids (lucie_tokenize, lucie_chat_tokens) fill
 * a caller's array and report the size needed; their *_alloc forms ask for
 * the size, allocate, and call again, here, once. */
typedef int (*ids_producer)(const void *args, int *ids, int max_ids, int *n_ids, char *err, size_t err_size);

static int ids_alloc(ids_producer produce, const void *args, int **ids, int *n_ids, char *err, size_t err_size) {
    int rc;
    if (!ids || !n_ids) {
        set_error(err, err_size, "NULL output argument");
        return LUCIE_EINVAL;
    }
    *ids = NULL;
    rc = produce(args, NULL, 0, n_ids, err, err_size);
    if (rc != LUCIE_OK && rc != LUCIE_ESMALL) return rc;
    *ids = (int *)malloc((size_t)(*n_ids > 0 ? *n_ids : 1) * sizeof(int));
    if (!*ids) {
        set_error(err, err_size, "out of memory");
        return LUCIE_ENOMEM;
    }
    if (*n_ids == 0) return LUCIE_OK;
    rc = produce(args, *ids, *n_ids, n_ids, err, err_size);
    if (rc != LUCIE_OK) {
        free(*ids);
        *ids = NULL;
    }
    return rc;
}

typedef struct {
    const lucie_model *model;
    const char *text;
    size_t len;
    int flags;
} tokenize_args;

static int produce_tokens(const void *args, int *ids, int max_ids, int *n_ids, char *err, size_t err_size) {
    const tokenize_args *a = (const tokenize_args *)args;
    return lucie_tokenize(a->model, a->text, a->len, a->flags, ids, max_ids, n_ids, err, err_size);
}

int lucie_tokenize_alloc(const lucie_model *model, const char *text, size_t len, int flags, int **ids, int *n_ids,
                         char *err, size_t err_size) {
    tokenize_args a = {model, text, len, flags};
    return ids_alloc(produce_tokens, &a, ids, n_ids, err, err_size);
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
    const lucie_model *model;
    const tokenizer *tok;
    int flags;
    int n_ids;              /* ids 0..n_ids-1 are valid: the model's vocabulary, which may
                               have rows without a piece beyond the tokenizer's (padding) */
    int status;             /* of the last call: LUCIE_OK, or why it returned NULL */
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
    if (id < 0 || id >= st->n_ids) return LUCIE_EINVAL;
    if (id >= t->vocab_size) return LUCIE_OK; /* a padding id has no text; HF decode() skips it too */
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

static lucie_detok_stream *detok_stream_create(const lucie_model *m, int flags) {
    const tokenizer *t = model_tokenizer(m);
    lucie_detok_stream *st = (lucie_detok_stream *)calloc(1, sizeof *st);
    if (!st) return NULL;
    st->model = m;
    st->tok = t;
    st->flags = flags;
    st->n_ids = m->config.vocab_size > t->vocab_size ? m->config.vocab_size : t->vocab_size;
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
    return detok_stream_create(model, flags);
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

static int detok_length(const lucie_model *m, const int *ids, int n_ids, int flags, size_t *len);

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
    if (!buf_reserve(&st->out, 1)) {
        st->status = LUCIE_ENOMEM;
        return NULL;
    }
    st->out.data[*len] = 0; /* keeps a NUL after the text, for convenience */
    st->out.len = 0;
    return (const char *)st->out.data;
}

const char *lucie_detok_stream_push(lucie_detok_stream *st, int token, size_t *len) {
    size_t dummy;
    if (!len) len = &dummy;
    *len = 0;
    if (!st || st->failed || st->ended) {
        if (st) st->status = LUCIE_EINVAL;
        return NULL;
    }
    st->out.len = 0;
    st->n_pushed++;
    if ((st->status = detok_push_id(st, token)) != LUCIE_OK) return NULL;
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
    rc = detok_length(st->model, ids, n_ids, st->flags, &total);
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
    if (!st || st->failed || st->ended) {
        if (st) st->status = LUCIE_EINVAL;
        return NULL;
    }
    st->ended = 1;
    st->out.len = 0;
    if ((st->status = detok_finish(st)) != LUCIE_OK) return NULL;
    return detok_take(st, len);
}

/* The whole decode of ids into a stream's output buffer (*out_stream, to be
 * freed by the caller), or an error. */
static int detok_whole(const lucie_model *m, const int *ids, int n_ids, int flags, lucie_detok_stream **out_stream) {
    lucie_detok_stream *st = detok_stream_create(m, flags);
    int i, rc = LUCIE_OK;
    *out_stream = st;
    if (!st) return LUCIE_ENOMEM;
    st->whole = 1;
    for (i = 0; i < n_ids && rc == LUCIE_OK; i++) rc = detok_push_id(st, ids[i]);
    if (rc == LUCIE_OK) rc = detok_finish(st);
    return rc;
}

static int detok_length(const lucie_model *m, const int *ids, int n_ids, int flags, size_t *len) {
    lucie_detok_stream *st;
    int rc = detok_whole(m, ids, n_ids, flags, &st);
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
    rc = detok_whole(model, ids, n_ids, flags, &st);
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
 * Each format's descriptor (4c, the struct just below the kernel table) ties
 * its kernels to its name, storage sizes and quantizer.
 * Threads split the output rows; every output element is computed by the
 * same code whatever the thread count, so results do not depend on it.
 * ======================================================================== */

typedef struct {
    worker_pool *pool;  /* the session's threads (NULL: the caller's only) */
    int n_threads;      /* threads the session may use now */
    int split_any_size; /* 1: split work of any size (tests of the split); 0: the thresholds below apply */
} kernel_ctx;

/* ---- how many threads a piece of work gets ----------------------------
 *
 * Splitting a kernel costs posting a job and joining it (pool_run), and
 * when another process holds a core, a thread the OS preempts in the middle
 * of an item holds the caller up until the scheduler's next turn
 * (milliseconds) however small the work. So a kernel only asks for a second
 * thread when its work is large enough to pay for that, and the work is cut
 * into chunks that threads take dynamically (see chunk_units), so a thread
 * running late takes fewer of them instead of holding everyone up.
 *
 * The thresholds are the work (multiply-adds, or elements for the
 * element-wise steps) each thread must get before a second thread joins.
 * test/thread_thresholds.c times each kernel alone, 1 thread vs 2 (best of
 * 200 runs), on a 2-core AMD EPYC VM, gcc 12 -O3 -march=native (measured
 * with OpenMP's threads, before the pool):
 *   f32 matmul, 1 token: 2 threads take 1.08x the time at 8 K multiply-adds
 *     per thread, 0.81x at 33 K, 0.51x at 524 K;
 *   q8 matmul, 1 token: 1.34x at 33 K, 0.67x at 131 K, 0.63x at 524 K;
 *   batches of 16 tokens: 0.52-0.69x from 131 K on.
 * So on a quiet machine a second thread starts to pay at ~30-100 K. But the
 * same runs on the machine busy with other work show regions that stall
 * for 4-8 ms (a descheduled thread) at any size, so a region must carry far
 * more work than the crossover to be worth that risk: the thresholds sit
 * about 10x above it (matmul 1 M multiply-adds per thread: a 7B or mid-size
 * matmul splits, stories260K's never do). The session's thread tuner
 * (section 6) then decides, from measurements, whether the split layers
 * are faster than one thread on the machine as it is. */
#define MATMUL_MIN_WORK_PER_THREAD 1048576.0
#define ATTENTION_MIN_WORK_PER_THREAD 524288.0
#define ELEMENTWISE_MIN_WORK_PER_THREAD 65536.0

static int threads_for(const kernel_ctx *c, double work, double min_work_per_thread) {
    double fit = work / min_work_per_thread;
    int n = c->n_threads < pool_threads(c->pool) ? c->n_threads : pool_threads(c->pool);
    if (n < 1) n = 1;
    if (c->split_any_size) return n;
    return fit < 2.0 ? 1 : fit < (double)n ? (int)fit : n;
}

/* How many of `units` independent units of work (row blocks) make one chunk
 * for `threads` threads: several chunks per thread, so that with dynamic
 * scheduling a thread that the OS descheduled for a while leaves its share
 * to the others. */
#define CHUNKS_PER_THREAD 4

static int chunk_units(int units, int threads) {
    int chunks = threads > 1 ? threads * CHUNKS_PER_THREAD : 1;
    return units > chunks ? (units + chunks - 1) / chunks : 1;
}

/* Runs fn over `units` units on `threads` of the context's pool, in chunks
 * of chunk_units. */
static void kernel_split(const kernel_ctx *c, int threads, int units, range_fn fn, void *job) {
    pool_run(c->pool, threads, units, chunk_units(units, threads), fn, job);
}

typedef struct {
    size_t (*input_bytes)(int n, int cols, int group_size);
    void (*prepare)(const kernel_ctx *c, const float *x, int n, int cols, int group_size, void *xq);
    void (*matmul)(const kernel_ctx *c, float *out, const float *x, const void *xq, const void *w, int n, int rows,
                   int cols, int group_size);
    void (*embed_row)(float *out, const void *w, int row, int cols, int group_size);
} weight_kernels;

/* Everything the library knows about one weight format, in one place (the
 * table is at the end of this section, 4c): the loader sizes and checks
 * tensors with it, the forward pass takes its kernels, the quantizer (section
 * 10) its code range and group quantizer, and lucie_dtype() shows it to run.c
 * and to the test that pins export.py's copy. Adding a format means: its
 * LUCIE_DT_* number in lucie.h (and N_WEIGHT_FORMATS below when it is the
 * last), a descriptor in 4c, its kernels and, for an integer format, its
 * group quantizer (section 10); export.py's table gets the same row (a test
 * compares them). Nothing else reads a format by name. */
typedef struct weight_format weight_format;
struct weight_format {
    int dtype;             /* LUCIE_DT_*: its number in the file */
    lucie_dtype_info info; /* name and storage: group, unit_bytes, row_block, quantized */
    const weight_kernels *kernels;
    /* integer formats: value = (code - zero) * scale, code - zero in [code_min, code_max] */
    int code_bits, zero, code_min, code_max;
    int embedding_dtype;   /* what the embedding table and lm_head get in a file quantized to this format */
    uint16_t (*quantize_group)(const weight_format *f, const float *v, unsigned char *codes); /* NULL: float */
};

/* The table itself (4c), indexed by dtype: declared here with its size so
 * that the quantized kernels' helpers can read it without a check (they only
 * ever see dtypes the loader validated). */
#define N_WEIGHT_FORMATS (LUCIE_DT_Q4 + 1)
static const weight_format weight_formats[N_WEIGHT_FORMATS];
static const weight_format *weight_format_of(int dtype);

/* Decoding streams every weight once per token, and the hardware prefetchers
 * of the machines we measured fall behind such a stream: asking for the bytes
 * PREFETCH_AHEAD further on while computing on the current ones took 7B q4
 * decoding from 3.7-4.0 to 5.1-6.1 tok/s on 2 cores (1, 2, 4, 8 and 16 KB
 * ahead measured; 4-8 KB best). Only a hint: it changes no result and never
 * touches memory outside [p, end), so it cannot fault. */
#define PREFETCH_AHEAD 4096
#if defined(__GNUC__) || defined(__clang__)
/* always inlined: GCC deems a separate function made only of prefetches free
 * of side effects and deletes the calls to it */
static inline __attribute__((always_inline)) void prefetch_ahead(const void *p, size_t bytes, const void *end) {
    const char *next = (const char *)p;
    size_t off;
    if ((uintptr_t)end - (uintptr_t)p < PREFETCH_AHEAD + bytes) return;
    for (off = 0; off < bytes; off += 64) __builtin_prefetch(next + PREFETCH_AHEAD + off, 0, 3);
}
#else
static void prefetch_ahead(const void *p, size_t bytes, const void *end) {
    (void)p;
    (void)bytes;
    (void)end;
}
#endif

/* f32 and bf16 weights: the kernels of the weight-type table for the two
 * float formats (part of section 4).
 *
 * The arithmetic contract. Every dot product sum_c w[c] * x[c] computed here
 * (each matmul output out[t][r], and dot_f32 in attention) follows one fixed
 * order of operations:
 *   1. DOT_LANES = 16 partial sums ("lanes") start at +0; column c goes to
 *      lane c % 16, and each lane takes its columns in increasing order with
 *      a fused multiply-add, lane = fma(w[c], x[c], lane): one rounding per
 *      step (on a target without an FMA instruction: a multiply, then an add);
 *   2. then a balanced binary tree adds the lanes in order:
 *      ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)) + ...
 * bf16 weights widen to f32 exactly (a 16-bit shift), so bf16 and f32 weights
 * holding the same values give the same results.
 *
 * Why a contract: no batch size, tile shape, thread count or code path can
 * change the result of an output, so prefill (a batch of tokens) and decoding
 * (one token at a time) give bit-identical logits, on any machine with FMA
 * (test/test_float_kernels.c checks this, and prints a hash of its results to
 * compare builds). 16 lanes fill one AVX-512 register, two AVX2 ones or four
 * NEON ones: enough independent sums to hide the FMA latency.
 *
 * The plain C code right below is the reference and runs everywhere. The
 * SIMD kernel after it does the same arithmetic in a cache-friendly order;
 * it is what makes prefill compute-bound and decoding run at memory speed. */

#define DOT_LANES 16

/* fma when the target has it (then fmaf() is one instruction and compilers
 * vectorise it); otherwise a multiply and an add, written as two statements
 * so that no compiler fuses them behind our back. */
#if defined(FP_FAST_FMAF) || defined(__FMA__) || defined(__ARM_FEATURE_FMA)
#define LUCIE_HAVE_FMA 1
#define LUCIE_HAVE_FMA_NAME "fused"
static float madd(float acc, float w, float x) { return fmaf(w, x, acc); }
#else
#define LUCIE_HAVE_FMA 0
#define LUCIE_HAVE_FMA_NAME "multiply then add"
static float madd(float acc, float w, float x) {
    float product = w * x;
    return acc + product;
}
#endif

/* Step 2 of the contract: a balanced binary tree over the lanes in order,
 * ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)) + ... (destroys acc). */
static float sum_lanes(float *acc) {
    int width, k;
    for (width = DOT_LANES / 2; width > 0; width /= 2)
        for (k = 0; k < width; k++) acc[k] = acc[2 * k] + acc[2 * k + 1];
    return acc[0];
}

/* The loops are written the way compilers vectorise best: a 16-lane step on
 * advancing pointers, then the tail into the first lanes. */
static float dot_f32(const float *w, const float *x, int n) {
    float acc[DOT_LANES] = {0};
    int i, k;
    for (i = 0; i + DOT_LANES <= n; i += DOT_LANES, w += DOT_LANES, x += DOT_LANES)
        for (k = 0; k < DOT_LANES; k++) acc[k] = madd(acc[k], w[k], x[k]);
    for (k = 0; i + k < n; k++) acc[k] = madd(acc[k], w[k], x[k]);
    return sum_lanes(acc);
}

static float dot_bf16(const uint16_t *w, const float *x, int n) {
    float acc[DOT_LANES] = {0};
    int i, k;
    for (i = 0; i + DOT_LANES <= n; i += DOT_LANES, w += DOT_LANES, x += DOT_LANES)
        for (k = 0; k < DOT_LANES; k++) acc[k] = madd(acc[k], bf16_to_f32(w[k]), x[k]);
    for (k = 0; i + k < n; k++) acc[k] = madd(acc[k], bf16_to_f32(w[k]), x[k]);
    return sum_lanes(acc);
}

/* Rows [r_begin, r_end) of out = W x for n tokens, one dot product at a time:
 * rows outer, tokens inner, so a weight row is read from memory once and
 * reused from cache for every token of the batch. */
static void rows_f32_portable(float *out, const float *x, const float *w, int n, int rows, int cols, int r_begin,
                              int r_end) {
    int r, t;
    for (r = r_begin; r < r_end; r++)
        for (t = 0; t < n; t++)
            out[(size_t)t * rows + r] = dot_f32(w + (size_t)r * cols, x + (size_t)t * cols, cols);
}

static void rows_bf16_portable(float *out, const float *x, const uint16_t *w, int n, int rows, int cols,
                               int r_begin, int r_end) {
    int r, t;
    for (r = r_begin; r < r_end; r++)
        for (t = 0; t < n; t++)
            out[(size_t)t * rows + r] = dot_bf16(w + (size_t)r * cols, x + (size_t)t * cols, cols);
}

/* ---- the tiled SIMD kernel (AVX-512, AVX2 + FMA or NEON) ---------------
 *
 * Same arithmetic, reorganised for speed. A register tile of FLOAT_TILE_ROWS
 * weight rows x FLOAT_TILE_TOKENS tokens keeps all its lanes in registers, so
 * each weight vector loaded serves several tokens and each x vector several
 * rows. Around it, loops from outer to inner:
 *   blocks of FLOAT_BLOCK_ROWS rows: their weights are read from memory once;
 *   blocks of up to FLOAT_BLOCK_TOKENS tokens;
 *   passes of FLOAT_BLOCK_COLS columns: for a batch, the bf16 weights of the
 *     row block are first widened into an f32 panel that stays in L1, so the
 *     widening is paid once, not once per token tile (a batch is then
 *     limited by FMA throughput alone);
 *   token tiles, then row tiles: the micro-kernel.
 * The lanes of each output wait in a buffer between passes, so every lane
 * still takes its columns in increasing order. For one or a few tokens
 * (decoding) there is a single pass over the whole row, widening on the fly:
 * there is nothing to reuse, and the rows simply stream from memory.
 * Only whole 16-column chunks run in SIMD; the row tail and the adding up of
 * the lanes use the plain C code above, so the contract holds by
 * construction. Only vec16 (16 lanes) and six small functions differ between
 * instruction sets. Define LUCIE_NO_SIMD to build the plain C path only. */

/* Software prefetch (a hint: nothing on compilers without the builtin). */
static void prefetch_bytes(const void *p, size_t bytes) {
#if defined(__GNUC__)
    size_t i;
    for (i = 0; i < bytes; i += 64) __builtin_prefetch((const char *)p + i, 0, 3);
#else
    (void)p, (void)bytes;
#endif
}
static void prefetch_line_to_l2(const void *p) {
#if defined(__GNUC__)
    __builtin_prefetch(p, 0, 2);
#else
    (void)p;
#endif
}

/* The layout of a KV cache row of n values stored as type (lucie.h; section
 * 6 has the rest of the KV types), here because attention's kernels below
 * read rows in place: f32 and f16 rows are their n values; a q8 row is
 * ceil(n / 32) f32 scales, then n int8 codes, value i = code i x scale
 * i / 32. Rows follow each other unpadded. */
#define KV_Q8_GROUP 32
static int kv_q8_groups(int n) { return (n + KV_Q8_GROUP - 1) / KV_Q8_GROUP; }
static size_t kv_value_bytes(int type) { return type == LUCIE_KV_Q8 ? 1 : type == LUCIE_KV_F16 ? 2 : 4; }
/* the byte of a row where value i starts; the bytes of a row */
static size_t kv_value_offset(int type, int n, int i) {
    return (type == LUCIE_KV_Q8 ? (size_t)kv_q8_groups(n) * sizeof(float) : 0) + (size_t)i * kv_value_bytes(type);
}
static size_t kv_row_bytes(int type, int n) { return kv_value_offset(type, n, n); }
/* the scale of value i of a q8 row (scales are read with memcpy: rows are unpadded) */
static float kv_q8_scale(const void *row, int i) {
    float scale;
    memcpy(&scale, (const unsigned char *)row + (size_t)(i / KV_Q8_GROUP) * sizeof(float), sizeof scale);
    return scale;
}

#if defined(__GNUC__) && !defined(LUCIE_NO_SIMD) && LUCIE_HAVE_FMA &&                     \
    (defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__)) || \
     (defined(__aarch64__) && defined(__ARM_NEON)))
#define FLOAT_SIMD 1
#define FLOAT_INLINE inline __attribute__((always_inline))

#if defined(__aarch64__)
#include <arm_neon.h>
#define FLOAT_SIMD_NAME "neon"
#define FLOAT_TILE_ROWS 2 /* 32 registers: 2 x 2 x 4 accumulators + 2 x 4 weights + 4 x */
#define FLOAT_TILE_TOKENS 2
typedef struct {
    float32x4_t q[4];
} vec16;
static FLOAT_INLINE vec16 vec16_zero(void) {
    vec16 v;
    v.q[0] = v.q[1] = v.q[2] = v.q[3] = vdupq_n_f32(0.0f);
    return v;
}
static FLOAT_INLINE vec16 vec16_load(const float *p) {
    vec16 v;
    int j;
    for (j = 0; j < 4; j++) v.q[j] = vld1q_f32(p + 4 * j);
    return v;
}
static FLOAT_INLINE vec16 vec16_set1(float x) {
    vec16 v;
    v.q[0] = v.q[1] = v.q[2] = v.q[3] = vdupq_n_f32(x);
    return v;
}
static FLOAT_INLINE void vec16_store(float *p, vec16 v) {
    int j;
    for (j = 0; j < 4; j++) vst1q_f32(p + 4 * j, v.q[j]);
}
static FLOAT_INLINE vec16 vec16_fma(vec16 w, vec16 x, vec16 acc) {
    int j;
    for (j = 0; j < 4; j++) acc.q[j] = vfmaq_f32(acc.q[j], w.q[j], x.q[j]);
    return acc;
}
/* sum_lanes' tree: pairwise adds of adjacent lanes, level by level. */
static FLOAT_INLINE float vec16_sum_lanes(vec16 v) {
    float32x4_t pairs = vpaddq_f32(vpaddq_f32(v.q[0], v.q[1]), vpaddq_f32(v.q[2], v.q[3]));
    return vpadds_f32(vget_low_f32(vpaddq_f32(pairs, pairs)));
}
/* Lanes 0-15 of a and then of b, added in adjacent pairs: one level of
 * sum_lanes' tree for two vectors at once (float_rows16_short). */
static FLOAT_INLINE vec16 vec16_pair_sums(vec16 a, vec16 b) {
    vec16 r;
    r.q[0] = vpaddq_f32(a.q[0], a.q[1]);
    r.q[1] = vpaddq_f32(a.q[2], a.q[3]);
    r.q[2] = vpaddq_f32(b.q[0], b.q[1]);
    r.q[3] = vpaddq_f32(b.q[2], b.q[3]);
    return r;
}
static FLOAT_INLINE vec16 vec16_load_bf16(const uint16_t *p) {
    vec16 v;
    int j;
    for (j = 0; j < 2; j++) {
        uint16x8_t h = vld1q_u16(p + 8 * j);
        v.q[2 * j] = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16));
        v.q[2 * j + 1] = vreinterpretq_f32_u32(vshll_n_u16(vget_high_u16(h), 16));
    }
    return v;
}
/* IEEE halves (the f16 KV cache), widened exactly as half_to_float does. */
#define VEC16_HALF 1
static FLOAT_INLINE vec16 vec16_load_half(const uint16_t *p) {
    vec16 v;
    int j;
    for (j = 0; j < 4; j++) v.q[j] = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p + 4 * j)));
    return v;
}
/* 16 int8 codes as f32 (exact), and lane-wise products (the q8 KV cache). */
static FLOAT_INLINE vec16 vec16_load_int8(const signed char *p) {
    int8x16_t b = vld1q_s8((const int8_t *)p);
    int16x8_t lo = vmovl_s8(vget_low_s8(b)), hi = vmovl_s8(vget_high_s8(b));
    vec16 v;
    v.q[0] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo)));
    v.q[1] = vcvtq_f32_s32(vmovl_s16(vget_high_s16(lo)));
    v.q[2] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi)));
    v.q[3] = vcvtq_f32_s32(vmovl_s16(vget_high_s16(hi)));
    return v;
}
static FLOAT_INLINE vec16 vec16_mul(vec16 a, vec16 b) {
    int j;
    for (j = 0; j < 4; j++) a.q[j] = vmulq_f32(a.q[j], b.q[j]);
    return a;
}
#elif defined(__AVX512F__)
#include <immintrin.h>
#define FLOAT_SIMD_NAME "avx512"
#define FLOAT_TILE_ROWS 4   /* 4 x 6 accumulators + 4 weights + 1 x = 29 of the 32 registers */
#define FLOAT_TILE_TOKENS 6
typedef __m512 vec16;
static FLOAT_INLINE vec16 vec16_zero(void) { return _mm512_setzero_ps(); }
static FLOAT_INLINE vec16 vec16_load(const float *p) { return _mm512_loadu_ps(p); }
static FLOAT_INLINE vec16 vec16_set1(float x) { return _mm512_set1_ps(x); }
static FLOAT_INLINE void vec16_store(float *p, vec16 v) { _mm512_storeu_ps(p, v); }
static FLOAT_INLINE vec16 vec16_fma(vec16 w, vec16 x, vec16 acc) { return _mm512_fmadd_ps(w, x, acc); }
/* sum_lanes' tree on the two halves (see vec16_sum_halves below). */
static FLOAT_INLINE float vec16_sum_halves(__m256 lo, __m256 hi);
static FLOAT_INLINE float vec16_sum_lanes(vec16 v) {
    return vec16_sum_halves(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}
/* Lanes 0-15 of a and then of b, added in adjacent pairs: the even lanes of
 * the 32 plus the odd ones (float_rows16_short). */
static FLOAT_INLINE vec16 vec16_pair_sums(vec16 a, vec16 b) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    return _mm512_add_ps(_mm512_permutex2var_ps(a, even, b), _mm512_permutex2var_ps(a, odd, b));
}
/* bf16 is the top half of an f32: widening puts each 16-bit word in the high
 * half of a 32-bit lane and zeroes the low half (one permute with AVX-512BW). */
static FLOAT_INLINE vec16 vec16_load_bf16(const uint16_t *p) {
    __m256i words = _mm256_loadu_si256((const __m256i *)p);
#ifdef __AVX512BW__
    const __m512i spread = _mm512_set_epi16(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8, 7, 7, 6, 6,
                                            5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    return _mm512_castsi512_ps(
        _mm512_maskz_permutexvar_epi16((__mmask32)0xAAAAAAAAu, spread, _mm512_castsi256_si512(words)));
#else
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(words), 16));
#endif
}
#define VEC16_HALF 1
static FLOAT_INLINE vec16 vec16_load_half(const uint16_t *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}
static FLOAT_INLINE vec16 vec16_load_int8(const signed char *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}
static FLOAT_INLINE vec16 vec16_mul(vec16 a, vec16 b) { return _mm512_mul_ps(a, b); }
#else
#include <immintrin.h>
#define FLOAT_SIMD_NAME "avx2"
#define FLOAT_TILE_ROWS 2   /* 16 registers: 2 x 3 x 2 accumulators + 2 x 2 weights (x comes from memory) */
#define FLOAT_TILE_TOKENS 3
typedef struct {
    __m256 lo, hi; /* lanes 0-7, 8-15 */
} vec16;
static FLOAT_INLINE vec16 vec16_zero(void) {
    vec16 v;
    v.lo = v.hi = _mm256_setzero_ps();
    return v;
}
static FLOAT_INLINE vec16 vec16_load(const float *p) {
    vec16 v;
    v.lo = _mm256_loadu_ps(p);
    v.hi = _mm256_loadu_ps(p + 8);
    return v;
}
static FLOAT_INLINE vec16 vec16_set1(float x) {
    vec16 v;
    v.lo = v.hi = _mm256_set1_ps(x);
    return v;
}
static FLOAT_INLINE void vec16_store(float *p, vec16 v) {
    _mm256_storeu_ps(p, v.lo);
    _mm256_storeu_ps(p + 8, v.hi);
}
static FLOAT_INLINE vec16 vec16_fma(vec16 w, vec16 x, vec16 acc) {
    acc.lo = _mm256_fmadd_ps(w.lo, x.lo, acc.lo);
    acc.hi = _mm256_fmadd_ps(w.hi, x.hi, acc.hi);
    return acc;
}
static FLOAT_INLINE vec16 vec16_load_bf16(const uint16_t *p) {
    vec16 v;
    v.lo = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
    v.hi = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p + 8))), 16));
    return v;
}
#if defined(__F16C__)
#define VEC16_HALF 1
static FLOAT_INLINE vec16 vec16_load_half(const uint16_t *p) {
    vec16 v;
    v.lo = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    v.hi = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 8)));
    return v;
}
#endif
static FLOAT_INLINE vec16 vec16_load_int8(const signed char *p) {
    vec16 v;
    v.lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
    v.hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8))));
    return v;
}
static FLOAT_INLINE vec16 vec16_mul(vec16 a, vec16 b) {
    a.lo = _mm256_mul_ps(a.lo, b.lo);
    a.hi = _mm256_mul_ps(a.hi, b.hi);
    return a;
}
#endif

#if defined(__AVX2__) || defined(__AVX512F__)
/* sum_lanes' tree over lanes 0-7 (lo) and 8-15 (hi). hadd adds adjacent
 * pairs within each 128-bit half: the first gives the 8 pair sums (l0+l1,
 * l2+l3, l8+l9, l10+l11 | l4+l5, l6+l7, l12+l13, l14+l15), the second the
 * 4 sums of adjacent pairs of those; adding the 128-bit halves then pairs
 * (l0..l3)+(l4..l7) and (l8..l11)+(l12..l15), and a last hadd adds the two. */
static FLOAT_INLINE float vec16_sum_halves(__m256 lo, __m256 hi) {
    __m256 pairs = _mm256_hadd_ps(lo, hi), quads = _mm256_hadd_ps(pairs, pairs);
    __m128 octs = _mm_add_ps(_mm256_castps256_ps128(quads), _mm256_extractf128_ps(quads, 1));
    return _mm_cvtss_f32(_mm_hadd_ps(octs, octs));
}
#endif
#if !defined(__aarch64__) && !defined(__AVX512F__)
static FLOAT_INLINE float vec16_sum_lanes(vec16 v) { return vec16_sum_halves(v.lo, v.hi); }
/* Lanes 0-15 of a and then of b, added in adjacent pairs (float_rows16_short):
 * hadd(lo, hi) gives the pair sums of 0-3, 8-11, 4-7, 12-15; the 64-bit
 * permute puts them in order. */
static FLOAT_INLINE __m256 pair_sums8(__m256 lo, __m256 hi) {
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_hadd_ps(lo, hi)), 0xD8));
}
static FLOAT_INLINE vec16 vec16_pair_sums(vec16 a, vec16 b) {
    vec16 r;
    r.lo = pair_sums8(a.lo, a.hi);
    r.hi = pair_sums8(b.lo, b.hi);
    return r;
}
#endif

#define FLOAT_BLOCK_ROWS 8    /* a multiple of FLOAT_TILE_ROWS */
#define FLOAT_BLOCK_TOKENS 64 /* lanes buffer: 8 x 64 x 16 floats = 32 KB of stack */
#define FLOAT_BLOCK_COLS 512  /* f32 panel: 8 x 512 floats = 16 KB; a token tile of x: 12 KB */
#define FLOAT_PACK_MIN_TOKENS (FLOAT_TILE_TOKENS + 1) /* fewer tokens make one token tile: nothing to reuse */

/* The micro-kernel: the lanes of an R x T tile (weight rows w + r * w_stride,
 * tokens x + t * x_stride) take n_chunks more 16-column chunks. The lanes of
 * row r, token t live at lanes + (r * FLOAT_BLOCK_TOKENS + t) * 16 between
 * passes (`first`: start from zero instead). R and T are constants at every
 * call, so the loops unroll and the accumulators stay in registers. */
static FLOAT_INLINE void float_tile(const int R, const int T, const int w_bf16, float *lanes, const void *w,
                                    size_t w_stride, const float *x, size_t x_stride, int n_chunks, int first) {
    vec16 acc[FLOAT_TILE_ROWS][FLOAT_TILE_TOKENS], wv[FLOAT_TILE_ROWS];
    int r, t, i;
    for (r = 0; r < R; r++)
        for (t = 0; t < T; t++)
            acc[r][t] = first ? vec16_zero() : vec16_load(lanes + (r * FLOAT_BLOCK_TOKENS + t) * DOT_LANES);
    for (i = 0; i < n_chunks; i++) {
        size_t c = (size_t)i * DOT_LANES;
        for (r = 0; r < R; r++)
            wv[r] = w_bf16 ? vec16_load_bf16((const uint16_t *)w + r * w_stride + c)
                           : vec16_load((const float *)w + r * w_stride + c);
        for (t = 0; t < T; t++) {
            vec16 xv = vec16_load(x + t * x_stride + c);
            for (r = 0; r < R; r++) acc[r][t] = vec16_fma(wv[r], xv, acc[r][t]);
        }
    }
    for (r = 0; r < R; r++)
        for (t = 0; t < T; t++) vec16_store(lanes + (r * FLOAT_BLOCK_TOKENS + t) * DOT_LANES, acc[r][t]);
}

/* One pass over a block: every token tile times every row tile. The switch
 * turns the size of the last token tile into a constant. */
#define FLOAT_TOKENS_CASE(k)                                                                                 \
    case k:                                                                                                  \
        float_tile(FLOAT_TILE_ROWS, k < FLOAT_TILE_TOKENS ? k : FLOAT_TILE_TOKENS, w_bf16, l, wr, w_stride, \
                   xt, x_stride, n_chunks, first);                                                           \
        break
static FLOAT_INLINE void float_block_pass(const int w_bf16, float *lanes, const void *w, size_t w_stride,
                                          const float *x, size_t x_stride, int n_rows, int n_tokens, int n_chunks,
                                          int first) {
    size_t w_size = w_bf16 ? 2 : 4;
    int t, r;
    for (t = 0; t < n_tokens; t += FLOAT_TILE_TOKENS) {
        const float *xt = x + t * x_stride;
        for (r = 0; r < n_rows; r += FLOAT_TILE_ROWS) {
            const void *wr = (const char *)w + r * w_stride * w_size;
            float *l = lanes + (r * FLOAT_BLOCK_TOKENS + t) * DOT_LANES;
            switch (n_tokens - t) {
                FLOAT_TOKENS_CASE(1);
                FLOAT_TOKENS_CASE(2);
                FLOAT_TOKENS_CASE(3);
                FLOAT_TOKENS_CASE(4);
                FLOAT_TOKENS_CASE(5);
            default:
                float_tile(FLOAT_TILE_ROWS, FLOAT_TILE_TOKENS, w_bf16, l, wr, w_stride, xt, x_stride, n_chunks,
                           first);
            }
        }
    }
}
#undef FLOAT_TOKENS_CASE

/* Widens n_rows x (16 * n_chunks) bf16 weights (row stride w_stride) into
 * an f32 panel of row stride FLOAT_BLOCK_COLS. */
static void widen_panel(float *panel, const uint16_t *w, size_t w_stride, int n_rows, int n_chunks) {
    int r, i;
    for (r = 0; r < n_rows; r++)
        for (i = 0; i < n_chunks; i++)
            vec16_store(panel + r * FLOAT_BLOCK_COLS + i * DOT_LANES,
                        vec16_load_bf16(w + r * w_stride + (size_t)i * DOT_LANES));
}

/* Short rows (attention's scores: 128-column keys against a few queries):
 * there a dot product is a handful of FMAs and adding up its 16 lanes costs
 * as much again. So 16 rows are taken together for one token, and their 16
 * sums of lanes come out as one vector, one level of sum_lanes' tree for two
 * vectors at a time (vec16_pair_sums): 15 steps for 16 sums, the same adds in
 * the same order as sum_lanes on each. Rows [r0, r0 + 16) of f32 weights,
 * or of KV cache rows read as they are stored (vec16_load_row widens f16 and
 * q8 exactly as it loads them), cols a multiple of 16, for n tokens. */
#define FLOAT_SHORT_COLS 256
#define FLOAT_SHORT_TOKENS 4 /* tokens per pass: each weight vector loaded serves them all */
#ifdef VEC16_HALF
#define VEC16_HAS_HALF 1
#else
#define VEC16_HAS_HALF 0
#endif
/* Whether vec16_load_row reads rows stored as type (f16: where vec16 has
 * half loads), and whether the short-row kernel takes rows of cols of them. */
static int vec16_reads(int type) { return type != LUCIE_KV_F16 || VEC16_HAS_HALF; }
static int short_rows_take(int type, int cols) {
    return cols % DOT_LANES == 0 && cols <= FLOAT_SHORT_COLS && vec16_reads(type);
}
/* Columns i..i + 15 of row r of a block of rows of cols values stored as
 * type (LUCIE_KV_F32 / _F16 / _Q8: weights are f32), widened to f32 exactly
 * as the KV types' widen does; and the byte offset of those columns, for
 * asking for the same line one block on. */
static FLOAT_INLINE size_t row_offset(int type, size_t r, int cols, int i) {
    return r * kv_row_bytes(type, cols) + kv_value_offset(type, cols, i);
}
static FLOAT_INLINE vec16 vec16_load_row(const void *w, int type, size_t r, int cols, int i) {
    const unsigned char *row = (const unsigned char *)w + r * kv_row_bytes(type, cols), *at = row + kv_value_offset(type, cols, i);
#ifdef VEC16_HALF
    if (type == LUCIE_KV_F16) return vec16_load_half((const uint16_t *)(const void *)at);
#endif
    if (type == LUCIE_KV_Q8) return vec16_mul(vec16_load_int8((const signed char *)at), vec16_set1(kv_q8_scale(row, i)));
    return vec16_load((const float *)(const void *)at);
}
/* Runs TILES(t), t the LUCIE_KV_* constant equal to type, so that a kernel
 * taking the row type as a constant is compiled once per type (f16 where
 * vec16 has half loads). */
#ifdef VEC16_HALF
#define FOR_ROW_TYPE(type, TILES)                                                                         \
    if ((type) == LUCIE_KV_Q8) {                                                                          \
        TILES(LUCIE_KV_Q8)                                                                                \
    } else if ((type) == LUCIE_KV_F16) {                                                                  \
        TILES(LUCIE_KV_F16)                                                                               \
    } else {                                                                                              \
        TILES(LUCIE_KV_F32)                                                                               \
    }
#else
#define FOR_ROW_TYPE(type, TILES)                                                                         \
    if ((type) == LUCIE_KV_Q8) {                                                                          \
        TILES(LUCIE_KV_Q8)                                                                                \
    } else {                                                                                              \
        TILES(LUCIE_KV_F32)                                                                               \
    }
#endif
/* Whether columns i.. start a new 64-byte line of a row (asked for once). */
static FLOAT_INLINE int row_line_starts(int type, int i) { return i * kv_value_bytes(type) % 64 == 0; }

static FLOAT_INLINE void short_rows_tile(const int T, const int type, float *out, const float *x, const void *w,
                                         int rows, int cols, int r0, int t0, const unsigned char *next) {
    vec16 quads[4][FLOAT_SHORT_TOKENS]; /* [g][t]: rows 4g..4g+3 summed two levels up the tree */
    int g, t, r, i;
    for (g = 0; g < 4; g++) {
        vec16 acc[4][FLOAT_SHORT_TOKENS];
        for (r = 0; r < 4; r++)
            for (t = 0; t < T; t++) acc[r][t] = vec16_zero();
        for (i = 0; i < cols; i += DOT_LANES)
            for (r = 0; r < 4; r++) {
                size_t row = (size_t)(r0 + 4 * g + r);
                vec16 wv = vec16_load_row(w, type, row, cols, i);
                if (next && t0 == 0 && row_line_starts(type, i)) prefetch_line_to_l2(next + row_offset(type, row, cols, i));
                for (t = 0; t < T; t++) acc[r][t] = vec16_fma(wv, vec16_load(x + (size_t)(t0 + t) * cols + i), acc[r][t]);
            }
        for (t = 0; t < T; t++)
            quads[g][t] = vec16_pair_sums(vec16_pair_sums(acc[0][t], acc[1][t]), vec16_pair_sums(acc[2][t], acc[3][t]));
    }
    for (t = 0; t < T; t++)
        vec16_store(out + (size_t)(t0 + t) * rows + r0, vec16_pair_sums(vec16_pair_sums(quads[0][t], quads[1][t]),
                                                                         vec16_pair_sums(quads[2][t], quads[3][t])));
}

#define SHORT_ROWS_TILES(type)                                                                  \
    switch (n - t0) {                                                                           \
    case 1: short_rows_tile(1, type, out, x, w, rows, cols, r0, t0, next); break;               \
    case 2: short_rows_tile(2, type, out, x, w, rows, cols, r0, t0, next); break;               \
    case 3: short_rows_tile(3, type, out, x, w, rows, cols, r0, t0, next); break;               \
    default: short_rows_tile(FLOAT_SHORT_TOKENS, type, out, x, w, rows, cols, r0, t0, next);    \
    }
/* type: how the rows are stored (vec16_load_row): one that short_rows_take
 * takes (attention_reads_rows). */
static void float_rows16_short(float *out, const float *x, const void *w, int type, int n, int rows, int cols,
                               int r0, const unsigned char *next) {
    int t0;
    for (t0 = 0; t0 < n; t0 += FLOAT_SHORT_TOKENS) {
        FOR_ROW_TYPE(type, SHORT_ROWS_TILES)
    }
}
#undef SHORT_ROWS_TILES

/* Rows [r_begin, r_end) (a multiple of FLOAT_TILE_ROWS of them) for n tokens. */
static void float_rows_simd(float *out, const float *x, const void *w, int is_bf16, int n, int rows, int cols,
                            int r_begin, int r_end) {
    float lanes[FLOAT_BLOCK_ROWS * FLOAT_BLOCK_TOKENS * DOT_LANES] __attribute__((aligned(64)));
    float panel[FLOAT_BLOCK_ROWS * FLOAT_BLOCK_COLS] __attribute__((aligned(64)));
    size_t w_size = is_bf16 ? 2 : 4;
    int whole = cols / DOT_LANES * DOT_LANES; /* columns done in SIMD; the tail after them in C */
    int rb, tb, kb, r, t, k;
    for (rb = r_begin; rb < r_end; rb += FLOAT_BLOCK_ROWS) {
        int nr = r_end - rb < FLOAT_BLOCK_ROWS ? r_end - rb : FLOAT_BLOCK_ROWS;
        for (tb = 0; tb < n; tb += FLOAT_BLOCK_TOKENS) {
            int nt = n - tb < FLOAT_BLOCK_TOKENS ? n - tb : FLOAT_BLOCK_TOKENS;
            int pass = nt < FLOAT_PACK_MIN_TOKENS ? whole : FLOAT_BLOCK_COLS; /* columns per pass */
            const float *xb = x + (size_t)tb * cols;
            kb = 0;
            do { /* at least one pass, which zeroes the lanes */
                int chunks = (whole - kb < pass ? whole - kb : pass) / DOT_LANES;
                const char *wb = (const char *)w + ((size_t)rb * cols + kb) * w_size;
                if (!is_bf16) {
                    float_block_pass(0, lanes, wb, (size_t)cols, xb + kb, (size_t)cols, nr, nt, chunks, kb == 0);
                } else if (nt < FLOAT_PACK_MIN_TOKENS) {
                    float_block_pass(1, lanes, wb, (size_t)cols, xb + kb, (size_t)cols, nr, nt, chunks, kb == 0);
                } else {
                    widen_panel(panel, (const uint16_t *)wb, (size_t)cols, nr, chunks);
                    float_block_pass(0, lanes, panel, FLOAT_BLOCK_COLS, xb + kb, (size_t)cols, nr, nt, chunks,
                                     kb == 0);
                }
                kb += pass;
            } while (kb < whole);
            for (r = 0; r < nr; r++)
                for (t = 0; t < nt; t++) {
                    float *acc = lanes + (r * FLOAT_BLOCK_TOKENS + t) * DOT_LANES;
                    size_t row = (size_t)(rb + r) * cols + whole, tok = (size_t)(tb + t) * cols + whole;
                    if (whole == cols) { /* no tail: the lanes add up in registers (attention's 128-column rows) */
                        out[(size_t)(tb + t) * rows + rb + r] = vec16_sum_lanes(vec16_load(acc));
                        continue;
                    }
                    for (k = 0; whole + k < cols; k++) {
                        float wk = is_bf16 ? bf16_to_f32(((const uint16_t *)w)[row + k]) : ((const float *)w)[row + k];
                        acc[k] = madd(acc[k], wk, x[tok + k]);
                    }
                    out[(size_t)(tb + t) * rows + rb + r] = sum_lanes(acc);
                }
        }
    }
}
#endif

/* ---- the table entries ----------------------------------------------------
 * The f32 and bf16 kernel tables: the tiled kernel split over threads, and
 * the embedding lookup. */

static size_t no_input_bytes(int n, int cols, int group_size) {
    (void)n;
    (void)cols;
    (void)group_size;
    return 0;
}

/* One thread's share of a matmul: rows [r_begin, r_end). */
static void float_rows(float *out, const float *x, const void *w, int is_bf16, int n, int rows, int cols,
                       int r_begin, int r_end) {
#ifdef FLOAT_SIMD
    /* whole row tiles to the SIMD kernel; a few odd rows (small models only) to the plain one */
    int r_tiled;
    if (!is_bf16 && cols % DOT_LANES == 0 && cols <= FLOAT_SHORT_COLS)
        for (; r_begin + 16 <= r_end; r_begin += 16) float_rows16_short(out, x, w, LUCIE_KV_F32, n, rows, cols, r_begin, NULL);
    r_tiled = r_begin + (r_end - r_begin) / FLOAT_TILE_ROWS * FLOAT_TILE_ROWS;
    float_rows_simd(out, x, w, is_bf16, n, rows, cols, r_begin, r_tiled);
    r_begin = r_tiled;
#endif
    if (is_bf16) rows_bf16_portable(out, x, (const uint16_t *)w, n, rows, cols, r_begin, r_end);
    else rows_f32_portable(out, x, (const float *)w, n, rows, cols, r_begin, r_end);
}

typedef struct {
    float *out;
    const float *x;
    const void *w;
    int is_bf16, n, rows, cols;
} float_matmul_job;

static void float_matmul_units(void *job, int begin, int end, int worker) {
    const float_matmul_job *j = (const float_matmul_job *)job;
    int r_begin = begin * 16, r_end = end * 16 < j->rows ? end * 16 : j->rows;
    (void)worker;
    float_rows(j->out, j->x, j->w, j->is_bf16, j->n, j->rows, j->cols, r_begin, r_end);
}

/* The rows are cut into contiguous chunks of nearly equal size (whole
 * multiples of 16, so tiles stay aligned) that the threads take in turn, each
 * streaming its own part of the weights. */
static void float_matmul(const kernel_ctx *c, float *out, const float *x, const void *w, int is_bf16, int n,
                         int rows, int cols) {
    int units = (rows + 15) / 16, threads = threads_for(c, (double)n * rows * cols, MATMUL_MIN_WORK_PER_THREAD);
    float_matmul_job j;
    j.out = out;
    j.x = x;
    j.w = w;
    j.is_bf16 = is_bf16;
    j.n = n;
    j.rows = rows;
    j.cols = cols;
    kernel_split(c, threads, units, float_matmul_units, &j);
}

static void matmul_f32(const kernel_ctx *c, float *out, const float *x, const void *xq, const void *w, int n,
                       int rows, int cols, int group_size) {
    (void)xq;
    (void)group_size;
    float_matmul(c, out, x, w, 0, n, rows, cols);
}

static void matmul_bf16(const kernel_ctx *c, float *out, const float *x, const void *xq, const void *w, int n,
                        int rows, int cols, int group_size) {
    (void)xq;
    (void)group_size;
    float_matmul(c, out, x, w, 1, n, rows, cols);
}

static void embed_f32(float *out, const void *w, int row, int cols, int group_size) {
    (void)group_size;
    memcpy(out, (const float *)w + (size_t)row * cols, (size_t)cols * sizeof(float));
}

static void embed_bf16(float *out, const void *w, int row, int cols, int group_size) {
    const uint16_t *src = (const uint16_t *)w + (size_t)row * cols;
    int i;
    (void)group_size;
    for (i = 0; i < cols; i++) out[i] = bf16_to_f32(src[i]);
}

static const weight_kernels f32_kernels = {no_input_bytes, NULL, matmul_f32, embed_f32};
static const weight_kernels bf16_kernels = {no_input_bytes, NULL, matmul_bf16, embed_bf16};

/* ---- 4b. Quantized weights: q8 and q4 -------------------------------------
 *
 * A q8 or q4 weight stores each run of QUANT_GROUP = 32 consecutive values of
 * a row as small integer codes plus one f16 scale: w = (code - zero) * scale.
 *   q8: 8-bit codes, zero = 128, scale = max|w| / 127      8.5 bits per weight
 *   q4: 4-bit codes, zero = 8                              4.5 bits per weight
 * A q4 scale starts from w_max / -8 (w_max, the value of largest magnitude,
 * becomes code 0 and all 16 levels are used); the exporter also tries a few
 * other scales and least-squares refits and keeps the best (relative error
 * 8.6% -> 8.3% on Gaussian weights, KL divergence against f32 -5% on
 * stories260K; it costs export time only).
 * Measured on Gaussian, heavy-tailed and the trained stories260K weights,
 * groups of 32 beat groups of 64 by ~10% relative error in q4 for 0.25 more
 * bits per weight, and a q4 min/offset (asymmetric codes) gains ~6% error
 * for 0.5 more bits: not worth its bytes, as decoding speed is bytes read.
 * The codes are unsigned with an implicit zero point because the integer
 * dot-product instructions (x86 VPDPBUSD, AVX2 VPMADDUBSW) multiply unsigned
 * by signed bytes; the activations are the signed side.
 *
 * Layout. Rows are taken 16 at a time (a block; the last block of a tensor is
 * padded with zero rows) and a row's last group is padded with zeros, so any
 * shape works. A block of ng = ceil(cols / 32) groups is
 *   scales: ng x 16 f16, scale of (group g, row r) at index g * 16 + r
 *   codes:  ng groups; group g holds 8 "quads" of 64 bytes, quad k being
 *           4 consecutive codes (elements 4k..4k+3 of the group) of each of
 *           the 16 rows in turn (q8: byte k*64 + r*4 + j = element 4k + j).
 *           q4 packs quads k and k + 4 into the low and high nibbles of the
 *           same 64 bytes (byte c*64 + r*4 + j: low nibble = element 4c + j,
 *           high nibble = element 16 + 4c + j), 256 bytes per group.
 * Tensor bytes: ceil(rows / 16) * 16 * ng * 34 (q8) or * 18 (q4).
 * Why interleave rows: one 64-byte load holds 4 codes of 16 rows, and one
 * 4-byte piece of the activation, broadcast, is what each of those rows
 * multiplies, so a single VPDPBUSD does 64 multiply-adds into 16 per-row
 * sums. No horizontal reductions, the 16 per-row scales of a group are one
 * contiguous load, and a 16-row block of a 4096-wide matrix (70 KB at q8)
 * stays in L2 while a batch of tokens streams past it (prefill). The plain
 * layout (each row's groups in order) lets gcc and clang vectorise a group's
 * dot product by themselves, but only as a reduction: one horizontal sum per
 * row and group, several times the work of the interleaved kernel.
 *
 * Activations are quantized once per matmul input (prepare), to int8 with a
 * float scale per group of 32 (scale = max|x| / 127). The products then are
 *   sum_g (dw_g * dx_g) * (sum_i code_i * xq_i  -  zero * sum_i xq_i)
 * with exact int32 arithmetic inside a group and one f32 fused multiply-add
 * per group. The portable C below (quant_block_portable) is the definition;
 * the tiled kernel after it is written once over a small integer vector
 * layer with an AVX-512 VNNI, an AVX2, a NEON dot-product and a plain C
 * version (compilers do not find these instructions for the per-row form by
 * themselves). Every layer computes the same int32 sums and then the very
 * same float operations in the same order, so every path gives bit-identical
 * results (test/test_kernels.c, run for each path).
 *
 * The embedding table and the lm_head are kept at 8 bits in q4 files: see
 * quant_target_dtype().
 * ------------------------------------------------------------------------ */

#define QUANT_GROUP 32   /* weights per scale, along a row */
#define QUANT_ROWS 16    /* rows interleaved in a block */
#define QUANT_TOKENS 4   /* tokens at a time in the portable kernel */
#define Q8_ZERO 128
#define Q4_ZERO 8

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define QUANT_SIMD "avx512-vnni"
#define QUANT_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define QUANT_SIMD "avx2"
#define QUANT_AVX2 1
#elif defined(__aarch64__) && defined(__ARM_NEON) && defined(__ARM_FEATURE_DOTPROD)
#define QUANT_SIMD "neon-dotprod"
#define QUANT_NEON 1
#endif
#if defined(QUANT_AVX512) || defined(QUANT_AVX2)
#include <immintrin.h>
#elif defined(QUANT_NEON)
#include <arm_neon.h>
#endif

/* The layout's sizes, from the format's descriptor (4c). */
static int quant_groups(int cols) { return (cols + QUANT_GROUP - 1) / QUANT_GROUP; }
static int quant_zero(int dtype) { return weight_formats[dtype].zero; }
/* Bytes of one group of one row (its scale plus its codes). */
static size_t quant_unit_bytes(int dtype) { return (size_t)weight_formats[dtype].info.unit_bytes; }
static size_t quant_block_bytes(int dtype, int ng) { return (size_t)ng * QUANT_ROWS * quant_unit_bytes(dtype); }
static size_t quant_codes_per_group(int dtype) {
    return (size_t)(QUANT_ROWS * QUANT_GROUP / 8) * (size_t)weight_formats[dtype].code_bits;
}

/* Exact f16 -> f32 without touching denormal floats (which are slow on x86):
 * the value is mantissa * 2^(exponent - 25), both parts built as integers. */
static float half_to_float(uint16_t h) {
    uint32_t exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff, bits;
    float power, v;
    if (exponent) mantissa |= 0x400;
    else exponent = 1;
    bits = (exponent + 102) << 23; /* 2^(exponent - 25) */
    memcpy(&power, &bits, 4);
    v = (float)mantissa * power;
    return (h & 0x8000) ? -v : v;
}

/* f32 -> f16, rounding to nearest even; saturates at +-65504 (the caller
 * checks the range first; saturating just avoids ever writing inf/NaN). */
static uint16_t float_to_half(float f) {
    uint32_t x, sign;
    memcpy(&x, &f, 4);
    sign = (x >> 16) & 0x8000;
    x &= 0x7fffffff;
    if (x >= 0x477fe000) return (uint16_t)(sign | 0x7bff); /* >= 65504, inf, NaN */
    if (x < 0x38800000) { /* below 2^-14: a subnormal half, in units of 2^-24 */
        float v;
        memcpy(&v, &x, 4);
        return (uint16_t)(sign | (uint32_t)lrintf(v * 16777216.0f)); /* 1024 rounds up to the smallest normal */
    }
    x -= 112u << 23; /* rebias the exponent from 127 to 15 */
    return (uint16_t)(sign | ((x + 0x0fff + ((x >> 13) & 1)) >> 13));
}

static uint16_t load_u16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* v limited to [lo, hi]; NaN becomes lo, so that converting it is defined. */
static float clamp_float(float v, float lo, float hi) { return v > lo ? (v < hi ? v : hi) : lo; }

/* The nearest integer, ties to even (lrintf in the default rounding mode), for
 * |v| < 2^22 (callers clamp first), without a library call so that loops over
 * it vectorise: adding and subtracting 1.5 * 2^23 leaves no bits below the
 * units. Only when floats are evaluated as floats (not on x87) and without
 * -ffast-math, which would fold the two additions away. */
static int round_to_int(float v) {
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0 && !defined(__FAST_MATH__)
    const float shift = 12582912.0f;
    return (int)((v + shift) - shift);
#else
    return (int)lrintf(v);
#endif
}

/* Bytes of a [rows, cols] tensor of this dtype (lucie.h's formula: rows
 * padded to the row block, each row ceil(cols / group) units); 0 when the
 * format is unknown, the shape empty or too large for the kernels, the
 * header's group size not the format's, or on overflow. */
static int tensor_bytes(int dtype, size_t rows, size_t cols, int group_size, size_t *bytes) {
    const weight_format *f = weight_format_of(dtype);
    size_t units, block, group;
    if (!f || rows == 0 || cols == 0 || rows > INT_MAX || cols > INT_MAX) return 0;
    if (f->info.group > 1 && group_size != f->info.group) return 0;
    block = (size_t)f->info.row_block;
    group = (size_t)f->info.group;
    rows = (rows + block - 1) / block * block;
    return mul_size(rows, (cols + group - 1) / group, &units) && mul_size(units, (size_t)f->info.unit_bytes, bytes);
}

/* ---- the activations: int8 per group, quantized once per input ---- */

/* One token's prepared input: ng*32 int8 codes, then ng f32 scales, then
 * the zero-point corrections of its groups, ng int32 for q4 weights and ng
 * for q8: -zero x the sum of the group's codes. A group's integer sum of
 * products with weight codes minus their zero point is the sum of products
 * with the codes as stored plus that correction; stored ready to add, so
 * that the kernels start their sums from it (a load) rather than compute
 * and subtract it. Padded to 64 bytes. */
static size_t quant_input_stride(int cols) {
    size_t ng = (size_t)quant_groups(cols);
    return (ng * (QUANT_GROUP + 4 + 4 + 4) + 63) / 64 * 64;
}
static size_t quant_input_scale_at(int ng, int g) { return (size_t)ng * QUANT_GROUP + (size_t)g * 4; }
static size_t quant_input_correction_at(int ng, int q8, int g) {
    return (size_t)ng * (QUANT_GROUP + 4 + (q8 ? 4 : 0)) + (size_t)g * 4;
}

static size_t quant_input_bytes(int n, int cols, int group_size) {
    (void)group_size;
    if (n <= 0 || cols <= 0) return 0;
    return (size_t)n * quant_input_stride(cols);
}

static void quantize_input_row(const float *x, int cols, unsigned char *dst) {
    int ng = quant_groups(cols), g, i, j;
    signed char *codes = (signed char *)dst;
    float *scales = (float *)(dst + quant_input_scale_at(ng, 0));
    int32_t *q4_corrections = (int32_t *)(dst + quant_input_correction_at(ng, 0, 0));
    int32_t *q8_corrections = (int32_t *)(dst + quant_input_correction_at(ng, 1, 0));
    for (g = 0; g < ng; g++) {
        float v[QUANT_GROUP], lane_max[8] = {0}, amax = 0.0f, inv;
        int32_t sum = 0;
        /* fixed-size loops with 8 partial maxima: the compiler vectorises them */
        for (i = 0; i < QUANT_GROUP; i++) v[i] = g * QUANT_GROUP + i < cols ? x[g * QUANT_GROUP + i] : 0.0f;
        for (i = 0; i < QUANT_GROUP; i += 8)
            for (j = 0; j < 8; j++) lane_max[j] = fabsf(v[i + j]) > lane_max[j] ? fabsf(v[i + j]) : lane_max[j];
        for (j = 0; j < 8; j++) amax = lane_max[j] > amax ? lane_max[j] : amax;
        inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        for (i = 0; i < QUANT_GROUP; i++) {
            int q = round_to_int(clamp_float(v[i] * inv, -127.0f, 127.0f));
            codes[g * QUANT_GROUP + i] = (signed char)q;
            sum += q;
        }
        scales[g] = amax / 127.0f;
        q4_corrections[g] = -Q4_ZERO * sum;
        q8_corrections[g] = -Q8_ZERO * sum;
    }
}

typedef struct {
    const float *x;
    int cols;
    void *xq;
} prepare_job;

static void prepare_rows(void *job, int begin, int end, int worker) {
    const prepare_job *j = (const prepare_job *)job;
    size_t stride = quant_input_stride(j->cols);
    int t;
    (void)worker;
    for (t = begin; t < end; t++) quantize_input_row(j->x + (size_t)t * j->cols, j->cols, (unsigned char *)j->xq + t * stride);
}

static void quant_prepare(const kernel_ctx *c, const float *x, int n, int cols, int group_size, void *xq) {
    int threads = threads_for(c, (double)n * cols, ELEMENTWISE_MIN_WORK_PER_THREAD);
    prepare_job j;
    (void)group_size;
    j.x = x;
    j.cols = cols;
    j.xq = xq;
    kernel_split(c, threads, n, prepare_rows, &j);
}

/* ---- the portable kernel: the definition of the arithmetic ---- */

/* a * b + c rounded once when the hardware can, so that compilers' own
 * contraction choices cannot make the SIMD and portable paths differ. */
static float quant_madd(float a, float b, float c) {
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA) || defined(FP_FAST_FMAF)
    return fmaf(a, b, c);
#else
    float p = a * b;
    return p + c;
#endif
}

/* Where the code of row r, element i of a group lives among the group's
 * codes, for codes of `bits` bits: element i is in quad i / 4, quad k in the
 * 64-byte chunk k % bits at bit (k / bits) * bits of each byte. That is the
 * layout above: q8 quad k is chunk k; q4 quads k and k + 4 share chunk k,
 * low and high nibble. */
static size_t code_offset(int bits, int r, int i) { return (size_t)(i / 4 % bits) * 64 + (size_t)r * 4 + i % 4; }
static int code_shift(int bits, int i) { return i / 4 / bits * bits; }

/* sums[r] = sum_i code(row r, element i) * xc[i] over one group: the 16 rows
 * are independent lanes, so compilers vectorise the r loops (NEON's 4-way
 * deinterleaving loads fit the 4-byte interleave exactly). */
static void quant_group_sums(int dtype, const unsigned char *codes, const signed char *xc, int32_t sums[QUANT_ROWS]) {
    int k, r, j;
    for (r = 0; r < QUANT_ROWS; r++) sums[r] = 0;
    if (weight_format_of(dtype)->code_bits == 8) {
        for (k = 0; k < 8; k++)
            for (r = 0; r < QUANT_ROWS; r++)
                for (j = 0; j < 4; j++) sums[r] += codes[k * 64 + r * 4 + j] * xc[4 * k + j];
    } else {
        for (k = 0; k < 4; k++)
            for (r = 0; r < QUANT_ROWS; r++)
                for (j = 0; j < 4; j++) {
                    int b = codes[k * 64 + r * 4 + j];
                    sums[r] += (b & 15) * xc[4 * k + j] + (b >> 4) * xc[16 + 4 * k + j];
                }
    }
}

/* acc[t][r] = row r of the block . token t, for nt <= QUANT_TOKENS tokens. */
static void quant_block_portable(int dtype, const unsigned char *block, int ng, const unsigned char *xq,
                                 size_t stride, int nt, const unsigned char *end, float acc[QUANT_TOKENS][QUANT_ROWS]) {
    const unsigned char *codes = block + (size_t)ng * QUANT_ROWS * 2;
    int g, t, r;
    for (t = 0; t < nt; t++)
        for (r = 0; r < QUANT_ROWS; r++) acc[t][r] = 0.0f;
    for (g = 0; g < ng; g++) {
        float dw[QUANT_ROWS];
        prefetch_ahead(codes + g * quant_codes_per_group(dtype), quant_codes_per_group(dtype), end);
        for (r = 0; r < QUANT_ROWS; r++) dw[r] = half_to_float(load_u16(block + ((size_t)g * QUANT_ROWS + r) * 2));
        for (t = 0; t < nt; t++) {
            const unsigned char *x = xq + t * stride;
            int32_t sums[QUANT_ROWS], correction;
            float dx;
            memcpy(&dx, x + quant_input_scale_at(ng, g), 4);
            memcpy(&correction, x + quant_input_correction_at(ng, weight_format_of(dtype)->code_bits == 8, g), 4);
            quant_group_sums(dtype, codes + g * quant_codes_per_group(dtype),
                             (const signed char *)x + (size_t)g * QUANT_GROUP, sums);
            for (r = 0; r < QUANT_ROWS; r++)
                acc[t][r] = quant_madd((float)(sums[r] + correction), dw[r] * dx, acc[t][r]);
        }
    }
}

/* ---- the tiled kernel, over a small integer vector layer per ISA ----
 *
 * The portable kernel's arithmetic reorganised for speed, written once. A register tile
 * is the 16 rows of a block times a few tokens (QUANT_TILE_Q8, _Q4): each quad
 * of weight codes loaded (and, for q4, unpacked) serves every token of the
 * tile, and each 4-byte piece of a token's activations every row. Per group,
 * the tile's integer sums start from the token's zero-point correction, take
 * the 8 quads, and are then folded into the f32 accumulators with exactly
 * the portable kernel's float operations. Only the layer below differs
 * between instruction sets:
 *
 *   qquad  one quad of a block (4 codes of each of the 16 rows, 64 bytes),
 *          in the form the multiply wants;
 *   qsum   16 partial integer row sums;
 *   qquad_load_q8(p), qquad_load_q4(p, &low, &high)
 *          a q8 quad; the two q4 quads held in the nibbles of 64 bytes;
 *   qsum_start(c, q8), qsum_dot(s, w, x4, q8)
 *          sums starting from the correction at c (the token's for the
 *          group, quant_input_correction_at), or from 0 where the quads
 *          already carry no zero point (q8 codes with the top bit flipped)
 *          or the sums are too narrow for it (then qsum_fold adds it);
 *          s[r] += sum_j code(w, row r, j) * x4[j] (x4: 4 signed activation
 *          codes), exactly;
 *   qsum_fold(acc, s, q8, c, dw, dx)
 *          acc[r] = fma((float)(row r's sum of products with codes minus
 *          their zero point), dw[r] * dx, acc[r]);
 *   quant_scales(p, dw)   the 16 f16 scales of a group as floats (exact).
 * The portable layer right below defines each
 * operation in plain C; the SIMD layers compute the same integers (exact
 * arithmetic, in any order) and the same single-rounding float operations,
 * so the tiled kernel is bit-identical to quant_block_portable on every path
 * (test/test_kernels.c). */

static int32_t quant_load_i32(const unsigned char *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

static float quant_load_f32(const unsigned char *p) {
    float v;
    memcpy(&v, p, 4);
    return v;
}

#if defined(__GNUC__) || defined(__clang__)
#define QUANT_INLINE inline __attribute__((always_inline))
#else
#define QUANT_INLINE
#endif

#if defined(QUANT_AVX512)
/* AVX-512 VNNI: one zmm holds a quad; VPDPBUSD multiplies its unsigned codes
 * by 4 signed activation bytes and adds the 4 products to each row's int32,
 * without saturation: q8 codes stay unsigned, zero point 128. */
#define QUANT_TILE_Q8 8 /* tokens per tile: 8 sums + 2 quads + 1 broadcast of the 32 zmm registers */
#define QUANT_TILE_Q4 8
typedef struct {
    __m512i u;
} qquad;
typedef struct {
    __m512i v;
} qsum;
static QUANT_INLINE qquad qquad_load_q8(const unsigned char *p) {
    qquad w;
    w.u = _mm512_loadu_si512((const void *)p);
    return w;
}
static QUANT_INLINE void qquad_load_q4(const unsigned char *p, qquad *low, qquad *high) {
    __m512i b = _mm512_loadu_si512((const void *)p), mask = _mm512_set1_epi8(15);
    low->u = _mm512_and_si512(b, mask);
    high->u = _mm512_and_si512(_mm512_srli_epi16(b, 4), mask);
}
static QUANT_INLINE qsum qsum_start(const unsigned char *c, const int q8) {
    qsum s;
    (void)q8;
    s.v = _mm512_set1_epi32(quant_load_i32(c)); /* a broadcast load: no arithmetic */
    return s;
}
static QUANT_INLINE qsum qsum_dot(qsum s, qquad w, const unsigned char *x4, const int q8) {
    (void)q8;
    s.v = _mm512_dpbusd_epi32(s.v, w.u, _mm512_set1_epi32(quant_load_i32(x4)));
    return s;
}
static QUANT_INLINE void qsum_fold(float *acc, qsum s, const int q8, const unsigned char *c, const float *dw, float dx) {
    __m512 v = _mm512_cvtepi32_ps(s.v);
    (void)q8, (void)c;
    _mm512_storeu_ps(acc, _mm512_fmadd_ps(v, _mm512_mul_ps(_mm512_loadu_ps(dw), _mm512_set1_ps(dx)), _mm512_loadu_ps(acc)));
}
static QUANT_INLINE void quant_scales(const unsigned char *p, float *dw) {
    _mm512_storeu_ps(dw, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)));
}

#elif defined(QUANT_AVX2)
/* AVX2: a quad is two ymm (rows 0-7, rows 8-15). VPMADDUBSW multiplies
 * unsigned by signed bytes and adds pairs into int16, saturating; then
 * VPMADDWD by 1 adds the pairs of pairs into int32.
 *   q4: codes < 16, so a pair is at most 2 * 15 * 127 and the 8 quads of a
 *       group add at most 16 products into each int16 lane, |sum| <= 16 *
 *       15 * 127 = 30480 < 32767: the int16 sums are exact, and widen to
 *       int32 once per group (in qsum_fold) instead of once per quad;
 *   q8: codes up to 255 would saturate the pairs, so a quad holds |code -
 *       128| (unsigned) and code - 128, whose sign moves onto the activation
 *       (VPSIGNB): pairs stay within 2 * 128 * 127; int32 at every quad. */
/* tokens per tile: 6 x 2 q8 sums and 4 x 2 q4 sums, with the quads and the
 * broadcast activations, about fill the 16 ymm registers (4 to 8 tokens
 * measured within the noise of a shared machine on Zen 3; fewer are slower) */
#ifndef QUANT_TILE_Q8
#define QUANT_TILE_Q8 6
#endif
#ifndef QUANT_TILE_Q4
#define QUANT_TILE_Q4 4
#endif
typedef struct {
    __m256i u[2];    /* unsigned codes (q8: |code - 128|) */
    __m256i sign[2]; /* q8 only: code - 128, whose sign the activation takes */
} qquad;
typedef struct {
    __m256i v[2]; /* rows 0-7, 8-15: q4 int16 pair sums, q8 int32 */
} qsum;
static QUANT_INLINE qquad qquad_load_q8(const unsigned char *p) {
    qquad w;
    int h;
    for (h = 0; h < 2; h++) {
        w.sign[h] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(p + 32 * h)), _mm256_set1_epi8((char)0x80));
        w.u[h] = _mm256_abs_epi8(w.sign[h]);
    }
    return w;
}
static QUANT_INLINE void qquad_load_q4(const unsigned char *p, qquad *low, qquad *high) {
    const __m256i mask = _mm256_set1_epi8(15);
    int h;
    for (h = 0; h < 2; h++) {
        __m256i b = _mm256_loadu_si256((const __m256i *)(p + 32 * h));
        low->u[h] = _mm256_and_si256(b, mask);
        high->u[h] = _mm256_and_si256(_mm256_srli_epi16(b, 4), mask);
        low->sign[h] = high->sign[h] = _mm256_setzero_si256(); /* unused */
    }
}
static QUANT_INLINE qsum qsum_start(const unsigned char *c, const int q8) { /* q8: no zero point; q4: int16 */
    qsum s;
    (void)c, (void)q8;
    s.v[0] = s.v[1] = _mm256_setzero_si256();
    return s;
}
static QUANT_INLINE qsum qsum_dot(qsum s, qquad w, const unsigned char *x4, const int q8) {
    __m256i x = _mm256_set1_epi32(quant_load_i32(x4));
    int h;
    for (h = 0; h < 2; h++)
        if (q8)
            s.v[h] = _mm256_add_epi32(
                s.v[h], _mm256_madd_epi16(_mm256_maddubs_epi16(w.u[h], _mm256_sign_epi8(x, w.sign[h])), _mm256_set1_epi16(1)));
        else
            s.v[h] = _mm256_add_epi16(s.v[h], _mm256_maddubs_epi16(w.u[h], x));
    return s;
}
static QUANT_INLINE void qsum_fold(float *acc, qsum s, const int q8, const unsigned char *c, const float *dw, float dx) {
    int h;
    for (h = 0; h < 2; h++) {
        __m256i rows = q8 ? s.v[h] : _mm256_add_epi32(_mm256_madd_epi16(s.v[h], _mm256_set1_epi16(1)),
                                                       _mm256_set1_epi32(quant_load_i32(c)));
        __m256 v = _mm256_cvtepi32_ps(rows);
        _mm256_storeu_ps(acc + 8 * h, _mm256_fmadd_ps(v, _mm256_mul_ps(_mm256_loadu_ps(dw + 8 * h), _mm256_set1_ps(dx)),
                                                      _mm256_loadu_ps(acc + 8 * h)));
    }
}
static QUANT_INLINE void quant_scales(const unsigned char *p, float *dw) {
    _mm256_storeu_ps(dw, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)));
    _mm256_storeu_ps(dw + 8, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16))));
}

#elif defined(QUANT_NEON)
/* NEON dot products: a quad is four registers (rows 4i..4i+3 in register i,
 * 4 bytes per row: exactly SDOT's layout). SDOT multiplies signed bytes, so
 * q8 codes become code - 128 (top bit flipped); q4 codes (0..15) already are
 * valid signed bytes. */
#define QUANT_TILE_Q8 4 /* tokens per tile: 4 x 4 sums + 2 x 4 quad registers + broadcast, of 32 */
#define QUANT_TILE_Q4 4
typedef struct {
    int8x16_t c[4];
} qquad;
typedef struct {
    int32x4_t v[4];
} qsum;
static QUANT_INLINE qquad qquad_load_q8(const unsigned char *p) {
    qquad w;
    int i;
    for (i = 0; i < 4; i++) w.c[i] = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(p + 16 * i), vdupq_n_u8(0x80)));
    return w;
}
static QUANT_INLINE void qquad_load_q4(const unsigned char *p, qquad *low, qquad *high) {
    int i;
    for (i = 0; i < 4; i++) {
        uint8x16_t b = vld1q_u8(p + 16 * i);
        low->c[i] = vreinterpretq_s8_u8(vandq_u8(b, vdupq_n_u8(15)));
        high->c[i] = vreinterpretq_s8_u8(vshrq_n_u8(b, 4));
    }
}
static QUANT_INLINE qsum qsum_start(const unsigned char *c, const int q8) { /* q8: no zero point */
    qsum s;
    s.v[0] = s.v[1] = s.v[2] = s.v[3] = vdupq_n_s32(q8 ? 0 : quant_load_i32(c));
    return s;
}
static QUANT_INLINE qsum qsum_dot(qsum s, qquad w, const unsigned char *x4, const int q8) {
    int8x16_t x = vreinterpretq_s8_s32(vdupq_n_s32(quant_load_i32(x4)));
    int i;
    (void)q8;
    for (i = 0; i < 4; i++) s.v[i] = vdotq_s32(s.v[i], w.c[i], x);
    return s;
}
static QUANT_INLINE void qsum_fold(float *acc, qsum s, const int q8, const unsigned char *c, const float *dw, float dx) {
    int i;
    (void)q8, (void)c;
    for (i = 0; i < 4; i++) {
        float32x4_t v = vcvtq_f32_s32(s.v[i]);
        vst1q_f32(acc + 4 * i, vfmaq_f32(vld1q_f32(acc + 4 * i), v, vmulq_n_f32(vld1q_f32(dw + 4 * i), dx)));
    }
}
static QUANT_INLINE void quant_scales(const unsigned char *p, float *dw) {
    int i;
    for (i = 0; i < 4; i++) vst1q_f32(dw + 4 * i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)(p + 8 * i)))));
}

#else
/* The portable layer: the definition of each operation. */
#define QUANT_TILE_Q8 4
#define QUANT_TILE_Q4 4
typedef struct {
    unsigned char u[64]; /* byte 4r + j: code j of row r */
} qquad;
typedef struct {
    int32_t v[QUANT_ROWS];
} qsum;
static qquad qquad_load_q8(const unsigned char *p) {
    qquad w;
    memcpy(w.u, p, 64);
    return w;
}
static void qquad_load_q4(const unsigned char *p, qquad *low, qquad *high) {
    int i;
    for (i = 0; i < 64; i++) {
        low->u[i] = p[i] & 15;
        high->u[i] = p[i] >> 4;
    }
}
static qsum qsum_start(const unsigned char *c, const int q8) {
    qsum s;
    int r;
    (void)q8;
    for (r = 0; r < QUANT_ROWS; r++) s.v[r] = quant_load_i32(c);
    return s;
}
static qsum qsum_dot(qsum s, qquad w, const unsigned char *x4, const int q8) {
    int r, j;
    (void)q8;
    for (r = 0; r < QUANT_ROWS; r++)
        for (j = 0; j < 4; j++) s.v[r] += w.u[4 * r + j] * (signed char)x4[j];
    return s;
}
static void qsum_fold(float *acc, qsum s, const int q8, const unsigned char *c, const float *dw, float dx) {
    int r;
    (void)q8, (void)c;
    for (r = 0; r < QUANT_ROWS; r++) acc[r] = quant_madd((float)s.v[r], dw[r] * dx, acc[r]);
}
static void quant_scales(const unsigned char *p, float *dw) {
    int r;
    for (r = 0; r < QUANT_ROWS; r++) dw[r] = half_to_float(load_u16(p + 2 * r));
}
#endif

#define QUANT_TILE_MAX 8 /* the most tokens a tile may have: what quant_block_tiled dispatches */

/* The micro-kernel: acc[t] = the 16 rows of the block . token t, for T
 * tokens (xq, stride apart). T and q8 are constants at every call, so the
 * loops unroll and the sums stay in registers. */
static QUANT_INLINE void quant_tile(const int T, const int q8, const unsigned char *block, int ng,
                                    const unsigned char *xq, size_t stride, const unsigned char *end,
                                    float acc[QUANT_TILE_MAX][QUANT_ROWS]) {
    const unsigned char *codes = block + (size_t)ng * QUANT_ROWS * 2;
    const size_t group_bytes = q8 ? 512 : 256;
    int g, t, k, r;
    for (t = 0; t < T; t++)
        for (r = 0; r < QUANT_ROWS; r++) acc[t][r] = 0.0f;
    for (g = 0; g < ng; g++) {
        const unsigned char *gc = codes + g * group_bytes, *xg = xq + (size_t)g * QUANT_GROUP;
        float dw[QUANT_ROWS];
        qsum s[QUANT_TILE_MAX];
        prefetch_ahead(gc, group_bytes, end);
        quant_scales(block + (size_t)g * QUANT_ROWS * 2, dw);
        for (t = 0; t < T; t++) s[t] = qsum_start(xq + t * stride + quant_input_correction_at(ng, q8, g), q8);
        if (q8) {
            for (k = 0; k < 8; k++) {
                qquad w = qquad_load_q8(gc + 64 * k);
                for (t = 0; t < T; t++) s[t] = qsum_dot(s[t], w, xg + t * stride + 4 * k, 1);
            }
        } else {
            for (k = 0; k < 4; k++) {
                qquad low, high;
                qquad_load_q4(gc + 64 * k, &low, &high);
                for (t = 0; t < T; t++) {
                    s[t] = qsum_dot(s[t], low, xg + t * stride + 4 * k, 0);
                    s[t] = qsum_dot(s[t], high, xg + t * stride + 16 + 4 * k, 0);
                }
            }
        }
        for (t = 0; t < T; t++) {
            const unsigned char *x = xq + t * stride;
            qsum_fold(acc[t], s[t], q8, x + quant_input_correction_at(ng, q8, g), dw,
                      quant_load_f32(x + quant_input_scale_at(ng, g)));
        }
    }
}

/* Rows [r0, r0 + m) of out for n tokens, from one block: token tiles in
 * turn, the block's weights staying in cache between them. The switch turns
 * the size of the last tile into a constant. */
#define QUANT_TILE_CASE(k)                                                                                     \
    case k:                                                                                                    \
        if (q8) quant_tile(k < QUANT_TILE_Q8 ? k : QUANT_TILE_Q8, 1, block, ng, x, stride, end, acc);       \
        else quant_tile(k < QUANT_TILE_Q4 ? k : QUANT_TILE_Q4, 0, block, ng, x, stride, end, acc);          \
        break
static void quant_block_tiled(int q8, const unsigned char *block, int ng, const unsigned char *xq, size_t stride,
                              int n, const unsigned char *end, float *out, int rows, int r0, int m) {
    const int tile = q8 ? QUANT_TILE_Q8 : QUANT_TILE_Q4;
    int t0, t, r;
    for (t0 = 0; t0 < n; t0 += tile) {
        float acc[QUANT_TILE_MAX][QUANT_ROWS];
        const unsigned char *x = xq + (size_t)t0 * stride;
        int nt = n - t0 < tile ? n - t0 : tile;
        switch (nt) {
            QUANT_TILE_CASE(1);
            QUANT_TILE_CASE(2);
            QUANT_TILE_CASE(3);
            QUANT_TILE_CASE(4);
            QUANT_TILE_CASE(5);
            QUANT_TILE_CASE(6);
            QUANT_TILE_CASE(7);
            QUANT_TILE_CASE(8);
        }
        for (t = 0; t < nt; t++)
            for (r = 0; r < m; r++) out[(size_t)(t0 + t) * rows + r0 + r] = acc[t][r];
    }
}
#undef QUANT_TILE_CASE

/* ---- matmul, embedding, kernel tables ---- */

/* out[t * rows + r] = W[r] . x[t]: threads take chunks of 16-row blocks in
 * turn; each block meets a pass's worth of the batch's tokens, so its weights
 * are read from memory once per pass and from cache for the rest of it. A
 * pass takes as many tokens as have about QUANT_PASS_BYTES of prepared
 * activations, which then stay in a core's L2 while the blocks stream by
 * (the whole of a long prompt's would not: 512 tokens of 4096 columns, 2.9
 * MB, ran 18% slower from the last-level cache). Work items are (pass,
 * block) pairs, pass-major, so a thread's run of items shares one pass.
 * portable = 1 runs the definition (quant_block_portable) instead of the
 * tiled kernel (the tests compare). */
#ifndef QUANT_PASS_BYTES /* (test_kernels makes it small, so that its products take several passes) */
#define QUANT_PASS_BYTES (1 << 20)
#endif
typedef struct {
    int dtype, portable, is_q8, ng, rows, n, n_blocks, pass;
    size_t block_bytes, stride;
    float *out;
    const void *xq, *w;
} quant_matmul_job;

/* Items are (pass, block of rows) pairs, pass-major. */
static void quant_matmul_items(void *job, int begin, int end, int worker) {
    const quant_matmul_job *j = (const quant_matmul_job *)job;
    const unsigned char *w_end = (const unsigned char *)j->w + (size_t)j->n_blocks * j->block_bytes;
    int item;
    (void)worker;
    for (item = begin; item < end; item++) {
        int b = item % j->n_blocks, first = item / j->n_blocks * j->pass;
        int count = j->n - first < j->pass ? j->n - first : j->pass;
        const unsigned char *block = (const unsigned char *)j->w + (size_t)b * j->block_bytes;
        const unsigned char *x = (const unsigned char *)j->xq + (size_t)first * j->stride;
        int r0 = b * QUANT_ROWS, m = j->rows - r0 < QUANT_ROWS ? j->rows - r0 : QUANT_ROWS, t0, t, r;
        if (!j->portable) {
            quant_block_tiled(j->is_q8, block, j->ng, x, j->stride, count, w_end, j->out + (size_t)first * j->rows,
                              j->rows, r0, m);
            continue;
        }
        for (t0 = 0; t0 < count; t0 += QUANT_TOKENS) {
            float acc[QUANT_TOKENS][QUANT_ROWS];
            int nt = count - t0 < QUANT_TOKENS ? count - t0 : QUANT_TOKENS;
            quant_block_portable(j->dtype, block, j->ng, x + (size_t)t0 * j->stride, j->stride, nt, w_end, acc);
            for (t = 0; t < nt; t++)
                for (r = 0; r < m; r++) j->out[(size_t)(first + t0 + t) * j->rows + r0 + r] = acc[t][r];
        }
    }
}

static void quant_matmul(const kernel_ctx *c, int dtype, float *out, const void *xq, const void *w, int n, int rows,
                         int cols, int portable) {
    int threads = threads_for(c, (double)n * rows * cols, MATMUL_MIN_WORK_PER_THREAD), n_items;
    quant_matmul_job j;
    if (n <= 0) return;
    j.dtype = dtype;
    j.portable = portable;
    j.is_q8 = weight_format_of(dtype)->code_bits == 8;
    j.ng = quant_groups(cols);
    j.rows = rows;
    j.n = n;
    j.n_blocks = (rows + QUANT_ROWS - 1) / QUANT_ROWS;
    j.block_bytes = quant_block_bytes(dtype, j.ng);
    j.stride = quant_input_stride(cols);
    j.pass = (int)(QUANT_PASS_BYTES / j.stride) / QUANT_TILE_MAX * QUANT_TILE_MAX; /* whole tiles, at least one */
    if (j.pass < QUANT_TILE_MAX) j.pass = QUANT_TILE_MAX;
    if (j.pass > n) j.pass = n;
    j.out = out;
    j.xq = xq;
    j.w = w;
    n_items = (n + j.pass - 1) / j.pass * j.n_blocks;
    kernel_split(c, threads, n_items, quant_matmul_items, &j);
}

static void q8_matmul(const kernel_ctx *c, float *out, const float *x, const void *xq, const void *w, int n, int rows,
                      int cols, int group_size) {
    (void)x;
    (void)group_size;
    quant_matmul(c, LUCIE_DT_Q8, out, xq, w, n, rows, cols, 0);
}

static void q4_matmul(const kernel_ctx *c, float *out, const float *x, const void *xq, const void *w, int n, int rows,
                      int cols, int group_size) {
    (void)x;
    (void)group_size;
    quant_matmul(c, LUCIE_DT_Q4, out, xq, w, n, rows, cols, 0);
}

/* Row `row` of a quantized tensor as floats (the embedding lookup). */
static void quant_embed_row(int dtype, float *out, const void *w, int row, int cols) {
    int ng = quant_groups(cols), r = row % QUANT_ROWS, g, i;
    int zero = quant_zero(dtype), bits = weight_formats[dtype].code_bits, mask = (1 << bits) - 1;
    const unsigned char *block = (const unsigned char *)w + (size_t)(row / QUANT_ROWS) * quant_block_bytes(dtype, ng);
    const unsigned char *codes = block + (size_t)ng * QUANT_ROWS * 2;
    for (g = 0; g < ng; g++) {
        const unsigned char *group = codes + (size_t)g * quant_codes_per_group(dtype);
        float dw = half_to_float(load_u16(block + ((size_t)g * QUANT_ROWS + r) * 2));
        int n = cols - g * QUANT_GROUP < QUANT_GROUP ? cols - g * QUANT_GROUP : QUANT_GROUP;
        for (i = 0; i < n; i++) {
            int code = (group[code_offset(bits, r, i)] >> code_shift(bits, i)) & mask;
            out[g * QUANT_GROUP + i] = (float)(code - zero) * dw;
        }
    }
}

static void q8_embed_row(float *out, const void *w, int row, int cols, int group_size) {
    (void)group_size;
    quant_embed_row(LUCIE_DT_Q8, out, w, row, cols);
}

static void q4_embed_row(float *out, const void *w, int row, int cols, int group_size) {
    (void)group_size;
    quant_embed_row(LUCIE_DT_Q4, out, w, row, cols);
}

/* q8 and q4 share the prepared input: q/k/v of any mix of the two reuse it. */
static const weight_kernels q8_kernels = {quant_input_bytes, quant_prepare, q8_matmul, q8_embed_row};
static const weight_kernels q4_kernels = {quant_input_bytes, quant_prepare, q4_matmul, q4_embed_row};

/* ---- 4c. The weight formats: one descriptor each ----
 * The one table of weight formats (struct weight_format, top of this
 * section). Indexed by the file's dtype number; entry 0 (untyped bytes) is
 * not a weight format. The group quantizers are in section 10. */

static uint16_t q8_quantize_group(const weight_format *f, const float *v, unsigned char *codes);
static uint16_t q4_quantize_group(const weight_format *f, const float *v, unsigned char *codes);

static const weight_format weight_formats[N_WEIGHT_FORMATS] = {
    {LUCIE_DT_BYTES, {NULL, 0, 0, 0, 0}, NULL, 0, 0, 0, 0, LUCIE_DT_BYTES, NULL},
    {LUCIE_DT_F32, {"f32", 1, 4, 1, 0}, &f32_kernels, 0, 0, 0, 0, LUCIE_DT_F32, NULL},
    {LUCIE_DT_BF16, {"bf16", 1, 2, 1, 0}, &bf16_kernels, 0, 0, 0, 0, LUCIE_DT_BF16, NULL},
    {LUCIE_DT_Q8, {"q8", QUANT_GROUP, 2 + QUANT_GROUP, QUANT_ROWS, 1}, &q8_kernels, 8, Q8_ZERO, -127, 127,
     LUCIE_DT_Q8, q8_quantize_group},
    {LUCIE_DT_Q4, {"q4", QUANT_GROUP, 2 + QUANT_GROUP / 2, QUANT_ROWS, 1}, &q4_kernels, 4, Q4_ZERO, -8, 7,
     LUCIE_DT_Q8, q4_quantize_group},
};

/* The format of a file dtype, or NULL for untyped bytes and unknown numbers. */
static const weight_format *weight_format_of(int dtype) {
    return dtype > LUCIE_DT_BYTES && dtype < N_WEIGHT_FORMATS ? &weight_formats[dtype] : NULL;
}

static const weight_kernels *kernels_for(int dtype) { return weight_format_of(dtype)->kernels; }

/* Whether format a stores fewer bytes per weight than format b. */
static int format_narrower(const weight_format *a, const weight_format *b) {
    return (long)a->info.unit_bytes * b->info.group < (long)b->info.unit_bytes * a->info.group;
}

const lucie_dtype_info *lucie_dtype(int dtype) {
    const weight_format *f = weight_format_of(dtype);
    return f ? &f->info : NULL;
}

int lucie_dtype_from_name(const char *name) {
    int d;
    for (d = LUCIE_DT_BYTES + 1; name && d < N_WEIGHT_FORMATS; d++)
        if (strcmp(weight_formats[d].info.name, name) == 0) return d;
    return LUCIE_EINVAL;
}

/* What this build computes with: the kernels compiled in and the threads. */
#ifdef FLOAT_SIMD
#define BUILD_FLOAT_KERNELS FLOAT_SIMD_NAME
#else
#define BUILD_FLOAT_KERNELS "portable"
#endif
#ifdef QUANT_SIMD
#define BUILD_QUANT_KERNELS QUANT_SIMD
#else
#define BUILD_QUANT_KERNELS "portable"
#endif
#if !POOL_THREADS
#define BUILD_THREADS "none (LUCIE_NO_THREADS: one thread)"
#elif defined(_WIN32)
#define BUILD_THREADS "Windows threads"
#else
#define BUILD_THREADS "POSIX threads"
#endif

const char *lucie_build_info(void) {
    return "lucie " LUCIE_VERSION "; float kernels: " BUILD_FLOAT_KERNELS "; quantized kernels: " BUILD_QUANT_KERNELS
           "; fma: " LUCIE_HAVE_FMA_NAME "; threads: " BUILD_THREADS;
}

/* ========================================================================
 * 5. Loading a model
 *
 * lucie_open() checks the header and the entry table (section 2), reads the
 * tokenizer (section 3), then binds every tensor the config calls for to its
 * bytes in the file, checking its dtype and exact size against the weight
 * formats of section 4. After that the mapped bytes are trusted.
 ======================================================================== */

static int read_entries(const file_view *f, uint32_t n_entries, const lucie_config *c, file_entry **out, char *err,
                        size_t err_size) {
    file_entry *e = (file_entry *)calloc(n_entries, sizeof *e);
    uint64_t table_end = HEADER_SIZE + (uint64_t)n_entries * ENTRY_SIZE;
    uint32_t i, j, narrowest = 0; /* 1 + index of the tensor of the narrowest format */
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
        {   /* names are echoed in messages: no control characters */
            size_t k;
            for (k = 0; p[k]; k++)
                if (p[k] < 0x20 || p[k] == 0x7f) {
                    set_error(err, err_size, "entry %u: name contains control characters", i);
                    goto fail;
                }
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
        if (!weight_format_of(e[i].dtype) || e[i].rows == 0 || e[i].cols == 0 || e[i].rows > MAX_VOCAB ||
            e[i].cols > MAX_DIM ||
            !tensor_bytes(e[i].dtype, e[i].rows, e[i].cols, c->group_size, &expect) || expect != e[i].size) {
            set_error(err, err_size, "entry '%s': dtype %d, shape [%u, %u] and size %llu do not agree", e[i].name,
                      e[i].dtype, e[i].rows, e[i].cols, (unsigned long long)e[i].size);
            goto fail;
        }
        if (!narrowest || format_narrower(weight_format_of(e[i].dtype), weight_format_of(e[narrowest - 1].dtype)))
            narrowest = i + 1;
    }
    /* The header's weight type names the narrowest format of the tensors (a
     * q4 file keeps its embeddings at q8, its norms at f32). */
    if (narrowest && e[narrowest - 1].dtype != c->weight_type) {
        const lucie_dtype_info *said = lucie_dtype(c->weight_type);
        set_error(err, err_size, "header: weight type %s (%d), but tensor '%s' is %s", said ? said->name : "unknown",
                  c->weight_type, e[narrowest - 1].name, lucie_dtype(e[narrowest - 1].dtype)->name);
        goto fail;
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
 * 6. Sessions: the state of one conversation
 *
 * A session owns what one sequence needs beyond the shared, read-only model:
 * the KV cache, the activation buffers of a batch, the RoPE tables for its
 * context, the sampler settings and RNG (the sampling itself is section 8),
 * and the tokens seen so far. It can be rewound, saved and restored.
 ======================================================================== */

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

/* The input the prepared activations xq were made from, and how: valid
 * until that buffer is written (input_written). */
typedef struct {
    const float *input;
    void (*by)(const kernel_ctx *c, const float *x, int n, int cols, int group_size, void *xq);
    int n, cols;
} prepared_input;

/* ---- threads that never collapse: measuring which count is faster ----
 *
 * threads_for (section 4) keeps work too small for a second thread on one.
 * That is not enough on a busy machine: when another process keeps a core
 * busy, our threads share the cores with it, and a job whose item is held
 * by a thread the OS preempted waits for that thread's next turn (the pool
 * spares the caller only the wait for threads that have not started). With
 * OpenMP's barriers, a layer of a mid-size model (dozens of jobs per token)
 * ran several times slower on 2 threads than on 1 (test/bench_threads.py).
 * Which is faster depends on the machine's load right now, so the session
 * measures it on the first matrix of each layer (q_proj): a probe runs that product twice, with all the
 * session's threads and with one, and the layer goes on with the faster
 * (by the median of its last three times per token); between probes the product
 * runs once with the current choice and adds to its recent times. The
 * probe is tried again now and then, more rarely the further apart the two
 * were, so the session follows the load as it changes. A probe costs one
 * extra product, never a whole layer on the wrong count; on a busy machine
 * that product may still wait for a preempted thread (README, "Threads").
 * One thread goes first, so that the first touch of the buffers never
 * counts against all threads, and the threads are started with the session
 * (pool_new), not in the first probe. Decoding (one token) and batches
 * (prefill) are measured apart. The thread count changes no result (every output element is computed by the
 * same code whatever the split, and running a product twice writes the same
 * values). */
#define TUNER_SAMPLES 3 /* each choice's time is the median of its last 3 samples */

typedef struct {
    double recent[2][TUNER_SAMPLES]; /* q_proj's latest seconds per token: [0] one thread, [1] all */
    int samples[2];                  /* how many were taken (the all-thread warm-up not counted) */
    int warmed_up;                   /* the first all-thread sample (not counted) was taken */
    int until_probe;                 /* layers to run before the next probe */
} thread_tuner;

#define TUNER_PROBE_EVERY 32 /* layers between probes when both choices are as fast, times the ratio */
#define TUNER_PROBE_MAX 1024

static int tuner_probe_due(thread_tuner *t) {
    if (!t->samples[0] || !t->samples[1]) return 1;
    return --t->until_probe <= 0;
}

/* A choice's time: the median of its last three samples (fewer at the
 * start: the one, or the mean of the two; before the first all-thread
 * sample, the warm-up, which recent[1][0] then holds). One sample slowed by a moment
 * of the machine's other work (a thread descheduled once) moves nothing;
 * a load that lasts makes most samples slow and moves the median. A moving
 * average took one slow all-thread sample for a trend and ran several
 * tokens on one thread (7B q4 decoding on a quiet 2-core VM: 5.0-7.3 tok/s,
 * 7.4-8.7 with all threads always). */
static double tuner_seconds(const thread_tuner *t, int choice) {
    const double *r = t->recent[choice];
    double lo, hi;
    if (t->samples[choice] < TUNER_SAMPLES) return t->samples[choice] <= 1 ? r[0] : 0.5 * (r[0] + r[1]);
    lo = r[0] < r[1] ? r[0] : r[1];
    hi = r[0] < r[1] ? r[1] : r[0];
    return r[2] < lo ? lo : r[2] > hi ? hi : r[2];
}

/* 1: all the threads (also before the first probe); 0: one thread, when it
 * is the faster. (Keeping all threads unless one was faster by 10% left a
 * job beside a CPU hog at up to 10% below one thread, where all threads
 * measured 5-10% slower: a prefill of 64 tokens of a mid-size q4 model ran
 * at 0.92x of one thread with that margin, 0.95x without, medians of 20
 * alternating runs; idle, the same.) */
static int tuner_best(const thread_tuner *t) {
    return !t->samples[0] || tuner_seconds(t, 1) <= tuner_seconds(t, 0);
}

/* The first all-thread sample is a warm-up: it may include waking the
 * threads, so it only decides the rest of its layer (beside a busy core,
 * one thread then) and the next sample replaces it (tuner_schedule probes
 * again at once). */
static void tuner_record(thread_tuner *t, int choice, double seconds_per_token) {
    if (choice == 1 && !t->warmed_up) {
        t->warmed_up = 1;
        t->recent[1][0] = seconds_per_token;
        return;
    }
    t->recent[choice][t->samples[choice] % TUNER_SAMPLES] = seconds_per_token;
    t->samples[choice]++;
}

/* After a probe: the further apart the two choices, the longer until the
 * next. After the first (whose all-thread run was the warm-up: a sleeping
 * core takes milliseconds to start at idle), the next layer probes again. */
static void tuner_schedule(thread_tuner *t) {
    int best;
    double ratio;
    if (!t->samples[1]) return; /* the warm-up only: tuner_probe_due probes again */
    best = tuner_best(t);
    ratio = tuner_seconds(t, !best) / (tuner_seconds(t, best) > 0.0 ? tuner_seconds(t, best) : 1e-9);
    t->until_probe = ratio * TUNER_PROBE_EVERY < TUNER_PROBE_MAX ? (int)(ratio * TUNER_PROBE_EVERY) : TUNER_PROBE_MAX;
}

/* The processors this process may use (its affinity where the OS tells it,
 * so `taskset -c 0` means one): the default thread count. */
static int processor_count(void) {
#if POOL_CAN_PIN
    processor_set allowed;
    int allowed_count = allowed_processors(&allowed);
    if (allowed_count > 0) return allowed_count;
#endif
#if !POOL_THREADS
    return 1;
#elif defined(_WIN32)
    SYSTEM_INFO info;
    GetSystemInfo(&info);
    return info.dwNumberOfProcessors > 0 ? (int)info.dwNumberOfProcessors : 1;
#elif defined(_SC_NPROCESSORS_ONLN)
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
#else
    return 1;
#endif
}

/* ---- KV cache element types ----
 *
 * How the cache stores one row: the head_dim keys (or values) of one KV head
 * at one position; lucie.h gives the three layouts. The cache of a layer is
 * head-major, [n_kv_heads][context] rows, so that attention, which walks one
 * KV head's keys and values position after position, reads each in one
 * contiguous stream (position-major rows put one head's 512 bytes every 4 KB
 * at Lucie's shape: a new page per row, which the hardware prefetchers do not
 * follow). Everything that touches the cache goes through a kv_type: the
 * forward pass stores rows, attention reads blocks of rows back as f32 (on
 * SIMD builds its kernels mostly widen them as they load them), the
 * session sizes the cache, saves and loads raw rows, and refuses a file whose
 * rows hold NaN or infinity. Reading back is exact for f16 and one f32
 * product for q8, so attention's dot products and weighted sums have a single
 * f32 definition whatever the type: a block of keys is read once and then
 * serves every query head of its group (see attention()). */


/* Attention reads a KV head's rows as one stream, a block at a time, and
 * computes on each block before it reads the next: memory would sit idle
 * meanwhile, and the hardware prefetchers stop at every 4 KB page. So each
 * read_rows also asks for the next block: f32 (read in place, no loop of its
 * own) all at once, into L1; f16 and q8 a line per line they widen, into L2.
 * (On SIMD builds attention's kernels mostly read the rows in place and ask
 * for the next block's lines themselves, one per line they read: see
 * attention_reads_rows.) */
typedef struct {
    int type; /* LUCIE_KV_* */
    const char *name;
    void (*store)(void *row, const float *x, int n);
    /* out[0..n) = one row as f32: the definition read_rows keeps (and
     * test_float_kernels checks it against) */
    void (*widen)(float *out, const void *row, int n);
    /* n_rows consecutive rows of n values as f32, [n_rows][n]: the rows
     * themselves when they are f32 already, else widened into out; asks for
     * as many rows at next meanwhile (unless NULL) */
    const float *(*read_rows)(float *out, const unsigned char *rows, int n_rows, int n, const unsigned char *next);
    int (*row_finite)(const void *row, int n);
} kv_type;

static void kv_f32_store(void *row, const float *x, int n) { memcpy(row, x, (size_t)n * sizeof(float)); }
static void kv_f32_widen(float *out, const void *row, int n) { memcpy(out, row, (size_t)n * sizeof(float)); }
static const float *kv_f32_read_rows(float *out, const unsigned char *rows, int n_rows, int n,
                                     const unsigned char *next) {
    (void)out, (void)n_rows, (void)n;
    if (next) prefetch_bytes(next, (size_t)n_rows * n * sizeof(float));
    return (const float *)(const void *)rows; /* the cache is 64-byte aligned, rows are whole floats */
}
static int kv_f32_row_finite(const void *row, int n) {
    const float *x = (const float *)row;
    int i;
    for (i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

static void kv_f16_store(void *row, const float *x, int n) {
    uint16_t *h = (uint16_t *)row;
    int i;
    for (i = 0; i < n; i++) h[i] = float_to_half(x[i]);
}
/* half_to_float is exact, and so are the F16C and AVX-512 conversions: same
 * results. */
static void kv_f16_widen(float *out, const void *row, int n) {
    const uint16_t *h = (const uint16_t *)row;
    int i = 0;
#if defined(FLOAT_SIMD) && defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + i))));
#endif
#if defined(FLOAT_SIMD) && defined(__F16C__)
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
#endif
    for (; i < n; i++) out[i] = half_to_float(h[i]);
}
/* f16 rows follow each other unpadded: one run of halves, widened a cache
 * line (32 halves, a constant count the conversions unroll over) at a time,
 * each next to the request for the line one block on */
static const float *kv_f16_read_rows(float *out, const unsigned char *rows, int n_rows, int n,
                                     const unsigned char *next) {
    int i, count = n_rows * n, whole = count / 32 * 32;
    for (i = 0; i < whole; i += 32) {
        if (next) prefetch_line_to_l2(next + 2 * (size_t)i);
        kv_f16_widen(out + i, rows + 2 * (size_t)i, 32);
    }
    if (next && whole < count) prefetch_line_to_l2(next + 2 * (size_t)whole);
    kv_f16_widen(out + whole, rows + 2 * (size_t)whole, count - whole);
    return out;
}
static int kv_f16_row_finite(const void *row, int n) {
    const uint16_t *h = (const uint16_t *)row;
    int i;
    for (i = 0; i < n; i++)
        if ((h[i] & 0x7c00) == 0x7c00) return 0;
    return 1;
}

/* q8 rows (their layout is defined before the float kernels, which read
 * them too) follow each other unpadded, so scales are read and written with
 * memcpy. */
static void kv_q8_store(void *row, const float *x, int n) {
    unsigned char *scales = (unsigned char *)row;
    signed char *codes = (signed char *)row + kv_value_offset(LUCIE_KV_Q8, n, 0);
    int g, i;
    for (g = 0; g < kv_q8_groups(n); g++) {
        int begin = g * KV_Q8_GROUP, end = begin + KV_Q8_GROUP < n ? begin + KV_Q8_GROUP : n;
        float amax = 0.0f, scale;
        for (i = begin; i < end; i++)
            if (fabsf(x[i]) > amax) amax = fabsf(x[i]);
        scale = amax / 127.0f;
        for (i = begin; i < end; i++)
            codes[i] = (signed char)(scale > 0.0f ? round_to_int(clamp_float(x[i] / scale, -127.0f, 127.0f)) : 0);
        memcpy(scales + (size_t)g * sizeof(float), &scale, sizeof(float));
    }
}
static void kv_q8_widen(float *out, const void *row, int n) {
    const signed char *codes = (const signed char *)row + kv_value_offset(LUCIE_KV_Q8, n, 0);
    int g, i;
    for (g = 0; g < kv_q8_groups(n); g++) {
        int begin = g * KV_Q8_GROUP, end = begin + KV_Q8_GROUP < n ? begin + KV_Q8_GROUP : n;
        float scale = kv_q8_scale(row, begin);
        if (end - begin == KV_Q8_GROUP) /* a whole group: a constant count the compiler unrolls into vectors */
            for (i = 0; i < KV_Q8_GROUP; i++) out[begin + i] = (float)codes[begin + i] * scale;
        else
            for (i = begin; i < end; i++) out[i] = (float)codes[i] * scale;
    }
}
static const float *kv_q8_read_rows(float *out, const unsigned char *rows, int n_rows, int n,
                                    const unsigned char *next) {
    size_t row_bytes = kv_row_bytes(LUCIE_KV_Q8, n), line = 0; /* the next block's lines, each asked for once */
    int r;
    for (r = 0; r < n_rows; r++) {
        for (; next && line < (size_t)(r + 1) * row_bytes; line += 64) prefetch_line_to_l2(next + line);
        kv_q8_widen(out + (size_t)r * n, rows + (size_t)r * row_bytes, n);
    }
    return out;
}
static int kv_q8_row_finite(const void *row, int n) {
    int g;
    for (g = 0; g < kv_q8_groups(n); g++)
        if (!isfinite(kv_q8_scale(row, g * KV_Q8_GROUP))) return 0;
    return 1;
}

static const kv_type kv_types[] = {
    {LUCIE_KV_F32, "f32", kv_f32_store, kv_f32_widen, kv_f32_read_rows, kv_f32_row_finite},
    {LUCIE_KV_F16, "f16", kv_f16_store, kv_f16_widen, kv_f16_read_rows, kv_f16_row_finite},
    {LUCIE_KV_Q8, "q8", kv_q8_store, kv_q8_widen, kv_q8_read_rows, kv_q8_row_finite},
};

/* The row of values first..first+n (one KV head) cut from a row of all
 * kv_dim values of a position, as session files before version 3 hold them.
 * A q8 position row holds all its scales, then all its codes: when first
 * and n are whole groups (the loader checks), the head's scales and codes
 * move as they are. */
static void kv_cut_position_row(int type, void *row, const void *position_row, int kv_dim, int first, int n) {
    const unsigned char *in = (const unsigned char *)position_row;
    unsigned char *out = (unsigned char *)row;
    size_t scale_bytes = kv_value_offset(type, n, 0); /* (0 but for q8) */
    memcpy(out, in + (size_t)(first / KV_Q8_GROUP) * sizeof(float), scale_bytes);
    memcpy(out + scale_bytes, in + kv_value_offset(type, kv_dim, first), (size_t)n * kv_value_bytes(type));
}

/* The type used when a session asks for LUCIE_KV_DEFAULT (see bench/kv_types.md). */
#define KV_DEFAULT_TYPE LUCIE_KV_F32

static const kv_type *kv_type_for(int type) {
    size_t i;
    if (type == LUCIE_KV_DEFAULT) type = KV_DEFAULT_TYPE;
    for (i = 0; i < sizeof kv_types / sizeof kv_types[0]; i++)
        if (kv_types[i].type == type) return &kv_types[i];
    return NULL;
}

struct lucie_session {
    const lucie_model *model;
    int context, pos, n_threads;
    int active_threads;    /* the thread count of the current layer: n_threads or 1 (thread_tuner) */
    int no_pinning;        /* lucie_session_options.no_pinning (a fork inherits it) */
    thread_tuner tuner[2]; /* [0] decoding one token, [1] batches */
    worker_pool *pool;     /* n_threads - 1 threads (fewer if the OS refused some), started with the session */
    /* activations for a batch of up to MAX_BATCH tokens */
    float *x, *xb, *q, *k, *v, *att_out, *hb, *hb2, *logits;
    float *batch_logits; /* [MAX_BATCH][vocab]: lucie_eval_batch's lm_head output, made on first use */
    float *att_scratch; /* per thread: attention's working blocks (ATT_SCRATCH_FLOATS) */
    void *xq;          /* prepared (quantized) activations */
    const kv_type *kv;
    size_t kv_row_bytes; /* one KV head at one position: kv_row_bytes(kv->type, head_dim) */
    unsigned char *key_cache; /* [n_layers][n_kv_heads][context] rows of kv_row_bytes (cache_rows) */
    unsigned char *value_cache;
    float *rope_cos, *rope_sin; /* [context][head_dim / 2] */
    int *history;      /* every token in the cache, for the repetition penalty */
    prepared_input prepared; /* what xq was made from (see linear) */
    prob_index *candidates;
    unsigned *penalised; /* [vocab]: stamp of the last penalty call that saw the token */
    int have_logits;   /* logits holds the prediction after the last cached token */
    float *sample_logits; /* lucie_sample's working copy (penalised, never the caller's) */
    sampler samp;
    char error[256];
};

/* The rows of KV head h in layer l of a cache (key_cache or value_cache):
 * context rows, position p's at p * kv_row_bytes. */
static unsigned char *cache_rows(const lucie_session *s, unsigned char *cache, int layer, int h) {
    return cache + ((size_t)layer * (size_t)s->model->config.n_kv_heads + (size_t)h) * (size_t)s->context * s->kv_row_bytes;
}

static size_t attention_scratch_floats(const lucie_config *c); /* section 7: attention's per-thread blocks */

/* inv_freq and angles in f32 like LlamaRotaryEmbedding, so long positions
 * round the same way as the reference: inv_freq = 1 / theta ** (2i / d) with
 * every step in f32 (computing the power in double and rounding once gives
 * 12 of Lucie's 64 frequencies 1 ulp away from transformers' at theta 2e7,
 * an angle error that grows with the position); angle = position * inv_freq
 * rounded to f32; cos and sin of that angle correctly rounded. */
static void rope_tables(float *cos_t, float *sin_t, int context, int head_dim, double theta) {
    int half = head_dim / 2, p, i;
    for (i = 0; i < half; i++) {
        float inv_freq = 1.0f / powf((float)theta, (float)(2 * i) / (float)head_dim);
        for (p = 0; p < context; p++) {
            float angle = (float)p * inv_freq;
            cos_t[(size_t)p * half + i] = (float)cos((double)angle);
            sin_t[(size_t)p * half + i] = (float)sin((double)angle);
        }
    }
}

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
    aligned_free64(s->att_scratch);
    pool_free(s->pool);
    aligned_free64(s->logits);
    aligned_free64(s->batch_logits);
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

/* xorshift never leaves 0, so no seed may map to it */
static uint64_t rng_state_of_seed(unsigned long long seed) {
    uint64_t state = seed ^ 0x9E3779B97F4A7C15ull;
    return state ? state : 1;
}

static void seed_sampler(sampler *sp, const lucie_session_options *o) {
    sp->temperature = o->temperature;
    sp->top_k = o->top_k;
    sp->top_p = o->top_p;
    sp->min_p = o->min_p;
    sp->repetition_penalty = o->repetition_penalty;
    sp->repetition_window = o->repetition_window;
    sp->rng = rng_state_of_seed(o->seed);
}

int lucie_session_new(const lucie_model *m, const lucie_session_options *opts, lucie_session **out, char *err,
                      size_t err_size) {
    lucie_session_options defaults;
    lucie_session *s;
    const lucie_config *c;
    size_t kv_bytes, xq_bytes = 0;
    const kv_type *kv;
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
    kv = kv_type_for(opts->kv_type);
    if (!kv) {
        set_error(err, err_size, "unknown KV cache type %d", opts->kv_type);
        return LUCIE_EINVAL;
    }
    context = opts->context;
    if (context < 0 || context > c->max_seq_len) {
        set_error(err, err_size, "context %d is outside 1..%d (the model's maximum)", context, c->max_seq_len);
        return LUCIE_EINVAL;
    }
    if (context == 0) context = c->max_seq_len < 4096 ? c->max_seq_len : 4096;
    n_threads = opts->n_threads > 0 ? opts->n_threads : processor_count();
    if (!POOL_THREADS && n_threads > 0) n_threads = 1;
    if (opts->n_threads < 0 || n_threads > 1024) {
        set_error(err, err_size, "thread count %d is out of range", opts->n_threads);
        return LUCIE_EINVAL;
    }
    q_dim = c->n_heads * c->head_dim;
    kv_dim = c->n_kv_heads * c->head_dim;
    widest = c->dim;
    if (c->hidden_dim > widest) widest = c->hidden_dim;
    if (q_dim > widest) widest = q_dim;
    for (dt = LUCIE_DT_BYTES + 1; dt < N_WEIGHT_FORMATS; dt++) {
        size_t b = kernels_for(dt)->input_bytes(MAX_BATCH, widest, c->group_size);
        if (b > xq_bytes) xq_bytes = b;
    }
    if (!mul_size((size_t)c->n_layers * (size_t)c->n_kv_heads * (size_t)context, kv_row_bytes(kv->type, c->head_dim), &kv_bytes)) {
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
    s->n_threads = s->active_threads = n_threads;
    s->no_pinning = opts->no_pinning;
    s->kv = kv;
    s->kv_row_bytes = kv_row_bytes(kv->type, c->head_dim);
    s->x = (float *)aligned_alloc64((size_t)MAX_BATCH * c->dim * sizeof(float));
    s->xb = (float *)aligned_alloc64((size_t)MAX_BATCH * widest * sizeof(float));
    s->q = (float *)aligned_alloc64((size_t)MAX_BATCH * q_dim * sizeof(float));
    s->k = (float *)aligned_alloc64((size_t)MAX_BATCH * kv_dim * sizeof(float));
    s->v = (float *)aligned_alloc64((size_t)MAX_BATCH * kv_dim * sizeof(float));
    s->att_out = (float *)aligned_alloc64((size_t)MAX_BATCH * q_dim * sizeof(float));
    s->hb = (float *)aligned_alloc64((size_t)MAX_BATCH * c->hidden_dim * sizeof(float));
    s->hb2 = (float *)aligned_alloc64((size_t)MAX_BATCH * c->hidden_dim * sizeof(float));
    s->pool = pool_new(n_threads, !opts->no_pinning);
    s->att_scratch = (float *)aligned_alloc64((size_t)n_threads * attention_scratch_floats(c) * sizeof(float));
    s->logits = (float *)aligned_alloc64((size_t)c->vocab_size * sizeof(float));
    s->sample_logits = (float *)aligned_alloc64((size_t)c->vocab_size * sizeof(float));
    s->xq = aligned_alloc64(xq_bytes ? xq_bytes : 64);
    s->key_cache = (unsigned char *)aligned_alloc64(kv_bytes);
    s->value_cache = (unsigned char *)aligned_alloc64(kv_bytes);
    s->rope_cos = (float *)aligned_alloc64((size_t)context * (c->head_dim / 2) * sizeof(float));
    s->rope_sin = (float *)aligned_alloc64((size_t)context * (c->head_dim / 2) * sizeof(float));
    s->history = (int *)calloc((size_t)context, sizeof(int));
    s->candidates = (prob_index *)calloc((size_t)c->vocab_size, sizeof(prob_index));
    s->penalised = (unsigned *)calloc((size_t)c->vocab_size, sizeof(unsigned));
    if (!s->x || !s->xb || !s->q || !s->k || !s->v || !s->att_out || !s->hb || !s->hb2 || !s->att_scratch || !s->pool || !s->logits || !s->sample_logits ||
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

int lucie_session_set_sampler(lucie_session *s, const lucie_session_options *opts) {
    if (!s || !opts) return LUCIE_EINVAL;
    if (!valid_sampler_options(opts, s->error, sizeof s->error)) return LUCIE_EINVAL;
    seed_sampler(&s->samp, opts);
    return LUCIE_OK;
}

const char *lucie_session_error(const lucie_session *s) { return s ? s->error : "no session"; }
int lucie_session_position(const lucie_session *s) { return s ? s->pos : 0; }
int lucie_session_context(const lucie_session *s) { return s ? s->context : 0; }
int lucie_session_threads(const lucie_session *s) { return s ? s->n_threads : 0; }
int lucie_session_kv_type(const lucie_session *s) { return s ? s->kv->type : 0; }

int lucie_session_tokens(const lucie_session *s, int *ids, int max_ids) {
    int i;
    if (!s || max_ids < 0 || (max_ids > 0 && !ids)) return LUCIE_EINVAL;
    for (i = 0; i < s->pos && i < max_ids; i++) ids[i] = s->history[i];
    return s->pos;
}

int lucie_session_set_seed(lucie_session *s, unsigned long long seed) {
    if (!s) return LUCIE_EINVAL;
    s->samp.rng = rng_state_of_seed(seed);
    return LUCIE_OK;
}

int lucie_session_rewind(lucie_session *s, int pos) {
    if (!s || pos < 0 || pos > s->pos) return LUCIE_EINVAL;
    if (pos != s->pos) s->have_logits = 0;
    s->pos = pos; /* the cache beyond pos is simply overwritten later */
    return LUCIE_OK;
}

/* A fork is a new session made with src's settings, then given src's state:
 * the cached rows (only the pos used ones), tokens, last logits, sampler
 * (its random state and penalty stamps) and thread measurements. */
int lucie_session_fork(const lucie_session *src, lucie_session **out, char *err, size_t err_size) {
    lucie_session_options o;
    lucie_session *s;
    const lucie_config *c;
    size_t used_bytes;
    int status, l, h;
    if (out) *out = NULL;
    if (!src || !out) {
        set_error(err, err_size, "lucie_session_fork: NULL argument");
        return LUCIE_EINVAL;
    }
    c = &src->model->config;
    memset(&o, 0, sizeof o);
    o.context = src->context;
    o.n_threads = src->n_threads;
    o.no_pinning = src->no_pinning;
    o.kv_type = src->kv->type;
    o.temperature = src->samp.temperature;
    o.top_k = src->samp.top_k;
    o.top_p = src->samp.top_p;
    o.min_p = src->samp.min_p;
    o.repetition_penalty = src->samp.repetition_penalty;
    o.repetition_window = src->samp.repetition_window;
    status = lucie_session_new(src->model, &o, &s, err, err_size);
    if (status != LUCIE_OK) return status;
    used_bytes = (size_t)src->pos * src->kv_row_bytes;
    for (l = 0; l < c->n_layers; l++)
        for (h = 0; h < c->n_kv_heads; h++) {
            memcpy(cache_rows(s, s->key_cache, l, h), cache_rows(src, src->key_cache, l, h), used_bytes);
            memcpy(cache_rows(s, s->value_cache, l, h), cache_rows(src, src->value_cache, l, h), used_bytes);
        }
    memcpy(s->history, src->history, (size_t)src->pos * sizeof(int));
    memcpy(s->logits, src->logits, (size_t)c->vocab_size * sizeof(float));
    memcpy(s->penalised, src->penalised, (size_t)c->vocab_size * sizeof(unsigned));
    memcpy(s->tuner, src->tuner, sizeof s->tuner);
    s->samp = src->samp;
    s->pos = src->pos;
    s->have_logits = src->have_logits;
    *out = s;
    return LUCIE_OK;
}

/* ---- saving and restoring a session ----
 *
 * Layout (little-endian like the model file): magic "LUCIESES", u32 version
 * (3), u32 kv_dim, u32 n_layers, u32 pos, u64 model fingerprint (FNV-1a of
 * the model's header and entry table), u64 RNG state, u32 KV cache type
 * (LUCIE_KV_F32/F16/Q8), u32 n_kv_heads; then pos token ids (i32), then for
 * each layer: for each KV head its pos key rows, then for each KV head its pos
 * value rows (the cache's own order, section 6), each row (head_dim values) as
 * the cache type stores it (lucie.h). A file loads only into a session of the
 * same cache type: converting would silently round the cache differently from
 * a session that computed it. The raw rows are written in host order, which
 * the loader's little-endian check guarantees.
 *
 * Older files still load: they hold, per layer, pos key rows and pos value
 * rows, each of all the KV heads' values at one position (position-major),
 * which the loader cuts into head rows (kv_cut_position_row): f32 and
 * f16 rows are the heads' values one after another; a q8 row has all its
 * scales, then all its codes, in groups of 32 across the row. Version 1
 * (written before cache types existed) has no type field, a 40-byte header,
 * and f32 rows. A version 2 q8 file whose head_dim is not a multiple of 32
 * has groups that span two heads, which no head row can hold exactly: it is
 * refused, and evaluating its prompt again makes a new one. */

#define SESSION_MAGIC "LUCIESES"
#define SESSION_VERSION 3
#define SESSION_HEADER 48
#define SESSION_V1_HEADER 40

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

int lucie_session_save(const lucie_session *s, const char *path) {
    const lucie_config *c;
    unsigned char header[SESSION_HEADER];
    size_t count;
    FILE *f;
    char *tmp_path, *error;
    int ok, i, rc, l, k;
    if (!s || !path) return LUCIE_EINVAL;
    error = ((lucie_session *)s)->error; /* the message slot is not part of the session's state */
    c = &s->model->config;
    memset(header, 0, sizeof header);
    memcpy(header, SESSION_MAGIC, 8);
    put_u32(header + 8, SESSION_VERSION);
    put_u32(header + 12, (uint32_t)(c->n_kv_heads * c->head_dim));
    put_u32(header + 16, (uint32_t)c->n_layers);
    put_u32(header + 20, (uint32_t)s->pos);
    put_u64(header + 24, model_fingerprint(s->model));
    put_u64(header + 32, s->samp.rng);
    put_u32(header + 40, (uint32_t)s->kv->type);
    put_u32(header + 44, (uint32_t)c->n_kv_heads);
    /* written aside and renamed: a failed save leaves the previous one intact */
    f = atomic_create(path, &tmp_path, error, sizeof s->error);
    if (!f) {
        rc = tmp_path ? LUCIE_EIO : LUCIE_ENOMEM;
        free(tmp_path);
        return rc;
    }
    ok = fwrite(header, 1, SESSION_HEADER, f) == SESSION_HEADER;
    for (i = 0; i < s->pos && ok; i++) {
        unsigned char b[4];
        put_u32(b, (uint32_t)s->history[i]);
        ok = fwrite(b, 1, 4, f) == 4;
    }
    count = (size_t)s->pos * s->kv_row_bytes;
    for (l = 0; l < c->n_layers && ok; l++)
        for (k = 0; k < 2 * c->n_kv_heads && ok; k++) /* the keys of every head, then the values */
            ok = fwrite(cache_rows(s, k < c->n_kv_heads ? s->key_cache : s->value_cache, l, k % c->n_kv_heads), 1,
                        count, f) == count;
    if (!ok) set_error(error, sizeof s->error, "write error on '%s': %s", tmp_path, strerror(errno));
    rc = atomic_finish(f, tmp_path, path, ok, error, sizeof s->error);
    free(tmp_path);
    return rc;
}

/* The size of an open file, in 64 bits even where long has 32 (Windows):
 * sessions of long contexts pass 2 GB. Leaves the position at the end. */
static int stream_size(FILE *f, unsigned long long *size) {
#ifdef _WIN32
    __int64 n;
    if (_fseeki64(f, 0, SEEK_END) != 0 || (n = _ftelli64(f)) < 0) return 0;
#else
    off_t n;
    if (fseeko(f, 0, SEEK_END) != 0 || (n = ftello(f)) < 0) return 0;
#endif
    *size = (unsigned long long)n;
    return 1;
}

/* Whether the next n cache rows of f all hold finite values (f is left after
 * them). A NaN or infinity in a KV cache would poison every later token. */
static int stream_rows_finite(FILE *f, const kv_type *kv, int row_values, size_t n) {
    unsigned char chunk[16384];
    size_t row = kv_row_bytes(kv->type, row_values), per_read = sizeof chunk / row, i;
    if (per_read == 0) { /* rows wider than the chunk: one at a time */
        unsigned char *one = (unsigned char *)malloc(row);
        int ok = one != NULL;
        for (i = 0; i < n && ok; i++) ok = fread(one, 1, row, f) == row && kv->row_finite(one, row_values);
        free(one);
        return ok;
    }
    while (n > 0) {
        size_t k = n < per_read ? n : per_read;
        if (fread(chunk, row, k, f) != k) return 0;
        for (i = 0; i < k; i++)
            if (!kv->row_finite(chunk + i * row, row_values)) return 0;
        n -= k;
    }
    return 1;
}

/* Reads the cache rows of a file (after its token ids) into s, pos positions:
 * in the cache's order (version 3), or position-major (older versions: each
 * row read into position_row, then cut into the heads' rows). */
static int read_cache_rows(lucie_session *s, FILE *f, uint32_t version, uint32_t pos, unsigned char *position_row) {
    const lucie_config *c = &s->model->config;
    int ok = 1, l, k, h, hd = c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    size_t count = (size_t)pos * s->kv_row_bytes, position_bytes = kv_row_bytes(s->kv->type, kv_dim);
    uint32_t p;
    for (l = 0; l < c->n_layers && ok; l++)
        if (version == SESSION_VERSION) {
            for (k = 0; k < 2 * c->n_kv_heads && ok; k++)
                ok = fread(cache_rows(s, k < c->n_kv_heads ? s->key_cache : s->value_cache, l, k % c->n_kv_heads), 1,
                           count, f) == count;
        } else {
            for (k = 0; k < 2; k++)
                for (p = 0; p < pos && ok; p++) {
                    ok = fread(position_row, 1, position_bytes, f) == position_bytes;
                    for (h = 0; h < c->n_kv_heads && ok; h++)
                        kv_cut_position_row(s->kv->type,
                                            cache_rows(s, k ? s->value_cache : s->key_cache, l, h) +
                                                (size_t)p * s->kv_row_bytes,
                                            position_row, kv_dim, h * hd, hd);
                }
        }
    return ok;
}

int lucie_session_load(lucie_session *s, const char *path) {
    const lucie_config *c;
    unsigned char header[SESSION_HEADER];
    size_t header_size = SESSION_HEADER, file_rows;
    uint32_t pos, version, type;
    int kv_dim, row_values;
    unsigned long long size;
    FILE *f;
    unsigned char *ids, *position_row = NULL;
    int i, ok = 1;
    if (!s || !path) return LUCIE_EINVAL;
    c = &s->model->config;
    kv_dim = c->n_kv_heads * c->head_dim;
    f = open_file(path, "rb");
    if (!f) {
        snprintf(s->error, sizeof s->error, "cannot open '%s'", path);
        return LUCIE_EIO;
    }
    ok = fread(header, 1, SESSION_V1_HEADER, f) == SESSION_V1_HEADER && memcmp(header, SESSION_MAGIC, 8) == 0;
    version = ok ? read_u32(header + 8) : 0;
    if (version == 1) {
        header_size = SESSION_V1_HEADER;
        type = LUCIE_KV_F32;
    } else {
        ok = (version == 2 || version == SESSION_VERSION) &&
             fread(header + SESSION_V1_HEADER, 1, SESSION_HEADER - SESSION_V1_HEADER, f) ==
                 SESSION_HEADER - SESSION_V1_HEADER;
        type = ok ? read_u32(header + 40) : 0;
    }
    if (!ok) {
        fclose(f);
        snprintf(s->error, sizeof s->error, "'%s' is not a lucie session file", path);
        return LUCIE_EFORMAT;
    }
    pos = read_u32(header + 20);
    if (read_u32(header + 12) != (uint32_t)kv_dim || read_u32(header + 16) != (uint32_t)c->n_layers ||
        (version == SESSION_VERSION && read_u32(header + 44) != (uint32_t)c->n_kv_heads) ||
        read_u64(header + 24) != model_fingerprint(s->model)) {
        fclose(f);
        snprintf(s->error, sizeof s->error, "session file '%s' was saved with another model", path);
        return LUCIE_EFORMAT;
    }
    if (type != (uint32_t)s->kv->type) {
        const kv_type *saved = kv_type_for((int)type);
        fclose(f);
        if (saved && type != LUCIE_KV_DEFAULT)
            snprintf(s->error, sizeof s->error, "session file '%s' holds a %s KV cache; this session's is %s", path,
                     saved->name, s->kv->name);
        else
            snprintf(s->error, sizeof s->error, "session file '%s' has an unknown KV cache type %u", path, type);
        return LUCIE_EFORMAT;
    }
    if (version != SESSION_VERSION && type == LUCIE_KV_Q8 && c->head_dim % KV_Q8_GROUP != 0) {
        fclose(f);
        snprintf(s->error, sizeof s->error,
                 "session file '%s' holds a q8 KV cache of version %u whose groups span two heads (head_dim %d), "
                 "which this version cannot convert exactly; evaluate the prompt again and save a new one", path,
                 version, c->head_dim);
        return LUCIE_EFORMAT;
    }
    if (pos > (uint32_t)s->context) {
        fclose(f);
        snprintf(s->error, sizeof s->error, "session file holds %u tokens, more than this session's context (%d)", pos,
                 s->context);
        return LUCIE_ECONTEXT;
    }
    /* The exact size must match before anything is overwritten: rows of one
     * KV head (version 3) or of a whole position (older versions). */
    row_values = version == SESSION_VERSION ? c->head_dim : kv_dim;
    file_rows = (size_t)c->n_layers * 2 * pos * (version == SESSION_VERSION ? (size_t)c->n_kv_heads : 1);
    if (!stream_size(f, &size) ||
        size != header_size + (unsigned long long)pos * 4 +
                    (unsigned long long)file_rows * kv_row_bytes(s->kv->type, row_values) ||
        fseek(f, (long)header_size, SEEK_SET) != 0) {
        fclose(f);
        snprintf(s->error, sizeof s->error, "session file '%s' is truncated or has trailing data", path);
        return LUCIE_EFORMAT;
    }
    /* The token ids are checked before the session is touched, so a corrupt
     * file leaves it as it was. */
    ids = (unsigned char *)malloc((size_t)pos * 4 + 1);
    if (version != SESSION_VERSION) position_row = (unsigned char *)malloc(kv_row_bytes(s->kv->type, kv_dim));
    if (!ids || (version != SESSION_VERSION && !position_row)) {
        free(ids);
        free(position_row);
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
        free(position_row);
        fclose(f);
        snprintf(s->error, sizeof s->error, "session file '%s' is corrupt (token id out of range)", path);
        return LUCIE_EFORMAT;
    }
    /* so is every cached value, in a first pass: a refused file must leave
     * the session as it was */
    if (!stream_rows_finite(f, s->kv, row_values, file_rows) ||
        fseek(f, (long)(header_size + (size_t)pos * 4), SEEK_SET) != 0) {
        free(ids);
        free(position_row);
        fclose(f);
        snprintf(s->error, sizeof s->error, "session file '%s' is corrupt (NaN or infinite values in its KV cache)",
                 path);
        return LUCIE_EFORMAT;
    }
    for (i = 0; i < (int)pos; i++) s->history[i] = read_i32(ids + 4 * (size_t)i);
    free(ids);
    ok = read_cache_rows(s, f, version, pos, position_row);
    free(position_row);
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
    if (s->samp.rng == 0) s->samp.rng = 1; /* xorshift never leaves 0 */
    return LUCIE_OK;
}

/* ========================================================================
 * 7. The transformer forward pass
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

static float silu(float x) { return x / (1.0f + expf(-x)); }

/* The kernels' view of the session: its thread count, thresholds applied. */
static kernel_ctx session_kernel_ctx(const lucie_session *s) {
    kernel_ctx ctx;
    ctx.pool = s->pool;
    ctx.n_threads = s->active_threads;
    ctx.split_any_size = 0;
    return ctx;
}

/* Every write to an activation buffer that a matrix multiplies goes
 * through here (linear's outputs, rmsnorm_rows, attention, swiglu): a
 * preparation made from it no longer holds. */
static void input_written(lucie_session *s, const float *buffer) {
    if (s->prepared.input == buffer) s->prepared.input = NULL;
}

/* W x for a batch. Quantized weights multiply a prepared (quantized) copy of
 * the input; q, k and v (and gate and up) multiply the same input, so the
 * preparation is reused while its buffer is unchanged and the matrix
 * prepares its input the same way (whatever the types of the matrices in
 * between: a q8 k_proj after an f32 q_proj reuses nothing stale). */
static void linear(lucie_session *s, float *out, const float *x, const tensor *w, int n) {
    const weight_kernels *k = kernels_for(w->dtype);
    prepared_input *p = &s->prepared;
    int group_size = s->model->config.group_size;
    kernel_ctx ctx = session_kernel_ctx(s);
    if (k->prepare && !(p->input == x && p->by == k->prepare && p->n == n && p->cols == w->cols)) {
        k->prepare(&ctx, x, n, w->cols, group_size, s->xq);
        p->input = x;
        p->by = k->prepare;
        p->n = n;
        p->cols = w->cols;
    }
    k->matmul(&ctx, out, x, s->xq, w->data, n, w->rows, w->cols, group_size);
    input_written(s, out);
}

/* linear with the thread count chosen by the tuner (see thread_tuner), which
 * stays the session's active count for the rest of the layer. The layer's
 * rmsnorm ran before it on the previous choice: one region, not worth a probe. */
static void linear_choosing_threads(lucie_session *s, thread_tuner *t, float *out, const float *x, const tensor *w,
                                    int n) {
    int probe, choice;
    if (s->n_threads == 1) {
        linear(s, out, x, w, n);
        return;
    }
    probe = tuner_probe_due(t);
    for (choice = probe ? 0 : tuner_best(t); choice <= 1; choice++) {
        double start = lucie_time_seconds();
        s->active_threads = choice ? s->n_threads : 1;
        linear(s, out, x, w, n);
        tuner_record(t, choice, (lucie_time_seconds() - start) / n);
        if (!probe) break;
    }
    if (probe) tuner_schedule(t);
    s->active_threads = tuner_best(t) ? s->n_threads : 1;
}

/* ---- attention ----
 *
 * Causal grouped-query attention for n new tokens at positions
 * pos..pos+n-1: query head h reads key/value head h / (n_heads / n_kv_heads),
 * as HF's repeat_kv does. The work unit is one KV head and a block of up to
 * ATT_QUERY_TOKENS tokens: its G = n_heads / n_kv_heads query heads per token
 * ("queries") walk the cache together, so each key and value is read from
 * memory once per unit, not once per query head (decoding: once per token).
 *
 * Online softmax over blocks of ATT_KEY_BLOCK keys, so that the working set
 * stays in cache however long the context: for each block, take its keys and
 * values as f32 (on SIMD builds the cache itself, whose halves or codes the
 * kernels widen as they load them, see attention_reads_rows; else
 * kv_type.read_rows widens them into a block), compute the scores of all the
 * unit's queries with the float tile kernel (keys as weight rows, queries as
 * tokens: the 16-lane dot product contract), then per query, over the keys it
 * may see:
 *   m' = max(m, scores);  c = exp(m - m');  l = l * c + sum exp(s - m');
 *   acc = acc * c + sum exp(s - m') * value      (keys in increasing order)
 * and at the end out = acc / l. Blocks are cut at absolute positions
 * (multiples of ATT_KEY_BLOCK), and every step of a query depends only on its
 * own position, never on which other queries share the unit; so a query
 * gives the same bits in prefill, in a chunk or decoded alone. */

#define ATT_KEY_BLOCK 64    /* keys per block: 64 x head_dim 128 f32 = 32 KB each for keys and values */
#define ATT_QUERY_TOKENS 16 /* tokens per unit in prefill: 64 queries for Lucie's 4 heads per KV head */

static int att_queries(const lucie_config *c) { return ATT_QUERY_TOKENS * (c->n_heads / c->n_kv_heads); }

/* Per thread: queries and accumulators [queries][head_dim], running max,
 * sum and block correction [queries], scores [queries][ATT_KEY_BLOCK], keys
 * and values [ATT_KEY_BLOCK][head_dim]. */
static size_t attention_scratch_floats(const lucie_config *c) {
    size_t nq = (size_t)att_queries(c), hd = (size_t)c->head_dim;
    return 2 * nq * hd + 3 * nq + nq * ATT_KEY_BLOCK + 2 * (size_t)ATT_KEY_BLOCK * hd;
}

/* exp(x) for the softmax weights, x <= 0 (a score minus the running max):
 * within 1.011 ulp of the true value over [-87, 0] (checked against double
 * exp for every float there: 1.0103 at worst with FMA, 0.982 without;
 * test_float_kernels checks every 7th), 0 below -87 and for -inf, NaN for
 * NaN. Written
 * without calls or branches (n = round(x / ln 2), r = x - n ln 2 in two
 * exact-enough steps, a degree-7 polynomial for e^r, times 2^n built from its
 * bits), so the compiler runs 16 of them per instruction (gcc and clang do
 * at -O3); every build computes the same operations, with madd as everywhere
 * else. libm's expf was a call per weight: a third of attention's time. */
static inline float attention_exp(float x) {
    int in_range = x >= -87.0f, below = x < -87.0f, positive = x > 0.0f; /* all compared, for vectorising */
    float xc = in_range ? (positive ? 0.0f : x) : -87.0f, t, n, r, p, scale;
    int32_t bits;
    t = xc * 1.44269504088896341f;
    n = t + 12582912.0f; /* round to nearest: adding 1.5 x 2^23 pushes the fraction out (floorf does not vectorise) */
    n = n - 12582912.0f;
    r = madd(xc, n, -0.693359375f); /* ln 2 = 0.693359375 - 2.12194440e-4; n * 0.693359375 is exact */
    r = madd(r, n, 2.12194440e-4f);
    p = 1.9875691500e-4f;
    p = madd(1.3981999507e-3f, p, r);
    p = madd(8.3334519073e-3f, p, r);
    p = madd(4.1665795894e-2f, p, r);
    p = madd(1.6666665459e-1f, p, r);
    p = madd(5.0000001201e-1f, p, r);
    t = r * r;
    p = madd(r, p, t); /* e^r = 1 + r + r^2 p(r) */
    p = p + 1.0f;
    bits = ((int32_t)n + 127) * (1 << 23); /* 2^n, n in [-126, 0]: a normal float */
    memcpy(&scale, &bits, sizeof scale);
    p = p * scale;
    return in_range ? p : below ? 0.0f : x;
}

/* One query takes one block of keys, step 1: its raw dot products
 * scores[0..n_keys) become the block's softmax weights exp(s * scale - m'),
 * the running max becomes m' and the running sum l * c + (their sum); the
 * correction c = exp(m - m') is returned for the values (step 2). (Taking the
 * max and the sum in 16 lanes was 3% faster on one thread, but it moved the
 * sum's rounding, and builds with and without FMA then gave stories260K-q8
 * logits 2.3e-4 of the largest apart at one position, past test/cross.sh's
 * 1e-4: a jump, most likely an activation rounding to another int8 code.) */
static float block_weights(float *max, float *sum, float *scores, int n_keys, float scale) {
    float m = *max, correction, block_sum = 0.0f;
    int j;
    for (j = 0; j < n_keys; j++) {
        scores[j] *= scale;
        if (scores[j] > m) m = scores[j];
    }
    correction = attention_exp(*max - m); /* 0 for the first block (max = -inf), 1 when the max stays */
    for (j = 0; j < n_keys; j++) scores[j] = attention_exp(scores[j] - m);
    for (j = 0; j < n_keys; j++) block_sum += scores[j];
    *max = m;
    *sum = madd(block_sum, *sum, correction);
    return correction;
}

/* Step 2, for n_queries queries that see the same n_keys keys (the heads of
 * one token): acc[q] = acc[q] * correction[q] + sum_j p[q][j] * values[j].
 * The block's weighted values are summed on their own (from zero, keys in
 * increasing order; at most ATT_KEY_BLOCK terms) and then folded into the
 * running ones: a sum over n keys is one of n / ATT_KEY_BLOCK block sums, so
 * its rounding error stays near transformers' at 16k positions instead of
 * growing with n as one long sequential sum's does (test_forward's
 * long-context test measures it). Element-wise, so the SIMD loops and the
 * plain ones compute the same fused multiply-adds; the SIMD loop takes up to
 * ATT_FOLD_QUERIES queries at once, each value vector loaded once for all
 * of them, and their independent sums keep the FMA units busy. */
#define ATT_FOLD_QUERIES 4
/* Value i of row j of a block of rows of hd values stored as type (see
 * attention_reads_rows), as f32. */
static float block_value(const void *values, int type, int j, int hd, int i) {
    const unsigned char *row = (const unsigned char *)values + (size_t)j * kv_row_bytes(type, hd);
    const void *at = row + kv_value_offset(type, hd, i);
    if (type == LUCIE_KV_F16) return half_to_float(*(const uint16_t *)at);
    if (type == LUCIE_KV_Q8) return (float)*(const signed char *)at * kv_q8_scale(row, i); /* as kv_q8_widen */
    return *(const float *)at;
}
#ifdef FLOAT_SIMD
static FLOAT_INLINE void fold_values_tile(const int Q, const int type, float *acc, const float *p, size_t p_stride,
                                          const float *correction, const void *values, int n_keys, int hd, int i,
                                          const unsigned char *next) {
    vec16 block[ATT_FOLD_QUERIES];
    int q, j;
    for (q = 0; q < Q; q++) block[q] = vec16_zero();
    for (j = 0; j < n_keys; j++) {
        vec16 v = vec16_load_row(values, type, (size_t)j, hd, i);
        if (next && row_line_starts(type, i)) prefetch_line_to_l2(next + row_offset(type, (size_t)j, hd, i));
        for (q = 0; q < Q; q++) block[q] = vec16_fma(vec16_set1(p[q * p_stride + j]), v, block[q]);
    }
    for (q = 0; q < Q; q++) {
        float *a = acc + (size_t)q * hd + i;
        vec16_store(a, vec16_fma(vec16_load(a), vec16_set1(correction[q]), block[q]));
    }
}
#define FOLD_TILES(type)                                                                                   \
    switch (n_queries - q) {                                                                               \
    case 1: fold_values_tile(1, type, a, pq, p_stride, correction + q, values, n_keys, hd, i, ask); break; \
    case 2: fold_values_tile(2, type, a, pq, p_stride, correction + q, values, n_keys, hd, i, ask); break; \
    case 3: fold_values_tile(3, type, a, pq, p_stride, correction + q, values, n_keys, hd, i, ask); break; \
    default: fold_values_tile(ATT_FOLD_QUERIES, type, a, pq, p_stride, correction + q, values, n_keys, hd, i, ask); \
    }
#endif

/* type: how the block's rows are stored (attention_reads_rows; f32 when
 * they were widened by read_rows). next (or NULL): the next block, whose
 * lines the SIMD loop asks for as it reads this one's. */
static void fold_block_values(float *acc, const float *p, size_t p_stride, const float *correction, int n_queries,
                              const void *values, int type, int n_keys, int hd, const unsigned char *next) {
    int i, q, j, tail = 0; /* the SIMD loop does columns [0, tail) */
    (void)next; /* (the plain loop asks for nothing) */
#ifdef FLOAT_SIMD
    if (vec16_reads(type)) /* (else halves take the plain loop below) */
        for (tail = hd / DOT_LANES * DOT_LANES, i = 0; i < tail; i += DOT_LANES)
            for (q = 0; q < n_queries; q += ATT_FOLD_QUERIES) {
                float *a = acc + (size_t)q * hd;
                const float *pq = p + q * p_stride;
                const unsigned char *ask = q == 0 ? next : NULL; /* the next block's lines, asked for once */
                FOR_ROW_TYPE(type, FOLD_TILES)
            }
#undef FOLD_TILES
#endif
    for (q = 0; q < n_queries; q++)
        for (i = tail; i < hd; i++) {
            float block = 0.0f;
            for (j = 0; j < n_keys; j++) block = madd(block, p[q * p_stride + j], block_value(values, type, j, hd, i));
            acc[(size_t)q * hd + i] = madd(block, acc[(size_t)q * hd + i], correction[q]);
        }
}

/* Whether attention's kernels read the cache's rows as they are stored, on
 * SIMD builds, for head sizes the short-row kernel takes: f32 rows, q8 rows
 * and, where the vec16 layer has half loads, f16 ones; the kernels widen
 * halves and codes as they load them, exactly as the types' widen does. The
 * scores and the value sums then take a block straight from the cache, with
 * no widened copy stored and loaded again (that was a quarter of f16
 * decoding's attention: bench/attention), and they ask for the next block's
 * lines as they go, one line per line they read (asking for a whole block at
 * once filled the core's queue of misses, and the requests then waited on
 * each other while the arithmetic waited on them). Except q8 for more than
 * a few tokens (a prefill's unit of 16 widened each key's codes once per 4
 * of its 64 queries: 12% slower than widening the block once). Other builds
 * read through read_rows; the results are the same bits either way. */
#define ATT_Q8_IN_PLACE_TOKENS 4
static int attention_reads_rows(const lucie_session *s, int hd, int n_tokens) {
#ifdef FLOAT_SIMD
    return short_rows_take(s->kv->type, hd) && (s->kv->type != LUCIE_KV_Q8 || n_tokens <= ATT_Q8_IN_PLACE_TOKENS);
#else
    (void)s, (void)hd, (void)n_tokens;
    return 0;
#endif
}

/* scores[q][k] = the dot product of query q and key k, for n_queries queries
 * and n_keys keys of hd values stored as type (row: hd floats of scratch);
 * the same contract for every type. next (or NULL): the next block, whose
 * lines the kernel asks for as it reads this one's. */
static void block_scores(float *scores, const float *queries, const void *keys, int type, int n_queries, int n_keys,
                         int hd, float *row, const unsigned char *next) {
    const kv_type *kv = kv_type_for(type);
    size_t row_bytes = kv_row_bytes(kv->type, hd);
    int k = 0, q;
#ifdef FLOAT_SIMD
    if (short_rows_take(type, hd))
        for (; k + 16 <= n_keys; k += 16) float_rows16_short(scores, queries, keys, type, n_queries, n_keys, hd, k, next);
#endif
    (void)next;
    if (type == LUCIE_KV_F32) {
        if (k < n_keys) float_rows(scores, queries, keys, 0, n_queries, n_keys, hd, k, n_keys);
        return;
    }
    for (; k < n_keys; k++) { /* a short last block's odd keys (or any shape the kernel does not take): widened,
                               * then the plain dot product */
        kv->widen(row, (const unsigned char *)keys + (size_t)k * row_bytes, hd);
        for (q = 0; q < n_queries; q++) scores[(size_t)q * n_keys + k] = dot_f32(row, queries + (size_t)q * hd, hd);
    }
}

/* One session's tokens inside a forward's batch: rows first..first+count-1
 * of the activation buffers, at that session's positions pos..pos+count-1.
 * A prefill is one segment; decoding several sessions together is one
 * segment per session (lucie_eval_batch). */
typedef struct {
    lucie_session *session;
    int first, count;
} batch_segment;

/* Tokens t0..t0+nt-1 of a segment, KV head kvh, with one thread's scratch:
 * the queries come from (and the outputs go to) the batch's rows in the lead
 * session's buffers, the keys and values from the segment's own session. */
static void attention_unit(lucie_session *lead, const batch_segment *seg, int layer, int kvh, int t0, int nt,
                           float *scratch) {
    const lucie_session *s = seg->session;
    const lucie_config *c = &s->model->config;
    int hd = c->head_dim, group = c->n_heads / c->n_kv_heads;
    int q_dim = c->n_heads * hd, nq = nt * group, end = s->pos + t0 + nt, kb, qi, j;
    size_t max_q = (size_t)att_queries(c), row = s->kv_row_bytes;
    const unsigned char *kc = cache_rows(s, s->key_cache, layer, kvh), *vc = cache_rows(s, s->value_cache, layer, kvh);
    const float *q = lead->q + (size_t)seg->first * q_dim;
    float *att_out = lead->att_out + (size_t)seg->first * q_dim;
    float scale = 1.0f / sqrtf((float)hd);
    float *queries = scratch, *acc = queries + max_q * hd, *max = acc + max_q * hd, *sum = max + max_q;
    float *correction = sum + max_q, *scores = correction + max_q, *key_block = scores + max_q * ATT_KEY_BLOCK;
    float *value_block = key_block + (size_t)ATT_KEY_BLOCK * hd;
    int direct = attention_reads_rows(s, hd, nt), type = direct ? s->kv->type : LUCIE_KV_F32; /* of the rows read */
    /* query qi = t * group + g is head kvh * group + g of token t0 + t: the
     * group's heads are adjacent in q */
    for (j = 0; j < nt; j++)
        memcpy(queries + (size_t)j * group * hd, q + (size_t)(t0 + j) * q_dim + (size_t)kvh * group * hd,
               (size_t)group * hd * sizeof(float));
    memset(acc, 0, (size_t)nq * hd * sizeof(float));
    for (qi = 0; qi < nq; qi++) {
        max[qi] = -INFINITY;
        sum[qi] = 0.0f;
    }
    for (kb = 0; kb < end; kb += ATT_KEY_BLOCK) {
        int n_keys = end - kb < ATT_KEY_BLOCK ? end - kb : ATT_KEY_BLOCK;
        int whole_next = kb + 2 * ATT_KEY_BLOCK <= end; /* (a shorter last block is not asked for) */
        const unsigned char *next_keys = whole_next ? kc + (size_t)(kb + ATT_KEY_BLOCK) * row : NULL;
        const unsigned char *next_values = whole_next ? vc + (size_t)(kb + ATT_KEY_BLOCK) * row : NULL;
        const void *keys = kc + (size_t)kb * row, *values = vc + (size_t)kb * row;
        if (!direct) { /* widened (or, f32, asked for) by read_rows */
            keys = s->kv->read_rows(key_block, (const unsigned char *)keys, n_keys, hd, next_keys);
            values = s->kv->read_rows(value_block, (const unsigned char *)values, n_keys, hd, next_values);
            next_keys = next_values = NULL;
        }
        block_scores(scores, queries, keys, type, nq, n_keys, hd, value_block, next_keys); /* scores[qi][j] */
        for (j = 0; j < nt; j++) { /* token j's queries see the keys up to its own position */
            int visible = s->pos + t0 + j + 1 - kb, first = j * group;
            if (visible <= 0) continue;
            if (visible > n_keys) visible = n_keys;
            for (qi = first; qi < first + group; qi++)
                correction[qi] = block_weights(max + qi, sum + qi, scores + (size_t)qi * n_keys, visible, scale);
            fold_block_values(acc + (size_t)first * hd, scores + (size_t)first * n_keys, (size_t)n_keys,
                              correction + first, group, values, type, visible, hd,
                              visible == n_keys ? next_values : NULL);
            if (visible == n_keys) next_values = NULL; /* (asked for by the first token that sees the whole block) */
        }
    }
    for (qi = 0; qi < nq; qi++) {
        float *out = att_out + (size_t)(t0 + qi / group) * q_dim + (size_t)(kvh * group + qi % group) * hd;
        for (j = 0; j < hd; j++) out[j] = acc[(size_t)qi * hd + j] / sum[qi];
    }
}

static int segment_att_units(const lucie_config *c, const batch_segment *seg) {
    return c->n_kv_heads * ((seg->count + ATT_QUERY_TOKENS - 1) / ATT_QUERY_TOKENS);
}

/* Units: per segment, KV heads x blocks of tokens, KV head fastest, so that
 * decoding (one token) still splits over the heads. */
typedef struct {
    lucie_session *lead;
    const batch_segment *segs;
    int layer;
} attention_job;

static void attention_units(void *job, int begin, int end, int worker) {
    const attention_job *j = (const attention_job *)job;
    const lucie_config *c = &j->lead->model->config;
    int unit;
    for (unit = begin; unit < end; unit++) {
        const batch_segment *seg = j->segs;
        int u = unit, kvh, t0, nt;
        while (u >= segment_att_units(c, seg)) u -= segment_att_units(c, seg++);
        kvh = u % c->n_kv_heads;
        t0 = u / c->n_kv_heads * ATT_QUERY_TOKENS;
        nt = seg->count - t0 < ATT_QUERY_TOKENS ? seg->count - t0 : ATT_QUERY_TOKENS;
        attention_unit(j->lead, seg, j->layer, kvh, t0, nt,
                       j->lead->att_scratch + (size_t)worker * attention_scratch_floats(c));
    }
}

static void attention(lucie_session *lead, const batch_segment *segs, int n_segs, int layer) {
    const lucie_config *c = &lead->model->config;
    int units = 0, i;
    double work = 0.0;
    kernel_ctx ctx = session_kernel_ctx(lead);
    attention_job j;
    for (i = 0; i < n_segs; i++) {
        units += segment_att_units(c, &segs[i]);
        work += 2.0 * segs[i].count * c->n_heads * (segs[i].session->pos + segs[i].count) * c->head_dim;
    }
    j.lead = lead;
    j.segs = segs;
    j.layer = layer;
    pool_run(ctx.pool, threads_for(&ctx, work, ATTENTION_MIN_WORK_PER_THREAD), units, 1, attention_units, &j);
    input_written(lead, lead->att_out);
}

/* The element-wise steps, split over the threads for a batch (serial, they
 * took ~6% of a 512-token prefill while the other thread waited); each
 * element is computed the same way whatever the split. One token's worth is
 * not worth a fork (threads_for). */
typedef struct {
    float *out;
    const float *x, *weight;
    int dim;
    float eps;
} rmsnorm_job;

static void rmsnorm_tokens(void *job, int begin, int end, int worker) {
    const rmsnorm_job *j = (const rmsnorm_job *)job;
    int t;
    (void)worker;
    for (t = begin; t < end; t++) rmsnorm(j->out + (size_t)t * j->dim, j->x + (size_t)t * j->dim, j->weight, j->dim, j->eps);
}

static void rmsnorm_rows(lucie_session *s, float *out, const float *x, const float *weight, int n) {
    const lucie_config *c = &s->model->config;
    kernel_ctx ctx = session_kernel_ctx(s);
    int threads = threads_for(&ctx, (double)n * c->dim, ELEMENTWISE_MIN_WORK_PER_THREAD);
    rmsnorm_job j;
    j.out = out;
    j.x = x;
    j.weight = weight;
    j.dim = c->dim;
    j.eps = c->rms_norm_eps;
    kernel_split(&ctx, threads, n, rmsnorm_tokens, &j);
    input_written(s, out);
}

typedef struct {
    float *gate;
    const float *up;
} swiglu_job;

static void swiglu_elements(void *job, int begin, int end, int worker) {
    const swiglu_job *j = (const swiglu_job *)job;
    int i;
    (void)worker;
    for (i = begin; i < end; i++) j->gate[i] = silu(j->gate[i]) * j->up[i];
}

/* hb = silu(hb) * hb2 (LlamaMLP's act_fn(gate_proj(x)) * up_proj(x)). */
static void swiglu(lucie_session *s, int count) {
    kernel_ctx ctx = session_kernel_ctx(s);
    int threads = threads_for(&ctx, (double)count, ELEMENTWISE_MIN_WORK_PER_THREAD);
    swiglu_job j;
    j.gate = s->hb;
    j.up = s->hb2;
    kernel_split(&ctx, threads, count, swiglu_elements, &j);
    input_written(s, s->hb);
}

/* Keys and values of the batch's new tokens: RoPE at each token's own
 * position, then into its own session's cache. */
static void rope_and_store(lucie_session *lead, const batch_segment *segs, int n_segs, int layer) {
    const lucie_config *c = &lead->model->config;
    int hd = c->head_dim, q_dim = c->n_heads * hd, kv_dim = c->n_kv_heads * hd, half = hd / 2, i, t, h;
    for (i = 0; i < n_segs; i++) {
        lucie_session *s = segs[i].session;
        for (t = segs[i].first; t < segs[i].first + segs[i].count; t++) {
            int p = s->pos + t - segs[i].first;
            const float *cr = s->rope_cos + (size_t)p * half, *sr = s->rope_sin + (size_t)p * half;
            apply_rope(lead->q + (size_t)t * q_dim, c->n_heads, hd, cr, sr);
            apply_rope(lead->k + (size_t)t * kv_dim, c->n_kv_heads, hd, cr, sr);
            for (h = 0; h < c->n_kv_heads; h++) {
                size_t at = (size_t)p * s->kv_row_bytes, in = (size_t)t * kv_dim + (size_t)h * hd;
                s->kv->store(cache_rows(s, s->key_cache, layer, h) + at, lead->k + in, hd);
                s->kv->store(cache_rows(s, s->value_cache, layer, h) + at, lead->v + in, hd);
            }
        }
    }
    input_written(lead, lead->q);
}

/* Runs n (<= MAX_BATCH) tokens (tokens[row]) through the layers, in the lead
 * session's buffers, each segment's tokens against its own session's cache;
 * every segment's session then stands count positions further. The final
 * hidden states are left in lead->x (see final_logits). */
static void forward_layers(lucie_session *lead, const batch_segment *segs, int n_segs, const int *tokens, int n) {
    const lucie_model *m = lead->model;
    const lucie_config *c = &m->config;
    int dim = c->dim, hidden = c->hidden_dim, l, t, i;
    const weight_kernels *ek = kernels_for(m->embed.dtype);
    for (t = 0; t < n; t++) ek->embed_row(lead->x + (size_t)t * dim, m->embed.data, tokens[t], dim, c->group_size);
    for (l = 0; l < c->n_layers; l++) {
        const layer_weights *w = &m->layers[l];
        /* attention block */
        rmsnorm_rows(lead, lead->xb, lead->x, w->attn_norm, n);
        linear_choosing_threads(lead, &lead->tuner[n > 1], lead->q, lead->xb, &w->wq, n);
        linear(lead, lead->k, lead->xb, &w->wk, n);
        linear(lead, lead->v, lead->xb, &w->wv, n);
        rope_and_store(lead, segs, n_segs, l);
        attention(lead, segs, n_segs, l);
        linear(lead, lead->xb, lead->att_out, &w->wo, n);
        for (i = 0; i < n * dim; i++) lead->x[i] += lead->xb[i];
        /* MLP block */
        rmsnorm_rows(lead, lead->xb, lead->x, w->ffn_norm, n);
        linear(lead, lead->hb, lead->xb, &w->w_gate, n);
        linear(lead, lead->hb2, lead->xb, &w->w_up, n);
        swiglu(lead, n * hidden);
        linear(lead, lead->xb, lead->hb, &w->w_down, n);
        for (i = 0; i < n * dim; i++) lead->x[i] += lead->xb[i];
    }
    for (i = 0; i < n_segs; i++) segs[i].session->pos += segs[i].count;
}

/* logits[k] = lm_head(norm(x[rows[k]])) for k < n_rows: the final norm of the
 * chosen rows of lead->x, gathered into lead->xb, through lm_head at once. */
static void final_logits(lucie_session *lead, float *logits, const int *rows, int n_rows) {
    const lucie_config *c = &lead->model->config;
    int k;
    for (k = 0; k < n_rows; k++)
        rmsnorm(lead->xb + (size_t)k * c->dim, lead->x + (size_t)rows[k] * c->dim, lead->model->final_norm, c->dim,
                c->rms_norm_eps);
    input_written(lead, lead->xb);
    linear(lead, logits, lead->xb, &lead->model->lm_head, n_rows);
}

static int check_tokens(lucie_session *s, const int *tokens, int n) {
    const lucie_config *c = &s->model->config;
    int i;
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
    return LUCIE_OK;
}

/* What a session keeps after evaluating tokens: their ids (repetition
 * penalty, lucie_session_tokens) and its own copy of the last prediction,
 * which lucie_generate_tokens continues from when given no input. */
static void remember_tokens(lucie_session *s, const int *tokens, int n) {
    memcpy(s->history + s->pos - n, tokens, (size_t)n * sizeof(int));
}

static void remember_logits(lucie_session *s, const float *last) {
    if (last != s->logits) memcpy(s->logits, last, (size_t)s->model->config.vocab_size * sizeof(float));
    s->have_logits = 1;
}

/* On a pool that pins (see "Where the threads run"), the caller keeps to its
 * processor while it evaluates a batch of n > 1 tokens whose products are
 * large enough to split over threads (threads_for; a small model's never
 * leave the caller). One token at a time it stays where the OS has it: a
 * step then is a string of short products, and a caller held to the
 * processor another process busies stalled them all (7B q4 decoding beside
 * a CPU hog, 2 threads against 1, medians of 3-4 alternating runs:
 * 0.87-0.89x with the caller pinned, 0.99-1.02x without). */
static void pin_for_evaluation(lucie_session *s, int n) {
    const lucie_config *c = &s->model->config;
    if (n > 1 && (double)(n < MAX_BATCH ? n : MAX_BATCH) * c->dim * c->hidden_dim >= 2.0 * MATMUL_MIN_WORK_PER_THREAD)
        pool_pin_caller(s->pool);
}

int lucie_eval(lucie_session *s, const int *tokens, int n, float *logits, int flags) {
    const lucie_config *c;
    int done = 0, status, all = (flags & LUCIE_EVAL_ALL_LOGITS) != 0;
    if (!s || (!tokens && n > 0) || n < 0) return LUCIE_EINVAL;
    c = &s->model->config;
    if (n == 0) {
        snprintf(s->error, sizeof s->error, "no tokens to evaluate");
        return LUCIE_EINVAL;
    }
    status = check_tokens(s, tokens, n);
    if (status != LUCIE_OK) return status;
    s->have_logits = 0;
    pin_for_evaluation(s, n);
    while (done < n) {
        int chunk = n - done < MAX_BATCH ? n - done : MAX_BATCH, k, rows[MAX_BATCH];
        batch_segment seg;
        seg.session = s;
        seg.first = 0;
        seg.count = chunk;
        forward_layers(s, &seg, 1, tokens + done, chunk);
        remember_tokens(s, tokens + done, chunk);
        if (logits && all) {
            float *out = logits + (size_t)done * c->vocab_size;
            for (k = 0; k < chunk; k++) rows[k] = k;
            final_logits(s, out, rows, chunk);
            if (done + chunk == n) remember_logits(s, out + (size_t)(chunk - 1) * c->vocab_size);
        } else if (logits && done + chunk == n) {
            rows[0] = chunk - 1;
            final_logits(s, logits, rows, 1);
            remember_logits(s, logits);
        }
        done += chunk;
    }
    pool_unpin_caller(s->pool);
    return LUCIE_OK;
}

/* ---- several sessions in one forward ----
 *
 * The entries' tokens are laid end to end and cut into chunks of MAX_BATCH
 * rows; a chunk holds one segment per entry it touches (an entry longer
 * than the room left continues in the next chunk). An entry's logits are
 * computed in the chunk that holds its last token, all such rows of a chunk
 * through lm_head together (into the lead's batch_logits, then copied). */

static int batch_entries_valid(const lucie_batch_entry *e, int n) {
    lucie_session *lead = e[0].session;
    int i, j, status;
    for (i = 0; i < n; i++) {
        lucie_session *s = e[i].session;
        if (!s || s->model != lead->model) {
            snprintf(lead->error, sizeof lead->error, "batch entry %d: %s", i,
                     s ? "its session belongs to another model" : "no session");
            return LUCIE_EINVAL;
        }
        if (!e[i].tokens || e[i].n_tokens < 1) {
            snprintf(lead->error, sizeof lead->error, "batch entry %d: no tokens to evaluate", i);
            return LUCIE_EINVAL;
        }
        for (j = 0; j < i; j++)
            if (e[j].session == s) {
                snprintf(lead->error, sizeof lead->error, "batch entries %d and %d share a session", j, i);
                return LUCIE_EINVAL;
            }
        status = check_tokens(s, e[i].tokens, e[i].n_tokens);
        if (status != LUCIE_OK) {
            if (s != lead) snprintf(lead->error, sizeof lead->error, "batch entry %d: %.200s", i, s->error);
            return status;
        }
    }
    return LUCIE_OK;
}

int lucie_eval_batch(lucie_batch_entry *entries, int n_entries) {
    lucie_session *lead;
    const lucie_config *c;
    batch_segment segs[MAX_BATCH];
    int tokens[MAX_BATCH], rows[MAX_BATCH], ends[MAX_BATCH];
    int entry = 0, done_in_entry = 0, i, status, total = 0;
    if (!entries || n_entries < 1 || !entries[0].session) return LUCIE_EINVAL;
    lead = entries[0].session;
    c = &lead->model->config;
    status = batch_entries_valid(entries, n_entries);
    if (status != LUCIE_OK) return status;
    if (!lead->batch_logits) {
        lead->batch_logits = (float *)aligned_alloc64((size_t)MAX_BATCH * c->vocab_size * sizeof(float));
        if (!lead->batch_logits) {
            snprintf(lead->error, sizeof lead->error, "out of memory for the logits of a batch");
            return LUCIE_ENOMEM;
        }
    }
    for (i = 0; i < n_entries; i++) {
        entries[i].session->have_logits = 0;
        if (total < MAX_BATCH) total += entries[i].n_tokens; /* (a full chunk is all pin_for_evaluation asks) */
    }
    pin_for_evaluation(lead, total);
    while (entry < n_entries) {
        int n = 0, n_segs = 0, n_ends = 0;
        /* fill a chunk */
        while (entry < n_entries && n < MAX_BATCH) {
            const lucie_batch_entry *e = &entries[entry];
            int take = e->n_tokens - done_in_entry < MAX_BATCH - n ? e->n_tokens - done_in_entry : MAX_BATCH - n;
            segs[n_segs].session = e->session;
            segs[n_segs].first = n;
            segs[n_segs].count = take;
            memcpy(tokens + n, e->tokens + done_in_entry, (size_t)take * sizeof(int));
            n_segs++;
            n += take;
            done_in_entry += take;
            if (done_in_entry == e->n_tokens) {
                if (e->logits) {
                    rows[n_ends] = n - 1;
                    ends[n_ends++] = entry;
                }
                entry++;
                done_in_entry = 0;
            }
        }
        forward_layers(lead, segs, n_segs, tokens, n);
        for (i = 0; i < n_segs; i++) remember_tokens(segs[i].session, tokens + segs[i].first, segs[i].count);
        if (n_ends) final_logits(lead, lead->batch_logits, rows, n_ends);
        for (i = 0; i < n_ends; i++) {
            const float *row = lead->batch_logits + (size_t)i * c->vocab_size;
            memcpy(entries[ends[i]].logits, row, (size_t)c->vocab_size * sizeof(float));
            remember_logits(entries[ends[i]].session, row);
        }
    }
    pool_unpin_caller(lead->pool);
    return LUCIE_OK;
}

/* ========================================================================
 * 8. Sampling
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
static void apply_repetition_penalty(lucie_session *s, float *logits, int n_history) {
    sampler *sp = &s->samp;
    int start = 0, i;
    if (sp->repetition_penalty == 1.0f) return;
    if (sp->repetition_window > 0 && n_history > sp->repetition_window) start = n_history - sp->repetition_window;
    if (++sp->stamp == 0) { /* wrapped: forget every old stamp */
        memset(s->penalised, 0, (size_t)s->model->config.vocab_size * sizeof *s->penalised);
        sp->stamp = 1;
    }
    for (i = start; i < n_history; i++) {
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

/* Samples as if the cache held only its first n_history tokens: the
 * repetition penalty sees those. lucie_sample passes the whole cache;
 * speculative decoding (section 9) passes the tokens plain decoding would
 * have cached at that point, while drafts beyond them are still in the cache. */
static int sample_with_history(lucie_session *s, const float *logits_in, int n_history) {
    const sampler *sp = &s->samp;
    int vocab, i, n;
    float *logits, max, sum, cumulative, r;
    prob_index *c;
    vocab = s->model->config.vocab_size;
    logits = s->sample_logits;
    memcpy(logits, logits_in, (size_t)vocab * sizeof(float));
    /* NaN/inf can only come from corrupt weights (the loader does not read
     * them all): refuse rather than return an arbitrary token. */
    for (i = 0; i < vocab; i++)
        if (!isfinite(logits[i])) {
            snprintf(s->error, sizeof s->error,
                     "the model produced non-finite logits (NaN or inf): are its weights corrupt?");
            return LUCIE_EFORMAT;
        }
    apply_repetition_penalty(s, logits, n_history);
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

int lucie_sample(lucie_session *s, const float *logits) {
    if (!s || !logits) return LUCIE_EINVAL;
    return sample_with_history(s, logits, s->pos);
}

/* ========================================================================
 * 9. Generation
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
    char *bigger = n > SIZE_MAX - b->len - 1 ? NULL : (char *)grow_array(b->text, &b->cap, b->len + n + 1, 1, 256);
    if (!bigger) return 0;
    b->text = bigger;
    memcpy(b->text + b->len, s, n);
    b->len += n;
    b->text[b->len] = '\0';
    return 1;
}

size_t lucie_stop_scan(const char *text, size_t len, const char *const *stop, int n_stop, int *found) {
    size_t safe = len, i;
    int k;
    *found = 0;
    for (k = 0; k < n_stop; k++) {
        size_t n = stop[k] ? strlen(stop[k]) : 0;
        if (n == 0) continue;
        for (i = 0; i < len; i++) {
            size_t m = len - i < n ? len - i : n;
            if (memcmp(text + i, stop[k], m) == 0) {
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

static size_t stop_scan(const text_buffer *b, const lucie_generate_options *o, int *found) {
    return lucie_stop_scan(b->text, b->len, o->stop, o->n_stop, found);
}

/* ---- speculative decoding by prompt lookup ----
 *
 * Text that quotes, edits or summarises its input repeats long runs of it.
 * After each sampled token we look for the latest earlier place where the
 * last few tokens (input and output alike) occurred and guess that what
 * followed there follows again: those drafts are evaluated together with the
 * sampled token in one forward pass, which on a memory-bound model costs
 * about what one token costs. Each position's prediction is then sampled
 * exactly as plain decoding would sample it (same sampler, same random draws
 * in the same order, the repetition penalty over the tokens plain decoding
 * would have cached); drafts are kept while the sampled token equals them, and
 * the cache is rewound past the first wrong one. Since a token's logits do not
 * depend on how many tokens share its forward pass, the output is exactly that
 * of plain decoding: lookup changes only how many passes it takes.
 *
 * The n-gram is the longest of LOOKUP_LONGEST_NGRAM down to
 * LOOKUP_SHORTEST_NGRAM tokens that occurred before; a single repeated token
 * is too weak a clue (in ordinary prose most tokens occurred before) and would
 * cost a wasted verification on most steps, while two tokens rarely match
 * outside a real repetition. No match, no draft: the step is then the plain
 * one-token pass. How many of the continuation's tokens are drafted adapts as
 * in transformers' assisted generation: two more after a pass whose drafts
 * were all taken, one fewer (not below one) after a rejection, within the
 * caller's limit; it starts at LOOKUP_FIRST_DRAFTS. A pass of a few tokens
 * costs about one step, but a pass of many costs several once the CPU's
 * arithmetic, not the weight reads, is the bottleneck (bench/verify_cost), so
 * long drafts must earn their place. */
#define LOOKUP_LONGEST_NGRAM 3
#define LOOKUP_SHORTEST_NGRAM 2
#define LOOKUP_FIRST_DRAFTS 2

/* Copies to drafts (at most max_drafts) the tokens that followed the latest
 * earlier occurrence of the longest suffix of seq[0..n) that occurred before;
 * returns how many (0: none). One backward scan, rejecting most positions on
 * their last token. */
static int lookup_drafts(const int *seq, int n, int *drafts, int max_drafts) {
    int found[LOOKUP_LONGEST_NGRAM + 1]; /* found[k]: where the latest k-token match ends, 0 = none yet */
    int end, k, m, best = 0, count;
    if (max_drafts <= 0 || n <= LOOKUP_SHORTEST_NGRAM) return 0;
    for (k = 0; k <= LOOKUP_LONGEST_NGRAM; k++) found[k] = 0;
    for (end = n - 1; end >= LOOKUP_SHORTEST_NGRAM; end--) {
        for (m = 0; m < LOOKUP_LONGEST_NGRAM && m < end && seq[end - 1 - m] == seq[n - 1 - m]; m++) continue;
        for (k = LOOKUP_SHORTEST_NGRAM; k <= m; k++)
            if (!found[k]) found[k] = end;
        if (m == LOOKUP_LONGEST_NGRAM) break;
    }
    for (k = LOOKUP_LONGEST_NGRAM; k >= LOOKUP_SHORTEST_NGRAM && !best; k--) best = found[k];
    if (!best) return 0;
    count = n - best < max_drafts ? n - best : max_drafts;
    memcpy(drafts, seq + best, (size_t)count * sizeof *drafts);
    return count;
}

/* What generation evaluates ahead of the sampler: batch[0] is the last
 * sampled token, batch[1..n_drafts] the drafts after it, all in the cache;
 * logits holds the prediction after each. The first n_verified drafts were
 * sampled (kept); the cache beyond them goes when the next one is not. */
typedef struct {
    int max_drafts; /* 0: lookup off */
    int budget;     /* drafts the next pass may carry (1..max_drafts) */
    int *batch;
    float *logits;
    int n_drafts, n_verified;
} speculation;

static int speculation_init(speculation *sp, const lucie_session *s, int lookup) {
    size_t vocab = (size_t)s->model->config.vocab_size;
    memset(sp, 0, sizeof *sp);
    /* one forward chunk at most: a longer guess is rarely right to the end */
    sp->max_drafts = lookup < MAX_BATCH - 1 ? lookup : MAX_BATCH - 1;
    if (sp->max_drafts == 0) return 1;
    sp->budget = sp->max_drafts < LOOKUP_FIRST_DRAFTS ? sp->max_drafts : LOOKUP_FIRST_DRAFTS;
    sp->batch = (int *)malloc((size_t)(sp->max_drafts + 1) * sizeof *sp->batch);
    sp->logits = (float *)malloc((size_t)(sp->max_drafts + 1) * vocab * sizeof *sp->logits);
    return sp->batch && sp->logits;
}

/* Evaluates the sampled token at position `cached` (what plain decoding has
 * cached) together with the drafts lookup finds for it, at most `room`;
 * *prediction gets the logits after the token. */
static int speculation_eval(speculation *sp, lucie_session *s, int token, int cached, int room,
                            const float **prediction, lucie_stats *st) {
    if (sp->n_drafts > 0) { /* the last pass's drafts are judged: adapt the next one's length */
        if (sp->n_verified == sp->n_drafts) sp->budget = sp->budget + 2 < sp->max_drafts ? sp->budget + 2 : sp->max_drafts;
        else if (sp->budget > 1) sp->budget--;
    }
    sp->n_drafts = sp->n_verified = 0;
    if (s->pos > cached) lucie_session_rewind(s, cached); /* drop the rejected drafts */
    if (room > sp->budget) room = sp->budget;
    if (room > 0) {
        s->history[cached] = token; /* where lucie_eval puts it: the search sees it as the last token */
        sp->n_drafts = lookup_drafts(s->history, cached + 1, sp->batch + 1, room);
    }
    st->n_forward++;
    st->n_drafted += sp->n_drafts;
    if (sp->n_drafts == 0) {
        *prediction = s->logits;
        return lucie_eval(s, &token, 1, s->logits, 0);
    }
    sp->batch[0] = token;
    *prediction = sp->logits;
    return lucie_eval(s, sp->batch, sp->n_drafts + 1, sp->logits, LUCIE_EVAL_ALL_LOGITS);
}

/* Leaves the session as plain decoding would: the drafts not taken rewound
 * away, its last logits the prediction after the last kept token. */
static void speculation_settle(speculation *sp, lucie_session *s, int cached, const float *prediction) {
    if (s->pos > cached) lucie_session_rewind(s, cached);
    if (prediction != s->logits) {
        memcpy(s->logits, prediction, (size_t)s->model->config.vocab_size * sizeof *s->logits);
        s->have_logits = 1;
    }
    free(sp->batch);
    free(sp->logits);
    memset(sp, 0, sizeof *sp);
}

int lucie_generate_tokens(lucie_session *s, const int *ids, int n_ids, const lucie_generate_options *o,
                          lucie_token_callback cb, void *user, lucie_stats *stats) {
    const lucie_config *c;
    lucie_stats st;
    lucie_detok_stream *stream = NULL;
    text_buffer pending = {NULL, 0, 0};
    speculation spec;
    const float *prediction; /* the logits plain decoding samples the next token from */
    int rc = LUCIE_OK, token, found = 0, cached;
    double t0;
    memset(&st, 0, sizeof st);
    memset(&spec, 0, sizeof spec);
    if (!s || !o || n_ids < 0 || (n_ids > 0 && !ids) || o->max_tokens < 0 || o->n_stop < 0 ||
        (o->n_stop > 0 && !o->stop) || o->lookup < 0) {
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
    if (!stream || !speculation_init(&spec, s, o->lookup)) {
        snprintf(s->error, sizeof s->error, "out of memory");
        rc = LUCIE_ENOMEM;
        goto done;
    }
    /* The decoder learns the input so the output continues it seamlessly; a
     * chat reply (fresh_text) is decoded on its own, as HF decodes replies. */
    if (!o->fresh_text && (n_ids > 0 || s->pos > 0) &&
        (rc = n_ids > 0 ? lucie_detok_stream_prime(stream, ids, n_ids)
                        : lucie_detok_stream_prime(stream, s->history, s->pos)) != LUCIE_OK) {
        snprintf(s->error, sizeof s->error, "cannot decode the input: %s", lucie_status_string(rc));
        goto done;
    }
    st.n_prompt = n_ids;
    t0 = lucie_time_seconds();
    if (n_ids > 0 && (rc = lucie_eval(s, ids, n_ids, s->logits, 0)) != LUCIE_OK) goto done;
    st.prompt_seconds = lucie_time_seconds() - t0;
    t0 = lucie_time_seconds();
    prediction = s->logits;
    cached = s->pos;
    while (st.n_generated < o->max_tokens) {
        const char *piece;
        size_t len = 0, safe;
        if (cached >= s->context) {
            st.stop_reason = LUCIE_STOP_CONTEXT_FULL;
            snprintf(s->error, sizeof s->error, "context full (%d tokens)", s->context);
            break;
        }
        token = sample_with_history(s, prediction, cached);
        if (token < 0) {
            rc = token;
            break;
        }
        st.n_generated++;
        if (spec.n_verified < spec.n_drafts && token == spec.batch[1 + spec.n_verified]) {
            /* the draft was right: it is in the cache already, its prediction computed */
            spec.n_verified++;
            st.n_accepted++;
            prediction = spec.logits + (size_t)spec.n_verified * c->vocab_size;
        } else {
            /* The sampled token joins the cache even when it ends the text, so a
             * chat can go on after an eos with the cache in the template's shape.
             * Drafts after it: only as many as plain decoding could still take. */
            int room = is_eos(c, token) ? 0 : o->max_tokens - st.n_generated;
            if (room > s->context - cached - 1) room = s->context - cached - 1;
            rc = speculation_eval(&spec, s, token, cached, room, &prediction, &st);
            if (rc != LUCIE_OK) break;
        }
        cached++;
        if (is_eos(c, token)) {
            st.stop_reason = LUCIE_STOP_EOS;
            break;
        }
        piece = lucie_detok_stream_push(stream, token, &len);
        if (!piece) {
            rc = stream->status;
            snprintf(s->error, sizeof s->error, "cannot decode token %d: %s", token, lucie_status_string(rc));
            break;
        }
        if (!text_append(&pending, piece, len)) {
            rc = LUCIE_ENOMEM;
            snprintf(s->error, sizeof s->error, "out of memory");
            break;
        }
        safe = stop_scan(&pending, o, &found);
        if (cb && cb(pending.text, safe, token, user)) {
            st.stop_reason = LUCIE_STOP_CALLBACK;
            break;
        }
        memmove(pending.text, pending.text + safe, pending.len - safe + 1);
        pending.len -= safe;
        if (found) {
            st.stop_reason = LUCIE_STOP_STRING;
            pending.len = 0;
            break;
        }
    }
    speculation_settle(&spec, s, cached, prediction);
    /* Text the decoder held back, and text held back for a stop string that
     * never came, is output now. */
    if (rc == LUCIE_OK && st.stop_reason != LUCIE_STOP_CALLBACK && st.stop_reason != LUCIE_STOP_STRING) {
        size_t len = 0;
        const char *rest = lucie_detok_stream_flush(stream, &len);
        if (rest && text_append(&pending, rest, len)) {
            size_t safe = stop_scan(&pending, o, &found);
            if (found) st.stop_reason = LUCIE_STOP_STRING;
            if (cb && (found ? safe : pending.len) > 0) cb(pending.text, found ? safe : pending.len, -1, user);
        }
    }
    st.generate_seconds = lucie_time_seconds() - t0;
done:
    if (stats) *stats = st;
    free(spec.batch);
    free(spec.logits);
    free(pending.text);
    lucie_detok_stream_free(stream);
    return rc;
}

int lucie_generate(lucie_session *s, const char *prompt, int max_tokens, lucie_token_callback cb, void *user,
                   lucie_stats *stats) {
    lucie_generate_options o;
    int *ids, n_ids, rc;
    if (!s || !prompt || max_tokens < 0) return LUCIE_EINVAL;
    rc = lucie_tokenize_alloc(s->model, prompt, strlen(prompt), LUCIE_TOK_ADD_SPECIAL | LUCIE_TOK_PARSE_SPECIAL, &ids,
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
    rc = lucie_tokenize_alloc(m, text, len, 0, &piece, &n_piece, err, err_size);
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

typedef struct {
    const lucie_model *model;
    const lucie_chat_message *messages;
    int n_messages, flags;
} chat_args;

static int produce_chat_tokens(const void *args, int *ids, int max_ids, int *n_ids, char *err, size_t err_size) {
    const chat_args *a = (const chat_args *)args;
    return lucie_chat_tokens(a->model, a->messages, a->n_messages, a->flags, ids, max_ids, n_ids, err, err_size);
}

int lucie_chat_tokens_alloc(const lucie_model *model, const lucie_chat_message *messages, int n_messages, int flags,
                            int **ids, int *n_ids, char *err, size_t err_size) {
    chat_args a = {model, messages, n_messages, flags};
    return ids_alloc(produce_chat_tokens, &a, ids, n_ids, err, err_size);
}

/* ========================================================================
 * 10. Converting model files: quantization
 *
 * export.py writes f32/bf16; q8/q4 files are made here, in C, so the block
 * layouts (defined in section 4 with the kernels that read them) have one
 * definition and one writer: the weight quantizer below. The input file is
 * validated by the same loader as for inference, then rewritten tensor by
 * tensor with bounded memory.
 * ======================================================================== */

/* ---- quantizing weights (the exporter side) ----
 * Codes and scales of a group for each integer format (its descriptor's
 * quantize_group), and whole rows written in the block layout of 4b. */

/* Codes u of the 32 values v for the scale stored as h. */
static void quant_codes(const weight_format *f, const float *v, uint16_t h, unsigned char *u) {
    float d = half_to_float(h), inv = d != 0.0f ? 1.0f / d : 0.0f;
    float lo = (float)f->code_min, hi = (float)f->code_max;
    int i;
    for (i = 0; i < QUANT_GROUP; i++) u[i] = (unsigned char)(round_to_int(clamp_float(v[i] * inv, lo, hi)) + f->zero);
}

/* The value of largest magnitude of a group (sign kept). */
static float group_extreme(const float *v) {
    float extreme = 0.0f;
    int i;
    for (i = 0; i < QUANT_GROUP; i++)
        if (fabsf(v[i]) > fabsf(extreme)) extreme = v[i];
    return extreme;
}

/* Codes and f16 scale of one group of 32 values (zero-padded), for each
 * integer format (its descriptor's quantize_group). q8 simply maps max|v|
 * to 127. */
static uint16_t q8_quantize_group(const weight_format *f, const float *v, unsigned char *u) {
    uint16_t h = float_to_half(fabsf(group_extreme(v)) / (float)f->code_max);
    quant_codes(f, v, h, u);
    return h;
}

/* Squared error of q4 codes u at scale h (8 partial sums: the loop vectorises). */
static float q4_error(const float *v, const unsigned char *u, uint16_t h) {
    float d = half_to_float(h), partial[8] = {0}, err = 0.0f;
    int i, j;
    for (i = 0; i < QUANT_GROUP; i += 8)
        for (j = 0; j < 8; j++) {
            float e = v[i + j] - (float)(u[i + j] - Q4_ZERO) * d;
            partial[j] += e * e;
        }
    for (j = 0; j < 8; j++) err += partial[j];
    return err;
}

/* The f16 scale minimising the squared error of q4 codes u: sum(q v) / sum(q q). */
static uint16_t q4_refit(const float *v, const unsigned char *u, uint16_t h) {
    float num8[8] = {0}, den8[8] = {0}, num = 0.0f, den = 0.0f;
    int i, j;
    for (i = 0; i < QUANT_GROUP; i += 8)
        for (j = 0; j < 8; j++) {
            float q = (float)(u[i + j] - Q4_ZERO);
            num8[j] += q * v[i + j];
            den8[j] += q * q;
        }
    for (j = 0; j < 8; j++) {
        num += num8[j];
        den += den8[j];
    }
    return den > 0.0f ? float_to_half(num / den) : h;
}

/* q4, with only 16 levels, starts from the extreme value on level -8, also
 * tries scales that put it on other levels, the least-squares scale of each
 * candidate's codes, and the codes of that scale, and keeps whichever
 * reconstructs the group best. */
static uint16_t q4_quantize_group(const weight_format *f, const float *v, unsigned char *u) {
    float extreme = group_extreme(v), best_err;
    unsigned char trial[QUANT_GROUP], again[QUANT_GROUP];
    uint16_t best;
    int c;
    best = float_to_half(extreme / -8.0f);
    quant_codes(f, v, best, u);
    best_err = q4_error(v, u, best);
    for (c = 0; c < 8 && extreme != 0.0f; c++) {
        /* extreme on level -8 (refit only), -7.5, -7, -6.5, or 7, 7.5, 8, 8.5 */
        float divisor = c < 4 ? -8.0f + 0.5f * (float)c : 7.0f + 0.5f * (float)(c - 4), err;
        uint16_t h = float_to_half(extreme / divisor), refit;
        quant_codes(f, v, h, trial);
        if (c > 0 && (err = q4_error(v, trial, h)) < best_err) {
            best_err = err;
            best = h;
            memcpy(u, trial, QUANT_GROUP);
        }
        refit = q4_refit(v, trial, h);
        if ((err = q4_error(v, trial, refit)) < best_err) {
            best_err = err;
            best = refit;
            memcpy(u, trial, QUANT_GROUP);
        }
        quant_codes(f, v, refit, again);
        if ((err = q4_error(v, again, refit)) < best_err) {
            best_err = err;
            best = refit;
            memcpy(u, again, QUANT_GROUP);
        }
    }
    return best;
}

/* Quantizes `rows` rows of src (row-major f32, `cols` wide) into dst, which
 * receives tensor_bytes(dtype, rows, cols) bytes. A tensor may be converted in
 * pieces of a multiple of 16 rows, concatenating the outputs. Returns 0 for
 * a dtype or group size this code cannot write. */
static int quantize_rows(int dtype, const float *src, void *dst, size_t rows, int cols, int group_size) {
    const weight_format *f = weight_format_of(dtype);
    int ng = quant_groups(cols);
    size_t n_blocks = (rows + QUANT_ROWS - 1) / QUANT_ROWS, b;
    if (!f || !f->quantize_group || group_size != f->info.group || cols <= 0) return 0;
    for (b = 0; b < n_blocks; b++) {
        unsigned char *block = (unsigned char *)dst + b * quant_block_bytes(dtype, ng);
        unsigned char *codes = block + (size_t)ng * QUANT_ROWS * 2;
        int r, g, i;
        for (r = 0; r < QUANT_ROWS; r++) {
            size_t row = b * QUANT_ROWS + (size_t)r;
            for (g = 0; g < ng; g++) {
                float v[QUANT_GROUP];
                unsigned char u[QUANT_GROUP], *gc = codes + (size_t)g * quant_codes_per_group(dtype);
                uint16_t h;
                for (i = 0; i < QUANT_GROUP; i++) {
                    int col = g * QUANT_GROUP + i;
                    v[i] = row < rows && col < cols ? src[row * (size_t)cols + col] : 0.0f;
                }
                h = f->quantize_group(f, v, u);
                block[((size_t)g * QUANT_ROWS + r) * 2] = (unsigned char)(h & 0xff);
                block[((size_t)g * QUANT_ROWS + r) * 2 + 1] = (unsigned char)(h >> 8);
                for (i = 0; i < QUANT_GROUP; i++) { /* the layout of section 4b */
                    unsigned char *at = gc + code_offset(f->code_bits, r, i);
                    int shift = code_shift(f->code_bits, i);
                    *at = (unsigned char)((shift ? *at : 0) | u[i] << shift);
                }
            }
        }
    }
    return 1;
}



/* The dtype a tensor gets in a file quantized to `dtype`. The seven matrices
 * of every layer take it. The embedding table and the lm_head take the
 * format's embedding_dtype: q4 keeps them at 8 bits, which costs 266 MB (7%)
 * at the Lucie-7B shape, reads 3.7% more bytes per token (the embedding is
 * only gathered), and on stories260K cut the KL divergence against f32 by a
 * fifth. Norms, and whatever is already quantized, stay as they are. */
static int quant_target_dtype(const file_entry *e, int dtype) {
    const weight_format *f = weight_format_of(e->dtype);
    size_t n = strlen(e->name);
    if (!f || f->quantize_group) return e->dtype;
    if (strcmp(e->name, "model.embed_tokens.weight") == 0 || strcmp(e->name, "lm_head.weight") == 0)
        return weight_format_of(dtype)->embedding_dtype;
    if (n > 12 && strcmp(e->name + n - 12, "_proj.weight") == 0) return dtype;
    return e->dtype;
}


#define QUANT_CHUNK_ELEMENTS ((size_t)1 << 22) /* rows converted at once: ~16 MB of f32 */

/* Drops input pages already converted from this process's mapping (they stay
 * in the page cache), so converting a 15 GB file keeps a small resident set. */
static void quant_release(const file_view *in, const unsigned char *p, size_t n) {
#if !defined(_WIN32) && defined(MADV_DONTNEED)
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t begin = (uintptr_t)p, end = (uintptr_t)p + n;
    if (!in->is_mapped || page <= 0) return;
    begin = (begin + (uintptr_t)page - 1) / (uintptr_t)page * (uintptr_t)page;
    end = end / (uintptr_t)page * (uintptr_t)page;
    if (end > begin) madvise((void *)begin, end - begin, MADV_DONTNEED);
#else
    (void)in;
    (void)p;
    (void)n;
#endif
}

/* One conversion: the input, the plan for the output, the work buffers. */
typedef struct {
    file_view in;
    file_entry *entries; /* the input's entry table, in table order */
    uint32_t n_entries;
    uint32_t *order;     /* entry indices by increasing offset: sections keep their order */
    int dtype;           /* an integer format (one with a quantize_group) */
    int *targets;        /* each entry's dtype in the output */
    uint64_t *offsets, *sizes, file_size;
    uint64_t total, done; /* input bytes to convert, converted so far (progress) */
    float *buf;          /* a chunk of rows as f32 */
    unsigned char *qbuf; /* the same chunk quantized */
    size_t chunk_rows;
    worker_pool *pool;   /* the processors' threads quantize a chunk's blocks */
    FILE *out;
    char *tmp_path;
    void (*progress)(const char *tensor, double fraction, void *user);
    void *user;
    char *err;
    size_t err_size;
} quant_job;

static int quant_write(quant_job *j, const void *data, size_t n) {
    if (n && fwrite(data, 1, n, j->out) != n) {
        set_error(j->err, j->err_size, "write error on '%s': %s", j->tmp_path, strerror(errno));
        return LUCIE_EIO;
    }
    return LUCIE_OK;
}

/* Output dtypes, sizes and offsets, and the work buffers. */
static int quant_plan(quant_job *j) {
    uint32_t i, k;
    uint64_t pos = HEADER_SIZE + (uint64_t)j->n_entries * ENTRY_SIZE;
    size_t widest = 1, widest_unit = 1; /* the widest input row, the largest output unit of 16 rows */
    for (i = 0; i < j->n_entries; i++) {
        const file_entry *e = &j->entries[i];
        size_t bytes = (size_t)e->size;
        if (weight_format_of(e->dtype) && weight_format_of(e->dtype)->quantize_group) {
            set_error(j->err, j->err_size, "the input is already quantized (tensor '%s')", e->name);
            return LUCIE_EINVAL;
        }
        j->targets[i] = quant_target_dtype(e, j->dtype);
        if (j->targets[i] != e->dtype) {
            size_t out_block;
            if (!tensor_bytes(j->targets[i], e->rows, e->cols, QUANT_GROUP, &bytes)) {
                set_error(j->err, j->err_size, "tensor '%s' is too large to quantize here", e->name);
                return LUCIE_ENOMEM;
            }
            if (e->cols > widest) widest = e->cols;
            out_block = quant_unit_bytes(j->targets[i]) * QUANT_ROWS;
            if (out_block > widest_unit) widest_unit = out_block;
            j->total += e->size;
        }
        j->sizes[i] = bytes;
        for (k = i; k > 0 && j->entries[j->order[k - 1]].offset > e->offset; k--) j->order[k] = j->order[k - 1];
        j->order[k] = i;
    }
    for (i = 0; i < j->n_entries; i++) {
        pos = (pos + SECTION_ALIGN - 1) / SECTION_ALIGN * SECTION_ALIGN;
        j->offsets[j->order[i]] = pos;
        pos += j->sizes[j->order[i]];
    }
    j->file_size = pos;
    j->chunk_rows = QUANT_CHUNK_ELEMENTS / widest / QUANT_ROWS * QUANT_ROWS;
    if (j->chunk_rows < QUANT_ROWS) j->chunk_rows = QUANT_ROWS;
    j->buf = (float *)malloc(j->chunk_rows * widest * sizeof *j->buf);
    j->qbuf = (unsigned char *)malloc(j->chunk_rows / QUANT_ROWS * widest_unit * (size_t)quant_groups((int)widest));
    if (!j->buf || !j->qbuf) {
        set_error(j->err, j->err_size, "out of memory");
        return LUCIE_ENOMEM;
    }
    return LUCIE_OK;
}

/* The input's header and entry table with the new weight type, group size,
 * dtypes, sizes and offsets. */
static int quant_write_tables(quant_job *j) {
    unsigned char header[HEADER_SIZE], entry[ENTRY_SIZE];
    uint32_t i;
    int rc;
    memcpy(header, j->in.data, HEADER_SIZE);
    put_u64(header + 16, j->file_size);
    put_u32(header + 28, (uint32_t)j->dtype);
    put_u32(header + 144, QUANT_GROUP);
    rc = quant_write(j, header, HEADER_SIZE);
    for (i = 0; i < j->n_entries && rc == LUCIE_OK; i++) {
        memcpy(entry, j->in.data + HEADER_SIZE + (size_t)i * ENTRY_SIZE, ENTRY_SIZE);
        put_u32(entry + 96, (uint32_t)j->targets[i]);
        put_u64(entry + 112, j->offsets[i]);
        put_u64(entry + 120, j->sizes[i]);
        rc = quant_write(j, entry, ENTRY_SIZE);
    }
    return rc;
}

typedef struct {
    const quant_job *quant;
    int dtype;
    size_t rows, cols, block_out;
} quant_chunk;

static void quant_chunk_blocks(void *job, int begin, int end, int worker) {
    const quant_chunk *q = (const quant_chunk *)job;
    int b;
    (void)worker;
    for (b = begin; b < end; b++) {
        size_t first = (size_t)b * QUANT_ROWS, rows = q->rows - first < QUANT_ROWS ? q->rows - first : QUANT_ROWS;
        quantize_rows(q->dtype, q->quant->buf + first * q->cols, q->quant->qbuf + (size_t)b * q->block_out,
                      rows, (int)q->cols, QUANT_GROUP);
    }
}

/* Quantizes one tensor a chunk of rows at a time (bounded memory), the
 * 16-row blocks of a chunk in parallel. */
static int quant_convert_tensor(quant_job *j, const file_entry *e, int dtype) {
    size_t cols = e->cols, element = (size_t)lucie_dtype(e->dtype)->unit_bytes, r0; /* a float format */
    size_t block_out = quant_block_bytes(dtype, quant_groups((int)cols));
    for (r0 = 0; r0 < e->rows; r0 += j->chunk_rows) {
        size_t n = e->rows - r0 < j->chunk_rows ? e->rows - r0 : j->chunk_rows, i;
        int n_blocks = (int)((n + QUANT_ROWS - 1) / QUANT_ROWS);
        quant_chunk q;
        const unsigned char *p = j->in.data + e->offset + r0 * cols * element;
        int rc;
        for (i = 0; i < n * cols; i++) {
            float v = element == 4 ? read_f32(p + 4 * i) : bf16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
            if (!(fabsf(v) <= 65504.0f)) {
                set_error(j->err, j->err_size, "tensor '%s' holds %s value %g; cannot quantize it", e->name,
                          v == v ? "a huge" : "a NaN", (double)v);
                return LUCIE_EINVAL;
            }
            j->buf[i] = v;
        }
        quant_release(&j->in, p, n * cols * element);
        q.quant = j;
        q.dtype = dtype;
        q.rows = n;
        q.cols = cols;
        q.block_out = block_out;
        pool_run(j->pool, pool_threads(j->pool), n_blocks, 1, quant_chunk_blocks, &q);
        if ((rc = quant_write(j, j->qbuf, (size_t)n_blocks * block_out)) != LUCIE_OK) return rc;
        j->done += n * cols * element;
        if (j->progress) j->progress(e->name, (double)j->done / (double)j->total, j->user);
    }
    return LUCIE_OK;
}

/* Every section in file order: converted, or copied as it is. */
static int quant_write_sections(quant_job *j) {
    static const unsigned char zeros[SECTION_ALIGN] = {0};
    uint64_t pos = HEADER_SIZE + (uint64_t)j->n_entries * ENTRY_SIZE;
    uint32_t i;
    int rc = LUCIE_OK;
    for (i = 0; i < j->n_entries && rc == LUCIE_OK; i++) {
        uint32_t k = j->order[i];
        const file_entry *e = &j->entries[k];
        if ((rc = quant_write(j, zeros, (size_t)(j->offsets[k] - pos))) != LUCIE_OK) break;
        if (j->targets[k] != e->dtype) {
            rc = quant_convert_tensor(j, e, j->targets[k]);
        } else {
            rc = quant_write(j, j->in.data + e->offset, (size_t)e->size);
            quant_release(&j->in, j->in.data + e->offset, (size_t)e->size);
        }
        pos = j->offsets[k] + j->sizes[k];
    }
    return rc;
}

int lucie_quantize_file(const char *in_path, const char *out_path, int dtype,
                        void (*progress)(const char *tensor, double fraction, void *user), void *user, char *err,
                        size_t err_size) {
    quant_job j;
    int rc;
    if (!in_path || !out_path || !weight_format_of(dtype) || !weight_format_of(dtype)->quantize_group) {
        set_error(err, err_size, "lucie_quantize_file: need two paths and an integer weight type (not %d)", dtype);
        return LUCIE_EINVAL;
    }
    if (!host_is_little_endian()) {
        set_error(err, err_size, "big-endian hosts are not supported (the model file is little-endian)");
        return LUCIE_EFORMAT;
    }
    memset(&j, 0, sizeof j);
    j.dtype = dtype;
    j.progress = progress;
    j.user = user;
    j.err = err;
    j.err_size = err_size;
    if ((rc = map_file(in_path, LUCIE_LOAD_MMAP, &j.in, err, err_size)) != LUCIE_OK) return rc;
    if (!(j.pool = pool_new(processor_count(), 1))) {
        unmap_file(&j.in);
        set_error(err, err_size, "out of memory");
        return LUCIE_ENOMEM;
    }
    {
        lucie_config config;
        rc = parse_header(j.in.data, j.in.size, &config, &j.n_entries, err, err_size);
        if (rc == LUCIE_OK) rc = read_entries(&j.in, j.n_entries, &config, &j.entries, err, err_size);
    }
    if (rc == LUCIE_OK) {
        j.order = (uint32_t *)malloc(j.n_entries * sizeof *j.order + 1);
        j.targets = (int *)malloc(j.n_entries * sizeof *j.targets + 1);
        j.offsets = (uint64_t *)malloc(j.n_entries * sizeof *j.offsets + 1);
        j.sizes = (uint64_t *)malloc(j.n_entries * sizeof *j.sizes + 1);
        if (!j.order || !j.targets || !j.offsets || !j.sizes) {
            set_error(err, err_size, "out of memory");
            rc = LUCIE_ENOMEM;
        } else {
            rc = quant_plan(&j);
        }
    }
    if (rc == LUCIE_OK && (j.out = atomic_create(out_path, &j.tmp_path, err, err_size)) == NULL)
        rc = j.tmp_path ? LUCIE_EIO : LUCIE_ENOMEM;
    if (rc == LUCIE_OK) rc = quant_write_tables(&j);
    if (rc == LUCIE_OK) {
        pool_pin_caller(j.pool);
        rc = quant_write_sections(&j);
        pool_unpin_caller(j.pool);
    }
    if (j.out) {
        int done = atomic_finish(j.out, j.tmp_path, out_path, rc == LUCIE_OK, err, err_size);
        if (rc == LUCIE_OK) rc = done;
    }
    free(j.buf);
    free(j.qbuf);
    free(j.tmp_path);
    free(j.order);
    free(j.targets);
    free(j.offsets);
    free(j.sizes);
    free(j.entries);
    pool_free(j.pool);
    unmap_file(&j.in);
    return rc;
}


/* ========================================================================
 * APPENDIX: Unicode tables for the tokenizer (GENERATED - do not edit).
 * Produced by tools/gen_unicode.py from the reference implementation itself
 * (Hugging Face tokenizers 0.23.3; Python unicodedata 14.0.0 for
 * the raw values). Regenerate with: python3 tools/gen_unicode.py
 * ======================================================================== */

/* Canonical combining classes != 0, as ranges {first, last, class}. */
static const uint32_t uni_ccc_ranges[][3] = {
    {0x300,0x314,230}, {0x315,0x315,232}, {0x316,0x319,220}, {0x31A,0x31A,232}, {0x31B,0x31B,216},
    {0x31C,0x320,220}, {0x321,0x322,202}, {0x323,0x326,220}, {0x327,0x328,202}, {0x329,0x333,220},
    {0x334,0x338,1}, {0x339,0x33C,220}, {0x33D,0x33F,230}, {0x342,0x342,230}, {0x345,0x345,240},
    {0x346,0x346,230}, {0x347,0x349,220}, {0x34A,0x34C,230}, {0x34D,0x34E,220}, {0x350,0x352,230},
    {0x353,0x356,220}, {0x357,0x357,230}, {0x358,0x358,232}, {0x359,0x35A,220}, {0x35B,0x35B,230},
    {0x35C,0x35C,233}, {0x35D,0x35E,234}, {0x35F,0x35F,233}, {0x360,0x361,234}, {0x362,0x362,233},
    {0x363,0x36F,230}, {0x483,0x487,230}, {0x591,0x591,220}, {0x592,0x595,230}, {0x596,0x596,220},
    {0x597,0x599,230}, {0x59A,0x59A,222}, {0x59B,0x59B,220}, {0x59C,0x5A1,230}, {0x5A2,0x5A7,220},
    {0x5A8,0x5A9,230}, {0x5AA,0x5AA,220}, {0x5AB,0x5AC,230}, {0x5AD,0x5AD,222}, {0x5AE,0x5AE,228},
    {0x5AF,0x5AF,230}, {0x5B0,0x5B0,10}, {0x5B1,0x5B1,11}, {0x5B2,0x5B2,12}, {0x5B3,0x5B3,13},
    {0x5B4,0x5B4,14}, {0x5B5,0x5B5,15}, {0x5B6,0x5B6,16}, {0x5B7,0x5B7,17}, {0x5B8,0x5B8,18},
    {0x5B9,0x5BA,19}, {0x5BB,0x5BB,20}, {0x5BC,0x5BC,21}, {0x5BD,0x5BD,22}, {0x5BF,0x5BF,23},
    {0x5C1,0x5C1,24}, {0x5C2,0x5C2,25}, {0x5C4,0x5C4,230}, {0x5C5,0x5C5,220}, {0x5C7,0x5C7,18},
    {0x610,0x617,230}, {0x618,0x618,30}, {0x619,0x619,31}, {0x61A,0x61A,32}, {0x64B,0x64B,27},
    {0x64C,0x64C,28}, {0x64D,0x64D,29}, {0x64E,0x64E,30}, {0x64F,0x64F,31}, {0x650,0x650,32},
    {0x651,0x651,33}, {0x652,0x652,34}, {0x653,0x654,230}, {0x655,0x656,220}, {0x657,0x65B,230},
    {0x65C,0x65C,220}, {0x65D,0x65E,230}, {0x65F,0x65F,220}, {0x670,0x670,35}, {0x6D6,0x6DC,230},
    {0x6DF,0x6E2,230}, {0x6E3,0x6E3,220}, {0x6E4,0x6E4,230}, {0x6E7,0x6E8,230}, {0x6EA,0x6EA,220},
    {0x6EB,0x6EC,230}, {0x6ED,0x6ED,220}, {0x711,0x711,36}, {0x730,0x730,230}, {0x731,0x731,220},
    {0x732,0x733,230}, {0x734,0x734,220}, {0x735,0x736,230}, {0x737,0x739,220}, {0x73A,0x73A,230},
    {0x73B,0x73C,220}, {0x73D,0x73D,230}, {0x73E,0x73E,220}, {0x73F,0x741,230}, {0x742,0x742,220},
    {0x743,0x743,230}, {0x744,0x744,220}, {0x745,0x745,230}, {0x746,0x746,220}, {0x747,0x747,230},
    {0x748,0x748,220}, {0x749,0x74A,230}, {0x7EB,0x7F1,230}, {0x7F2,0x7F2,220}, {0x7F3,0x7F3,230},
    {0x816,0x819,230}, {0x81B,0x823,230}, {0x825,0x827,230}, {0x829,0x82D,230}, {0x859,0x85B,220},
    {0x8D4,0x8E1,230}, {0x8E3,0x8E3,220}, {0x8E4,0x8E5,230}, {0x8E6,0x8E6,220}, {0x8E7,0x8E8,230},
    {0x8E9,0x8E9,220}, {0x8EA,0x8EC,230}, {0x8ED,0x8EF,220}, {0x8F0,0x8F0,27}, {0x8F1,0x8F1,28},
    {0x8F2,0x8F2,29}, {0x8F3,0x8F5,230}, {0x8F6,0x8F6,220}, {0x8F7,0x8F8,230}, {0x8F9,0x8FA,220},
    {0x8FB,0x8FF,230}, {0x93C,0x93C,7}, {0x94D,0x94D,9}, {0x951,0x951,230}, {0x952,0x952,220},
    {0x953,0x954,230}, {0x9BC,0x9BC,7}, {0x9CD,0x9CD,9}, {0xA3C,0xA3C,7}, {0xA4D,0xA4D,9},
    {0xABC,0xABC,7}, {0xACD,0xACD,9}, {0xB3C,0xB3C,7}, {0xB4D,0xB4D,9}, {0xBCD,0xBCD,9},
    {0xC4D,0xC4D,9}, {0xC55,0xC55,84}, {0xC56,0xC56,91}, {0xCBC,0xCBC,7}, {0xCCD,0xCCD,9},
    {0xD4D,0xD4D,9}, {0xDCA,0xDCA,9}, {0xE38,0xE39,103}, {0xE3A,0xE3A,9}, {0xE48,0xE4B,107},
    {0xEB8,0xEB9,118}, {0xEC8,0xECB,122}, {0xF18,0xF19,220}, {0xF35,0xF35,220}, {0xF37,0xF37,220},
    {0xF39,0xF39,216}, {0xF71,0xF71,129}, {0xF72,0xF72,130}, {0xF74,0xF74,132}, {0xF7A,0xF7D,130},
    {0xF80,0xF80,130}, {0xF82,0xF83,230}, {0xF84,0xF84,9}, {0xF86,0xF87,230}, {0xFC6,0xFC6,220},
    {0x1037,0x1037,7}, {0x1039,0x103A,9}, {0x108D,0x108D,220}, {0x135D,0x135F,230}, {0x1714,0x1714,9},
    {0x1734,0x1734,9}, {0x17D2,0x17D2,9}, {0x17DD,0x17DD,230}, {0x18A9,0x18A9,228}, {0x1939,0x1939,222},
    {0x193A,0x193A,230}, {0x193B,0x193B,220}, {0x1A17,0x1A17,230}, {0x1A18,0x1A18,220}, {0x1A60,0x1A60,9},
    {0x1A75,0x1A7C,230}, {0x1A7F,0x1A7F,220}, {0x1AB0,0x1AB4,230}, {0x1AB5,0x1ABA,220}, {0x1ABB,0x1ABC,230},
    {0x1ABD,0x1ABD,220}, {0x1B34,0x1B34,7}, {0x1B44,0x1B44,9}, {0x1B6B,0x1B6B,230}, {0x1B6C,0x1B6C,220},
    {0x1B6D,0x1B73,230}, {0x1BAA,0x1BAB,9}, {0x1BE6,0x1BE6,7}, {0x1BF2,0x1BF3,9}, {0x1C37,0x1C37,7},
    {0x1CD0,0x1CD2,230}, {0x1CD4,0x1CD4,1}, {0x1CD5,0x1CD9,220}, {0x1CDA,0x1CDB,230}, {0x1CDC,0x1CDF,220},
    {0x1CE0,0x1CE0,230}, {0x1CE2,0x1CE8,1}, {0x1CED,0x1CED,220}, {0x1CF4,0x1CF4,230}, {0x1CF8,0x1CF9,230},
    {0x1DC0,0x1DC1,230}, {0x1DC2,0x1DC2,220}, {0x1DC3,0x1DC9,230}, {0x1DCA,0x1DCA,220}, {0x1DCB,0x1DCC,230},
    {0x1DCD,0x1DCD,234}, {0x1DCE,0x1DCE,214}, {0x1DCF,0x1DCF,220}, {0x1DD0,0x1DD0,202}, {0x1DD1,0x1DF5,230},
    {0x1DFB,0x1DFB,230}, {0x1DFC,0x1DFC,233}, {0x1DFD,0x1DFD,220}, {0x1DFE,0x1DFE,230}, {0x1DFF,0x1DFF,220},
    {0x20D0,0x20D1,230}, {0x20D2,0x20D3,1}, {0x20D4,0x20D7,230}, {0x20D8,0x20DA,1}, {0x20DB,0x20DC,230},
    {0x20E1,0x20E1,230}, {0x20E5,0x20E6,1}, {0x20E7,0x20E7,230}, {0x20E8,0x20E8,220}, {0x20E9,0x20E9,230},
    {0x20EA,0x20EB,1}, {0x20EC,0x20EF,220}, {0x20F0,0x20F0,230}, {0x2CEF,0x2CF1,230}, {0x2D7F,0x2D7F,9},
    {0x2DE0,0x2DFF,230}, {0x302A,0x302A,218}, {0x302B,0x302B,228}, {0x302C,0x302C,232}, {0x302D,0x302D,222},
    {0x302E,0x302F,224}, {0x3099,0x309A,8}, {0xA66F,0xA66F,230}, {0xA674,0xA67D,230}, {0xA69E,0xA69F,230},
    {0xA6F0,0xA6F1,230}, {0xA806,0xA806,9}, {0xA8C4,0xA8C4,9}, {0xA8E0,0xA8F1,230}, {0xA92B,0xA92D,220},
    {0xA953,0xA953,9}, {0xA9B3,0xA9B3,7}, {0xA9C0,0xA9C0,9}, {0xAAB0,0xAAB0,230}, {0xAAB2,0xAAB3,230},
    {0xAAB4,0xAAB4,220}, {0xAAB7,0xAAB8,230}, {0xAABE,0xAABF,230}, {0xAAC1,0xAAC1,230}, {0xAAF6,0xAAF6,9},
    {0xABED,0xABED,9}, {0xFB1E,0xFB1E,26}, {0xFE20,0xFE26,230}, {0xFE27,0xFE2D,220}, {0xFE2E,0xFE2F,230},
    {0x101FD,0x101FD,220}, {0x102E0,0x102E0,220}, {0x10376,0x1037A,230}, {0x10A0D,0x10A0D,220}, {0x10A0F,0x10A0F,230},
    {0x10A38,0x10A38,230}, {0x10A39,0x10A39,1}, {0x10A3A,0x10A3A,220}, {0x10A3F,0x10A3F,9}, {0x10AE5,0x10AE5,230},
    {0x10AE6,0x10AE6,220}, {0x11046,0x11046,9}, {0x1107F,0x1107F,9}, {0x110B9,0x110B9,9}, {0x110BA,0x110BA,7},
    {0x11100,0x11102,230}, {0x11133,0x11134,9}, {0x11173,0x11173,7}, {0x111C0,0x111C0,9}, {0x111CA,0x111CA,7},
    {0x11235,0x11235,9}, {0x11236,0x11236,7}, {0x112E9,0x112E9,7}, {0x112EA,0x112EA,9}, {0x1133C,0x1133C,7},
    {0x1134D,0x1134D,9}, {0x11366,0x1136C,230}, {0x11370,0x11374,230}, {0x11442,0x11442,9}, {0x11446,0x11446,7},
    {0x114C2,0x114C2,9}, {0x114C3,0x114C3,7}, {0x115BF,0x115BF,9}, {0x115C0,0x115C0,7}, {0x1163F,0x1163F,9},
    {0x116B6,0x116B6,9}, {0x116B7,0x116B7,7}, {0x1172B,0x1172B,9}, {0x11C3F,0x11C3F,9}, {0x16AF0,0x16AF4,1},
    {0x16B30,0x16B36,230}, {0x1BC9E,0x1BC9E,1}, {0x1D165,0x1D166,216}, {0x1D167,0x1D169,1}, {0x1D16D,0x1D16D,226},
    {0x1D16E,0x1D172,216}, {0x1D17B,0x1D182,220}, {0x1D185,0x1D189,230}, {0x1D18A,0x1D18B,220}, {0x1D1AA,0x1D1AD,230},
    {0x1D242,0x1D244,230}, {0x1E000,0x1E006,230}, {0x1E008,0x1E018,230}, {0x1E01B,0x1E021,230}, {0x1E023,0x1E024,230},
    {0x1E026,0x1E02A,230}, {0x1E8D0,0x1E8D6,220}, {0x1E944,0x1E949,230}, {0x1E94A,0x1E94A,7},
};

/* One-step canonical decompositions {code point, first, second or 0}
 * (Hangul syllables excluded: decomposed by formula). */
static const uint32_t uni_decompositions[][3] = {
    {0xC0,0x41,0x300}, {0xC1,0x41,0x301}, {0xC2,0x41,0x302}, {0xC3,0x41,0x303},
    {0xC4,0x41,0x308}, {0xC5,0x41,0x30A}, {0xC7,0x43,0x327}, {0xC8,0x45,0x300},
    {0xC9,0x45,0x301}, {0xCA,0x45,0x302}, {0xCB,0x45,0x308}, {0xCC,0x49,0x300},
    {0xCD,0x49,0x301}, {0xCE,0x49,0x302}, {0xCF,0x49,0x308}, {0xD1,0x4E,0x303},
    {0xD2,0x4F,0x300}, {0xD3,0x4F,0x301}, {0xD4,0x4F,0x302}, {0xD5,0x4F,0x303},
    {0xD6,0x4F,0x308}, {0xD9,0x55,0x300}, {0xDA,0x55,0x301}, {0xDB,0x55,0x302},
    {0xDC,0x55,0x308}, {0xDD,0x59,0x301}, {0xE0,0x61,0x300}, {0xE1,0x61,0x301},
    {0xE2,0x61,0x302}, {0xE3,0x61,0x303}, {0xE4,0x61,0x308}, {0xE5,0x61,0x30A},
    {0xE7,0x63,0x327}, {0xE8,0x65,0x300}, {0xE9,0x65,0x301}, {0xEA,0x65,0x302},
    {0xEB,0x65,0x308}, {0xEC,0x69,0x300}, {0xED,0x69,0x301}, {0xEE,0x69,0x302},
    {0xEF,0x69,0x308}, {0xF1,0x6E,0x303}, {0xF2,0x6F,0x300}, {0xF3,0x6F,0x301},
    {0xF4,0x6F,0x302}, {0xF5,0x6F,0x303}, {0xF6,0x6F,0x308}, {0xF9,0x75,0x300},
    {0xFA,0x75,0x301}, {0xFB,0x75,0x302}, {0xFC,0x75,0x308}, {0xFD,0x79,0x301},
    {0xFF,0x79,0x308}, {0x100,0x41,0x304}, {0x101,0x61,0x304}, {0x102,0x41,0x306},
    {0x103,0x61,0x306}, {0x104,0x41,0x328}, {0x105,0x61,0x328}, {0x106,0x43,0x301},
    {0x107,0x63,0x301}, {0x108,0x43,0x302}, {0x109,0x63,0x302}, {0x10A,0x43,0x307},
    {0x10B,0x63,0x307}, {0x10C,0x43,0x30C}, {0x10D,0x63,0x30C}, {0x10E,0x44,0x30C},
    {0x10F,0x64,0x30C}, {0x112,0x45,0x304}, {0x113,0x65,0x304}, {0x114,0x45,0x306},
    {0x115,0x65,0x306}, {0x116,0x45,0x307}, {0x117,0x65,0x307}, {0x118,0x45,0x328},
    {0x119,0x65,0x328}, {0x11A,0x45,0x30C}, {0x11B,0x65,0x30C}, {0x11C,0x47,0x302},
    {0x11D,0x67,0x302}, {0x11E,0x47,0x306}, {0x11F,0x67,0x306}, {0x120,0x47,0x307},
    {0x121,0x67,0x307}, {0x122,0x47,0x327}, {0x123,0x67,0x327}, {0x124,0x48,0x302},
    {0x125,0x68,0x302}, {0x128,0x49,0x303}, {0x129,0x69,0x303}, {0x12A,0x49,0x304},
    {0x12B,0x69,0x304}, {0x12C,0x49,0x306}, {0x12D,0x69,0x306}, {0x12E,0x49,0x328},
    {0x12F,0x69,0x328}, {0x130,0x49,0x307}, {0x134,0x4A,0x302}, {0x135,0x6A,0x302},
    {0x136,0x4B,0x327}, {0x137,0x6B,0x327}, {0x139,0x4C,0x301}, {0x13A,0x6C,0x301},
    {0x13B,0x4C,0x327}, {0x13C,0x6C,0x327}, {0x13D,0x4C,0x30C}, {0x13E,0x6C,0x30C},
    {0x143,0x4E,0x301}, {0x144,0x6E,0x301}, {0x145,0x4E,0x327}, {0x146,0x6E,0x327},
    {0x147,0x4E,0x30C}, {0x148,0x6E,0x30C}, {0x14C,0x4F,0x304}, {0x14D,0x6F,0x304},
    {0x14E,0x4F,0x306}, {0x14F,0x6F,0x306}, {0x150,0x4F,0x30B}, {0x151,0x6F,0x30B},
    {0x154,0x52,0x301}, {0x155,0x72,0x301}, {0x156,0x52,0x327}, {0x157,0x72,0x327},
    {0x158,0x52,0x30C}, {0x159,0x72,0x30C}, {0x15A,0x53,0x301}, {0x15B,0x73,0x301},
    {0x15C,0x53,0x302}, {0x15D,0x73,0x302}, {0x15E,0x53,0x327}, {0x15F,0x73,0x327},
    {0x160,0x53,0x30C}, {0x161,0x73,0x30C}, {0x162,0x54,0x327}, {0x163,0x74,0x327},
    {0x164,0x54,0x30C}, {0x165,0x74,0x30C}, {0x168,0x55,0x303}, {0x169,0x75,0x303},
    {0x16A,0x55,0x304}, {0x16B,0x75,0x304}, {0x16C,0x55,0x306}, {0x16D,0x75,0x306},
    {0x16E,0x55,0x30A}, {0x16F,0x75,0x30A}, {0x170,0x55,0x30B}, {0x171,0x75,0x30B},
    {0x172,0x55,0x328}, {0x173,0x75,0x328}, {0x174,0x57,0x302}, {0x175,0x77,0x302},
    {0x176,0x59,0x302}, {0x177,0x79,0x302}, {0x178,0x59,0x308}, {0x179,0x5A,0x301},
    {0x17A,0x7A,0x301}, {0x17B,0x5A,0x307}, {0x17C,0x7A,0x307}, {0x17D,0x5A,0x30C},
    {0x17E,0x7A,0x30C}, {0x1A0,0x4F,0x31B}, {0x1A1,0x6F,0x31B}, {0x1AF,0x55,0x31B},
    {0x1B0,0x75,0x31B}, {0x1CD,0x41,0x30C}, {0x1CE,0x61,0x30C}, {0x1CF,0x49,0x30C},
    {0x1D0,0x69,0x30C}, {0x1D1,0x4F,0x30C}, {0x1D2,0x6F,0x30C}, {0x1D3,0x55,0x30C},
    {0x1D4,0x75,0x30C}, {0x1D5,0xDC,0x304}, {0x1D6,0xFC,0x304}, {0x1D7,0xDC,0x301},
    {0x1D8,0xFC,0x301}, {0x1D9,0xDC,0x30C}, {0x1DA,0xFC,0x30C}, {0x1DB,0xDC,0x300},
    {0x1DC,0xFC,0x300}, {0x1DE,0xC4,0x304}, {0x1DF,0xE4,0x304}, {0x1E0,0x226,0x304},
    {0x1E1,0x227,0x304}, {0x1E2,0xC6,0x304}, {0x1E3,0xE6,0x304}, {0x1E6,0x47,0x30C},
    {0x1E7,0x67,0x30C}, {0x1E8,0x4B,0x30C}, {0x1E9,0x6B,0x30C}, {0x1EA,0x4F,0x328},
    {0x1EB,0x6F,0x328}, {0x1EC,0x1EA,0x304}, {0x1ED,0x1EB,0x304}, {0x1EE,0x1B7,0x30C},
    {0x1EF,0x292,0x30C}, {0x1F0,0x6A,0x30C}, {0x1F4,0x47,0x301}, {0x1F5,0x67,0x301},
    {0x1F8,0x4E,0x300}, {0x1F9,0x6E,0x300}, {0x1FA,0xC5,0x301}, {0x1FB,0xE5,0x301},
    {0x1FC,0xC6,0x301}, {0x1FD,0xE6,0x301}, {0x1FE,0xD8,0x301}, {0x1FF,0xF8,0x301},
    {0x200,0x41,0x30F}, {0x201,0x61,0x30F}, {0x202,0x41,0x311}, {0x203,0x61,0x311},
    {0x204,0x45,0x30F}, {0x205,0x65,0x30F}, {0x206,0x45,0x311}, {0x207,0x65,0x311},
    {0x208,0x49,0x30F}, {0x209,0x69,0x30F}, {0x20A,0x49,0x311}, {0x20B,0x69,0x311},
    {0x20C,0x4F,0x30F}, {0x20D,0x6F,0x30F}, {0x20E,0x4F,0x311}, {0x20F,0x6F,0x311},
    {0x210,0x52,0x30F}, {0x211,0x72,0x30F}, {0x212,0x52,0x311}, {0x213,0x72,0x311},
    {0x214,0x55,0x30F}, {0x215,0x75,0x30F}, {0x216,0x55,0x311}, {0x217,0x75,0x311},
    {0x218,0x53,0x326}, {0x219,0x73,0x326}, {0x21A,0x54,0x326}, {0x21B,0x74,0x326},
    {0x21E,0x48,0x30C}, {0x21F,0x68,0x30C}, {0x226,0x41,0x307}, {0x227,0x61,0x307},
    {0x228,0x45,0x327}, {0x229,0x65,0x327}, {0x22A,0xD6,0x304}, {0x22B,0xF6,0x304},
    {0x22C,0xD5,0x304}, {0x22D,0xF5,0x304}, {0x22E,0x4F,0x307}, {0x22F,0x6F,0x307},
    {0x230,0x22E,0x304}, {0x231,0x22F,0x304}, {0x232,0x59,0x304}, {0x233,0x79,0x304},
    {0x340,0x300,0x0}, {0x341,0x301,0x0}, {0x343,0x313,0x0}, {0x344,0x308,0x301},
    {0x374,0x2B9,0x0}, {0x37E,0x3B,0x0}, {0x385,0xA8,0x301}, {0x386,0x391,0x301},
    {0x387,0xB7,0x0}, {0x388,0x395,0x301}, {0x389,0x397,0x301}, {0x38A,0x399,0x301},
    {0x38C,0x39F,0x301}, {0x38E,0x3A5,0x301}, {0x38F,0x3A9,0x301}, {0x390,0x3CA,0x301},
    {0x3AA,0x399,0x308}, {0x3AB,0x3A5,0x308}, {0x3AC,0x3B1,0x301}, {0x3AD,0x3B5,0x301},
    {0x3AE,0x3B7,0x301}, {0x3AF,0x3B9,0x301}, {0x3B0,0x3CB,0x301}, {0x3CA,0x3B9,0x308},
    {0x3CB,0x3C5,0x308}, {0x3CC,0x3BF,0x301}, {0x3CD,0x3C5,0x301}, {0x3CE,0x3C9,0x301},
    {0x3D3,0x3D2,0x301}, {0x3D4,0x3D2,0x308}, {0x400,0x415,0x300}, {0x401,0x415,0x308},
    {0x403,0x413,0x301}, {0x407,0x406,0x308}, {0x40C,0x41A,0x301}, {0x40D,0x418,0x300},
    {0x40E,0x423,0x306}, {0x419,0x418,0x306}, {0x439,0x438,0x306}, {0x450,0x435,0x300},
    {0x451,0x435,0x308}, {0x453,0x433,0x301}, {0x457,0x456,0x308}, {0x45C,0x43A,0x301},
    {0x45D,0x438,0x300}, {0x45E,0x443,0x306}, {0x476,0x474,0x30F}, {0x477,0x475,0x30F},
    {0x4C1,0x416,0x306}, {0x4C2,0x436,0x306}, {0x4D0,0x410,0x306}, {0x4D1,0x430,0x306},
    {0x4D2,0x410,0x308}, {0x4D3,0x430,0x308}, {0x4D6,0x415,0x306}, {0x4D7,0x435,0x306},
    {0x4DA,0x4D8,0x308}, {0x4DB,0x4D9,0x308}, {0x4DC,0x416,0x308}, {0x4DD,0x436,0x308},
    {0x4DE,0x417,0x308}, {0x4DF,0x437,0x308}, {0x4E2,0x418,0x304}, {0x4E3,0x438,0x304},
    {0x4E4,0x418,0x308}, {0x4E5,0x438,0x308}, {0x4E6,0x41E,0x308}, {0x4E7,0x43E,0x308},
    {0x4EA,0x4E8,0x308}, {0x4EB,0x4E9,0x308}, {0x4EC,0x42D,0x308}, {0x4ED,0x44D,0x308},
    {0x4EE,0x423,0x304}, {0x4EF,0x443,0x304}, {0x4F0,0x423,0x308}, {0x4F1,0x443,0x308},
    {0x4F2,0x423,0x30B}, {0x4F3,0x443,0x30B}, {0x4F4,0x427,0x308}, {0x4F5,0x447,0x308},
    {0x4F8,0x42B,0x308}, {0x4F9,0x44B,0x308}, {0x622,0x627,0x653}, {0x623,0x627,0x654},
    {0x624,0x648,0x654}, {0x625,0x627,0x655}, {0x626,0x64A,0x654}, {0x6C0,0x6D5,0x654},
    {0x6C2,0x6C1,0x654}, {0x6D3,0x6D2,0x654}, {0x929,0x928,0x93C}, {0x931,0x930,0x93C},
    {0x934,0x933,0x93C}, {0x958,0x915,0x93C}, {0x959,0x916,0x93C}, {0x95A,0x917,0x93C},
    {0x95B,0x91C,0x93C}, {0x95C,0x921,0x93C}, {0x95D,0x922,0x93C}, {0x95E,0x92B,0x93C},
    {0x95F,0x92F,0x93C}, {0x9CB,0x9C7,0x9BE}, {0x9CC,0x9C7,0x9D7}, {0x9DC,0x9A1,0x9BC},
    {0x9DD,0x9A2,0x9BC}, {0x9DF,0x9AF,0x9BC}, {0xA33,0xA32,0xA3C}, {0xA36,0xA38,0xA3C},
    {0xA59,0xA16,0xA3C}, {0xA5A,0xA17,0xA3C}, {0xA5B,0xA1C,0xA3C}, {0xA5E,0xA2B,0xA3C},
    {0xB48,0xB47,0xB56}, {0xB4B,0xB47,0xB3E}, {0xB4C,0xB47,0xB57}, {0xB5C,0xB21,0xB3C},
    {0xB5D,0xB22,0xB3C}, {0xB94,0xB92,0xBD7}, {0xBCA,0xBC6,0xBBE}, {0xBCB,0xBC7,0xBBE},
    {0xBCC,0xBC6,0xBD7}, {0xC48,0xC46,0xC56}, {0xCC0,0xCBF,0xCD5}, {0xCC7,0xCC6,0xCD5},
    {0xCC8,0xCC6,0xCD6}, {0xCCA,0xCC6,0xCC2}, {0xCCB,0xCCA,0xCD5}, {0xD4A,0xD46,0xD3E},
    {0xD4B,0xD47,0xD3E}, {0xD4C,0xD46,0xD57}, {0xDDA,0xDD9,0xDCA}, {0xDDC,0xDD9,0xDCF},
    {0xDDD,0xDDC,0xDCA}, {0xDDE,0xDD9,0xDDF}, {0xF43,0xF42,0xFB7}, {0xF4D,0xF4C,0xFB7},
    {0xF52,0xF51,0xFB7}, {0xF57,0xF56,0xFB7}, {0xF5C,0xF5B,0xFB7}, {0xF69,0xF40,0xFB5},
    {0xF73,0xF71,0xF72}, {0xF75,0xF71,0xF74}, {0xF76,0xFB2,0xF80}, {0xF78,0xFB3,0xF80},
    {0xF81,0xF71,0xF80}, {0xF93,0xF92,0xFB7}, {0xF9D,0xF9C,0xFB7}, {0xFA2,0xFA1,0xFB7},
    {0xFA7,0xFA6,0xFB7}, {0xFAC,0xFAB,0xFB7}, {0xFB9,0xF90,0xFB5}, {0x1026,0x1025,0x102E},
    {0x1B06,0x1B05,0x1B35}, {0x1B08,0x1B07,0x1B35}, {0x1B0A,0x1B09,0x1B35}, {0x1B0C,0x1B0B,0x1B35},
    {0x1B0E,0x1B0D,0x1B35}, {0x1B12,0x1B11,0x1B35}, {0x1B3B,0x1B3A,0x1B35}, {0x1B3D,0x1B3C,0x1B35},
    {0x1B40,0x1B3E,0x1B35}, {0x1B41,0x1B3F,0x1B35}, {0x1B43,0x1B42,0x1B35}, {0x1E00,0x41,0x325},
    {0x1E01,0x61,0x325}, {0x1E02,0x42,0x307}, {0x1E03,0x62,0x307}, {0x1E04,0x42,0x323},
    {0x1E05,0x62,0x323}, {0x1E06,0x42,0x331}, {0x1E07,0x62,0x331}, {0x1E08,0xC7,0x301},
    {0x1E09,0xE7,0x301}, {0x1E0A,0x44,0x307}, {0x1E0B,0x64,0x307}, {0x1E0C,0x44,0x323},
    {0x1E0D,0x64,0x323}, {0x1E0E,0x44,0x331}, {0x1E0F,0x64,0x331}, {0x1E10,0x44,0x327},
    {0x1E11,0x64,0x327}, {0x1E12,0x44,0x32D}, {0x1E13,0x64,0x32D}, {0x1E14,0x112,0x300},
    {0x1E15,0x113,0x300}, {0x1E16,0x112,0x301}, {0x1E17,0x113,0x301}, {0x1E18,0x45,0x32D},
    {0x1E19,0x65,0x32D}, {0x1E1A,0x45,0x330}, {0x1E1B,0x65,0x330}, {0x1E1C,0x228,0x306},
    {0x1E1D,0x229,0x306}, {0x1E1E,0x46,0x307}, {0x1E1F,0x66,0x307}, {0x1E20,0x47,0x304},
    {0x1E21,0x67,0x304}, {0x1E22,0x48,0x307}, {0x1E23,0x68,0x307}, {0x1E24,0x48,0x323},
    {0x1E25,0x68,0x323}, {0x1E26,0x48,0x308}, {0x1E27,0x68,0x308}, {0x1E28,0x48,0x327},
    {0x1E29,0x68,0x327}, {0x1E2A,0x48,0x32E}, {0x1E2B,0x68,0x32E}, {0x1E2C,0x49,0x330},
    {0x1E2D,0x69,0x330}, {0x1E2E,0xCF,0x301}, {0x1E2F,0xEF,0x301}, {0x1E30,0x4B,0x301},
    {0x1E31,0x6B,0x301}, {0x1E32,0x4B,0x323}, {0x1E33,0x6B,0x323}, {0x1E34,0x4B,0x331},
    {0x1E35,0x6B,0x331}, {0x1E36,0x4C,0x323}, {0x1E37,0x6C,0x323}, {0x1E38,0x1E36,0x304},
    {0x1E39,0x1E37,0x304}, {0x1E3A,0x4C,0x331}, {0x1E3B,0x6C,0x331}, {0x1E3C,0x4C,0x32D},
    {0x1E3D,0x6C,0x32D}, {0x1E3E,0x4D,0x301}, {0x1E3F,0x6D,0x301}, {0x1E40,0x4D,0x307},
    {0x1E41,0x6D,0x307}, {0x1E42,0x4D,0x323}, {0x1E43,0x6D,0x323}, {0x1E44,0x4E,0x307},
    {0x1E45,0x6E,0x307}, {0x1E46,0x4E,0x323}, {0x1E47,0x6E,0x323}, {0x1E48,0x4E,0x331},
    {0x1E49,0x6E,0x331}, {0x1E4A,0x4E,0x32D}, {0x1E4B,0x6E,0x32D}, {0x1E4C,0xD5,0x301},
    {0x1E4D,0xF5,0x301}, {0x1E4E,0xD5,0x308}, {0x1E4F,0xF5,0x308}, {0x1E50,0x14C,0x300},
    {0x1E51,0x14D,0x300}, {0x1E52,0x14C,0x301}, {0x1E53,0x14D,0x301}, {0x1E54,0x50,0x301},
    {0x1E55,0x70,0x301}, {0x1E56,0x50,0x307}, {0x1E57,0x70,0x307}, {0x1E58,0x52,0x307},
    {0x1E59,0x72,0x307}, {0x1E5A,0x52,0x323}, {0x1E5B,0x72,0x323}, {0x1E5C,0x1E5A,0x304},
    {0x1E5D,0x1E5B,0x304}, {0x1E5E,0x52,0x331}, {0x1E5F,0x72,0x331}, {0x1E60,0x53,0x307},
    {0x1E61,0x73,0x307}, {0x1E62,0x53,0x323}, {0x1E63,0x73,0x323}, {0x1E64,0x15A,0x307},
    {0x1E65,0x15B,0x307}, {0x1E66,0x160,0x307}, {0x1E67,0x161,0x307}, {0x1E68,0x1E62,0x307},
    {0x1E69,0x1E63,0x307}, {0x1E6A,0x54,0x307}, {0x1E6B,0x74,0x307}, {0x1E6C,0x54,0x323},
    {0x1E6D,0x74,0x323}, {0x1E6E,0x54,0x331}, {0x1E6F,0x74,0x331}, {0x1E70,0x54,0x32D},
    {0x1E71,0x74,0x32D}, {0x1E72,0x55,0x324}, {0x1E73,0x75,0x324}, {0x1E74,0x55,0x330},
    {0x1E75,0x75,0x330}, {0x1E76,0x55,0x32D}, {0x1E77,0x75,0x32D}, {0x1E78,0x168,0x301},
    {0x1E79,0x169,0x301}, {0x1E7A,0x16A,0x308}, {0x1E7B,0x16B,0x308}, {0x1E7C,0x56,0x303},
    {0x1E7D,0x76,0x303}, {0x1E7E,0x56,0x323}, {0x1E7F,0x76,0x323}, {0x1E80,0x57,0x300},
    {0x1E81,0x77,0x300}, {0x1E82,0x57,0x301}, {0x1E83,0x77,0x301}, {0x1E84,0x57,0x308},
    {0x1E85,0x77,0x308}, {0x1E86,0x57,0x307}, {0x1E87,0x77,0x307}, {0x1E88,0x57,0x323},
    {0x1E89,0x77,0x323}, {0x1E8A,0x58,0x307}, {0x1E8B,0x78,0x307}, {0x1E8C,0x58,0x308},
    {0x1E8D,0x78,0x308}, {0x1E8E,0x59,0x307}, {0x1E8F,0x79,0x307}, {0x1E90,0x5A,0x302},
    {0x1E91,0x7A,0x302}, {0x1E92,0x5A,0x323}, {0x1E93,0x7A,0x323}, {0x1E94,0x5A,0x331},
    {0x1E95,0x7A,0x331}, {0x1E96,0x68,0x331}, {0x1E97,0x74,0x308}, {0x1E98,0x77,0x30A},
    {0x1E99,0x79,0x30A}, {0x1E9B,0x17F,0x307}, {0x1EA0,0x41,0x323}, {0x1EA1,0x61,0x323},
    {0x1EA2,0x41,0x309}, {0x1EA3,0x61,0x309}, {0x1EA4,0xC2,0x301}, {0x1EA5,0xE2,0x301},
    {0x1EA6,0xC2,0x300}, {0x1EA7,0xE2,0x300}, {0x1EA8,0xC2,0x309}, {0x1EA9,0xE2,0x309},
    {0x1EAA,0xC2,0x303}, {0x1EAB,0xE2,0x303}, {0x1EAC,0x1EA0,0x302}, {0x1EAD,0x1EA1,0x302},
    {0x1EAE,0x102,0x301}, {0x1EAF,0x103,0x301}, {0x1EB0,0x102,0x300}, {0x1EB1,0x103,0x300},
    {0x1EB2,0x102,0x309}, {0x1EB3,0x103,0x309}, {0x1EB4,0x102,0x303}, {0x1EB5,0x103,0x303},
    {0x1EB6,0x1EA0,0x306}, {0x1EB7,0x1EA1,0x306}, {0x1EB8,0x45,0x323}, {0x1EB9,0x65,0x323},
    {0x1EBA,0x45,0x309}, {0x1EBB,0x65,0x309}, {0x1EBC,0x45,0x303}, {0x1EBD,0x65,0x303},
    {0x1EBE,0xCA,0x301}, {0x1EBF,0xEA,0x301}, {0x1EC0,0xCA,0x300}, {0x1EC1,0xEA,0x300},
    {0x1EC2,0xCA,0x309}, {0x1EC3,0xEA,0x309}, {0x1EC4,0xCA,0x303}, {0x1EC5,0xEA,0x303},
    {0x1EC6,0x1EB8,0x302}, {0x1EC7,0x1EB9,0x302}, {0x1EC8,0x49,0x309}, {0x1EC9,0x69,0x309},
    {0x1ECA,0x49,0x323}, {0x1ECB,0x69,0x323}, {0x1ECC,0x4F,0x323}, {0x1ECD,0x6F,0x323},
    {0x1ECE,0x4F,0x309}, {0x1ECF,0x6F,0x309}, {0x1ED0,0xD4,0x301}, {0x1ED1,0xF4,0x301},
    {0x1ED2,0xD4,0x300}, {0x1ED3,0xF4,0x300}, {0x1ED4,0xD4,0x309}, {0x1ED5,0xF4,0x309},
    {0x1ED6,0xD4,0x303}, {0x1ED7,0xF4,0x303}, {0x1ED8,0x1ECC,0x302}, {0x1ED9,0x1ECD,0x302},
    {0x1EDA,0x1A0,0x301}, {0x1EDB,0x1A1,0x301}, {0x1EDC,0x1A0,0x300}, {0x1EDD,0x1A1,0x300},
    {0x1EDE,0x1A0,0x309}, {0x1EDF,0x1A1,0x309}, {0x1EE0,0x1A0,0x303}, {0x1EE1,0x1A1,0x303},
    {0x1EE2,0x1A0,0x323}, {0x1EE3,0x1A1,0x323}, {0x1EE4,0x55,0x323}, {0x1EE5,0x75,0x323},
    {0x1EE6,0x55,0x309}, {0x1EE7,0x75,0x309}, {0x1EE8,0x1AF,0x301}, {0x1EE9,0x1B0,0x301},
    {0x1EEA,0x1AF,0x300}, {0x1EEB,0x1B0,0x300}, {0x1EEC,0x1AF,0x309}, {0x1EED,0x1B0,0x309},
    {0x1EEE,0x1AF,0x303}, {0x1EEF,0x1B0,0x303}, {0x1EF0,0x1AF,0x323}, {0x1EF1,0x1B0,0x323},
    {0x1EF2,0x59,0x300}, {0x1EF3,0x79,0x300}, {0x1EF4,0x59,0x323}, {0x1EF5,0x79,0x323},
    {0x1EF6,0x59,0x309}, {0x1EF7,0x79,0x309}, {0x1EF8,0x59,0x303}, {0x1EF9,0x79,0x303},
    {0x1F00,0x3B1,0x313}, {0x1F01,0x3B1,0x314}, {0x1F02,0x1F00,0x300}, {0x1F03,0x1F01,0x300},
    {0x1F04,0x1F00,0x301}, {0x1F05,0x1F01,0x301}, {0x1F06,0x1F00,0x342}, {0x1F07,0x1F01,0x342},
    {0x1F08,0x391,0x313}, {0x1F09,0x391,0x314}, {0x1F0A,0x1F08,0x300}, {0x1F0B,0x1F09,0x300},
    {0x1F0C,0x1F08,0x301}, {0x1F0D,0x1F09,0x301}, {0x1F0E,0x1F08,0x342}, {0x1F0F,0x1F09,0x342},
    {0x1F10,0x3B5,0x313}, {0x1F11,0x3B5,0x314}, {0x1F12,0x1F10,0x300}, {0x1F13,0x1F11,0x300},
    {0x1F14,0x1F10,0x301}, {0x1F15,0x1F11,0x301}, {0x1F18,0x395,0x313}, {0x1F19,0x395,0x314},
    {0x1F1A,0x1F18,0x300}, {0x1F1B,0x1F19,0x300}, {0x1F1C,0x1F18,0x301}, {0x1F1D,0x1F19,0x301},
    {0x1F20,0x3B7,0x313}, {0x1F21,0x3B7,0x314}, {0x1F22,0x1F20,0x300}, {0x1F23,0x1F21,0x300},
    {0x1F24,0x1F20,0x301}, {0x1F25,0x1F21,0x301}, {0x1F26,0x1F20,0x342}, {0x1F27,0x1F21,0x342},
    {0x1F28,0x397,0x313}, {0x1F29,0x397,0x314}, {0x1F2A,0x1F28,0x300}, {0x1F2B,0x1F29,0x300},
    {0x1F2C,0x1F28,0x301}, {0x1F2D,0x1F29,0x301}, {0x1F2E,0x1F28,0x342}, {0x1F2F,0x1F29,0x342},
    {0x1F30,0x3B9,0x313}, {0x1F31,0x3B9,0x314}, {0x1F32,0x1F30,0x300}, {0x1F33,0x1F31,0x300},
    {0x1F34,0x1F30,0x301}, {0x1F35,0x1F31,0x301}, {0x1F36,0x1F30,0x342}, {0x1F37,0x1F31,0x342},
    {0x1F38,0x399,0x313}, {0x1F39,0x399,0x314}, {0x1F3A,0x1F38,0x300}, {0x1F3B,0x1F39,0x300},
    {0x1F3C,0x1F38,0x301}, {0x1F3D,0x1F39,0x301}, {0x1F3E,0x1F38,0x342}, {0x1F3F,0x1F39,0x342},
    {0x1F40,0x3BF,0x313}, {0x1F41,0x3BF,0x314}, {0x1F42,0x1F40,0x300}, {0x1F43,0x1F41,0x300},
    {0x1F44,0x1F40,0x301}, {0x1F45,0x1F41,0x301}, {0x1F48,0x39F,0x313}, {0x1F49,0x39F,0x314},
    {0x1F4A,0x1F48,0x300}, {0x1F4B,0x1F49,0x300}, {0x1F4C,0x1F48,0x301}, {0x1F4D,0x1F49,0x301},
    {0x1F50,0x3C5,0x313}, {0x1F51,0x3C5,0x314}, {0x1F52,0x1F50,0x300}, {0x1F53,0x1F51,0x300},
    {0x1F54,0x1F50,0x301}, {0x1F55,0x1F51,0x301}, {0x1F56,0x1F50,0x342}, {0x1F57,0x1F51,0x342},
    {0x1F59,0x3A5,0x314}, {0x1F5B,0x1F59,0x300}, {0x1F5D,0x1F59,0x301}, {0x1F5F,0x1F59,0x342},
    {0x1F60,0x3C9,0x313}, {0x1F61,0x3C9,0x314}, {0x1F62,0x1F60,0x300}, {0x1F63,0x1F61,0x300},
    {0x1F64,0x1F60,0x301}, {0x1F65,0x1F61,0x301}, {0x1F66,0x1F60,0x342}, {0x1F67,0x1F61,0x342},
    {0x1F68,0x3A9,0x313}, {0x1F69,0x3A9,0x314}, {0x1F6A,0x1F68,0x300}, {0x1F6B,0x1F69,0x300},
    {0x1F6C,0x1F68,0x301}, {0x1F6D,0x1F69,0x301}, {0x1F6E,0x1F68,0x342}, {0x1F6F,0x1F69,0x342},
    {0x1F70,0x3B1,0x300}, {0x1F71,0x3AC,0x0}, {0x1F72,0x3B5,0x300}, {0x1F73,0x3AD,0x0},
    {0x1F74,0x3B7,0x300}, {0x1F75,0x3AE,0x0}, {0x1F76,0x3B9,0x300}, {0x1F77,0x3AF,0x0},
    {0x1F78,0x3BF,0x300}, {0x1F79,0x3CC,0x0}, {0x1F7A,0x3C5,0x300}, {0x1F7B,0x3CD,0x0},
    {0x1F7C,0x3C9,0x300}, {0x1F7D,0x3CE,0x0}, {0x1F80,0x1F00,0x345}, {0x1F81,0x1F01,0x345},
    {0x1F82,0x1F02,0x345}, {0x1F83,0x1F03,0x345}, {0x1F84,0x1F04,0x345}, {0x1F85,0x1F05,0x345},
    {0x1F86,0x1F06,0x345}, {0x1F87,0x1F07,0x345}, {0x1F88,0x1F08,0x345}, {0x1F89,0x1F09,0x345},
    {0x1F8A,0x1F0A,0x345}, {0x1F8B,0x1F0B,0x345}, {0x1F8C,0x1F0C,0x345}, {0x1F8D,0x1F0D,0x345},
    {0x1F8E,0x1F0E,0x345}, {0x1F8F,0x1F0F,0x345}, {0x1F90,0x1F20,0x345}, {0x1F91,0x1F21,0x345},
    {0x1F92,0x1F22,0x345}, {0x1F93,0x1F23,0x345}, {0x1F94,0x1F24,0x345}, {0x1F95,0x1F25,0x345},
    {0x1F96,0x1F26,0x345}, {0x1F97,0x1F27,0x345}, {0x1F98,0x1F28,0x345}, {0x1F99,0x1F29,0x345},
    {0x1F9A,0x1F2A,0x345}, {0x1F9B,0x1F2B,0x345}, {0x1F9C,0x1F2C,0x345}, {0x1F9D,0x1F2D,0x345},
    {0x1F9E,0x1F2E,0x345}, {0x1F9F,0x1F2F,0x345}, {0x1FA0,0x1F60,0x345}, {0x1FA1,0x1F61,0x345},
    {0x1FA2,0x1F62,0x345}, {0x1FA3,0x1F63,0x345}, {0x1FA4,0x1F64,0x345}, {0x1FA5,0x1F65,0x345},
    {0x1FA6,0x1F66,0x345}, {0x1FA7,0x1F67,0x345}, {0x1FA8,0x1F68,0x345}, {0x1FA9,0x1F69,0x345},
    {0x1FAA,0x1F6A,0x345}, {0x1FAB,0x1F6B,0x345}, {0x1FAC,0x1F6C,0x345}, {0x1FAD,0x1F6D,0x345},
    {0x1FAE,0x1F6E,0x345}, {0x1FAF,0x1F6F,0x345}, {0x1FB0,0x3B1,0x306}, {0x1FB1,0x3B1,0x304},
    {0x1FB2,0x1F70,0x345}, {0x1FB3,0x3B1,0x345}, {0x1FB4,0x3AC,0x345}, {0x1FB6,0x3B1,0x342},
    {0x1FB7,0x1FB6,0x345}, {0x1FB8,0x391,0x306}, {0x1FB9,0x391,0x304}, {0x1FBA,0x391,0x300},
    {0x1FBB,0x386,0x0}, {0x1FBC,0x391,0x345}, {0x1FBE,0x3B9,0x0}, {0x1FC1,0xA8,0x342},
    {0x1FC2,0x1F74,0x345}, {0x1FC3,0x3B7,0x345}, {0x1FC4,0x3AE,0x345}, {0x1FC6,0x3B7,0x342},
    {0x1FC7,0x1FC6,0x345}, {0x1FC8,0x395,0x300}, {0x1FC9,0x388,0x0}, {0x1FCA,0x397,0x300},
    {0x1FCB,0x389,0x0}, {0x1FCC,0x397,0x345}, {0x1FCD,0x1FBF,0x300}, {0x1FCE,0x1FBF,0x301},
    {0x1FCF,0x1FBF,0x342}, {0x1FD0,0x3B9,0x306}, {0x1FD1,0x3B9,0x304}, {0x1FD2,0x3CA,0x300},
    {0x1FD3,0x390,0x0}, {0x1FD6,0x3B9,0x342}, {0x1FD7,0x3CA,0x342}, {0x1FD8,0x399,0x306},
    {0x1FD9,0x399,0x304}, {0x1FDA,0x399,0x300}, {0x1FDB,0x38A,0x0}, {0x1FDD,0x1FFE,0x300},
    {0x1FDE,0x1FFE,0x301}, {0x1FDF,0x1FFE,0x342}, {0x1FE0,0x3C5,0x306}, {0x1FE1,0x3C5,0x304},
    {0x1FE2,0x3CB,0x300}, {0x1FE3,0x3B0,0x0}, {0x1FE4,0x3C1,0x313}, {0x1FE5,0x3C1,0x314},
    {0x1FE6,0x3C5,0x342}, {0x1FE7,0x3CB,0x342}, {0x1FE8,0x3A5,0x306}, {0x1FE9,0x3A5,0x304},
    {0x1FEA,0x3A5,0x300}, {0x1FEB,0x38E,0x0}, {0x1FEC,0x3A1,0x314}, {0x1FED,0xA8,0x300},
    {0x1FEE,0x385,0x0}, {0x1FEF,0x60,0x0}, {0x1FF2,0x1F7C,0x345}, {0x1FF3,0x3C9,0x345},
    {0x1FF4,0x3CE,0x345}, {0x1FF6,0x3C9,0x342}, {0x1FF7,0x1FF6,0x345}, {0x1FF8,0x39F,0x300},
    {0x1FF9,0x38C,0x0}, {0x1FFA,0x3A9,0x300}, {0x1FFB,0x38F,0x0}, {0x1FFC,0x3A9,0x345},
    {0x1FFD,0xB4,0x0}, {0x2000,0x2002,0x0}, {0x2001,0x2003,0x0}, {0x2126,0x3A9,0x0},
    {0x212A,0x4B,0x0}, {0x212B,0xC5,0x0}, {0x219A,0x2190,0x338}, {0x219B,0x2192,0x338},
    {0x21AE,0x2194,0x338}, {0x21CD,0x21D0,0x338}, {0x21CE,0x21D4,0x338}, {0x21CF,0x21D2,0x338},
    {0x2204,0x2203,0x338}, {0x2209,0x2208,0x338}, {0x220C,0x220B,0x338}, {0x2224,0x2223,0x338},
    {0x2226,0x2225,0x338}, {0x2241,0x223C,0x338}, {0x2244,0x2243,0x338}, {0x2247,0x2245,0x338},
    {0x2249,0x2248,0x338}, {0x2260,0x3D,0x338}, {0x2262,0x2261,0x338}, {0x226D,0x224D,0x338},
    {0x226E,0x3C,0x338}, {0x226F,0x3E,0x338}, {0x2270,0x2264,0x338}, {0x2271,0x2265,0x338},
    {0x2274,0x2272,0x338}, {0x2275,0x2273,0x338}, {0x2278,0x2276,0x338}, {0x2279,0x2277,0x338},
    {0x2280,0x227A,0x338}, {0x2281,0x227B,0x338}, {0x2284,0x2282,0x338}, {0x2285,0x2283,0x338},
    {0x2288,0x2286,0x338}, {0x2289,0x2287,0x338}, {0x22AC,0x22A2,0x338}, {0x22AD,0x22A8,0x338},
    {0x22AE,0x22A9,0x338}, {0x22AF,0x22AB,0x338}, {0x22E0,0x227C,0x338}, {0x22E1,0x227D,0x338},
    {0x22E2,0x2291,0x338}, {0x22E3,0x2292,0x338}, {0x22EA,0x22B2,0x338}, {0x22EB,0x22B3,0x338},
    {0x22EC,0x22B4,0x338}, {0x22ED,0x22B5,0x338}, {0x2329,0x3008,0x0}, {0x232A,0x3009,0x0},
    {0x2ADC,0x2ADD,0x338}, {0x304C,0x304B,0x3099}, {0x304E,0x304D,0x3099}, {0x3050,0x304F,0x3099},
    {0x3052,0x3051,0x3099}, {0x3054,0x3053,0x3099}, {0x3056,0x3055,0x3099}, {0x3058,0x3057,0x3099},
    {0x305A,0x3059,0x3099}, {0x305C,0x305B,0x3099}, {0x305E,0x305D,0x3099}, {0x3060,0x305F,0x3099},
    {0x3062,0x3061,0x3099}, {0x3065,0x3064,0x3099}, {0x3067,0x3066,0x3099}, {0x3069,0x3068,0x3099},
    {0x3070,0x306F,0x3099}, {0x3071,0x306F,0x309A}, {0x3073,0x3072,0x3099}, {0x3074,0x3072,0x309A},
    {0x3076,0x3075,0x3099}, {0x3077,0x3075,0x309A}, {0x3079,0x3078,0x3099}, {0x307A,0x3078,0x309A},
    {0x307C,0x307B,0x3099}, {0x307D,0x307B,0x309A}, {0x3094,0x3046,0x3099}, {0x309E,0x309D,0x3099},
    {0x30AC,0x30AB,0x3099}, {0x30AE,0x30AD,0x3099}, {0x30B0,0x30AF,0x3099}, {0x30B2,0x30B1,0x3099},
    {0x30B4,0x30B3,0x3099}, {0x30B6,0x30B5,0x3099}, {0x30B8,0x30B7,0x3099}, {0x30BA,0x30B9,0x3099},
    {0x30BC,0x30BB,0x3099}, {0x30BE,0x30BD,0x3099}, {0x30C0,0x30BF,0x3099}, {0x30C2,0x30C1,0x3099},
    {0x30C5,0x30C4,0x3099}, {0x30C7,0x30C6,0x3099}, {0x30C9,0x30C8,0x3099}, {0x30D0,0x30CF,0x3099},
    {0x30D1,0x30CF,0x309A}, {0x30D3,0x30D2,0x3099}, {0x30D4,0x30D2,0x309A}, {0x30D6,0x30D5,0x3099},
    {0x30D7,0x30D5,0x309A}, {0x30D9,0x30D8,0x3099}, {0x30DA,0x30D8,0x309A}, {0x30DC,0x30DB,0x3099},
    {0x30DD,0x30DB,0x309A}, {0x30F4,0x30A6,0x3099}, {0x30F7,0x30EF,0x3099}, {0x30F8,0x30F0,0x3099},
    {0x30F9,0x30F1,0x3099}, {0x30FA,0x30F2,0x3099}, {0x30FE,0x30FD,0x3099}, {0xF900,0x8C48,0x0},
    {0xF901,0x66F4,0x0}, {0xF902,0x8ECA,0x0}, {0xF903,0x8CC8,0x0}, {0xF904,0x6ED1,0x0},
    {0xF905,0x4E32,0x0}, {0xF906,0x53E5,0x0}, {0xF907,0x9F9C,0x0}, {0xF908,0x9F9C,0x0},
    {0xF909,0x5951,0x0}, {0xF90A,0x91D1,0x0}, {0xF90B,0x5587,0x0}, {0xF90C,0x5948,0x0},
    {0xF90D,0x61F6,0x0}, {0xF90E,0x7669,0x0}, {0xF90F,0x7F85,0x0}, {0xF910,0x863F,0x0},
    {0xF911,0x87BA,0x0}, {0xF912,0x88F8,0x0}, {0xF913,0x908F,0x0}, {0xF914,0x6A02,0x0},
    {0xF915,0x6D1B,0x0}, {0xF916,0x70D9,0x0}, {0xF917,0x73DE,0x0}, {0xF918,0x843D,0x0},
    {0xF919,0x916A,0x0}, {0xF91A,0x99F1,0x0}, {0xF91B,0x4E82,0x0}, {0xF91C,0x5375,0x0},
    {0xF91D,0x6B04,0x0}, {0xF91E,0x721B,0x0}, {0xF91F,0x862D,0x0}, {0xF920,0x9E1E,0x0},
    {0xF921,0x5D50,0x0}, {0xF922,0x6FEB,0x0}, {0xF923,0x85CD,0x0}, {0xF924,0x8964,0x0},
    {0xF925,0x62C9,0x0}, {0xF926,0x81D8,0x0}, {0xF927,0x881F,0x0}, {0xF928,0x5ECA,0x0},
    {0xF929,0x6717,0x0}, {0xF92A,0x6D6A,0x0}, {0xF92B,0x72FC,0x0}, {0xF92C,0x90CE,0x0},
    {0xF92D,0x4F86,0x0}, {0xF92E,0x51B7,0x0}, {0xF92F,0x52DE,0x0}, {0xF930,0x64C4,0x0},
    {0xF931,0x6AD3,0x0}, {0xF932,0x7210,0x0}, {0xF933,0x76E7,0x0}, {0xF934,0x8001,0x0},
    {0xF935,0x8606,0x0}, {0xF936,0x865C,0x0}, {0xF937,0x8DEF,0x0}, {0xF938,0x9732,0x0},
    {0xF939,0x9B6F,0x0}, {0xF93A,0x9DFA,0x0}, {0xF93B,0x788C,0x0}, {0xF93C,0x797F,0x0},
    {0xF93D,0x7DA0,0x0}, {0xF93E,0x83C9,0x0}, {0xF93F,0x9304,0x0}, {0xF940,0x9E7F,0x0},
    {0xF941,0x8AD6,0x0}, {0xF942,0x58DF,0x0}, {0xF943,0x5F04,0x0}, {0xF944,0x7C60,0x0},
    {0xF945,0x807E,0x0}, {0xF946,0x7262,0x0}, {0xF947,0x78CA,0x0}, {0xF948,0x8CC2,0x0},
    {0xF949,0x96F7,0x0}, {0xF94A,0x58D8,0x0}, {0xF94B,0x5C62,0x0}, {0xF94C,0x6A13,0x0},
    {0xF94D,0x6DDA,0x0}, {0xF94E,0x6F0F,0x0}, {0xF94F,0x7D2F,0x0}, {0xF950,0x7E37,0x0},
    {0xF951,0x964B,0x0}, {0xF952,0x52D2,0x0}, {0xF953,0x808B,0x0}, {0xF954,0x51DC,0x0},
    {0xF955,0x51CC,0x0}, {0xF956,0x7A1C,0x0}, {0xF957,0x7DBE,0x0}, {0xF958,0x83F1,0x0},
    {0xF959,0x9675,0x0}, {0xF95A,0x8B80,0x0}, {0xF95B,0x62CF,0x0}, {0xF95C,0x6A02,0x0},
    {0xF95D,0x8AFE,0x0}, {0xF95E,0x4E39,0x0}, {0xF95F,0x5BE7,0x0}, {0xF960,0x6012,0x0},
    {0xF961,0x7387,0x0}, {0xF962,0x7570,0x0}, {0xF963,0x5317,0x0}, {0xF964,0x78FB,0x0},
    {0xF965,0x4FBF,0x0}, {0xF966,0x5FA9,0x0}, {0xF967,0x4E0D,0x0}, {0xF968,0x6CCC,0x0},
    {0xF969,0x6578,0x0}, {0xF96A,0x7D22,0x0}, {0xF96B,0x53C3,0x0}, {0xF96C,0x585E,0x0},
    {0xF96D,0x7701,0x0}, {0xF96E,0x8449,0x0}, {0xF96F,0x8AAA,0x0}, {0xF970,0x6BBA,0x0},
    {0xF971,0x8FB0,0x0}, {0xF972,0x6C88,0x0}, {0xF973,0x62FE,0x0}, {0xF974,0x82E5,0x0},
    {0xF975,0x63A0,0x0}, {0xF976,0x7565,0x0}, {0xF977,0x4EAE,0x0}, {0xF978,0x5169,0x0},
    {0xF979,0x51C9,0x0}, {0xF97A,0x6881,0x0}, {0xF97B,0x7CE7,0x0}, {0xF97C,0x826F,0x0},
    {0xF97D,0x8AD2,0x0}, {0xF97E,0x91CF,0x0}, {0xF97F,0x52F5,0x0}, {0xF980,0x5442,0x0},
    {0xF981,0x5973,0x0}, {0xF982,0x5EEC,0x0}, {0xF983,0x65C5,0x0}, {0xF984,0x6FFE,0x0},
    {0xF985,0x792A,0x0}, {0xF986,0x95AD,0x0}, {0xF987,0x9A6A,0x0}, {0xF988,0x9E97,0x0},
    {0xF989,0x9ECE,0x0}, {0xF98A,0x529B,0x0}, {0xF98B,0x66C6,0x0}, {0xF98C,0x6B77,0x0},
    {0xF98D,0x8F62,0x0}, {0xF98E,0x5E74,0x0}, {0xF98F,0x6190,0x0}, {0xF990,0x6200,0x0},
    {0xF991,0x649A,0x0}, {0xF992,0x6F23,0x0}, {0xF993,0x7149,0x0}, {0xF994,0x7489,0x0},
    {0xF995,0x79CA,0x0}, {0xF996,0x7DF4,0x0}, {0xF997,0x806F,0x0}, {0xF998,0x8F26,0x0},
    {0xF999,0x84EE,0x0}, {0xF99A,0x9023,0x0}, {0xF99B,0x934A,0x0}, {0xF99C,0x5217,0x0},
    {0xF99D,0x52A3,0x0}, {0xF99E,0x54BD,0x0}, {0xF99F,0x70C8,0x0}, {0xF9A0,0x88C2,0x0},
    {0xF9A1,0x8AAA,0x0}, {0xF9A2,0x5EC9,0x0}, {0xF9A3,0x5FF5,0x0}, {0xF9A4,0x637B,0x0},
    {0xF9A5,0x6BAE,0x0}, {0xF9A6,0x7C3E,0x0}, {0xF9A7,0x7375,0x0}, {0xF9A8,0x4EE4,0x0},
    {0xF9A9,0x56F9,0x0}, {0xF9AA,0x5BE7,0x0}, {0xF9AB,0x5DBA,0x0}, {0xF9AC,0x601C,0x0},
    {0xF9AD,0x73B2,0x0}, {0xF9AE,0x7469,0x0}, {0xF9AF,0x7F9A,0x0}, {0xF9B0,0x8046,0x0},
    {0xF9B1,0x9234,0x0}, {0xF9B2,0x96F6,0x0}, {0xF9B3,0x9748,0x0}, {0xF9B4,0x9818,0x0},
    {0xF9B5,0x4F8B,0x0}, {0xF9B6,0x79AE,0x0}, {0xF9B7,0x91B4,0x0}, {0xF9B8,0x96B8,0x0},
    {0xF9B9,0x60E1,0x0}, {0xF9BA,0x4E86,0x0}, {0xF9BB,0x50DA,0x0}, {0xF9BC,0x5BEE,0x0},
    {0xF9BD,0x5C3F,0x0}, {0xF9BE,0x6599,0x0}, {0xF9BF,0x6A02,0x0}, {0xF9C0,0x71CE,0x0},
    {0xF9C1,0x7642,0x0}, {0xF9C2,0x84FC,0x0}, {0xF9C3,0x907C,0x0}, {0xF9C4,0x9F8D,0x0},
    {0xF9C5,0x6688,0x0}, {0xF9C6,0x962E,0x0}, {0xF9C7,0x5289,0x0}, {0xF9C8,0x677B,0x0},
    {0xF9C9,0x67F3,0x0}, {0xF9CA,0x6D41,0x0}, {0xF9CB,0x6E9C,0x0}, {0xF9CC,0x7409,0x0},
    {0xF9CD,0x7559,0x0}, {0xF9CE,0x786B,0x0}, {0xF9CF,0x7D10,0x0}, {0xF9D0,0x985E,0x0},
    {0xF9D1,0x516D,0x0}, {0xF9D2,0x622E,0x0}, {0xF9D3,0x9678,0x0}, {0xF9D4,0x502B,0x0},
    {0xF9D5,0x5D19,0x0}, {0xF9D6,0x6DEA,0x0}, {0xF9D7,0x8F2A,0x0}, {0xF9D8,0x5F8B,0x0},
    {0xF9D9,0x6144,0x0}, {0xF9DA,0x6817,0x0}, {0xF9DB,0x7387,0x0}, {0xF9DC,0x9686,0x0},
    {0xF9DD,0x5229,0x0}, {0xF9DE,0x540F,0x0}, {0xF9DF,0x5C65,0x0}, {0xF9E0,0x6613,0x0},
    {0xF9E1,0x674E,0x0}, {0xF9E2,0x68A8,0x0}, {0xF9E3,0x6CE5,0x0}, {0xF9E4,0x7406,0x0},
    {0xF9E5,0x75E2,0x0}, {0xF9E6,0x7F79,0x0}, {0xF9E7,0x88CF,0x0}, {0xF9E8,0x88E1,0x0},
    {0xF9E9,0x91CC,0x0}, {0xF9EA,0x96E2,0x0}, {0xF9EB,0x533F,0x0}, {0xF9EC,0x6EBA,0x0},
    {0xF9ED,0x541D,0x0}, {0xF9EE,0x71D0,0x0}, {0xF9EF,0x7498,0x0}, {0xF9F0,0x85FA,0x0},
    {0xF9F1,0x96A3,0x0}, {0xF9F2,0x9C57,0x0}, {0xF9F3,0x9E9F,0x0}, {0xF9F4,0x6797,0x0},
    {0xF9F5,0x6DCB,0x0}, {0xF9F6,0x81E8,0x0}, {0xF9F7,0x7ACB,0x0}, {0xF9F8,0x7B20,0x0},
    {0xF9F9,0x7C92,0x0}, {0xF9FA,0x72C0,0x0}, {0xF9FB,0x7099,0x0}, {0xF9FC,0x8B58,0x0},
    {0xF9FD,0x4EC0,0x0}, {0xF9FE,0x8336,0x0}, {0xF9FF,0x523A,0x0}, {0xFA00,0x5207,0x0},
    {0xFA01,0x5EA6,0x0}, {0xFA02,0x62D3,0x0}, {0xFA03,0x7CD6,0x0}, {0xFA04,0x5B85,0x0},
    {0xFA05,0x6D1E,0x0}, {0xFA06,0x66B4,0x0}, {0xFA07,0x8F3B,0x0}, {0xFA08,0x884C,0x0},
    {0xFA09,0x964D,0x0}, {0xFA0A,0x898B,0x0}, {0xFA0B,0x5ED3,0x0}, {0xFA0C,0x5140,0x0},
    {0xFA0D,0x55C0,0x0}, {0xFA10,0x585A,0x0}, {0xFA12,0x6674,0x0}, {0xFA15,0x51DE,0x0},
    {0xFA16,0x732A,0x0}, {0xFA17,0x76CA,0x0}, {0xFA18,0x793C,0x0}, {0xFA19,0x795E,0x0},
    {0xFA1A,0x7965,0x0}, {0xFA1B,0x798F,0x0}, {0xFA1C,0x9756,0x0}, {0xFA1D,0x7CBE,0x0},
    {0xFA1E,0x7FBD,0x0}, {0xFA20,0x8612,0x0}, {0xFA22,0x8AF8,0x0}, {0xFA25,0x9038,0x0},
    {0xFA26,0x90FD,0x0}, {0xFA2A,0x98EF,0x0}, {0xFA2B,0x98FC,0x0}, {0xFA2C,0x9928,0x0},
    {0xFA2D,0x9DB4,0x0}, {0xFA2E,0x90DE,0x0}, {0xFA2F,0x96B7,0x0}, {0xFA30,0x4FAE,0x0},
    {0xFA31,0x50E7,0x0}, {0xFA32,0x514D,0x0}, {0xFA33,0x52C9,0x0}, {0xFA34,0x52E4,0x0},
    {0xFA35,0x5351,0x0}, {0xFA36,0x559D,0x0}, {0xFA37,0x5606,0x0}, {0xFA38,0x5668,0x0},
    {0xFA39,0x5840,0x0}, {0xFA3A,0x58A8,0x0}, {0xFA3B,0x5C64,0x0}, {0xFA3C,0x5C6E,0x0},
    {0xFA3D,0x6094,0x0}, {0xFA3E,0x6168,0x0}, {0xFA3F,0x618E,0x0}, {0xFA40,0x61F2,0x0},
    {0xFA41,0x654F,0x0}, {0xFA42,0x65E2,0x0}, {0xFA43,0x6691,0x0}, {0xFA44,0x6885,0x0},
    {0xFA45,0x6D77,0x0}, {0xFA46,0x6E1A,0x0}, {0xFA47,0x6F22,0x0}, {0xFA48,0x716E,0x0},
    {0xFA49,0x722B,0x0}, {0xFA4A,0x7422,0x0}, {0xFA4B,0x7891,0x0}, {0xFA4C,0x793E,0x0},
    {0xFA4D,0x7949,0x0}, {0xFA4E,0x7948,0x0}, {0xFA4F,0x7950,0x0}, {0xFA50,0x7956,0x0},
    {0xFA51,0x795D,0x0}, {0xFA52,0x798D,0x0}, {0xFA53,0x798E,0x0}, {0xFA54,0x7A40,0x0},
    {0xFA55,0x7A81,0x0}, {0xFA56,0x7BC0,0x0}, {0xFA57,0x7DF4,0x0}, {0xFA58,0x7E09,0x0},
    {0xFA59,0x7E41,0x0}, {0xFA5A,0x7F72,0x0}, {0xFA5B,0x8005,0x0}, {0xFA5C,0x81ED,0x0},
    {0xFA5D,0x8279,0x0}, {0xFA5E,0x8279,0x0}, {0xFA5F,0x8457,0x0}, {0xFA60,0x8910,0x0},
    {0xFA61,0x8996,0x0}, {0xFA62,0x8B01,0x0}, {0xFA63,0x8B39,0x0}, {0xFA64,0x8CD3,0x0},
    {0xFA65,0x8D08,0x0}, {0xFA66,0x8FB6,0x0}, {0xFA67,0x9038,0x0}, {0xFA68,0x96E3,0x0},
    {0xFA69,0x97FF,0x0}, {0xFA6A,0x983B,0x0}, {0xFA6B,0x6075,0x0}, {0xFA6C,0x242EE,0x0},
    {0xFA6D,0x8218,0x0}, {0xFA70,0x4E26,0x0}, {0xFA71,0x51B5,0x0}, {0xFA72,0x5168,0x0},
    {0xFA73,0x4F80,0x0}, {0xFA74,0x5145,0x0}, {0xFA75,0x5180,0x0}, {0xFA76,0x52C7,0x0},
    {0xFA77,0x52FA,0x0}, {0xFA78,0x559D,0x0}, {0xFA79,0x5555,0x0}, {0xFA7A,0x5599,0x0},
    {0xFA7B,0x55E2,0x0}, {0xFA7C,0x585A,0x0}, {0xFA7D,0x58B3,0x0}, {0xFA7E,0x5944,0x0},
    {0xFA7F,0x5954,0x0}, {0xFA80,0x5A62,0x0}, {0xFA81,0x5B28,0x0}, {0xFA82,0x5ED2,0x0},
    {0xFA83,0x5ED9,0x0}, {0xFA84,0x5F69,0x0}, {0xFA85,0x5FAD,0x0}, {0xFA86,0x60D8,0x0},
    {0xFA87,0x614E,0x0}, {0xFA88,0x6108,0x0}, {0xFA89,0x618E,0x0}, {0xFA8A,0x6160,0x0},
    {0xFA8B,0x61F2,0x0}, {0xFA8C,0x6234,0x0}, {0xFA8D,0x63C4,0x0}, {0xFA8E,0x641C,0x0},
    {0xFA8F,0x6452,0x0}, {0xFA90,0x6556,0x0}, {0xFA91,0x6674,0x0}, {0xFA92,0x6717,0x0},
    {0xFA93,0x671B,0x0}, {0xFA94,0x6756,0x0}, {0xFA95,0x6B79,0x0}, {0xFA96,0x6BBA,0x0},
    {0xFA97,0x6D41,0x0}, {0xFA98,0x6EDB,0x0}, {0xFA99,0x6ECB,0x0}, {0xFA9A,0x6F22,0x0},
    {0xFA9B,0x701E,0x0}, {0xFA9C,0x716E,0x0}, {0xFA9D,0x77A7,0x0}, {0xFA9E,0x7235,0x0},
    {0xFA9F,0x72AF,0x0}, {0xFAA0,0x732A,0x0}, {0xFAA1,0x7471,0x0}, {0xFAA2,0x7506,0x0},
    {0xFAA3,0x753B,0x0}, {0xFAA4,0x761D,0x0}, {0xFAA5,0x761F,0x0}, {0xFAA6,0x76CA,0x0},
    {0xFAA7,0x76DB,0x0}, {0xFAA8,0x76F4,0x0}, {0xFAA9,0x774A,0x0}, {0xFAAA,0x7740,0x0},
    {0xFAAB,0x78CC,0x0}, {0xFAAC,0x7AB1,0x0}, {0xFAAD,0x7BC0,0x0}, {0xFAAE,0x7C7B,0x0},
    {0xFAAF,0x7D5B,0x0}, {0xFAB0,0x7DF4,0x0}, {0xFAB1,0x7F3E,0x0}, {0xFAB2,0x8005,0x0},
    {0xFAB3,0x8352,0x0}, {0xFAB4,0x83EF,0x0}, {0xFAB5,0x8779,0x0}, {0xFAB6,0x8941,0x0},
    {0xFAB7,0x8986,0x0}, {0xFAB8,0x8996,0x0}, {0xFAB9,0x8ABF,0x0}, {0xFABA,0x8AF8,0x0},
    {0xFABB,0x8ACB,0x0}, {0xFABC,0x8B01,0x0}, {0xFABD,0x8AFE,0x0}, {0xFABE,0x8AED,0x0},
    {0xFABF,0x8B39,0x0}, {0xFAC0,0x8B8A,0x0}, {0xFAC1,0x8D08,0x0}, {0xFAC2,0x8F38,0x0},
    {0xFAC3,0x9072,0x0}, {0xFAC4,0x9199,0x0}, {0xFAC5,0x9276,0x0}, {0xFAC6,0x967C,0x0},
    {0xFAC7,0x96E3,0x0}, {0xFAC8,0x9756,0x0}, {0xFAC9,0x97DB,0x0}, {0xFACA,0x97FF,0x0},
    {0xFACB,0x980B,0x0}, {0xFACC,0x983B,0x0}, {0xFACD,0x9B12,0x0}, {0xFACE,0x9F9C,0x0},
    {0xFACF,0x2284A,0x0}, {0xFAD0,0x22844,0x0}, {0xFAD1,0x233D5,0x0}, {0xFAD2,0x3B9D,0x0},
    {0xFAD3,0x4018,0x0}, {0xFAD4,0x4039,0x0}, {0xFAD5,0x25249,0x0}, {0xFAD6,0x25CD0,0x0},
    {0xFAD7,0x27ED3,0x0}, {0xFAD8,0x9F43,0x0}, {0xFAD9,0x9F8E,0x0}, {0xFB1D,0x5D9,0x5B4},
    {0xFB1F,0x5F2,0x5B7}, {0xFB2A,0x5E9,0x5C1}, {0xFB2B,0x5E9,0x5C2}, {0xFB2C,0xFB49,0x5C1},
    {0xFB2D,0xFB49,0x5C2}, {0xFB2E,0x5D0,0x5B7}, {0xFB2F,0x5D0,0x5B8}, {0xFB30,0x5D0,0x5BC},
    {0xFB31,0x5D1,0x5BC}, {0xFB32,0x5D2,0x5BC}, {0xFB33,0x5D3,0x5BC}, {0xFB34,0x5D4,0x5BC},
    {0xFB35,0x5D5,0x5BC}, {0xFB36,0x5D6,0x5BC}, {0xFB38,0x5D8,0x5BC}, {0xFB39,0x5D9,0x5BC},
    {0xFB3A,0x5DA,0x5BC}, {0xFB3B,0x5DB,0x5BC}, {0xFB3C,0x5DC,0x5BC}, {0xFB3E,0x5DE,0x5BC},
    {0xFB40,0x5E0,0x5BC}, {0xFB41,0x5E1,0x5BC}, {0xFB43,0x5E3,0x5BC}, {0xFB44,0x5E4,0x5BC},
    {0xFB46,0x5E6,0x5BC}, {0xFB47,0x5E7,0x5BC}, {0xFB48,0x5E8,0x5BC}, {0xFB49,0x5E9,0x5BC},
    {0xFB4A,0x5EA,0x5BC}, {0xFB4B,0x5D5,0x5B9}, {0xFB4C,0x5D1,0x5BF}, {0xFB4D,0x5DB,0x5BF},
    {0xFB4E,0x5E4,0x5BF}, {0x1109A,0x11099,0x110BA}, {0x1109C,0x1109B,0x110BA}, {0x110AB,0x110A5,0x110BA},
    {0x1112E,0x11131,0x11127}, {0x1112F,0x11132,0x11127}, {0x1134B,0x11347,0x1133E}, {0x1134C,0x11347,0x11357},
    {0x114BB,0x114B9,0x114BA}, {0x114BC,0x114B9,0x114B0}, {0x114BE,0x114B9,0x114BD}, {0x115BA,0x115B8,0x115AF},
    {0x115BB,0x115B9,0x115AF}, {0x1D15E,0x1D157,0x1D165}, {0x1D15F,0x1D158,0x1D165}, {0x1D160,0x1D15F,0x1D16E},
    {0x1D161,0x1D15F,0x1D16F}, {0x1D162,0x1D15F,0x1D170}, {0x1D163,0x1D15F,0x1D171}, {0x1D164,0x1D15F,0x1D172},
    {0x1D1BB,0x1D1B9,0x1D165}, {0x1D1BC,0x1D1BA,0x1D165}, {0x1D1BD,0x1D1BB,0x1D16E}, {0x1D1BE,0x1D1BC,0x1D16E},
    {0x1D1BF,0x1D1BB,0x1D16F}, {0x1D1C0,0x1D1BC,0x1D16F}, {0x2F800,0x4E3D,0x0}, {0x2F801,0x4E38,0x0},
    {0x2F802,0x4E41,0x0}, {0x2F803,0x20122,0x0}, {0x2F804,0x4F60,0x0}, {0x2F805,0x4FAE,0x0},
    {0x2F806,0x4FBB,0x0}, {0x2F807,0x5002,0x0}, {0x2F808,0x507A,0x0}, {0x2F809,0x5099,0x0},
    {0x2F80A,0x50E7,0x0}, {0x2F80B,0x50CF,0x0}, {0x2F80C,0x349E,0x0}, {0x2F80D,0x2063A,0x0},
    {0x2F80E,0x514D,0x0}, {0x2F80F,0x5154,0x0}, {0x2F810,0x5164,0x0}, {0x2F811,0x5177,0x0},
    {0x2F812,0x2051C,0x0}, {0x2F813,0x34B9,0x0}, {0x2F814,0x5167,0x0}, {0x2F815,0x518D,0x0},
    {0x2F816,0x2054B,0x0}, {0x2F817,0x5197,0x0}, {0x2F818,0x51A4,0x0}, {0x2F819,0x4ECC,0x0},
    {0x2F81A,0x51AC,0x0}, {0x2F81B,0x51B5,0x0}, {0x2F81C,0x291DF,0x0}, {0x2F81D,0x51F5,0x0},
    {0x2F81E,0x5203,0x0}, {0x2F81F,0x34DF,0x0}, {0x2F820,0x523B,0x0}, {0x2F821,0x5246,0x0},
    {0x2F822,0x5272,0x0}, {0x2F823,0x5277,0x0}, {0x2F824,0x3515,0x0}, {0x2F825,0x52C7,0x0},
    {0x2F826,0x52C9,0x0}, {0x2F827,0x52E4,0x0}, {0x2F828,0x52FA,0x0}, {0x2F829,0x5305,0x0},
    {0x2F82A,0x5306,0x0}, {0x2F82B,0x5317,0x0}, {0x2F82C,0x5349,0x0}, {0x2F82D,0x5351,0x0},
    {0x2F82E,0x535A,0x0}, {0x2F82F,0x5373,0x0}, {0x2F830,0x537D,0x0}, {0x2F831,0x537F,0x0},
    {0x2F832,0x537F,0x0}, {0x2F833,0x537F,0x0}, {0x2F834,0x20A2C,0x0}, {0x2F835,0x7070,0x0},
    {0x2F836,0x53CA,0x0}, {0x2F837,0x53DF,0x0}, {0x2F838,0x20B63,0x0}, {0x2F839,0x53EB,0x0},
    {0x2F83A,0x53F1,0x0}, {0x2F83B,0x5406,0x0}, {0x2F83C,0x549E,0x0}, {0x2F83D,0x5438,0x0},
    {0x2F83E,0x5448,0x0}, {0x2F83F,0x5468,0x0}, {0x2F840,0x54A2,0x0}, {0x2F841,0x54F6,0x0},
    {0x2F842,0x5510,0x0}, {0x2F843,0x5553,0x0}, {0x2F844,0x5563,0x0}, {0x2F845,0x5584,0x0},
    {0x2F846,0x5584,0x0}, {0x2F847,0x5599,0x0}, {0x2F848,0x55AB,0x0}, {0x2F849,0x55B3,0x0},
    {0x2F84A,0x55C2,0x0}, {0x2F84B,0x5716,0x0}, {0x2F84C,0x5606,0x0}, {0x2F84D,0x5717,0x0},
    {0x2F84E,0x5651,0x0}, {0x2F84F,0x5674,0x0}, {0x2F850,0x5207,0x0}, {0x2F851,0x58EE,0x0},
    {0x2F852,0x57CE,0x0}, {0x2F853,0x57F4,0x0}, {0x2F854,0x580D,0x0}, {0x2F855,0x578B,0x0},
    {0x2F856,0x5832,0x0}, {0x2F857,0x5831,0x0}, {0x2F858,0x58AC,0x0}, {0x2F859,0x214E4,0x0},
    {0x2F85A,0x58F2,0x0}, {0x2F85B,0x58F7,0x0}, {0x2F85C,0x5906,0x0}, {0x2F85D,0x591A,0x0},
    {0x2F85E,0x5922,0x0}, {0x2F85F,0x5962,0x0}, {0x2F860,0x216A8,0x0}, {0x2F861,0x216EA,0x0},
    {0x2F862,0x59EC,0x0}, {0x2F863,0x5A1B,0x0}, {0x2F864,0x5A27,0x0}, {0x2F865,0x59D8,0x0},
    {0x2F866,0x5A66,0x0}, {0x2F867,0x36EE,0x0}, {0x2F868,0x36FC,0x0}, {0x2F869,0x5B08,0x0},
    {0x2F86A,0x5B3E,0x0}, {0x2F86B,0x5B3E,0x0}, {0x2F86C,0x219C8,0x0}, {0x2F86D,0x5BC3,0x0},
    {0x2F86E,0x5BD8,0x0}, {0x2F86F,0x5BE7,0x0}, {0x2F870,0x5BF3,0x0}, {0x2F871,0x21B18,0x0},
    {0x2F872,0x5BFF,0x0}, {0x2F873,0x5C06,0x0}, {0x2F874,0x5F53,0x0}, {0x2F875,0x5C22,0x0},
    {0x2F876,0x3781,0x0}, {0x2F877,0x5C60,0x0}, {0x2F878,0x5C6E,0x0}, {0x2F879,0x5CC0,0x0},
    {0x2F87A,0x5C8D,0x0}, {0x2F87B,0x21DE4,0x0}, {0x2F87C,0x5D43,0x0}, {0x2F87D,0x21DE6,0x0},
    {0x2F87E,0x5D6E,0x0}, {0x2F87F,0x5D6B,0x0}, {0x2F880,0x5D7C,0x0}, {0x2F881,0x5DE1,0x0},
    {0x2F882,0x5DE2,0x0}, {0x2F883,0x382F,0x0}, {0x2F884,0x5DFD,0x0}, {0x2F885,0x5E28,0x0},
    {0x2F886,0x5E3D,0x0}, {0x2F887,0x5E69,0x0}, {0x2F888,0x3862,0x0}, {0x2F889,0x22183,0x0},
    {0x2F88A,0x387C,0x0}, {0x2F88B,0x5EB0,0x0}, {0x2F88C,0x5EB3,0x0}, {0x2F88D,0x5EB6,0x0},
    {0x2F88E,0x5ECA,0x0}, {0x2F88F,0x2A392,0x0}, {0x2F890,0x5EFE,0x0}, {0x2F891,0x22331,0x0},
    {0x2F892,0x22331,0x0}, {0x2F893,0x8201,0x0}, {0x2F894,0x5F22,0x0}, {0x2F895,0x5F22,0x0},
    {0x2F896,0x38C7,0x0}, {0x2F897,0x232B8,0x0}, {0x2F898,0x261DA,0x0}, {0x2F899,0x5F62,0x0},
    {0x2F89A,0x5F6B,0x0}, {0x2F89B,0x38E3,0x0}, {0x2F89C,0x5F9A,0x0}, {0x2F89D,0x5FCD,0x0},
    {0x2F89E,0x5FD7,0x0}, {0x2F89F,0x5FF9,0x0}, {0x2F8A0,0x6081,0x0}, {0x2F8A1,0x393A,0x0},
    {0x2F8A2,0x391C,0x0}, {0x2F8A3,0x6094,0x0}, {0x2F8A4,0x226D4,0x0}, {0x2F8A5,0x60C7,0x0},
    {0x2F8A6,0x6148,0x0}, {0x2F8A7,0x614C,0x0}, {0x2F8A8,0x614E,0x0}, {0x2F8A9,0x614C,0x0},
    {0x2F8AA,0x617A,0x0}, {0x2F8AB,0x618E,0x0}, {0x2F8AC,0x61B2,0x0}, {0x2F8AD,0x61A4,0x0},
    {0x2F8AE,0x61AF,0x0}, {0x2F8AF,0x61DE,0x0}, {0x2F8B0,0x61F2,0x0}, {0x2F8B1,0x61F6,0x0},
    {0x2F8B2,0x6210,0x0}, {0x2F8B3,0x621B,0x0}, {0x2F8B4,0x625D,0x0}, {0x2F8B5,0x62B1,0x0},
    {0x2F8B6,0x62D4,0x0}, {0x2F8B7,0x6350,0x0}, {0x2F8B8,0x22B0C,0x0}, {0x2F8B9,0x633D,0x0},
    {0x2F8BA,0x62FC,0x0}, {0x2F8BB,0x6368,0x0}, {0x2F8BC,0x6383,0x0}, {0x2F8BD,0x63E4,0x0},
    {0x2F8BE,0x22BF1,0x0}, {0x2F8BF,0x6422,0x0}, {0x2F8C0,0x63C5,0x0}, {0x2F8C1,0x63A9,0x0},
    {0x2F8C2,0x3A2E,0x0}, {0x2F8C3,0x6469,0x0}, {0x2F8C4,0x647E,0x0}, {0x2F8C5,0x649D,0x0},
    {0x2F8C6,0x6477,0x0}, {0x2F8C7,0x3A6C,0x0}, {0x2F8C8,0x654F,0x0}, {0x2F8C9,0x656C,0x0},
    {0x2F8CA,0x2300A,0x0}, {0x2F8CB,0x65E3,0x0}, {0x2F8CC,0x66F8,0x0}, {0x2F8CD,0x6649,0x0},
    {0x2F8CE,0x3B19,0x0}, {0x2F8CF,0x6691,0x0}, {0x2F8D0,0x3B08,0x0}, {0x2F8D1,0x3AE4,0x0},
    {0x2F8D2,0x5192,0x0}, {0x2F8D3,0x5195,0x0}, {0x2F8D4,0x6700,0x0}, {0x2F8D5,0x669C,0x0},
    {0x2F8D6,0x80AD,0x0}, {0x2F8D7,0x43D9,0x0}, {0x2F8D8,0x6717,0x0}, {0x2F8D9,0x671B,0x0},
    {0x2F8DA,0x6721,0x0}, {0x2F8DB,0x675E,0x0}, {0x2F8DC,0x6753,0x0}, {0x2F8DD,0x233C3,0x0},
    {0x2F8DE,0x3B49,0x0}, {0x2F8DF,0x67FA,0x0}, {0x2F8E0,0x6785,0x0}, {0x2F8E1,0x6852,0x0},
    {0x2F8E2,0x6885,0x0}, {0x2F8E3,0x2346D,0x0}, {0x2F8E4,0x688E,0x0}, {0x2F8E5,0x681F,0x0},
    {0x2F8E6,0x6914,0x0}, {0x2F8E7,0x3B9D,0x0}, {0x2F8E8,0x6942,0x0}, {0x2F8E9,0x69A3,0x0},
    {0x2F8EA,0x69EA,0x0}, {0x2F8EB,0x6AA8,0x0}, {0x2F8EC,0x236A3,0x0}, {0x2F8ED,0x6ADB,0x0},
    {0x2F8EE,0x3C18,0x0}, {0x2F8EF,0x6B21,0x0}, {0x2F8F0,0x238A7,0x0}, {0x2F8F1,0x6B54,0x0},
    {0x2F8F2,0x3C4E,0x0}, {0x2F8F3,0x6B72,0x0}, {0x2F8F4,0x6B9F,0x0}, {0x2F8F5,0x6BBA,0x0},
    {0x2F8F6,0x6BBB,0x0}, {0x2F8F7,0x23A8D,0x0}, {0x2F8F8,0x21D0B,0x0}, {0x2F8F9,0x23AFA,0x0},
    {0x2F8FA,0x6C4E,0x0}, {0x2F8FB,0x23CBC,0x0}, {0x2F8FC,0x6CBF,0x0}, {0x2F8FD,0x6CCD,0x0},
    {0x2F8FE,0x6C67,0x0}, {0x2F8FF,0x6D16,0x0}, {0x2F900,0x6D3E,0x0}, {0x2F901,0x6D77,0x0},
    {0x2F902,0x6D41,0x0}, {0x2F903,0x6D69,0x0}, {0x2F904,0x6D78,0x0}, {0x2F905,0x6D85,0x0},
    {0x2F906,0x23D1E,0x0}, {0x2F907,0x6D34,0x0}, {0x2F908,0x6E2F,0x0}, {0x2F909,0x6E6E,0x0},
    {0x2F90A,0x3D33,0x0}, {0x2F90B,0x6ECB,0x0}, {0x2F90C,0x6EC7,0x0}, {0x2F90D,0x23ED1,0x0},
    {0x2F90E,0x6DF9,0x0}, {0x2F90F,0x6F6E,0x0}, {0x2F910,0x23F5E,0x0}, {0x2F911,0x23F8E,0x0},
    {0x2F912,0x6FC6,0x0}, {0x2F913,0x7039,0x0}, {0x2F914,0x701E,0x0}, {0x2F915,0x701B,0x0},
    {0x2F916,0x3D96,0x0}, {0x2F917,0x704A,0x0}, {0x2F918,0x707D,0x0}, {0x2F919,0x7077,0x0},
    {0x2F91A,0x70AD,0x0}, {0x2F91B,0x20525,0x0}, {0x2F91C,0x7145,0x0}, {0x2F91D,0x24263,0x0},
    {0x2F91E,0x719C,0x0}, {0x2F91F,0x243AB,0x0}, {0x2F920,0x7228,0x0}, {0x2F921,0x7235,0x0},
    {0x2F922,0x7250,0x0}, {0x2F923,0x24608,0x0}, {0x2F924,0x7280,0x0}, {0x2F925,0x7295,0x0},
    {0x2F926,0x24735,0x0}, {0x2F927,0x24814,0x0}, {0x2F928,0x737A,0x0}, {0x2F929,0x738B,0x0},
    {0x2F92A,0x3EAC,0x0}, {0x2F92B,0x73A5,0x0}, {0x2F92C,0x3EB8,0x0}, {0x2F92D,0x3EB8,0x0},
    {0x2F92E,0x7447,0x0}, {0x2F92F,0x745C,0x0}, {0x2F930,0x7471,0x0}, {0x2F931,0x7485,0x0},
    {0x2F932,0x74CA,0x0}, {0x2F933,0x3F1B,0x0}, {0x2F934,0x7524,0x0}, {0x2F935,0x24C36,0x0},
    {0x2F936,0x753E,0x0}, {0x2F937,0x24C92,0x0}, {0x2F938,0x7570,0x0}, {0x2F939,0x2219F,0x0},
    {0x2F93A,0x7610,0x0}, {0x2F93B,0x24FA1,0x0}, {0x2F93C,0x24FB8,0x0}, {0x2F93D,0x25044,0x0},
    {0x2F93E,0x3FFC,0x0}, {0x2F93F,0x4008,0x0}, {0x2F940,0x76F4,0x0}, {0x2F941,0x250F3,0x0},
    {0x2F942,0x250F2,0x0}, {0x2F943,0x25119,0x0}, {0x2F944,0x25133,0x0}, {0x2F945,0x771E,0x0},
    {0x2F946,0x771F,0x0}, {0x2F947,0x771F,0x0}, {0x2F948,0x774A,0x0}, {0x2F949,0x4039,0x0},
    {0x2F94A,0x778B,0x0}, {0x2F94B,0x4046,0x0}, {0x2F94C,0x4096,0x0}, {0x2F94D,0x2541D,0x0},
    {0x2F94E,0x784E,0x0}, {0x2F94F,0x788C,0x0}, {0x2F950,0x78CC,0x0}, {0x2F951,0x40E3,0x0},
    {0x2F952,0x25626,0x0}, {0x2F953,0x7956,0x0}, {0x2F954,0x2569A,0x0}, {0x2F955,0x256C5,0x0},
    {0x2F956,0x798F,0x0}, {0x2F957,0x79EB,0x0}, {0x2F958,0x412F,0x0}, {0x2F959,0x7A40,0x0},
    {0x2F95A,0x7A4A,0x0}, {0x2F95B,0x7A4F,0x0}, {0x2F95C,0x2597C,0x0}, {0x2F95D,0x25AA7,0x0},
    {0x2F95E,0x25AA7,0x0}, {0x2F95F,0x7AEE,0x0}, {0x2F960,0x4202,0x0}, {0x2F961,0x25BAB,0x0},
    {0x2F962,0x7BC6,0x0}, {0x2F963,0x7BC9,0x0}, {0x2F964,0x4227,0x0}, {0x2F965,0x25C80,0x0},
    {0x2F966,0x7CD2,0x0}, {0x2F967,0x42A0,0x0}, {0x2F968,0x7CE8,0x0}, {0x2F969,0x7CE3,0x0},
    {0x2F96A,0x7D00,0x0}, {0x2F96B,0x25F86,0x0}, {0x2F96C,0x7D63,0x0}, {0x2F96D,0x4301,0x0},
    {0x2F96E,0x7DC7,0x0}, {0x2F96F,0x7E02,0x0}, {0x2F970,0x7E45,0x0}, {0x2F971,0x4334,0x0},
    {0x2F972,0x26228,0x0}, {0x2F973,0x26247,0x0}, {0x2F974,0x4359,0x0}, {0x2F975,0x262D9,0x0},
    {0x2F976,0x7F7A,0x0}, {0x2F977,0x2633E,0x0}, {0x2F978,0x7F95,0x0}, {0x2F979,0x7FFA,0x0},
    {0x2F97A,0x8005,0x0}, {0x2F97B,0x264DA,0x0}, {0x2F97C,0x26523,0x0}, {0x2F97D,0x8060,0x0},
    {0x2F97E,0x265A8,0x0}, {0x2F97F,0x8070,0x0}, {0x2F980,0x2335F,0x0}, {0x2F981,0x43D5,0x0},
    {0x2F982,0x80B2,0x0}, {0x2F983,0x8103,0x0}, {0x2F984,0x440B,0x0}, {0x2F985,0x813E,0x0},
    {0x2F986,0x5AB5,0x0}, {0x2F987,0x267A7,0x0}, {0x2F988,0x267B5,0x0}, {0x2F989,0x23393,0x0},
    {0x2F98A,0x2339C,0x0}, {0x2F98B,0x8201,0x0}, {0x2F98C,0x8204,0x0}, {0x2F98D,0x8F9E,0x0},
    {0x2F98E,0x446B,0x0}, {0x2F98F,0x8291,0x0}, {0x2F990,0x828B,0x0}, {0x2F991,0x829D,0x0},
    {0x2F992,0x52B3,0x0}, {0x2F993,0x82B1,0x0}, {0x2F994,0x82B3,0x0}, {0x2F995,0x82BD,0x0},
    {0x2F996,0x82E6,0x0}, {0x2F997,0x26B3C,0x0}, {0x2F998,0x82E5,0x0}, {0x2F999,0x831D,0x0},
    {0x2F99A,0x8363,0x0}, {0x2F99B,0x83AD,0x0}, {0x2F99C,0x8323,0x0}, {0x2F99D,0x83BD,0x0},
    {0x2F99E,0x83E7,0x0}, {0x2F99F,0x8457,0x0}, {0x2F9A0,0x8353,0x0}, {0x2F9A1,0x83CA,0x0},
    {0x2F9A2,0x83CC,0x0}, {0x2F9A3,0x83DC,0x0}, {0x2F9A4,0x26C36,0x0}, {0x2F9A5,0x26D6B,0x0},
    {0x2F9A6,0x26CD5,0x0}, {0x2F9A7,0x452B,0x0}, {0x2F9A8,0x84F1,0x0}, {0x2F9A9,0x84F3,0x0},
    {0x2F9AA,0x8516,0x0}, {0x2F9AB,0x273CA,0x0}, {0x2F9AC,0x8564,0x0}, {0x2F9AD,0x26F2C,0x0},
    {0x2F9AE,0x455D,0x0}, {0x2F9AF,0x4561,0x0}, {0x2F9B0,0x26FB1,0x0}, {0x2F9B1,0x270D2,0x0},
    {0x2F9B2,0x456B,0x0}, {0x2F9B3,0x8650,0x0}, {0x2F9B4,0x865C,0x0}, {0x2F9B5,0x8667,0x0},
    {0x2F9B6,0x8669,0x0}, {0x2F9B7,0x86A9,0x0}, {0x2F9B8,0x8688,0x0}, {0x2F9B9,0x870E,0x0},
    {0x2F9BA,0x86E2,0x0}, {0x2F9BB,0x8779,0x0}, {0x2F9BC,0x8728,0x0}, {0x2F9BD,0x876B,0x0},
    {0x2F9BE,0x8786,0x0}, {0x2F9BF,0x45D7,0x0}, {0x2F9C0,0x87E1,0x0}, {0x2F9C1,0x8801,0x0},
    {0x2F9C2,0x45F9,0x0}, {0x2F9C3,0x8860,0x0}, {0x2F9C4,0x8863,0x0}, {0x2F9C5,0x27667,0x0},
    {0x2F9C6,0x88D7,0x0}, {0x2F9C7,0x88DE,0x0}, {0x2F9C8,0x4635,0x0}, {0x2F9C9,0x88FA,0x0},
    {0x2F9CA,0x34BB,0x0}, {0x2F9CB,0x278AE,0x0}, {0x2F9CC,0x27966,0x0}, {0x2F9CD,0x46BE,0x0},
    {0x2F9CE,0x46C7,0x0}, {0x2F9CF,0x8AA0,0x0}, {0x2F9D0,0x8AED,0x0}, {0x2F9D1,0x8B8A,0x0},
    {0x2F9D2,0x8C55,0x0}, {0x2F9D3,0x27CA8,0x0}, {0x2F9D4,0x8CAB,0x0}, {0x2F9D5,0x8CC1,0x0},
    {0x2F9D6,0x8D1B,0x0}, {0x2F9D7,0x8D77,0x0}, {0x2F9D8,0x27F2F,0x0}, {0x2F9D9,0x20804,0x0},
    {0x2F9DA,0x8DCB,0x0}, {0x2F9DB,0x8DBC,0x0}, {0x2F9DC,0x8DF0,0x0}, {0x2F9DD,0x208DE,0x0},
    {0x2F9DE,0x8ED4,0x0}, {0x2F9DF,0x8F38,0x0}, {0x2F9E0,0x285D2,0x0}, {0x2F9E1,0x285ED,0x0},
    {0x2F9E2,0x9094,0x0}, {0x2F9E3,0x90F1,0x0}, {0x2F9E4,0x9111,0x0}, {0x2F9E5,0x2872E,0x0},
    {0x2F9E6,0x911B,0x0}, {0x2F9E7,0x9238,0x0}, {0x2F9E8,0x92D7,0x0}, {0x2F9E9,0x92D8,0x0},
    {0x2F9EA,0x927C,0x0}, {0x2F9EB,0x93F9,0x0}, {0x2F9EC,0x9415,0x0}, {0x2F9ED,0x28BFA,0x0},
    {0x2F9EE,0x958B,0x0}, {0x2F9EF,0x4995,0x0}, {0x2F9F0,0x95B7,0x0}, {0x2F9F1,0x28D77,0x0},
    {0x2F9F2,0x49E6,0x0}, {0x2F9F3,0x96C3,0x0}, {0x2F9F4,0x5DB2,0x0}, {0x2F9F5,0x9723,0x0},
    {0x2F9F6,0x29145,0x0}, {0x2F9F7,0x2921A,0x0}, {0x2F9F8,0x4A6E,0x0}, {0x2F9F9,0x4A76,0x0},
    {0x2F9FA,0x97E0,0x0}, {0x2F9FB,0x2940A,0x0}, {0x2F9FC,0x4AB2,0x0}, {0x2F9FD,0x29496,0x0},
    {0x2F9FE,0x980B,0x0}, {0x2F9FF,0x980B,0x0}, {0x2FA00,0x9829,0x0}, {0x2FA01,0x295B6,0x0},
    {0x2FA02,0x98E2,0x0}, {0x2FA03,0x4B33,0x0}, {0x2FA04,0x9929,0x0}, {0x2FA05,0x99A7,0x0},
    {0x2FA06,0x99C2,0x0}, {0x2FA07,0x99FE,0x0}, {0x2FA08,0x4BCE,0x0}, {0x2FA09,0x29B30,0x0},
    {0x2FA0A,0x9B12,0x0}, {0x2FA0B,0x9C40,0x0}, {0x2FA0C,0x9CFD,0x0}, {0x2FA0D,0x4CCE,0x0},
    {0x2FA0E,0x4CED,0x0}, {0x2FA0F,0x9D67,0x0}, {0x2FA10,0x2A0CE,0x0}, {0x2FA11,0x4CF8,0x0},
    {0x2FA12,0x2A105,0x0}, {0x2FA13,0x2A20E,0x0}, {0x2FA14,0x2A291,0x0}, {0x2FA15,0x9EBB,0x0},
    {0x2FA16,0x4D56,0x0}, {0x2FA17,0x9EF9,0x0}, {0x2FA18,0x9EFE,0x0}, {0x2FA19,0x9F05,0x0},
    {0x2FA1A,0x9F0F,0x0}, {0x2FA1B,0x9F16,0x0}, {0x2FA1C,0x9F3B,0x0}, {0x2FA1D,0x2A600,0x0},
};

/* Canonical compositions {first, second, composite}, sorted by (first, second):
 * the two-code-point decompositions minus the composition exclusions. */
static const uint32_t uni_compositions[][3] = {
    {0x3C,0x338,0x226E}, {0x3D,0x338,0x2260}, {0x3E,0x338,0x226F}, {0x41,0x300,0xC0},
    {0x41,0x301,0xC1}, {0x41,0x302,0xC2}, {0x41,0x303,0xC3}, {0x41,0x304,0x100},
    {0x41,0x306,0x102}, {0x41,0x307,0x226}, {0x41,0x308,0xC4}, {0x41,0x309,0x1EA2},
    {0x41,0x30A,0xC5}, {0x41,0x30C,0x1CD}, {0x41,0x30F,0x200}, {0x41,0x311,0x202},
    {0x41,0x323,0x1EA0}, {0x41,0x325,0x1E00}, {0x41,0x328,0x104}, {0x42,0x307,0x1E02},
    {0x42,0x323,0x1E04}, {0x42,0x331,0x1E06}, {0x43,0x301,0x106}, {0x43,0x302,0x108},
    {0x43,0x307,0x10A}, {0x43,0x30C,0x10C}, {0x43,0x327,0xC7}, {0x44,0x307,0x1E0A},
    {0x44,0x30C,0x10E}, {0x44,0x323,0x1E0C}, {0x44,0x327,0x1E10}, {0x44,0x32D,0x1E12},
    {0x44,0x331,0x1E0E}, {0x45,0x300,0xC8}, {0x45,0x301,0xC9}, {0x45,0x302,0xCA},
    {0x45,0x303,0x1EBC}, {0x45,0x304,0x112}, {0x45,0x306,0x114}, {0x45,0x307,0x116},
    {0x45,0x308,0xCB}, {0x45,0x309,0x1EBA}, {0x45,0x30C,0x11A}, {0x45,0x30F,0x204},
    {0x45,0x311,0x206}, {0x45,0x323,0x1EB8}, {0x45,0x327,0x228}, {0x45,0x328,0x118},
    {0x45,0x32D,0x1E18}, {0x45,0x330,0x1E1A}, {0x46,0x307,0x1E1E}, {0x47,0x301,0x1F4},
    {0x47,0x302,0x11C}, {0x47,0x304,0x1E20}, {0x47,0x306,0x11E}, {0x47,0x307,0x120},
    {0x47,0x30C,0x1E6}, {0x47,0x327,0x122}, {0x48,0x302,0x124}, {0x48,0x307,0x1E22},
    {0x48,0x308,0x1E26}, {0x48,0x30C,0x21E}, {0x48,0x323,0x1E24}, {0x48,0x327,0x1E28},
    {0x48,0x32E,0x1E2A}, {0x49,0x300,0xCC}, {0x49,0x301,0xCD}, {0x49,0x302,0xCE},
    {0x49,0x303,0x128}, {0x49,0x304,0x12A}, {0x49,0x306,0x12C}, {0x49,0x307,0x130},
    {0x49,0x308,0xCF}, {0x49,0x309,0x1EC8}, {0x49,0x30C,0x1CF}, {0x49,0x30F,0x208},
    {0x49,0x311,0x20A}, {0x49,0x323,0x1ECA}, {0x49,0x328,0x12E}, {0x49,0x330,0x1E2C},
    {0x4A,0x302,0x134}, {0x4B,0x301,0x1E30}, {0x4B,0x30C,0x1E8}, {0x4B,0x323,0x1E32},
    {0x4B,0x327,0x136}, {0x4B,0x331,0x1E34}, {0x4C,0x301,0x139}, {0x4C,0x30C,0x13D},
    {0x4C,0x323,0x1E36}, {0x4C,0x327,0x13B}, {0x4C,0x32D,0x1E3C}, {0x4C,0x331,0x1E3A},
    {0x4D,0x301,0x1E3E}, {0x4D,0x307,0x1E40}, {0x4D,0x323,0x1E42}, {0x4E,0x300,0x1F8},
    {0x4E,0x301,0x143}, {0x4E,0x303,0xD1}, {0x4E,0x307,0x1E44}, {0x4E,0x30C,0x147},
    {0x4E,0x323,0x1E46}, {0x4E,0x327,0x145}, {0x4E,0x32D,0x1E4A}, {0x4E,0x331,0x1E48},
    {0x4F,0x300,0xD2}, {0x4F,0x301,0xD3}, {0x4F,0x302,0xD4}, {0x4F,0x303,0xD5},
    {0x4F,0x304,0x14C}, {0x4F,0x306,0x14E}, {0x4F,0x307,0x22E}, {0x4F,0x308,0xD6},
    {0x4F,0x309,0x1ECE}, {0x4F,0x30B,0x150}, {0x4F,0x30C,0x1D1}, {0x4F,0x30F,0x20C},
    {0x4F,0x311,0x20E}, {0x4F,0x31B,0x1A0}, {0x4F,0x323,0x1ECC}, {0x4F,0x328,0x1EA},
    {0x50,0x301,0x1E54}, {0x50,0x307,0x1E56}, {0x52,0x301,0x154}, {0x52,0x307,0x1E58},
    {0x52,0x30C,0x158}, {0x52,0x30F,0x210}, {0x52,0x311,0x212}, {0x52,0x323,0x1E5A},
    {0x52,0x327,0x156}, {0x52,0x331,0x1E5E}, {0x53,0x301,0x15A}, {0x53,0x302,0x15C},
    {0x53,0x307,0x1E60}, {0x53,0x30C,0x160}, {0x53,0x323,0x1E62}, {0x53,0x326,0x218},
    {0x53,0x327,0x15E}, {0x54,0x307,0x1E6A}, {0x54,0x30C,0x164}, {0x54,0x323,0x1E6C},
    {0x54,0x326,0x21A}, {0x54,0x327,0x162}, {0x54,0x32D,0x1E70}, {0x54,0x331,0x1E6E},
    {0x55,0x300,0xD9}, {0x55,0x301,0xDA}, {0x55,0x302,0xDB}, {0x55,0x303,0x168},
    {0x55,0x304,0x16A}, {0x55,0x306,0x16C}, {0x55,0x308,0xDC}, {0x55,0x309,0x1EE6},
    {0x55,0x30A,0x16E}, {0x55,0x30B,0x170}, {0x55,0x30C,0x1D3}, {0x55,0x30F,0x214},
    {0x55,0x311,0x216}, {0x55,0x31B,0x1AF}, {0x55,0x323,0x1EE4}, {0x55,0x324,0x1E72},
    {0x55,0x328,0x172}, {0x55,0x32D,0x1E76}, {0x55,0x330,0x1E74}, {0x56,0x303,0x1E7C},
    {0x56,0x323,0x1E7E}, {0x57,0x300,0x1E80}, {0x57,0x301,0x1E82}, {0x57,0x302,0x174},
    {0x57,0x307,0x1E86}, {0x57,0x308,0x1E84}, {0x57,0x323,0x1E88}, {0x58,0x307,0x1E8A},
    {0x58,0x308,0x1E8C}, {0x59,0x300,0x1EF2}, {0x59,0x301,0xDD}, {0x59,0x302,0x176},
    {0x59,0x303,0x1EF8}, {0x59,0x304,0x232}, {0x59,0x307,0x1E8E}, {0x59,0x308,0x178},
    {0x59,0x309,0x1EF6}, {0x59,0x323,0x1EF4}, {0x5A,0x301,0x179}, {0x5A,0x302,0x1E90},
    {0x5A,0x307,0x17B}, {0x5A,0x30C,0x17D}, {0x5A,0x323,0x1E92}, {0x5A,0x331,0x1E94},
    {0x61,0x300,0xE0}, {0x61,0x301,0xE1}, {0x61,0x302,0xE2}, {0x61,0x303,0xE3},
    {0x61,0x304,0x101}, {0x61,0x306,0x103}, {0x61,0x307,0x227}, {0x61,0x308,0xE4},
    {0x61,0x309,0x1EA3}, {0x61,0x30A,0xE5}, {0x61,0x30C,0x1CE}, {0x61,0x30F,0x201},
    {0x61,0x311,0x203}, {0x61,0x323,0x1EA1}, {0x61,0x325,0x1E01}, {0x61,0x328,0x105},
    {0x62,0x307,0x1E03}, {0x62,0x323,0x1E05}, {0x62,0x331,0x1E07}, {0x63,0x301,0x107},
    {0x63,0x302,0x109}, {0x63,0x307,0x10B}, {0x63,0x30C,0x10D}, {0x63,0x327,0xE7},
    {0x64,0x307,0x1E0B}, {0x64,0x30C,0x10F}, {0x64,0x323,0x1E0D}, {0x64,0x327,0x1E11},
    {0x64,0x32D,0x1E13}, {0x64,0x331,0x1E0F}, {0x65,0x300,0xE8}, {0x65,0x301,0xE9},
    {0x65,0x302,0xEA}, {0x65,0x303,0x1EBD}, {0x65,0x304,0x113}, {0x65,0x306,0x115},
    {0x65,0x307,0x117}, {0x65,0x308,0xEB}, {0x65,0x309,0x1EBB}, {0x65,0x30C,0x11B},
    {0x65,0x30F,0x205}, {0x65,0x311,0x207}, {0x65,0x323,0x1EB9}, {0x65,0x327,0x229},
    {0x65,0x328,0x119}, {0x65,0x32D,0x1E19}, {0x65,0x330,0x1E1B}, {0x66,0x307,0x1E1F},
    {0x67,0x301,0x1F5}, {0x67,0x302,0x11D}, {0x67,0x304,0x1E21}, {0x67,0x306,0x11F},
    {0x67,0x307,0x121}, {0x67,0x30C,0x1E7}, {0x67,0x327,0x123}, {0x68,0x302,0x125},
    {0x68,0x307,0x1E23}, {0x68,0x308,0x1E27}, {0x68,0x30C,0x21F}, {0x68,0x323,0x1E25},
    {0x68,0x327,0x1E29}, {0x68,0x32E,0x1E2B}, {0x68,0x331,0x1E96}, {0x69,0x300,0xEC},
    {0x69,0x301,0xED}, {0x69,0x302,0xEE}, {0x69,0x303,0x129}, {0x69,0x304,0x12B},
    {0x69,0x306,0x12D}, {0x69,0x308,0xEF}, {0x69,0x309,0x1EC9}, {0x69,0x30C,0x1D0},
    {0x69,0x30F,0x209}, {0x69,0x311,0x20B}, {0x69,0x323,0x1ECB}, {0x69,0x328,0x12F},
    {0x69,0x330,0x1E2D}, {0x6A,0x302,0x135}, {0x6A,0x30C,0x1F0}, {0x6B,0x301,0x1E31},
    {0x6B,0x30C,0x1E9}, {0x6B,0x323,0x1E33}, {0x6B,0x327,0x137}, {0x6B,0x331,0x1E35},
    {0x6C,0x301,0x13A}, {0x6C,0x30C,0x13E}, {0x6C,0x323,0x1E37}, {0x6C,0x327,0x13C},
    {0x6C,0x32D,0x1E3D}, {0x6C,0x331,0x1E3B}, {0x6D,0x301,0x1E3F}, {0x6D,0x307,0x1E41},
    {0x6D,0x323,0x1E43}, {0x6E,0x300,0x1F9}, {0x6E,0x301,0x144}, {0x6E,0x303,0xF1},
    {0x6E,0x307,0x1E45}, {0x6E,0x30C,0x148}, {0x6E,0x323,0x1E47}, {0x6E,0x327,0x146},
    {0x6E,0x32D,0x1E4B}, {0x6E,0x331,0x1E49}, {0x6F,0x300,0xF2}, {0x6F,0x301,0xF3},
    {0x6F,0x302,0xF4}, {0x6F,0x303,0xF5}, {0x6F,0x304,0x14D}, {0x6F,0x306,0x14F},
    {0x6F,0x307,0x22F}, {0x6F,0x308,0xF6}, {0x6F,0x309,0x1ECF}, {0x6F,0x30B,0x151},
    {0x6F,0x30C,0x1D2}, {0x6F,0x30F,0x20D}, {0x6F,0x311,0x20F}, {0x6F,0x31B,0x1A1},
    {0x6F,0x323,0x1ECD}, {0x6F,0x328,0x1EB}, {0x70,0x301,0x1E55}, {0x70,0x307,0x1E57},
    {0x72,0x301,0x155}, {0x72,0x307,0x1E59}, {0x72,0x30C,0x159}, {0x72,0x30F,0x211},
    {0x72,0x311,0x213}, {0x72,0x323,0x1E5B}, {0x72,0x327,0x157}, {0x72,0x331,0x1E5F},
    {0x73,0x301,0x15B}, {0x73,0x302,0x15D}, {0x73,0x307,0x1E61}, {0x73,0x30C,0x161},
    {0x73,0x323,0x1E63}, {0x73,0x326,0x219}, {0x73,0x327,0x15F}, {0x74,0x307,0x1E6B},
    {0x74,0x308,0x1E97}, {0x74,0x30C,0x165}, {0x74,0x323,0x1E6D}, {0x74,0x326,0x21B},
    {0x74,0x327,0x163}, {0x74,0x32D,0x1E71}, {0x74,0x331,0x1E6F}, {0x75,0x300,0xF9},
    {0x75,0x301,0xFA}, {0x75,0x302,0xFB}, {0x75,0x303,0x169}, {0x75,0x304,0x16B},
    {0x75,0x306,0x16D}, {0x75,0x308,0xFC}, {0x75,0x309,0x1EE7}, {0x75,0x30A,0x16F},
    {0x75,0x30B,0x171}, {0x75,0x30C,0x1D4}, {0x75,0x30F,0x215}, {0x75,0x311,0x217},
    {0x75,0x31B,0x1B0}, {0x75,0x323,0x1EE5}, {0x75,0x324,0x1E73}, {0x75,0x328,0x173},
    {0x75,0x32D,0x1E77}, {0x75,0x330,0x1E75}, {0x76,0x303,0x1E7D}, {0x76,0x323,0x1E7F},
    {0x77,0x300,0x1E81}, {0x77,0x301,0x1E83}, {0x77,0x302,0x175}, {0x77,0x307,0x1E87},
    {0x77,0x308,0x1E85}, {0x77,0x30A,0x1E98}, {0x77,0x323,0x1E89}, {0x78,0x307,0x1E8B},
    {0x78,0x308,0x1E8D}, {0x79,0x300,0x1EF3}, {0x79,0x301,0xFD}, {0x79,0x302,0x177},
    {0x79,0x303,0x1EF9}, {0x79,0x304,0x233}, {0x79,0x307,0x1E8F}, {0x79,0x308,0xFF},
    {0x79,0x309,0x1EF7}, {0x79,0x30A,0x1E99}, {0x79,0x323,0x1EF5}, {0x7A,0x301,0x17A},
    {0x7A,0x302,0x1E91}, {0x7A,0x307,0x17C}, {0x7A,0x30C,0x17E}, {0x7A,0x323,0x1E93},
    {0x7A,0x331,0x1E95}, {0xA8,0x300,0x1FED}, {0xA8,0x301,0x385}, {0xA8,0x342,0x1FC1},
    {0xC2,0x300,0x1EA6}, {0xC2,0x301,0x1EA4}, {0xC2,0x303,0x1EAA}, {0xC2,0x309,0x1EA8},
    {0xC4,0x304,0x1DE}, {0xC5,0x301,0x1FA}, {0xC6,0x301,0x1FC}, {0xC6,0x304,0x1E2},
    {0xC7,0x301,0x1E08}, {0xCA,0x300,0x1EC0}, {0xCA,0x301,0x1EBE}, {0xCA,0x303,0x1EC4},
    {0xCA,0x309,0x1EC2}, {0xCF,0x301,0x1E2E}, {0xD4,0x300,0x1ED2}, {0xD4,0x301,0x1ED0},
    {0xD4,0x303,0x1ED6}, {0xD4,0x309,0x1ED4}, {0xD5,0x301,0x1E4C}, {0xD5,0x304,0x22C},
    {0xD5,0x308,0x1E4E}, {0xD6,0x304,0x22A}, {0xD8,0x301,0x1FE}, {0xDC,0x300,0x1DB},
    {0xDC,0x301,0x1D7}, {0xDC,0x304,0x1D5}, {0xDC,0x30C,0x1D9}, {0xE2,0x300,0x1EA7},
    {0xE2,0x301,0x1EA5}, {0xE2,0x303,0x1EAB}, {0xE2,0x309,0x1EA9}, {0xE4,0x304,0x1DF},
    {0xE5,0x301,0x1FB}, {0xE6,0x301,0x1FD}, {0xE6,0x304,0x1E3}, {0xE7,0x301,0x1E09},
    {0xEA,0x300,0x1EC1}, {0xEA,0x301,0x1EBF}, {0xEA,0x303,0x1EC5}, {0xEA,0x309,0x1EC3},
    {0xEF,0x301,0x1E2F}, {0xF4,0x300,0x1ED3}, {0xF4,0x301,0x1ED1}, {0xF4,0x303,0x1ED7},
    {0xF4,0x309,0x1ED5}, {0xF5,0x301,0x1E4D}, {0xF5,0x304,0x22D}, {0xF5,0x308,0x1E4F},
    {0xF6,0x304,0x22B}, {0xF8,0x301,0x1FF}, {0xFC,0x300,0x1DC}, {0xFC,0x301,0x1D8},
    {0xFC,0x304,0x1D6}, {0xFC,0x30C,0x1DA}, {0x102,0x300,0x1EB0}, {0x102,0x301,0x1EAE},
    {0x102,0x303,0x1EB4}, {0x102,0x309,0x1EB2}, {0x103,0x300,0x1EB1}, {0x103,0x301,0x1EAF},
    {0x103,0x303,0x1EB5}, {0x103,0x309,0x1EB3}, {0x112,0x300,0x1E14}, {0x112,0x301,0x1E16},
    {0x113,0x300,0x1E15}, {0x113,0x301,0x1E17}, {0x14C,0x300,0x1E50}, {0x14C,0x301,0x1E52},
    {0x14D,0x300,0x1E51}, {0x14D,0x301,0x1E53}, {0x15A,0x307,0x1E64}, {0x15B,0x307,0x1E65},
    {0x160,0x307,0x1E66}, {0x161,0x307,0x1E67}, {0x168,0x301,0x1E78}, {0x169,0x301,0x1E79},
    {0x16A,0x308,0x1E7A}, {0x16B,0x308,0x1E7B}, {0x17F,0x307,0x1E9B}, {0x1A0,0x300,0x1EDC},
    {0x1A0,0x301,0x1EDA}, {0x1A0,0x303,0x1EE0}, {0x1A0,0x309,0x1EDE}, {0x1A0,0x323,0x1EE2},
    {0x1A1,0x300,0x1EDD}, {0x1A1,0x301,0x1EDB}, {0x1A1,0x303,0x1EE1}, {0x1A1,0x309,0x1EDF},
    {0x1A1,0x323,0x1EE3}, {0x1AF,0x300,0x1EEA}, {0x1AF,0x301,0x1EE8}, {0x1AF,0x303,0x1EEE},
    {0x1AF,0x309,0x1EEC}, {0x1AF,0x323,0x1EF0}, {0x1B0,0x300,0x1EEB}, {0x1B0,0x301,0x1EE9},
    {0x1B0,0x303,0x1EEF}, {0x1B0,0x309,0x1EED}, {0x1B0,0x323,0x1EF1}, {0x1B7,0x30C,0x1EE},
    {0x1EA,0x304,0x1EC}, {0x1EB,0x304,0x1ED}, {0x226,0x304,0x1E0}, {0x227,0x304,0x1E1},
    {0x228,0x306,0x1E1C}, {0x229,0x306,0x1E1D}, {0x22E,0x304,0x230}, {0x22F,0x304,0x231},
    {0x292,0x30C,0x1EF}, {0x391,0x300,0x1FBA}, {0x391,0x301,0x386}, {0x391,0x304,0x1FB9},
    {0x391,0x306,0x1FB8}, {0x391,0x313,0x1F08}, {0x391,0x314,0x1F09}, {0x391,0x345,0x1FBC},
    {0x395,0x300,0x1FC8}, {0x395,0x301,0x388}, {0x395,0x313,0x1F18}, {0x395,0x314,0x1F19},
    {0x397,0x300,0x1FCA}, {0x397,0x301,0x389}, {0x397,0x313,0x1F28}, {0x397,0x314,0x1F29},
    {0x397,0x345,0x1FCC}, {0x399,0x300,0x1FDA}, {0x399,0x301,0x38A}, {0x399,0x304,0x1FD9},
    {0x399,0x306,0x1FD8}, {0x399,0x308,0x3AA}, {0x399,0x313,0x1F38}, {0x399,0x314,0x1F39},
    {0x39F,0x300,0x1FF8}, {0x39F,0x301,0x38C}, {0x39F,0x313,0x1F48}, {0x39F,0x314,0x1F49},
    {0x3A1,0x314,0x1FEC}, {0x3A5,0x300,0x1FEA}, {0x3A5,0x301,0x38E}, {0x3A5,0x304,0x1FE9},
    {0x3A5,0x306,0x1FE8}, {0x3A5,0x308,0x3AB}, {0x3A5,0x314,0x1F59}, {0x3A9,0x300,0x1FFA},
    {0x3A9,0x301,0x38F}, {0x3A9,0x313,0x1F68}, {0x3A9,0x314,0x1F69}, {0x3A9,0x345,0x1FFC},
    {0x3AC,0x345,0x1FB4}, {0x3AE,0x345,0x1FC4}, {0x3B1,0x300,0x1F70}, {0x3B1,0x301,0x3AC},
    {0x3B1,0x304,0x1FB1}, {0x3B1,0x306,0x1FB0}, {0x3B1,0x313,0x1F00}, {0x3B1,0x314,0x1F01},
    {0x3B1,0x342,0x1FB6}, {0x3B1,0x345,0x1FB3}, {0x3B5,0x300,0x1F72}, {0x3B5,0x301,0x3AD},
    {0x3B5,0x313,0x1F10}, {0x3B5,0x314,0x1F11}, {0x3B7,0x300,0x1F74}, {0x3B7,0x301,0x3AE},
    {0x3B7,0x313,0x1F20}, {0x3B7,0x314,0x1F21}, {0x3B7,0x342,0x1FC6}, {0x3B7,0x345,0x1FC3},
    {0x3B9,0x300,0x1F76}, {0x3B9,0x301,0x3AF}, {0x3B9,0x304,0x1FD1}, {0x3B9,0x306,0x1FD0},
    {0x3B9,0x308,0x3CA}, {0x3B9,0x313,0x1F30}, {0x3B9,0x314,0x1F31}, {0x3B9,0x342,0x1FD6},
    {0x3BF,0x300,0x1F78}, {0x3BF,0x301,0x3CC}, {0x3BF,0x313,0x1F40}, {0x3BF,0x314,0x1F41},
    {0x3C1,0x313,0x1FE4}, {0x3C1,0x314,0x1FE5}, {0x3C5,0x300,0x1F7A}, {0x3C5,0x301,0x3CD},
    {0x3C5,0x304,0x1FE1}, {0x3C5,0x306,0x1FE0}, {0x3C5,0x308,0x3CB}, {0x3C5,0x313,0x1F50},
    {0x3C5,0x314,0x1F51}, {0x3C5,0x342,0x1FE6}, {0x3C9,0x300,0x1F7C}, {0x3C9,0x301,0x3CE},
    {0x3C9,0x313,0x1F60}, {0x3C9,0x314,0x1F61}, {0x3C9,0x342,0x1FF6}, {0x3C9,0x345,0x1FF3},
    {0x3CA,0x300,0x1FD2}, {0x3CA,0x301,0x390}, {0x3CA,0x342,0x1FD7}, {0x3CB,0x300,0x1FE2},
    {0x3CB,0x301,0x3B0}, {0x3CB,0x342,0x1FE7}, {0x3CE,0x345,0x1FF4}, {0x3D2,0x301,0x3D3},
    {0x3D2,0x308,0x3D4}, {0x406,0x308,0x407}, {0x410,0x306,0x4D0}, {0x410,0x308,0x4D2},
    {0x413,0x301,0x403}, {0x415,0x300,0x400}, {0x415,0x306,0x4D6}, {0x415,0x308,0x401},
    {0x416,0x306,0x4C1}, {0x416,0x308,0x4DC}, {0x417,0x308,0x4DE}, {0x418,0x300,0x40D},
    {0x418,0x304,0x4E2}, {0x418,0x306,0x419}, {0x418,0x308,0x4E4}, {0x41A,0x301,0x40C},
    {0x41E,0x308,0x4E6}, {0x423,0x304,0x4EE}, {0x423,0x306,0x40E}, {0x423,0x308,0x4F0},
    {0x423,0x30B,0x4F2}, {0x427,0x308,0x4F4}, {0x42B,0x308,0x4F8}, {0x42D,0x308,0x4EC},
    {0x430,0x306,0x4D1}, {0x430,0x308,0x4D3}, {0x433,0x301,0x453}, {0x435,0x300,0x450},
    {0x435,0x306,0x4D7}, {0x435,0x308,0x451}, {0x436,0x306,0x4C2}, {0x436,0x308,0x4DD},
    {0x437,0x308,0x4DF}, {0x438,0x300,0x45D}, {0x438,0x304,0x4E3}, {0x438,0x306,0x439},
    {0x438,0x308,0x4E5}, {0x43A,0x301,0x45C}, {0x43E,0x308,0x4E7}, {0x443,0x304,0x4EF},
    {0x443,0x306,0x45E}, {0x443,0x308,0x4F1}, {0x443,0x30B,0x4F3}, {0x447,0x308,0x4F5},
    {0x44B,0x308,0x4F9}, {0x44D,0x308,0x4ED}, {0x456,0x308,0x457}, {0x474,0x30F,0x476},
    {0x475,0x30F,0x477}, {0x4D8,0x308,0x4DA}, {0x4D9,0x308,0x4DB}, {0x4E8,0x308,0x4EA},
    {0x4E9,0x308,0x4EB}, {0x627,0x653,0x622}, {0x627,0x654,0x623}, {0x627,0x655,0x625},
    {0x648,0x654,0x624}, {0x64A,0x654,0x626}, {0x6C1,0x654,0x6C2}, {0x6D2,0x654,0x6D3},
    {0x6D5,0x654,0x6C0}, {0x928,0x93C,0x929}, {0x930,0x93C,0x931}, {0x933,0x93C,0x934},
    {0x9C7,0x9BE,0x9CB}, {0x9C7,0x9D7,0x9CC}, {0xB47,0xB3E,0xB4B}, {0xB47,0xB56,0xB48},
    {0xB47,0xB57,0xB4C}, {0xB92,0xBD7,0xB94}, {0xBC6,0xBBE,0xBCA}, {0xBC6,0xBD7,0xBCC},
    {0xBC7,0xBBE,0xBCB}, {0xC46,0xC56,0xC48}, {0xCBF,0xCD5,0xCC0}, {0xCC6,0xCC2,0xCCA},
    {0xCC6,0xCD5,0xCC7}, {0xCC6,0xCD6,0xCC8}, {0xCCA,0xCD5,0xCCB}, {0xD46,0xD3E,0xD4A},
    {0xD46,0xD57,0xD4C}, {0xD47,0xD3E,0xD4B}, {0xDD9,0xDCA,0xDDA}, {0xDD9,0xDCF,0xDDC},
    {0xDD9,0xDDF,0xDDE}, {0xDDC,0xDCA,0xDDD}, {0x1025,0x102E,0x1026}, {0x1B05,0x1B35,0x1B06},
    {0x1B07,0x1B35,0x1B08}, {0x1B09,0x1B35,0x1B0A}, {0x1B0B,0x1B35,0x1B0C}, {0x1B0D,0x1B35,0x1B0E},
    {0x1B11,0x1B35,0x1B12}, {0x1B3A,0x1B35,0x1B3B}, {0x1B3C,0x1B35,0x1B3D}, {0x1B3E,0x1B35,0x1B40},
    {0x1B3F,0x1B35,0x1B41}, {0x1B42,0x1B35,0x1B43}, {0x1E36,0x304,0x1E38}, {0x1E37,0x304,0x1E39},
    {0x1E5A,0x304,0x1E5C}, {0x1E5B,0x304,0x1E5D}, {0x1E62,0x307,0x1E68}, {0x1E63,0x307,0x1E69},
    {0x1EA0,0x302,0x1EAC}, {0x1EA0,0x306,0x1EB6}, {0x1EA1,0x302,0x1EAD}, {0x1EA1,0x306,0x1EB7},
    {0x1EB8,0x302,0x1EC6}, {0x1EB9,0x302,0x1EC7}, {0x1ECC,0x302,0x1ED8}, {0x1ECD,0x302,0x1ED9},
    {0x1F00,0x300,0x1F02}, {0x1F00,0x301,0x1F04}, {0x1F00,0x342,0x1F06}, {0x1F00,0x345,0x1F80},
    {0x1F01,0x300,0x1F03}, {0x1F01,0x301,0x1F05}, {0x1F01,0x342,0x1F07}, {0x1F01,0x345,0x1F81},
    {0x1F02,0x345,0x1F82}, {0x1F03,0x345,0x1F83}, {0x1F04,0x345,0x1F84}, {0x1F05,0x345,0x1F85},
    {0x1F06,0x345,0x1F86}, {0x1F07,0x345,0x1F87}, {0x1F08,0x300,0x1F0A}, {0x1F08,0x301,0x1F0C},
    {0x1F08,0x342,0x1F0E}, {0x1F08,0x345,0x1F88}, {0x1F09,0x300,0x1F0B}, {0x1F09,0x301,0x1F0D},
    {0x1F09,0x342,0x1F0F}, {0x1F09,0x345,0x1F89}, {0x1F0A,0x345,0x1F8A}, {0x1F0B,0x345,0x1F8B},
    {0x1F0C,0x345,0x1F8C}, {0x1F0D,0x345,0x1F8D}, {0x1F0E,0x345,0x1F8E}, {0x1F0F,0x345,0x1F8F},
    {0x1F10,0x300,0x1F12}, {0x1F10,0x301,0x1F14}, {0x1F11,0x300,0x1F13}, {0x1F11,0x301,0x1F15},
    {0x1F18,0x300,0x1F1A}, {0x1F18,0x301,0x1F1C}, {0x1F19,0x300,0x1F1B}, {0x1F19,0x301,0x1F1D},
    {0x1F20,0x300,0x1F22}, {0x1F20,0x301,0x1F24}, {0x1F20,0x342,0x1F26}, {0x1F20,0x345,0x1F90},
    {0x1F21,0x300,0x1F23}, {0x1F21,0x301,0x1F25}, {0x1F21,0x342,0x1F27}, {0x1F21,0x345,0x1F91},
    {0x1F22,0x345,0x1F92}, {0x1F23,0x345,0x1F93}, {0x1F24,0x345,0x1F94}, {0x1F25,0x345,0x1F95},
    {0x1F26,0x345,0x1F96}, {0x1F27,0x345,0x1F97}, {0x1F28,0x300,0x1F2A}, {0x1F28,0x301,0x1F2C},
    {0x1F28,0x342,0x1F2E}, {0x1F28,0x345,0x1F98}, {0x1F29,0x300,0x1F2B}, {0x1F29,0x301,0x1F2D},
    {0x1F29,0x342,0x1F2F}, {0x1F29,0x345,0x1F99}, {0x1F2A,0x345,0x1F9A}, {0x1F2B,0x345,0x1F9B},
    {0x1F2C,0x345,0x1F9C}, {0x1F2D,0x345,0x1F9D}, {0x1F2E,0x345,0x1F9E}, {0x1F2F,0x345,0x1F9F},
    {0x1F30,0x300,0x1F32}, {0x1F30,0x301,0x1F34}, {0x1F30,0x342,0x1F36}, {0x1F31,0x300,0x1F33},
    {0x1F31,0x301,0x1F35}, {0x1F31,0x342,0x1F37}, {0x1F38,0x300,0x1F3A}, {0x1F38,0x301,0x1F3C},
    {0x1F38,0x342,0x1F3E}, {0x1F39,0x300,0x1F3B}, {0x1F39,0x301,0x1F3D}, {0x1F39,0x342,0x1F3F},
    {0x1F40,0x300,0x1F42}, {0x1F40,0x301,0x1F44}, {0x1F41,0x300,0x1F43}, {0x1F41,0x301,0x1F45},
    {0x1F48,0x300,0x1F4A}, {0x1F48,0x301,0x1F4C}, {0x1F49,0x300,0x1F4B}, {0x1F49,0x301,0x1F4D},
    {0x1F50,0x300,0x1F52}, {0x1F50,0x301,0x1F54}, {0x1F50,0x342,0x1F56}, {0x1F51,0x300,0x1F53},
    {0x1F51,0x301,0x1F55}, {0x1F51,0x342,0x1F57}, {0x1F59,0x300,0x1F5B}, {0x1F59,0x301,0x1F5D},
    {0x1F59,0x342,0x1F5F}, {0x1F60,0x300,0x1F62}, {0x1F60,0x301,0x1F64}, {0x1F60,0x342,0x1F66},
    {0x1F60,0x345,0x1FA0}, {0x1F61,0x300,0x1F63}, {0x1F61,0x301,0x1F65}, {0x1F61,0x342,0x1F67},
    {0x1F61,0x345,0x1FA1}, {0x1F62,0x345,0x1FA2}, {0x1F63,0x345,0x1FA3}, {0x1F64,0x345,0x1FA4},
    {0x1F65,0x345,0x1FA5}, {0x1F66,0x345,0x1FA6}, {0x1F67,0x345,0x1FA7}, {0x1F68,0x300,0x1F6A},
    {0x1F68,0x301,0x1F6C}, {0x1F68,0x342,0x1F6E}, {0x1F68,0x345,0x1FA8}, {0x1F69,0x300,0x1F6B},
    {0x1F69,0x301,0x1F6D}, {0x1F69,0x342,0x1F6F}, {0x1F69,0x345,0x1FA9}, {0x1F6A,0x345,0x1FAA},
    {0x1F6B,0x345,0x1FAB}, {0x1F6C,0x345,0x1FAC}, {0x1F6D,0x345,0x1FAD}, {0x1F6E,0x345,0x1FAE},
    {0x1F6F,0x345,0x1FAF}, {0x1F70,0x345,0x1FB2}, {0x1F74,0x345,0x1FC2}, {0x1F7C,0x345,0x1FF2},
    {0x1FB6,0x345,0x1FB7}, {0x1FBF,0x300,0x1FCD}, {0x1FBF,0x301,0x1FCE}, {0x1FBF,0x342,0x1FCF},
    {0x1FC6,0x345,0x1FC7}, {0x1FF6,0x345,0x1FF7}, {0x1FFE,0x300,0x1FDD}, {0x1FFE,0x301,0x1FDE},
    {0x1FFE,0x342,0x1FDF}, {0x2190,0x338,0x219A}, {0x2192,0x338,0x219B}, {0x2194,0x338,0x21AE},
    {0x21D0,0x338,0x21CD}, {0x21D2,0x338,0x21CF}, {0x21D4,0x338,0x21CE}, {0x2203,0x338,0x2204},
    {0x2208,0x338,0x2209}, {0x220B,0x338,0x220C}, {0x2223,0x338,0x2224}, {0x2225,0x338,0x2226},
    {0x223C,0x338,0x2241}, {0x2243,0x338,0x2244}, {0x2245,0x338,0x2247}, {0x2248,0x338,0x2249},
    {0x224D,0x338,0x226D}, {0x2261,0x338,0x2262}, {0x2264,0x338,0x2270}, {0x2265,0x338,0x2271},
    {0x2272,0x338,0x2274}, {0x2273,0x338,0x2275}, {0x2276,0x338,0x2278}, {0x2277,0x338,0x2279},
    {0x227A,0x338,0x2280}, {0x227B,0x338,0x2281}, {0x227C,0x338,0x22E0}, {0x227D,0x338,0x22E1},
    {0x2282,0x338,0x2284}, {0x2283,0x338,0x2285}, {0x2286,0x338,0x2288}, {0x2287,0x338,0x2289},
    {0x2291,0x338,0x22E2}, {0x2292,0x338,0x22E3}, {0x22A2,0x338,0x22AC}, {0x22A8,0x338,0x22AD},
    {0x22A9,0x338,0x22AE}, {0x22AB,0x338,0x22AF}, {0x22B2,0x338,0x22EA}, {0x22B3,0x338,0x22EB},
    {0x22B4,0x338,0x22EC}, {0x22B5,0x338,0x22ED}, {0x3046,0x3099,0x3094}, {0x304B,0x3099,0x304C},
    {0x304D,0x3099,0x304E}, {0x304F,0x3099,0x3050}, {0x3051,0x3099,0x3052}, {0x3053,0x3099,0x3054},
    {0x3055,0x3099,0x3056}, {0x3057,0x3099,0x3058}, {0x3059,0x3099,0x305A}, {0x305B,0x3099,0x305C},
    {0x305D,0x3099,0x305E}, {0x305F,0x3099,0x3060}, {0x3061,0x3099,0x3062}, {0x3064,0x3099,0x3065},
    {0x3066,0x3099,0x3067}, {0x3068,0x3099,0x3069}, {0x306F,0x3099,0x3070}, {0x306F,0x309A,0x3071},
    {0x3072,0x3099,0x3073}, {0x3072,0x309A,0x3074}, {0x3075,0x3099,0x3076}, {0x3075,0x309A,0x3077},
    {0x3078,0x3099,0x3079}, {0x3078,0x309A,0x307A}, {0x307B,0x3099,0x307C}, {0x307B,0x309A,0x307D},
    {0x309D,0x3099,0x309E}, {0x30A6,0x3099,0x30F4}, {0x30AB,0x3099,0x30AC}, {0x30AD,0x3099,0x30AE},
    {0x30AF,0x3099,0x30B0}, {0x30B1,0x3099,0x30B2}, {0x30B3,0x3099,0x30B4}, {0x30B5,0x3099,0x30B6},
    {0x30B7,0x3099,0x30B8}, {0x30B9,0x3099,0x30BA}, {0x30BB,0x3099,0x30BC}, {0x30BD,0x3099,0x30BE},
    {0x30BF,0x3099,0x30C0}, {0x30C1,0x3099,0x30C2}, {0x30C4,0x3099,0x30C5}, {0x30C6,0x3099,0x30C7},
    {0x30C8,0x3099,0x30C9}, {0x30CF,0x3099,0x30D0}, {0x30CF,0x309A,0x30D1}, {0x30D2,0x3099,0x30D3},
    {0x30D2,0x309A,0x30D4}, {0x30D5,0x3099,0x30D6}, {0x30D5,0x309A,0x30D7}, {0x30D8,0x3099,0x30D9},
    {0x30D8,0x309A,0x30DA}, {0x30DB,0x3099,0x30DC}, {0x30DB,0x309A,0x30DD}, {0x30EF,0x3099,0x30F7},
    {0x30F0,0x3099,0x30F8}, {0x30F1,0x3099,0x30F9}, {0x30F2,0x3099,0x30FA}, {0x30FD,0x3099,0x30FE},
    {0x11099,0x110BA,0x1109A}, {0x1109B,0x110BA,0x1109C}, {0x110A5,0x110BA,0x110AB}, {0x11131,0x11127,0x1112E},
    {0x11132,0x11127,0x1112F}, {0x11347,0x1133E,0x1134B}, {0x11347,0x11357,0x1134C}, {0x114B9,0x114B0,0x114BC},
    {0x114B9,0x114BA,0x114BB}, {0x114B9,0x114BD,0x114BE}, {0x115B8,0x115AF,0x115BA}, {0x115B9,0x115AF,0x115BB},
};

/* The regex class \w of the reference's regex engine (Oniguruma), as ranges. */
static const uint32_t uni_word_ranges[][2] = {
    {0x30,0x39}, {0x41,0x5A}, {0x5F,0x5F}, {0x61,0x7A}, {0xAA,0xAA}, {0xB5,0xB5},
    {0xBA,0xBA}, {0xC0,0xD6}, {0xD8,0xF6}, {0xF8,0x2C1}, {0x2C6,0x2D1}, {0x2E0,0x2E4},
    {0x2EC,0x2EC}, {0x2EE,0x2EE}, {0x300,0x374}, {0x376,0x377}, {0x37A,0x37D}, {0x37F,0x37F},
    {0x386,0x386}, {0x388,0x38A}, {0x38C,0x38C}, {0x38E,0x3A1}, {0x3A3,0x3F5}, {0x3F7,0x481},
    {0x483,0x52F}, {0x531,0x556}, {0x559,0x559}, {0x560,0x588}, {0x591,0x5BD}, {0x5BF,0x5BF},
    {0x5C1,0x5C2}, {0x5C4,0x5C5}, {0x5C7,0x5C7}, {0x5D0,0x5EA}, {0x5EF,0x5F2}, {0x610,0x61A},
    {0x620,0x669}, {0x66E,0x6D3}, {0x6D5,0x6DC}, {0x6DF,0x6E8}, {0x6EA,0x6FC}, {0x6FF,0x6FF},
    {0x710,0x74A}, {0x74D,0x7B1}, {0x7C0,0x7F5}, {0x7FA,0x7FA}, {0x7FD,0x7FD}, {0x800,0x82D},
    {0x840,0x85B}, {0x860,0x86A}, {0x870,0x887}, {0x889,0x88E}, {0x897,0x8E1}, {0x8E3,0x963},
    {0x966,0x96F}, {0x971,0x983}, {0x985,0x98C}, {0x98F,0x990}, {0x993,0x9A8}, {0x9AA,0x9B0},
    {0x9B2,0x9B2}, {0x9B6,0x9B9}, {0x9BC,0x9C4}, {0x9C7,0x9C8}, {0x9CB,0x9CE}, {0x9D7,0x9D7},
    {0x9DC,0x9DD}, {0x9DF,0x9E3}, {0x9E6,0x9F1}, {0x9FC,0x9FC}, {0x9FE,0x9FE}, {0xA01,0xA03},
    {0xA05,0xA0A}, {0xA0F,0xA10}, {0xA13,0xA28}, {0xA2A,0xA30}, {0xA32,0xA33}, {0xA35,0xA36},
    {0xA38,0xA39}, {0xA3C,0xA3C}, {0xA3E,0xA42}, {0xA47,0xA48}, {0xA4B,0xA4D}, {0xA51,0xA51},
    {0xA59,0xA5C}, {0xA5E,0xA5E}, {0xA66,0xA75}, {0xA81,0xA83}, {0xA85,0xA8D}, {0xA8F,0xA91},
    {0xA93,0xAA8}, {0xAAA,0xAB0}, {0xAB2,0xAB3}, {0xAB5,0xAB9}, {0xABC,0xAC5}, {0xAC7,0xAC9},
    {0xACB,0xACD}, {0xAD0,0xAD0}, {0xAE0,0xAE3}, {0xAE6,0xAEF}, {0xAF9,0xAFF}, {0xB01,0xB03},
    {0xB05,0xB0C}, {0xB0F,0xB10}, {0xB13,0xB28}, {0xB2A,0xB30}, {0xB32,0xB33}, {0xB35,0xB39},
    {0xB3C,0xB44}, {0xB47,0xB48}, {0xB4B,0xB4D}, {0xB55,0xB57}, {0xB5C,0xB5D}, {0xB5F,0xB63},
    {0xB66,0xB6F}, {0xB71,0xB71}, {0xB82,0xB83}, {0xB85,0xB8A}, {0xB8E,0xB90}, {0xB92,0xB95},
    {0xB99,0xB9A}, {0xB9C,0xB9C}, {0xB9E,0xB9F}, {0xBA3,0xBA4}, {0xBA8,0xBAA}, {0xBAE,0xBB9},
    {0xBBE,0xBC2}, {0xBC6,0xBC8}, {0xBCA,0xBCD}, {0xBD0,0xBD0}, {0xBD7,0xBD7}, {0xBE6,0xBEF},
    {0xC00,0xC0C}, {0xC0E,0xC10}, {0xC12,0xC28}, {0xC2A,0xC39}, {0xC3C,0xC44}, {0xC46,0xC48},
    {0xC4A,0xC4D}, {0xC55,0xC56}, {0xC58,0xC5A}, {0xC5D,0xC5D}, {0xC60,0xC63}, {0xC66,0xC6F},
    {0xC80,0xC83}, {0xC85,0xC8C}, {0xC8E,0xC90}, {0xC92,0xCA8}, {0xCAA,0xCB3}, {0xCB5,0xCB9},
    {0xCBC,0xCC4}, {0xCC6,0xCC8}, {0xCCA,0xCCD}, {0xCD5,0xCD6}, {0xCDD,0xCDE}, {0xCE0,0xCE3},
    {0xCE6,0xCEF}, {0xCF1,0xCF3}, {0xD00,0xD0C}, {0xD0E,0xD10}, {0xD12,0xD44}, {0xD46,0xD48},
    {0xD4A,0xD4E}, {0xD54,0xD57}, {0xD5F,0xD63}, {0xD66,0xD6F}, {0xD7A,0xD7F}, {0xD81,0xD83},
    {0xD85,0xD96}, {0xD9A,0xDB1}, {0xDB3,0xDBB}, {0xDBD,0xDBD}, {0xDC0,0xDC6}, {0xDCA,0xDCA},
    {0xDCF,0xDD4}, {0xDD6,0xDD6}, {0xDD8,0xDDF}, {0xDE6,0xDEF}, {0xDF2,0xDF3}, {0xE01,0xE3A},
    {0xE40,0xE4E}, {0xE50,0xE59}, {0xE81,0xE82}, {0xE84,0xE84}, {0xE86,0xE8A}, {0xE8C,0xEA3},
    {0xEA5,0xEA5}, {0xEA7,0xEBD}, {0xEC0,0xEC4}, {0xEC6,0xEC6}, {0xEC8,0xECE}, {0xED0,0xED9},
    {0xEDC,0xEDF}, {0xF00,0xF00}, {0xF18,0xF19}, {0xF20,0xF29}, {0xF35,0xF35}, {0xF37,0xF37},
    {0xF39,0xF39}, {0xF3E,0xF47}, {0xF49,0xF6C}, {0xF71,0xF84}, {0xF86,0xF97}, {0xF99,0xFBC},
    {0xFC6,0xFC6}, {0x1000,0x1049}, {0x1050,0x109D}, {0x10A0,0x10C5}, {0x10C7,0x10C7}, {0x10CD,0x10CD},
    {0x10D0,0x10FA}, {0x10FC,0x1248}, {0x124A,0x124D}, {0x1250,0x1256}, {0x1258,0x1258}, {0x125A,0x125D},
    {0x1260,0x1288}, {0x128A,0x128D}, {0x1290,0x12B0}, {0x12B2,0x12B5}, {0x12B8,0x12BE}, {0x12C0,0x12C0},
    {0x12C2,0x12C5}, {0x12C8,0x12D6}, {0x12D8,0x1310}, {0x1312,0x1315}, {0x1318,0x135A}, {0x135D,0x135F},
    {0x1380,0x138F}, {0x13A0,0x13F5}, {0x13F8,0x13FD}, {0x1401,0x166C}, {0x166F,0x167F}, {0x1681,0x169A},
    {0x16A0,0x16EA}, {0x16EE,0x16F8}, {0x1700,0x1715}, {0x171F,0x1734}, {0x1740,0x1753}, {0x1760,0x176C},
    {0x176E,0x1770}, {0x1772,0x1773}, {0x1780,0x17D3}, {0x17D7,0x17D7}, {0x17DC,0x17DD}, {0x17E0,0x17E9},
    {0x180B,0x180D}, {0x180F,0x1819}, {0x1820,0x1878}, {0x1880,0x18AA}, {0x18B0,0x18F5}, {0x1900,0x191E},
    {0x1920,0x192B}, {0x1930,0x193B}, {0x1946,0x196D}, {0x1970,0x1974}, {0x1980,0x19AB}, {0x19B0,0x19C9},
    {0x19D0,0x19D9}, {0x1A00,0x1A1B}, {0x1A20,0x1A5E}, {0x1A60,0x1A7C}, {0x1A7F,0x1A89}, {0x1A90,0x1A99},
    {0x1AA7,0x1AA7}, {0x1AB0,0x1ACE}, {0x1B00,0x1B4C}, {0x1B50,0x1B59}, {0x1B6B,0x1B73}, {0x1B80,0x1BF3},
    {0x1C00,0x1C37}, {0x1C40,0x1C49}, {0x1C4D,0x1C7D}, {0x1C80,0x1C8A}, {0x1C90,0x1CBA}, {0x1CBD,0x1CBF},
    {0x1CD0,0x1CD2}, {0x1CD4,0x1CFA}, {0x1D00,0x1F15}, {0x1F18,0x1F1D}, {0x1F20,0x1F45}, {0x1F48,0x1F4D},
    {0x1F50,0x1F57}, {0x1F59,0x1F59}, {0x1F5B,0x1F5B}, {0x1F5D,0x1F5D}, {0x1F5F,0x1F7D}, {0x1F80,0x1FB4},
    {0x1FB6,0x1FBC}, {0x1FBE,0x1FBE}, {0x1FC2,0x1FC4}, {0x1FC6,0x1FCC}, {0x1FD0,0x1FD3}, {0x1FD6,0x1FDB},
    {0x1FE0,0x1FEC}, {0x1FF2,0x1FF4}, {0x1FF6,0x1FFC}, {0x203F,0x2040}, {0x2054,0x2054}, {0x2071,0x2071},
    {0x207F,0x207F}, {0x2090,0x209C}, {0x20D0,0x20F0}, {0x2102,0x2102}, {0x2107,0x2107}, {0x210A,0x2113},
    {0x2115,0x2115}, {0x2119,0x211D}, {0x2124,0x2124}, {0x2126,0x2126}, {0x2128,0x2128}, {0x212A,0x212D},
    {0x212F,0x2139}, {0x213C,0x213F}, {0x2145,0x2149}, {0x214E,0x214E}, {0x2160,0x2188}, {0x24B6,0x24E9},
    {0x2C00,0x2CE4}, {0x2CEB,0x2CF3}, {0x2D00,0x2D25}, {0x2D27,0x2D27}, {0x2D2D,0x2D2D}, {0x2D30,0x2D67},
    {0x2D6F,0x2D6F}, {0x2D7F,0x2D96}, {0x2DA0,0x2DA6}, {0x2DA8,0x2DAE}, {0x2DB0,0x2DB6}, {0x2DB8,0x2DBE},
    {0x2DC0,0x2DC6}, {0x2DC8,0x2DCE}, {0x2DD0,0x2DD6}, {0x2DD8,0x2DDE}, {0x2DE0,0x2DFF}, {0x2E2F,0x2E2F},
    {0x3005,0x3007}, {0x3021,0x302F}, {0x3031,0x3035}, {0x3038,0x303C}, {0x3041,0x3096}, {0x3099,0x309A},
    {0x309D,0x309F}, {0x30A1,0x30FA}, {0x30FC,0x30FF}, {0x3105,0x312F}, {0x3131,0x318E}, {0x31A0,0x31BF},
    {0x31F0,0x31FF}, {0x3400,0x4DBF}, {0x4E00,0xA48C}, {0xA4D0,0xA4FD}, {0xA500,0xA60C}, {0xA610,0xA62B},
    {0xA640,0xA672}, {0xA674,0xA67D}, {0xA67F,0xA6F1}, {0xA717,0xA71F}, {0xA722,0xA788}, {0xA78B,0xA7CD},
    {0xA7D0,0xA7D1}, {0xA7D3,0xA7D3}, {0xA7D5,0xA7DC}, {0xA7F2,0xA827}, {0xA82C,0xA82C}, {0xA840,0xA873},
    {0xA880,0xA8C5}, {0xA8D0,0xA8D9}, {0xA8E0,0xA8F7}, {0xA8FB,0xA8FB}, {0xA8FD,0xA92D}, {0xA930,0xA953},
    {0xA960,0xA97C}, {0xA980,0xA9C0}, {0xA9CF,0xA9D9}, {0xA9E0,0xA9FE}, {0xAA00,0xAA36}, {0xAA40,0xAA4D},
    {0xAA50,0xAA59}, {0xAA60,0xAA76}, {0xAA7A,0xAAC2}, {0xAADB,0xAADD}, {0xAAE0,0xAAEF}, {0xAAF2,0xAAF6},
    {0xAB01,0xAB06}, {0xAB09,0xAB0E}, {0xAB11,0xAB16}, {0xAB20,0xAB26}, {0xAB28,0xAB2E}, {0xAB30,0xAB5A},
    {0xAB5C,0xAB69}, {0xAB70,0xABEA}, {0xABEC,0xABED}, {0xABF0,0xABF9}, {0xAC00,0xD7A3}, {0xD7B0,0xD7C6},
    {0xD7CB,0xD7FB}, {0xF900,0xFA6D}, {0xFA70,0xFAD9}, {0xFB00,0xFB06}, {0xFB13,0xFB17}, {0xFB1D,0xFB28},
    {0xFB2A,0xFB36}, {0xFB38,0xFB3C}, {0xFB3E,0xFB3E}, {0xFB40,0xFB41}, {0xFB43,0xFB44}, {0xFB46,0xFBB1},
    {0xFBD3,0xFD3D}, {0xFD50,0xFD8F}, {0xFD92,0xFDC7}, {0xFDF0,0xFDFB}, {0xFE00,0xFE0F}, {0xFE20,0xFE2F},
    {0xFE33,0xFE34}, {0xFE4D,0xFE4F}, {0xFE70,0xFE74}, {0xFE76,0xFEFC}, {0xFF10,0xFF19}, {0xFF21,0xFF3A},
    {0xFF3F,0xFF3F}, {0xFF41,0xFF5A}, {0xFF66,0xFFBE}, {0xFFC2,0xFFC7}, {0xFFCA,0xFFCF}, {0xFFD2,0xFFD7},
    {0xFFDA,0xFFDC}, {0x10000,0x1000B}, {0x1000D,0x10026}, {0x10028,0x1003A}, {0x1003C,0x1003D}, {0x1003F,0x1004D},
    {0x10050,0x1005D}, {0x10080,0x100FA}, {0x10140,0x10174}, {0x101FD,0x101FD}, {0x10280,0x1029C}, {0x102A0,0x102D0},
    {0x102E0,0x102E0}, {0x10300,0x1031F}, {0x1032D,0x1034A}, {0x10350,0x1037A}, {0x10380,0x1039D}, {0x103A0,0x103C3},
    {0x103C8,0x103CF}, {0x103D1,0x103D5}, {0x10400,0x1049D}, {0x104A0,0x104A9}, {0x104B0,0x104D3}, {0x104D8,0x104FB},
    {0x10500,0x10527}, {0x10530,0x10563}, {0x10570,0x1057A}, {0x1057C,0x1058A}, {0x1058C,0x10592}, {0x10594,0x10595},
    {0x10597,0x105A1}, {0x105A3,0x105B1}, {0x105B3,0x105B9}, {0x105BB,0x105BC}, {0x105C0,0x105F3}, {0x10600,0x10736},
    {0x10740,0x10755}, {0x10760,0x10767}, {0x10780,0x10785}, {0x10787,0x107B0}, {0x107B2,0x107BA}, {0x10800,0x10805},
    {0x10808,0x10808}, {0x1080A,0x10835}, {0x10837,0x10838}, {0x1083C,0x1083C}, {0x1083F,0x10855}, {0x10860,0x10876},
    {0x10880,0x1089E}, {0x108E0,0x108F2}, {0x108F4,0x108F5}, {0x10900,0x10915}, {0x10920,0x10939}, {0x10980,0x109B7},
    {0x109BE,0x109BF}, {0x10A00,0x10A03}, {0x10A05,0x10A06}, {0x10A0C,0x10A13}, {0x10A15,0x10A17}, {0x10A19,0x10A35},
    {0x10A38,0x10A3A}, {0x10A3F,0x10A3F}, {0x10A60,0x10A7C}, {0x10A80,0x10A9C}, {0x10AC0,0x10AC7}, {0x10AC9,0x10AE6},
    {0x10B00,0x10B35}, {0x10B40,0x10B55}, {0x10B60,0x10B72}, {0x10B80,0x10B91}, {0x10C00,0x10C48}, {0x10C80,0x10CB2},
    {0x10CC0,0x10CF2}, {0x10D00,0x10D27}, {0x10D30,0x10D39}, {0x10D40,0x10D65}, {0x10D69,0x10D6D}, {0x10D6F,0x10D85},
    {0x10E80,0x10EA9}, {0x10EAB,0x10EAC}, {0x10EB0,0x10EB1}, {0x10EC2,0x10EC4}, {0x10EFC,0x10F1C}, {0x10F27,0x10F27},
    {0x10F30,0x10F50}, {0x10F70,0x10F85}, {0x10FB0,0x10FC4}, {0x10FE0,0x10FF6}, {0x11000,0x11046}, {0x11066,0x11075},
    {0x1107F,0x110BA}, {0x110C2,0x110C2}, {0x110D0,0x110E8}, {0x110F0,0x110F9}, {0x11100,0x11134}, {0x11136,0x1113F},
    {0x11144,0x11147}, {0x11150,0x11173}, {0x11176,0x11176}, {0x11180,0x111C4}, {0x111C9,0x111CC}, {0x111CE,0x111DA},
    {0x111DC,0x111DC}, {0x11200,0x11211}, {0x11213,0x11237}, {0x1123E,0x11241}, {0x11280,0x11286}, {0x11288,0x11288},
    {0x1128A,0x1128D}, {0x1128F,0x1129D}, {0x1129F,0x112A8}, {0x112B0,0x112EA}, {0x112F0,0x112F9}, {0x11300,0x11303},
    {0x11305,0x1130C}, {0x1130F,0x11310}, {0x11313,0x11328}, {0x1132A,0x11330}, {0x11332,0x11333}, {0x11335,0x11339},
    {0x1133B,0x11344}, {0x11347,0x11348}, {0x1134B,0x1134D}, {0x11350,0x11350}, {0x11357,0x11357}, {0x1135D,0x11363},
    {0x11366,0x1136C}, {0x11370,0x11374}, {0x11380,0x11389}, {0x1138B,0x1138B}, {0x1138E,0x1138E}, {0x11390,0x113B5},
    {0x113B7,0x113C0}, {0x113C2,0x113C2}, {0x113C5,0x113C5}, {0x113C7,0x113CA}, {0x113CC,0x113D3}, {0x113E1,0x113E2},
    {0x11400,0x1144A}, {0x11450,0x11459}, {0x1145E,0x11461}, {0x11480,0x114C5}, {0x114C7,0x114C7}, {0x114D0,0x114D9},
    {0x11580,0x115B5}, {0x115B8,0x115C0}, {0x115D8,0x115DD}, {0x11600,0x11640}, {0x11644,0x11644}, {0x11650,0x11659},
    {0x11680,0x116B8}, {0x116C0,0x116C9}, {0x116D0,0x116E3}, {0x11700,0x1171A}, {0x1171D,0x1172B}, {0x11730,0x11739},
    {0x11740,0x11746}, {0x11800,0x1183A}, {0x118A0,0x118E9}, {0x118FF,0x11906}, {0x11909,0x11909}, {0x1190C,0x11913},
    {0x11915,0x11916}, {0x11918,0x11935}, {0x11937,0x11938}, {0x1193B,0x11943}, {0x11950,0x11959}, {0x119A0,0x119A7},
    {0x119AA,0x119D7}, {0x119DA,0x119E1}, {0x119E3,0x119E4}, {0x11A00,0x11A3E}, {0x11A47,0x11A47}, {0x11A50,0x11A99},
    {0x11A9D,0x11A9D}, {0x11AB0,0x11AF8}, {0x11BC0,0x11BE0}, {0x11BF0,0x11BF9}, {0x11C00,0x11C08}, {0x11C0A,0x11C36},
    {0x11C38,0x11C40}, {0x11C50,0x11C59}, {0x11C72,0x11C8F}, {0x11C92,0x11CA7}, {0x11CA9,0x11CB6}, {0x11D00,0x11D06},
    {0x11D08,0x11D09}, {0x11D0B,0x11D36}, {0x11D3A,0x11D3A}, {0x11D3C,0x11D3D}, {0x11D3F,0x11D47}, {0x11D50,0x11D59},
    {0x11D60,0x11D65}, {0x11D67,0x11D68}, {0x11D6A,0x11D8E}, {0x11D90,0x11D91}, {0x11D93,0x11D98}, {0x11DA0,0x11DA9},
    {0x11EE0,0x11EF6}, {0x11F00,0x11F10}, {0x11F12,0x11F3A}, {0x11F3E,0x11F42}, {0x11F50,0x11F5A}, {0x11FB0,0x11FB0},
    {0x12000,0x12399}, {0x12400,0x1246E}, {0x12480,0x12543}, {0x12F90,0x12FF0}, {0x13000,0x1342F}, {0x13440,0x13455},
    {0x13460,0x143FA}, {0x14400,0x14646}, {0x16100,0x16139}, {0x16800,0x16A38}, {0x16A40,0x16A5E}, {0x16A60,0x16A69},
    {0x16A70,0x16ABE}, {0x16AC0,0x16AC9}, {0x16AD0,0x16AED}, {0x16AF0,0x16AF4}, {0x16B00,0x16B36}, {0x16B40,0x16B43},
    {0x16B50,0x16B59}, {0x16B63,0x16B77}, {0x16B7D,0x16B8F}, {0x16D40,0x16D6C}, {0x16D70,0x16D79}, {0x16E40,0x16E7F},
    {0x16F00,0x16F4A}, {0x16F4F,0x16F87}, {0x16F8F,0x16F9F}, {0x16FE0,0x16FE1}, {0x16FE3,0x16FE4}, {0x16FF0,0x16FF1},
    {0x17000,0x187F7}, {0x18800,0x18CD5}, {0x18CFF,0x18D08}, {0x1AFF0,0x1AFF3}, {0x1AFF5,0x1AFFB}, {0x1AFFD,0x1AFFE},
    {0x1B000,0x1B122}, {0x1B132,0x1B132}, {0x1B150,0x1B152}, {0x1B155,0x1B155}, {0x1B164,0x1B167}, {0x1B170,0x1B2FB},
    {0x1BC00,0x1BC6A}, {0x1BC70,0x1BC7C}, {0x1BC80,0x1BC88}, {0x1BC90,0x1BC99}, {0x1BC9D,0x1BC9E}, {0x1CCF0,0x1CCF9},
    {0x1CF00,0x1CF2D}, {0x1CF30,0x1CF46}, {0x1D165,0x1D169}, {0x1D16D,0x1D172}, {0x1D17B,0x1D182}, {0x1D185,0x1D18B},
    {0x1D1AA,0x1D1AD}, {0x1D242,0x1D244}, {0x1D400,0x1D454}, {0x1D456,0x1D49C}, {0x1D49E,0x1D49F}, {0x1D4A2,0x1D4A2},
    {0x1D4A5,0x1D4A6}, {0x1D4A9,0x1D4AC}, {0x1D4AE,0x1D4B9}, {0x1D4BB,0x1D4BB}, {0x1D4BD,0x1D4C3}, {0x1D4C5,0x1D505},
    {0x1D507,0x1D50A}, {0x1D50D,0x1D514}, {0x1D516,0x1D51C}, {0x1D51E,0x1D539}, {0x1D53B,0x1D53E}, {0x1D540,0x1D544},
    {0x1D546,0x1D546}, {0x1D54A,0x1D550}, {0x1D552,0x1D6A5}, {0x1D6A8,0x1D6C0}, {0x1D6C2,0x1D6DA}, {0x1D6DC,0x1D6FA},
    {0x1D6FC,0x1D714}, {0x1D716,0x1D734}, {0x1D736,0x1D74E}, {0x1D750,0x1D76E}, {0x1D770,0x1D788}, {0x1D78A,0x1D7A8},
    {0x1D7AA,0x1D7C2}, {0x1D7C4,0x1D7CB}, {0x1D7CE,0x1D7FF}, {0x1DA00,0x1DA36}, {0x1DA3B,0x1DA6C}, {0x1DA75,0x1DA75},
    {0x1DA84,0x1DA84}, {0x1DA9B,0x1DA9F}, {0x1DAA1,0x1DAAF}, {0x1DF00,0x1DF1E}, {0x1DF25,0x1DF2A}, {0x1E000,0x1E006},
    {0x1E008,0x1E018}, {0x1E01B,0x1E021}, {0x1E023,0x1E024}, {0x1E026,0x1E02A}, {0x1E030,0x1E06D}, {0x1E08F,0x1E08F},
    {0x1E100,0x1E12C}, {0x1E130,0x1E13D}, {0x1E140,0x1E149}, {0x1E14E,0x1E14E}, {0x1E290,0x1E2AE}, {0x1E2C0,0x1E2F9},
    {0x1E4D0,0x1E4F9}, {0x1E5D0,0x1E5FA}, {0x1E7E0,0x1E7E6}, {0x1E7E8,0x1E7EB}, {0x1E7ED,0x1E7EE}, {0x1E7F0,0x1E7FE},
    {0x1E800,0x1E8C4}, {0x1E8D0,0x1E8D6}, {0x1E900,0x1E94B}, {0x1E950,0x1E959}, {0x1EE00,0x1EE03}, {0x1EE05,0x1EE1F},
    {0x1EE21,0x1EE22}, {0x1EE24,0x1EE24}, {0x1EE27,0x1EE27}, {0x1EE29,0x1EE32}, {0x1EE34,0x1EE37}, {0x1EE39,0x1EE39},
    {0x1EE3B,0x1EE3B}, {0x1EE42,0x1EE42}, {0x1EE47,0x1EE47}, {0x1EE49,0x1EE49}, {0x1EE4B,0x1EE4B}, {0x1EE4D,0x1EE4F},
    {0x1EE51,0x1EE52}, {0x1EE54,0x1EE54}, {0x1EE57,0x1EE57}, {0x1EE59,0x1EE59}, {0x1EE5B,0x1EE5B}, {0x1EE5D,0x1EE5D},
    {0x1EE5F,0x1EE5F}, {0x1EE61,0x1EE62}, {0x1EE64,0x1EE64}, {0x1EE67,0x1EE6A}, {0x1EE6C,0x1EE72}, {0x1EE74,0x1EE77},
    {0x1EE79,0x1EE7C}, {0x1EE7E,0x1EE7E}, {0x1EE80,0x1EE89}, {0x1EE8B,0x1EE9B}, {0x1EEA1,0x1EEA3}, {0x1EEA5,0x1EEA9},
    {0x1EEAB,0x1EEBB}, {0x1F130,0x1F149}, {0x1F150,0x1F169}, {0x1F170,0x1F189}, {0x1FBF0,0x1FBF9}, {0x20000,0x2A6DF},
    {0x2A700,0x2B739}, {0x2B740,0x2B81D}, {0x2B820,0x2CEA1}, {0x2CEB0,0x2EBE0}, {0x2EBF0,0x2EE5D}, {0x2F800,0x2FA1D},
    {0x30000,0x3134A}, {0x31350,0x323AF}, {0xE0100,0xE01EF},
};

#define UNI_COUNT(table) (sizeof(table) / sizeof(table[0]))

static int uni_ccc(uint32_t c) {
    size_t lo = 0, hi = UNI_COUNT(uni_ccc_ranges);
    if (c < 0x300) return 0;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < uni_ccc_ranges[mid][0]) hi = mid;
        else if (c > uni_ccc_ranges[mid][1]) lo = mid + 1;
        else return (int)uni_ccc_ranges[mid][2];
    }
    return 0;
}

static int uni_decompose1(uint32_t c, uint32_t out[2]) {
    size_t lo = 0, hi = UNI_COUNT(uni_decompositions);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < uni_decompositions[mid][0]) hi = mid;
        else if (c > uni_decompositions[mid][0]) lo = mid + 1;
        else {
            out[0] = uni_decompositions[mid][1];
            out[1] = uni_decompositions[mid][2];
            return out[1] ? 2 : 1;
        }
    }
    return 0;
}

static uint32_t uni_compose_pair(uint32_t a, uint32_t b) {
    size_t lo = 0, hi = UNI_COUNT(uni_compositions);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const uint32_t *e = uni_compositions[mid];
        if (a < e[0] || (a == e[0] && b < e[1])) hi = mid;
        else if (a > e[0] || b > e[1]) lo = mid + 1;
        else return e[2];
    }
    return 0;
}

static int uni_is_word(uint32_t c) {
    size_t lo = 0, hi = UNI_COUNT(uni_word_ranges);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < uni_word_ranges[mid][0]) hi = mid;
        else if (c > uni_word_ranges[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}
