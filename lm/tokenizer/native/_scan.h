/* The GPT-2 pre-token scanner of the native engine (included by _native.c).
 *
 * next_pretoken(s, i, n) is the end of the pre-token that starts at s[i]: the match of
 *     '(?:[sdmt]|ll|ve|re) | ?\p{L}+ | ?\p{N}+ | ?[^\s\p{L}\p{N}]+ | \s+(?!\S) | \s+
 * at i, the alternatives tried in that order as the regex engine does. scan_batch finds
 * the ends of up to `max` consecutive pre-tokens in one call (what counting uses).
 *
 * Most of the time goes into runs of one class (the letters of a word, the spaces of an
 * indentation). Over ASCII these are found 16 or 32 bytes at a time: a block is loaded,
 * each byte is tested for the run's class with a few vector compares, and the run ends at
 * the first byte that fails. A byte >= 0x80 always fails the test; the scanner then reads
 * that character with the Unicode tables (char_class) and carries on. Three paths compute
 * the same thing:
 *
 *   avx2      16 bytes, then 32 at a time (x86-64 with AVX2, detected at run time;
 *             compiled with a target attribute, so the build needs no -mavx2)
 *   sse2      16 bytes at a time (every x86-64 CPU)
 *   portable  one byte at a time through a 256-entry table (every CPU)
 *
 * The fastest the CPU has is used unless set_simd chooses another (the tests run every
 * path; LM_NATIVE_SIMD in lm.tokenizer.native sets it). Each path is one instantiation of
 * _scan_path.h, so the whole scanning loop is compiled for its instruction set. Compiled
 * with -DLM_NATIVE_PORTABLE_ONLY, the build has the portable path alone, as it does for
 * CPUs other than x86-64 (a test builds it so).
 */

#if (defined(__x86_64__) || defined(_M_X64)) && !defined(LM_NATIVE_PORTABLE_ONLY)
#define LM_SCAN_SSE2 1
#include <emmintrin.h>
#if defined(__GNUC__) || defined(__clang__)
#define LM_SCAN_AVX2 1
#include <immintrin.h>
#endif
#endif

enum { SCAN_PORTABLE, SCAN_SSE2, SCAN_AVX2, SCAN_NPATHS };
static const char *const scan_path_names[SCAN_NPATHS] = {"portable", "sse2", "avx2"};
static int scan_path = SCAN_PORTABLE; /* set by scan_init, and by set_simd */

/* The pattern's kind (C_L, C_N, C_S, or 0) of each ASCII byte; 0xFF for bytes >= 0x80,
 * which match no kind here (their character is read with char_class). From the tables. */
static uint8_t scan_ascii_kind[256];

static inline unsigned
scan_ctz(uint32_t x) /* x != 0 */
{
#if defined(__GNUC__) || defined(__clang__)
    return (unsigned)__builtin_ctz(x);
#else
    unsigned k = 0;
    while (!(x & 1)) {
        x >>= 1;
        k++;
    }
    return k;
#endif
}

/* The first p >= j (p <= n) where s[p] is not an ASCII byte of `kind`, one byte at a time. */
static inline Py_ssize_t
run_portable(const uint8_t *s, Py_ssize_t j, Py_ssize_t n, int kind)
{
    while (j < n && scan_ascii_kind[s[j]] == kind)
        j++;
    return j;
}

/* Byte tests, the same in both vector widths. With bytes as signed 8-bit numbers, adding
 * 0x80 - lo maps lo..lo+k-1 onto -128..-129+k, so one signed compare tests a range; bytes
 * >= 0x80 fall outside every range tested here.
 *   letters  (b | 0x20) in 'a'..'z'      digits  b in '0'..'9'
 *   space    b in '\t'..'\r' or b == ' '  other   b < 0x80 and none of the above */
#ifdef LM_SCAN_SSE2
static inline __m128i
in_range_sse2(__m128i v, uint8_t lo, int k)
{
    __m128i x = _mm_add_epi8(v, _mm_set1_epi8((char)(0x80 - lo)));
    return _mm_cmplt_epi8(x, _mm_set1_epi8((char)(-128 + k)));
}

static inline __m128i
letters_sse2(__m128i v)
{
    return in_range_sse2(_mm_or_si128(v, _mm_set1_epi8(0x20)), 'a', 26);
}

static inline __m128i
spaces_sse2(__m128i v)
{
    return _mm_or_si128(in_range_sse2(v, '\t', 5), _mm_cmpeq_epi8(v, _mm_set1_epi8(' ')));
}

/* Bit k set: byte k of the 16 at s is an ASCII byte of `kind`. */
static inline uint32_t
kind_mask_sse2(const uint8_t *s, int kind)
{
    __m128i v = _mm_loadu_si128((const __m128i *)s), m;
    if (kind == C_L)
        m = letters_sse2(v);
    else if (kind == C_N)
        m = in_range_sse2(v, '0', 10);
    else if (kind == C_S)
        m = spaces_sse2(v);
    else {
        __m128i ascii = _mm_cmpgt_epi8(v, _mm_set1_epi8(-1));
        __m128i classed = _mm_or_si128(_mm_or_si128(letters_sse2(v), in_range_sse2(v, '0', 10)),
                                       spaces_sse2(v));
        m = _mm_andnot_si128(classed, ascii);
    }
    return (uint32_t)_mm_movemask_epi8(m);
}

static inline Py_ssize_t
run_sse2(const uint8_t *s, Py_ssize_t j, Py_ssize_t n, int kind)
{
    while (j + 16 <= n) {
        uint32_t miss = ~kind_mask_sse2(s + j, kind) & 0xFFFFu;
        if (miss)
            return j + scan_ctz(miss);
        j += 16;
    }
    return run_portable(s, j, n, kind);
}
#endif

#ifdef LM_SCAN_AVX2
#define LM_AVX2 __attribute__((target("avx2")))

LM_AVX2 static inline __m256i
in_range_avx2(__m256i v, uint8_t lo, int k)
{
    __m256i x = _mm256_add_epi8(v, _mm256_set1_epi8((char)(0x80 - lo)));
    return _mm256_cmpgt_epi8(_mm256_set1_epi8((char)(-128 + k)), x);
}

LM_AVX2 static inline __m256i
letters_avx2(__m256i v)
{
    return in_range_avx2(_mm256_or_si256(v, _mm256_set1_epi8(0x20)), 'a', 26);
}

LM_AVX2 static inline __m256i
spaces_avx2(__m256i v)
{
    return _mm256_or_si256(in_range_avx2(v, '\t', 5), _mm256_cmpeq_epi8(v, _mm256_set1_epi8(' ')));
}

/* Bit k set: byte k of the 32 at s is an ASCII byte of `kind`. */
LM_AVX2 static inline uint32_t
kind_mask_avx2(const uint8_t *s, int kind)
{
    __m256i v = _mm256_loadu_si256((const __m256i *)s), m;
    if (kind == C_L)
        m = letters_avx2(v);
    else if (kind == C_N)
        m = in_range_avx2(v, '0', 10);
    else if (kind == C_S)
        m = spaces_avx2(v);
    else {
        __m256i ascii = _mm256_cmpgt_epi8(v, _mm256_set1_epi8(-1));
        __m256i classed = _mm256_or_si256(
            _mm256_or_si256(letters_avx2(v), in_range_avx2(v, '0', 10)), spaces_avx2(v));
        m = _mm256_andnot_si256(classed, ascii);
    }
    return (uint32_t)_mm256_movemask_epi8(m);
}

/* Most runs in text are shorter than 16 bytes: the first block is 16 bytes (one cache line
 * more often than 32), the next ones 32. */
LM_AVX2 static inline Py_ssize_t
run_avx2(const uint8_t *s, Py_ssize_t j, Py_ssize_t n, int kind)
{
    if (j + 16 <= n) {
        uint32_t miss = ~kind_mask_sse2(s + j, kind) & 0xFFFFu;
        if (miss)
            return j + scan_ctz(miss);
        j += 16;
    }
    while (j + 32 <= n) {
        uint32_t miss = ~kind_mask_avx2(s + j, kind);
        if (miss)
            return j + scan_ctz(miss);
        j += 32;
    }
    if (j + 16 <= n) {
        uint32_t miss = ~kind_mask_sse2(s + j, kind) & 0xFFFFu;
        if (miss)
            return j + scan_ctz(miss);
        j += 16;
    }
    return run_portable(s, j, n, kind);
}
#endif

/* One instantiation of the scanner per path. */
#define SCAN_NAME(f) f##_portable
#define SCAN_ATTR
#define SCAN_RUN run_portable
#include "_scan_path.h"

#ifdef LM_SCAN_SSE2
#define SCAN_NAME(f) f##_sse2
#define SCAN_ATTR
#define SCAN_RUN run_sse2
#include "_scan_path.h"
#endif

#ifdef LM_SCAN_AVX2
#define SCAN_NAME(f) f##_avx2
#define SCAN_ATTR LM_AVX2
#define SCAN_RUN run_avx2
#include "_scan_path.h"
#endif

/* Whether this CPU (and build) can run `path`. */
static int
scan_supported(int path)
{
    switch (path) {
    case SCAN_PORTABLE:
        return 1;
#ifdef LM_SCAN_SSE2
    case SCAN_SSE2:
        return 1;
#endif
#ifdef LM_SCAN_AVX2
    case SCAN_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") != 0;
#endif
    default:
        return 0;
    }
}

/* Fill the ASCII table and choose the fastest supported path. */
static void
scan_init(void)
{
    for (int b = 0; b < 256; b++)
        scan_ascii_kind[b] = b < 0x80 ? (uint8_t)kind_of(lm_uc_blocks[0][b]) : 0xFF;
    scan_path = SCAN_PORTABLE;
    for (int p = SCAN_NPATHS - 1; p > SCAN_PORTABLE; p--)
        if (scan_supported(p)) {
            scan_path = p;
            break;
        }
}

/* End of the pre-token that starts at s[i] (i < n), in the valid UTF-8 text s[0:n). */
static Py_ssize_t
next_pretoken(const uint8_t *s, Py_ssize_t i, Py_ssize_t n)
{
    switch (scan_path) {
#ifdef LM_SCAN_AVX2
    case SCAN_AVX2:
        return next_pretoken_avx2(s, i, n);
#endif
#ifdef LM_SCAN_SSE2
    case SCAN_SSE2:
        return next_pretoken_sse2(s, i, n);
#endif
    default:
        return next_pretoken_portable(s, i, n);
    }
}

/* The ends of the pre-tokens that follow s[i] (i < n), up to `max` of them, in ends[];
 * returns how many (>= 1). The first starts at i, each next one where the last ended. */
static Py_ssize_t
scan_batch(const uint8_t *s, Py_ssize_t i, Py_ssize_t n, Py_ssize_t *ends, Py_ssize_t max)
{
    switch (scan_path) {
#ifdef LM_SCAN_AVX2
    case SCAN_AVX2:
        return scan_batch_avx2(s, i, n, ends, max);
#endif
#ifdef LM_SCAN_SSE2
    case SCAN_SSE2:
        return scan_batch_sse2(s, i, n, ends, max);
#endif
    default:
        return scan_batch_portable(s, i, n, ends, max);
    }
}
