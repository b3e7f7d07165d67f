/* One path of the pre-token scanner: included by _scan.h once per path, with
 *   SCAN_NAME(f)  the name of function f for this path (f##_avx2, ...)
 *   SCAN_ATTR     the attributes of its functions (the target instruction set)
 *   SCAN_RUN      its run finder: the first p >= j where s[p] is not an ASCII byte of kind
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

SCAN_ATTR static Py_ssize_t
SCAN_NAME(scan_batch)(const uint8_t *s, Py_ssize_t i, Py_ssize_t n, Py_ssize_t *ends, Py_ssize_t max)
{
    Py_ssize_t k = 0;
    while (i < n && k < max) {
        i = SCAN_NAME(pretoken_end)(s, i, n);
        ends[k++] = i;
    }
    return k;
}

#undef SCAN_NAME
#undef SCAN_ATTR
#undef SCAN_RUN
