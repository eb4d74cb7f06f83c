/* Time loops of the native CPU path, in C; then the order statistics and
 * the whole rule of the adaptive step; the spike function's fused backward
 * (the step, the draw of the directions where an estimate can be non-zero,
 * and grad_out times the estimate in one pass per sample, with its own
 * counter-based random streams); and the binary inputs of the Linear +
 * Leaky layer: their packed copy and the event-driven input current, which
 * sums in another order than PyTorch's product.
 *
 * The vectorised PyTorch loops in native.py run a handful of small tensor
 * operations per time step; their dispatch costs more than their arithmetic.
 * These functions run the same loops over raw float32/float64 buffers,
 * operation for operation: every product and sum is rounded to the buffer's
 * type before the next (compiled without fused multiply-add and without
 * fast-math), so the results equal PyTorch's bit for bit. Selections are
 * written branch-free (a ? b : c on values) so that the compiler vectorises
 * the inner loops.
 *
 * Arguments are addresses (Python ints from Tensor.data_ptr(), 0 for none)
 * and sizes; the caller (native.py) checks dtypes, contiguity and shapes.
 * The GIL is released while a loop runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef ZO_OPENMP
#include <omp.h>
#endif

/* Loops split over torch's OpenMP pool (where the build links OpenMP: torch's
 * runtime, loaded first, serves them, so torch.set_num_threads sets how many)
 * give each thread one contiguous share of their range; every item is
 * computed as on one thread, so the bits do not depend on the split. */

/* The share [lo, hi) of [0, total) of the calling thread (all of it outside
 * a parallel region or without OpenMP). */
static inline void thread_share(int64_t total, int64_t *lo, int64_t *hi)
{
    int64_t q = 0, k = 1;
#ifdef ZO_OPENMP
    q = omp_get_thread_num();
    k = omp_get_num_threads();
#endif
    *lo = total * q / k;
    *hi = total * (q + 1) / k;
}

/* thread_share of [0, n) in blocks of 16 entries (whole cache lines of
 * float32): the calling thread's neurons of a scan. */
static inline void thread_share16(int64_t n, int64_t *lo, int64_t *hi)
{
    thread_share((n + 15) / 16, lo, hi);
    *lo *= 16;
    *hi = *hi * 16 < n ? *hi * 16 : n;
}

/* The threads a loop with this much work takes: torch's, from min_work on. */
static inline int threads_for(int64_t work, int64_t min_work)
{
#ifdef ZO_OPENMP
    return work >= min_work ? omp_get_max_threads() : 1;
#else
    (void)work;
    (void)min_work;
    return 1;
#endif
}

/* The fewest entries a memory-bound pass over a sequence (its steps times
 * its neurons, or its rows times their entries) splits over threads. On the
 * Intel VM of this change two threads packed a spike input 1.8-2.2x faster
 * than one (benchmarks/rule_cost.py --what current, pack_ms); on an earlier
 * AMD one such passes did not gain. */
#define STREAM_PAR_MIN (1 << 18)

/* The widest vector unit the CPU has runs these loops (one machine code per
 * unit, picked when the module loads), where the compiler can build that. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8 && defined(__x86_64__) && defined(__linux__)
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VECTOR_CLONES
#endif

/* Hand-written vector lanes (the draw, the near lists, the order
 * statistics' candidates) run where the CPU has the unit (checked when the
 * module loads) and set_simd has not turned them off: the tests compare
 * both, which give the same bits. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define ZO_X86_LANES 1
#endif
static int CPU_AVX2 = 0, HAVE_AVX2 = 0, CPU_AVX512 = 0, HAVE_AVX512 = 0;

/* EVENT_OFFSETS[m]: the positions of the set bits of the byte m, ascending;
 * EVENT_ONES[m]: their number; BIT_RANKS[m][b]: for a set bit b of m, the
 * number of set bits below it (0 elsewhere). All filled when the module
 * loads; the AVX2 lanes compress (compress8: compact, list_near, the order
 * statistics' candidates) and expand (spread_near) eight floats with them,
 * as the event lists gather the ones of eight bytes. */
static int32_t EVENT_OFFSETS[256][8];
static uint8_t EVENT_ONES[256];
static int32_t BIT_RANKS[256][8];
/* MASK_BYTES[m]: eight bytes, byte b one where bit b of m is set (an eight-lane
 * mask as weighted_draw's marks) */
static uint64_t MASK_BYTES[256];

static void fill_event_tables(void)
{
    for (int m = 0; m < 256; m++) {
        int k = 0;
        for (int b = 0; b < 8; b++)
            if (m >> b & 1) {
                BIT_RANKS[m][b] = k;
                EVENT_OFFSETS[m][k++] = b;
            }
        EVENT_ONES[m] = (uint8_t)k;
        uint8_t bytes[8];
        for (int b = 0; b < 8; b++) bytes[b] = (uint8_t)(m >> b & 1);
        memcpy(&MASK_BYTES[m], bytes, sizeof bytes);
    }
}

#ifdef ZO_X86_LANES
/* Eight lanes compressed: the lanes of v whose bit is set in the byte mk,
 * in order, stored at dst (all eight lanes are written: dst needs room for
 * them; the caller counts EVENT_ONES[mk]); returns the permutation, the
 * stored lanes' positions in v, for the callers that list those too. */
static inline __attribute__((always_inline, target("avx2"))) __m256i compress8(void *dst, __m256 v, int mk)
{
    const __m256i perm = _mm256_loadu_si256((const __m256i *)EVENT_OFFSETS[mk]);
    _mm256_storeu_ps((float *)dst, _mm256_permutevar8x32_ps(v, perm));
    return perm;
}
#endif

/* The reset mechanisms' numbers come from snntorch_localzo/_ops/resets.py, the
 * one definition, through setup.py's define_macros; the module exports them
 * (RESET_SUBTRACT, ...) so that the package can check its build. */
#if !defined(RESET_SUBTRACT) || !defined(RESET_ZERO) || !defined(RESET_NONE)
#error "RESET_SUBTRACT, RESET_ZERO and RESET_NONE are defined by setup.py (from snntorch_localzo/_ops/resets.py)"
#endif

/* Selections by bits (a where c, else b): the same values as c ? a : b, but
 * with trapping floating point (the flags' default) the compiler keeps a
 * ternary whose operands compute as a branch, which stops it from running
 * the loop in vector lanes (AVX-512 has masks for that; AVX2 has not). */
#define SELECT_BITS(NAME, T_, U_)                       \
    static inline T_ NAME(int c, T_ a, T_ b)            \
    {                                                   \
        U_ x, y;                                        \
        memcpy(&x, &a, sizeof x);                       \
        memcpy(&y, &b, sizeof y);                       \
        const U_ m = (U_)0 - (U_)(c != 0);              \
        x = (x & m) | (y & ~m);                         \
        memcpy(&a, &x, sizeof a);                       \
        return a;                                       \
    }
SELECT_BITS(select_f32, float, uint32_t)
SELECT_BITS(select_f64, double, uint64_t)
#undef SELECT_BITS

/* One time step for neurons [0, n): the membrane, the spike times graded,
 * |mem - thr| (optional) and the spike flag (optional), from the previous
 * membrane prev (NULL: zero).
 *   subtract: mem = b * prev + x - (prev > thr ? thr : 0)
 *   zero:     mem = b * (prev > thr ? 0 * prev : prev) + x
 *   none:     mem = b * prev + x                                            */
#define LEAKY_STEP(NAME, T_, RESET, SELECT)                                           \
    VECTOR_CLONES static void NAME(const T_ *restrict x, const T_ *restrict prev, T_ *restrict mem,  \
                     T_ *restrict spk, T_ *restrict uabs, uint8_t *restrict fired,     \
                     int64_t n, T_ b, T_ thr, T_ gr)                                  \
    {                                                                                 \
        const T_ zero_gr = (T_)0 * gr;                                                \
        for (int64_t i = 0; i < n; i++) {                                             \
            T_ m = prev ? prev[i] : (T_)0;                                            \
            T_ v;                                                                     \
            if (RESET == RESET_ZERO) {                                                \
                T_ kept = SELECT(m > thr, (T_)0 * m, m);                              \
                v = b * kept;                                                         \
            } else {                                                                  \
                v = b * m;                                                            \
            }                                                                         \
            v = v + x[i];                                                             \
            if (RESET == RESET_SUBTRACT) v = v - SELECT(m > thr, thr, (T_)0);         \
            mem[i] = v;                                                               \
            T_ u = v - thr;                                                           \
            spk[i] = SELECT(u > (T_)0, gr, zero_gr);                                  \
            if (uabs) uabs[i] = SELECT(u < (T_)0, -u, u);                             \
            if (fired) fired[i] = u > (T_)0;                                          \
        }                                                                             \
    }

LEAKY_STEP(step_sub_f32, float, RESET_SUBTRACT, select_f32)
LEAKY_STEP(step_zero_f32, float, RESET_ZERO, select_f32)
LEAKY_STEP(step_none_f32, float, RESET_NONE, select_f32)
LEAKY_STEP(step_sub_f64, double, RESET_SUBTRACT, select_f64)
LEAKY_STEP(step_zero_f64, double, RESET_ZERO, select_f64)
LEAKY_STEP(step_none_f64, double, RESET_NONE, select_f64)

/* The scan of the neurons [lo, hi) of n (each neuron's steps depend on its
 * own only: a share of them per thread gives the same bits). */
#define LEAKY_SCAN(NAME, T_, SUB, ZERO, NONE)                                         \
    static void NAME(const T_ *x, const T_ *mem0, T_ *mem, T_ *spk, T_ *uabs,          \
                     uint8_t *fired, int64_t steps, int64_t n, int64_t lo, int64_t hi, \
                     T_ b, T_ thr, T_ gr, int reset)                                  \
    {                                                                                 \
        const int64_t w = hi - lo;                                                    \
        for (int64_t t = 0; t < steps; t++) {                                         \
            const int64_t o = t * n + lo;                                             \
            const T_ *prev = t ? mem + o - n : (mem0 ? mem0 + lo : NULL);             \
            T_ *ua = uabs ? uabs + o : NULL;                                          \
            uint8_t *f = fired ? fired + o : NULL;                                    \
            if (reset == RESET_SUBTRACT)                                              \
                SUB(x + o, prev, mem + o, spk + o, ua, f, w, b, thr, gr);             \
            else if (reset == RESET_ZERO)                                             \
                ZERO(x + o, prev, mem + o, spk + o, ua, f, w, b, thr, gr);            \
            else                                                                      \
                NONE(x + o, prev, mem + o, spk + o, ua, f, w, b, thr, gr);            \
        }                                                                             \
    }

LEAKY_SCAN(leaky_scan_f32, float, step_sub_f32, step_zero_f32, step_none_f32)
LEAKY_SCAN(leaky_scan_f64, double, step_sub_f64, step_zero_f64, step_none_f64)

/* The rest of one Leaky step's backward once its spike function's gradient
 * grad (at u = mem - thr) is in, with the operations of
 * reference.leaky_step's backward in their order: grad = grad + gm (gm, the
 * membrane's incoming gradient, optional) in place, and, where gm0 is given,
 * the previous membrane's gm0 = grad * b, times (1 - reset) under zero reset
 * (resets optional: torch's bool, one byte per neuron). */
#define STEP_GRAD(NAME, T_)                                                           \
    VECTOR_CLONES static void NAME(T_ *restrict grad, const T_ *restrict gm,           \
                                   T_ *restrict gm0, const uint8_t *restrict resets,   \
                                   int64_t n, T_ b)                                    \
    {                                                                                 \
        if (gm)                                                                       \
            for (int64_t i = 0; i < n; i++) grad[i] = grad[i] + gm[i];                \
        if (gm0 && resets)                                                            \
            for (int64_t i = 0; i < n; i++)                                           \
                gm0[i] = (grad[i] * b) * ((T_)1 - (T_)resets[i]);                     \
        else if (gm0)                                                                 \
            for (int64_t i = 0; i < n; i++) gm0[i] = grad[i] * b;                     \
    }

STEP_GRAD(step_grad_f32, float)
STEP_GRAD(step_grad_f64, double)

/* Backward of the scan, for t from the last step down:
 *   gm = grad_mem[t] + carry (or carry); gm = gm + e[t]; gx[t] = gm;
 *   carry = gm * b, zeroed (0 * carry) where resets[t].
 * e is dense (e_dense) or sparse: sorted flat indices e_index into [steps, n]
 * with values e_val, zero elsewhere (then gm + 0 is skipped: the same value
 * up to the sign of a zero). Runs the neurons [lo, hi) of n (each neuron's
 * steps depend on its own only: a share per thread gives the same bits). */
#define REVERSE_SCAN(NAME, T_, SELECT)                                                \
    static void NAME(const T_ *e_dense, const int64_t *e_index, const T_ *e_val,        \
                     int64_t e_count, const T_ *gmem, const uint8_t *resets, T_ *gx,    \
                     T_ *carry, int64_t steps, int64_t n, int64_t lo, int64_t hi, T_ b) \
    {                                                                                 \
        int64_t k = e_count - 1;                                                      \
        for (int64_t i = lo; i < hi; i++) carry[i] = (T_)0;                           \
        for (int64_t t = steps - 1; t >= 0; t--) {                                    \
            const int64_t o = t * n;                                                  \
            T_ *g = gx + o;                                                           \
            if (gmem)                                                                 \
                for (int64_t i = lo; i < hi; i++) g[i] = gmem[o + i] + carry[i];      \
            else                                                                      \
                for (int64_t i = lo; i < hi; i++) g[i] = carry[i];                    \
            if (e_dense)                                                              \
                for (int64_t i = lo; i < hi; i++) g[i] = g[i] + e_dense[o + i];       \
            for (; k >= 0 && e_index[k] >= o; k--) {                                  \
                const int64_t i = e_index[k] - o;                                     \
                if (i >= lo && i < hi) g[i] += e_val[k];                              \
            }                                                                         \
            if (resets) {                                                             \
                const uint8_t *r = resets + o;                                        \
                for (int64_t i = lo; i < hi; i++) {                                   \
                    T_ c = g[i] * b;                                                  \
                    carry[i] = SELECT(r[i] != 0, (T_)0 * c, c);                       \
                }                                                                     \
            } else {                                                                  \
                for (int64_t i = lo; i < hi; i++) carry[i] = g[i] * b;                \
            }                                                                         \
        }                                                                             \
    }

REVERSE_SCAN(reverse_scan_f32, float, select_f32)
REVERSE_SCAN(reverse_scan_f64, double, select_f64)

/* reverse_scan for a sparse e and no membrane gradient, touching only the
 * live neurons: those with an active entry at this step or a later one (a
 * neuron's carry is +0 until its last active entry, so its gx is +0 there,
 * which the zeroing writes). Each live neuron runs the same operations as in
 * reverse_scan, so the bits are the same; the cost is the zeroing plus, per
 * step, its live neurons. The neurons [lo, hi) of n, as reverse_scan.
 * Returns 0, or -1 when memory ran out. */
#define REVERSE_SCAN_EVENTS(NAME, T_)                                                 \
    static int NAME(const int64_t *e_index, const T_ *e_val, int64_t e_count,          \
                    const uint8_t *resets, T_ *gx, T_ *carry, int64_t steps, int64_t n, \
                    int64_t lo, int64_t hi, T_ b)                                     \
    {                                                                                 \
        const int64_t w = hi - lo;                                                    \
        int64_t *live = (int64_t *)malloc((size_t)(w > 0 ? w : 1) * sizeof(int64_t)); \
        uint8_t *seen = (uint8_t *)calloc((size_t)(w > 0 ? w : 1), 1);                \
        if (!live || !seen) {                                                         \
            free(live);                                                               \
            free(seen);                                                               \
            return -1;                                                                \
        }                                                                             \
        for (int64_t t = 0; t < steps; t++) memset(gx + t * n + lo, 0, (size_t)w * sizeof(T_)); \
        for (int64_t i = lo; i < hi; i++) carry[i] = (T_)0;                           \
        int64_t k = e_count - 1, nlive = 0;                                           \
        for (int64_t t = steps - 1; t >= 0; t--) {                                    \
            const int64_t o = t * n;                                                  \
            T_ *g = gx + o;                                                           \
            for (int64_t j = 0; j < nlive; j++) g[live[j]] = carry[live[j]];          \
            for (; k >= 0 && e_index[k] >= o; k--) {                                  \
                const int64_t i = e_index[k] - o;                                     \
                if (i < lo || i >= hi) continue;                                      \
                if (!seen[i - lo]) {                                                  \
                    seen[i - lo] = 1;                                                 \
                    live[nlive++] = i;                                                \
                }                                                                     \
                g[i] += e_val[k];                                                     \
            }                                                                         \
            for (int64_t j = 0; j < nlive; j++) {                                     \
                const int64_t i = live[j];                                            \
                const T_ c = g[i] * b;                                                \
                carry[i] = resets && resets[o + i] ? (T_)0 * c : c;                   \
            }                                                                         \
        }                                                                             \
        free(live);                                                                   \
        free(seen);                                                                   \
        return 0;                                                                     \
    }

REVERSE_SCAN_EVENTS(reverse_scan_events_f32, float)
REVERSE_SCAN_EVENTS(reverse_scan_events_f64, double)

/* out[s] = b * tr + x[t0 + s], tr = out[s], from tr = carry (in place: the
 * last step's trace on return). */
#define TRACE(NAME, T_)                                                               \
    static void NAME(const T_ *x, T_ *out, T_ *carry, int64_t t0, int64_t steps,        \
                     int64_t n, T_ b)                                                 \
    {                                                                                 \
        for (int64_t s = 0; s < steps; s++) {                                         \
            const T_ *restrict xt = x + (t0 + s) * n;                                 \
            T_ *restrict o = out + s * n;                                             \
            for (int64_t i = 0; i < n; i++) {                                         \
                T_ v = b * carry[i];                                                  \
                v = v + xt[i];                                                        \
                o[i] = v;                                                             \
                carry[i] = v;                                                         \
            }                                                                         \
        }                                                                             \
    }

TRACE(trace_f32, float)
TRACE(trace_f64, double)

/* The sparse weight gradient of a Linear + Leaky layer without the trace
 * held for all steps, over the input columns [lo, lo + w) of n: the input
 * trace of every sample (trace's operations, so its bits) kept in carry
 * [B, w] (zero at the start) and advanced one step at a time; each active
 * entry (t, b, j) of index (sorted flat positions in [T, B, out], values e)
 * adds e * trace[t, b, lo:lo + w] to row j of acc (row stride acc_stride)
 * as its step comes (in index order), and, where db is given, e * c[t] to
 * db[j], c the trace of ones (the bias gradient; trace's operations). */
#define TRACE_GRAD(NAME, T_, X_)                                                        \
    VECTOR_CLONES static void NAME(const X_ *x, int64_t T, int64_t B, int64_t n, T_ b,   \
                                   const int64_t *index, const T_ *e, int64_t nnz,       \
                                   int64_t out_f, int64_t lo, int64_t w, T_ *acc,        \
                                   int64_t acc_stride, T_ *carry, T_ *db)                \
    {                                                                                   \
        int64_t p = 0;                                                                  \
        T_ ones = (T_)0;                                                                \
        for (int64_t t = 0; t < T && p < nnz; t++) {                                    \
            const T_ kept = b * ones;                                                   \
            ones = kept + (T_)1;                                                        \
            for (int64_t s = 0; s < B; s++) {                                           \
                const X_ *restrict xt = x + (t * B + s) * n + lo;                       \
                T_ *restrict c = carry + s * w;                                         \
                for (int64_t i = 0; i < w; i++) {                                       \
                    T_ v = b * c[i];                                                    \
                    c[i] = v + (T_)xt[i];                                               \
                }                                                                       \
            }                                                                           \
            for (const int64_t end = (t + 1) * B * out_f; p < nnz && index[p] < end; p++) { \
                const int64_t r = index[p] / out_f - t * B, j = index[p] % out_f;         \
                const T_ *restrict cr = carry + r * w;                                  \
                T_ *restrict a = acc + j * acc_stride;                                  \
                const T_ v = e[p];                                                      \
                for (int64_t i = 0; i < w; i++) a[i] = a[i] + v * cr[i];                \
                if (db) db[j] = db[j] + v * ones;                                       \
            }                                                                           \
        }                                                                               \
    }

TRACE_GRAD(trace_grad_f32, float, float)
TRACE_GRAD(trace_grad_f64, double, double)
/* the input as the bytes binary_events packed (0 or 1: the same bits) */
TRACE_GRAD(trace_grad_f32_u8, float, uint8_t)
TRACE_GRAD(trace_grad_f64_u8, double, uint8_t)

/* One thread's share [lo, hi) of the columns of dw [out, n] (added into it;
 * and the bias gradient into db, where given, by the share from column 0)
 * by KERNEL: alone (the whole row) straight into dw; sharing, into rows of
 * its own, added to dw at the end, so that no cache line of dw or of the
 * carry is written by two threads while the sums run (a row of 700 floats
 * does not end on a line). Each column's sums run in the same order at any
 * split: the same bits. Returns 0, or -1 (no memory). */
#define TRACE_GRAD_SHARE(NAME, KERNEL, T_, X_)                                          \
    static int NAME(const X_ *x, int64_t T, int64_t B, int64_t n, T_ b,                  \
                    const int64_t *index, const T_ *e, int64_t nnz, int64_t out_f,       \
                    T_ *dw, T_ *db, int64_t lo, int64_t hi, int shared)                  \
    {                                                                                   \
        const int64_t w = hi - lo;                                                      \
        if (w <= 0) return 0;                                                           \
        T_ *carry = (T_ *)calloc((size_t)(B > 0 ? B * w : 1), sizeof(T_));              \
        T_ *acc = shared ? (T_ *)calloc((size_t)(out_f > 0 ? out_f * w : 1), sizeof(T_)) : dw + lo; \
        if (!carry || !acc) {                                                           \
            free(carry);                                                                \
            if (shared) free(acc);                                                      \
            return -1;                                                                  \
        }                                                                               \
        KERNEL(x, T, B, n, b, index, e, nnz, out_f, lo, w, acc, shared ? w : n, carry,  \
               lo == 0 ? db : NULL);                                                    \
        if (shared) {                                                                   \
            for (int64_t j = 0; j < out_f; j++) {                                       \
                T_ *restrict d = dw + j * n + lo;                                       \
                const T_ *restrict a = acc + j * w;                                     \
                for (int64_t i = 0; i < w; i++) d[i] = d[i] + a[i];                     \
            }                                                                           \
            free(acc);                                                                  \
        }                                                                               \
        free(carry);                                                                    \
        return 0;                                                                       \
    }

TRACE_GRAD_SHARE(trace_grad_share_f32, trace_grad_f32, float, float)
TRACE_GRAD_SHARE(trace_grad_share_f64, trace_grad_f64, double, double)
TRACE_GRAD_SHARE(trace_grad_share_f32_u8, trace_grad_f32_u8, float, uint8_t)
TRACE_GRAD_SHARE(trace_grad_share_f64_u8, trace_grad_f64_u8, double, uint8_t)

/* Order statistics of the adaptive step: the k-th smallest (1-based) of a
 * row of n floats, NaN counted as +infinity: exactly the value
 * torch.kthvalue returns.
 * - k <= KTH_LANES_K (and n >= KTH_LANES_MIN, AVX-512 or AVX2): the lanes'
 *   min/max network, below;
 * - k <= KTH_FEW (a short row, or no lanes): one pass keeps the k smallest
 *   seen so far, in order; a block of 16 values none of which is below the
 *   k-th so far is skipped whole (after the first blocks almost every one).
 *   Its insertions grow with k: from k = 8 on, and at k = 5..7 in rows of
 *   up to about 1000 values, the key search below was as fast or faster
 *   (3 to 9 times faster at k = 16..32, n = 64..2304; AVX2 machine), so
 *   it serves only the ranks the lanes serve, where they do not run.
 * - else a search on order-preserving 32-bit keys for the smallest key t
 *   with at least k keys <= t, each step one branch-free counting pass
 *   over the row (kth_key); the last at most KTH_GATHER candidates are
 *   gathered and ranked in the lanes of either unit where the CPU has one. */

#define KTH_LANES_K 4
#define KTH_LANES_MIN 64
#define KTH_FEW KTH_LANES_K

static inline uint32_t order_key(float x)
{
    uint32_t b;
    if (x != x) x = INFINITY;
    if (x == 0.0f) x = 0.0f;  /* -0 sorts with +0 */
    memcpy(&b, &x, sizeof b);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

static float key_value(uint32_t k)
{
    uint32_t b = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

/* Scratch of the selections: the keys of one row of n values, the last
 * candidates and the keys of a narrowed bracket (kth_key; 16 to spare). */
typedef struct {
    uint32_t *keys, *cand, *sub;
} kth_ws;

static int kth_ws_init(kth_ws *w, int64_t n)
{
    const size_t room = (size_t)(n > 0 ? n : 1) * sizeof(uint32_t) + 16 * sizeof(uint32_t);
    w->keys = (uint32_t *)malloc((size_t)(n > 0 ? n : 1) * sizeof(uint32_t));
    w->cand = (uint32_t *)malloc(room);
    w->sub = (uint32_t *)malloc(room);
    return (w->keys && w->cand && w->sub) ? 0 : -1;
}

static void kth_ws_free(kth_ws *w)
{
    free(w->keys);
    free(w->cand);
    free(w->sub);
}

static void few_insert(float *best, int64_t *have, int64_t k, float x)
{
    if (*have == k && !(x < best[k - 1])) return;
    int64_t j = *have < k ? (*have)++ : k - 1;
    while (j > 0 && best[j - 1] > x) {
        best[j] = best[j - 1];
        j--;
    }
    best[j] = x;
}

/* whether any of the 16 values is below t */
VECTOR_CLONES static int any_below16(const float *restrict v, float t)
{
    int any = 0;
    for (int j = 0; j < 16; j++) any |= v[j] < t;
    return any;
}

/* the k-th smallest (k <= KTH_FEW) of n NaN-free values */
static float kth_few(const float *a, int64_t n, int64_t k)
{
    float best[KTH_FEW];
    int64_t have = 0, i = 0;
    for (; i < n && have < k; i++) few_insert(best, &have, k, a[i]);
    for (; i + 16 <= n; i += 16)
        if (any_below16(a + i, best[k - 1]))
            for (int j = 0; j < 16; j++) few_insert(best, &have, k, a[i + j]);
    for (; i < n; i++) few_insert(best, &have, k, a[i]);
    return best[k - 1];
}

/* The k-th smallest (k <= KTH_LANES_K) of n >= KTH_LANES_MIN NaN-free
 * values in AVX-512 lanes, without a branch on the values: each of 16 lanes
 * keeps the KTH_LANES_K smallest of its values, in order (lane j sees
 * a[i + j] of every block of 16, the last block padded with +inf; a min/max
 * network), then k times the smallest head of the lanes is taken off its
 * lane (one lane at a time: ties count once each). The same value as
 * kth_few; AVX2 does the same in 8 lanes; elsewhere kth_few runs. */
#ifdef ZO_X86_LANES
static __attribute__((target("avx512f"))) float kth_lanes_avx512(const float *a, int64_t n, int64_t k)
{
    const __m512 inf = _mm512_set1_ps(INFINITY);
    __m512 m0 = inf, m1 = inf, m2 = inf, m3 = inf;
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 in = (__mmask16)(n - i >= 16 ? 0xffff : (1u << (n - i)) - 1);
        __m512 v = _mm512_mask_loadu_ps(inf, in, a + i), lo;
        lo = _mm512_min_ps(m0, v), v = _mm512_max_ps(m0, v), m0 = lo;
        lo = _mm512_min_ps(m1, v), v = _mm512_max_ps(m1, v), m1 = lo;
        lo = _mm512_min_ps(m2, v), v = _mm512_max_ps(m2, v), m2 = lo;
        m3 = _mm512_min_ps(m3, v);
    }
    float x = INFINITY;
    for (int64_t r = 1;; r++) {
        x = _mm512_reduce_min_ps(m0);
        if (r >= k) break;
        const unsigned eq = (unsigned)_mm512_cmp_ps_mask(m0, _mm512_set1_ps(x), _CMP_EQ_OQ);
        const __mmask16 one = (__mmask16)(eq & (0u - eq));  /* its lowest lane */
        m0 = _mm512_mask_mov_ps(m0, one, m1);
        m1 = _mm512_mask_mov_ps(m1, one, m2);
        m2 = _mm512_mask_mov_ps(m2, one, m3);
        m3 = _mm512_mask_mov_ps(m3, one, inf);
    }
    return x;
}

/* the same in 8 AVX2 lanes (the last block padded with +inf by hand) */
static __attribute__((target("avx2"))) float kth_lanes_avx2(const float *a, int64_t n, int64_t k)
{
    const __m256 inf = _mm256_set1_ps(INFINITY);
    const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    __m256 m0 = inf, m1 = inf, m2 = inf, m3 = inf;
    for (int64_t i = 0; i < n; i += 8) {
        __m256 v, lo;
        if (n - i >= 8) {
            v = _mm256_loadu_ps(a + i);
        } else {
            float pad[8];
            for (int64_t j = 0; j < 8; j++) pad[j] = i + j < n ? a[i + j] : INFINITY;
            v = _mm256_loadu_ps(pad);
        }
        lo = _mm256_min_ps(m0, v), v = _mm256_max_ps(m0, v), m0 = lo;
        lo = _mm256_min_ps(m1, v), v = _mm256_max_ps(m1, v), m1 = lo;
        lo = _mm256_min_ps(m2, v), v = _mm256_max_ps(m2, v), m2 = lo;
        m3 = _mm256_min_ps(m3, v);
    }
    float x = INFINITY;
    for (int64_t r = 1;; r++) {
        __m128 h = _mm_min_ps(_mm256_castps256_ps128(m0), _mm256_extractf128_ps(m0, 1));
        h = _mm_min_ps(h, _mm_movehl_ps(h, h));
        x = _mm_cvtss_f32(_mm_min_ss(h, _mm_shuffle_ps(h, h, 1)));
        if (r >= k) break;
        const unsigned eq = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(m0, _mm256_set1_ps(x), _CMP_EQ_OQ));
        const __m256 one = _mm256_castsi256_ps(  /* its lowest lane */
            _mm256_cmpeq_epi32(_mm256_set1_epi32((int)(eq & (0u - eq))), bit));
        m0 = _mm256_blendv_ps(m0, m1, one);
        m1 = _mm256_blendv_ps(m1, m2, one);
        m2 = _mm256_blendv_ps(m2, m3, one);
        m3 = _mm256_blendv_ps(m3, inf, one);
    }
    return x;
}
#endif

/* the keys of the n values and their smallest and largest */
VECTOR_CLONES static void fill_keys(const float *restrict a, uint32_t *restrict keys, int64_t n,
                                    uint32_t *lo, uint32_t *hi)
{
    uint32_t mn = 0xffffffffu, mx = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t k = order_key(a[i]);
        keys[i] = k;
        mn = k < mn ? k : mn;
        mx = k > mx ? k : mx;
    }
    *lo = mn;
    *hi = mx;
}

VECTOR_CLONES static int64_t count_at_most(const uint32_t *restrict keys, int64_t n, uint32_t t)
{
    int32_t c = 0;
    for (int64_t i = 0; i < n; i++) c += keys[i] <= t;
    return c;
}

#define KTH_GATHER 32

/* the keys in [lo, lo + width] of n keys, in order, to cand (16 entries to
 * spare); returns their number */
#ifdef ZO_X86_LANES
static __attribute__((target("avx512f"))) int64_t keys_within_avx512(const uint32_t *keys, int64_t n,
                                                                     uint32_t lo, uint32_t width,
                                                                     uint32_t *cand, int64_t *at)
{
    const __m512i vlo = _mm512_set1_epi32((int)lo), vw = _mm512_set1_epi32((int)width);
    int64_t m = 0, i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512i v = _mm512_loadu_si512((const void *)(keys + i));
        const __mmask16 in = _mm512_cmple_epu32_mask(_mm512_sub_epi32(v, vlo), vw);
        _mm512_storeu_si512((void *)(cand + m), _mm512_maskz_compress_epi32(in, v));
        m += __builtin_popcount((unsigned)in);
    }
    *at = i;
    return m;
}
#endif

#ifdef ZO_X86_LANES
/* the same in 8 AVX2 lanes: the unsigned comparison as a signed one of the
 * keys with their top bit flipped, the compression by EVENT_OFFSETS */
static __attribute__((target("avx2"))) int64_t keys_within_avx2(const uint32_t *keys, int64_t n,
                                                                 uint32_t lo, uint32_t width,
                                                                 uint32_t *cand, int64_t *at)
{
    const __m256i top = _mm256_set1_epi32(INT32_MIN), vlo = _mm256_set1_epi32((int)lo);
    const __m256i vw = _mm256_xor_si256(_mm256_set1_epi32((int)width), top);
    int64_t m = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(keys + i));
        const __m256i above = _mm256_cmpgt_epi32(_mm256_xor_si256(_mm256_sub_epi32(v, vlo), top), vw);
        const int mk = ~_mm256_movemask_ps(_mm256_castsi256_ps(above)) & 0xff;
        compress8(cand + m, _mm256_castsi256_ps(v), mk);
        m += EVENT_ONES[mk];
    }
    *at = i;
    return m;
}
#endif

static int64_t keys_within(const uint32_t *keys, int64_t n, uint32_t lo, uint32_t width, uint32_t *cand)
{
    int64_t m = 0, i = 0;
#ifdef ZO_X86_LANES
    if (HAVE_AVX512) m = keys_within_avx512(keys, n, lo, width, cand, &i);
    else if (HAVE_AVX2) m = keys_within_avx2(keys, n, lo, width, cand, &i);
#endif
    for (; i < n; i++) {
        cand[m] = keys[i];
        m += (uint32_t)(keys[i] - lo) <= width;
    }
    return m;
}

/* the r-th smallest (0-based) of m keys, m small: the key with at most r
 * keys below it and more than r at or below it (a count per key, without a
 * branch, instead of a sort) */
#ifdef ZO_X86_LANES
static __attribute__((target("avx512f"))) uint32_t rank_pick_avx512(const uint32_t *cand, int64_t m,
                                                                    int64_t r)
{
    const __mmask16 v0 = (__mmask16)(m >= 16 ? 0xffff : (1u << m) - 1);
    const __mmask16 v1 = (__mmask16)(m >= 32 ? 0xffff : (m > 16 ? (1u << (m - 16)) - 1 : 0));
    const __m512i c0 = _mm512_maskz_loadu_epi32(v0, cand), c1 = _mm512_maskz_loadu_epi32(v1, cand + 16);
    for (int64_t i = 0; i < m; i++) {
        const __m512i v = _mm512_set1_epi32((int)cand[i]);
        const int lt = __builtin_popcount(_mm512_mask_cmplt_epu32_mask(v0, c0, v)) +
                       __builtin_popcount(_mm512_mask_cmplt_epu32_mask(v1, c1, v));
        const int le = __builtin_popcount(_mm512_mask_cmple_epu32_mask(v0, c0, v)) +
                       __builtin_popcount(_mm512_mask_cmple_epu32_mask(v1, c1, v));
        if (lt <= r && r < le) return cand[i];
    }
    return 0;
}
#endif

VECTOR_CLONES static uint32_t rank_pick_loop(const uint32_t *restrict cand, int64_t m, int64_t r)
{
    uint32_t best = 0;
    for (int64_t i = 0; i < m; i++) {
        const uint32_t v = cand[i];
        int32_t lt = 0, le = 0;
        for (int64_t j = 0; j < m; j++) {
            lt += cand[j] < v;
            le += cand[j] <= v;
        }
        best = (lt <= r && r < le) ? v : best;
    }
    return best;
}

#ifdef ZO_X86_LANES
/* the same in 8 AVX2 lanes: the candidates in four vectors padded with the
 * key 0xffffffff, which no value has (order_key's largest is +inf's), so
 * that a pad is never below a candidate and always above one; unsigned
 * comparisons as signed ones with the top bit flipped */
static __attribute__((target("avx2"))) uint32_t rank_pick_avx2(const uint32_t *cand, int64_t m, int64_t r)
{
    uint32_t pad[32];
    for (int64_t j = 0; j < 32; j++) pad[j] = j < m ? cand[j] : 0xffffffffu;
    const __m256i top = _mm256_set1_epi32(INT32_MIN);
    __m256i c[4];
    for (int q = 0; q < 4; q++)
        c[q] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(pad + 8 * q)), top);
    for (int64_t i = 0; i < m; i++) {
        const __m256i v = _mm256_xor_si256(_mm256_set1_epi32((int)cand[i]), top);
        int lt = 0, gt = 0;
        for (int q = 0; q < 4; q++) {
            lt += __builtin_popcount((unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(v, c[q]))));
            gt += __builtin_popcount((unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(c[q], v))));
        }
        if (lt <= r && r < 32 - gt) return cand[i];
    }
    return 0;
}
#endif

static uint32_t rank_pick(const uint32_t *cand, int64_t m, int64_t r)
{
#ifdef ZO_X86_LANES
    if (HAVE_AVX512 && m <= 32) return rank_pick_avx512(cand, m, r);
    if (HAVE_AVX2 && m <= 32) return rank_pick_avx2(cand, m, r);
#endif
    return rank_pick_loop(cand, m, r);
}

/* the k-th smallest key, given the keys lie in [lo, hi] (the smallest and
 * the largest): the bracket [lo, hi] with count(< lo) < k <= count(<= hi)
 * shrinks, each step by one counting pass at a key interpolated between
 * the bracket's values (two steps of three) or at its middle key, until it
 * holds at most KTH_GATHER keys; the one of the rank sought among those is
 * picked. Once the bracket holds at most a KTH_NARROW-th of the keys
 * counted, its keys are gathered into sub (in place from the second time
 * on: keys_within writes no further than it has read) and the passes count
 * those alone, the rank taken relative to the bracket: the deep ranks of the
 * silent band (30% of a conv row of 2304) took six to eight passes over the
 * whole row. */
#define KTH_NARROW 4

static uint32_t kth_key(const uint32_t *keys, int64_t n, int64_t k, uint32_t lo, uint32_t hi,
                        uint32_t *cand, uint32_t *sub)
{
    int64_t c_lo = 0, c_hi = n;
    for (int step = 1; lo < hi; step++) {
        if (c_hi - c_lo <= KTH_GATHER)
            return rank_pick(cand, keys_within(keys, n, lo, hi - lo, cand), k - c_lo - 1);
        if (KTH_NARROW * (c_hi - c_lo) <= n) { /* (c_hi - c_lo keys lie in [lo, hi]) */
            n = keys_within(keys, n, lo, hi - lo, sub);
            keys = sub;
            k -= c_lo;
            c_hi -= c_lo;
            c_lo = 0;
        }
        uint32_t mid = lo + (hi - lo) / 2;
        const float vlo = key_value(lo), vhi = key_value(hi);
        if (step % 3 && isfinite(vlo) && isfinite(vhi)) {
            const double t = (double)vlo + ((double)vhi - (double)vlo) *
                                               ((double)(k - c_lo) / (double)(c_hi - c_lo));
            const uint32_t at = order_key((float)t);
            mid = at < lo ? lo : (at >= hi ? hi - 1 : at);
        }
        const int64_t c = count_at_most(keys, n, mid);
        if (c >= k) {
            hi = mid;
            c_hi = c;
        } else {
            lo = mid + 1;
            c_lo = c;
        }
    }
    return hi;
}

/* The k-th smallest (1-based, k <= n) of one row of n NaN-free values (a is
 * not changed); the row's keys are filled once per row (*keyed). */
static float kth_one(const float *a, int64_t n, int64_t k, kth_ws *w, int *keyed, uint32_t *lo,
                     uint32_t *hi)
{
#ifdef ZO_X86_LANES
    if (HAVE_AVX512 && k <= KTH_LANES_K && n >= KTH_LANES_MIN) return kth_lanes_avx512(a, n, k);
    if (HAVE_AVX2 && k <= KTH_LANES_K && n >= KTH_LANES_MIN) return kth_lanes_avx2(a, n, k);
#endif
    if (k <= KTH_FEW) return kth_few(a, n, k);
    if (!*keyed) {
        fill_keys(a, w->keys, n, lo, hi);
        *keyed = 1;
    }
    return key_value(kth_key(w->keys, n, k, *lo, *hi, w->cand, w->sub));
}

/* The k1-th and the k2-th smallest (1-based, at most n; a rank <= 0 is not
 * computed) of one row of n values, NaN as +infinity (a is not changed;
 * callers pass |u| with NaN as +inf, or NaN-free rows). */
static void kth_pair(const float *a, int64_t n, int64_t k1, int64_t k2, kth_ws *w,
                     float *q1, float *q2)
{
    uint32_t lo = 0, hi = 0;
    int keyed = 0;
    if (k1 > 0) *q1 = kth_one(a, n, k1, w, &keyed, &lo, &hi);
    if (k2 > 0) *q2 = kth_one(a, n, k2, w, &keyed, &lo, &hi);
}

static int row_kth2(const float *a, int64_t rows, int64_t n, int64_t k1, int64_t k2,
                    float *out1, float *out2)
{
    kth_ws w;
    int status = kth_ws_init(&w, n);
    float *row = (float *)malloc((size_t)n * sizeof(float));
    if (!row) status = -1;
    for (int64_t r = 0; !status && r < rows; r++) {
        for (int64_t i = 0; i < n; i++) row[i] = a[r * n + i] != a[r * n + i] ? INFINITY : a[r * n + i];
        kth_pair(row, n, k1, k2, &w, out1 + r, out2 + r);
    }
    kth_ws_free(&w);
    free(row);
    return status;
}



/* The estimate of every entry from its drawn magnitudes, then its non-zero
 * entries: g[i] = coef * sum_d w(absz[d, i]) * (uabs[i] < delta * absz[d, i]),
 * w(a) = a (p = +1) or 1 / a (p = -1), summed from 0 in the order of d, with
 * the float operations of sampling.estimate (so the same bits); then the
 * indices and values of the entries with g != 0, ascending. g: n entries of
 * scratch. Returns the number of non-zero entries (the second pass fills
 * index and values, which must hold that many, when they are not NULL).   */
#define DENSE_ESTIMATE(NAME, T_)                                                        \
    static int64_t NAME(const T_ *uabs, const T_ *absz, int64_t m, int64_t n, T_ delta, \
                        T_ coef, int p_pos, T_ *g)                                      \
    {                                                                                   \
        int64_t count = 0;                                                              \
        for (int64_t i = 0; i < n; i++) {                                               \
            T_ acc = (T_)0, u = uabs[i];                                                \
            for (int64_t d = 0; d < m; d++) {                                           \
                const T_ a = absz[d * n + i];                                           \
                const T_ w = p_pos ? a : (T_)1 / a;                                     \
                acc = acc + (u < delta * a ? w : (T_)0);                                \
            }                                                                           \
            acc = acc * coef;                                                           \
            g[i] = acc;                                                                 \
            count += acc != (T_)0;                                                      \
        }                                                                               \
        return count;                                                                   \
    }

DENSE_ESTIMATE(dense_estimate_f32, float)
DENSE_ESTIMATE(dense_estimate_f64, double)

/* The non-zero entries of g, in order: their positions to index and their
 * values to values, both with COMPACT_SPARE entries to spare past the last
 * (each step stores a whole block, then advances by what it kept). AVX-512
 * compresses 16 float32 lanes at a time into registers, AVX2 8 by a
 * permutation from the tables above; elsewhere (and for the rest) a loop
 * without a branch (the density is often near one half). The same lists
 * either way. */
#define COMPACT_SPARE 16

#define COMPACT(NAME, T_)                                                               \
    static int64_t NAME##_loop(const T_ *g, int64_t i, int64_t n, int64_t k, int64_t *index, \
                               T_ *values)                                              \
    {                                                                                   \
        for (; i < n; i++) {                                                            \
            const T_ v = g[i];                                                          \
            index[k] = i;                                                               \
            values[k] = v;                                                              \
            k += v != (T_)0;                                                            \
        }                                                                               \
        return k;                                                                       \
    }

COMPACT(compact_f32, float)
COMPACT(compact_f64, double)

#ifdef ZO_X86_LANES
static __attribute__((target("avx512f"))) int64_t compact_f32_avx512(const float *g, int64_t n, int64_t *index,
                                                                     float *values, int64_t *at)
{
    const __m512i lane = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
    const __m512 zero = _mm512_setzero_ps();
    int64_t k = 0, i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(g + i);
        const __mmask16 mk = _mm512_cmp_ps_mask(v, zero, _CMP_NEQ_UQ);
        if (!mk) continue;
        const __mmask8 lo = (__mmask8)mk, hi = (__mmask8)(mk >> 8);
        const __m512i pos = _mm512_add_epi64(_mm512_set1_epi64(i), lane);
        _mm512_storeu_ps(values + k, _mm512_maskz_compress_ps(mk, v));
        _mm512_storeu_si512((void *)(index + k), _mm512_maskz_compress_epi64(lo, pos));
        const int64_t k_hi = k + __builtin_popcount((unsigned)lo);
        _mm512_storeu_si512((void *)(index + k_hi),
                            _mm512_maskz_compress_epi64(hi, _mm512_add_epi64(pos, _mm512_set1_epi64(8))));
        k = k_hi + __builtin_popcount((unsigned)hi);
    }
    *at = i;
    return k;
}

static __attribute__((target("avx2"))) int64_t compact_f32_avx2(const float *g, int64_t n, int64_t *index,
                                                                 float *values, int64_t k, int64_t *at)
{
    const __m256 zero = _mm256_setzero_ps();
    int64_t i = *at;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(g + i);
        const int mk = _mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_NEQ_UQ));
        if (!mk) continue;
        const __m256i perm = compress8(values + k, v, mk);
        const __m256i pos = _mm256_add_epi32(_mm256_set1_epi32((int)i), perm);  /* n < 2^31 (compact_f32) */
        _mm256_storeu_si256((__m256i *)(index + k), _mm256_cvtepi32_epi64(_mm256_castsi256_si128(pos)));
        _mm256_storeu_si256((__m256i *)(index + k + 4), _mm256_cvtepi32_epi64(_mm256_extracti128_si256(pos, 1)));
        k += EVENT_ONES[mk];
    }
    *at = i;
    return k;
}
#endif

static int64_t compact_f32(const float *g, int64_t n, int64_t *index, float *values)
{
    int64_t k = 0, i = 0;
#ifdef ZO_X86_LANES
    if (HAVE_AVX512) k = compact_f32_avx512(g, n, index, values, &i);
    if (HAVE_AVX2 && n < INT32_MAX) k = compact_f32_avx2(g, n, index, values, k, &i);
#endif
    return compact_f32_loop(g, i, n, k, index, values);
}

static int64_t compact_f64(const double *g, int64_t n, int64_t *index, double *values)
{
    return compact_f64_loop(g, 0, n, 0, index, values);
}

/* ------------------------------------------------------------------------
 * The spike function's backward on the CPU, fused: for a call on
 * u = mem - threshold [rows, n] (float32), the step of every entry (the
 * adaptive rule, or the fixed step), the draw of the directions where an
 * estimate can be non-zero, and grad_in = grad_out * G, in one pass per row.
 *
 * The rule (adaptive.py states it; zo_rule holds its constants):
 *   a = |u| (NaN as +inf), r = (count of u > 0) / n, in double;
 *   q1 = the k1-th smallest a; w = clamp(1 - r / rate, 0, 1); where w > 0
 *   also q2 = the k2-th smallest; qa = clamp(q1, low, high), qb likewise;
 *   t = qa (w = 0), qb (w = 1), else exp(lerp(log qa, log qb, w)) with
 *   torch.lerp's formula; d = (float)clamp(t / x_med, floor, ceil); then
 *   the channel and entry floors (float32, the operations of order.floors).
 *
 * The draw: x = |u| / delta_i (adaptive) or |u| (fixed; compared with
 * delta |z|). Each direction's |z| is drawn where x < z_near (a "near"
 * entry); a far entry (x >= z_near, almost all) can only be active through
 * a tail event |z| >= z_tail, which has probability tail_p per entry and
 * direction: their positions over the row's n * m (direction, entry) pairs
 * are drawn as geometric gaps and each gets |z| from the law's tail beyond
 * z_tail. Every |z| then has the law's distribution.
 *
 * Random numbers: counter-based streams per row (row0 + its index in the
 * call; SplitMix64 for the tail events and the other laws, a two-round
 * 32-bit hash of (counter, row key) for the normal law's vectorised
 * ziggurat), keyed by the call's seed, so a row's draws depend on nothing
 * but the seed, its row number and its own membrane. |z| for the normal
 * law: a 128-layer ziggurat (Marsaglia and Tsang, in Doornik's
 * formulation) with Marsaglia's tail method; the other laws through their
 * closed-form quantiles (distributions.py's samplers). The test hook absz
 * ([m, absz_stride] magnitudes, row r of the call at r * n) replaces the
 * draw; then the estimate's bits are sampling.estimate's.
 * ------------------------------------------------------------------------ */

/* 2**-53 and 2**-24 (exact; no hexadecimal float literals, which not every
 * C compiler takes) */
#define TWO_M53 (1.0 / 9007199254740992.0)
#define TWO_M24 (1.0 / 16777216.0)
#define TWO_M24F (1.0f / 16777216.0f)

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

typedef struct {
    uint64_t s;
} zo_rng;

static inline uint64_t rng_bits(zo_rng *r)
{
    r->s += 0x9e3779b97f4a7c15ULL;
    return mix64(r->s);
}

/* uniform on (0, 1] */
static inline double rng_open(zo_rng *r)
{
    return (double)((rng_bits(r) >> 11) + 1) * TWO_M53;
}

/* v where c holds, else +0 (without a branch: whether an entry is active is
 * a coin flip the branch predictor cannot learn) */
static inline float keep_if(float v, int c)
{
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    b &= (uint32_t)0 - (uint32_t)(c != 0);
    memcpy(&v, &b, sizeof v);
    return v;
}

/* One direction's term of the estimate: w(z) = z (p = +1) or 1 / z
 * (p = -1) where x < delta z, else +0 (sampling.estimate's operations) */
static inline float active_term(float x, float z, float delta, int p_pos)
{
    const float w = p_pos ? z : 1.0f / z;
    return keep_if(w, x < delta * z);
}

#define ZIG_LAYERS 128
#define ZIG_R 3.442619855899
#define ZIG_V 9.91256303526217e-3
/* the layers' edges X, their ratios, and the density exp(-X^2 / 2) at each edge */
static double ZIG_X[ZIG_LAYERS + 1], ZIG_RATIO[ZIG_LAYERS], ZIG_F[ZIG_LAYERS + 1];
/* float copies for the vectorised fast path: the ratios rounded down, so a
 * value the fast path accepts lies in its layer's rectangle */
static float ZIG_XF[ZIG_LAYERS], ZIG_RF[ZIG_LAYERS];

static void fill_ziggurat(void)
{
    double f = exp(-0.5 * ZIG_R * ZIG_R);
    ZIG_X[0] = ZIG_V / f;
    ZIG_X[1] = ZIG_R;
    ZIG_X[ZIG_LAYERS] = 0.0;
    for (int i = 2; i < ZIG_LAYERS; i++) {
        ZIG_X[i] = sqrt(-2.0 * log(ZIG_V / ZIG_X[i - 1] + f));
        f = exp(-0.5 * ZIG_X[i] * ZIG_X[i]);
    }
    for (int i = 0; i <= ZIG_LAYERS; i++) ZIG_F[i] = exp(-0.5 * ZIG_X[i] * ZIG_X[i]);
    for (int i = 0; i < ZIG_LAYERS; i++) {
        ZIG_RATIO[i] = ZIG_X[i + 1] / ZIG_X[i];
        ZIG_XF[i] = (float)ZIG_X[i];
        ZIG_RF[i] = (float)ZIG_RATIO[i];
        if ((double)ZIG_RF[i] > ZIG_RATIO[i]) ZIG_RF[i] = nextafterf(ZIG_RF[i], 0.0f);
    }
}

/* whether x, in layer i but outside its rectangle, lies under the density:
 * a point uniform between the densities at the layer's edges (v uniform on
 * (0, 1]) below exp(-x^2 / 2); one exp */
static inline int zig_wedge(int i, double x, double v)
{
    return ZIG_F[i + 1] + (1.0 - v) * (ZIG_F[i] - ZIG_F[i + 1]) < exp(-0.5 * x * x);
}

/* |N(0, 1)| conditioned on being at least a (> 0): Marsaglia's tail method */
static double normal_tail(zo_rng *r, double a)
{
    double x, y;
    do {
        x = -log(rng_open(r)) / a;
        y = -log(rng_open(r));
    } while (2.0 * y < x * x);
    return a + x;
}

/* |N(0, 1)| */
static inline double half_normal(zo_rng *r)
{
    for (;;) {
        uint64_t b = rng_bits(r);
        int i = (int)(b & (ZIG_LAYERS - 1));
        double u = (double)(b >> 11) * TWO_M53;
        if (u < ZIG_RATIO[i]) return u * ZIG_X[i];
        if (i == 0) return normal_tail(r, ZIG_R);
        double x = u * ZIG_X[i];
        if (zig_wedge(i, x, rng_open(r))) return x;
    }
}

/* The normal law's draws of a row, vectorised: draw c of a row's stream is
 * a 32-bit hash of (c, the row's key): its low 7 bits pick the ziggurat's
 * layer, its top 24 the uniform. The fast path (the layer's rectangle,
 * about 99% of draws) runs in vector lanes and marks the others with -1;
 * zig_slow finishes those one by one (the wedge, the tail, a new draw). */
/* the hash, in place, of a uint32_t or of every lane of a vector of them
 * (GCC's vector extension: the vector lanes below use this one definition) */
#define HASH32(x)             \
    do {                      \
        (x) ^= (x) >> 16;     \
        (x) *= 0x7feb352du;   \
        (x) ^= (x) >> 15;     \
        (x) *= 0x846ca68bu;   \
        (x) ^= (x) >> 16;     \
    } while (0)

static inline uint32_t hash32(uint32_t x)
{
    HASH32(x);
    return x;
}

static inline uint32_t draw_bits(uint32_t c, uint32_t k0, uint32_t k1)
{
    return hash32(hash32(c ^ k0) ^ k1);
}

#ifdef ZO_X86_LANES

typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef uint32_t u32x16 __attribute__((vector_size(64)));

static inline __attribute__((target("avx2"))) __m256i hash32_avx2(__m256i x)
{
    u32x8 v = (u32x8)x;
    HASH32(v);
    return (__m256i)v;
}

/* zig_fast's arithmetic eight lanes at a time with the AVX2 gathers (the
 * same operations, so the same bits); the tail of cnt % 8 as zig_fast */
static __attribute__((target("avx2"))) int64_t zig_fast_avx2(uint32_t k0, uint32_t k1, uint32_t c0,
                                                             int64_t cnt, float *z, int32_t *rej,
                                                             int64_t *nrej, int64_t base)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i vk0 = _mm256_set1_epi32((int)k0), vk1 = _mm256_set1_epi32((int)k1);
    const __m256i mask = _mm256_set1_epi32(ZIG_LAYERS - 1);
    const __m256 scale = _mm256_set1_ps(TWO_M24F), minus = _mm256_set1_ps(-1.0f);
    int64_t k = 0;
    for (; k + 8 <= cnt; k += 8) {
        __m256i c = _mm256_add_epi32(_mm256_set1_epi32((int)(c0 + (uint32_t)k)), lane);
        __m256i b = hash32_avx2(_mm256_xor_si256(hash32_avx2(_mm256_xor_si256(c, vk0)), vk1));
        __m256i i = _mm256_and_si256(b, mask);
        __m256 u = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(b, 8)), scale);
        __m256 xf = _mm256_i32gather_ps(ZIG_XF, i, 4), rf = _mm256_i32gather_ps(ZIG_RF, i, 4);
        __m256 zf = _mm256_mul_ps(u, xf), ok = _mm256_cmp_ps(u, rf, _CMP_LT_OQ);
        _mm256_storeu_ps(z + k, _mm256_blendv_ps(minus, zf, ok));
        unsigned out = ~(unsigned)_mm256_movemask_ps(ok) & 0xffu;
        while (out) {
            rej[(*nrej)++] = (int32_t)(base + k + __builtin_ctz(out));
            out &= out - 1;
        }
    }
    return k;
}

/* the same arithmetic sixteen lanes at a time with AVX-512, the layer's
 * constants picked from registers (four two-table permutes and three blends
 * instead of a gather), the rejected lanes' positions compressed into rej
 * without a branch */
static inline __attribute__((target("avx512f"))) __m512i hash32_avx512(__m512i x)
{
    u32x16 v = (u32x16)x;
    HASH32(v);
    return (__m512i)v;
}

static inline __attribute__((target("avx512f"))) __m512 zig_pick(const __m512 *t, __m512i i, __mmask16 b5,
                                                                 __mmask16 b6)
{
    const __m512 lo = _mm512_mask_blend_ps(b5, _mm512_permutex2var_ps(t[0], i, t[1]),
                                           _mm512_permutex2var_ps(t[2], i, t[3]));
    const __m512 hi = _mm512_mask_blend_ps(b5, _mm512_permutex2var_ps(t[4], i, t[5]),
                                           _mm512_permutex2var_ps(t[6], i, t[7]));
    return _mm512_mask_blend_ps(b6, lo, hi);
}

static __attribute__((target("avx512f"))) int64_t zig_fast_avx512(uint32_t k0, uint32_t k1, uint32_t c0,
                                                                 int64_t cnt, float *z, int32_t *rej,
                                                                 int64_t *nrej)
{
    __m512 xt[8], rt[8];
    for (int q = 0; q < 8; q++) {
        xt[q] = _mm512_loadu_ps(ZIG_XF + 16 * q);
        rt[q] = _mm512_loadu_ps(ZIG_RF + 16 * q);
    }
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i vk0 = _mm512_set1_epi32((int)k0), vk1 = _mm512_set1_epi32((int)k1);
    const __m512i mask = _mm512_set1_epi32(ZIG_LAYERS - 1);
    const __m512i bit5 = _mm512_set1_epi32(32), bit6 = _mm512_set1_epi32(64);
    const __m512 scale = _mm512_set1_ps(TWO_M24F), minus = _mm512_set1_ps(-1.0f);
    int64_t k = 0, nr = *nrej;
    for (; k + 16 <= cnt; k += 16) {
        const __m512i pos = _mm512_add_epi32(_mm512_set1_epi32((int)k), lane);
        const __m512i c = _mm512_add_epi32(_mm512_set1_epi32((int)c0), pos);
        const __m512i b = hash32_avx512(_mm512_xor_si512(hash32_avx512(_mm512_xor_si512(c, vk0)), vk1));
        const __m512i i = _mm512_and_si512(b, mask);
        const __mmask16 b5 = _mm512_test_epi32_mask(i, bit5), b6 = _mm512_test_epi32_mask(i, bit6);
        const __m512 u = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(b, 8)), scale);
        const __m512 xf = zig_pick(xt, i, b5, b6), rf = zig_pick(rt, i, b5, b6);
        const __mmask16 ok = _mm512_cmp_ps_mask(u, rf, _CMP_LT_OQ);
        _mm512_storeu_ps(z + k, _mm512_mask_blend_ps(ok, minus, _mm512_mul_ps(u, xf)));
        _mm512_storeu_si512((void *)(rej + nr), _mm512_maskz_compress_epi32((__mmask16)~ok, pos));
        nr += __builtin_popcount((unsigned)(__mmask16)~ok);
    }
    *nrej = nr;
    return k;
}
#endif

VECTOR_CLONES static void zig_fast_from(uint32_t k0, uint32_t k1, uint32_t c0, int64_t k,
                                        int64_t cnt, float *restrict z)
{
    for (; k < cnt; k++) {
        const uint32_t b = draw_bits(c0 + (uint32_t)k, k0, k1);
        const uint32_t i = b & (ZIG_LAYERS - 1);
        const float u = (float)(int32_t)(b >> 8) * TWO_M24F;
        const float xf = ZIG_XF[i], rf = ZIG_RF[i];
        const float zf = u * xf;
        z[k] = u < rf ? zf : -1.0f;
    }
}

/* the positions of the draws zig_fast_from marked, from k on, appended to rej */
static void marked_from(const float *z, int64_t k, int64_t cnt, int32_t *rej, int64_t *nrej)
{
    for (; k < cnt; k++) {
        rej[*nrej] = (int32_t)k;
        *nrej += z[k] < 0.0f;
    }
}


/* cnt draws from counter c0 into z; the positions of those left to
 * zig_slow (marked -1) go to rej (cnt + 16 entries), their number is returned */
static int64_t zig_fast(uint32_t k0, uint32_t k1, uint32_t c0, int64_t cnt, float *z, int32_t *rej)
{
    int64_t k = 0, nrej = 0;
#ifdef ZO_X86_LANES
    if (HAVE_AVX512) k = zig_fast_avx512(k0, k1, c0, cnt, z, rej, &nrej);
    if (HAVE_AVX2) k += zig_fast_avx2(k0, k1, c0 + (uint32_t)k, cnt - k, z + k, rej, &nrej, k);
#endif
    zig_fast_from(k0, k1, c0, k, cnt, z);
    marked_from(z, k, cnt, rej, &nrej);
    return nrej;
}


static void zig_slow(uint32_t k0, uint32_t k1, uint32_t c0, const int32_t *rej, int64_t nrej, float *z,
                     uint64_t key)
{
    for (int64_t j = 0; j < nrej; j++) {
        const int64_t k = rej[j];
        const uint32_t c = c0 + (uint32_t)k;
        const uint32_t b = draw_bits(c, k0, k1);
        const int i = (int)(b & (ZIG_LAYERS - 1));
        const double u = (double)(b >> 8) * TWO_M24;
        zo_rng rng = {mix64(key ^ ((uint64_t)c * 0xd1b54a32d192ed03ULL))};
        double v;
        if (i == 0) {
            v = normal_tail(&rng, ZIG_R);
        } else {
            const double x = u * ZIG_X[i];
            v = zig_wedge(i, x, rng_open(&rng)) ? x : half_normal(&rng);
        }
        z[k] = (float)v;
    }
}

/* The uniform law's draws of a row, in vector lanes: draw c is the top 24
 * bits of the 32-bit hash of (c, the row's key) the normal law's draws use,
 * as a uniform on [0, 1) */
VECTOR_CLONES static void uniform_draws(uint32_t k0, uint32_t k1, uint32_t c0, int64_t cnt, float *restrict z)
{
    for (int64_t k = 0; k < cnt; k++) z[k] = (float)(int32_t)(draw_bits(c0 + (uint32_t)k, k0, k1) >> 8) * TWO_M24F;
}

/* acc += w(z k) where x < delta z k (w(a) = a for p = +1, 1 / a for p = -1) */
VECTOR_CLONES static void accumulate(const float *restrict x, const float *restrict z,
                                     float *restrict acc, int64_t cnt, float k, float delta,
                                     int p_pos)
{
    for (int64_t j = 0; j < cnt; j++) acc[j] = acc[j] + active_term(x[j], z[j] * k, delta, p_pos);
}

/* The samplers' kinds (distributions.SAMPLERS) the fused backward draws. */
#define KIND_NORMAL 0
#define KIND_UNIFORM 1
#define KIND_EXPONENTIAL 2
#define KIND_LOMAX2 4

/* Q(1 - q) of |z| for q in (0, 1] (kinds other than the normal) */
static inline double abs_z_of_q(int kind, double q, double k)
{
    if (kind == KIND_UNIFORM) return (1.0 - q) * k;
    if (kind == KIND_EXPONENTIAL) return -log(q) * k;
    double s = sqrt(1.0 - q); /* KIND_LOMAX2 */
    return s * (1.0 + s) / q * k;
}

/* one |z| of the law */
static inline double draw_abs_z1(zo_rng *r, int kind, double k)
{
    if (kind == KIND_NORMAL) return half_normal(r) * k;
    return abs_z_of_q(kind, rng_open(r), k);
}

/* one |z| of the law beyond z_tail (the tail event of probability tail_p) */
static inline double draw_tail_z(zo_rng *r, int kind, double k, double z_tail, double tail_p)
{
    if (kind == KIND_NORMAL) return normal_tail(r, z_tail / k) * k;
    return abs_z_of_q(kind, tail_p * rng_open(r), k);
}

typedef struct {
    int adaptive;              /* 0: the fixed step (delta) */
    int64_t k1, k2;            /* ranks of the band and of the silent band */
    double rate, low, high, x_med, floor, ceil;
    int64_t groups;            /* channels per row (1: none) */
    float x_q, x_e, ceil_f;    /* channel and entry floors (0: off) */
} zo_rule;

typedef struct {
    int kind, p_pos;
    int64_t m;                 /* directions */
    float delta, coef;
    double kparam, z_near, z_tail, tail_p;
} zo_law;

/* The rule's step of a row whose statistics are q1, q2 (when w > 0) and
 * count entries above zero of n. */
static float rule_row_step(const zo_rule *R, double w, float q1, float q2)
{
    double qa = q1, qb = q2, t;
    qa = qa < R->low ? R->low : (qa > R->high ? R->high : qa);
    qb = qb < R->low ? R->low : (qb > R->high ? R->high : qb);
    if (w <= 0.0) {
        t = qa;
    } else if (w >= 1.0) {
        t = qb;
    } else {
        double la = log(qa), lb = log(qb);
        t = exp(w < 0.5 ? la + w * (lb - la) : lb - (lb - la) * (1.0 - w));
    }
    t = t / R->x_med;
    t = t < R->floor ? R->floor : (t > R->ceil ? R->ceil : t);
    return (float)t;
}

static inline double rule_weight(const zo_rule *R, int64_t count, int64_t n)
{
    double w = 1.0 - ((double)count / (double)n) / R->rate;
    return w < 0.0 ? 0.0 : (w > 1.0 ? 1.0 : w);
}

/* the smallest of n values a = |u| (NaN read as +inf: no NaN, no -0).
 * Non-negative floats order as their bits do, and the minimum of unsigned
 * integers is one value whatever the order, so GCC vectorises this loop
 * itself (it does not reorder a float minimum under the flags). */
VECTOR_CLONES static float row_min(const float *restrict v, int64_t n)
{
    uint32_t m = 0x7f800000u; /* +inf */
    for (int64_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, v + i, sizeof b);
        m = b < m ? b : m;
    }
    float near;
    memcpy(&near, &m, sizeof near);
    return near;
}

/* each entry's step: max(d, min(a / x_e, ceil)) (x_e > 0), else d */
VECTOR_CLONES static void entry_steps(const float *restrict a, float *restrict o, int64_t n, float d,
                                      float x_e, float ceil)
{
    if (x_e > 0.0f) {
        for (int64_t i = 0; i < n; i++) {
            float f = a[i] / x_e;
            f = f > ceil ? ceil : f;
            o[i] = f > d ? f : d;
        }
    } else {
        for (int64_t i = 0; i < n; i++) o[i] = d;
    }
}

/* out = u - shift */
VECTOR_CLONES static void sub_row(const float *restrict u, float shift, float *restrict out, int64_t n)
{
    for (int64_t i = 0; i < n; i++) out[i] = u[i] - shift;
}

/* Whether u - shift has the bits of u itself for every u (shift +0: -0 + 0
 * would be +0), so a pass skips the subtraction. */
static inline int no_shift(float shift)
{
    return shift == 0.0f && !signbit(shift);
}

/* A pass over rows [r0, r0 + rows) of u (u points at row r0) for
 * over_shifted_rows: returns its count, or -1 (no memory). */
typedef int64_t (*shifted_rows_fn)(const float *u, int64_t r0, int64_t rows, void *ctx);

/* fn over the rows [lo, hi) of mem [rows, n] compared as u = mem - shift (a
 * step's membrane and threshold: rounded once, as torch.sub rounds): the
 * subtraction runs into a buffer of its own, chunks of rows of about
 * 64 KiB (in cache for the pass that follows, and never a large
 * allocation), or not at all where no_shift. Rows are independent, so
 * the chunks give the bits of one pass over u. Returns the counts' sum,
 * or -1 (no memory). */
static int64_t over_shifted_rows(const float *mem, float shift, int64_t lo, int64_t hi, int64_t n,
                                 shifted_rows_fn fn, void *ctx)
{
    if (hi <= lo) return 0;
    if (no_shift(shift) || n <= 0) return fn(mem + lo * n, lo, hi - lo, ctx);
    const int64_t chunk = n >= 16384 ? 1 : 16384 / n;
    const int64_t first = hi - lo < chunk ? hi - lo : chunk;
    float *buf = (float *)malloc((size_t)(first * n) * sizeof(float));
    if (!buf) return -1;
    int64_t total = 0;
    for (int64_t r0 = lo; r0 < hi; r0 += chunk) {
        const int64_t rows = hi - r0 < chunk ? hi - r0 : chunk;
        sub_row(mem + r0 * n, shift, buf, rows * n);
        const int64_t k = fn(buf, r0, rows, ctx);
        if (k < 0) {
            total = -1;
            break;
        }
        total += k;
    }
    free(buf);
    return total;
}

/* x = |u / delta| in place of delta */
VECTOR_CLONES static void scaled_abs(const float *restrict u, float *restrict x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] = fabsf(u[i] / x[i]);
}

/* out = grad * (g * coef); returns the count of non-zero g * coef */
VECTOR_CLONES static int64_t scale_grad(const float *restrict grad, const float *restrict g,
                                        float *restrict out, int64_t n, float coef)
{
    int64_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        const float e = g[i] * coef;
        total += e != 0.0f;
        out[i] = grad[i] * e;
    }
    return total;
}

/* scale_grad without an incoming gradient: out = G itself (a draw of the
 * estimate, as the sequence layers keep it) */
VECTOR_CLONES static int64_t scale_only(const float *restrict g, float *restrict out, int64_t n, float coef)
{
    int64_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        const float e = g[i] * coef;
        total += e != 0.0f;
        out[i] = e;
    }
    return total;
}

/* The step of every entry of one row: a = |u| (NaN as +inf), count the
 * entries above zero; writes delta[n]. */
static void rule_row(const zo_rule *R, const float *a, int64_t n, int64_t count, kth_ws *ws,
                     float *delta)
{
    float q1 = 0.0f, q2 = 0.0f;
    double w = rule_weight(R, count, n);
    /* the band's statistic where the sample fires at all, the silent band's
     * where it is silent at all */
    kth_pair(a, n, w < 1.0 ? R->k1 : 0, w > 0.0 ? R->k2 : 0, ws, &q1, &q2);
    float d = rule_row_step(R, w, q1, q2);
    int64_t pos = n / R->groups;
    for (int64_t g = 0; g < R->groups; g++) {
        const float *v = a + g * pos;
        float dc = d;
        if (R->x_q > 0.0f) {
            float f = row_min(v, pos) / R->x_q;
            f = f > R->ceil_f ? R->ceil_f : f;
            dc = f > dc ? f : dc;
        }
        entry_steps(v, delta + g * pos, pos, dc, R->x_e, R->ceil_f);
    }
}

/* |u| with NaN as +inf, and the count of entries above zero */
VECTOR_CLONES static int64_t abs_far_row(const float *restrict u, int64_t n, float *restrict a)
{
    int64_t count = 0;
    for (int64_t i = 0; i < n; i++) {
        float x = u[i];
        count += x > 0.0f;
        a[i] = x != x ? INFINITY : fabsf(x);
    }
    return count;
}

/* The adaptive step of every entry of u [rows, n] (rule_delta of order.py). */
static int rule_delta(const float *u, int64_t rows, int64_t n, const zo_rule *R, float *delta)
{
    kth_ws ws;
    int status = kth_ws_init(&ws, n);
    float *a = (float *)malloc((size_t)n * sizeof(float));
    if (!a) status = -1;
    for (int64_t r = 0; !status && r < rows; r++) {
        int64_t count = abs_far_row(u + r * n, n, a);
        rule_row(R, a, n, count, &ws, delta + r * n);
    }
    kth_ws_free(&ws);
    free(a);
    return status;
}

/* rule_stats: per row of u [rows, n], the k1-th and k2-th smallest of |u|
 * (NaN as +inf: the values torch.kthvalue returns) and the count of entries
 * above 0 (for a rule without the entry floor; with it, rule_delta does the
 * whole rule). */
static int rule_stats(const float *u, int64_t rows, int64_t n, int64_t k1, int64_t k2,
                      float *out1, float *out2, int64_t *fire)
{
    kth_ws ws;
    int status = kth_ws_init(&ws, n);
    float *a = (float *)malloc((size_t)n * sizeof(float));
    if (!a) status = -1;
    for (int64_t r = 0; !status && r < rows; r++) {
        fire[r] = abs_far_row(u + r * n, n, a);
        kth_pair(a, n, k1, k2, &ws, out1 + r, out2 + r);
    }
    kth_ws_free(&ws);
    free(a);
    return status;
}

/* The near entries of a row (x < z_near), in order: their positions to idx
 * and their x to xs (both with 16 entries to spare past the n it can
 * list); returns their number. AVX-512 compresses 16 lanes at a time (into a
 * register, then one full store: the compressing store to memory is slow on
 * some CPUs), AVX2 8 lanes by a permutation from the tables above, then a
 * loop without a branch for the rest. The same lists either way. */

#ifdef ZO_X86_LANES
static __attribute__((target("avx512f"))) int64_t list_near_avx512(const float *x, int64_t n, float z_near,
                                                                   int32_t *idx, float *xs, int64_t *at)
{
    const __m512 t = _mm512_set1_ps(z_near);
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    int64_t near = 0, i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(x + i);
        const __mmask16 mk = _mm512_cmp_ps_mask(v, t, _CMP_LT_OQ);
        const __m512i pos = _mm512_add_epi32(_mm512_set1_epi32((int)i), lane);
        _mm512_storeu_ps(xs + near, _mm512_maskz_compress_ps(mk, v));
        _mm512_storeu_si512((void *)(idx + near), _mm512_maskz_compress_epi32(mk, pos));
        near += __builtin_popcount((unsigned)mk);
    }
    *at = i;
    return near;
}

/* g[i] = the next of acc where x[i] < z_near, else +0, 16 lanes at a time */
static __attribute__((target("avx512f"))) int64_t spread_near_avx512(const float *x, int64_t n, float z_near,
                                                                     const float *acc, float *g,
                                                                     int64_t *at)
{
    const __m512 t = _mm512_set1_ps(z_near);
    int64_t k = 0, i = 0;
    for (; i + 16 <= n; i += 16) {
        const __mmask16 mk = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), t, _CMP_LT_OQ);
        _mm512_storeu_ps(g + i, _mm512_maskz_expand_ps(mk, _mm512_loadu_ps(acc + k)));
        k += __builtin_popcount((unsigned)mk);
    }
    *at = i;
    return k;
}

/* the same eight lanes at a time (AVX2: the compress and the expand are
 * permutations from the tables above), from entry *at on */
static __attribute__((target("avx2"))) int64_t list_near_avx2(const float *x, int64_t n, float z_near,
                                                               int32_t *idx, float *xs, int64_t near,
                                                               int64_t *at)
{
    const __m256 t = _mm256_set1_ps(z_near);
    int64_t i = *at;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const int mk = _mm256_movemask_ps(_mm256_cmp_ps(v, t, _CMP_LT_OQ));
        const __m256i perm = compress8(xs + near, v, mk);
        _mm256_storeu_si256((__m256i *)(idx + near), _mm256_add_epi32(_mm256_set1_epi32((int)i), perm));
        near += EVENT_ONES[mk];
    }
    *at = i;
    return near;
}

static __attribute__((target("avx2"))) int64_t spread_near_avx2(const float *x, int64_t n, float z_near,
                                                                 const float *acc, float *g, int64_t k,
                                                                 int64_t *at)
{
    const __m256 t = _mm256_set1_ps(z_near);
    int64_t i = *at;
    for (; i + 8 <= n; i += 8) {
        const __m256 c = _mm256_cmp_ps(_mm256_loadu_ps(x + i), t, _CMP_LT_OQ);
        const int mk = _mm256_movemask_ps(c);
        const __m256i perm = _mm256_loadu_si256((const __m256i *)BIT_RANKS[mk]);
        _mm256_storeu_ps(g + i, _mm256_and_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(acc + k), perm), c));
        k += EVENT_ONES[mk];
    }
    *at = i;
    return k;
}
#endif

static int64_t list_near(const float *x, int64_t n, float z_near, int32_t *idx, float *xs)
{
    int64_t near = 0, i = 0;
#ifdef ZO_X86_LANES
    if (HAVE_AVX512) near = list_near_avx512(x, n, z_near, idx, xs, &i);
    if (HAVE_AVX2) near = list_near_avx2(x, n, z_near, idx, xs, near, &i);
#endif
    for (; i < n; i++) {
        const float xi = x[i];
        idx[near] = (int32_t)i;
        xs[near] = xi;
        near += xi < z_near;
    }
    return near;
}

/* the inverse of list_near: g[i] = acc[k] at the k-th near entry, +0 elsewhere
 * (acc with 16 entries to spare) */
static void spread_near(const float *x, int64_t n, float z_near, const float *acc, float *g)
{
    int64_t k = 0, i = 0;
#ifdef ZO_X86_LANES
    if (HAVE_AVX512) k = spread_near_avx512(x, n, z_near, acc, g, &i);
    if (HAVE_AVX2) k = spread_near_avx2(x, n, z_near, acc, g, k, &i);
#endif
    for (; i < n; i++) {
        const int c = x[i] < z_near;
        g[i] = keep_if(acc[k], c);
        k += c;
    }
}

/* The fused backward (block comment above): out = grad * G(u) for rows
 * row0 .. row0 + rows - 1 of a call (u, grad and out point at the first of
 * them), n entries each, or G(u) itself where grad is NULL (a draw); absz (test hook, NULL for a draw) points at the
 * magnitudes of the first row, direction d of row r at d * absz_stride +
 * r * n. Returns the number of non-zero estimates, or -1 when memory ran
 * out. */
static int64_t zo_spike_backward(const float *u, const float *grad, float *out, int64_t rows,
                                 int64_t n, const zo_rule *R, const zo_law *L, const float *absz,
                                 int64_t absz_stride, uint64_t seed, int64_t row0)
{
    kth_ws ws;
    int status = R->adaptive ? kth_ws_init(&ws, n) : 0;
    float *a = (float *)malloc((size_t)n * sizeof(float));
    float *xbuf = (float *)malloc((size_t)n * sizeof(float));
    float *g = (float *)malloc((size_t)n * sizeof(float));
    int32_t *idx = (int32_t *)malloc((size_t)(n + 16) * sizeof(int32_t));
    float *xs = (float *)malloc((size_t)(n + 16) * sizeof(float));
    float *zs = (float *)malloc((size_t)n * sizeof(float));
    float *acc = (float *)malloc((size_t)(n + 16) * sizeof(float));
    int32_t *rej = (int32_t *)malloc((size_t)(n + 16) * sizeof(int32_t));
    if (!a || !xbuf || !g || !idx || !xs || !zs || !acc || !rej) status = -1;
    int64_t total = 0;
    const int64_t pairs = n * L->m;
    const double log_keep = log1p(-L->tail_p);
    for (int64_t r = 0; !status && r < rows; r++) {
        const float *ur = u + r * n;
        int64_t count = abs_far_row(ur, n, a);
        /* the compared membrane: |u / delta_i| (adaptive), else |u| itself (a,
         * whose NaN as +inf is never active either) */
        float *x = R->adaptive ? xbuf : a;
        if (R->adaptive) {
            rule_row(R, a, n, count, &ws, x);
            scaled_abs(ur, x, n);
        }
        if (absz) {
            for (int64_t i = 0; i < n; i++) {
                float acc = 0.0f;
                for (int64_t d = 0; d < L->m; d++)
                    acc = acc + active_term(x[i], absz[d * absz_stride + r * n + i], L->delta, L->p_pos);
                g[i] = acc;
            }
        } else {
            zo_rng rng = {mix64(seed ^ mix64((uint64_t)(row0 + r) + 0x632be59bd9b4e019ULL))};
            const float z_near = (float)L->z_near;
            /* the near entries, listed in order, then drawn */
            const int64_t near = list_near(x, n, z_near, idx, xs);
            if (L->kind == KIND_NORMAL || L->kind == KIND_UNIFORM) {
                const uint64_t key = mix64(seed ^ mix64((uint64_t)(row0 + r) + 0x9fb21c651e98df25ULL));
                const uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
                memset(acc, 0, (size_t)near * sizeof(float));
                for (int64_t d = 0; d < L->m; d++) {
                    const uint32_t c0 = (uint32_t)(d * n);
                    if (L->kind == KIND_NORMAL) {
                        const int64_t nrej = zig_fast(k0, k1, c0, near, zs, rej);
                        zig_slow(k0, k1, c0, rej, nrej, zs, key);
                    } else {
                        uniform_draws(k0, k1, c0, near, zs);
                    }
                    accumulate(xs, zs, acc, near, (float)L->kparam, L->delta, L->p_pos);
                }
                spread_near(x, n, z_near, acc, g);
            } else {
                memset(g, 0, (size_t)n * sizeof(float));
                for (int64_t k = 0; k < near; k++) {
                    const int64_t i = idx[k];
                    const float xi = x[i];
                    float sum = 0.0f;
                    for (int64_t d = 0; d < L->m; d++)
                        sum = sum + active_term(xi, (float)draw_abs_z1(&rng, L->kind, L->kparam), L->delta,
                                                L->p_pos);
                    g[i] = sum;
                }
            }
            /* tail events at the far entries */
            for (int64_t j = -1;;) {
                double gap = floor(log(rng_open(&rng)) / log_keep) + 1.0;
                if (gap >= (double)(pairs - j)) break;
                j += (int64_t)gap;
                int64_t i = j % n;
                if (x[i] < z_near) continue;
                const float z = (float)draw_tail_z(&rng, L->kind, L->kparam, L->z_tail, L->tail_p);
                g[i] = g[i] + active_term(x[i], z, L->delta, L->p_pos);
            }
        }
        total += grad ? scale_grad(grad + r * n, g, out + r * n, n, L->coef)
                      : scale_only(g, out + r * n, n, L->coef);
    }
    if (R->adaptive) kth_ws_free(&ws);
    free(a);
    free(xbuf);
    free(g);
    free(idx);
    free(xs);
    free(zs);
    free(acc);
    free(rej);
    return status ? -1 : total;
}

static PyObject *py_dense_estimate(PyObject *self, PyObject *args)
{
    unsigned long long uabs, absz, g;
    long long m, n, count;
    double delta, coef;
    int p_pos, f64;
    if (!PyArg_ParseTuple(args, "KKLLddiKi", &uabs, &absz, &m, &n, &delta, &coef, &p_pos, &g, &f64))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    count = f64 ? dense_estimate_f64((const double *)uabs, (const double *)absz, m, n, delta, coef,
                                     p_pos, (double *)g)
                : dense_estimate_f32((const float *)uabs, (const float *)absz, m, n, (float)delta,
                                     (float)coef, p_pos, (float *)g);
    Py_END_ALLOW_THREADS
    return PyLong_FromLongLong(count);
}

/* compact over the threads of torch's OpenMP pool: each compacts its share
 * of g (blocks of 16 entries) into lists of its own, then copies them to
 * its place after the shares before it (their counts exchanged at a
 * barrier), its positions shifted by its share's start: the lists of one
 * pass, in order, with nothing written past the last entry's spare. Small
 * calls stay on one thread. Returns the count, or -1 (no memory). */
static int64_t compact_call(const void *g, int64_t n, int64_t *index, void *values, int f64)
{
    const size_t size = f64 ? sizeof(double) : sizeof(float);
    const int nt = threads_for(n, STREAM_PAR_MIN);
    if (nt <= 1)
        return f64 ? compact_f64((const double *)g, n, index, (double *)values)
                   : compact_f32((const float *)g, n, index, (float *)values);
    int64_t counts[64];
    int bad = 0, used = 1;
#ifdef ZO_OPENMP
#pragma omp parallel num_threads(nt < 64 ? nt : 64) reduction(| : bad)
#endif
    {
        int64_t lo, hi, k = -1;
        thread_share16(n, &lo, &hi);
        int q = 0;
#ifdef ZO_OPENMP
        q = omp_get_thread_num();
#pragma omp single
        used = omp_get_num_threads();
#endif
        const int64_t w = hi > lo ? hi - lo : 0;
        int64_t *ix = (int64_t *)malloc((size_t)(w + COMPACT_SPARE) * sizeof(int64_t));
        void *vals = malloc((size_t)(w + COMPACT_SPARE) * size);
        if (ix && vals)
            k = f64 ? compact_f64((const double *)g + lo, w, ix, (double *)vals)
                    : compact_f32((const float *)g + lo, w, ix, (float *)vals);
        counts[q] = k;
#ifdef ZO_OPENMP
#pragma omp barrier
#endif
        int64_t at = 0;
        for (int p = 0; p < q; p++) at += counts[p] > 0 ? counts[p] : 0;
        if (k < 0) {
            bad = 1;
        } else {
            for (int64_t j = 0; j < k; j++) index[at + j] = ix[j] + lo;
            memcpy((char *)values + (size_t)at * size, vals, (size_t)k * size);
        }
        free(ix);
        free(vals);
    }
    if (bad) return -1;
    int64_t total = 0;
    for (int p = 0; p < used; p++) total += counts[p];
    return total;
}

static PyObject *py_compact(PyObject *self, PyObject *args)
{
    unsigned long long g, index, values;
    long long n, count;
    int f64;
    if (!PyArg_ParseTuple(args, "KLKKi", &g, &n, &index, &values, &f64))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    count = compact_call((const void *)g, n, (int64_t *)index, (void *)values, f64);
    Py_END_ALLOW_THREADS
    if (count < 0) return PyErr_NoMemory();
    return PyLong_FromLongLong(count);
}

/* Binary inputs, for the Linear + Leaky layer: the copy kept for backward and
 * the event-driven input current. */


/* The columns of the ones of o[0, n) (bytes 0 or 1), ascending, written to
 * cols from cols[0]; returns their number. Eight bytes at a time, without a
 * branch on the values: their bits gathered into a byte m, then the eight
 * offsets of m written and the count advanced by m's ones (so cols must
 * have 8 entries to spare past the last one it can hold: k may reach the
 * capacity before a block of eight is written). */
#if defined(__GNUC__)
typedef int32_t event_columns __attribute__((vector_size(8 * sizeof(int32_t))));
#endif

static inline int64_t byte_columns(const uint8_t *restrict o, int64_t n, int32_t *restrict cols)
{
    int64_t k = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, o + i, sizeof w);
        const unsigned m = (unsigned)((w * 0x0102040810204080ull) >> 56); /* bit q: byte q */
#if defined(__GNUC__)
        event_columns v;
        memcpy(&v, EVENT_OFFSETS[m], sizeof v);
        v += (int32_t)i;
        memcpy(cols + k, &v, sizeof v);
#else
        for (int q = 0; q < 8; q++) cols[k + q] = (int32_t)i + EVENT_OFFSETS[m][q];
#endif
        k += EVENT_ONES[m];
    }
    for (; i < n; i++) {
        cols[k] = (int32_t)i;
        k += o[i];
    }
    return k;
}

/* Spikes in one byte each and as events. x: rows of n entries; out[i] = x[i]
 * for x in {+0, 1} (bit patterns, so -0 does not pass); returns -1 at the end
 * of the first row that holds another value, else the number of ones. While
 * they are at most cap (none where cols is NULL), the column of every one,
 * row after row in ascending order, goes to cols (cap + 8 entries: see
 * byte_columns) and the end of each row's columns (the running count) to
 * row_end. */
/* The rows [r0, r1) of x [rows, n] as bytes (1 where an entry is one, 0
 * where it is +0) and, per row, the number of ones (into ones_of when not
 * NULL). Returns their sum, or -1 at the first row holding another value.
 * The loop keeps to the entries' own width (a row's count in UT_, n below
 * 2^32; the bits of the other values OR-ed together), which GCC vectorises
 * without widening: 1.5x faster than with 64-bit sums on one thread of the
 * Intel machine (a throwaway loop, rows of 700 and 256 entries). */
#define BINARY_PACK(NAME, T_, UT_, ONE)                                                       \
    VECTOR_CLONES static int64_t NAME(const T_ *restrict x, uint8_t *restrict out, int64_t *ones_of, \
                                      int64_t r0, int64_t r1, int64_t n)                        \
    {                                                                                           \
        int64_t count = 0;                                                                      \
        for (int64_t r = r0; r < r1; r++) {                                                     \
            const T_ *restrict xr = x + r * n;                                                  \
            uint8_t *restrict o = out + r * n;                                                  \
            UT_ ones = 0, other = 0;                                                            \
            for (int64_t i = 0; i < n; i++) {                                                   \
                UT_ b;                                                                          \
                memcpy(&b, xr + i, sizeof b);                                                   \
                const UT_ one = b == (UT_)(ONE);                                                \
                o[i] = (uint8_t)one;                                                            \
                ones += one;                                                                    \
                other |= b & ~((UT_)0 - one); /* (b itself where it is not one: +0 has no bit) */ \
            }                                                                                   \
            if (other) return -1;                                                               \
            if (ones_of) ones_of[r] = (int64_t)ones;                                            \
            count += (int64_t)ones;                                                             \
        }                                                                                       \
        return count;                                                                           \
    }

BINARY_PACK(binary_pack_f32, float, uint32_t, 0x3f800000u)
BINARY_PACK(binary_pack_f64, double, uint64_t, 0x3ff0000000000000ull)

/* The columns of the ones of the packed rows [r0, r1) into cols, each row
 * from its start (row_end of the row before; 0 for row 0). byte_columns
 * writes up to 7 entries past a row's last one, which a later row of the
 * range overwrites; where that could reach past the range's end (the list
 * of another thread's rows) the row is listed one column at a time, unless
 * `spill` (the range ends at the last row: the list's spare room takes
 * them). */
static void list_columns(const uint8_t *packed, const int64_t *row_end, int32_t *cols, int64_t r0, int64_t r1,
                         int64_t n, int spill)
{
    const int64_t end = r1 > r0 ? row_end[r1 - 1] : 0;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *o = packed + r * n;
        int32_t *c = cols + (r ? row_end[r - 1] : 0);
        if (spill || row_end[r] + 8 <= end) {
            byte_columns(o, n, c);
        } else {
            for (int64_t i = 0, k = 0; i < n; i++)
                if (o[i]) c[k++] = (int32_t)i;
        }
    }
}

/* binary_events: x [rows, n] as bytes, the number of its ones (-1 where an
 * entry is neither +0 nor 1) and, where cols is given and the ones fit in
 * `cap`, their columns row after row (row_end: where each row's end). One
 * thread lists while the ones fit, row by row; several (a large x) pack
 * their share of the rows, then list every row when all the ones fit (the
 * list is only read then): the same bytes, count and columns. */
static int64_t binary_events_call(const void *x, uint8_t *out, int32_t *cols, int64_t *row_end, int64_t rows,
                                  int64_t n, int64_t cap, int f64)
{
    const int nt = rows > 1 ? threads_for(rows * n, STREAM_PAR_MIN) : 1;
    if (nt <= 1) {
        int64_t count = 0;
        for (int64_t r = 0; r < rows; r++) {
            const int64_t ones = f64 ? binary_pack_f64((const double *)x, out, NULL, r, r + 1, n)
                                     : binary_pack_f32((const float *)x, out, NULL, r, r + 1, n);
            if (ones < 0) return -1;
            if (cols && count + ones <= cap) {
                byte_columns(out + r * n, n, cols + count);
                row_end[r] = count + ones;
            }
            count += ones;
        }
        return count;
    }
    int64_t total = 0;
    int bad = 0;
    /* the rows' counts go into row_end, then become its running sums */
#ifdef ZO_OPENMP
#pragma omp parallel num_threads(nt) reduction(+ : total) reduction(| : bad)
#endif
    {
        int64_t r0, r1;
        thread_share(rows, &r0, &r1);
        const int64_t k = f64 ? binary_pack_f64((const double *)x, out, cols ? row_end : NULL, r0, r1, n)
                              : binary_pack_f32((const float *)x, out, cols ? row_end : NULL, r0, r1, n);
        if (k < 0) bad = 1;
        else total += k;
    }
    if (bad) return -1;
    if (!cols || total > cap) return total;
    for (int64_t r = 1; r < rows; r++) row_end[r] += row_end[r - 1];
#ifdef ZO_OPENMP
#pragma omp parallel num_threads(nt)
#endif
    {
        int64_t r0, r1;
        thread_share(rows, &r0, &r1);
        list_columns(out, row_end, cols, r0, r1, n, r1 == rows);
    }
    return total;
}

/* The event-driven input current: out[r, :] = the sum of the rows wt[j, :]
 * (wt: [in, m]) over the columns j of row r (cols and row_end of
 * binary_events), added in that order from 0, plus bias (NULL: none). Each
 * block of EVENT_WIDTH bytes of a row is summed in registers (four vectors
 * of GCC's vector extension, which the compiler maps onto the unit at hand;
 * a plain loop elsewhere), the last, narrower block in place in out. */
#define EVENT_WIDTH 256
#if defined(__GNUC__)
typedef float event_vec_float __attribute__((vector_size(EVENT_WIDTH / 4)));
typedef double event_vec_double __attribute__((vector_size(EVENT_WIDTH / 4)));
#define EVENT_BLOCK(T_, cols, start, end, wt, m, c0, o)                                 \
    do {                                                                                \
        event_vec_##T_ a[4] = {{0}, {0}, {0}, {0}}, v;                                  \
        for (int64_t p = start; p < end; p++) {                                         \
            const char *w = (const char *)(wt + (int64_t)cols[p] * m + c0);             \
            for (int q = 0; q < 4; q++) {                                               \
                memcpy(&v, w + q * sizeof v, sizeof v);                                 \
                a[q] += v;                                                              \
            }                                                                           \
        }                                                                               \
        memcpy(o + c0, a, sizeof a);                                                    \
    } while (0)
#else
#define EVENT_BLOCK(T_, cols, start, end, wt, m, c0, o)                                 \
    do {                                                                                \
        T_ a[EVENT_WIDTH / sizeof(T_)] = {0};                                           \
        for (int64_t p = start; p < end; p++) {                                         \
            const T_ *w = wt + (int64_t)cols[p] * m + c0;                               \
            for (int k = 0; k < (int)(EVENT_WIDTH / sizeof(T_)); k++) a[k] += w[k];      \
        }                                                                               \
        memcpy(o + c0, a, sizeof a);                                                    \
    } while (0)
#endif

#define EVENT_SUM(NAME, T_)                                                             \
    VECTOR_CLONES static void NAME(const int32_t *cols, const int64_t *row_end,         \
                                   const T_ *wt, const T_ *bias, T_ *out, int64_t r0,   \
                                   int64_t r1, int64_t m)                               \
    {                                                                                   \
        const int64_t W = EVENT_WIDTH / sizeof(T_);                                     \
        for (int64_t r = r0; r < r1; r++) {                                             \
            const int64_t start = r ? row_end[r - 1] : 0, end = row_end[r];             \
            T_ *restrict o = out + r * m;                                               \
            int64_t c0 = 0;                                                             \
            for (; c0 + W <= m; c0 += W) EVENT_BLOCK(T_, cols, start, end, wt, m, c0, o);  \
            for (int64_t c = c0; c < m; c++) o[c] = (T_)0;                              \
            for (int64_t p = start; p < end && c0 < m; p++) {                           \
                const T_ *restrict w = wt + (int64_t)cols[p] * m;                       \
                for (int64_t c = c0; c < m; c++) o[c] += w[c];                          \
            }                                                                           \
            if (bias)                                                                   \
                for (int64_t c = 0; c < m; c++) o[c] = o[c] + bias[c];                  \
        }                                                                               \
    }

EVENT_SUM(event_sum_f32, float)
EVENT_SUM(event_sum_f64, double)

/* The event-driven weight gradient, the transpose of the dense h^T @ x for a
 * binary x: gt[j, :] += h[r, :] for every one (r, j) of the bytes x [rows, n]
 * (0 or 1) with j in [lo, hi), rows in ascending order; h: [rows, m], gt:
 * [n, m] (zeroed by the caller). A row of h that is all zero adds nothing
 * and its ones are not listed. Equals the product to the rounding of the
 * sum (its order differs; each column's sum runs in the same order whatever
 * share of the columns a thread takes). Returns 0, or -1 when memory ran
 * out. */
#define EVENT_OUTER(NAME, T_)                                                           \
    VECTOR_CLONES static int NAME(const uint8_t *x, const T_ *h, T_ *gt, int64_t rows,   \
                                  int64_t n, int64_t m, int64_t lo, int64_t hi)         \
    {                                                                                   \
        int32_t *cols = (int32_t *)malloc((size_t)(hi - lo + 8) * sizeof(int32_t));    \
        if (!cols) return -1;                                                           \
        for (int64_t r = 0; r < rows; r++) {                                            \
            const T_ *restrict hr = h + r * m;                                          \
            int nonzero = 0;                                                            \
            for (int64_t c = 0; c < m; c++) nonzero |= hr[c] != (T_)0;                  \
            if (!nonzero) continue;                                                     \
            const int64_t k = byte_columns(x + r * n + lo, hi - lo, cols);              \
            for (int64_t p = 0; p < k; p++) {                                           \
                T_ *restrict g = gt + (lo + (int64_t)cols[p]) * m;                      \
                for (int64_t c = 0; c < m; c++) g[c] += hr[c];                          \
            }                                                                           \
        }                                                                               \
        free(cols);                                                                     \
        return 0;                                                                       \
    }

EVENT_OUTER(event_outer_f32, float)
EVENT_OUTER(event_outer_f64, double)

/* The input gradient at the active entries of the layer below: for every
 * flat index i of index[0, cnt) into [rows, n], dx[i] = the dot product of
 * h[i / n, :] and wt[i % n, :] (h: [rows, m], wt: [n, m], the weight
 * transposed); dx is written there only. The products are summed in
 * DOT_LANES running sums (lane q takes the columns c = q mod DOT_LANES),
 * added up at the end: the same order on every instruction set. */
#define DOT_LANES 16
#define SAMPLED_DOT(NAME, T_)                                                           \
    VECTOR_CLONES static void NAME(const int64_t *index, int64_t cnt, const T_ *h,       \
                                   const T_ *wt, T_ *dx, int64_t n, int64_t m)          \
    {                                                                                   \
        for (int64_t k = 0; k < cnt; k++) {                                             \
            const int64_t i = index[k];                                                 \
            const T_ *restrict a = h + (i / n) * m, *restrict b = wt + (i % n) * m;     \
            T_ lane[DOT_LANES] = {0};                                                   \
            int64_t c = 0;                                                              \
            for (; c + DOT_LANES <= m; c += DOT_LANES)                                  \
                for (int q = 0; q < DOT_LANES; q++) lane[q] += a[c + q] * b[c + q];     \
            for (int q = 0; c + q < m; q++) lane[q] += a[c + q] * b[c + q];             \
            T_ s = (T_)0;                                                               \
            for (int q = 0; q < DOT_LANES; q++) s += lane[q];                           \
            dx[i] = s;                                                                  \
        }                                                                               \
    }

SAMPLED_DOT(sampled_dot_f32, float)
SAMPLED_DOT(sampled_dot_f64, double)

/* The event sums split their rows over threads from this much work (ones and
 * rows times output columns): on the development machine the C sum of 3200
 * rows x 256 columns took 0.14 ms with no ones and 1.3 ms with 35 ones a row. */
#define EVENT_PAR_MIN (1 << 20)

/* The spike function's forward: out = 1[x > 0] in x's type (NaN and -0 give
 * 0, as PyTorch's (x > 0).to(x.dtype)). */
#define HEAVISIDE(NAME, T_)                                                             \
    VECTOR_CLONES static void NAME(const T_ *restrict x, T_ *restrict out, int64_t n)  \
    {                                                                                   \
        for (int64_t i = 0; i < n; i++) out[i] = x[i] > (T_)0 ? (T_)1 : (T_)0;          \
    }

HEAVISIDE(heaviside_f32, float)
HEAVISIDE(heaviside_f64, double)

/* dst [cols, rows] = the transpose of src [rows, cols], over the rows
 * [r0, r1) of src, in tiles of TRANSPOSE_TILE x TRANSPOSE_TILE (each tile's
 * reads and writes within a few cache lines). A copy: the same values. */
#define TRANSPOSE_TILE 16
#define TRANSPOSE(NAME, T_)                                                             \
    static void NAME(const T_ *restrict src, T_ *restrict dst, int64_t rows, int64_t cols, \
                     int64_t r0, int64_t r1)                                            \
    {                                                                                   \
        for (int64_t i0 = r0; i0 < r1; i0 += TRANSPOSE_TILE) {                          \
            const int64_t i1 = i0 + TRANSPOSE_TILE < r1 ? i0 + TRANSPOSE_TILE : r1;     \
            for (int64_t j0 = 0; j0 < cols; j0 += TRANSPOSE_TILE) {                     \
                const int64_t j1 = j0 + TRANSPOSE_TILE < cols ? j0 + TRANSPOSE_TILE : cols; \
                for (int64_t j = j0; j < j1; j++)                                       \
                    for (int64_t i = i0; i < i1; i++) dst[j * rows + i] = src[i * cols + j]; \
            }                                                                           \
        }                                                                               \
    }

TRANSPOSE(transpose_f32, float)
TRANSPOSE(transpose_f64, double)

#ifdef ZO_X86_LANES
/* An 8 x 8 block of floats transposed in AVX lanes: rows of s (stride ss)
 * into rows of d (stride ds). */
static inline __attribute__((always_inline, target("avx2"))) void transpose8_f32(const float *s, int64_t ss,
                                                                                 float *d, int64_t ds)
{
    __m256 r[8], t[8], u[8];
    for (int k = 0; k < 8; k++) r[k] = _mm256_loadu_ps(s + k * ss);
    for (int k = 0; k < 8; k += 2) {
        t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
        t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
    }
    for (int k = 0; k < 8; k += 4) {
        u[k] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int k = 0; k < 4; k++) {
        _mm256_storeu_ps(d + k * ds, _mm256_permute2f128_ps(u[k], u[k + 4], 0x20));
        _mm256_storeu_ps(d + (k + 4) * ds, _mm256_permute2f128_ps(u[k], u[k + 4], 0x31));
    }
}

/* transpose_f32 in AVX lanes: the whole 8 x 8 blocks of rows [r0, r1) (r0 a
 * multiple of 8) in tiles of 32 x 32, the rest of the rows and columns as
 * the portable loop. */
static __attribute__((target("avx2"))) void transpose_f32_avx2(const float *src, float *dst, int64_t rows,
                                                                int64_t cols, int64_t r0, int64_t r1)
{
    const int64_t rb = r0 + (r1 - r0) / 8 * 8, cb = cols / 8 * 8;
    for (int64_t i0 = r0; i0 < rb; i0 += 32)
        for (int64_t j0 = 0; j0 < cb; j0 += 32)
            for (int64_t i = i0; i < i0 + 32 && i < rb; i += 8)
                for (int64_t j = j0; j < j0 + 32 && j < cb; j += 8)
                    transpose8_f32(src + i * cols + j, cols, dst + j * rows + i, rows);
    for (int64_t i = r0; i < rb; i++)
        for (int64_t j = cb; j < cols; j++) dst[j * rows + i] = src[i * cols + j];
    if (rb < r1) transpose_f32(src, dst, rows, cols, rb, r1);
}
#endif

static PyObject *py_transpose(PyObject *self, PyObject *args)
{
    unsigned long long src, dst;
    long long rows, cols;
    int f64;
    if (!PyArg_ParseTuple(args, "KKLLi", &src, &dst, &rows, &cols, &f64))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    /* the rows split over threads in whole tiles (each writes its own columns of dst) */
    const int nt = rows > TRANSPOSE_TILE ? threads_for(rows * cols, STREAM_PAR_MIN) : 1;
#ifdef ZO_OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
    {
        int64_t lo, hi;
        thread_share((rows + TRANSPOSE_TILE - 1) / TRANSPOSE_TILE, &lo, &hi);
        lo *= TRANSPOSE_TILE;
        hi = hi * TRANSPOSE_TILE < rows ? hi * TRANSPOSE_TILE : rows;
        if (hi > lo) {
            if (f64) transpose_f64((const double *)src, (double *)dst, rows, cols, lo, hi);
#ifdef ZO_X86_LANES
            else if (HAVE_AVX2) transpose_f32_avx2((const float *)src, (float *)dst, rows, cols, lo, hi);
#endif
            else transpose_f32((const float *)src, (float *)dst, rows, cols, lo, hi);
        }
    }
    (void)nt;
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_heaviside(PyObject *self, PyObject *args)
{
    unsigned long long x, out;
    long long n;
    int f64;
    if (!PyArg_ParseTuple(args, "KKLi", &x, &out, &n, &f64))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    if (f64) heaviside_f64((const double *)x, (double *)out, n);
    else heaviside_f32((const float *)x, (float *)out, n);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* Whether x[0, n) holds no infinity and no NaN (all exponent bits set). */
#define ALL_FINITE(NAME, T_, UT_, EXP)                                                  \
    VECTOR_CLONES static int NAME(const T_ *x, int64_t n)                               \
    {                                                                                   \
        UT_ bad = 0;                                                                    \
        for (int64_t i = 0; i < n; i++) {                                               \
            UT_ b;                                                                      \
            memcpy(&b, x + i, sizeof b);                                                \
            bad |= (UT_)((b & (UT_)(EXP)) == (UT_)(EXP));                               \
        }                                                                               \
        return !bad;                                                                    \
    }

ALL_FINITE(all_finite_f32, float, uint32_t, 0x7f800000u)
ALL_FINITE(all_finite_f64, double, uint64_t, 0x7ff0000000000000ull)

static PyObject *py_all_finite(PyObject *self, PyObject *args)
{
    unsigned long long x;
    long long n;
    int f64, ok;
    if (!PyArg_ParseTuple(args, "KLi", &x, &n, &f64))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    ok = f64 ? all_finite_f64((const double *)x, n) : all_finite_f32((const float *)x, n);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(ok);
}

static PyObject *py_binary_events(PyObject *self, PyObject *args)
{
    unsigned long long x, out, cols, row_end;
    long long rows, n, cap, count;
    int f64;
    if (!PyArg_ParseTuple(args, "KKKKLLLi", &x, &out, &cols, &row_end, &rows, &n, &cap, &f64))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    count = binary_events_call((const void *)x, (uint8_t *)out, (int32_t *)cols, (int64_t *)row_end, rows, n,
                               cap, f64);
    Py_END_ALLOW_THREADS
    return PyLong_FromLongLong(count);
}

static PyObject *py_event_sum(PyObject *self, PyObject *args)
{
    unsigned long long cols, row_end, wt, bias, out;
    long long rows, m;
    int f64;
    if (!PyArg_ParseTuple(args, "KKKKKLLi", &cols, &row_end, &wt, &bias, &out, &rows, &m, &f64))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    /* rows split over threads where the sum is large (a row's work: its ones
     * and its output, m columns each) */
    const int64_t ones = rows ? ((const int64_t *)row_end)[rows - 1] : 0;
    const int nt = threads_for((ones + rows) * m, EVENT_PAR_MIN);
#ifdef ZO_OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
    {
        int64_t r0, r1;
        thread_share(rows, &r0, &r1);
        if (f64)
            event_sum_f64((const int32_t *)cols, (const int64_t *)row_end, (const double *)wt,
                          (const double *)bias, (double *)out, r0, r1, m);
        else
            event_sum_f32((const int32_t *)cols, (const int64_t *)row_end, (const float *)wt,
                          (const float *)bias, (float *)out, r0, r1, m);
    }
    (void)nt;
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_event_outer(PyObject *self, PyObject *args)
{
    unsigned long long x, h, gt;
    long long rows, n, m;
    int f64, status;
    if (!PyArg_ParseTuple(args, "KKKLLLi", &x, &h, &gt, &rows, &n, &m, &f64))
        return NULL;
    status = 0;
    Py_BEGIN_ALLOW_THREADS
    /* the input columns split over threads in blocks of 16: each column's
     * sum is one thread's, in the rows' order (the same bits at any split) */
    const int nt = n > 16 ? threads_for(rows * n, STREAM_PAR_MIN) : 1;
#ifdef ZO_OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1) reduction(| : status)
#endif
    {
        int64_t lo, hi;
        thread_share16(n, &lo, &hi);
        if (hi > lo)
            status |= f64 ? event_outer_f64((const uint8_t *)x, (const double *)h, (double *)gt, rows, n, m, lo, hi)
                          : event_outer_f32((const uint8_t *)x, (const float *)h, (float *)gt, rows, n, m, lo, hi);
    }
    (void)nt;
    Py_END_ALLOW_THREADS
    if (status) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_sampled_dot(PyObject *self, PyObject *args)
{
    unsigned long long index, h, wt, dx;
    long long cnt, n, m;
    int f64;
    if (!PyArg_ParseTuple(args, "KLKKKLLi", &index, &cnt, &h, &wt, &dx, &n, &m, &f64))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    /* the entries split over threads (each writes its own dx[i]) */
    const int nt = threads_for(cnt * m, STREAM_PAR_MIN);
#ifdef ZO_OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
    {
        int64_t k0, k1;
        thread_share(cnt, &k0, &k1);
        if (f64)
            sampled_dot_f64((const int64_t *)index + k0, k1 - k0, (const double *)h, (const double *)wt,
                            (double *)dx, n, m);
        else
            sampled_dot_f32((const int64_t *)index + k0, k1 - k0, (const float *)h, (const float *)wt,
                            (float *)dx, n, m);
    }
    (void)nt;
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* Whether 1 <= k1 <= k2 <= n, else a ValueError naming the function. */
static int ranks_ok(const char *name, long long n, long long k1, long long k2)
{
    if (n < 1 || k1 < 1 || k2 < k1 || k2 > n) {
        PyErr_Format(PyExc_ValueError, "%s: needs 1 <= k1 <= k2 <= n", name);
        return 0;
    }
    return 1;
}

static PyObject *py_row_kth2(PyObject *self, PyObject *args)
{
    unsigned long long a, out1, out2;
    long long rows, n, k1, k2;
    int status;
    if (!PyArg_ParseTuple(args, "KLLLLKK", &a, &rows, &n, &k1, &k2, &out1, &out2))
        return NULL;
    if (!ranks_ok("row_kth2", n, k1, k2))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    status = row_kth2((const float *)a, rows, n, k1, k2, (float *)out1, (float *)out2);
    Py_END_ALLOW_THREADS
    if (status) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_rule_stats(PyObject *self, PyObject *args)
{
    unsigned long long u, out1, out2, fire;
    long long rows, n, k1, k2;
    int status;
    if (!PyArg_ParseTuple(args, "KLLLLKKK", &u, &rows, &n, &k1, &k2, &out1, &out2, &fire))
        return NULL;
    if (!ranks_ok("rule_stats", n, k1, k2))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    status = rule_stats((const float *)u, rows, n, k1, k2, (float *)out1, (float *)out2, (int64_t *)fire);
    Py_END_ALLOW_THREADS
    if (status) return PyErr_NoMemory();
    Py_RETURN_NONE;
}


static PyObject *py_leaky_scan(PyObject *self, PyObject *args)
{
    unsigned long long x, mem0, mem, spk, uabs, fired;
    long long steps, n;
    double b, thr, gr;
    int reset, f64;
    if (!PyArg_ParseTuple(args, "KKKKKKLLdddii", &x, &mem0, &mem, &spk, &uabs, &fired, &steps, &n,
                          &b, &thr, &gr, &reset, &f64))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    /* the neurons split over threads in blocks of 16 */
    const int nt = n > 16 ? threads_for(steps * n, STREAM_PAR_MIN) : 1;
#ifdef ZO_OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
    {
        int64_t lo, hi;
        thread_share16(n, &lo, &hi);
        if (hi > lo) {
            if (f64)
                leaky_scan_f64((const double *)x, (const double *)mem0, (double *)mem, (double *)spk,
                               (double *)uabs, (uint8_t *)fired, steps, n, lo, hi, b, thr, gr, reset);
            else
                leaky_scan_f32((const float *)x, (const float *)mem0, (float *)mem, (float *)spk,
                               (float *)uabs, (uint8_t *)fired, steps, n, lo, hi, (float)b, (float)thr,
                               (float)gr, reset);
        }
    }
    (void)nt;
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_step_grad(PyObject *self, PyObject *args)
{
    unsigned long long grad, gm, gm0, resets;
    long long n;
    double b;
    int f64;
    if (!PyArg_ParseTuple(args, "KKKKLdi", &grad, &gm, &gm0, &resets, &n, &b, &f64))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    if (f64)
        step_grad_f64((double *)grad, (const double *)gm, (double *)gm0, (const uint8_t *)resets, n, b);
    else
        step_grad_f32((float *)grad, (const float *)gm, (float *)gm0, (const uint8_t *)resets, n, (float)b);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_reverse_scan(PyObject *self, PyObject *args)
{
    unsigned long long e_dense, e_index, e_val, gmem, resets, gx, carry;
    long long e_count, steps, n;
    double b;
    int f64, events = 0, status = 0;
    /* events (optional, 0): only the live neurons (REVERSE_SCAN_EVENTS; a
     * sparse e and no membrane gradient) */
    if (!PyArg_ParseTuple(args, "KKKLKKKKLLdi|p", &e_dense, &e_index, &e_val, &e_count, &gmem,
                          &resets, &gx, &carry, &steps, &n, &b, &f64, &events))
        return NULL;
    if (events && (e_dense || gmem || (e_count && !e_index))) {
        PyErr_SetString(PyExc_ValueError, "reverse_scan: events need a sparse e and no membrane gradient");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    /* the neurons split over threads in blocks of 16, as the forward scan */
    const int nt = n > 16 ? threads_for(steps * n, STREAM_PAR_MIN) : 1;
#ifdef ZO_OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1) reduction(| : status)
#endif
    {
        int64_t lo, hi;
        thread_share16(n, &lo, &hi);
        if (hi > lo) {
            if (events && f64)
                status |= reverse_scan_events_f64((const int64_t *)e_index, (const double *)e_val, e_count,
                                                  (const uint8_t *)resets, (double *)gx, (double *)carry, steps,
                                                  n, lo, hi, b);
            else if (events)
                status |= reverse_scan_events_f32((const int64_t *)e_index, (const float *)e_val, e_count,
                                                  (const uint8_t *)resets, (float *)gx, (float *)carry, steps,
                                                  n, lo, hi, (float)b);
            else if (f64)
                reverse_scan_f64((const double *)e_dense, (const int64_t *)e_index, (const double *)e_val,
                                 e_count, (const double *)gmem, (const uint8_t *)resets, (double *)gx,
                                 (double *)carry, steps, n, lo, hi, b);
            else
                reverse_scan_f32((const float *)e_dense, (const int64_t *)e_index, (const float *)e_val,
                                 e_count, (const float *)gmem, (const uint8_t *)resets, (float *)gx,
                                 (float *)carry, steps, n, lo, hi, (float)b);
        }
    }
    (void)nt;
    Py_END_ALLOW_THREADS
    if (status < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_trace(PyObject *self, PyObject *args)
{
    unsigned long long x, out, carry;
    long long t0, steps, n;
    double b;
    int f64;
    if (!PyArg_ParseTuple(args, "KKKLLLdi", &x, &out, &carry, &t0, &steps, &n, &b, &f64))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    if (f64)
        trace_f64((const double *)x, (double *)out, (double *)carry, t0, steps, n, b);
    else
        trace_f32((const float *)x, (float *)out, (float *)carry, t0, steps, n, (float)b);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}


/* zo_rule from the Python tuple (k1, k2, rate, low, high, x_med, floor, ceil,
 * groups, x_q, x_e) */
static int parse_rule(PyObject *t, zo_rule *R)
{
    long long k1, k2, groups;
    double x_q, x_e;
    if (!PyArg_ParseTuple(t, "LLddddddLdd", &k1, &k2, &R->rate, &R->low, &R->high, &R->x_med,
                          &R->floor, &R->ceil, &groups, &x_q, &x_e))
        return 0;
    R->adaptive = 1;
    R->k1 = k1;
    R->k2 = k2;
    R->groups = groups;
    R->x_q = (float)x_q;
    R->x_e = (float)x_e;
    R->ceil_f = (float)R->ceil;
    return 1;
}

static int rule_fits(const zo_rule *R, long long n)
{
    if (n < 1 || R->k1 < 1 || R->k2 < 1 || R->k1 > n || R->k2 > n || R->groups < 1 || n % R->groups) {
        PyErr_SetString(PyExc_ValueError, "rule: needs 1 <= k1, k2 <= n and groups dividing n");
        return 0;
    }
    return 1;
}

static PyObject *py_rule_delta(PyObject *self, PyObject *args)
{
    unsigned long long u, out;
    long long rows, n;
    PyObject *rule;
    zo_rule R;
    int status;
    if (!PyArg_ParseTuple(args, "KLLOK", &u, &rows, &n, &rule, &out) || !parse_rule(rule, &R) ||
        !rule_fits(&R, n))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    status = rule_delta((const float *)u, rows, n, &R, (float *)out);
    Py_END_ALLOW_THREADS
    if (status) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* The expected value of the normal law's estimate under the adaptive step
 * (a small call: an output layer), in two passes around PyTorch's exp, so
 * that the bits are those of AdaptiveDelta.scale, Normal.expected_grad and
 * the grad product in PyTorch:
 *   exact_exponent: w = (-0.5 * v) * v, v = (u / delta_t) / delta, delta_t
 *                   the rule's step of every entry (rule_delta);
 *   exact_scale:    g = (e / c) * h with e = exp(w); out = grad * g, or g
 *                   itself where grad is NULL; returns the number of non-zero g. */
VECTOR_CLONES static void exponent_of(const float *restrict u, float *restrict w, int64_t n, float delta)
{
    for (int64_t i = 0; i < n; i++) {
        const float v = (u[i] / w[i]) / delta;
        w[i] = (-0.5f * v) * v;
    }
}

VECTOR_CLONES static int64_t exact_scale(const float *restrict grad, const float *restrict e,
                                         float *restrict out, int64_t n, float c, float h)
{
    int64_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        const float g = (e[i] / c) * h;
        total += g != 0.0f;
        out[i] = grad ? grad[i] * g : g;
    }
    return total;
}

/* exact_exponent over rows of a call (over_shifted_rows' pass): the rule's
 * step into w, then the exponent in place. */
typedef struct {
    const zo_rule *R;
    float *w;
    int64_t n;
    float delta;
} exponent_ctx;

static int64_t exponent_rows(const float *u, int64_t r0, int64_t rows, void *ctx)
{
    const exponent_ctx *C = (const exponent_ctx *)ctx;
    float *w = C->w + r0 * C->n;
    if (rule_delta(u, rows, C->n, C->R, w)) return -1;
    exponent_of(u, w, rows * C->n, C->delta);
    return 0;
}

static PyObject *py_exact_exponent(PyObject *self, PyObject *args)
{
    unsigned long long u, w;
    long long rows, n;
    double delta, shift = 0.0;
    PyObject *rule;
    zo_rule R;
    int64_t status;
    /* shift (optional, 0): u - shift is the membrane compared (a step's mem
     * and threshold) */
    if (!PyArg_ParseTuple(args, "KLLOdK|d", &u, &rows, &n, &rule, &delta, &w, &shift) || !parse_rule(rule, &R) ||
        !rule_fits(&R, n))
        return NULL;
    exponent_ctx C = {&R, (float *)w, n, (float)delta};
    Py_BEGIN_ALLOW_THREADS
    status = over_shifted_rows((const float *)u, (float)shift, 0, rows, n, exponent_rows, &C);
    Py_END_ALLOW_THREADS
    if (status < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_exact_scale(PyObject *self, PyObject *args)
{
    unsigned long long grad, e, out;
    long long n, total;
    double c, h;
    if (!PyArg_ParseTuple(args, "KKKLdd", &grad, &e, &out, &n, &c, &h))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    total = exact_scale((const float *)grad, (const float *)e, (float *)out, n, (float)c, (float)h);
    Py_END_ALLOW_THREADS
    return PyLong_FromLongLong(total);
}

/* The expected value of the uniform law's estimate under the adaptive step
 * (a small call: an output layer) in one pass after the rule, with the bits
 * of AdaptiveDelta.scale, Uniform.expected_grad and the grad product in
 * PyTorch: v = (u / delta_t) / delta; g = (3 - v * v) / c where |v| < edge
 * (sqrt 3, in float32, as torch compares), else 0; out = grad * (g * h), or g * h
 * itself where grad is NULL (a sequence layer keeps the value); returns the
 * number of non-zero g. `out` holds delta_t on entry (rule_delta). */
VECTOR_CLONES static int64_t uniform_exact(const float *restrict u, const float *restrict grad,
                                           float *restrict out, int64_t n, float delta, float c, float h,
                                           float edge)
{
    int64_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        const float v = (u[i] / out[i]) / delta;
        float g = (3.0f - v * v) / c;
        g = select_f32(fabsf(v) < edge, g, 0.0f);
        g = g * h;
        total += g != 0.0f;
        out[i] = grad ? grad[i] * g : g;
    }
    return total;
}

/* exact_uniform over rows of a call (over_shifted_rows' pass). */
typedef struct {
    const zo_rule *R;
    const float *grad;
    float *out;
    int64_t n;
    float delta, c, h, edge;
} uniform_exact_ctx;

static int64_t uniform_exact_rows(const float *u, int64_t r0, int64_t rows, void *ctx)
{
    const uniform_exact_ctx *C = (const uniform_exact_ctx *)ctx;
    float *out = C->out + r0 * C->n;
    if (rule_delta(u, rows, C->n, C->R, out)) return -1;
    return uniform_exact(u, C->grad ? C->grad + r0 * C->n : NULL, out, rows * C->n, C->delta, C->c, C->h,
                         C->edge);
}

static PyObject *py_exact_uniform(PyObject *self, PyObject *args)
{
    unsigned long long u, grad, out;
    long long rows, n;
    double delta, c, h, edge, shift = 0.0;
    PyObject *rule;
    zo_rule R;
    int64_t total;
    /* shift (optional, 0): u - shift is the membrane compared (a step's mem
     * and threshold) */
    if (!PyArg_ParseTuple(args, "KKKLLOdddd|d", &u, &grad, &out, &rows, &n, &rule, &delta, &c, &h, &edge,
                          &shift) ||
        !parse_rule(rule, &R) || !rule_fits(&R, n))
        return NULL;
    uniform_exact_ctx C = {&R, (const float *)grad, (float *)out, n, (float)delta, (float)c, (float)h, (float)edge};
    Py_BEGIN_ALLOW_THREADS
    total = over_shifted_rows((const float *)u, (float)shift, 0, rows, n, uniform_exact_rows, &C);
    Py_END_ALLOW_THREADS
    if (total < 0) return PyErr_NoMemory();
    return PyLong_FromLongLong(total);
}

/* The index of the lowest set bit of a non-zero x. */
static inline int lowest_bit64(uint64_t x)
{
#if defined(__GNUC__)
    return __builtin_ctzll(x);
#else
    int k = 0;
    while (!(x & 1u)) {
        x >>= 1;
        k++;
    }
    return k;
#endif
}

/* One row's terms of weighted_uniform_rows in vector lanes, at the scaled
 * membrane s = u / step and v = s / delta: the expected value g
 * (uniform_exact's bits), the law's active probability p from |s| (the
 * reference's up to the last bit: a product by 1 / (delta sqrt3) instead of
 * two quotients; NaN: 0) and the weight w = |g grad| (0 where not finite).
 * The law's unit step (the adaptive step's) skips the quotient by 1. */
#define WEIGHTED_TERMS(V_)                                                        \
    for (int64_t i = 0; i < n; i++) {                                             \
        const float s = u[i] / step[i]; /* the scaled membrane */                 \
        const float v = (V_);                                                     \
        const float gv = (3.0f - v * v) / c;                                      \
        const float gi = select_f32(fabsf(v) < edge, gv, 0.0f) * h;               \
        g[i] = gi;                                                                \
        const double x = fabs((double)s) * inv;                                   \
        p[i] = select_f64(x <= 1.0, 1.0 - x, 0.0); /* (NaN: 0) */                 \
        const double wi = fabs((double)gi * (double)grad[i]);                     \
        w[i] = select_f64(wi <= DBL_MAX, wi, 0.0);                                \
    }

VECTOR_CLONES static void weighted_uniform_terms(const float *restrict u, const float *restrict step,
                                                 const float *restrict grad, int64_t n, float delta, float c,
                                                 float h, float edge, float *restrict g, double *restrict p,
                                                 double *restrict w)
{
    const double inv = 1.0 / ((double)delta * 1.7320508075688772);
    if (delta == 1.0f) { /* (the adaptive step's unit law: the quotient by 1 is exact) */
        WEIGHTED_TERMS(s)
    } else {
        WEIGHTED_TERMS(s / delta)
    }
}
#undef WEIGHTED_TERMS

/* The sums below run in lanes of GCC's vector extension (a plain loop
 * elsewhere): the flags forbid the compiler to reorder one sum itself. Two
 * vectors of lanes an iteration: independent chains of additions, whose
 * latency bounds a single chain. Four lanes of 32 bytes, not eight of 64:
 * GCC compares 64-byte vectors lane by lane under AVX-512 (the masks go
 * through scalar code). The lanes are the type's, not the ISA's: every
 * clone adds in the same order, so gives the same bits. */
#if defined(__GNUC__)
#define WEIGHTED_VECTORS 1
typedef double weighted_v4d __attribute__((vector_size(32)));
typedef int64_t weighted_v4l __attribute__((vector_size(32)));
#define WEIGHTED_LOAD(v_, x_) memcpy(&(v_), (x_), sizeof(v_))
/* the two chains of lanes (lo_: entries 0-3, hi_: 4-7) from eight doubles */
#define WEIGHTED_LOAD2(lo_, hi_, x_) (WEIGHTED_LOAD(lo_, x_), WEIGHTED_LOAD(hi_, (x_) + 4))
#define WEIGHTED_SELECT(m_, a_, b_) ((weighted_v4d)(((weighted_v4l)(a_) & (m_)) | ((weighted_v4l)(b_) & ~(m_))))
#endif

#ifdef ZO_X86_LANES
/* weighted_sums' blocks of eight with AVX-512, in the portable blocks' lanes
 * (the low four the first chain, the high four the second), returned through
 * kl, sl and ml for it to go on from; *at: the first entry left. */
static __attribute__((target("avx512f"))) void weighted_sums_avx512(const double *p, const double *w, int64_t n,
                                                                   double *kl, double *sl, double *ml, int64_t *at)
{
    __m512d k = _mm512_setzero_pd(), s = k, m = k;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m512d pv = _mm512_loadu_pd(p + i), wv = _mm512_loadu_pd(w + i);
        k = _mm512_add_pd(k, pv);
        s = _mm512_add_pd(s, wv);
        m = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(wv, m, _CMP_GT_OQ), m, wv);
    }
    _mm512_storeu_pd(kl, k);
    _mm512_storeu_pd(sl, s);
    _mm512_storeu_pd(ml, m);
    *at = i;
}
#endif

/* A row's budget K = sum p, the sum W and the largest of the weights w. */
VECTOR_CLONES static void weighted_sums(const double *restrict p, const double *restrict w, int64_t n,
                                        double *K, double *W, double *wmax)
{
    double k = 0.0, s = 0.0, m = 0.0;
    int64_t i = 0;
#ifdef WEIGHTED_VECTORS
    weighted_v4d k0 = {0}, k1 = {0}, s0 = {0}, s1 = {0}, m0 = {0}, m1 = {0};
#ifdef ZO_X86_LANES
    if (HAVE_AVX512) {
        double kl[8], sl[8], ml[8];
        weighted_sums_avx512(p, w, n, kl, sl, ml, &i);
        WEIGHTED_LOAD2(k0, k1, kl);
        WEIGHTED_LOAD2(s0, s1, sl);
        WEIGHTED_LOAD2(m0, m1, ml);
    }
#endif
    for (; i + 8 <= n; i += 8) {
        weighted_v4d p0, p1, w0, w1;
        WEIGHTED_LOAD(p0, p + i);
        WEIGHTED_LOAD(p1, p + i + 4);
        WEIGHTED_LOAD(w0, w + i);
        WEIGHTED_LOAD(w1, w + i + 4);
        k0 += p0;
        k1 += p1;
        s0 += w0;
        s1 += w1;
        m0 = WEIGHTED_SELECT((weighted_v4l)(w0 > m0), w0, m0);
        m1 = WEIGHTED_SELECT((weighted_v4l)(w1 > m1), w1, m1);
    }
    for (int l = 0; l < 4; l++) {
        k += k0[l] + k1[l];
        s += s0[l] + s1[l];
        m = m0[l] > m ? m0[l] : m;
        m = m1[l] > m ? m1[l] : m;
    }
#endif
    for (; i < n; i++) {
        k += p[i];
        s += w[i];
        m = w[i] > m ? w[i] : m;
    }
    *K = k;
    *W = s;
    *wmax = m;
}

/* One capping pass: the entries with w >= *wcap (capped before) or c w >= 1
 * are capped (either implies w > 0: *wcap is a capped w, c w >= 1 fails at
 * w = 0, and w is finite). Returns their number; *wcap becomes the smallest
 * capped w (the capped entries are always those at or above it: c grows from
 * pass to pass), *rest the sum of the other weights and *umax their largest
 * (every one of them lies below the new *wcap). */
VECTOR_CLONES static int64_t weighted_cap_pass(const double *restrict w, int64_t n, double cc, double *wcap,
                                               double *rest, double *umax)
{
    const double t = *wcap;
    int64_t count = 0, i = 0;
    double r = 0.0, m = INFINITY, u = 0.0;
#ifdef WEIGHTED_VECTORS
    const weighted_v4d zero = {0}, one = zero + 1.0, tv = zero + t, cv = zero + cc, inf = zero + INFINITY;
    weighted_v4l c0 = {0}, c1 = {0};
    weighted_v4d r0 = zero, r1 = zero, m0 = inf, m1 = inf, u0 = zero, u1 = zero;
    for (; i + 8 <= n; i += 8) {
        weighted_v4d x0, x1;
        WEIGHTED_LOAD(x0, w + i);
        WEIGHTED_LOAD(x1, w + i + 4);
        const weighted_v4l k0 = (weighted_v4l)(x0 >= tv) | (weighted_v4l)(cv * x0 >= one);
        const weighted_v4l k1 = (weighted_v4l)(x1 >= tv) | (weighted_v4l)(cv * x1 >= one);
        c0 -= k0;
        c1 -= k1;
        const weighted_v4d l0 = WEIGHTED_SELECT(k0, zero, x0), l1 = WEIGHTED_SELECT(k1, zero, x1);
        r0 += l0;
        r1 += l1;
        u0 = WEIGHTED_SELECT((weighted_v4l)(l0 > u0), l0, u0);
        u1 = WEIGHTED_SELECT((weighted_v4l)(l1 > u1), l1, u1);
        const weighted_v4d x0c = WEIGHTED_SELECT(k0, x0, inf), x1c = WEIGHTED_SELECT(k1, x1, inf);
        m0 = WEIGHTED_SELECT((weighted_v4l)(x0c < m0), x0c, m0);
        m1 = WEIGHTED_SELECT((weighted_v4l)(x1c < m1), x1c, m1);
    }
    for (int l = 0; l < 4; l++) {
        count += c0[l] + c1[l];
        r += r0[l] + r1[l];
        m = m0[l] < m ? m0[l] : m;
        m = m1[l] < m ? m1[l] : m;
        u = u0[l] > u ? u0[l] : u;
        u = u1[l] > u ? u1[l] : u;
    }
#endif
    for (; i < n; i++) {
        const double x = w[i];
        const int cap = (x >= t) | (cc * x >= 1.0);
        count += cap;
        r += cap ? 0.0 : x;
        m = cap && x < m ? x : m;
        u = !cap && x > u ? x : u;
    }
    *wcap = m;
    *rest = r;
    *umax = u;
    return count;
}

/* The capping of one row reaches only entries with c_final w >= 1, and c
 * grows from pass to pass, in the rows measured by at most 1.31x of its
 * first value K / W (conv rows, silent and firing FC rows). So one pass
 * gathers the candidates, w >= 1 / (CAP_SPAN c), and the capping passes run
 * over them alone (the others' sum and largest kept aside), while the others
 * could not cap: should c grow so far that the largest of them would
 * (c umax_out >= 1), the passes go on over the whole row from there. */
#define CAP_SPAN 1.5

#ifdef ZO_X86_LANES
/* The weighted pass's AVX-512 lanes (this one, weighted_sums_avx512,
 * weighted_draw_avx512), where GCC's clones ran 256-bit lanes and scalar
 * stores: together a call 10-18% faster on firing membranes, 0-12% on silent
 * ones (benchmarks/results/rule_cost_call_intel_lanes_*.json); the terms in
 * lanes gained nothing and keep GCC's loop.
 *
 * weighted_gather's blocks of eight with AVX-512: the candidates written by
 * a compressing store (in order, so the same list), the other entries' sums
 * and largest in the same lanes as the portable blocks (the low four lanes
 * the first chain, the high four the second), returned through rl and ul for
 * it to reduce; *at: the first entry left. */
static __attribute__((target("avx512f"))) int64_t weighted_gather_avx512(const double *w, int64_t n, double tau,
                                                                        double *cand, double *rl, double *ul,
                                                                        int64_t *at)
{
    const __m512d zero = _mm512_setzero_pd(), tv = _mm512_set1_pd(tau);
    __m512d r = zero, u = zero;
    int64_t m = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m512d x = _mm512_loadu_pd(w + i);
        const __mmask8 k = _mm512_cmp_pd_mask(x, tv, _CMP_GE_OQ);
        _mm512_mask_compressstoreu_pd(cand + m, k, x);
        m += __builtin_popcount((unsigned)k);
        const __m512d l = _mm512_mask_blend_pd(k, x, zero); /* (zero where a candidate) */
        r = _mm512_add_pd(r, l);
        u = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(l, u, _CMP_GT_OQ), u, l);
    }
    _mm512_storeu_pd(rl, r);
    _mm512_storeu_pd(ul, u);
    *at = i;
    return m;
}
#endif

/* The candidates: the w >= tau into cand (n + 1 entries: every w may be
 * written, the count grows where it qualifies), their number returned;
 * *rest the sum and *umax the largest of the others. */
VECTOR_CLONES static int64_t weighted_gather(const double *restrict w, int64_t n, double tau, double *restrict cand,
                                             double *rest, double *umax)
{
    int64_t m = 0, i = 0;
    double r = 0.0, u = 0.0;
#ifdef WEIGHTED_VECTORS
    const weighted_v4d zero = {0}, tv = zero + tau;
    weighted_v4d r0 = zero, r1 = zero, u0 = zero, u1 = zero;
#ifdef ZO_X86_LANES
    if (HAVE_AVX512) {
        double rl[8], ul[8];
        m = weighted_gather_avx512(w, n, tau, cand, rl, ul, &i);
        WEIGHTED_LOAD2(r0, r1, rl);
        WEIGHTED_LOAD2(u0, u1, ul);
    }
#endif
    for (; i + 8 <= n; i += 8) {
        weighted_v4d x0, x1;
        WEIGHTED_LOAD(x0, w + i);
        WEIGHTED_LOAD(x1, w + i + 4);
        const weighted_v4l k0 = (weighted_v4l)(x0 >= tv), k1 = (weighted_v4l)(x1 >= tv);
        const weighted_v4d l0 = WEIGHTED_SELECT(k0, zero, x0), l1 = WEIGHTED_SELECT(k1, zero, x1);
        r0 += l0;
        r1 += l1;
        u0 = WEIGHTED_SELECT((weighted_v4l)(l0 > u0), l0, u0);
        u1 = WEIGHTED_SELECT((weighted_v4l)(l1 > u1), l1, u1);
        for (int l = 0; l < 4; l++) {
            cand[m] = x0[l];
            m -= k0[l];
        }
        for (int l = 0; l < 4; l++) {
            cand[m] = x1[l];
            m -= k1[l];
        }
    }
    for (int l = 0; l < 4; l++) {
        r += r0[l] + r1[l];
        u = u0[l] > u ? u0[l] : u;
        u = u1[l] > u ? u1[l] : u;
    }
#endif
    for (; i < n; i++) {
        const double x = w[i];
        const int k = x >= tau;
        cand[m] = x;
        m += k;
        r += k ? 0.0 : x;
        u = !k && x > u ? x : u;
    }
    *rest = r;
    *umax = u;
    return m;
}

/* Repeated capping of one row's weights w from c = *cc = K / sum w (where
 * c max w >= 1): each pass caps at the current c and sums what is left for
 * the next; a pass that would cap nothing new is not run: the entries left
 * all lie below the new cap, so one caps only where c w >= 1, c times their
 * largest (a product is monotone in w, rounded too). Writes the final c and
 * the smallest capped w (*wcap); cand: n + 1 doubles of room. */
static void weighted_capping(const double *w, int64_t n, double K, double *cand, double *cc, double *wcap)
{
    double c = *cc, t = INFINITY, rest_out, umax_out;
    int64_t ncapped = 0;
    /* the passes' entries: the candidates, then (should c grow too far) the row */
    const double *v = cand;
    int64_t m = weighted_gather(w, n, 1.0 / (CAP_SPAN * c), cand, &rest_out, &umax_out);
    for (;;) {
        double t1 = t, rest, umax;
        const int64_t now = weighted_cap_pass(v, m, c, &t1, &rest, &umax);
        if (now == ncapped) break;
        ncapped = now;
        t = t1;
        const double left = K - (double)ncapped > 0.0 ? K - (double)ncapped : 0.0;
        rest += rest_out;
        c = rest > 0.0 ? left / rest : 0.0;
        if (v == cand && c * umax_out >= 1.0) { /* an entry left out could cap now */
            v = w;
            m = n;
            rest_out = umax_out = 0.0;
            continue;
        }
        if (!(c * umax >= 1.0)) break;
    }
    *cc = c;
    *wcap = t;
}

/* The draw of one row: q = 1 at w >= wcap (capped), else min(1, cc w); active
 * where w > 0 and the uniform RND_ falls below q; there out = grad * G
 * (`product`) or G itself, G = (float)(g / q); elsewhere grad * 0 or 0.
 * Returns the number of active entries. A row that expects few active
 * entries (a budget K of at most WEIGHTED_FEW_ACTIVE of its n) takes two
 * passes: the lanes mark the active entries (in `act`, n + 8 bytes) and
 * write every entry's zero, then only the marked ones get their quotient,
 * read 8 marks at a time; a row with more takes one pass that computes every
 * quotient in the lanes (the marks' loop mispredicts there). The same bits
 * either way. */
#define WEIGHTED_FEW_ACTIVE 0.0625

static inline double weighted_q(double x, double cc, double wcap)
{
    const double cx = cc * x;
    return select_f64((x >= wcap) | (cx >= 1.0), 1.0, cx);
}

#define WEIGHTED_DRAW(RND_, VALUE_, ZERO_)                                         \
    for (int64_t i = i0; i < n; i++) {                                              \
        const double x = w[i];                                                     \
        const double q = weighted_q(x, cc, wcap);                                  \
        const float rnd = (RND_);                                                  \
        const int a = (x > 0.0) & ((double)rnd < q);                               \
        const float G = (float)((double)g[i] / q);                                 \
        o[i] = select_f32(a, (VALUE_), (ZERO_));                                   \
        total += a;                                                                \
    }
#define WEIGHTED_MARK(RND_, VALUE_, ZERO_)                                         \
    for (int64_t i = i0; i < n; i++) {                                              \
        const double x = w[i];                                                     \
        const float rnd = (RND_);                                                  \
        const uint8_t a = (x > 0.0) & ((double)rnd < weighted_q(x, cc, wcap));     \
        act[i] = a;                                                                \
        o[i] = (ZERO_);                                                            \
        total += a;                                                                \
    }
#define WEIGHTED_HASHED ((float)(draw_bits(base + (uint32_t)i, k0, k1) >> 8) * 0x1p-24f)
#define WEIGHTED_PASSES(PASS_)                                                     \
    if (product && unif) {                                                         \
        PASS_(unif[i], gr[i] * G, gr[i] * 0.0f)                                    \
    } else if (product) {                                                          \
        PASS_(WEIGHTED_HASHED, gr[i] * G, gr[i] * 0.0f)                            \
    } else if (unif) {                                                             \
        PASS_(unif[i], G, 0.0f)                                                    \
    } else {                                                                       \
        PASS_(WEIGHTED_HASHED, G, 0.0f)                                            \
    }

#ifdef ZO_X86_LANES
/* The low and the high eight of sixteen float lanes, as doubles (exact). */
static inline __attribute__((always_inline, target("avx512f"))) __m512d lanes_lo_pd(__m512 v)
{
    return _mm512_cvtps_pd(_mm512_castps512_ps256(v));
}

static inline __attribute__((always_inline, target("avx512f"))) __m512d lanes_hi_pd(__m512 v)
{
    return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

/* weighted_draw's first pass, sixteen entries a block in AVX-512 lanes (the
 * same operations in double and float, so the same bits): the uniforms from
 * unif or hashed, the active mask, then either every entry's value (`act`
 * NULL: the one-pass draw) or the marks in `act` and every entry's zero.
 * Returns the active entries of the blocks; *at: the first entry left. */
static __attribute__((target("avx512f"))) int32_t weighted_draw_avx512(
    const float *g, const double *w, const float *gr, float *o, int64_t n, double cc, double wcap,
    const float *unif, uint32_t base, uint32_t k0, uint32_t k1, int product, uint8_t *act, int64_t *at)
{
    const __m512d ccv = _mm512_set1_pd(cc), wcapv = _mm512_set1_pd(wcap), one = _mm512_set1_pd(1.0),
                  zerod = _mm512_setzero_pd();
    const __m512 zerof = _mm512_setzero_ps(), scale = _mm512_set1_ps(0x1p-24f);
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                  vk0 = _mm512_set1_epi32((int)k0), vk1 = _mm512_set1_epi32((int)k1);
    int32_t total = 0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 rnd;
        if (unif) {
            rnd = _mm512_loadu_ps(unif + i);
        } else {
            const __m512i c = _mm512_add_epi32(_mm512_set1_epi32((int)(base + (uint32_t)i)), iota);
            const __m512i b = hash32_avx512(_mm512_xor_si512(hash32_avx512(_mm512_xor_si512(c, vk0)), vk1));
            rnd = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(b, 8)), scale);
        }
        const __m512d r_lo = lanes_lo_pd(rnd), r_hi = lanes_hi_pd(rnd);
        const __m512d x_lo = _mm512_loadu_pd(w + i), x_hi = _mm512_loadu_pd(w + i + 8);
        const __m512d c_lo = _mm512_mul_pd(ccv, x_lo), c_hi = _mm512_mul_pd(ccv, x_hi);
        /* weighted_q: 1 where capped (w >= wcap) or c w >= 1, else c w */
        const __m512d q_lo = _mm512_mask_blend_pd(
            _mm512_cmp_pd_mask(x_lo, wcapv, _CMP_GE_OQ) | _mm512_cmp_pd_mask(c_lo, one, _CMP_GE_OQ), c_lo, one);
        const __m512d q_hi = _mm512_mask_blend_pd(
            _mm512_cmp_pd_mask(x_hi, wcapv, _CMP_GE_OQ) | _mm512_cmp_pd_mask(c_hi, one, _CMP_GE_OQ), c_hi, one);
        const __mmask8 a_lo = _mm512_cmp_pd_mask(x_lo, zerod, _CMP_GT_OQ) & _mm512_cmp_pd_mask(r_lo, q_lo, _CMP_LT_OQ);
        const __mmask8 a_hi = _mm512_cmp_pd_mask(x_hi, zerod, _CMP_GT_OQ) & _mm512_cmp_pd_mask(r_hi, q_hi, _CMP_LT_OQ);
        const __mmask16 a = (__mmask16)((unsigned)a_lo | ((unsigned)a_hi << 8));
        total += __builtin_popcount((unsigned)a);
        const __m512 grv = product ? _mm512_loadu_ps(gr + i) : zerof;
        const __m512 zero = product ? _mm512_mul_ps(grv, zerof) : zerof;
        if (act) {
            memcpy(act + i, &MASK_BYTES[a_lo], 8);
            memcpy(act + i + 8, &MASK_BYTES[a_hi], 8);
            _mm512_storeu_ps(o + i, zero);
            continue;
        }
        /* G = (float)(g / q) */
        const __m512 gv = _mm512_loadu_ps(g + i);
        const __m256 G_lo = _mm512_cvtpd_ps(_mm512_div_pd(lanes_lo_pd(gv), q_lo));
        const __m256 G_hi = _mm512_cvtpd_ps(_mm512_div_pd(lanes_hi_pd(gv), q_hi));
        const __m512 G = _mm512_castpd_ps(
            _mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(G_lo)), _mm256_castps_pd(G_hi), 1));
        const __m512 value = product ? _mm512_mul_ps(grv, G) : G;
        _mm512_storeu_ps(o + i, _mm512_mask_blend_ps(a, zero, value));
    }
    *at = i;
    return total;
}
#endif

VECTOR_CLONES static int64_t weighted_draw(const float *restrict g, const double *restrict w,
                                           const float *restrict gr, float *restrict o, int64_t n, double cc,
                                           double wcap, double K, const float *restrict unif, uint32_t base,
                                           uint32_t k0, uint32_t k1, int product, uint8_t *restrict act)
{
    int32_t total = 0; /* (a row: fewer than 2^31 entries) */
    int64_t i0 = 0;
    const int few = !(K > WEIGHTED_FEW_ACTIVE * (double)n);
#ifdef ZO_X86_LANES
    if (HAVE_AVX512)
        total = weighted_draw_avx512(g, w, gr, o, n, cc, wcap, unif, base, k0, k1, product, few ? act : NULL, &i0);
#endif
    if (!few) {
        WEIGHTED_PASSES(WEIGHTED_DRAW)
        return total;
    }
    WEIGHTED_PASSES(WEIGHTED_MARK)
    memset(act + n, 0, 8);
    int32_t left = total;
    for (int64_t i = 0; left > 0 && i < n; i += 8) {
        uint64_t marks;
        memcpy(&marks, act + i, sizeof marks);
        while (marks) {
            const int64_t j = i + (lowest_bit64(marks) >> 3);
            const float G = (float)((double)g[j] / weighted_q(w[j], cc, wcap));
            o[j] = product ? gr[j] * G : G;
            marks &= marks - 1;
            left--;
        }
    }
    return total;
}
#undef WEIGHTED_HASHED
#undef WEIGHTED_MARK
#undef WEIGHTED_DRAW
#undef WEIGHTED_PASSES

/* make(sampling="gradient") for the uniform law with one direction
 * (_ops/weighted.py, docs/method.md section 8), after rule_delta wrote each
 * entry's step into `out`. Per row: the terms g, p and w above; the budget
 * K = sum p; q = min(1, c w), c by capping until no new entry reaches 1
 * (weighted.inclusion_probability; no pass at all when the largest w does
 * not reach 1 at c = K / sum w); one uniform per entry (given in `unif`,
 * else hashed from `seed` and the entry's index); out = grad * G,
 * G = (float)(g / q), where it falls below q, grad * 0 elsewhere (without
 * `product`: G and 0, the estimate a sequence layer's backward draws from its
 * incoming gradient). The sums run in lanes (torch's
 * may round differently in the last bit of K or c). Returns the number of
 * active entries, or -1 (no memory). */
static int64_t weighted_uniform_rows(const float *u, const float *grad, float *out, int64_t rows, int64_t n,
                                     float delta, float c, float h, float edge, const float *unif,
                                     uint64_t seed, int product, int64_t row0)
{
    float *g = (float *)malloc((size_t)n * sizeof(float));
    double *p = (double *)malloc((size_t)(n + 1) * sizeof(double)); /* (then the candidates) */
    double *w = (double *)malloc((size_t)n * sizeof(double));
    uint8_t *act = (uint8_t *)malloc((size_t)n + 8);
    if (!g || !p || !w || !act) {
        free(g); free(p); free(w); free(act);
        return -1;
    }
    const uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    int64_t total = 0;
    for (int64_t r = 0; r < rows; r++) {
        const float *ur = u + r * n, *gr = grad + r * n;
        float *o = out + r * n;
        weighted_uniform_terms(ur, o, gr, n, delta, c, h, edge, g, p, w);
        double K, W, wmax, cc = 0.0, wcap = INFINITY;
        weighted_sums(p, w, n, &K, &W, &wmax);
        if (W > 0.0 && K > 0.0) {
            cc = K / W;
            if (cc * wmax >= 1.0) weighted_capping(w, n, K, p, &cc, &wcap);
        }
        total += weighted_draw(g, w, gr, o, n, cc, wcap, K, unif ? unif + r * n : NULL, (uint32_t)((row0 + r) * n),
                               k0, k1, product, act);
    }
    free(g); free(p); free(w); free(act);
    return total;
}

/* The fewest entries a spike function's C pass splits over threads. */
#define SPIKE_PAR_MIN 8192

/* rule_delta then weighted_uniform_rows over rows of a call
 * (over_shifted_rows' pass). */
typedef struct {
    const zo_rule *R;
    const float *grad, *unif;
    float *out;
    int64_t n;
    float delta, c, h, edge;
    uint64_t seed;
    int product;
} weighted_ctx;

static int64_t weighted_rows(const float *u, int64_t r0, int64_t rows, void *ctx)
{
    const weighted_ctx *C = (const weighted_ctx *)ctx;
    const int64_t o = r0 * C->n;
    if (rule_delta(u, rows, C->n, C->R, C->out + o)) return -1;
    return weighted_uniform_rows(u, C->grad ? C->grad + o : NULL, C->out + o, rows, C->n, C->delta, C->c, C->h, C->edge,
                                 C->unif ? C->unif + o : NULL, C->seed, C->product, r0);
}

/* weighted_rows over the threads of torch's OpenMP pool, contiguous blocks
 * of rows as spike_backward_rows splits them (the rows of a block hash from
 * their own place in the call, so the bits do not depend on the split);
 * small calls stay on one thread. Returns the number of active entries, or
 * -1 (no memory). */
static int64_t weighted_uniform_call(const float *u, float shift, int64_t rows, const weighted_ctx *C)
{
    int64_t total = 0;
    int bad = 0;
#ifdef ZO_OPENMP
    const int nt = rows > 1 ? threads_for(rows * C->n, SPIKE_PAR_MIN) : 1;
#pragma omp parallel num_threads(nt) if (nt > 1) reduction(+ : total) reduction(| : bad)
#endif
    {
        int64_t lo, hi;
        thread_share(rows, &lo, &hi);
        const int64_t k = over_shifted_rows(u, shift, lo, hi, C->n, weighted_rows, (void *)C);
        if (k < 0) bad = 1;
        else total += k;
    }
    return bad ? -1 : total;
}

static PyObject *py_weighted_uniform(PyObject *self, PyObject *args)
{
    unsigned long long u, grad, out, unif, seed;
    long long rows, n, total = 0;
    double delta, c, h, edge, shift = 0.0;
    PyObject *rule;
    zo_rule R;
    int product;
    /* shift (optional, 0): u - shift is the membrane compared (mem and the
     * threshold, subtracted chunk by chunk) */
    if (!PyArg_ParseTuple(args, "KKKLLOddddKKp|d", &u, &grad, &out, &rows, &n, &rule, &delta, &c, &h, &edge,
                          &unif, &seed, &product, &shift) ||
        !parse_rule(rule, &R) || !rule_fits(&R, n))
        return NULL;
    weighted_ctx C = {&R, (const float *)grad, (const float *)unif, (float *)out, n, (float)delta, (float)c,
                      (float)h, (float)edge, (uint64_t)seed, product};
    Py_BEGIN_ALLOW_THREADS
    total = weighted_uniform_call((const float *)u, (float)shift, rows, &C);
    Py_END_ALLOW_THREADS
    if (total < 0) return PyErr_NoMemory();
    return PyLong_FromLongLong(total);
}

/* A meter's accumulator (layout.py's slots: ACTIVE, TOTAL, LAST_ACTIVE,
 * LAST_TOTAL, CALLS) after one backward call of `active` non-zero estimates
 * of `total`, in one call instead of five tensor operations (CPU). */
static PyObject *py_meter_record(PyObject *self, PyObject *args)
{
    unsigned long long acc;
    long long active, total;
    if (!PyArg_ParseTuple(args, "KLL", &acc, &active, &total))
        return NULL;
    int64_t *a = (int64_t *)acc;
    a[0] += active;
    a[1] += total;
    a[2] = active;
    a[3] = total;
    a[4] += 1;
    Py_RETURN_NONE;
}

/* zo_spike_backward over rows of a call (over_shifted_rows' pass; row0:
 * the call's first row in the stream, as zo_spike_backward's). */
typedef struct {
    const float *grad, *absz;
    float *out;
    int64_t n, absz_stride, row0;
    const zo_rule *R;
    const zo_law *L;
    uint64_t seed;
} spike_ctx;

static int64_t spike_rows(const float *u, int64_t r0, int64_t rows, void *ctx)
{
    const spike_ctx *C = (const spike_ctx *)ctx;
    const int64_t o = r0 * C->n;
    return zo_spike_backward(u, C->grad ? C->grad + o : NULL, C->out + o, rows, C->n, C->R, C->L,
                             C->absz ? C->absz + o : NULL, C->absz_stride, C->seed, C->row0 + r0);
}

/* spike_rows at u - shift (over_shifted_rows) over the threads of torch's
 * OpenMP pool (the build links the OpenMP runtime where the compiler has
 * one; torch's copy, already loaded, is the one used, so
 * torch.set_num_threads sets how many): contiguous blocks of rows, each with
 * its own scratch. Every row draws from its own stream, so the result does
 * not depend on the split. Small calls (below SPIKE_PAR_MIN entries) and a
 * call's rows from row0 > 0 stay on one thread. */
static int64_t spike_backward_rows(const float *u, float shift, int64_t rows, const spike_ctx *C)
{
    int64_t total = 0;
    int bad = 0;
#ifdef ZO_OPENMP
    const int nt = C->row0 == 0 && rows > 1 ? threads_for(rows * C->n, SPIKE_PAR_MIN) : 1;
#pragma omp parallel num_threads(nt) if (nt > 1) reduction(+ : total) reduction(| : bad)
#endif
    {
        int64_t lo, hi;
        thread_share(rows, &lo, &hi);
        const int64_t c = over_shifted_rows(u, shift, lo, hi, C->n, spike_rows, (void *)C);
        if (c < 0) bad = 1;
        else total += c;
    }
    return bad ? -1 : total;
}

/* The threads a split call would use now: OpenMP's (torch's pool), 1
 * without OpenMP. */
static PyObject *py_max_threads(PyObject *self, PyObject *args)
{
#ifdef ZO_OPENMP
    return PyLong_FromLong(omp_get_max_threads());
#else
    return PyLong_FromLong(1);
#endif
}

static PyObject *py_trace_grad(PyObject *self, PyObject *args)
{
    unsigned long long x, index, e, dw, db = 0;
    long long T, B, n, nnz, out_f;
    double b;
    int f64, packed, status = 0;
    /* db (optional, 0): the bias gradient [out], added into as dw */
    if (!PyArg_ParseTuple(args, "KLLLdKKLLKii|K", &x, &T, &B, &n, &b, &index, &e, &nnz, &out_f, &dw, &f64,
                          &packed, &db))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    /* the input columns split over threads in blocks of 16, each thread with
     * a carry and rows of dw of its own (TRACE_GRAD_SHARE) */
    const int nt = n > 16 ? threads_for(T * B * n, STREAM_PAR_MIN) : 1;
    const int64_t *ix = (const int64_t *)index;
#ifdef ZO_OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1) reduction(| : status)
#endif
    {
        int64_t lo, hi;
        thread_share16(n, &lo, &hi);
        const int shared = hi - lo < n;
        if (f64 && packed)
            status |= trace_grad_share_f64_u8((const uint8_t *)x, T, B, n, b, ix, (const double *)e, nnz, out_f,
                                              (double *)dw, (double *)db, lo, hi, shared);
        else if (f64)
            status |= trace_grad_share_f64((const double *)x, T, B, n, b, ix, (const double *)e, nnz, out_f,
                                           (double *)dw, (double *)db, lo, hi, shared);
        else if (packed)
            status |= trace_grad_share_f32_u8((const uint8_t *)x, T, B, n, (float)b, ix, (const float *)e, nnz,
                                              out_f, (float *)dw, (float *)db, lo, hi, shared);
        else
            status |= trace_grad_share_f32((const float *)x, T, B, n, (float)b, ix, (const float *)e, nnz, out_f,
                                           (float *)dw, (float *)db, lo, hi, shared);
    }
    (void)nt;
    Py_END_ALLOW_THREADS
    if (status) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_spike_backward(PyObject *self, PyObject *args)
{
    unsigned long long u, grad, out, absz, seed;
    long long rows, n, m, absz_stride, row0;
    PyObject *rule;
    zo_rule R;
    zo_law L;
    double delta, coef, shift = 0.0;
    int64_t count;
    /* shift (optional, 0): u - shift is the membrane compared (mem and the
     * threshold of a sequence layer or a step, subtracted chunk by chunk) */
    if (!PyArg_ParseTuple(args, "KKKLLOiiLddddddKLKL|d", &u, &grad, &out, &rows, &n, &rule, &L.kind,
                          &L.p_pos, &m, &delta, &coef, &L.kparam, &L.z_near, &L.z_tail, &L.tail_p,
                          &absz, &absz_stride, &seed, &row0, &shift))
        return NULL;
    if (rule == Py_None) {
        memset(&R, 0, sizeof R);
    } else if (!parse_rule(rule, &R) || !rule_fits(&R, n)) {
        return NULL;
    }
    if (L.kind != KIND_NORMAL && L.kind != KIND_UNIFORM && L.kind != KIND_EXPONENTIAL &&
        L.kind != KIND_LOMAX2) {
        PyErr_SetString(PyExc_ValueError, "spike_backward: no sampler of this kind");
        return NULL;
    }
    L.m = m;
    L.delta = (float)delta;
    L.coef = (float)coef;
    spike_ctx C = {(const float *)grad, (const float *)absz, (float *)out, n, absz_stride, row0, &R, &L,
                   (uint64_t)seed};
    Py_BEGIN_ALLOW_THREADS
    count = spike_backward_rows((const float *)u, (float)shift, rows, &C);
    Py_END_ALLOW_THREADS
    if (count < 0) return PyErr_NoMemory();
    return PyLong_FromLongLong(count);
}

static PyObject *py_set_simd(PyObject *self, PyObject *args)
{
    int on, wide = 1, previous = HAVE_AVX2;
    if (!PyArg_ParseTuple(args, "p|p", &on, &wide))
        return NULL;
    HAVE_AVX2 = on && CPU_AVX2;
    HAVE_AVX512 = on && wide && CPU_AVX512;
    return PyBool_FromLong(previous);
}

static PyMethodDef methods[] = {
    {"leaky_scan", py_leaky_scan, METH_VARARGS, "Leaky membrane scan (see _scan.c)."},
    {"reverse_scan", py_reverse_scan, METH_VARARGS, "Reverse scan of the Leaky backward."},
    {"trace", py_trace, METH_VARARGS, "Input trace of the sparse weight gradient."},
    {"trace_grad", py_trace_grad, METH_VARARGS, "The sparse weight gradient, the trace advanced step by step."},
    {"row_kth2", py_row_kth2, METH_VARARGS, "Two order statistics of every row (adaptive step)."},
    {"rule_stats", py_rule_stats, METH_VARARGS, "Adaptive step: order statistics of |u| and firing counts per row."},
    {"rule_delta", py_rule_delta, METH_VARARGS, "Adaptive step: the step of every entry."},
    {"spike_backward", py_spike_backward, METH_VARARGS, "The spike function's fused backward."},
    {"step_grad", py_step_grad, METH_VARARGS, "The rest of a Leaky step's backward after its spike function's."},
    {"max_threads", py_max_threads, METH_NOARGS, "Threads a split spike backward uses now (1 without OpenMP)."},
    {"meter_record", py_meter_record, METH_VARARGS, "One backward call into a meter's CPU accumulator."},
    {"exact_exponent", py_exact_exponent, METH_VARARGS, "The normal law's expected value: the exponent."},
    {"exact_scale", py_exact_scale, METH_VARARGS, "The normal law's expected value: grad times the value."},
    {"exact_uniform", py_exact_uniform, METH_VARARGS, "The uniform law's expected value times grad, the rule included."},
    {"weighted_uniform", py_weighted_uniform, METH_VARARGS, "The uniform law's estimate drawn by the incoming gradient, the rule included."},
    {"set_simd", py_set_simd, METH_VARARGS, "set_simd(on, avx512=True): turns the hand-written AVX2 and AVX-512 lanes on or off, or (avx512 false) the AVX-512 ones alone off (tests); returns whether the AVX2 lanes were on."},
    {"dense_estimate", py_dense_estimate, METH_VARARGS, "The estimate of every entry from its draws."},
    {"compact", py_compact, METH_VARARGS, "Indices and values of the non-zero entries (COMPACT_SPARE entries to spare); returns their number."},
    {"binary_events", py_binary_events, METH_VARARGS, "0/1 values to bytes and events, or -1."},
    {"event_sum", py_event_sum, METH_VARARGS, "Event-driven input current of binary inputs."},
    {"event_outer", py_event_outer, METH_VARARGS, "Event-driven weight gradient of binary inputs (transposed)."},
    {"sampled_dot", py_sampled_dot, METH_VARARGS, "Input gradient at the given entries only."},
    {"all_finite", py_all_finite, METH_VARARGS, "No infinity and no NaN."},
    {"heaviside", py_heaviside, METH_VARARGS, "The spike function's forward, 1[x > 0]."},
    {"transpose", py_transpose, METH_VARARGS, "A matrix transposed into another (contiguous)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_scan", NULL, -1, methods};

PyMODINIT_FUNC PyInit__scan(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    fill_event_tables();
    fill_ziggurat();
#ifdef ZO_X86_LANES
    __builtin_cpu_init();
    CPU_AVX2 = HAVE_AVX2 = __builtin_cpu_supports("avx2") != 0;
#endif
#ifdef ZO_X86_LANES
    __builtin_cpu_init();
    CPU_AVX512 = HAVE_AVX512 = __builtin_cpu_supports("avx512f") != 0;
#endif
    if (PyModule_AddIntConstant(m, "RESET_SUBTRACT", RESET_SUBTRACT) < 0 ||
        PyModule_AddIntConstant(m, "RESET_ZERO", RESET_ZERO) < 0 ||
        PyModule_AddIntConstant(m, "RESET_NONE", RESET_NONE) < 0 ||
        PyModule_AddIntConstant(m, "COMPACT_SPARE", COMPACT_SPARE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
