/* The native tokenization engine: GPT-2 pre-tokenization over UTF-8, pre-token counting
 * for BPE training, and BPE encoding into a buffer of uint32 ids.
 *
 * Everything here computes exactly what the pure-Python path computes (that path, in
 * pretokenize.py, tokenizer.py and bpe.py, is the reference, and the tests compare the
 * two); this file only makes it fast. See native.py for how it is chosen and used.
 *
 * The pre-tokenizer is a hand-written scanner for the alternatives of GPT2_PATTERN
 *     '(?:[sdmt]|ll|ve|re) | ?\p{L}+ | ?\p{N}+ | ?[^\s\p{L}\p{N}]+ | \s+(?!\S) | \s+
 * tried in that order at each position, as the regex engine does; the character classes
 * come from _unicode_tables.h, generated from the installed `regex` module.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_unicode_tables.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

#define C_L 1
#define C_N 2
#define C_S 4
#define C_PYSPACE 8

/* ------------------------------------------------------------------ UTF-8 */

/* Offset of the first byte that is not part of valid UTF-8 (as Python's strict decoder
 * sees it), or -1 when all of s[0:n) is valid. */
static Py_ssize_t
utf8_first_error(const uint8_t *s, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ULL)) {
                i += 8;
                /* a run of ASCII (most text): 32 bytes an iteration; tried only after 8
                 * ASCII bytes, as text in other scripts rarely has 32 */
                uint64_t b[4];
                while (i + 32 <= n) {
                    memcpy(b, s + i, 32);
                    if ((b[0] | b[1] | b[2] | b[3]) & 0x8080808080808080ULL)
                        break;
                    i += 32;
                }
                continue;
            }
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80)
                return i;
            i += 2;
        }
        else if (c >= 0xE0 && c <= 0xEF) {
            uint8_t lo = 0x80, hi = 0xBF;
            if (c == 0xE0)
                lo = 0xA0;
            else if (c == 0xED)
                hi = 0x9F;
            if (i + 1 >= n || s[i + 1] < lo || s[i + 1] > hi)
                return i;
            if (i + 2 >= n || (s[i + 2] & 0xC0) != 0x80)
                return i;
            i += 3;
        }
        else if (c >= 0xF0 && c <= 0xF4) {
            uint8_t lo = 0x80, hi = 0xBF;
            if (c == 0xF0)
                lo = 0x90;
            else if (c == 0xF4)
                hi = 0x8F;
            if (i + 1 >= n || s[i + 1] < lo || s[i + 1] > hi)
                return i;
            if (i + 2 >= n || (s[i + 2] & 0xC0) != 0x80)
                return i;
            if (i + 3 >= n || (s[i + 3] & 0xC0) != 0x80)
                return i;
            i += 4;
        }
        else
            return i;
    }
    return -1;
}

/* Class bits of the (valid) UTF-8 character at s[i]; its length in *len. */
static inline int
char_class(const uint8_t *s, Py_ssize_t i, int *len)
{
    uint8_t c = s[i];
    uint32_t cp;
    if (c < 0x80) {
        *len = 1;
        return lm_uc_blocks[0][c];
    }
    if (c < 0xE0) {
        cp = ((uint32_t)(c & 0x1F) << 6) | (s[i + 1] & 0x3F);
        *len = 2;
    }
    else if (c < 0xF0) {
        cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F);
        *len = 3;
    }
    else {
        cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[i + 1] & 0x3F) << 12) |
             ((uint32_t)(s[i + 2] & 0x3F) << 6) | (s[i + 3] & 0x3F);
        *len = 4;
    }
    return lm_uc_blocks[lm_uc_index[cp >> 8]][cp & 255];
}

/* The kind of a character for the pattern: L, N, S (white space), or 0 (anything else). */
static inline int
kind_of(int cls)
{
    return cls & (C_L | C_N | C_S);
}

/* next_pretoken and scan_batch: the scanner, in SIMD and portable paths. */
#include "_scan.h"

/* ------------------------------------------------------------------ special tokens */

typedef struct {
    Py_ssize_t n;
    uint8_t **tok; /* sorted longest first (then by bytes, like the Python pattern) */
    Py_ssize_t *len;
    uint32_t *id;
    uint8_t first[256]; /* whether some special token starts with this byte */
} Specials;

static void
specials_free(Specials *sp)
{
    for (Py_ssize_t k = 0; k < sp->n; k++)
        PyMem_RawFree(sp->tok[k]);
    PyMem_RawFree(sp->tok);
    PyMem_RawFree(sp->len);
    PyMem_RawFree(sp->id);
    memset(sp, 0, sizeof(*sp));
}

/* From a sequence of bytes (ids 0) or of (bytes, id) pairs, already in match order. */
static int
specials_init(Specials *sp, PyObject *seq)
{
    memset(sp, 0, sizeof(*sp));
    PyObject *fast = PySequence_Fast(seq, "special tokens must be a sequence");
    if (!fast)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    sp->tok = PyMem_RawCalloc(n ? n : 1, sizeof(uint8_t *));
    sp->len = PyMem_RawCalloc(n ? n : 1, sizeof(Py_ssize_t));
    sp->id = PyMem_RawCalloc(n ? n : 1, sizeof(uint32_t));
    if (!sp->tok || !sp->len || !sp->id) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, k), *b = item;
        unsigned long id = 0;
        if (PyTuple_Check(item)) {
            if (!PyArg_ParseTuple(item, "Sk", &b, &id))
                goto fail;
        }
        if (!PyBytes_Check(b) || PyBytes_GET_SIZE(b) == 0) {
            PyErr_SetString(PyExc_TypeError, "a special token must be non-empty bytes");
            goto fail;
        }
        Py_ssize_t len = PyBytes_GET_SIZE(b);
        sp->tok[k] = PyMem_RawMalloc(len);
        if (!sp->tok[k]) {
            PyErr_NoMemory();
            goto fail;
        }
        memcpy(sp->tok[k], PyBytes_AS_STRING(b), len);
        sp->len[k] = len;
        sp->id[k] = (uint32_t)id;
        sp->first[sp->tok[k][0]] = 1;
        sp->n = k + 1;
    }
    Py_DECREF(fast);
    return 0;
fail:
    Py_DECREF(fast);
    specials_free(sp);
    return -1;
}

/* The first special token occurrence at or after `from` in s[0:n): its start (n if none),
 * and in *which its index. Leftmost, then longest (the order of sp). */
static Py_ssize_t
specials_find(const Specials *sp, const uint8_t *s, Py_ssize_t from, Py_ssize_t n, Py_ssize_t *which)
{
    if (sp->n == 0)
        return n;
    for (Py_ssize_t i = from; i < n; i++) {
        if (!sp->first[s[i]])
            continue;
        for (Py_ssize_t k = 0; k < sp->n; k++) {
            Py_ssize_t len = sp->len[k];
            if (len <= n - i && memcmp(s + i, sp->tok[k], len) == 0) {
                *which = k;
                return i;
            }
        }
    }
    return n;
}

/* ------------------------------------------------------------------ hashing */

static inline uint64_t
hash_bytes(const uint8_t *s, Py_ssize_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ULL;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, s, n);
        h = (h ^ w) * 0x94D049BB133111EBULL;
        h ^= h >> 31;
    }
    h *= 0xD6E8FEB86659FD93ULL;
    return h ^ (h >> 32);
}

/* Memory: PyMem_Raw* (no GIL needed), since encoding runs with the GIL released. The
 * helpers below return -1 / NULL without setting an exception; the caller, holding the GIL,
 * raises MemoryError. */

/* A map from byte strings to a 64-bit value, open addressing (linear probing), keys in
 * one growing arena. Used for the pre-token counts and for the encoder's word cache. */
typedef struct {
    uint64_t hash;
    uint64_t off; /* key offset in the arena */
    uint32_t len; /* key length; 0 = empty slot (keys are never empty) */
    uint32_t aux;
    int64_t value;
} Slot;

typedef struct {
    Slot *slots;
    size_t cap, used; /* cap a power of two */
    uint8_t *arena;
    size_t arena_len, arena_cap;
} BytesMap;

static int
map_init(BytesMap *m, size_t cap)
{
    memset(m, 0, sizeof(*m));
    m->cap = cap;
    m->slots = PyMem_RawCalloc(cap, sizeof(Slot));
    m->arena_cap = 1 << 16;
    m->arena = PyMem_RawMalloc(m->arena_cap);
    if (!m->slots || !m->arena) {
        PyMem_RawFree(m->slots);
        PyMem_RawFree(m->arena);
        memset(m, 0, sizeof(*m));
        return -1;
    }
    return 0;
}

static void
map_free(BytesMap *m)
{
    PyMem_RawFree(m->slots);
    PyMem_RawFree(m->arena);
    memset(m, 0, sizeof(*m));
}

static void
map_clear(BytesMap *m)
{
    memset(m->slots, 0, m->cap * sizeof(Slot));
    m->used = 0;
    m->arena_len = 0;
}

static int
map_grow(BytesMap *m)
{
    size_t cap = m->cap * 2;
    Slot *slots = PyMem_RawCalloc(cap, sizeof(Slot));
    if (!slots) {
        return -1;
    }
    for (size_t k = 0; k < m->cap; k++) {
        Slot *o = &m->slots[k];
        if (!o->len)
            continue;
        size_t j = o->hash & (cap - 1);
        while (slots[j].len)
            j = (j + 1) & (cap - 1);
        slots[j] = *o;
    }
    PyMem_RawFree(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

/* Append bytes to the arena; returns their offset, or (size_t)-1 on failure. */
static size_t
arena_add(uint8_t **arena, size_t *len, size_t *cap, const void *data, size_t n)
{
    if (*len + n > *cap) {
        size_t c = *cap ? *cap : 1024;
        while (c < *len + n)
            c *= 2;
        uint8_t *a = PyMem_RawRealloc(*arena, c);
        if (!a) {
                return (size_t)-1;
        }
        *arena = a;
        *cap = c;
    }
    memcpy(*arena + *len, data, n);
    *len += n;
    return *len - n;
}

/* The slot of key s[0:n) (n > 0), or NULL if absent. */
static inline Slot *
map_find(const BytesMap *m, const uint8_t *s, Py_ssize_t n, uint64_t h)
{
    size_t j = h & (m->cap - 1);
    for (;;) {
        Slot *e = &m->slots[j];
        if (!e->len)
            return NULL;
        if (e->hash == h && e->len == (uint32_t)n && memcmp(m->arena + e->off, s, n) == 0)
            return e;
        j = (j + 1) & (m->cap - 1);
    }
}

/* The slot of key s[0:n), inserted with value 0 if absent (*fresh set then); NULL on error. */
static inline Slot *
map_upsert(BytesMap *m, const uint8_t *s, Py_ssize_t n, uint64_t h, int *fresh)
{
    size_t j = h & (m->cap - 1);
    for (;;) {
        Slot *e = &m->slots[j];
        if (!e->len)
            break;
        if (e->hash == h && e->len == (uint32_t)n && memcmp(m->arena + e->off, s, n) == 0) {
            *fresh = 0;
            return e;
        }
        j = (j + 1) & (m->cap - 1);
    }
    if (n > UINT32_MAX) /* a pre-token over 4 GB: reported as out of memory */
        return NULL;
    if ((m->used + 1) * 2 > m->cap) {
        if (map_grow(m) < 0)
            return NULL;
        return map_upsert(m, s, n, h, fresh);
    }
    size_t off = arena_add(&m->arena, &m->arena_len, &m->arena_cap, s, n);
    if (off == (size_t)-1)
        return NULL;
    Slot *e = &m->slots[j];
    e->hash = h;
    e->off = off;
    e->len = (uint32_t)n;
    e->aux = 0;
    e->value = 0;
    m->used++;
    *fresh = 1;
    return e;
}

/* ------------------------------------------------------------------ Counter */

/* Large tables probed at random (the counter's cold table, the trainer's words and pair
 * map): zeroed memory, on Linux in huge pages where the system allows them on request
 * (transparent huge pages, "madvise"). With 4 KB pages nearly every probe of a table of
 * tens of MB also missed the TLB, and the page walks, not the cache misses, set the pace.
 * Free with big_free and the same size. */
#define BIG_ALLOC (2u << 20)

static void *
big_calloc(size_t n)
{
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (n >= BIG_ALLOC) {
        void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return NULL;
        madvise(p, n, MADV_HUGEPAGE); /* a hint: without it, plain pages */
        return p;
    }
#endif
    return PyMem_RawCalloc(n ? n : 1, 1);
}

static void
big_free(void *p, size_t n)
{
    if (!p)
        return;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (n >= BIG_ALLOC) {
        munmap(p, n);
        return;
    }
#endif
    PyMem_RawFree(p);
}

/* The pre-token counts: hash tables laid out for counting, where a few thousand frequent
 * pre-tokens make most of the lookups and the rest are a long tail met a few times each.
 *
 * A slot holds a key of up to 16 bytes itself (zero-padded, compared as two words); a
 * longer key is in `arena`. Open addressing, linear probing; a slot's place comes from the
 * high bits of its key's hash, of which it keeps 32 (so a table can grow without the keys).
 * The first COUNT_HOT keys seen (most of the frequent ones) go to `hot`, small enough to
 * stay in cache; the others to `cold`, which grows. Counting looks a batch of pre-tokens
 * up in `hot` first and prefetches the `cold` slots of the rest before it visits them, so
 * the cache misses of the long tail overlap instead of following one another. */
#define COUNT_INLINE 16
#ifndef COUNT_HOT_BITS
#define COUNT_HOT_BITS 13
#endif
#define COUNT_HOT ((size_t)1 << (COUNT_HOT_BITS - 1))

typedef struct {
    uint64_t key[2]; /* the key's bytes, zero-padded; or key[0] = its arena offset */
    int64_t count;
    uint32_t len; /* 0: an empty slot */
    uint32_t hash; /* the high half of the key's hash */
} CountSlot;

typedef struct {
    CountSlot *slots;
    size_t used;
    int bits; /* 2 ** bits slots */
} CountTable;

typedef struct {
    CountTable hot, cold;
    uint8_t *arena;
    size_t arena_len, arena_cap;
} CountMap;

static int
counts_init(CountMap *m)
{
    memset(m, 0, sizeof(*m));
    m->hot.bits = COUNT_HOT_BITS; /* 2 * COUNT_HOT slots */
    m->cold.bits = 12;
    m->hot.slots = PyMem_RawCalloc((size_t)1 << m->hot.bits, sizeof(CountSlot));
    m->cold.slots = big_calloc(((size_t)1 << m->cold.bits) * sizeof(CountSlot));
    if (!m->hot.slots || !m->cold.slots) {
        PyMem_RawFree(m->hot.slots);
        big_free(m->cold.slots, ((size_t)1 << m->cold.bits) * sizeof(CountSlot));
        memset(m, 0, sizeof(*m));
        return -1;
    }
    return 0;
}

static void
counts_free(CountMap *m)
{
    PyMem_RawFree(m->hot.slots);
    big_free(m->cold.slots, ((size_t)1 << m->cold.bits) * sizeof(CountSlot));
    PyMem_RawFree(m->arena);
    memset(m, 0, sizeof(*m));
}

static inline const uint8_t *
slot_key(const CountMap *m, const CountSlot *e)
{
    return e->len <= COUNT_INLINE ? (const uint8_t *)e->key : m->arena + e->key[0];
}

static inline uint64_t
mix64(uint64_t h)
{
    h ^= h >> 30;
    h *= 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 27;
    h *= 0x94D049BB133111EBULL;
    return h ^ (h >> 31);
}

/* A key to count: s[0:n), its hash, for n <= COUNT_INLINE its two words; and how many. */
typedef struct {
    const uint8_t *s;
    Py_ssize_t n;
    uint64_t key[2];
    uint32_t hash;
    int64_t by;
} CountKey;

/* The key of s[0:n) (n > 0), where `room` >= n bytes may be read from s, to count `by`. */
static inline CountKey
count_key(const uint8_t *s, Py_ssize_t n, Py_ssize_t room, int64_t by)
{
    CountKey k = {s, n, {0, 0}, 0, by};
    if (n > COUNT_INLINE) {
        k.hash = (uint32_t)(hash_bytes(s, n) >> 32);
        return k;
    }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (room >= 16) { /* two loads, the bytes past the key masked off */
        memcpy(k.key, s, 16);
        if (n < 8) {
            k.key[0] &= ~0ULL >> (64 - 8 * n);
            k.key[1] = 0;
        }
        else if (n < 16)
            k.key[1] &= n > 8 ? ~0ULL >> (128 - 8 * n) : 0;
    }
    else
#endif
        memcpy(k.key, s, (size_t)n);
    (void)room;
    k.hash = (uint32_t)(mix64(k.key[0] * 0x9E3779B97F4A7C15ULL +
                              (k.key[1] ^ (uint64_t)n) * 0xC2B2AE3D27D4EB4FULL) >> 32);
    return k;
}

static inline size_t
slot_index(const CountTable *t, uint32_t hash)
{
    return hash >> (32 - t->bits);
}

/* The slot of the key in t, or the empty slot where it would go. */
static inline CountSlot *
table_probe(const CountTable *t, const uint8_t *arena, const CountKey *k)
{
    size_t mask = ((size_t)1 << t->bits) - 1, j = slot_index(t, k->hash);
    for (;;) {
        CountSlot *e = &t->slots[j];
        if (!e->len)
            return e;
        if (e->hash == k->hash && e->len == (uint64_t)k->n &&
            (k->n <= COUNT_INLINE ? e->key[0] == k->key[0] && e->key[1] == k->key[1]
                                  : memcmp(arena + e->key[0], k->s, k->n) == 0))
            return e;
        j = (j + 1) & mask;
    }
}

/* Grow the cold table (doubling) until it takes `extra` more keys at load 1/2. */
static int
cold_reserve(CountMap *m, size_t extra)
{
    while ((m->cold.used + extra) * 2 > ((size_t)1 << m->cold.bits)) {
        CountTable t = {NULL, m->cold.used, m->cold.bits + 1};
        if (t.bits > 32 || !(t.slots = big_calloc(((size_t)1 << t.bits) * sizeof(CountSlot))))
            return -1;
        size_t mask = ((size_t)1 << t.bits) - 1;
        for (size_t k = 0; k < ((size_t)1 << m->cold.bits); k++) {
            CountSlot *o = &m->cold.slots[k];
            if (!o->len)
                continue;
            size_t j = slot_index(&t, o->hash);
            while (t.slots[j].len)
                j = (j + 1) & mask;
            t.slots[j] = *o;
        }
        big_free(m->cold.slots, ((size_t)1 << m->cold.bits) * sizeof(CountSlot));
        m->cold = t;
    }
    return 0;
}

/* Store the new key k in the empty slot e of table t. -1: no memory. */
static int
slot_fill(CountMap *m, CountTable *t, CountSlot *e, const CountKey *k)
{
    if (k->n > UINT32_MAX) /* a pre-token over 4 GB: reported as out of memory */
        return -1;
    e->key[0] = k->key[0];
    e->key[1] = k->key[1];
    if (k->n > COUNT_INLINE) {
        size_t off = arena_add(&m->arena, &m->arena_len, &m->arena_cap, k->s, (size_t)k->n);
        if (off == (size_t)-1)
            return -1;
        e->key[0] = off;
    }
    e->count = k->by;
    e->len = (uint32_t)k->n;
    e->hash = k->hash;
    t->used++;
    return 0;
}

/* Count the keys keys[0:nkeys) (their `by` each). Each is looked up in `hot` first, where
 * a key is if it came while `hot` had room; the rest are gathered at the front of keys[]
 * with their `cold` slots prefetched, then counted there. -1: no memory. */
static int
counts_add(CountMap *m, CountKey *keys, Py_ssize_t nkeys)
{
    Py_ssize_t ncold = 0;
    for (Py_ssize_t t = 0; t < nkeys; t++) {
        CountKey *k = &keys[t];
        CountSlot *e = table_probe(&m->hot, m->arena, k);
        if (e->len)
            e->count += k->by;
        else if (m->hot.used < COUNT_HOT) {
            if (slot_fill(m, &m->hot, e, k) < 0)
                return -1;
        }
        else {
#if defined(__GNUC__) || defined(__clang__)
            __builtin_prefetch(&m->cold.slots[slot_index(&m->cold, k->hash)]);
#endif
            keys[ncold++] = *k;
        }
    }
    for (Py_ssize_t t = 0; t < ncold; t++) {
        CountSlot *e = table_probe(&m->cold, m->arena, &keys[t]);
        if (e->len) {
            e->count += keys[t].by;
            continue;
        }
        if ((m->cold.used + 1) * 2 > ((size_t)1 << m->cold.bits)) {
            if (cold_reserve(m, 1) < 0)
                return -1;
            e = table_probe(&m->cold, m->arena, &keys[t]);
        }
        if (slot_fill(m, &m->cold, e, &keys[t]) < 0)
            return -1;
    }
    return 0;
}

/* The next key's slot at or after *pos (a position over hot's slots, then cold's), or
 * NULL at the end; *pos moves past it. Start with *pos = 0. */
static const CountSlot *
counts_next(const CountMap *m, size_t *pos)
{
    size_t nhot = (size_t)1 << m->hot.bits, ncold = (size_t)1 << m->cold.bits;
    for (; *pos < nhot + ncold; (*pos)++) {
        const CountSlot *e = *pos < nhot ? &m->hot.slots[*pos] : &m->cold.slots[*pos - nhot];
        if (e->len) {
            (*pos)++;
            return e;
        }
    }
    return NULL;
}

typedef struct {
    PyObject_HEAD
    CountMap map;
    int64_t total; /* pre-tokens counted */
} CounterObject;

static int
Counter_init(CounterObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "", kwlist))
        return -1;
    counts_free(&self->map);
    self->total = 0;
    if (counts_init(&self->map) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void
Counter_dealloc(CounterObject *self)
{
    counts_free(&self->map);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Count the pre-tokens of the text s[0:n), which has `room` >= n readable bytes: a batch
 * at a time (see CountMap). */
static int
count_piece(CounterObject *self, const uint8_t *s, Py_ssize_t n, Py_ssize_t room)
{
    Py_ssize_t ends[256], i = 0;
    CountKey keys[256];
    while (i < n) {
        Py_ssize_t k = scan_batch(s, i, n, ends, 256);
        for (Py_ssize_t t = 0; t < k; t++) {
            keys[t] = count_key(s + i, ends[t] - i, room - i, 1);
            i = ends[t];
        }
        if (counts_add(&self->map, keys, k) < 0)
            return -1;
        self->total += k;
    }
    return 0;
}

/* add(data, specials) -> (n_special, tail_text, bad_offset)
 * Count the pre-tokens of UTF-8 `data` split on the special tokens (a sequence of bytes,
 * longest first). n_special: special-token occurrences; tail_text: whether the text after
 * the last special token (all of it if none) holds a character that is not str.isspace;
 * bad_offset: -1, or the offset of the first invalid UTF-8 byte (then nothing is counted). */
static PyObject *
Counter_add(CounterObject *self, PyObject *args)
{
    Py_buffer buf;
    PyObject *spec_seq;
    if (!PyArg_ParseTuple(args, "y*O", &buf, &spec_seq))
        return NULL;
    const uint8_t *s = buf.buf;
    Py_ssize_t n = buf.len;
    Specials sp;
    if (specials_init(&sp, spec_seq) < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    Py_ssize_t bad = utf8_first_error(s, n);
    Py_ssize_t n_special = 0, piece = 0;
    int tail_text = 0, err = 0;
    if (bad < 0) {
        for (;;) {
            Py_ssize_t which = 0, at = specials_find(&sp, s, piece, n, &which);
            if (count_piece(self, s + piece, at - piece, n - piece) < 0) {
                err = 1;
                break;
            }
            if (at == n)
                break;
            n_special++;
            piece = at + sp.len[which];
        }
        for (Py_ssize_t i = piece; !err && i < n;) {
            int len, cls = char_class(s, i, &len);
            if (!(cls & C_PYSPACE)) {
                tail_text = 1;
                break;
            }
            i += len;
        }
    }
    specials_free(&sp);
    PyBuffer_Release(&buf);
    if (err) {
        PyErr_NoMemory();
        return NULL;
    }
    return Py_BuildValue("nOn", n_special, tail_text ? Py_True : Py_False, bad);
}

/* to_dict() -> {bytes: int} */
static PyObject *
Counter_to_dict(CounterObject *self, PyObject *Py_UNUSED(ignored))
{
    const CountMap *m = &self->map;
    PyObject *d = _PyDict_NewPresized((Py_ssize_t)(m->hot.used + m->cold.used));
    if (!d)
        return NULL;
    size_t pos = 0;
    for (const CountSlot *e; (e = counts_next(m, &pos));) {
        PyObject *key = PyBytes_FromStringAndSize((const char *)slot_key(m, e), e->len);
        PyObject *val = key ? PyLong_FromLongLong(e->count) : NULL;
        if (!val || PyDict_SetItem(d, key, val) < 0) {
            Py_XDECREF(key);
            Py_XDECREF(val);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(key);
        Py_DECREF(val);
    }
    return d;
}

/* to_bytes() -> a compact serialization (for sending counts between processes):
 * int64 total, then per entry int64 count, uint32 length, key bytes. */
static PyObject *
Counter_to_bytes(CounterObject *self, PyObject *Py_UNUSED(ignored))
{
    const CountMap *m = &self->map;
    size_t size = 8, pos = 0;
    for (const CountSlot *e; (e = counts_next(m, &pos));)
        size += 12 + e->len;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (!out)
        return NULL;
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
    memcpy(p, &self->total, 8);
    p += 8;
    pos = 0;
    for (const CountSlot *e; (e = counts_next(m, &pos));) {
        memcpy(p, &e->count, 8);
        memcpy(p + 8, &e->len, 4);
        memcpy(p + 12, slot_key(m, e), e->len);
        p += 12 + e->len;
    }
    return out;
}

/* merge_bytes(blob): add the counts serialized by to_bytes. The blob is checked whole
 * first (a corrupt one changes nothing). Its keys come in the order of the sender's table,
 * that is by hash: the cold table is sized for all of them first, or they would pile up in
 * one end of it. */
static PyObject *
Counter_merge_bytes(CounterObject *self, PyObject *arg)
{
    Py_buffer buf;
    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    const uint8_t *p, *end = (const uint8_t *)buf.buf + buf.len;
    int64_t total;
    size_t entries = 0;
    if (buf.len < 8)
        goto corrupt;
    for (p = (const uint8_t *)buf.buf + 8; p < end; entries++) {
        uint32_t len;
        if (end - p < 12)
            goto corrupt;
        memcpy(&len, p + 8, 4);
        p += 12;
        if ((size_t)(end - p) < len || len == 0)
            goto corrupt;
        p += len;
    }
    if (cold_reserve(&self->map, entries) < 0)
        goto nomem;
    memcpy(&total, buf.buf, 8);
    CountKey keys[256];
    Py_ssize_t k = 0;
    for (p = (const uint8_t *)buf.buf + 8; p < end;) {
        int64_t v;
        uint32_t len;
        memcpy(&v, p, 8);
        memcpy(&len, p + 8, 4);
        p += 12;
        keys[k++] = count_key(p, len, end - p, v);
        p += len;
        if (k == 256 || p == end) {
            if (counts_add(&self->map, keys, k) < 0)
                goto nomem;
            k = 0;
        }
    }
    self->total += total;
    PyBuffer_Release(&buf);
    Py_RETURN_NONE;
corrupt:
    PyBuffer_Release(&buf);
    PyErr_SetString(PyExc_ValueError, "corrupt counts blob");
    return NULL;
nomem:
    PyBuffer_Release(&buf);
    return PyErr_NoMemory();
}

static Py_ssize_t
Counter_len(CounterObject *self)
{
    return (Py_ssize_t)(self->map.hot.used + self->map.cold.used);
}

static PyObject *
Counter_get_total(CounterObject *self, void *closure)
{
    return PyLong_FromLongLong(self->total);
}

static PyMethodDef Counter_methods[] = {
    {"add", (PyCFunction)Counter_add, METH_VARARGS,
     "add(data, specials) -> (n_special, tail_text, bad_offset): count the pre-tokens of UTF-8 data"},
    {"to_dict", (PyCFunction)Counter_to_dict, METH_NOARGS, "the counts as {bytes: int}"},
    {"to_bytes", (PyCFunction)Counter_to_bytes, METH_NOARGS, "the counts serialized"},
    {"merge_bytes", (PyCFunction)Counter_merge_bytes, METH_O, "add counts serialized by to_bytes"},
    {NULL},
};

static PyGetSetDef Counter_getset[] = {
    {"total", (getter)Counter_get_total, NULL, "pre-tokens counted", NULL},
    {NULL},
};

static PySequenceMethods Counter_as_sequence = {.sq_length = (lenfunc)Counter_len};

static PyTypeObject CounterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "lm.tokenizer.native._native.Counter",
    .tp_doc = "Pre-token counts (byte strings) of UTF-8 text.",
    .tp_basicsize = sizeof(CounterObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Counter_init,
    .tp_dealloc = (destructor)Counter_dealloc,
    .tp_methods = Counter_methods,
    .tp_getset = Counter_getset,
    .tp_as_sequence = &Counter_as_sequence,
};

/* ------------------------------------------------------------------ pretokenize */

/* pretokenize(data, batch=256) -> list of (start, end) byte offsets of the pre-tokens of
 * UTF-8 data (no special-token splitting), or the int offset of the first invalid byte.
 * For tests: scan_batch finds them `batch` at a time; batch 0 reads them one at a time
 * with next_pretoken. */
static PyObject *
native_pretokenize(PyObject *module, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t batch = 256;
    if (!PyArg_ParseTuple(args, "y*|n", &buf, &batch))
        return NULL;
    if (batch < 0 || batch > 4096) {
        PyBuffer_Release(&buf);
        return PyErr_Format(PyExc_ValueError, "batch %zd: expected 0 to 4096", batch);
    }
    const uint8_t *s = buf.buf;
    Py_ssize_t n = buf.len;
    Py_ssize_t bad = utf8_first_error(s, n);
    if (bad >= 0) {
        PyBuffer_Release(&buf);
        return PyLong_FromSsize_t(bad);
    }
    Py_ssize_t ends[4096];
    PyObject *out = PyList_New(0);
    for (Py_ssize_t i = 0; out && i < n;) {
        Py_ssize_t k = 1;
        if (batch)
            k = scan_batch(s, i, n, ends, batch);
        else
            ends[0] = next_pretoken(s, i, n);
        for (Py_ssize_t t = 0; out && t < k; t++) {
            PyObject *span = Py_BuildValue("(nn)", i, ends[t]);
            if (!span || PyList_Append(out, span) < 0)
                Py_CLEAR(out);
            Py_XDECREF(span);
            i = ends[t];
        }
    }
    PyBuffer_Release(&buf);
    return out;
}

/* simd() -> the name of the scanner path in use: "avx2", "sse2" or "portable". */
static PyObject *
native_simd(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyUnicode_FromString(scan_path_names[scan_path]);
}

/* simd_paths() -> the scanner paths this CPU runs, fastest first. */
static PyObject *
native_simd_paths(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyTuple_New(0);
    for (int p = SCAN_NPATHS - 1; out && p >= 0; p--) {
        if (!scan_supported(p))
            continue;
        PyObject *name = PyUnicode_FromString(scan_path_names[p]);
        Py_ssize_t k = PyTuple_GET_SIZE(out);
        if (!name || _PyTuple_Resize(&out, k + 1) < 0) {
            Py_XDECREF(name);
            Py_CLEAR(out);
            break;
        }
        PyTuple_SET_ITEM(out, k, name);
    }
    return out;
}

/* set_simd(name): scan with this path from now on (all of them give the same pre-tokens). */
static PyObject *
native_set_simd(PyObject *module, PyObject *arg)
{
    const char *name = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    if (!name && PyErr_Occurred())
        return NULL;
    for (int p = 0; name && p < SCAN_NPATHS; p++) {
        if (strcmp(name, scan_path_names[p]) != 0)
            continue;
        if (!scan_supported(p)) {
            PyErr_Format(PyExc_ValueError, "scanner path %R is not supported on this CPU", arg);
            return NULL;
        }
        scan_path = p;
        Py_RETURN_NONE;
    }
    PyErr_Format(PyExc_ValueError, "unknown scanner path %R: one of 'avx2', 'sse2', 'portable'", arg);
    return NULL;
}

/* scan(data) -> the number of pre-tokens of UTF-8 data (no special tokens), without the
 * GIL; ValueError for invalid UTF-8. What the scanner benchmark times. */
static PyObject *
native_scan(PyObject *module, PyObject *arg)
{
    Py_buffer buf;
    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    const uint8_t *s = buf.buf;
    Py_ssize_t n = buf.len, bad, count = 0;
    Py_BEGIN_ALLOW_THREADS
    bad = utf8_first_error(s, n);
    if (bad < 0) {
        Py_ssize_t ends[256], i = 0;
        while (i < n) {
            Py_ssize_t k = scan_batch(s, i, n, ends, 256);
            i = ends[k - 1];
            count += k;
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    if (bad >= 0)
        return PyErr_Format(PyExc_ValueError, "invalid UTF-8 at byte %zd", bad);
    return PyLong_FromSsize_t(count);
}

/* ------------------------------------------------------------------ Encoder */

#define NO_RANK UINT32_MAX

typedef struct {
    uint64_t key; /* (a << 32 | b) + 1; 0 = empty */
    uint32_t rank, merged;
} PairSlot;

/* The short-pre-token caches: pre-tokens of 2 to SHORT_MAX bytes (nearly every pre-token of
 * real text; one byte is a table lookup), key and ids inline, in sets of SET_WAYS slots: a
 * lookup touches one set, whose cache lines were prefetched a batch ahead.
 *   tiny   pre-tokens of at most TINY_MAX bytes, when every id fits in 16 bits: 16-byte
 *          slots, a set in one 64-byte line (most pre-tokens, in half the memory); the
 *          key is one word (short_key puts the length in its last byte)
 *   wide   the others: 32-byte slots, a set in two lines
 * A pre-token of more than SHORT_IDS ids has a slot marked MAP_MARK: its ids are in the map's
 * ids arena, and the slot says where (mark_put), so a hit copies them with no map lookup;
 * emptying the map drops the marked slots (drop_marks).
 * A miss inserts in way 0 and moves the others down: a full set drops its oldest entry, so
 * the tables have a bounded size and are never emptied. */
#define SHORT_MAX 16
#define TINY_MAX 7
#define SHORT_IDS 3
#define SET_WAYS 4
#define MAP_MARK 0xFF

typedef struct {
    uint64_t k0;  /* the pre-token's bytes, zero padded */
    uint16_t ids[SHORT_IDS];
    uint8_t len;  /* 0 = empty */
    uint8_t nids; /* or MAP_MARK */
} TinySlot;

typedef struct {
    uint64_t k0, k1; /* the pre-token's bytes, zero padded */
    uint32_t ids[SHORT_IDS];
    uint8_t len; /* 0 = empty */
    uint8_t nids; /* or MAP_MARK */
    uint16_t unused;
} ShortSlot;

/* One of the two tables: sets of SET_WAYS slots of slot_size bytes, set-aligned. */
typedef struct {
    uint8_t *slots; /* inside mem */
    void *mem;
    size_t slot_size;
    size_t mask;     /* sets - 1 */
    size_t sets_max; /* the table doubles (from a small one) up to this many sets */
    size_t used;     /* slots holding an entry */
} SetTable;

typedef struct {
    PyObject_HEAD
    uint32_t byte_ids[256];
    uint32_t max_id; /* the largest id the encoder can emit */
    PairSlot *pairs;
    size_t pairs_cap;
    PyObject *tables_owner; /* the encoder whose pairs these are (a copy shares them), or NULL */
    int well_ordered;
    Specials specials;
    int special_first; /* the first byte of every special token when they share it, else -1 */
    int tiny_on;            /* every id fits in 16 bits: the tiny table is used */
    SetTable tiny, wide;    /* the short-pre-token caches */
    BytesMap cache; /* other pre-tokens -> ids: value = offset into ids_arena, aux = count */
    uint8_t *ids_arena;
    size_t ids_len, ids_cap;
    size_t cache_limit;
    size_t map_limit; /* the map is emptied when it holds this many */
    /* scratch for merging */
    uint32_t *work;
    size_t work_cap;
    /* held while encoding (with the GIL released): one thread at a time per encoder */
    PyThread_type_lock lock;
} EncoderObject;

static inline uint64_t
pair_hash(uint64_t key)
{
    key *= 0x9E3779B97F4A7C15ULL;
    return key ^ (key >> 29);
}

static inline const PairSlot *
pair_get(const EncoderObject *self, uint32_t a, uint32_t b)
{
    uint64_t key = (((uint64_t)a << 32) | b) + 1;
    size_t j = pair_hash(key) & (self->pairs_cap - 1);
    for (;;) {
        const PairSlot *e = &self->pairs[j];
        if (e->key == key)
            return e;
        if (!e->key)
            return NULL;
        j = (j + 1) & (self->pairs_cap - 1);
    }
}

static void
Encoder_dealloc(EncoderObject *self)
{
    if (self->tables_owner)
        Py_DECREF(self->tables_owner);
    else
        PyMem_RawFree(self->pairs);
    specials_free(&self->specials);
    PyMem_RawFree(self->tiny.mem);
    PyMem_RawFree(self->wide.mem);
    map_free(&self->cache);
    PyMem_RawFree(self->ids_arena);
    PyMem_RawFree(self->work);
    if (self->lock)
        PyThread_free_lock(self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int encoder_finish(EncoderObject *self);

/* Encoder(byte_ids, merges, specials, well_ordered, cache_limit)
 * byte_ids: 256 ids of the single bytes; merges: (a, b, merged) id triples in rank order
 * (the first rank wins for a repeated pair); specials: (bytes, id) in match order (longest
 * first). */
static int
Encoder_init(EncoderObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"byte_ids", "merges", "specials", "well_ordered", "cache_limit", NULL};
    PyObject *byte_ids, *merges, *specials;
    int well_ordered = 1;
    Py_ssize_t cache_limit = 1 << 20;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO|pn", kwlist, &byte_ids, &merges, &specials,
                                     &well_ordered, &cache_limit))
        return -1;
    if (self->pairs) {
        PyErr_SetString(PyExc_RuntimeError, "Encoder already initialized");
        return -1;
    }
    self->well_ordered = well_ordered;
    self->cache_limit = cache_limit > 0 ? (size_t)cache_limit : 1;
    PyObject *fast = PySequence_Fast(byte_ids, "byte_ids must be a sequence");
    if (!fast)
        return -1;
    if (PySequence_Fast_GET_SIZE(fast) != 256) {
        Py_DECREF(fast);
        PyErr_SetString(PyExc_ValueError, "byte_ids must have 256 entries");
        return -1;
    }
    for (int k = 0; k < 256; k++) {
        unsigned long v = PyLong_AsUnsignedLong(PySequence_Fast_GET_ITEM(fast, k));
        if (v == (unsigned long)-1 && PyErr_Occurred()) {
            Py_DECREF(fast);
            return -1;
        }
        self->byte_ids[k] = (uint32_t)v;
        if (self->byte_ids[k] > self->max_id)
            self->max_id = self->byte_ids[k];
    }
    Py_DECREF(fast);

    fast = PySequence_Fast(merges, "merges must be a sequence");
    if (!fast)
        return -1;
    Py_ssize_t m = PySequence_Fast_GET_SIZE(fast);
    size_t cap = 16;
    while (cap < (size_t)m * 3)
        cap *= 2;
    self->pairs = PyMem_RawCalloc(cap, sizeof(PairSlot));
    if (!self->pairs) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    self->pairs_cap = cap;
    for (Py_ssize_t r = 0; r < m; r++) {
        unsigned long a, b, c;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fast, r), "kkk", &a, &b, &c)) {
            Py_DECREF(fast);
            return -1;
        }
        uint64_t key = (((uint64_t)a << 32) | b) + 1;
        size_t j = pair_hash(key) & (cap - 1);
        while (self->pairs[j].key && self->pairs[j].key != key)
            j = (j + 1) & (cap - 1);
        if (!self->pairs[j].key) {
            self->pairs[j].key = key;
            self->pairs[j].rank = (uint32_t)r;
            self->pairs[j].merged = (uint32_t)c;
            if ((uint32_t)c > self->max_id)
                self->max_id = (uint32_t)c;
        }
    }
    Py_DECREF(fast);
    if (specials_init(&self->specials, specials) < 0)
        return -1;
    for (Py_ssize_t k = 0; k < self->specials.n; k++)
        if (self->specials.id[k] > self->max_id)
            self->max_id = self->specials.id[k];
    return encoder_finish(self);
}

/* An empty table of `sets` sets (set-aligned) in t, replacing none. */
static int
table_alloc(SetTable *t, size_t sets)
{
    size_t set_size = t->slot_size * SET_WAYS;
    void *mem = PyMem_RawCalloc(sets * set_size + set_size, 1);
    if (!mem)
        return -1;
    t->mem = mem;
    t->slots = (uint8_t *)(((uintptr_t)mem + set_size - 1) & ~(uintptr_t)(set_size - 1));
    t->mask = sets - 1;
    t->used = 0;
    return 0;
}

/* The largest power of two <= x (x >= 1). */
static size_t
pow2_floor(size_t x)
{
    size_t p = 1;
    while (p <= x / 2)
        p *= 2;
    return p;
}

/* The parts every encoder needs besides its tables: empty caches and the lock. */
static int
encoder_finish(EncoderObject *self)
{
    self->special_first = self->specials.n ? self->specials.tok[0][0] : -1;
    for (Py_ssize_t k = 1; k < self->specials.n; k++)
        if (self->specials.tok[k][0] != self->special_first)
            self->special_first = -1;
    /* cache_limit (at least 9) bounds the entries of the caches together: the wide table
     * holds up to a power of two of slots within half of it (all of it but one without a
     * tiny table), the tiny one within half of the rest, the map (pre-tokens of more than
     * SHORT_MAX bytes or SHORT_IDS ids: few) what is left. (The wide table gets the most:
     * the words that keep coming new in a large corpus are long ones.) The tables start
     * small (memory follows the distinct pre-tokens seen) and double. */
    size_t limit = self->cache_limit < 9 ? 9 : self->cache_limit, left = limit;
    self->tiny_on = self->max_id <= UINT16_MAX;
    self->tiny.slot_size = sizeof(TinySlot);
    self->wide.slot_size = sizeof(ShortSlot);
    size_t wide = self->tiny_on ? limit / 2 : limit - 1;
    self->wide.sets_max = pow2_floor(wide / SET_WAYS ? wide / SET_WAYS : 1);
    left -= self->wide.sets_max * SET_WAYS;
    self->tiny.sets_max = 1;
    if (self->tiny_on) {
        self->tiny.sets_max = pow2_floor(left / 2 / SET_WAYS ? left / 2 / SET_WAYS : 1);
        left -= self->tiny.sets_max * SET_WAYS;
    }
    self->map_limit = left > 1 ? left : 1;
    if (self->tiny.sets_max > ((size_t)1 << 24))
        self->tiny.sets_max = (size_t)1 << 24;
    if (self->wide.sets_max > ((size_t)1 << 24))
        self->wide.sets_max = (size_t)1 << 24;
    size_t t0 = self->tiny.sets_max < 1024 ? self->tiny.sets_max : 1024;
    size_t w0 = self->wide.sets_max < 256 ? self->wide.sets_max : 256;
    if (table_alloc(&self->tiny, t0) < 0 || table_alloc(&self->wide, w0) < 0 ||
        map_init(&self->cache, 1 << 12) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    self->lock = PyThread_allocate_lock();
    if (!self->lock) {
        PyErr_SetString(PyExc_RuntimeError, "cannot allocate a lock");
        return -1;
    }
    return 0;
}

static int
ensure_work(EncoderObject *self, size_t n)
{
    if (n <= self->work_cap)
        return 0;
    size_t c = self->work_cap ? self->work_cap : 256;
    while (c < n)
        c *= 2;
    uint32_t *w = PyMem_RawRealloc(self->work, c * sizeof(uint32_t));
    if (!w) {
        return -1;
    }
    self->work = w;
    self->work_cap = c;
    return 0;
}

/* BPE of ids[0:n) by the reference rule: merge every occurrence (left to right) of the
 * lowest-rank pair, until none is left. Returns the new length. The rank of each adjacent
 * pair is kept in an array beside the ids, and after a round only the pairs that touch a
 * merged token are looked up again: about n + 2 * (merges) table lookups in all, instead
 * of n per round. scratch: room for 3 * n uint32 (ranks, sources, fresh flags). */
static size_t
merge_simple(const EncoderObject *self, uint32_t *ids, size_t n, uint32_t *scratch)
{
    if (n < 2)
        return n;
    uint32_t *rank = scratch, *src = scratch + n;
    uint8_t *fresh = (uint8_t *)(scratch + 2 * n);
    for (size_t k = 0; k + 1 < n; k++) {
        const PairSlot *e = pair_get(self, ids[k], ids[k + 1]);
        rank[k] = e ? e->rank : NO_RANK;
    }
    while (n > 1) {
        uint32_t best = NO_RANK;
        size_t at = 0;
        for (size_t k = 0; k + 1 < n; k++) {
            if (rank[k] < best) {
                best = rank[k];
                at = k;
            }
        }
        if (best == NO_RANK)
            break;
        uint32_t a = ids[at], b = ids[at + 1], merged = pair_get(self, a, b)->merged;
        size_t w = at, k = at; /* the ids before `at` stay where they are */
        while (k < n) {
            src[w] = (uint32_t)k;
            if (k + 1 < n && ids[k] == a && ids[k + 1] == b) {
                ids[w] = merged;
                fresh[w++] = 1;
                k += 2;
            }
            else {
                ids[w] = ids[k++];
                fresh[w++] = 0;
            }
        }
        /* the pair ending at `at` touches the merged token; from `at` on, a pair of two
         * untouched tokens keeps its rank (its old place, src[j] >= j, is not rewritten yet) */
        if (at > 0) {
            const PairSlot *e = pair_get(self, ids[at - 1], ids[at]);
            rank[at - 1] = e ? e->rank : NO_RANK;
        }
        for (size_t j = at; j + 1 < w; j++) {
            if (fresh[j] || fresh[j + 1]) {
                const PairSlot *e = pair_get(self, ids[j], ids[j + 1]);
                rank[j] = e ? e->rank : NO_RANK;
            }
            else
                rank[j] = rank[src[j]];
        }
        n = w;
    }
    return n;
}

/* A min-heap of (rank, position), for merge_long. */
typedef struct {
    uint32_t rank;
    uint32_t pos;
} HeapItem;

static inline int
heap_less(HeapItem x, HeapItem y)
{
    return x.rank < y.rank || (x.rank == y.rank && x.pos < y.pos);
}

static void
heap_push(HeapItem *h, size_t *n, HeapItem x)
{
    size_t i = (*n)++;
    while (i) {
        size_t p = (i - 1) / 2;
        if (!heap_less(x, h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static HeapItem
heap_pop(HeapItem *h, size_t *n)
{
    HeapItem top = h[0], x = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && heap_less(h[c + 1], h[c]))
            c++;
        if (!heap_less(h[c], x))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
    return top;
}

/* BPE of ids[0:n) in O(n log n): a heap of (rank, position) over a linked list. Equal to
 * merge_simple when the merges are well ordered (each merge uses only tokens made by
 * earlier merges): then a merge never makes a pair of lower rank than its own. */
static Py_ssize_t
merge_long(const EncoderObject *self, uint32_t *ids, size_t n)
{
    uint32_t *nxt = PyMem_RawMalloc(n * sizeof(uint32_t));
    uint32_t *prv = PyMem_RawMalloc(n * sizeof(uint32_t));
    uint8_t *alive = PyMem_RawMalloc(n);
    HeapItem *heap = PyMem_RawMalloc((3 * n + 1) * sizeof(HeapItem));
    if (!nxt || !prv || !alive || !heap) {
        PyMem_RawFree(nxt);
        PyMem_RawFree(prv);
        PyMem_RawFree(alive);
        PyMem_RawFree(heap);
        return -1;
    }
    size_t hn = 0;
    for (size_t i = 0; i < n; i++) {
        nxt[i] = (uint32_t)(i + 1);
        prv[i] = (uint32_t)(i ? i - 1 : UINT32_MAX);
        alive[i] = 1;
        if (i + 1 < n) {
            const PairSlot *e = pair_get(self, ids[i], ids[i + 1]);
            if (e)
                heap_push(heap, &hn, (HeapItem){e->rank, (uint32_t)i});
        }
    }
    while (hn) {
        HeapItem top = heap_pop(heap, &hn);
        uint32_t i = top.pos, j = nxt[i];
        if (!alive[i] || j >= n)
            continue;
        const PairSlot *e = pair_get(self, ids[i], ids[j]);
        if (!e || e->rank != top.rank)
            continue; /* stale */
        ids[i] = e->merged;
        alive[j] = 0;
        uint32_t k = nxt[j];
        nxt[i] = k;
        if (k < n) {
            prv[k] = i;
            e = pair_get(self, ids[i], ids[k]);
            if (e)
                heap_push(heap, &hn, (HeapItem){e->rank, i});
        }
        uint32_t p = prv[i];
        if (p != UINT32_MAX) {
            e = pair_get(self, ids[p], ids[i]);
            if (e)
                heap_push(heap, &hn, (HeapItem){e->rank, p});
        }
    }
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        if (alive[i])
            ids[w++] = ids[i];
    PyMem_RawFree(nxt);
    PyMem_RawFree(prv);
    PyMem_RawFree(alive);
    PyMem_RawFree(heap);
    return (Py_ssize_t)w;
}

#define LONG_PRETOKEN 64

/* Where ids go: a growing uint32 buffer (encode), or a caller's buffer of uint16 or uint32
 * (encode_into) that holds at least as many ids as the text has bytes (a pre-token of n
 * bytes gives at most n ids, a special token one), so it never has to grow. */
typedef struct {
    void *ids;
    size_t len, cap;
    int width; /* bytes per id: 2 or 4 */
    int fixed; /* the caller's buffer: never reallocated */
} IdBuf;

static inline int
idbuf_reserve(IdBuf *o, size_t more)
{
    if (o->len + more <= o->cap)
        return 0;
    if (o->fixed)
        return -1;
    size_t c = o->cap ? o->cap : 1024;
    while (c < o->len + more)
        c *= 2;
    void *p = PyMem_RawRealloc(o->ids, c * (size_t)o->width);
    if (!p) {
        return -1;
    }
    o->ids = p;
    o->cap = c;
    return 0;
}

/* Append ids[0:m) (room reserved). */
static inline void
idbuf_put(IdBuf *o, const uint32_t *ids, size_t m)
{
    if (o->width == 4) {
        memcpy((uint32_t *)o->ids + o->len, ids, m * sizeof(uint32_t));
    }
    else {
        uint16_t *d = (uint16_t *)o->ids + o->len;
        for (size_t k = 0; k < m; k++)
            d[k] = (uint16_t)ids[k];
    }
    o->len += m;
}

static inline int
idbuf_append(IdBuf *o, const uint32_t *ids, size_t m)
{
    if (idbuf_reserve(o, m) < 0)
        return -1;
    idbuf_put(o, ids, m);
    return 0;
}

/* Masks keeping the first n bytes of 16 read as two little-endian words (0 <= n <= 16). */
#define KEEP_LO(n) ((n) >= 8 ? ~0ULL : (1ULL << (8 * ((n) & 7))) - 1)
#define KEEP_HI(n) ((n) <= 8 ? 0ULL : (n) >= 16 ? ~0ULL : (1ULL << (8 * ((n) & 7))) - 1)
#define KEEP_ROW(f) {f(0), f(1), f(2), f(3), f(4), f(5), f(6), f(7), f(8), f(9), f(10), f(11), \
                     f(12), f(13), f(14), f(15), f(16)}
#define LEN_TAG(n) ((n) <= TINY_MAX ? (uint64_t)(n) << 56 : 0ULL)
static const uint64_t short_keep[2][SHORT_MAX + 1] = {KEEP_ROW(KEEP_LO), KEEP_ROW(KEEP_HI)};
static const uint64_t short_tag[SHORT_MAX + 1] = KEEP_ROW(LEN_TAG);

/* The key of a short pre-token s[0:n) (1 <= n <= SHORT_MAX): its bytes, zero padded, and
 * for n <= TINY_MAX, n in byte 7 (padding otherwise), so that k0 alone tells such keys
 * apart. `wide`: 16 bytes can be read at s (then two loads and masks, no branch, on
 * little-endian CPUs). */
static inline void
short_key(const uint8_t *s, Py_ssize_t n, int wide, uint64_t *k0, uint64_t *k1)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (wide) {
        uint64_t a, b;
        memcpy(&a, s, 8);
        memcpy(&b, s + 8, 8);
        *k0 = (a & short_keep[0][n]) | short_tag[n];
        *k1 = b & short_keep[1][n];
        return;
    }
#else
    (void)wide;
#endif
    uint8_t t[16] = {0};
    memcpy(t, s, (size_t)n);
    if (n <= TINY_MAX)
        t[7] = (uint8_t)n;
    memcpy(k0, t, 8);
    memcpy(k1, t + 8, 8);
}

static inline uint64_t
short_hash(uint64_t k0, uint64_t k1, Py_ssize_t n)
{
    /* every byte of the key moves the high bits; the finalizer brings them down */
    uint64_t h = k0 * 0x9E3779B97F4A7C15ULL + k1 * 0xC2B2AE3D27D4EB4FULL + (uint64_t)n;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ULL;
    return h ^ (h >> 32);
}

/* The table of the short pre-token of n bytes (2 <= n <= SHORT_MAX). */
static inline SetTable *
table_of(EncoderObject *self, Py_ssize_t n)
{
    return self->tiny_on && n <= TINY_MAX ? &self->tiny : &self->wide;
}

static inline uint8_t *
set_of(const SetTable *t, uint64_t h)
{
    return t->slots + (h & t->mask) * t->slot_size * SET_WAYS;
}

/* BPE of the pre-token s[0:n) into self->work; returns the number of ids, or -1 (no
 * memory). */
static Py_ssize_t
merge_pretoken(EncoderObject *self, const uint8_t *s, Py_ssize_t n)
{
    if (ensure_work(self, 4 * (size_t)n) < 0) /* the ids, then merge_simple's scratch */
        return -1;
    uint32_t *w = self->work;
    for (Py_ssize_t k = 0; k < n; k++)
        w[k] = self->byte_ids[s[k]];
    if (n > LONG_PRETOKEN && self->well_ordered)
        return merge_long(self, w, (size_t)n);
    return (Py_ssize_t)merge_simple(self, w, (size_t)n, w + n);
}

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch(p)
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define NOINLINE static __attribute__((noinline))
#else
#define PREFETCH(p) ((void)(p))
#define LIKELY(x) (x)
#define ALWAYS_INLINE static inline
#define NOINLINE static
#endif

/* Empty the slots marked MAP_MARK of a table (the map they point into was emptied). */
static void
table_drop_marks(SetTable *t)
{
    size_t z = t->slot_size, slots = (t->mask + 1) * SET_WAYS;
    size_t nids_at = z == sizeof(TinySlot) ? offsetof(TinySlot, nids) : offsetof(ShortSlot, nids);
    for (size_t k = 0; k < slots; k++) {
        uint8_t *e = t->slots + k * z;
        if (e[nids_at] == MAP_MARK) {
            memset(e, 0, z); /* (a hole in its set: no key matches it, set_put fills it) */
            t->used--;
        }
    }
}

static void
drop_marks(EncoderObject *self)
{
    table_drop_marks(&self->tiny);
    table_drop_marks(&self->wide);
}

/* Cache the ids of pre-token s[0:n) (hash h) in the map, which is emptied when full (it
 * holds the pre-tokens of more than SHORT_MAX bytes or SHORT_IDS ids alone: few). */
static int
map_cache_put(EncoderObject *self, const uint8_t *s, Py_ssize_t n, uint64_t h, const uint32_t *ids,
              size_t m, size_t *at)
{
    /* (emptied too before the ids' offset, in ids, would pass 32 bits: marks hold it) */
    if (self->cache.used >= self->map_limit || self->ids_len / sizeof(uint32_t) + m > UINT32_MAX) {
        map_clear(&self->cache);
        self->ids_len = 0;
        drop_marks(self);
    }
    int fresh;
    Slot *e = map_upsert(&self->cache, s, n, h, &fresh);
    if (!e)
        return -1;
    if (!fresh) { /* (a short pre-token merged again after its slot dropped out of a full
                   * set): its ids are there already; adding them again would grow the
                   * ids store with no new entry, unbounded */
        *at = (size_t)e->value / sizeof(uint32_t);
        return 0;
    }
    size_t off = arena_add(&self->ids_arena, &self->ids_len, &self->ids_cap, ids, m * sizeof(uint32_t));
    if (off == (size_t)-1)
        return -1;
    e->value = (int64_t)off;
    e->aux = (uint32_t)m;
    *at = off / sizeof(uint32_t);
    return 0;
}

/* Way w of a set: its key, length and ids (tiny sets widen the ids). */
static inline void
slot_read(const SetTable *t, const uint8_t *set, int w, uint64_t *k0, uint64_t *k1, uint8_t *len)
{
    if (t->slot_size == sizeof(TinySlot)) {
        const TinySlot *e = (const TinySlot *)set + w;
        *k0 = e->k0;
        *k1 = 0;
        *len = e->len;
    }
    else {
        const ShortSlot *e = (const ShortSlot *)set + w;
        *k0 = e->k0;
        *k1 = e->k1;
        *len = e->len;
    }
}

/* Put the entry (k0, k1, n) -> ids[0:m) (m <= SHORT_IDS; nids = m, or MAP_MARK with m = 0)
 * in way 0 of `set`, moving the others down (the oldest drops out of a full set). Returns
 * whether it took an empty slot. */
static int
set_put(const SetTable *t, uint8_t *set, uint64_t k0, uint64_t k1, Py_ssize_t n,
        const uint32_t *ids, Py_ssize_t m, uint8_t nids)
{
    size_t z = t->slot_size;
    uint64_t a, b;
    uint8_t last_len;
    slot_read(t, set, SET_WAYS - 1, &a, &b, &last_len);
    memmove(set + z, set, (SET_WAYS - 1) * z);
    memset(set, 0, z);
    if (z == sizeof(TinySlot)) {
        TinySlot *f = (TinySlot *)set;
        f->k0 = k0;
        f->len = (uint8_t)n;
        f->nids = nids;
        for (Py_ssize_t j = 0; j < m; j++)
            f->ids[j] = (uint16_t)ids[j];
    }
    else {
        ShortSlot *f = (ShortSlot *)set;
        f->k0 = k0;
        f->k1 = k1;
        f->len = (uint8_t)n;
        f->nids = nids;
        for (Py_ssize_t j = 0; j < m; j++)
            f->ids[j] = ids[j];
    }
    return last_len == 0;
}

/* Where the ids of a marked slot are: (at, m) in the slot's ids (way 0 of `set`, just put):
 * tiny: at in two halves, then m; wide: at, then m. */
static void
mark_put(const SetTable *t, uint8_t *set, uint32_t at, uint32_t m)
{
    if (t->slot_size == sizeof(TinySlot)) {
        TinySlot *f = (TinySlot *)set;
        f->ids[0] = (uint16_t)at;
        f->ids[1] = (uint16_t)(at >> 16);
        f->ids[2] = (uint16_t)m;
    }
    else {
        ShortSlot *f = (ShortSlot *)set;
        f->ids[0] = at;
        f->ids[1] = m;
    }
}

/* Double a table, its entries rehashed (each set's oldest first, so that each keeps its
 * age; one that finds its new set full is dropped). */
static void
table_grow(SetTable *t)
{
    SetTable old = *t;
    size_t z = t->slot_size;
    if (table_alloc(t, (old.mask + 1) * 2) < 0) {
        *t = old; /* keep the old table */
        t->sets_max = old.mask + 1; /* it stays this size: no retry per insert */
        return;
    }
    for (size_t k = 0; k <= old.mask; k++) {
        uint8_t *oset = old.slots + k * z * SET_WAYS;
        for (int w = SET_WAYS - 1; w >= 0; w--) {
            uint64_t k0, k1;
            uint8_t len;
            slot_read(&old, oset, w, &k0, &k1, &len);
            if (!len)
                continue;
            uint8_t *set = set_of(t, short_hash(k0, k1, len));
            uint8_t last_len;
            uint64_t a, b;
            slot_read(t, set, SET_WAYS - 1, &a, &b, &last_len);
            if (last_len)
                continue;
            memmove(set + z, set, (SET_WAYS - 1) * z);
            memcpy(set, oset + w * z, z);
            t->used++;
        }
    }
    PyMem_RawFree(old.mem);
}

/* Cache the short pre-token (k0, k1, n) (hash h) -> ids[0:m) (nids = m), or, nids =
 * MAP_MARK, -> its m ids at `at` (in ids) in the map's ids arena. */
static void
short_insert(EncoderObject *self, uint64_t k0, uint64_t k1, uint64_t h, Py_ssize_t n,
             const uint32_t *ids, Py_ssize_t m, uint8_t nids, size_t at)
{
    SetTable *t = table_of(self, n);
    uint8_t *set = set_of(t, h);
    int fresh = set_put(t, set, k0, k1, n, nids == MAP_MARK ? NULL : ids, nids == MAP_MARK ? 0 : m, nids);
    if (nids == MAP_MARK)
        mark_put(t, set, (uint32_t)at, (uint32_t)m);
    if (!fresh)
        return;
    /* grown at a quarter full: sets of four ways overflow rarely then (an entry a full set
     * drops is merged again when next seen; at half full that cost a fifth more time) */
    if (++t->used * 4 > (t->mask + 1) * SET_WAYS && t->mask + 1 < t->sets_max)
        table_grow(t);
}

/* Append the ids of the pre-token s[0:n) (n >= 2) that the short caches do not hold (every
 * way of its set was compared already): from the map (more than SHORT_MAX bytes), else
 * merged (and cached). For a short pre-token (n <= SHORT_MAX), k0, k1, h are its key and
 * hash. */
NOINLINE int
encode_miss(EncoderObject *self, const uint8_t *s, Py_ssize_t n, uint64_t k0, uint64_t k1,
            uint64_t h, IdBuf *out)
{
    uint64_t hm = hash_bytes(s, n);
    if (n > SHORT_MAX) {
        Slot *e = map_find(&self->cache, s, n, hm);
        if (e)
            return idbuf_append(out, (const uint32_t *)(self->ids_arena + e->value), e->aux);
    }
    Py_ssize_t m = merge_pretoken(self, s, n);
    if (m < 0)
        return -1;
    const uint32_t *w = self->work;
    if (idbuf_append(out, w, (size_t)m) < 0)
        return -1;
    if (n <= SHORT_MAX && m <= SHORT_IDS) {
        short_insert(self, k0, k1, h, n, w, m, (uint8_t)m, 0);
        return 0;
    }
    size_t at;
    if (map_cache_put(self, s, n, hm, w, (size_t)m, &at) < 0)
        return -1;
    if (n <= SHORT_MAX) /* (after the map was emptied, if it was: that drops marks) */
        short_insert(self, k0, k1, h, n, NULL, m, MAP_MARK, at);
    return 0;
}

/* specials_find for the encoder: when every special token starts with the same byte (as
 * `<|...|>` tokens do), memchr jumps to the candidates. */
static inline Py_ssize_t
next_special(const EncoderObject *self, const uint8_t *s, Py_ssize_t from, Py_ssize_t n,
             Py_ssize_t *which)
{
    const Specials *sp = &self->specials;
    if (sp->n == 0)
        return n;
    if (self->special_first < 0)
        return specials_find(sp, s, from, n, which);
    while (from < n) {
        const uint8_t *c = memchr(s + from, self->special_first, (size_t)(n - from));
        if (!c)
            return n;
        Py_ssize_t i = c - s;
        for (Py_ssize_t k = 0; k < sp->n; k++) { /* longest first, as specials_find */
            if (sp->len[k] <= n - i && memcmp(s + i, sp->tok[k], sp->len[k]) == 0) {
                *which = k;
                return i;
            }
        }
        from = i + 1;
    }
    return n;
}

/* Pre-tokens are scanned, then looked up, ENC_BATCH at a time: first the short-cache key
 * and hash of each, its set prefetched, then the lookups, whose cache lines are on their
 * way by then. */
#ifndef ENC_BATCH
#define ENC_BATCH 128
#endif

/* Id k of out (of `width` bytes: a constant where this is inlined) set to v. */
ALWAYS_INLINE void
id_set(void *ids, size_t k, uint32_t v, const int width)
{
    if (width == 2)
        ((uint16_t *)ids)[k] = (uint16_t)v;
    else
        ((uint32_t *)ids)[k] = v;
}

/* Append the ids of s[i:at), text without special tokens, ids of `width` bytes (out's).
 * n: the length of the whole text (the key loads may read up to there). */
ALWAYS_INLINE int
encode_piece(EncoderObject *self, const uint8_t *s, Py_ssize_t i, Py_ssize_t at, Py_ssize_t n,
             IdBuf *out, const int width)
{
    Py_ssize_t ends[ENC_BATCH];
    uint64_t keys[ENC_BATCH][3]; /* k0, k1, hash of the short pre-tokens */
    const size_t tiny_max = self->tiny_on ? TINY_MAX : 1;
    while (i < at) {
        Py_ssize_t cnt = scan_batch(s, i, at, ends, ENC_BATCH);
        /* room for the batch: a pre-token of m bytes has at most m ids (a caller's buffer
         * of one id per byte of the text always has it) */
        if (idbuf_reserve(out, (size_t)(ends[cnt - 1] - i)) < 0)
            return -1;
        const uint8_t *tiny = self->tiny.slots, *wide = self->wide.slots;
        size_t tmask = self->tiny.mask, wmask = self->wide.mask;
        Py_ssize_t st = i;
        for (Py_ssize_t k = 0; k < cnt; k++) {
            Py_ssize_t len = ends[k] - st;
            if (len >= 2 && len <= SHORT_MAX) {
                uint64_t *key = keys[k];
                short_key(s + st, len, st + 16 <= n, &key[0], &key[1]);
                uint64_t h = short_hash(key[0], key[1], len);
                key[2] = h;
                if ((size_t)len <= tiny_max)
                    PREFETCH(tiny + (h & tmask) * sizeof(TinySlot) * SET_WAYS);
                else {
                    const uint8_t *set = wide + (h & wmask) * sizeof(ShortSlot) * SET_WAYS;
                    PREFETCH(set);
                    PREFETCH(set + 64);
                }
            }
            else if (len > SHORT_MAX) /* (no key: encode_miss reads none) */
                keys[k][0] = keys[k][1] = keys[k][2] = 0;
            st = ends[k];
        }
        const uint32_t *byte_ids = self->byte_ids;
        void *ids = out->ids;
        size_t o = out->len;
        st = i;
        for (Py_ssize_t k = 0; k < cnt; k++) {
            Py_ssize_t len = ends[k] - st;
            if (len == 1) {
                id_set(ids, o++, byte_ids[s[st]], width);
                st = ends[k];
                continue;
            }
            const uint64_t *key = keys[k];
            /* all three ids, no branch on the count, when at least two more pre-tokens
             * follow: their ids (one at least each) replace the extra ones */
            int three = k + SHORT_IDS - 1 < cnt;
            int nids = -1;
            uint32_t mark_at = 0, mark_n = 0; /* where a marked slot's ids are */
            if ((size_t)len <= tiny_max) {
                const TinySlot *set = (const TinySlot *)(tiny + (key[2] & tmask) * sizeof(TinySlot) * SET_WAYS);
                unsigned m = (unsigned)(set[0].k0 == key[0]) | (unsigned)(set[1].k0 == key[0]) << 1 |
                             (unsigned)(set[2].k0 == key[0]) << 2 | (unsigned)(set[3].k0 == key[0]) << 3;
                if (m) {
                    const TinySlot *e = &set[scan_ctz(m)];
                    nids = e->nids;
                    if (nids == MAP_MARK) {
                        mark_at = e->ids[0] | (uint32_t)e->ids[1] << 16;
                        mark_n = e->ids[2];
                    }
                    else if (LIKELY(three)) {
                        id_set(ids, o, e->ids[0], width);
                        id_set(ids, o + 1, e->ids[1], width);
                        id_set(ids, o + 2, e->ids[2], width);
                    }
                    else
                        for (int j = 0; j < nids; j++)
                            id_set(ids, o + j, e->ids[j], width);
                }
            }
            else if (len <= SHORT_MAX) {
                const ShortSlot *set = (const ShortSlot *)(wide + (key[2] & wmask) * sizeof(ShortSlot) * SET_WAYS);
                unsigned m = 0;
                for (int w = 0; w < SET_WAYS; w++)
                    m |= (unsigned)((set[w].k0 == key[0]) & (set[w].k1 == key[1]) & (set[w].len == len)) << w;
                if (m) {
                    const ShortSlot *e = &set[scan_ctz(m)];
                    nids = e->nids;
                    if (nids == MAP_MARK) {
                        mark_at = e->ids[0];
                        mark_n = e->ids[1];
                    }
                    else if (LIKELY(three)) {
                        id_set(ids, o, e->ids[0], width);
                        id_set(ids, o + 1, e->ids[1], width);
                        id_set(ids, o + 2, e->ids[2], width);
                    }
                    else
                        for (int j = 0; j < nids; j++)
                            id_set(ids, o + j, e->ids[j], width);
                }
            }
            if (LIKELY(nids >= 0 && nids != MAP_MARK))
                o += (size_t)nids;
            else if (nids == MAP_MARK) { /* (no more ids than bytes: the room is there) */
                const uint32_t *src = (const uint32_t *)self->ids_arena + mark_at;
                for (uint32_t j = 0; j < mark_n; j++)
                    id_set(ids, o + j, src[j], width);
                o += mark_n;
            }
            else {
                out->len = o;
                if (encode_miss(self, s + st, len, key[0], key[1], key[2], out) < 0)
                    return -1;
                o = out->len; /* the tables may have grown: */
                tiny = self->tiny.slots;
                wide = self->wide.slots;
                tmask = self->tiny.mask;
                wmask = self->wide.mask;
            }
            st = ends[k];
        }
        out->len = o;
        i = st;
    }
    return 0;
}

/* Append the ids of the valid UTF-8 text s[0:n), special tokens included, as ids of
 * `width` bytes; add one to counts[k] for each occurrence of special token k (counts may be
 * NULL). */
ALWAYS_INLINE int
encode_text_width(EncoderObject *self, const uint8_t *s, Py_ssize_t n, IdBuf *out, int64_t *counts,
                  const int width)
{
    Py_ssize_t piece = 0;
    for (;;) {
        Py_ssize_t which = 0, at = next_special(self, s, piece, n, &which);
        if (encode_piece(self, s, piece, at, n, out, width) < 0)
            return -1;
        if (at == n)
            return 0;
        if (idbuf_reserve(out, 1) < 0)
            return -1;
        id_set(out->ids, out->len++, self->specials.id[which], width);
        if (counts)
            counts[which]++;
        piece = at + self->specials.len[which];
    }
}

NOINLINE int
encode_text_u16(EncoderObject *self, const uint8_t *s, Py_ssize_t n, IdBuf *out, int64_t *counts)
{
    return encode_text_width(self, s, n, out, counts, 2);
}

NOINLINE int
encode_text_u32(EncoderObject *self, const uint8_t *s, Py_ssize_t n, IdBuf *out, int64_t *counts)
{
    return encode_text_width(self, s, n, out, counts, 4);
}

/* encode_text_width for out's width: the hot loop is compiled once per width. */
static int
encode_text(EncoderObject *self, const uint8_t *s, Py_ssize_t n, IdBuf *out, int64_t *counts)
{
    if (out->width == 2)
        return encode_text_u16(self, s, n, out, counts);
    return encode_text_u32(self, s, n, out, counts);
}

/* The number of pre-tokens and special tokens of the valid UTF-8 text s[0:n): the scan
 * alone (as encode_text does it), for measuring its share of encoding. */
static Py_ssize_t
scan_text(const EncoderObject *self, const uint8_t *s, Py_ssize_t n)
{
    Py_ssize_t piece = 0, count = 0, ends[ENC_BATCH];
    for (;;) {
        Py_ssize_t which = 0, at = next_special(self, s, piece, n, &which);
        for (Py_ssize_t i = piece; i < at;) {
            Py_ssize_t k = scan_batch(s, i, at, ends, ENC_BATCH);
            count += k;
            i = ends[k - 1];
        }
        if (at == n)
            return count;
        count++;
        piece = at + self->specials.len[which];
    }
}

static PyObject *
idbuf_to_bytearray(IdBuf *o)
{
    PyObject *r = PyByteArray_FromStringAndSize((const char *)o->ids, o->len * sizeof(uint32_t));
    PyMem_RawFree(o->ids);
    return r;
}

/* encode(text) -> bytearray of uint32 ids (native byte order). Runs with the GIL released
 * (one thread at a time per encoder: use copy() for more). text: a str (raises
 * UnicodeEncodeError for lone surrogates), or UTF-8 bytes (then returns the int offset
 * of the first invalid byte instead, if any). */
static PyObject *
Encoder_encode(EncoderObject *self, PyObject *arg)
{
    IdBuf out = {.width = 4};
    int rc;
    const uint8_t *s;
    Py_ssize_t n;
    Py_buffer buf = {0};
    if (PyUnicode_Check(arg)) {
        s = (const uint8_t *)PyUnicode_AsUTF8AndSize(arg, &n);
        if (!s)
            return NULL;
    }
    else {
        if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE) < 0)
            return NULL;
        s = buf.buf;
        n = buf.len;
        Py_ssize_t bad = utf8_first_error(s, n);
        if (bad >= 0) {
            PyBuffer_Release(&buf);
            return PyLong_FromSsize_t(bad);
        }
    }
    rc = idbuf_reserve(&out, (size_t)(n / 3 + 16));
    if (rc == 0) {
        Py_BEGIN_ALLOW_THREADS;
        PyThread_acquire_lock(self->lock, WAIT_LOCK);
        rc = encode_text(self, s, n, &out, NULL);
        PyThread_release_lock(self->lock);
        Py_END_ALLOW_THREADS;
    }
    if (buf.obj)
        PyBuffer_Release(&buf);
    if (rc < 0) {
        PyMem_RawFree(out.ids);
        return PyErr_NoMemory();
    }
    return idbuf_to_bytearray(&out);
}

/* encode_into(data, out, counts=None) -> int: the ids of the UTF-8 bytes `data` written
 * into `out` (a writable buffer of uint16 or uint32 items, at least len(data) of them: a
 * text never has more ids than bytes), no Python object per id; returns how many. For
 * invalid UTF-8 it writes nothing and returns -1 - (offset of the first invalid byte).
 * `counts` (optional, a writable buffer of int64, one per special token, in the order the
 * encoder was given them) gets each special token's occurrences added. The UTF-8 check and
 * the encoding run with the GIL released, on buffers held (pinned) for the call. */
static PyObject *
Encoder_encode_into(EncoderObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"data", "out", "counts", NULL};
    PyObject *data_obj, *out_obj, *counts_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|O", kwlist, &data_obj, &out_obj, &counts_obj))
        return NULL;
    Py_buffer data = {0}, out = {0}, counts = {0};
    PyObject *result = NULL;
    if (PyObject_GetBuffer(data_obj, &data, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
        goto done;
    const char *fmt = out.format ? out.format : "B";
    if (*fmt == '<' || *fmt == '=' || *fmt == '@')
        fmt++;
    int width = (int)out.itemsize;
    if (!((width == 2 && (*fmt == 'H')) || (width == 4 && (*fmt == 'I' || *fmt == 'L')))) {
        PyErr_Format(PyExc_TypeError,
                     "encode_into writes uint16 or uint32 ids: out has items of format '%s'",
                     out.format ? out.format : "B");
        goto done;
    }
    if (width == 2 && self->max_id > UINT16_MAX) {
        PyErr_Format(PyExc_ValueError,
                     "ids up to %lu do not fit in uint16: give encode_into a uint32 buffer",
                     (unsigned long)self->max_id);
        goto done;
    }
    if (out.len / width < data.len) {
        PyErr_Format(PyExc_ValueError,
                     "encode_into needs room for one id per byte of data: %zd bytes, room for %zd",
                     data.len, out.len / width);
        goto done;
    }
    if (counts_obj != Py_None) {
        if (PyObject_GetBuffer(counts_obj, &counts, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
            goto done;
        if (counts.itemsize != 8 || !counts.format || !strchr("qlQ", counts.format[strlen(counts.format) - 1]) ||
            counts.len / 8 < self->specials.n) {
            PyErr_Format(PyExc_ValueError, "counts must be an int64 buffer of %zd items",
                         self->specials.n);
            goto done;
        }
    }
    IdBuf ids = {.ids = out.buf, .cap = (size_t)(out.len / width), .width = width, .fixed = 1};
    Py_ssize_t bad;
    int rc = 0;
    Py_BEGIN_ALLOW_THREADS;
    bad = utf8_first_error(data.buf, data.len);
    if (bad < 0) {
        PyThread_acquire_lock(self->lock, WAIT_LOCK);
        rc = encode_text(self, data.buf, data.len, &ids, counts.obj ? (int64_t *)counts.buf : NULL);
        PyThread_release_lock(self->lock);
    }
    Py_END_ALLOW_THREADS;
    if (bad >= 0)
        result = PyLong_FromSsize_t(-1 - bad);
    else if (rc < 0)
        PyErr_NoMemory();
    else
        result = PyLong_FromSize_t(ids.len);
done:
    if (counts.obj)
        PyBuffer_Release(&counts);
    if (out.obj)
        PyBuffer_Release(&out);
    PyBuffer_Release(&data);
    return result;
}

/* scan(data) -> the number of pre-tokens and special tokens of the valid UTF-8 bytes
 * `data`: encoding's scan alone, GIL released (for benchmarks/bench_encode.py's shares). */
static PyObject *
Encoder_scan(EncoderObject *self, PyObject *arg)
{
    Py_buffer data;
    if (PyObject_GetBuffer(arg, &data, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t bad, count = 0;
    Py_BEGIN_ALLOW_THREADS;
    bad = utf8_first_error(data.buf, data.len);
    if (bad < 0)
        count = scan_text(self, data.buf, data.len);
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&data);
    if (bad >= 0) {
        PyErr_Format(PyExc_ValueError, "invalid UTF-8 at byte offset %zd", bad);
        return NULL;
    }
    return PyLong_FromSsize_t(count);
}

/* copy() -> a new encoder with the same tables (shared, read-only) and empty caches, for
 * another thread. */
static PyObject *
Encoder_copy(EncoderObject *self, PyObject *Py_UNUSED(ignored))
{
    EncoderObject *c = (EncoderObject *)PyType_GenericNew(Py_TYPE(self), NULL, NULL);
    if (!c)
        return NULL;
    memcpy(c->byte_ids, self->byte_ids, sizeof(self->byte_ids));
    c->max_id = self->max_id;
    c->tables_owner = self->tables_owner ? self->tables_owner : (PyObject *)self;
    Py_INCREF(c->tables_owner);
    c->pairs = self->pairs;
    c->pairs_cap = self->pairs_cap;
    c->well_ordered = self->well_ordered;
    c->cache_limit = self->cache_limit;
    PyObject *specials = PyList_New(self->specials.n);
    for (Py_ssize_t k = 0; specials && k < self->specials.n; k++) {
        PyObject *item = Py_BuildValue("(y#k)", (const char *)self->specials.tok[k],
                                       self->specials.len[k], (unsigned long)self->specials.id[k]);
        if (!item)
            Py_CLEAR(specials);
        else
            PyList_SET_ITEM(specials, k, item);
    }
    if (!specials || specials_init(&c->specials, specials) < 0 || encoder_finish(c) < 0) {
        Py_XDECREF(specials);
        Py_DECREF(c);
        return NULL;
    }
    Py_DECREF(specials);
    return (PyObject *)c;
}

static PyObject *
Encoder_clear_cache(EncoderObject *self, PyObject *Py_UNUSED(ignored))
{
    Py_BEGIN_ALLOW_THREADS;
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    map_clear(&self->cache);
    self->ids_len = 0;
    memset(self->tiny.slots, 0, (self->tiny.mask + 1) * SET_WAYS * self->tiny.slot_size);
    memset(self->wide.slots, 0, (self->wide.mask + 1) * SET_WAYS * self->wide.slot_size);
    self->tiny.used = self->wide.used = 0;
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

static PyObject *
Encoder_cache_size(EncoderObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSize_t(self->cache.used + self->tiny.used + self->wide.used);
}

static PyMethodDef Encoder_methods[] = {
    {"encode", (PyCFunction)Encoder_encode, METH_O,
     "encode(text: str | bytes) -> bytearray of uint32 ids (int offset of bad UTF-8 for bytes)"},
    {"encode_into", (PyCFunction)(void (*)(void))Encoder_encode_into, METH_VARARGS | METH_KEYWORDS,
     "encode_into(data: bytes-like, out: uint16/uint32 buffer, counts=None) -> number of ids "
     "(-1 - offset of the first invalid byte for bad UTF-8)"},
    {"scan", (PyCFunction)Encoder_scan, METH_O,
     "scan(data: bytes-like) -> number of pre-tokens and special tokens (the scan alone)"},
    {"clear_cache", (PyCFunction)Encoder_clear_cache, METH_NOARGS, "empty the pre-token caches"},
    {"copy", (PyCFunction)Encoder_copy, METH_NOARGS,
     "a new encoder with the same tables and empty caches (for another thread)"},
    {"cache_size", (PyCFunction)Encoder_cache_size, METH_NOARGS, "entries in the pre-token caches"},
    {NULL},
};

static PyTypeObject EncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "lm.tokenizer.native._native.Encoder",
    .tp_doc = "BPE encoder: merge ranks, special tokens and a pre-token cache.",
    .tp_basicsize = sizeof(EncoderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Encoder_init,
    .tp_dealloc = (destructor)Encoder_dealloc,
    .tp_methods = Encoder_methods,
};


/* ------------------------------------------------------------------ BPE training merges */

/* The merge loop of BPE training (bpe.py's merge_loop, same results): the most frequent
 * adjacent pair, ties to the lexicographically greatest (bytes, bytes), merged in every
 * word that holds it; pair counts kept up to date incrementally, and found with a max-heap
 * with lazy invalidation (a pair's count only ever drops after the step that makes it).
 *
 * Words: the distinct pre-tokens as arrays of token ids (merged in place), with their
 * counts, one record each in one array. Pairs: a hash map (a, b) -> index; per pair its
 * count and the list of words that held it when it appeared (stale entries are skipped:
 * the word is checked). Merging is bound by memory latency (the words that hold a pair
 * are scattered), so the records are fetched ahead and each lookup is one cache line. */

typedef struct {
    uint32_t a, b;
    int64_t count;
    uint32_t *where;
    uint32_t nwhere, capwhere;
} Pair;

typedef struct {
    int64_t count;
    uint32_t pair;
} TrainHeapItem;

/* A slot of the pair map: key (a << 32 | b) + 1 (0: empty), and the pair's index, side by
 * side so that a lookup is one cache miss. */
typedef struct {
    uint64_t key;
    uint32_t val;
} PairMapSlot;

/* The words, one record each in `words`: its length n, its count (int64, in two slots),
 * then its n ids, merged in place. A word is named by the offset of its record, so that
 * visiting one is one cache miss (or two, for a long word), with nothing to look up first. */
#define WORD_HEAD 3

static inline int64_t
word_freq(const uint32_t *rec)
{
    int64_t f;
    memcpy(&f, rec + 1, 8);
    return f;
}

typedef struct {
    /* words */
    uint32_t *words;
    size_t nwords, words_len;
    /* tokens: bytes of each id */
    uint8_t *tok;
    size_t tok_len, tok_cap;
    uint64_t *tok_off;
    uint32_t *tok_size;
    size_t ntok, cap_tok;
    /* pairs */
    Pair *pairs;
    size_t npairs, cap_pairs;
    PairMapSlot *map; /* (a, b) -> index, open addressing */
    size_t map_cap;
    /* heap */
    TrainHeapItem *heap;
    size_t nheap, cap_heap;
} Trainer;

static void
trainer_free(Trainer *t)
{
    for (size_t k = 0; k < t->npairs; k++)
        free(t->pairs[k].where);
    big_free(t->words, t->words_len * sizeof(uint32_t));
    free(t->tok);
    free(t->tok_off);
    free(t->tok_size);
    free(t->pairs);
    big_free(t->map, t->map_cap * sizeof(PairMapSlot));
    free(t->heap);
}

static inline uint64_t
train_hash(uint64_t key)
{
    key ^= key >> 33;
    key *= 0xFF51AFD7ED558CCDULL;
    key ^= key >> 33;
    return key;
}

static int
pairmap_grow(Trainer *t)
{
    size_t cap = t->map_cap ? t->map_cap * 2 : 1 << 16;
    PairMapSlot *map = big_calloc(cap * sizeof(PairMapSlot));
    if (!map)
        return -1;
    for (size_t k = 0; k < t->map_cap; k++) {
        if (!t->map[k].key)
            continue;
        size_t j = train_hash(t->map[k].key) & (cap - 1);
        while (map[j].key)
            j = (j + 1) & (cap - 1);
        map[j] = t->map[k];
    }
    big_free(t->map, t->map_cap * sizeof(PairMapSlot));
    t->map = map;
    t->map_cap = cap;
    return 0;
}

/* Index of pair (a, b), created with count 0 if absent (*fresh then 1); -1 on no memory. */
static int64_t
pair_index(Trainer *t, uint32_t a, uint32_t b, int *fresh)
{
    uint64_t key = (((uint64_t)a << 32) | b) + 1;
    size_t j = train_hash(key) & (t->map_cap - 1);
    while (t->map[j].key) {
        if (t->map[j].key == key) {
            *fresh = 0;
            return t->map[j].val;
        }
        j = (j + 1) & (t->map_cap - 1);
    }
    if ((t->npairs + 1) * 2 > t->map_cap) {
        if (pairmap_grow(t) < 0)
            return -1;
        return pair_index(t, a, b, fresh);
    }
    if (t->npairs == t->cap_pairs) {
        size_t c = t->cap_pairs ? t->cap_pairs * 2 : 1 << 14;
        Pair *p = realloc(t->pairs, c * sizeof(Pair));
        if (!p)
            return -1;
        t->pairs = p;
        t->cap_pairs = c;
    }
    Pair *p = &t->pairs[t->npairs];
    memset(p, 0, sizeof(*p));
    p->a = a;
    p->b = b;
    t->map[j].key = key;
    t->map[j].val = (uint32_t)t->npairs;
    *fresh = 1;
    return (int64_t)t->npairs++;
}

static int
pair_add_word(Pair *p, uint32_t w)
{
    if (p->nwhere && p->where[p->nwhere - 1] == w)
        return 0;
    if (p->nwhere == p->capwhere) {
        uint32_t c = p->capwhere ? p->capwhere * 2 : 2;
        uint32_t *x = realloc(p->where, (size_t)c * sizeof(uint32_t));
        if (!x)
            return -1;
        p->where = x;
        p->capwhere = c;
    }
    p->where[p->nwhere++] = w;
    return 0;
}

/* Whether token x's bytes compare below token y's (bytes order: a prefix is smaller). */
static inline int
tok_cmp(const Trainer *t, uint32_t x, uint32_t y)
{
    if (x == y)
        return 0;
    uint32_t lx = t->tok_size[x], ly = t->tok_size[y];
    int c = memcmp(t->tok + t->tok_off[x], t->tok + t->tok_off[y], lx < ly ? lx : ly);
    if (c)
        return c;
    return lx < ly ? -1 : (lx > ly ? 1 : 0);
}

/* Whether heap item x ranks above y: a larger count, then the greater (bytes a, bytes b). */
static inline int
heap_above(const Trainer *t, TrainHeapItem x, TrainHeapItem y)
{
    if (x.count != y.count)
        return x.count > y.count;
    const Pair *px = &t->pairs[x.pair], *py = &t->pairs[y.pair];
    int c = tok_cmp(t, px->a, py->a);
    if (c)
        return c > 0;
    return tok_cmp(t, px->b, py->b) > 0;
}

static int
train_push(Trainer *t, TrainHeapItem x)
{
    if (t->nheap == t->cap_heap) {
        size_t c = t->cap_heap ? t->cap_heap * 2 : 1 << 14;
        TrainHeapItem *h = realloc(t->heap, c * sizeof(TrainHeapItem));
        if (!h)
            return -1;
        t->heap = h;
        t->cap_heap = c;
    }
    size_t i = t->nheap++;
    while (i) {
        size_t p = (i - 1) / 2;
        if (!heap_above(t, x, t->heap[p]))
            break;
        t->heap[i] = t->heap[p];
        i = p;
    }
    t->heap[i] = x;
    return 0;
}

static void
train_pop(Trainer *t)
{
    TrainHeapItem x = t->heap[--t->nheap];
    size_t i = 0, n = t->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && heap_above(t, t->heap[c + 1], t->heap[c]))
            c++;
        if (!heap_above(t, t->heap[c], x))
            break;
        t->heap[i] = t->heap[c];
        i = c;
    }
    if (n)
        t->heap[i] = x;
}

/* Append a token: the single byte `byte` (when a == UINT32_MAX), else tokens a + b. */
static int
add_token(Trainer *t, uint32_t a, uint32_t b, uint8_t byte)
{
    uint32_t n1 = a == UINT32_MAX ? 1 : t->tok_size[a] + t->tok_size[b];
    if (t->ntok == t->cap_tok) {
        size_t c = t->cap_tok ? t->cap_tok * 2 : 1024;
        uint64_t *o = realloc(t->tok_off, c * sizeof(uint64_t));
        if (!o)
            return -1;
        t->tok_off = o;
        uint32_t *z = realloc(t->tok_size, c * sizeof(uint32_t));
        if (!z)
            return -1;
        t->tok_size = z;
        t->cap_tok = c;
    }
    if (t->tok_len + n1 > t->tok_cap) {
        size_t c = t->tok_cap ? t->tok_cap : 4096;
        while (c < t->tok_len + n1)
            c *= 2;
        uint8_t *p = realloc(t->tok, c);
        if (!p)
            return -1;
        t->tok = p;
        t->tok_cap = c;
    }
    uint8_t *dst = t->tok + t->tok_len;
    if (a == UINT32_MAX)
        dst[0] = byte;
    else {
        memcpy(dst, t->tok + t->tok_off[a], t->tok_size[a]);
        memcpy(dst + t->tok_size[a], t->tok + t->tok_off[b], t->tok_size[b]);
    }
    t->tok_off[t->ntok] = t->tok_len;
    t->tok_size[t->ntok] = n1;
    t->tok_len += n1;
    t->ntok++;
    return 0;
}

/* How many words ahead apply_merge prefetches a word's record. */
#define MERGE_AHEAD 8

/* Apply one merge (pair index `best`, new token id nid) to every word that holds it. New
 * pairs (holding nid) are collected in *fresh_list. Returns -1 on no memory. */
static int
apply_merge(Trainer *t, uint32_t best, uint32_t nid, uint32_t **fresh_list, size_t *nfresh,
            size_t *capfresh)
{
    uint32_t A = t->pairs[best].a, B = t->pairs[best].b;
    uint32_t *where = t->pairs[best].where;
    uint32_t nwhere = t->pairs[best].nwhere;
    t->pairs[best].where = NULL;
    t->pairs[best].nwhere = t->pairs[best].capwhere = 0;
    t->pairs[best].count = 0;
    int rc = 0;
    for (uint32_t k = 0; k < nwhere && rc == 0; k++) {
        /* the words are far apart in memory: fetch each ahead */
        if (k + MERGE_AHEAD < nwhere)
            PREFETCH(t->words + where[k + MERGE_AHEAD]);
        uint32_t w = where[k];
        uint32_t *word = t->words + w, *s = word + WORD_HEAD;
        uint32_t n = word[0];
        int64_t f = word_freq(word);
        /* does the word still hold the pair? */
        uint32_t i = 0;
        while (i + 1 < n && !(s[i] == A && s[i + 1] == B))
            i++;
        if (i + 1 >= n)
            continue;
        /* The old pairs touching a merged occurrence (left to right, non-overlapping)
         * lose f; (A, B) itself is gone whole (its count is already 0). */
        uint32_t j, wr = 0;
        int prev_in = 0; /* s[x-1]: 0 outside an occurrence, 1 its first, 2 its second token */
        for (uint32_t x = 0; x < n; x++) {
            int in = prev_in == 1 ? 2 : (x + 1 < n && s[x] == A && s[x + 1] == B);
            if (x > 0 && (in || prev_in) && !(s[x - 1] == A && s[x] == B)) {
                int fr;
                int64_t pi = pair_index(t, s[x - 1], s[x], &fr);
                if (pi < 0) {
                    rc = -1;
                    break;
                }
                t->pairs[pi].count -= f;
            }
            prev_in = in;
        }
        if (rc)
            break;
        /* merge in place */
        for (j = 0; j < n;) {
            if (j + 1 < n && s[j] == A && s[j + 1] == B) {
                s[wr++] = nid;
                j += 2;
            }
            else
                s[wr++] = s[j++];
        }
        n = wr;
        word[0] = n;
        /* the new pairs (holding nid) gain f */
        for (uint32_t x = 0; x + 1 < n; x++) {
            if (s[x] != nid && s[x + 1] != nid)
                continue;
            int fr;
            int64_t pi = pair_index(t, s[x], s[x + 1], &fr);
            if (pi < 0) {
                rc = -1;
                break;
            }
            Pair *p = &t->pairs[pi];
            if (p->count == 0 && p->nwhere == 0) { /* first seen in this step */
                if (*nfresh == *capfresh) {
                    size_t c = *capfresh ? *capfresh * 2 : 64;
                    uint32_t *l = realloc(*fresh_list, c * sizeof(uint32_t));
                    if (!l) {
                        rc = -1;
                        break;
                    }
                    *fresh_list = l;
                    *capfresh = c;
                }
                (*fresh_list)[(*nfresh)++] = (uint32_t)pi;
            }
            p->count += f;
            if (pair_add_word(p, w) < 0) {
                rc = -1;
                break;
            }
        }
    }
    free(where);
    return rc;
}

/* A word of the trainer: the bytes b[0:n), counted f times, its record at words[*at:]
 * (*at moves past it). Its byte pairs are counted, and the word noted as holding each.
 * -1: no memory. */
static int
trainer_add_word(Trainer *t, size_t *at, const uint8_t *b, Py_ssize_t n, int64_t f)
{
    uint32_t w = (uint32_t)*at, *rec = t->words + w;
    rec[0] = (uint32_t)n;
    memcpy(rec + 1, &f, 8);
    for (Py_ssize_t i = 0; i < n; i++)
        rec[WORD_HEAD + i] = b[i];
    *at += WORD_HEAD + (size_t)n;
    t->nwords++;
    for (Py_ssize_t i = 0; i + 1 < n; i++) {
        int fr;
        int64_t pi = pair_index(t, b[i], b[i + 1], &fr);
        if (pi < 0)
            return -1;
        t->pairs[pi].count += f;
        if (pair_add_word(&t->pairs[pi], (uint32_t)w) < 0)
            return -1;
    }
    return 0;
}

/* train_merges(word_counts, num_merges, on_merge=None, consume=False) -> [(a, b)]
 * word_counts: a dict {bytes: int}, or a Counter (read in place, no Python objects made;
 * with consume, emptied once read, so that its memory serves the merges).
 * The merged id pairs in order (token 256 + k is merge k); stops early when no pair is
 * left. on_merge(n) is called now and then with the merges done since the last call. */
static PyObject *
native_train_merges(PyObject *module, PyObject *args)
{
    PyObject *counts, *on_merge = Py_None;
    Py_ssize_t num_merges;
    int consume = 0;
    if (!PyArg_ParseTuple(args, "On|Op", &counts, &num_merges, &on_merge, &consume))
        return NULL;
    const CountMap *cm = NULL;
    if (PyObject_TypeCheck(counts, &CounterType))
        cm = &((CounterObject *)counts)->map;
    else if (!PyDict_Check(counts)) {
        PyErr_SetString(PyExc_TypeError, "word_counts must be a dict or a Counter");
        return NULL;
    }
    Trainer t;
    memset(&t, 0, sizeof(t));
    uint32_t *fresh = NULL;
    size_t nfresh = 0, capfresh = 0;
    PyObject *out = NULL;
    Py_ssize_t nw = 0, total = 0, pos = 0;
    size_t cpos = 0;
    PyObject *key, *val;
    if (cm) {
        for (const CountSlot *e; (e = counts_next(cm, &cpos));) {
            total += e->len;
            nw++;
        }
    }
    else {
        nw = PyDict_GET_SIZE(counts);
        while (PyDict_Next(counts, &pos, &key, &val)) {
            if (!PyBytes_Check(key)) {
                PyErr_SetString(PyExc_TypeError, "word_counts keys must be bytes");
                goto done;
            }
            total += PyBytes_GET_SIZE(key);
        }
    }
    size_t words_len = (size_t)total + WORD_HEAD * (size_t)nw;
    if (words_len > UINT32_MAX) { /* words are named by 32-bit offsets */
        PyErr_Format(PyExc_ValueError,
                     "train_merges: %zd distinct pre-tokens of %zd bytes in all are more than "
                     "it can hold (16 GB of records); count a smaller corpus",
                     nw, total);
        goto done;
    }
    t.words = big_calloc(words_len * sizeof(uint32_t));
    t.words_len = words_len;
    if (!t.words || pairmap_grow(&t) < 0)
        goto nomem;
    for (int b = 0; b < 256; b++) {
        if (add_token(&t, UINT32_MAX, 0, (uint8_t)b) < 0)
            goto nomem;
    }
    size_t at = 0;
    if (cm) {
        cpos = 0;
        for (const CountSlot *e; (e = counts_next(cm, &cpos));)
            if (trainer_add_word(&t, &at, slot_key(cm, e), e->len, e->count) < 0)
                goto nomem;
    }
    else {
        pos = 0;
        while (PyDict_Next(counts, &pos, &key, &val)) {
            int64_t f = PyLong_AsLongLong(val);
            if (f == -1 && PyErr_Occurred())
                goto done;
            if (trainer_add_word(&t, &at, (const uint8_t *)PyBytes_AS_STRING(key),
                                 PyBytes_GET_SIZE(key), f) < 0)
                goto nomem;
        }
    }
    if (cm && consume) {
        CounterObject *c = (CounterObject *)counts;
        counts_free(&c->map);
        c->total = 0;
        if (counts_init(&c->map) < 0)
            goto nomem;
    }
    for (size_t k = 0; k < t.npairs; k++)
        if (t.pairs[k].count > 0 && train_push(&t, (TrainHeapItem){t.pairs[k].count, (uint32_t)k}) < 0)
            goto nomem;
    out = PyList_New(0);
    if (!out)
        goto done;
    Py_ssize_t pending = 0;
    for (Py_ssize_t m = 0; m < num_merges; m++) {
        /* the best pair: fix stale entries at the top first */
        int found = 0;
        while (t.nheap) {
            TrainHeapItem top = t.heap[0];
            int64_t c = t.pairs[top.pair].count;
            if (c == top.count) {
                found = 1;
                break;
            }
            train_pop(&t);
            if (c > 0 && train_push(&t, (TrainHeapItem){c, top.pair}) < 0)
                goto nomem;
        }
        if (!found)
            break;
        uint32_t best = t.heap[0].pair;
        train_pop(&t);
        uint32_t A = t.pairs[best].a, B = t.pairs[best].b;
        uint32_t nid = (uint32_t)t.ntok;
        if (add_token(&t, A, B, 0) < 0)
            goto nomem;
        PyObject *pr = Py_BuildValue("(II)", A, B);
        if (!pr || PyList_Append(out, pr) < 0) {
            Py_XDECREF(pr);
            Py_CLEAR(out);
            goto done;
        }
        Py_DECREF(pr);
        nfresh = 0;
        if (apply_merge(&t, best, nid, &fresh, &nfresh, &capfresh) < 0)
            goto nomem;
        for (size_t k = 0; k < nfresh; k++) {
            Pair *p = &t.pairs[fresh[k]];
            if (p->count > 0 && train_push(&t, (TrainHeapItem){p->count, fresh[k]}) < 0)
                goto nomem;
        }
        if (on_merge != Py_None && ++pending >= 256) {
            PyObject *r = PyObject_CallFunction(on_merge, "n", pending);
            if (!r) {
                Py_CLEAR(out);
                goto done;
            }
            Py_DECREF(r);
            pending = 0;
        }
    }
    if (on_merge != Py_None && pending) {
        PyObject *r = PyObject_CallFunction(on_merge, "n", pending);
        if (!r) {
            Py_CLEAR(out);
            goto done;
        }
        Py_DECREF(r);
    }
    goto done;
nomem:
    Py_CLEAR(out);
    PyErr_NoMemory();
done:
    free(fresh);
    trainer_free(&t);
    return out;
}

/* ------------------------------------------------------------------ module */

static PyMethodDef module_methods[] = {
    {"train_merges", native_train_merges, METH_VARARGS,
     "train_merges(word_counts, num_merges, on_merge=None, consume=False) -> [(a, b)]: the "
     "BPE training merges (ids), exactly as bpe.merge_loop; word_counts a dict {bytes: int} "
     "or a Counter (emptied once read, with consume)"},
    {"pretokenize", native_pretokenize, METH_VARARGS,
     "pretokenize(data, batch=256) -> [(start, end)] byte spans of the GPT-2 pre-tokens of "
     "UTF-8 data, or the int offset of the first invalid byte; found `batch` at a time by "
     "the batched scanner, or with batch=0 one at a time"},
    {"scan", native_scan, METH_O,
     "scan(data) -> the number of GPT-2 pre-tokens of UTF-8 data (for benchmarks)"},
    {"simd", native_simd, METH_NOARGS, "simd() -> the scanner path in use (avx2, sse2, portable)"},
    {"simd_paths", native_simd_paths, METH_NOARGS,
     "simd_paths() -> the scanner paths this CPU runs, fastest first"},
    {"set_simd", native_set_simd, METH_O,
     "set_simd(name): use this scanner path (ValueError if unknown or not supported here)"},
    {NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "_native", "The native tokenization engine (see lm.tokenizer.native).", -1,
    module_methods,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    if (PyType_Ready(&CounterType) < 0 || PyType_Ready(&EncoderType) < 0)
        return NULL;
    scan_init();
    PyObject *m = PyModule_Create(&native_module);
    if (!m)
        return NULL;
    Py_INCREF(&CounterType);
    Py_INCREF(&EncoderType);
    if (PyModule_AddObject(m, "Counter", (PyObject *)&CounterType) < 0 ||
        PyModule_AddObject(m, "Encoder", (PyObject *)&EncoderType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
