/* bandwidth.c - how fast can this machine read memory? A STREAM-like probe.
 *
 * Decoding one token of a large language model reads every weight matrix once,
 * so its speed is bounded by memory read bandwidth: tokens/s <= bandwidth /
 * bytes of weights per token. This program measures that bandwidth the way the
 * decoder uses it: n_threads threads (OpenMP when compiled with -fopenmp) each
 * stream through their own contiguous slice of a buffer much larger than the
 * caches, summing 64-bit integers. Integer addition is associative, so the
 * compiler may vectorise the sum without -ffast-math; the sum is checked
 * against the one computed while filling the buffer, so the reads cannot be
 * optimised away.
 *
 * Build: cc -std=c99 -O3 -march=native -fopenmp test/bandwidth.c -o bandwidth
 *        (without -fopenmp it runs one thread only)
 * Usage: bandwidth [-t threads] [-m megabytes] [-r repeats] [--huge] [--prefetch] [--json]
 *   --huge      asks for transparent huge pages (madvise) on the buffer
 *   --prefetch  also asks for the bytes 4 KB ahead (software prefetch), as
 *               lucie.c's quantized kernels do: on some machines the
 *               hardware prefetchers alone leave bandwidth unused, and a
 *               roofline must be the best the machine can do
 *   --json  prints one JSON line instead of the human-readable report
 * GB/s means 1e9 bytes per second, as STREAM does. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* MADV_HUGEPAGE on glibc */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __linux__
#include <sys/mman.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    int n_threads;
    size_t megabytes;
    int repeats;
    int huge_pages;
    int prefetch;
    int json;
} options;

typedef struct {
    uint64_t *data;
    size_t n_words;
} buffer;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Thread `t` of `n` owns words [begin, end): contiguous slices, so each thread
 * streams sequentially and the hardware prefetchers can follow it. The same
 * split is used to fill and to read, so pages are first touched by the thread
 * that later reads them. */
static void thread_slice(size_t n_words, int t, int n, size_t *begin, size_t *end) {
    *begin = n_words / (size_t)n * (size_t)t;
    *end = (t == n - 1) ? n_words : n_words / (size_t)n * (size_t)(t + 1);
}

/* The hot loop. Eight independent accumulators per 64-byte line keep the
 * dependency chains short even when the compiler does not vectorise. */
static uint64_t sum_words(const uint64_t *restrict words, size_t n, int prefetch) {
    enum { AHEAD = 4096 / sizeof(uint64_t) };
    uint64_t acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    if (prefetch)
        for (; i + AHEAD + 8 <= n; i += 8) {
#if defined(__GNUC__) || defined(__clang__)
            __builtin_prefetch(words + i + AHEAD, 0, 3);
#endif
            for (int k = 0; k < 8; k++) acc[k] += words[i + k];
        }
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += words[i + k];
    for (; i < n; i++) acc[0] += words[i];
    uint64_t total = 0;
    for (int k = 0; k < 8; k++) total += acc[k];
    return total;
}

/* Fills the buffer with values that depend on a run-time seed and returns
 * their sum (mod 2^64), the answer every timed pass must reproduce. */
static uint64_t fill(buffer *buf, int n_threads, uint64_t seed) {
    uint64_t total = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(n_threads) reduction(+ : total)
#endif
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        size_t begin, end;
        thread_slice(buf->n_words, t, n_threads, &begin, &end);
        for (size_t i = begin; i < end; i++) {
            buf->data[i] = (uint64_t)i * 0x9E3779B97F4A7C15ull ^ seed;
            total += buf->data[i];
        }
    }
    return total;
}

/* One timed pass: every thread sums its slice. Returns the elapsed seconds. */
static double timed_pass(const buffer *buf, int n_threads, int prefetch, uint64_t *sum) {
    uint64_t total = 0;
    double start = now_seconds();
#ifdef _OPENMP
#pragma omp parallel num_threads(n_threads) reduction(+ : total)
#endif
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        size_t begin, end;
        thread_slice(buf->n_words, t, n_threads, &begin, &end);
        total += sum_words(buf->data + begin, end - begin, prefetch);
    }
    double elapsed = now_seconds() - start;
    *sum = total;
    return elapsed;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int parse_positive(const char *text, long max, long *value) {
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < 1 || v > max) return -1;
    *value = v;
    return 0;
}

static int parse_options(int argc, char **argv, options *opts) {
    opts->n_threads = 1;
    opts->megabytes = 2048;
    opts->repeats = 10;
    opts->huge_pages = 0;
    opts->prefetch = 0;
    opts->json = 0;
    for (int i = 1; i < argc; i++) {
        long v;
        const char *a = argv[i];
        if (strcmp(a, "--huge") == 0) {
            opts->huge_pages = 1;
        } else if (strcmp(a, "--prefetch") == 0) {
            opts->prefetch = 1;
        } else if (strcmp(a, "--json") == 0) {
            opts->json = 1;
        } else if ((strcmp(a, "-t") == 0 || strcmp(a, "-m") == 0 || strcmp(a, "-r") == 0) &&
                   i + 1 < argc) {
            if (parse_positive(argv[++i], 1L << 20, &v) != 0) {
                fprintf(stderr, "bandwidth: bad value '%s' for %s\n", argv[i], a);
                return -1;
            }
            if (a[1] == 't') opts->n_threads = (int)v;
            if (a[1] == 'm') opts->megabytes = (size_t)v;
            if (a[1] == 'r') opts->repeats = (int)v;
        } else {
            fprintf(stderr, "usage: %s [-t threads] [-m megabytes] [-r repeats] [--huge] [--prefetch] [--json]\n",
                    argv[0]);
            return -1;
        }
    }
#ifndef _OPENMP
    if (opts->n_threads != 1) {
        fprintf(stderr, "bandwidth: built without OpenMP, so only -t 1 is possible\n");
        return -1;
    }
#endif
    return 0;
}

int main(int argc, char **argv) {
    options opts;
    if (parse_options(argc, argv, &opts) != 0) return 2;

    const size_t alignment = (size_t)2 << 20; /* 2 MB, so huge pages can back it */
    if (opts.megabytes > SIZE_MAX >> 20) {
        fprintf(stderr, "bandwidth: %zu MB does not fit in this address space\n", opts.megabytes);
        return 2;
    }
    size_t n_bytes = opts.megabytes << 20;
    buffer buf;
    buf.n_words = n_bytes / sizeof(uint64_t);
    void *memory = NULL;
    if (posix_memalign(&memory, alignment, n_bytes) != 0) {
        fprintf(stderr, "bandwidth: cannot allocate %zu MB\n", opts.megabytes);
        return 1;
    }
    buf.data = memory;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (opts.huge_pages) madvise(memory, n_bytes, MADV_HUGEPAGE);
#endif

    uint64_t expected = fill(&buf, opts.n_threads, (uint64_t)time(NULL));
    double *seconds = malloc(sizeof(double) * (size_t)opts.repeats);
    if (!seconds) {
        fprintf(stderr, "bandwidth: out of memory\n");
        return 1;
    }
    uint64_t sum;
    timed_pass(&buf, opts.n_threads, opts.prefetch, &sum); /* warm-up: threads started, TLB filled */
    for (int r = 0; r < opts.repeats; r++) {
        seconds[r] = timed_pass(&buf, opts.n_threads, opts.prefetch, &sum);
        if (sum != expected) {
            fprintf(stderr, "bandwidth: wrong sum in pass %d (memory error?)\n", r);
            return 1;
        }
    }
    qsort(seconds, (size_t)opts.repeats, sizeof(double), compare_doubles);
    double bytes = (double)(buf.n_words * sizeof(uint64_t));
    double best = bytes / seconds[0] / 1e9;
    double worst = bytes / seconds[opts.repeats - 1] / 1e9;
    /* median of the times, then converted (the median of 1/x is 1/median) */
    double median_s = (opts.repeats % 2) ? seconds[opts.repeats / 2]
                                         : 0.5 * (seconds[opts.repeats / 2 - 1] + seconds[opts.repeats / 2]);
    double median = bytes / median_s / 1e9;

    if (opts.json) {
        printf("{\"threads\": %d, \"bytes\": %.0f, \"repeats\": %d, \"huge_pages\": %d, "
               "\"prefetch\": %d, \"best_gbs\": %.3f, \"median_gbs\": %.3f, \"worst_gbs\": %.3f}\n",
               opts.n_threads, bytes, opts.repeats, opts.huge_pages, opts.prefetch, best, median, worst);
    } else {
        printf("read bandwidth, %d thread(s), %.0f MB buffer%s%s, %d passes:\n", opts.n_threads,
               bytes / 1e6, opts.huge_pages ? " (huge pages)" : "", opts.prefetch ? " (prefetch)" : "",
               opts.repeats);
        printf("  best %.2f GB/s   median %.2f GB/s   worst %.2f GB/s\n", best, median, worst);
    }
    free(seconds);
    free(memory);
    return 0;
}
