/* test.h -- the assertions every C test uses.
 *
 * A test program is a main() calling TEST_RUN(fn) for each case; a failed
 * CHECK prints file:line and the expression (and values for the typed
 * forms), marks the case failed and goes on; the program exits non-zero if
 * any case failed, so ctest reports it. */
#ifndef SL_TEST_H
#define SL_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failures_;
static int test_case_failed_;

#define CHECK(cond)                                                             \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            test_case_failed_ = 1;                                              \
        }                                                                       \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                      \
    do {                                                                        \
        long long a_ = (long long)(a), b_ = (long long)(b);                     \
        if (a_ != b_) {                                                         \
            fprintf(stderr, "%s:%d: CHECK_EQ_INT failed: %s == %s (%lld vs %lld)\n", \
                    __FILE__, __LINE__, #a, #b, a_, b_);                        \
            test_case_failed_ = 1;                                              \
        }                                                                       \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                   \
    do {                                                                        \
        double a_ = (double)(a), b_ = (double)(b);                              \
        if (!(fabs(a_ - b_) <= (tol))) {                                        \
            fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s ~ %s (%.9g vs %.9g, tol %g)\n", \
                    __FILE__, __LINE__, #a, #b, a_, b_, (double)(tol));         \
            test_case_failed_ = 1;                                              \
        }                                                                       \
    } while (0)

#define CHECK_STR(a, b)                                                         \
    do {                                                                        \
        const char *a_ = (a), *b_ = (b);                                        \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                \
            fprintf(stderr, "%s:%d: CHECK_STR failed: %s == %s (\"%s\" vs \"%s\")\n", \
                    __FILE__, __LINE__, #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); \
            test_case_failed_ = 1;                                              \
        }                                                                       \
    } while (0)

/* Contains: the error message names what it should. */
#define CHECK_CONTAINS(hay, needle)                                             \
    do {                                                                        \
        const char *h_ = (hay), *n_ = (needle);                                 \
        if (!h_ || !strstr(h_, n_)) {                                           \
            fprintf(stderr, "%s:%d: CHECK_CONTAINS failed: \"%s\" does not contain \"%s\"\n", \
                    __FILE__, __LINE__, h_ ? h_ : "(null)", n_);                \
            test_case_failed_ = 1;                                              \
        }                                                                       \
    } while (0)

#define TEST_RUN(fn)                                                            \
    do {                                                                        \
        test_case_failed_ = 0;                                                  \
        fn();                                                                   \
        fprintf(stderr, "%s %s\n", test_case_failed_ ? "FAIL" : "ok  ", #fn);   \
        test_failures_ += test_case_failed_;                                    \
    } while (0)

#define TEST_EXIT() return test_failures_ ? 1 : 0

#endif
