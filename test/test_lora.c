// test_lora.c: LoRA gradients against central finite differences, and PEFT's init.
//
// The loss is L = sum(y * R) for a fixed random R, so dL/dy = R. y is linear in A for
// fixed B and in B for fixed A (and in x), so a central difference has no truncation
// error: (L(p + h) - L(p - h)) / 2h equals the derivative up to float rounding, and every
// analytic gradient element must match it to 1e-3 relative. This is an independent check:
// the differences only call the forward pass.
#include <math.h>
#include <stdlib.h>

#include "../common/util.h"
#include "../train/lora.h"
#include "test.h"

enum { M = 5, IN = 12, R = 3, OUT = 7 };

static float x[M * IN], A[R * IN], B[OUT * R], Rw[M * OUT], mask[M * IN];

static double loss(const float *use_mask, float s) {
    float y[M * OUT] = {0}, u[M * R], xd[M * IN];
    lora_forward(x, use_mask, A, B, y, u, xd, M, IN, R, OUT, s);
    double l = 0;
    for (int i = 0; i < M * OUT; i++) l += (double)y[i] * Rw[i];
    return l;
}

static int check_fd(const char *what, float *param, const float *grad, int n, const float *use_mask, float s) {
    int bad = 0;
    for (int i = 0; i < n; i++) {
        float keep = param[i], h = 1e-2f;
        param[i] = keep + h;
        double up = loss(use_mask, s);
        param[i] = keep - h;
        double down = loss(use_mask, s);
        param[i] = keep;
        double fd = (up - down) / (2.0 * h);
        if (fabs(fd - grad[i]) > 1e-3 * fabs(fd) + 1e-4) {
            if (!bad) printf("  %s[%d]: analytic %.7g, finite difference %.7g\n", what, i, grad[i], fd);
            bad++;
        }
    }
    return bad;
}

static void gradients_match(float p) {
    uint64_t rng = 42;
    for (int i = 0; i < M * IN; i++) x[i] = (float)(2 * rng_uniform(&rng) - 1);
    for (int i = 0; i < M * OUT; i++) Rw[i] = (float)(2 * rng_uniform(&rng) - 1);
    lora_init(A, B, R, IN, OUT, &rng);
    for (int i = 0; i < OUT * R; i++) B[i] = (float)(2 * rng_uniform(&rng) - 1);  // B = 0 would hide dA
    const float *use_mask = NULL;
    if (p > 0) {
        lora_dropout_mask(mask, M * IN, p, &rng);
        use_mask = mask;
    }
    float s = lora_scaling(16.0f, R, 0);
    float y[M * OUT] = {0}, u[M * R], xd[M * IN], dA[R * IN] = {0}, dB[OUT * R] = {0}, dx[M * IN] = {0};
    lora_forward(x, use_mask, A, B, y, u, xd, M, IN, R, OUT, s);
    lora_backward(Rw, use_mask ? xd : x, u, use_mask, A, B, dA, dB, dx, M, IN, R, OUT, s);
    CHECK_INT(check_fd("dA", A, dA, R * IN, use_mask, s), 0);
    CHECK_INT(check_fd("dB", B, dB, OUT * R, use_mask, s), 0);
    CHECK_INT(check_fd("dx", x, dx, M * IN, use_mask, s), 0);
}

TEST(gradients_without_dropout) { gradients_match(0.0f); }
TEST(gradients_with_dropout) { gradients_match(0.3f); }

TEST(peft_init_and_scaling) {
    uint64_t rng = 7;
    static float a[8 * 4096], b[16 * 8];
    for (int i = 0; i < 16 * 8; i++) b[i] = 1.0f;
    lora_init(a, b, 8, 4096, 16, &rng);
    double lo = 0, hi = 0, mean = 0;
    for (int i = 0; i < 8 * 4096; i++) {
        lo = fmin(lo, a[i]);
        hi = fmax(hi, a[i]);
        mean += a[i] / (8.0 * 4096);
    }
    // kaiming_uniform(a=sqrt(5)) on fan_in 4096: U(-1/64, 1/64) (reference/qlora.md §B.1)
    CHECK(lo >= -0.015625 && hi <= 0.015625 && lo < -0.0155 && hi > 0.0155);
    CHECK(fabs(mean) < 1e-3);
    for (int i = 0; i < 16 * 8; i++) CHECK(b[i] == 0.0f);
    CHECK(lora_scaling(16, 8, 0) == 2.0f);
    CHECK(fabsf(lora_scaling(16, 16, 1) - 4.0f) < 1e-6f);
    // dropout keeps about 1 - p of the entries, scaled by 1 / (1 - p)
    static float mk[10000];
    lora_dropout_mask(mk, 10000, 0.25f, &rng);
    int kept = 0;
    for (int i = 0; i < 10000; i++) {
        CHECK(mk[i] == 0.0f || fabsf(mk[i] - 1.0f / 0.75f) < 1e-6f);
        kept += mk[i] != 0.0f;
    }
    CHECK(kept > 7300 && kept < 7700);
}

int main(void) {
    RUN(gradients_without_dropout);
    RUN(gradients_with_dropout);
    RUN(peft_init_and_scaling);
    return test_summary();
}
