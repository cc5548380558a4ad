// test_ops.c: the CPU reference ops (RoPE, SwiGLU, attention, cross-entropy, the softmaxes' exp): gradients
// against central finite differences of the forward pass, and the mask semantics of
// attention (window, GQA, packed conversations) checked by their defining properties.
//
// Finite differences run in float32 with h = 1e-2 on inputs of order 1; the loss is
// accumulated in double. Truncation error is O(h^2) ~ 1e-4 relative and float rounding of
// the loss contributes ~1e-7 * |L| / h; a tolerance of 2e-3 relative + 2e-4 absolute is
// far above both and far below the O(1) error of a wrong gradient.
#include <math.h>
#include <stdlib.h>

#include "../common/util.h"
#include "../train/attention.h"
#include "../train/cross_entropy.h"
#include "../train/exp_approx.h"
#include "../train/rmsnorm.h"
#include "../train/rope.h"
#include "../train/swiglu.h"
#include "test.h"

static uint64_t rng = 2024;
static void fill(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(2 * rng_uniform(&rng) - 1);
}
static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

typedef double (*LossFn)(void);
static int fd_check(const char *what, float *x, const float *grad, size_t n, LossFn loss) {
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        float keep = x[i], h = 1e-2f;
        x[i] = keep + h;
        double up = loss();
        x[i] = keep - h;
        double down = loss();
        x[i] = keep;
        double fd = (up - down) / (2.0 * h);
        if (fabs(fd - grad[i]) > 2e-3 * fabs(fd) + 2e-4) {
            if (!bad) printf("  %s[%zu]: analytic %.7g, finite difference %.7g\n", what, i, grad[i], fd);
            bad++;
        }
    }
    return bad;
}

// ---- RoPE
enum { RT = 4, RH = 3, RD = 8 };
static float rx[RT * RH * RD], rr[RT * RH * RD];
static const int32_t rpos[RT] = {0, 1, 7, 0};
static double rope_loss(void) {
    float y[RT * RH * RD];
    memcpy(y, rx, sizeof(y));
    rope_apply(y, rpos, RT, RH, RD, 10000.0, 1);
    return dot(y, rr, RT * RH * RD);
}
TEST(rope_gradient_and_properties) {
    fill(rx, RT * RH * RD);
    fill(rr, RT * RH * RD);
    float g[RT * RH * RD], y[RT * RH * RD];
    memcpy(g, rr, sizeof(g));
    rope_apply(g, rpos, RT, RH, RD, 10000.0, -1);  // backward: rotate the gradient back
    CHECK_INT(fd_check("rope dx", rx, g, RT * RH * RD, rope_loss), 0);
    memcpy(y, rx, sizeof(y));
    rope_apply(y, rpos, RT, RH, RD, 10000.0, 1);
    for (int i = 0; i < RH * RD; i++) CHECK(y[i] == rx[i]);  // position 0 is the identity
    CHECK(fabs(dot(y, y, sizeof(y) / 4) - dot(rx, rx, sizeof(y) / 4)) < 1e-4);  // a rotation
    // pairing (j, j + D/2): at position 1, dims 0 and 4 rotate by exactly 1 radian
    CHECK(fabsf(y[RH * RD + 0] - (rx[RH * RD + 0] * cosf(1) - rx[RH * RD + 4] * sinf(1))) < 1e-6f);
}

// ---- RMSNorm
enum { NR = 3, NC = 10 };
static float nx[NR * NC], nw[NC], nr_[NR * NC];
static double rmsnorm_loss(void) {
    float y[NR * NC], rstd[NR];
    rmsnorm_forward(nx, nw, y, rstd, NR, NC, 1e-5f);
    return dot(y, nr_, NR * NC);
}
TEST(rmsnorm_gradient_and_value) {
    fill(nx, NR * NC);
    fill(nw, NC);
    fill(nr_, NR * NC);
    float y[NR * NC], rstd[NR], dx[NR * NC];
    rmsnorm_forward(nx, nw, y, rstd, NR, NC, 1e-5f);
    rmsnorm_backward(nx, nw, rstd, nr_, dx, NR, NC);
    CHECK_INT(fd_check("rmsnorm dx", nx, dx, NR * NC, rmsnorm_loss), 0);
    double ms = dot(nx, nx, NC) / NC;  // the definition, row 0
    CHECK(fabs(y[2] - nw[2] * nx[2] / sqrt(ms + 1e-5)) < 1e-6);
}

// ---- SwiGLU
enum { SN = 64 };
static float sg[SN], su[SN], sr[SN];
static double swiglu_loss(void) {
    float h[SN];
    swiglu_forward(sg, su, h, SN);
    return dot(h, sr, SN);
}
TEST(swiglu_gradient) {
    fill(sg, SN);
    fill(su, SN);
    fill(sr, SN);
    for (int i = 0; i < SN; i++) sg[i] *= 4;  // cover the sigmoid's range
    float dg[SN], du[SN];
    swiglu_backward(sg, su, sr, dg, du, SN);
    CHECK_INT(fd_check("swiglu dg", sg, dg, SN, swiglu_loss), 0);
    CHECK_INT(fd_check("swiglu du", su, du, SN, swiglu_loss), 0);
}

// ---- attention: 9 tokens in two conversations (5 + 4), 4 query heads on 2 KV heads
enum { AT = 9, AHQ = 4, AHKV = 2, AD = 6 };
static float aq[AT * AHQ * AD], ak[AT * AHKV * AD], av[AT * AHKV * AD], ar[AT * AHQ * AD];
static const int32_t aseg[AT] = {0, 0, 0, 0, 0, 1, 1, 1, 1};
static int awindow;
static double attention_loss(void) {
    float o[AT * AHQ * AD], lse[AT * AHQ];
    attention_forward(aq, ak, av, aseg, AT, AHQ, AHKV, AD, awindow, o, lse);
    return dot(o, ar, AT * AHQ * AD);
}
static void attention_gradients(int window) {
    awindow = window;
    fill(aq, sizeof(aq) / 4);
    fill(ak, sizeof(ak) / 4);
    fill(av, sizeof(av) / 4);
    fill(ar, sizeof(ar) / 4);
    float o[AT * AHQ * AD], lse[AT * AHQ], dq[sizeof(aq) / 4], dk[sizeof(ak) / 4], dv[sizeof(av) / 4];
    attention_forward(aq, ak, av, aseg, AT, AHQ, AHKV, AD, window, o, lse);
    attention_backward(aq, ak, av, o, ar, lse, aseg, AT, AHQ, AHKV, AD, window, dq, dk, dv);
    CHECK_INT(fd_check("attention dq", aq, dq, sizeof(aq) / 4, attention_loss), 0);
    CHECK_INT(fd_check("attention dk", ak, dk, sizeof(ak) / 4, attention_loss), 0);
    CHECK_INT(fd_check("attention dv", av, dv, sizeof(av) / 4, attention_loss), 0);
}
TEST(attention_gradients_full_causal) { attention_gradients(0); }
TEST(attention_gradients_window_3) { attention_gradients(3); }

TEST(attention_mask_semantics) {
    fill(aq, sizeof(aq) / 4);
    fill(ak, sizeof(ak) / 4);
    fill(av, sizeof(av) / 4);
    float o[AT * AHQ * AD], o2[AT * AHQ * AD], lse[AT * AHQ];
    // window 1: every query sees only itself, so its output is its own value vector
    attention_forward(aq, ak, av, aseg, AT, AHQ, AHKV, AD, 1, o, lse);
    for (int t = 0; t < AT; t++)
        for (int h = 0; h < AHQ; h++)
            for (int d = 0; d < AD; d++) CHECK(fabsf(o[(t * AHQ + h) * AD + d] - av[(t * AHKV + h / 2) * AD + d]) < 1e-6f);
    // the first token of each conversation sees only itself, whatever the window
    attention_forward(aq, ak, av, aseg, AT, AHQ, AHKV, AD, 0, o, lse);
    for (int d = 0; d < AD; d++) CHECK(fabsf(o[(5 * AHQ + 3) * AD + d] - av[(5 * AHKV + 1) * AD + d]) < 1e-6f);
    // changing conversation 0's keys and values leaves conversation 1 untouched; changing a
    // key outside a window of 2 leaves the query that cannot see it untouched
    attention_forward(aq, ak, av, aseg, AT, AHQ, AHKV, AD, 2, o, lse);
    for (int i = 0; i < 5 * AHKV * AD; i++) ak[i] += 1.0f, av[i] -= 0.5f;
    attention_forward(aq, ak, av, aseg, AT, AHQ, AHKV, AD, 2, o2, lse);
    for (int i = 5 * AHQ * AD; i < AT * AHQ * AD; i++) CHECK(o[i] == o2[i]);
    for (int i = 0; i < 3 * AHKV * AD; i++) ak[i] += 2.0f;  // tokens 0..2: outside token 4's window
    attention_forward(aq, ak, av, aseg, AT, AHQ, AHKV, AD, 2, o, lse);
    for (int i = 4 * AHQ * AD; i < 5 * AHQ * AD; i++) CHECK(o[i] == o2[i]);
}

// ---- cross-entropy over the LM head
enum { CT = 5, CH = 7, CV = 11 };
static float ch_[CT * CH], cw[CV * CH];
static const int32_t ctarget[CT] = {3, 0, 10, 5, 5};
static const float cweight[CT] = {1, 0, 1, 1, 0.5f};
static double ce_loss(void) { return cross_entropy(ch_, cw, ctarget, cweight, CT, CH, CV, 1.0f, NULL); }
TEST(cross_entropy_gradient_and_value) {
    fill(ch_, CT * CH);
    fill(cw, CV * CH);
    float dh[CT * CH];
    double l = cross_entropy(ch_, cw, ctarget, cweight, CT, CH, CV, 1.0f, dh);
    CHECK_INT(fd_check("cross-entropy dh", ch_, dh, CT * CH, ce_loss), 0);
    for (int i = CH; i < 2 * CH; i++) CHECK(dh[i] == 0.0f);  // weight 0: no gradient
    // the value, from its definition, for token 0
    double z[CV], m = -1e30, s = 0;
    for (int c = 0; c < CV; c++) {
        z[c] = dot(cw + c * CH, ch_, CH);
        if (z[c] > m) m = z[c];
    }
    for (int c = 0; c < CV; c++) s += exp(z[c] - m);
    float only0[CT] = {1, 0, 0, 0, 0};
    double l0 = cross_entropy(ch_, cw, ctarget, only0, CT, CH, CV, 1.0f, NULL);
    CHECK(fabs(l0 - (m + log(s) - z[3])) < 1e-5);
    CHECK(l > l0);
}

// The softmaxes' exp (train/exp_approx.h) against double-precision exp over its whole
// range, every 1e-4: within 2.4e-7 relative (4 float ulps; Cephes' expf is within about 1,
// measured 8e-8 here); e^0 is exactly 1; exp_shifted clamps far-negative arguments to
// e^-87 (positive, finite) instead of producing garbage from an out-of-range 2^n.
TEST(exp_approx_accuracy) {
    double worst = 0.0;
    for (float x = -87.0f; x <= 88.0f; x += 1e-4f) {
        double e = exp((double)x), rel = fabs(exp_approx(x) - e) / e;
        worst = rel > worst ? rel : worst;
    }
    printf("  largest relative error %.3g\n", worst);
    CHECK(worst < 2.4e-7);
    CHECK(exp_approx(0.0f) == 1.0f);
    float v[5] = {3.0f, 2.0f, -500.0f, 1e30f, -INFINITY};
    exp_shifted(v, 5, 3.0f);
    CHECK(v[0] == 1.0f);
    CHECK(fabs(v[1] - exp(-1.0)) < 2.4e-7 * exp(-1.0));
    for (int i = 2; i < 5; i++) CHECK(i == 3 ? isfinite(v[i]) && v[i] > 1e38f : v[i] > 0.0f && v[i] < 1e-37f);
}

int main(void) {
    RUN(exp_approx_accuracy);
    RUN(rope_gradient_and_properties);
    RUN(rmsnorm_gradient_and_value);
    RUN(swiglu_gradient);
    RUN(attention_gradients_full_causal);
    RUN(attention_gradients_window_3);
    RUN(attention_mask_semantics);
    RUN(cross_entropy_gradient_and_value);
    return test_summary();
}
