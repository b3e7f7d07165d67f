/* The GPT-2 pre-token scanner of the native engine (included by _native.c).
 *
 * next_pretoken(s, i, n) is the end of the pre-token that starts at s[i]: the match of
 *     '(?:[sdmt]|ll|ve|re) | ?\p{L}+ | ?\p{N}+ | ?[^\s\p{L}\p{N}]+ | \s+(?!\S) | \s+
 * at i, the alternatives tried in that order as the regex engine does. scan_batch finds
 * the ends of up to `max` consecutive pre-tokens in one call (what counting and the scan
 * benchmark use).
 *
 * scan_batch works a window at a time: the 64 bytes from a pre-token start are classified
 * once, as six 64-bit masks (letters, digits, white space, ' ', apostrophes, bytes >= 0x80),
 * and window_starts turns them into the mask of the pre-token starts in the window with a
 * few shifts and logic operations (the rules are at window_starts); the set bits, read with
 * count-trailing-zeros, are the ends of that many pre-tokens, and the last start found
 * begins the next window. In English text a window gives a dozen pre-tokens. What a window
 * cannot decide is read one pre-token at a time by pretoken_end: a pre-token of 62 bytes
 * or more, and any near a byte >= 0x80, whose character it reads with the Unicode tables
 * (char_class); where the next 16 bytes hold such a byte no window is built at all, so text
 * in other scripts is read as before. pretoken_end finds runs of one class (a long word, an
 * indentation) 16 or 32 bytes at a time over ASCII. Three paths compute the same thing:
 *
 *   avx2      masks from two 32-byte vectors, runs 16 then 32 bytes at a time (x86-64
 *             with AVX2, POPCNT and BMI1, detected at run time; compiled with a target
 *             attribute, so the build needs no -mavx2)
 *   sse2      masks from four 16-byte vectors, runs 16 bytes at a time (every x86-64 CPU)
 *   portable  masks from a 256-entry class table, 8 bytes side by side; runs one byte at
 *             a time (every CPU)
 *
 * The rules on the masks are one function for all paths. The fastest path the CPU has is
 * used unless set_simd chooses another (the tests run every path; LM_NATIVE_SIMD in
 * lm.tokenizer.native sets it). Each path is one instantiation of _scan_path.h, so the
 * whole scanning loop is compiled for its instruction set. Compiled with
 * -DLM_NATIVE_PORTABLE_ONLY, the build has the portable path alone, as it does for CPUs
 * other than x86-64 (a test builds it so).
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
scan_ctz64(uint64_t x) /* x != 0 */
{
#if defined(__GNUC__) || defined(__clang__)
    return (unsigned)__builtin_ctzll(x);
#else
    unsigned k = 0;
    while (!(x & 1)) {
        x >>= 1;
        k++;
    }
    return k;
#endif
}

static inline unsigned
scan_ctz(uint32_t x) /* x != 0 */
{
    return scan_ctz64(x);
}

/* The number of set bits of x, without the popcnt instruction (the paths other than avx2
 * run on CPUs that may lack it). */
static inline unsigned
scan_popcount_swar(uint64_t x)
{
    x -= (x >> 1) & 0x5555555555555555ULL;
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
    return (unsigned)((x * 0x0101010101010101ULL) >> 56);
}

/* Write the offsets (from i) of the next four set bits of `bits` to e[0..3], and clear
 * them; once none is left it writes i + 63 (bit 63 is never a start), which the caller
 * overwrites or leaves beyond the count. */
#define SCAN_EMIT4(e, i, bits)                                                               \
    do {                                                                                   \
        for (int e4_ = 0; e4_ < 4; e4_++) {                                                \
            (e)[e4_] = (i) + (Py_ssize_t)scan_ctz64((bits) | (1ULL << 63));                \
            (bits) &= (bits) - 1;                                                          \
        }                                                                                  \
    } while (0)

/* ---- the window: the boundaries of many pre-tokens from one classification ----
 *
 * scan_batch classifies the SCAN_WINDOW (64) bytes that follow a known pre-token start
 * once, as bit masks (bit k: byte k of the window), and finds every pre-token start the
 * window decides with a few operations on the masks. Over ASCII, whether a pre-token
 * starts at p depends on the bytes p-4 .. p+1 alone (p after the window's start):
 *
 *   - a change of class starts one: letters, digits, white space, other (ASCII);
 *   - the last white space before a non-space starts one (`\s+(?!\S)` gives the others
 *     to the run before it, which is one pre-token), and a ' ' before a non-space
 *     joins it (` ?X+`), so no start after it; white space up to the end is one run;
 *   - a contraction '(?:[sdmt]|ll|ve|re) is one pre-token, ended even when a letter
 *     follows ("'st" is "'s", "t"); only at an apostrophe that starts a pre-token: at the
 *     window's start, or after a letter, a digit or white space other than ' ' (after
 *     anything else, or ' ', the apostrophe belongs to ` ?[^\s\p{L}\p{N}]+`).
 *
 * So the starts at 1 .. 62 are decided (63 needs byte 64), up to the first byte >= 0x80
 * less one (that character needs the Unicode tables). The last start found is the next
 * window's start. Fewer than 64 bytes left: they are copied into a window padded with ' '
 * (a space after the end is what the end is to every rule above), and the last pre-token
 * ends at the end. After a window that met a byte >= 0x80 or decided no start (a pre-token
 * of 62 bytes or more), pretoken_end reads the next pre-token. Each path builds the masks
 * with its own instructions; the rules are this one function, so all paths give the same
 * starts. */
#define SCAN_WINDOW 64
#define SCAN_AHEAD 16 /* bytes that must be ASCII for a window to be worth classifying */

typedef struct {
    uint64_t letter, digit, space, blank, quote, high; /* \p{L} \p{N} \s ' ' ' >=0x80 */
} ScanMasks;

/* The bits of scan_ascii_class: ASCII letter, digit, white space (C_L, C_N, C_S), and: */
#define SB_BLANK 8  /* ' ' */
#define SB_QUOTE 16 /* '\'' */
#define SB_HIGH 32  /* >= 0x80 */
static uint8_t scan_ascii_class[256];

/* The pre-token starts at bits 1 .. 62 of the window w (64 readable bytes), whose byte
 * 0 starts a pre-token; correct below the first byte >= 0x80 less one (see above). */
static inline uint64_t
window_starts(const ScanMasks *m, const uint8_t *w)
{
    uint64_t l = m->letter, d = m->digit, sp = m->space;
    uint64_t b = (l ^ (l << 1)) | (d ^ (d << 1)) | (sp ^ (sp << 1)); /* class changes */
    b |= sp & ~(sp >> 1) & ~(1ULL << 63); /* the last white space before a non-space */
    b &= ~((m->blank << 1) & ~sp);        /* ' ' + non-space: one pre-token */
    /* apostrophes that start a pre-token: after a letter, digit or white space but ' ' */
    uint64_t q = m->quote & (((l | d | (sp & ~m->blank)) << 1) | 1);
    while (q) {
        unsigned a = scan_ctz64(q);
        if (a > SCAN_WINDOW - 3) /* a contraction there decides starts from 63 on only */
            break;
        q &= q - 1;
        uint8_t c = w[a + 1], e = w[a + 2];
        if (c == 's' || c == 'd' || c == 'm' || c == 't')
            b = (b & ~(2ULL << a)) | (4ULL << a);
        else if ((c == 'l' && e == 'l') || (c == 'v' && e == 'e') || (c == 'r' && e == 'e'))
            b = (b & ~(6ULL << a)) | (8ULL << a);
    }
    return b;
}

/* The low bits of the 8 bytes of x (each 0 or 1) as 8 bits: byte k's bit lands at bit
 * 56 + k of the product, and no two partial products meet or carry. */
static inline uint64_t
scan_gather8(uint64_t x)
{
    return (x * 0x0102040810204080ULL) >> 56;
}

/* The masks of the window w through scan_ascii_class (every CPU): the classes of 8 bytes
 * side by side in a uint64_t, then each class's bit of the 8 gathered at once. */
static inline void
masks_portable(const uint8_t *w, ScanMasks *m)
{
    const uint64_t ones = 0x0101010101010101ULL;
    ScanMasks r = {0, 0, 0, 0, 0, 0};
    for (unsigned k = 0; k < SCAN_WINDOW; k += 8) {
        uint64_t c = 0;
        for (unsigned j = 0; j < 8; j++)
            c |= (uint64_t)scan_ascii_class[w[k + j]] << (8 * j);
        r.letter |= scan_gather8(c & ones) << k;
        r.digit |= scan_gather8(c >> 1 & ones) << k;
        r.space |= scan_gather8(c >> 2 & ones) << k;
        r.blank |= scan_gather8(c >> 3 & ones) << k;
        r.quote |= scan_gather8(c >> 4 & ones) << k;
        r.high |= scan_gather8(c >> 5 & ones) << k;
    }
    *m = r;
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

/* The masks of the window w, 16 bytes at a time. */
static inline void
masks_sse2(const uint8_t *w, ScanMasks *m)
{
    ScanMasks r = {0, 0, 0, 0, 0, 0};
    for (unsigned k = 0; k < SCAN_WINDOW; k += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(w + k));
        __m128i blank = _mm_cmpeq_epi8(v, _mm_set1_epi8(' '));
        r.letter |= (uint64_t)(uint32_t)_mm_movemask_epi8(letters_sse2(v)) << k;
        r.digit |= (uint64_t)(uint32_t)_mm_movemask_epi8(in_range_sse2(v, '0', 10)) << k;
        r.space |= (uint64_t)(uint32_t)_mm_movemask_epi8(
                       _mm_or_si128(in_range_sse2(v, '\t', 5), blank))
                   << k;
        r.blank |= (uint64_t)(uint32_t)_mm_movemask_epi8(blank) << k;
        r.quote |= (uint64_t)(uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('\'')))
                   << k;
        r.high |= (uint64_t)(uint32_t)_mm_movemask_epi8(v) << k;
    }
    *m = r;
}
#endif

#ifdef LM_SCAN_AVX2
#define LM_AVX2 __attribute__((target("avx2,popcnt,bmi")))

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

/* The masks of 32 bytes at w, as bits 0..31. */
LM_AVX2 static inline void
masks32_avx2(const uint8_t *w, uint32_t out[6])
{
    __m256i v = _mm256_loadu_si256((const __m256i *)w);
    __m256i blank = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(' '));
    out[0] = (uint32_t)_mm256_movemask_epi8(letters_avx2(v));
    out[1] = (uint32_t)_mm256_movemask_epi8(in_range_avx2(v, '0', 10));
    out[2] = (uint32_t)_mm256_movemask_epi8(_mm256_or_si256(in_range_avx2(v, '\t', 5), blank));
    out[3] = (uint32_t)_mm256_movemask_epi8(blank);
    out[4] = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, _mm256_set1_epi8('\'')));
    out[5] = (uint32_t)_mm256_movemask_epi8(v);
}

/* The masks of the window w, 32 bytes at a time. */
LM_AVX2 static inline void
masks_avx2(const uint8_t *w, ScanMasks *m)
{
    uint32_t lo[6], hi[6];
    masks32_avx2(w, lo);
    masks32_avx2(w + 32, hi);
    m->letter = lo[0] | (uint64_t)hi[0] << 32;
    m->digit = lo[1] | (uint64_t)hi[1] << 32;
    m->space = lo[2] | (uint64_t)hi[2] << 32;
    m->blank = lo[3] | (uint64_t)hi[3] << 32;
    m->quote = lo[4] | (uint64_t)hi[4] << 32;
    m->high = lo[5] | (uint64_t)hi[5] << 32;
}
#endif

/* One instantiation of the scanner per path. */
#define SCAN_NAME(f) f##_portable
#define SCAN_ATTR
#define SCAN_RUN run_portable
#define SCAN_MASKS masks_portable
#define SCAN_POPCOUNT scan_popcount_swar
#include "_scan_path.h"

#ifdef LM_SCAN_SSE2
#define SCAN_NAME(f) f##_sse2
#define SCAN_ATTR
#define SCAN_RUN run_sse2
#define SCAN_MASKS masks_sse2
#define SCAN_POPCOUNT scan_popcount_swar
#include "_scan_path.h"
#endif

#ifdef LM_SCAN_AVX2
#define SCAN_NAME(f) f##_avx2
#define SCAN_ATTR LM_AVX2
#define SCAN_RUN run_avx2
#define SCAN_MASKS masks_avx2
#define SCAN_POPCOUNT __builtin_popcountll
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
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt") &&
               __builtin_cpu_supports("bmi");
#endif
    default:
        return 0;
    }
}

/* Fill the ASCII table and choose the fastest supported path. */
static void
scan_init(void)
{
    for (int b = 0; b < 256; b++) {
        scan_ascii_kind[b] = b < 0x80 ? (uint8_t)kind_of(lm_uc_blocks[0][b]) : 0xFF;
        scan_ascii_class[b] = b < 0x80 ? scan_ascii_kind[b] : SB_HIGH;
    }
    scan_ascii_class[' '] |= SB_BLANK;
    scan_ascii_class['\''] |= SB_QUOTE;
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
