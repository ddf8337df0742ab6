/* y = x W^T (+ b) for a few rows of x: the CPU's decode, draft and short-verification products.
 *
 * x [M, K], W [N, K] (nn.Linear's own layout, each output's weights contiguous), b [N] or NULL,
 * y [M, N]; float32, row-major, contiguous. Built by clasp_core/cpu_kernel.py with the machine's
 * compiler (-O3 -march=native -fopenmp) and linked to the OpenMP runtime torch itself loaded, so
 * its threads are torch's team.
 *
 * Why: a decode step is a matrix-vector product per weight, bound by how fast the weights stream
 * from memory. MKL's fp32 kernels reach a fraction of that on some CPUs (AMD EPYC: 12-20 GB/s for
 * one row where a sum over the same bytes runs at 45 GB/s) and cost 2-3 one-row products for 2-9
 * rows. Here each thread takes a contiguous band of W's rows and reads
 * it front to back, one row at a time (one sequential stream, prefetched 2 KB ahead: 26-30 GB/s for
 * a whole decode step's weights here), multiplying each row with up to 3 rows of x at once; x (a few
 * KB) stays in L1, so M rows cost one pass over the weights plus M/3 passes over L1.
 *
 * Each y[m, n] is summed by one thread in a fixed order (4 x 8 lanes, then a fixed tree), whatever the
 * thread count: the same inputs always give the same bits. The order differs from MKL's, as any
 * other kernel's does (the last bits of a logit); losslessness is checked against transformers'
 * generate token by token in the tests and the bench. */
#include <stddef.h>
#include <string.h>

typedef float v8 __attribute__((vector_size(32)));

static inline v8 ld(const float *p) { v8 v; memcpy(&v, p, sizeof v); return v; }

static inline float hsum(v8 v) {
    float s0 = (v[0] + v[4]) + (v[2] + v[6]);
    float s1 = (v[1] + v[5]) + (v[3] + v[7]);
    return s0 + s1;
}

#define PF 512  /* floats: prefetch the weight row 2 KB ahead of the loads */

/* one weight row w against MB (1..3, a constant after inlining) rows of x; k unrolled by 4 vectors */
static inline __attribute__((always_inline)) void row(const int MB, const float *x, const float *w, const float *b,
        float *y, int K, long ldy, int n) {
    v8 acc[3][4];
    for (int m = 0; m < MB; m++) for (int u = 0; u < 4; u++) acc[m][u] = (v8){0};
    const int K32 = K & ~31;
    int k = 0;
    for (; k < K32; k += 32) {
        __builtin_prefetch(w + k + PF, 0, 0);         /* 2 cache lines: the 128 bytes this step reads */
        __builtin_prefetch(w + k + PF + 16, 0, 0);
        for (int u = 0; u < 4; u++) {
            v8 q = ld(w + k + 8 * u);
            for (int m = 0; m < MB; m++) acc[m][u] += ld(x + (size_t)m * K + k + 8 * u) * q;
        }
    }
    for (int m = 0; m < MB; m++) {
        v8 a = (acc[m][0] + acc[m][1]) + (acc[m][2] + acc[m][3]);
        for (int kk = k; kk + 8 <= K; kk += 8) a += ld(x + (size_t)m * K + kk) * ld(w + kk);
        float s = hsum(a);
        for (int kk = k + ((K - k) & ~7); kk < K; kk++) s += x[(size_t)m * K + kk] * w[kk];
        y[(size_t)m * ldy + n] = b ? s + b[n] : s;
    }
}

/* weight row n against all M rows of x, 3 at a time */
static void rows(const float *x, const float *W, const float *b, float *y, int M, int K, long ldy, int n) {
    const float *w = W + (size_t)n * K;
    int m = 0;
    for (; m + 3 <= M; m += 3) row(3, x + (size_t)m * K, w, b, y + (size_t)m * ldy, K, ldy, n);
    if (M - m == 2) row(2, x + (size_t)m * K, w, b, y + (size_t)m * ldy, K, ldy, n);
    else if (M - m == 1) row(1, x + (size_t)m * K, w, b, y + (size_t)m * ldy, K, ldy, n);
}

void clasp_linear(const float *x, const float *W, const float *b, float *y, int M, int N, int K, int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int n = 0; n < N; n++) rows(x, W, b, y, M, K, N, n);
}
