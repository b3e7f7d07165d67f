/* One path of the pre-token scanner: included by _scan.h once per path, with
 *   SCAN_NAME(f)  the name of function f for this path (f##_avx2, ...)
 *   SCAN_ATTR     the attributes of its functions (the target instruction set)
 *   SCAN_RUN      its run finder: the first p >= j where s[p] is not an ASCII byte of kind
 *   SCAN_MASKS    its window classifier: the ScanMasks of 64 bytes (see window_starts)
 *   SCAN_POPCOUNT its count of the set bits of a uint64_t
 * defined; it undefines them. No include guard: that is the point. */

/* End of the pre-token that starts at s[i] (i < n), in the valid UTF-8 text s[0:n). */
SCAN_ATTR static inline Py_ssize_t
SCAN_NAME(pretoken_end)(const uint8_t *s, Py_ssize_t i, Py_ssize_t n)
{
    uint8_t c = s[i];
    int len = 1, kind;
    if (c == '\'' && i + 1 < n) { /* '(?:[sdmt]|ll|ve|re) */
        uint8_t d = s[i + 1];
        if (d == 's' || d == 'd' || d == 'm' || d == 't')
            return i + 2;
        if (i + 2 < n) {
            uint8_t e = s[i + 2];
            if ((d == 'l' && e == 'l') || (d == 'v' && e == 'e') || (d == 'r' && e == 'e'))
                return i + 3;
        }
    }
    Py_ssize_t j = i;
    if (c == ' ' && i + 1 < n) { /* the optional space of ` ?X+` */
        uint8_t d = s[i + 1];
        kind = d < 0x80 ? scan_ascii_kind[d] : kind_of(char_class(s, i + 1, &len));
        if (kind != C_S)
            j = i + 1;
    }
    else
        kind = c < 0x80 ? scan_ascii_kind[c] : kind_of(char_class(s, i, &len));
    if (kind != C_S) { /* ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+` */
        j += len;
        for (;;) {
            j = SCAN_RUN(s, j, n, kind);
            if (j == n || s[j] < 0x80)
                return j;
            if (kind_of(char_class(s, j, &len)) != kind)
                return j;
            j += len;
        }
    }
    /* white space: `\s+(?!\S)`, else `\s+`; `last` is where its last character starts */
    Py_ssize_t last = i;
    j = i;
    for (;;) {
        Py_ssize_t e = SCAN_RUN(s, j, n, C_S);
        if (e > j) { /* ASCII white space: one byte a character */
            last = e - 1;
            j = e;
        }
        if (j == n)
            return n;
        if (s[j] < 0x80 || kind_of(char_class(s, j, &len)) != C_S)
            break;
        last = j;
        j += len;
    }
    return last > i ? last : j;
}

SCAN_ATTR static Py_ssize_t
SCAN_NAME(next_pretoken)(const uint8_t *s, Py_ssize_t i, Py_ssize_t n)
{
    return SCAN_NAME(pretoken_end)(s, i, n);
}

/* The ends of up to `max` pre-tokens from s[i] on, a window of 64 bytes at a time (see
 * window_starts). pretoken_end reads the pre-token after a window that decided none or
 * met a byte >= 0x80, and each whose next SCAN_AHEAD bytes hold a byte >= 0x80: in text
 * of other scripts a window would decide little, so the scanner goes a pre-token at a
 * time there, and back to windows where SCAN_AHEAD bytes of ASCII follow. */
SCAN_ATTR static Py_ssize_t
SCAN_NAME(scan_batch)(const uint8_t *s, Py_ssize_t i, Py_ssize_t n, Py_ssize_t *ends, Py_ssize_t max)
{
    Py_ssize_t k = 0;
    uint8_t pad[SCAN_WINDOW];
    while (i < n && k < max) {
        const uint8_t *w = s + i;
        Py_ssize_t left = n - i;
        uint64_t ahead = 0;
        if (left >= SCAN_AHEAD) { /* a byte >= 0x80 in the next SCAN_AHEAD: no window */
            uint64_t a8[SCAN_AHEAD / 8];
            memcpy(a8, w, SCAN_AHEAD);
            for (int a = 0; a < SCAN_AHEAD / 8; a++)
                ahead |= a8[a];
            ahead &= 0x8080808080808080ULL;
        }
        if (!ahead) {
            if (left < SCAN_WINDOW) { /* the last bytes, padded with ' ' */
                memcpy(pad, w, (size_t)left);
                memset(pad + left, ' ', (size_t)(SCAN_WINDOW - left));
                w = pad;
            }
            ScanMasks m;
            SCAN_MASKS(w, &m);
            uint64_t starts = window_starts(&m, w);
            int high = m.high ? (int)scan_ctz64(m.high) : SCAN_WINDOW;
            /* to the end: all bytes before it ASCII, every start and the end are decided */
            int to_end = left < SCAN_WINDOW && high == SCAN_WINDOW;
            int lim = to_end ? (int)left : (high - 1 < SCAN_WINDOW - 1 ? high - 1 : SCAN_WINDOW - 1);
            starts = lim > 1 ? starts & (((uint64_t)1 << lim) - 2) : 0; /* bits 1 .. lim-1 */
            int more = starts != 0; /* whether the window decided a start */
            Py_ssize_t count = (Py_ssize_t)SCAN_POPCOUNT(starts);
            if (max - k >= count + 8) { /* room for them rounded up to 8: written 8 at a time */
                Py_ssize_t *e = ends + k;
                k += count;
                SCAN_EMIT4(e, i, starts);
                SCAN_EMIT4(e + 4, i, starts);
                while (starts) {
                    e += 8;
                    SCAN_EMIT4(e, i, starts);
                    SCAN_EMIT4(e + 4, i, starts);
                }
            }
            else {
                for (; starts && k < max; starts &= starts - 1)
                    ends[k++] = i + scan_ctz64(starts);
                if (k == max)
                    break;
            }
            if (to_end) {
                ends[k++] = n;
                break;
            }
            if (more)
                i = ends[k - 1];
            if (more && high == SCAN_WINDOW)
                continue;
        }
        /* what no window decides: a pre-token near a byte >= 0x80, or of 62 bytes or more */
        i = SCAN_NAME(pretoken_end)(s, i, n);
        ends[k++] = i;
    }
    return k;
}

#undef SCAN_NAME
#undef SCAN_ATTR
#undef SCAN_RUN
#undef SCAN_MASKS
#undef SCAN_POPCOUNT
