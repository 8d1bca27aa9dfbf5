/* INCRBYFLOAT's arithmetic in the C library's long double, as Redis does it: on x86-64 the
 * 80-bit x87 format, parsed by strtold and printed with 17 digits after the point, so the
 * digits a client reads are Redis's own. Pure computation: no I/O, no global state beyond
 * errno, which is read at once. */

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { STRATA_FLOAT_OK = 0, STRATA_FLOAT_INVALID = 1, STRATA_FLOAT_NOT_FINITE = 2 };

/* A NUL-terminated number as strtold reads it, whole: no leading space, nothing after it,
 * neither overflow nor underflow to zero, not NaN. */
static int parse(const char *text, long double *value) {
    char *end = NULL;
    if (text[0] == '\0' || isspace((unsigned char)text[0])) {
        return 0;
    }
    errno = 0;
    long double parsed = strtold(text, &end);
    int out_of_range = errno == ERANGE &&
                       (parsed == HUGE_VALL || parsed == -HUGE_VALL || parsed == 0.0L);
    if (*end != '\0' || out_of_range || isnan(parsed)) {
        return 0;
    }
    *value = parsed;
    return 1;
}

/* current + increment, written to output (capacity bytes) as "%.17Lf" without trailing zeros
 * after the point (nor the point itself), "-0" written "0". Answers how it went; on success
 * *written holds the length. */
int strata_long_double_add(const char *current, const char *increment, char *output,
                           size_t capacity, size_t *written) {
    long double base = 0.0L;
    long double step = 0.0L;
    if (!parse(current, &base) || !parse(increment, &step)) {
        return STRATA_FLOAT_INVALID;
    }
    long double sum = base + step;
    if (isnan(sum) || isinf(sum)) {
        return STRATA_FLOAT_NOT_FINITE;
    }
    int length = snprintf(output, capacity, "%.17Lf", sum);
    if (length < 0 || (size_t)length + 1 > capacity) {
        return STRATA_FLOAT_INVALID;
    }
    if (strchr(output, '.') != NULL) {
        while (output[length - 1] == '0') {
            length--;
        }
        if (output[length - 1] == '.') {
            length--;
        }
    }
    if (length == 2 && output[0] == '-' && output[1] == '0') {
        output[0] = '0';
        length = 1;
    }
    *written = (size_t)length;
    return STRATA_FLOAT_OK;
}
