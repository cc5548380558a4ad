// test_cuda_lora.cpp: the LoRA kernels (kernels/lora.cuh) in the CUDA-on-CPU harness.
//
// Reference: train/lora.c (fp32, the CPU model's LoRA, itself checked against finite
// differences in test_lora.c) with the fp32 masters A, B, and its dropout masks drawn by
// lora_dropout_mask from the generator the GPU regenerates them from. The GPU runs on bf16
// copies of A and B made by lora_cast, bf16 X, dY and base outputs.
// 1. The dropout generator: lora_kept(state, i) says "kept" exactly where lora_dropout_mask
//    writes a nonzero, for several rates, and lora_dropout_advance moves a state as the
//    CPU's draws do.
// 2. Forward and backward of the four groups of a tiny model (hidden 48, 4 heads and 2 KV
//    heads of 12, MLP 96: q, k, v of 48 -> 48, 24, 24 in one launch; o 48 -> 48; gate, up
//    48 -> 96, 96 in one launch; down 96 -> 48: all seven projection shapes), r = 1, 8, 16,
//    64, M = 1, 17, 300, with and without dropout, with small ranges (the split
//    reductions) and the default ones (one range: direct writes). U, G, every Y_p, dB_p,
//    dA_p and dX against the reference within the bounds at the top of kernels/lora.cuh,
//    computed here element by element from the magnitudes of the same products; dA and dB
//    start nonzero (they accumulate) and so do Y and dX (the base path's values).
//    Then each kernel alone, with tight bounds: against a model in double that rounds the
//    operands as the GPU does (bf16(A), bf16(B), bf16(x·keep)) and takes the GPU's own U and
//    G as inputs to the later products, so that only the fp32 sums and the output's bf16
//    rounding remain (u|y| + 4(K + 2)·2^-24·Σ|terms|), and nearly every bf16 output equal to
//    the model rounded to bf16: this catches what the end-to-end bounds could hide (a
//    dropout scale 1% off, a mask on the wrong element).
//    A forward with some Y_p NULL (a recompute that wants U only) writes the same U and
//    leaves those Y_p alone.
// 3. Two runs give bit-identical dA, dB (and U, Y, dX), under other thread schedules too.
// 4. lora_cast rounds to nearest even exactly as common/half.h (ties, huge values,
//    denormals), vectorized and at a misaligned tail.
// 5. A rank above 64 and a scratch too small are refused with one line.
#include "../kernels/lora.cuh"
#include "cuda_host/cuda_host_testing.h"
#include "test.h"

extern "C" {
#include "../common/half.h"
#include "../common/util.h"
#include "../train/lora.h"
}

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const double u = 0x1p-8, e24 = 0x1p-24;

// bf16 values: bits on the device, floats on the host.
struct Bf16 {
    __nv_bfloat16 *dev;
    float *host;
    size_t n;
};

static Bf16 bf16_random(size_t n, double lo, double hi, uint64_t *rng) {
    Bf16 b;
    b.n = n;
    b.host = (float *)xmalloc((n ? n : 1) * sizeof(float));
    uint16_t *bits = (uint16_t *)xmalloc((n ? n : 1) * 2);
    for (size_t i = 0; i < n; i++) {
        bits[i] = f32_to_bf16((float)(lo + (hi - lo) * rng_uniform(rng)));
        b.host[i] = bf16_to_f32(bits[i]);
    }
    cuda_check(cudaMalloc(&b.dev, (n ? n : 1) * 2));
    cuda_check(cudaMemcpy(b.dev, bits, n * 2, cudaMemcpyHostToDevice));
    free(bits);
    return b;
}

static float *bf16_read(const __nv_bfloat16 *dev, size_t n) {
    uint16_t *bits = (uint16_t *)xmalloc((n ? n : 1) * 2);
    float *f = (float *)xmalloc((n ? n : 1) * sizeof(float));
    cuda_check(cudaMemcpy(bits, dev, n * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) f[i] = bf16_to_f32(bits[i]);
    free(bits);
    return f;
}

static float *f32_read(const float *dev, size_t n) {
    float *f = (float *)xmalloc((n ? n : 1) * sizeof(float));
    cuda_check(cudaMemcpy(f, dev, n * sizeof(float), cudaMemcpyDeviceToHost));
    return f;
}

static float *f32_upload(const float *host, size_t n) {
    float *d;
    cuda_check(cudaMalloc(&d, (n ? n : 1) * sizeof(float)));
    cuda_check(cudaMemcpy(d, host, n * sizeof(float), cudaMemcpyHostToDevice));
    return d;
}

static double worst;

// Counts the elements of got outside ref ± tol, printing the first few.
static int within(const char *what, const float *got, const double *ref, const double *tol, size_t n) {
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]);
        if (tol[i] > 0 && e / tol[i] > worst) worst = e / tol[i];
        if (!(e <= tol[i]) && bad++ < 3) printf("  %s[%zu]: gpu %.8g, cpu %.8g, bound %.3g\n", what, i, got[i], ref[i], tol[i]);
    }
    return bad;
}

// ---------------------------------------------------------------------------------------
// 1. The dropout generator

TEST(dropout_mask_is_the_cpu_generators) {
    const size_t n = 20000;
    float *mask = (float *)xmalloc(n * sizeof(float));
    for (float p : {0.05f, 0.1f, 0.5f, 0.9f}) {
        uint64_t state = 12345, start = state;
        lora_dropout_mask(mask, n, p, &state);
        CHECK(state == lora_dropout_advance(start, n));
        uint64_t threshold = lora_dropout_threshold(p);
        size_t differ = 0;
        for (size_t i = 0; i < n; i++) differ += lora_kept(start, (int64_t)i, threshold) != (mask[i] != 0.0f);
        CHECK(differ == 0);
    }
    free(mask);
}

// ---------------------------------------------------------------------------------------
// 2. Forward and backward against train/lora.c

struct GroupShape {
    const char *name;
    int P, in, out[3];
};
static const GroupShape kGroups[] = {
    {"q,k,v", 3, 48, {48, 24, 24}}, {"o", 1, 48, {48}}, {"gate,up", 2, 48, {96, 96}}, {"down", 1, 96, {48}}};

// One run's device tensors.
struct Run {
    LoraGroup g;
    Bf16 x, y[3], dy[3], dx;
    __nv_bfloat16 *u[3], *Ab[3], *Bb[3];
    float *A[3], *B[3];  // fp32 masters on the device (the cast's sources)
    LoraScratch s;
};

// Result readback of a run: U, G ([M, P·r], projection p's r columns at p·r), Y_p, dX (as
// floats), dA_p, dB_p.
struct Out {
    float *u, *g, *y[3], *dx, *dA[3], *dB[3];
};

static Out run_read(const Run &r, int M) {
    Out o;
    int R = r.g.P * r.g.r;
    o.u = (float *)xmalloc((size_t)M * R * sizeof(float));
    o.g = (float *)xmalloc((size_t)M * R * sizeof(float));
    for (int p = 0; p < r.g.P; p++) {  // [M, r] each, one after another for G
        float *u = bf16_read(r.u[p], (size_t)M * r.g.r), *g = bf16_read(r.s.g + (size_t)p * M * r.g.r, (size_t)M * r.g.r);
        for (int m = 0; m < M; m++)
            for (int j = 0; j < r.g.r; j++) {
                o.u[(size_t)m * R + p * r.g.r + j] = u[(size_t)m * r.g.r + j];
                o.g[(size_t)m * R + p * r.g.r + j] = g[(size_t)m * r.g.r + j];
            }
        free(u), free(g);
    }
    o.dx = bf16_read(r.dx.dev, (size_t)M * r.g.in);
    for (int p = 0; p < r.g.P; p++) {
        o.y[p] = bf16_read(r.y[p].dev, (size_t)M * r.g.out[p]);
        o.dA[p] = f32_read(r.g.dA[p], (size_t)r.g.r * r.g.in);
        o.dB[p] = f32_read(r.g.dB[p], (size_t)r.g.out[p] * r.g.r);
    }
    return o;
}

static void out_free(Out *o, int P) {
    free(o->u), free(o->g), free(o->dx);
    for (int p = 0; p < P; p++) free(o->y[p]), free(o->dA[p]), free(o->dB[p]);
}

// Host data of a configuration: fp32 masters, X, base outputs, dY, dX0, dA0, dB0.
struct Data {
    float *A[3], *B[3], *dA0[3], *dB0[3];
    uint64_t state[3];  // the generator before each projection's mask
};

// Sets up a run on the device from the host data; the bf16 copies of the masters come from
// lora_cast. small: ranges small enough that every reduction is split.
static Run run_make(const GroupShape &gs, int r, int M, float dropout, const Data &d, Bf16 x, Bf16 *y, Bf16 *dy,
                    Bf16 dx, int small) {
    Run run;
    LoraGroup &g = run.g;
    memset(&g, 0, sizeof(g));
    g.P = gs.P, g.in = gs.in, g.r = r, g.scale = lora_scaling(16.0f, r, 0), g.dropout = dropout;
    run.x = x, run.dx = dx;
    for (int p = 0; p < gs.P; p++) {
        g.out[p] = gs.out[p];
        g.dropout_state[p] = d.state[p];
        run.y[p] = y[p], run.dy[p] = dy[p];
        size_t na = (size_t)r * gs.in, nb = (size_t)gs.out[p] * r;
        run.A[p] = f32_upload(d.A[p], na), run.B[p] = f32_upload(d.B[p], nb);
        cuda_check(cudaMalloc(&run.Ab[p], na * 2));
        cuda_check(cudaMalloc(&run.Bb[p], nb * 2));
        lora_cast(run.Ab[p], run.A[p], (int64_t)na, 0);
        lora_cast(run.Bb[p], run.B[p], (int64_t)nb, 0);
        g.A[p] = run.Ab[p], g.B[p] = run.Bb[p];
        g.dA[p] = f32_upload(d.dA0[p], na), g.dB[p] = f32_upload(d.dB0[p], nb);
    }
    size_t R = (size_t)gs.P * r;
    for (int p = 0; p < gs.P; p++) cuda_check(cudaMalloc(&run.u[p], (size_t)M * r * 2));
    run.s.chunk_rows = small ? 64 : LORA_CHUNK_ROWS;
    run.s.split_cols = small ? 32 : LORA_SPLIT_COLS;
    run.s.g_capacity = M * R;
    run.s.partial_capacity = lora_scratch_floats(&g, M, run.s.chunk_rows, run.s.split_cols);
    cuda_check(cudaMalloc(&run.s.g, M * R * 2));
    cuda_check(cudaMalloc(&run.s.partials, (run.s.partial_capacity ? run.s.partial_capacity : 1) * sizeof(float)));
    return run;
}

static void run_go(Run &run, int M) {
    __nv_bfloat16 *y[3] = {run.y[0].dev, run.y[1].dev, run.y[2].dev};
    const __nv_bfloat16 *dy[3] = {run.dy[0].dev, run.dy[1].dev, run.dy[2].dev};
    const __nv_bfloat16 *u[3] = {run.u[0], run.u[1], run.u[2]};
    lora_forward(&run.g, run.x.dev, M, run.u, y, &run.s, 0);
    lora_backward(&run.g, run.x.dev, u, dy, M, &run.s, 0);
    lora_backward_dx(&run.g, M, run.dx.dev, &run.s, 0);
}

static void run_free(Run &run) {
    for (int p = 0; p < run.g.P; p++) {
        cuda_check(cudaFree(run.A[p])), cuda_check(cudaFree(run.B[p])), cuda_check(cudaFree(run.Ab[p]));
        cuda_check(cudaFree(run.Bb[p])), cuda_check(cudaFree(run.g.dA[p])), cuda_check(cudaFree(run.g.dB[p]));
        cuda_check(cudaFree(run.u[p]));
    }
    cuda_check(cudaFree(run.s.g)), cuda_check(cudaFree(run.s.partials));
}

static void bf16_free(Bf16 *b) {
    cuda_check(cudaFree(b->dev));
    free(b->host);
}

// The device copy of base values (the GPU adds into them in place).
static Bf16 bf16_clone(const Bf16 &b) {
    Bf16 c = b;
    c.host = (float *)xmalloc((b.n ? b.n : 1) * sizeof(float));
    memcpy(c.host, b.host, b.n * sizeof(float));
    cuda_check(cudaMalloc(&c.dev, (b.n ? b.n : 1) * 2));
    cuda_check(cudaMemcpy(c.dev, b.dev, b.n * 2, cudaMemcpyDeviceToDevice));
    return c;
}

// Each kernel against the model with the GPU's roundings (see the top). Returns the number
// of elements outside the tight bounds; counts the bf16 outputs equal to the rounded model.
static size_t model_outputs, model_alike;

static int tight(const char *what, float got, double model, double tol, bool bf16_out) {
    double e = fabs((double)got - model);
    if (bf16_out) model_outputs++, model_alike += f32_to_bf16(got) == f32_to_bf16((float)model);
    if (!(e <= tol)) {
        printf("  %s: gpu %.8g, model %.8g, bound %.3g\n", what, got, model, tol);
        return 1;
    }
    return 0;
}

static int check_model(const GroupShape &gs, int r, int M, const Out &o, const Data &d, const Bf16 &x, const Bf16 *y,
                       const Bf16 *dy, const Bf16 &dx, float *const mask[3]) {
    const int P = gs.P, in = gs.in, R = P * r;
    const float s = lora_scaling(16.0f, r, 0);
    int bad = 0;
    double *dx_model = (double *)xcalloc((size_t)M * in, 8), *dx_mag = (double *)xcalloc((size_t)M * in, 8);
    for (int p = 0; p < P && bad < 3; p++) {
        int out = gs.out[p];
        size_t na = (size_t)r * in, nb = (size_t)out * r, nx = (size_t)M * in;
        float *Ab = (float *)xmalloc(na * 4), *Bb = (float *)xmalloc(nb * 4), *xd = (float *)xmalloc(nx * 4);
        for (size_t i = 0; i < na; i++) Ab[i] = bf16_to_f32(f32_to_bf16(d.A[p][i]));
        for (size_t i = 0; i < nb; i++) Bb[i] = bf16_to_f32(f32_to_bf16(d.B[p][i]));
        for (size_t i = 0; i < nx; i++) xd[i] = mask[p] ? bf16_to_f32(f32_to_bf16(x.host[i] * mask[p][i])) : x.host[i];
        for (int m = 0; m < M && bad < 3; m++)
            for (int j = 0; j < r; j++) {
                double um = 0, umag = 0, gm = 0, gmag = 0;
                for (int k = 0; k < in; k++) {
                    double t = (double)xd[(size_t)m * in + k] * Ab[(size_t)j * in + k];
                    um += t, umag += fabs(t);
                }
                for (int n = 0; n < out; n++) {
                    double t = (double)dy[p].host[(size_t)m * out + n] * Bb[(size_t)n * r + j];
                    gm += t, gmag += fabs(t);
                }
                size_t at = (size_t)m * R + p * r + j;
                bad += tight("U", o.u[at], um, u * fabs(um) + (1 + u) * 4.0 * (in + 2) * e24 * umag, true);
                bad += tight("G", o.g[at], s * gm, u * fabs(s * gm) + (1 + u) * 4.0 * (out + 2) * e24 * s * gmag, true);
            }
        for (int m = 0; m < M && bad < 3; m++)
            for (int n = 0; n < out; n++) {
                double y0 = y[p].host[(size_t)m * out + n], sum = 0, mag = 0;
                for (int j = 0; j < r; j++) {
                    double t = (double)o.u[(size_t)m * R + p * r + j] * Bb[(size_t)n * r + j];
                    sum += t, mag += fabs(t);
                }
                double ym = y0 + s * sum;
                bad += tight("Y", o.y[p][(size_t)m * out + n], ym,
                             u * fabs(ym) + (1 + u) * 4.0 * (r + 2) * e24 * (fabs(y0) + s * mag), true);
            }
        for (int n = 0; n < out && bad < 3; n++)
            for (int j = 0; j < r; j++) {
                double sum = 0, mag = 0;
                for (int m = 0; m < M; m++) {
                    double t = (double)dy[p].host[(size_t)m * out + n] * o.u[(size_t)m * R + p * r + j];
                    sum += t, mag += fabs(t);
                }
                double b0 = d.dB0[p][(size_t)n * r + j];
                bad += tight("dB", o.dB[p][(size_t)n * r + j], b0 + s * sum,
                             4.0 * (M + 2) * e24 * (fabs(b0) + s * mag), false);
            }
        for (int j = 0; j < r && bad < 3; j++)
            for (int k = 0; k < in; k++) {
                double sum = 0, mag = 0;
                for (int m = 0; m < M; m++) {
                    double t = (double)o.g[(size_t)m * R + p * r + j] * xd[(size_t)m * in + k];
                    sum += t, mag += fabs(t);
                }
                double a0 = d.dA0[p][(size_t)j * in + k];
                bad += tight("dA", o.dA[p][(size_t)j * in + k], a0 + sum, 4.0 * (M + 2) * e24 * (fabs(a0) + mag), false);
            }
        for (int m = 0; m < M; m++)
            for (int k = 0; k < in; k++) {
                double keep = mask[p] ? mask[p][(size_t)m * in + k] : 1.0, sum = 0, mag = 0;
                for (int j = 0; j < r; j++) {
                    double t = (double)o.g[(size_t)m * R + p * r + j] * Ab[(size_t)j * in + k];
                    sum += t, mag += fabs(t);
                }
                dx_model[(size_t)m * in + k] += keep * sum, dx_mag[(size_t)m * in + k] += keep * mag;
            }
        free(Ab), free(Bb), free(xd);
    }
    for (size_t i = 0; i < (size_t)M * in && bad < 3; i++) {
        double d0 = dx.host[i], xm = d0 + dx_model[i];
        bad += tight("dX", o.dx[i], xm, u * fabs(xm) + (1 + u) * 4.0 * (R + 2) * e24 * (fabs(d0) + dx_mag[i]), true);
    }
    free(dx_model), free(dx_mag);
    return bad;
}

// One configuration; returns the number of elements outside their bounds.
static int check_config(const GroupShape &gs, int r, int M, float dropout, int small, uint64_t seed) {
    uint64_t rng = seed;
    const int P = gs.P, in = gs.in, R = P * r;
    const float s = lora_scaling(16.0f, r, 0);
    Data d;
    Bf16 x = bf16_random((size_t)M * in, -1, 1, &rng), dx = bf16_random((size_t)M * in, -0.5, 0.5, &rng);
    Bf16 y[3], dy[3];
    uint64_t state = rng_next(&rng);
    float *mask[3] = {NULL, NULL, NULL};
    for (int p = 0; p < P; p++) {
        size_t na = (size_t)r * in, nb = (size_t)gs.out[p] * r;
        d.A[p] = (float *)xmalloc(na * 4), d.B[p] = (float *)xmalloc(nb * 4);
        d.dA0[p] = (float *)xmalloc(na * 4), d.dB0[p] = (float *)xmalloc(nb * 4);
        lora_init(d.A[p], d.B[p], r, in, gs.out[p], &rng);
        for (size_t i = 0; i < nb; i++) d.B[p][i] = (float)(0.2 * (2 * rng_uniform(&rng) - 1));  // B = 0 hides dA
        for (size_t i = 0; i < na; i++) d.dA0[p][i] = (float)(0.1 * (2 * rng_uniform(&rng) - 1));
        for (size_t i = 0; i < nb; i++) d.dB0[p][i] = (float)(0.1 * (2 * rng_uniform(&rng) - 1));
        y[p] = bf16_random((size_t)M * gs.out[p], -1, 1, &rng);
        dy[p] = bf16_random((size_t)M * gs.out[p], -1, 1, &rng);
        d.state[p] = state;
        if (dropout > 0) {
            mask[p] = (float *)xmalloc((size_t)M * in * 4);
            lora_dropout_mask(mask[p], (size_t)M * in, dropout, &state);  // the CPU path's order
        }
    }
    Bf16 yg[3], dxg = bf16_clone(dx);
    for (int p = 0; p < P; p++) yg[p] = bf16_clone(y[p]);
    Run run = run_make(gs, r, M, dropout, d, x, yg, dy, dxg, small);
    run_go(run, M);
    Out o = run_read(run, M);

    // the reference (train/lora.c), and the bounds from the magnitudes
    int bad = 0;
    size_t nx = (size_t)M * in;
    float *dx_ref = (float *)xmalloc(nx * 4), *xd = (float *)xmalloc(nx * 4);
    memcpy(dx_ref, dx.host, nx * 4);
    double *ru = (double *)xmalloc((size_t)M * R * 8), *eu = (double *)xmalloc((size_t)M * R * 8);
    double *rg = (double *)xmalloc((size_t)M * R * 8), *eg = (double *)xmalloc((size_t)M * R * 8);
    double *rx = (double *)xmalloc(nx * 8), *ex = (double *)xmalloc(nx * 8), *ax = (double *)xmalloc(nx * 8);
    for (size_t i = 0; i < nx; i++) rx[i] = dx.host[i], ax[i] = fabs(dx.host[i]), ex[i] = 0;
    for (int p = 0; p < P; p++) {
        int out = gs.out[p];
        size_t ny = (size_t)M * out, na = (size_t)r * in, nb = (size_t)out * r;
        float *y_ref = (float *)xmalloc(ny * 4), *u_ref = (float *)xmalloc((size_t)M * r * 4);
        float *dA = (float *)xmalloc(na * 4), *dB = (float *)xmalloc(nb * 4);
        memcpy(y_ref, y[p].host, ny * 4);
        memcpy(dA, d.dA0[p], na * 4), memcpy(dB, d.dB0[p], nb * 4);
        lora_forward(x.host, mask[p], d.A[p], d.B[p], y_ref, u_ref, xd, M, in, r, out, s);
        const float *xin = mask[p] ? xd : x.host;
        lora_backward(dy[p].host, xin, u_ref, mask[p], d.A[p], d.B[p], dA, dB, dx_ref, M, in, r, out, s);
        // U
        for (int m = 0; m < M; m++)
            for (int j = 0; j < r; j++) {
                double mag = 0;
                for (int k = 0; k < in; k++) mag += fabs((double)xin[(size_t)m * in + k] * d.A[p][(size_t)j * in + k]);
                size_t at = (size_t)m * R + p * r + j;
                ru[at] = u_ref[(size_t)m * r + j];
                eu[at] = u * fabs(ru[at]) + (1 + u) * (2 * u + u * u + (4.0 * (in + 2) + in) * e24) * mag;
            }
        // G = s·dY·B (not an output of train/lora.c: computed here in double)
        for (int m = 0; m < M; m++)
            for (int j = 0; j < r; j++) {
                double sum = 0, mag = 0;
                for (int n = 0; n < out; n++) {
                    double t = (double)dy[p].host[(size_t)m * out + n] * d.B[p][(size_t)n * r + j];
                    sum += t, mag += fabs(t);
                }
                size_t at = (size_t)m * R + p * r + j;
                rg[at] = s * sum;
                eg[at] = u * fabs(rg[at]) + (1 + u) * (u + 4.0 * (out + 2) * e24) * s * mag;
            }
        // Y_p
        double *rv = (double *)xmalloc(ny * 8), *ev = (double *)xmalloc(ny * 8);
        for (int m = 0; m < M; m++)
            for (int n = 0; n < out; n++) {
                double lin = 0, mag = 0;
                for (int j = 0; j < r; j++) {
                    size_t at = (size_t)m * R + p * r + j;
                    double b = fabs(d.B[p][(size_t)n * r + j]);
                    lin += (eu[at] * (1 + u) + u * fabs(ru[at])) * b;
                    mag += (fabs(ru[at]) + eu[at]) * b;
                }
                size_t at = (size_t)m * out + n;
                rv[at] = y_ref[at];
                ev[at] = u * fabs(rv[at]) +
                         (1 + u) * (s * lin + (4.0 * (r + 2) + r) * e24 * (fabs(y[p].host[at]) + s * mag));
            }
        bad += within("Y", o.y[p], rv, ev, ny);
        free(rv), free(ev);
        // dB_p
        double *rb = (double *)xmalloc(nb * 8), *ebd = (double *)xmalloc(nb * 8);
        for (int n = 0; n < out; n++)
            for (int j = 0; j < r; j++) {
                double lin = 0, mag = 0;
                for (int m = 0; m < M; m++) {
                    size_t at = (size_t)m * R + p * r + j;
                    double t = fabs(dy[p].host[(size_t)m * out + n]);
                    lin += t * eu[at], mag += t * (fabs(ru[at]) + eu[at]);
                }
                size_t at = (size_t)n * r + j;
                rb[at] = dB[at];
                ebd[at] = s * lin + (4.0 * (M + 2) + M + 2) * e24 * (fabs(d.dB0[p][at]) + s * mag);
            }
        bad += within("dB", o.dB[p], rb, ebd, nb);
        free(rb), free(ebd);
        // dA_p
        double *ra = (double *)xmalloc(na * 8), *ead = (double *)xmalloc(na * 8);
        for (int j = 0; j < r; j++)
            for (int k = 0; k < in; k++) {
                double lin = 0, mag = 0;
                for (int m = 0; m < M; m++) {
                    size_t at = (size_t)m * R + p * r + j;
                    double xv = fabs(xin[(size_t)m * in + k]);
                    lin += (eg[at] * (1 + u) + u * fabs(rg[at])) * xv, mag += (fabs(rg[at]) + eg[at]) * xv;
                }
                size_t at = (size_t)j * in + k;
                ra[at] = dA[at];
                ead[at] = lin + (4.0 * (M + 2) + M + 2) * e24 * (fabs(d.dA0[p][at]) + mag);
            }
        bad += within("dA", o.dA[p], ra, ead, na);
        free(ra), free(ead);
        // dX: this projection's terms of the bound
        for (int m = 0; m < M; m++)
            for (int k = 0; k < in; k++) {
                double keep = mask[p] ? mask[p][(size_t)m * in + k] : 1.0, lin = 0, mag = 0;
                for (int j = 0; j < r; j++) {
                    size_t at = (size_t)m * R + p * r + j;
                    double a = fabs(d.A[p][(size_t)j * in + k]);
                    lin += (eg[at] * (1 + u) + u * fabs(rg[at])) * a, mag += (fabs(rg[at]) + eg[at]) * a;
                }
                ex[(size_t)m * in + k] += keep * lin, ax[(size_t)m * in + k] += keep * mag;
            }
        free(y_ref), free(u_ref), free(dA), free(dB);
    }
    bad += within("U", o.u, ru, eu, (size_t)M * R);
    bad += within("G", o.g, rg, eg, (size_t)M * R);
    for (size_t i = 0; i < nx; i++) {
        rx[i] = dx_ref[i];
        ex[i] = u * fabs(rx[i]) + (1 + u) * (ex[i] + (4.0 * (R + 2) + R + 2) * e24 * ax[i]);
    }
    bad += within("dX", o.dx, rx, ex, nx);
    bad += check_model(gs, r, M, o, d, x, y, dy, dx, mask);
    if (bad)
        printf("  (%s, r %d, M %d, dropout %g, %s ranges)\n", gs.name, r, M, dropout, small ? "small" : "default");

    out_free(&o, P);
    run_free(run);
    free(dx_ref), free(xd), free(ru), free(eu), free(rg), free(eg), free(rx), free(ex), free(ax);
    bf16_free(&x), bf16_free(&dx), bf16_free(&dxg);
    for (int p = 0; p < P; p++) {
        bf16_free(&y[p]), bf16_free(&yg[p]), bf16_free(&dy[p]);
        free(d.A[p]), free(d.B[p]), free(d.dA0[p]), free(d.dB0[p]), free(mask[p]);
    }
    return bad;
}

TEST(forward_backward_match_cpu_reference) {
    const int ranks[] = {1, 8, 16, 64}, Ms[] = {1, 17, 300};
    int config = 0;
    worst = 0;
    model_outputs = model_alike = 0;
    for (const GroupShape &gs : kGroups)
        for (int r : ranks)
            for (int M : Ms)
                for (float dropout : {0.0f, 0.1f}) {
                    config++;
                    CHECK_INT(check_config(gs, r, M, dropout, config % 2, 1000 + config), 0);
                }
    printf("  %d configurations, worst error / bound %.3f; %zu of %zu bf16 outputs equal the model rounded\n", config,
           worst, model_alike, model_outputs);
    CHECK(model_alike >= model_outputs * 97 / 100);
}

TEST(forward_without_y_writes_only_u) {
    const GroupShape &gs = kGroups[0];
    const int r = 16, M = 70;
    uint64_t rng = 31;
    Data d;
    Bf16 x = bf16_random((size_t)M * gs.in, -1, 1, &rng), y[3];
    for (int p = 0; p < gs.P; p++) {
        d.A[p] = (float *)xmalloc((size_t)r * gs.in * 4), d.B[p] = (float *)xmalloc((size_t)gs.out[p] * r * 4);
        d.dA0[p] = (float *)xcalloc((size_t)r * gs.in, 4), d.dB0[p] = (float *)xcalloc((size_t)gs.out[p] * r, 4);
        lora_init(d.A[p], d.B[p], r, gs.in, gs.out[p], &rng);
        for (int i = 0; i < gs.out[p] * r; i++) d.B[p][i] = (float)(2 * rng_uniform(&rng) - 1);
        y[p] = bf16_random((size_t)M * gs.out[p], -1, 1, &rng);
        d.state[p] = 5;
    }
    Bf16 dx = bf16_random(1, 0, 0, &rng);
    Run run = run_make(gs, r, M, 0.0f, d, x, y, y, dx, 1);
    __nv_bfloat16 *some[3] = {NULL, y[1].dev, NULL}, *all[3] = {y[0].dev, y[1].dev, y[2].dev}, *u2[3];
    lora_forward(&run.g, x.dev, M, run.u, some, &run.s, 0);
    for (int p = 0; p < gs.P; p++) {  // Y_1 took the branch, Y_0 and Y_2 are as they were
        float *yp = bf16_read(y[p].dev, (size_t)M * gs.out[p]);
        CHECK((memcmp(yp, y[p].host, (size_t)M * gs.out[p] * 4) == 0) == (p != 1));
        free(yp);
        cuda_check(cudaMalloc(&u2[p], (size_t)M * r * 2));
    }
    lora_forward(&run.g, x.dev, M, u2, all, &run.s, 0);  // the same U with every Y
    for (int p = 0; p < gs.P; p++) {
        float *a = bf16_read(run.u[p], (size_t)M * r), *b = bf16_read(u2[p], (size_t)M * r);
        CHECK(memcmp(a, b, (size_t)M * r * 4) == 0);
        free(a), free(b);
        cuda_check(cudaFree(u2[p]));
    }
    run_free(run);
    bf16_free(&x), bf16_free(&dx);
    for (int p = 0; p < gs.P; p++) {
        bf16_free(&y[p]);
        free(d.A[p]), free(d.B[p]), free(d.dA0[p]), free(d.dB0[p]);
    }
}

// ---------------------------------------------------------------------------------------
// 3. Determinism

TEST(two_runs_give_the_same_bits) {
    const uint64_t saved_seed = cuda_host_seed();
    const GroupShape &gs = kGroups[0];
    const int r = 8, M = 150;
    uint64_t rng = 77;
    Data d;
    Bf16 x = bf16_random((size_t)M * gs.in, -1, 1, &rng), y[3], dy[3], yg[3];
    for (int p = 0; p < gs.P; p++) {
        size_t na = (size_t)r * gs.in, nb = (size_t)gs.out[p] * r;
        d.A[p] = (float *)xmalloc(na * 4), d.B[p] = (float *)xmalloc(nb * 4);
        d.dA0[p] = (float *)xcalloc(na, 4), d.dB0[p] = (float *)xcalloc(nb, 4);
        lora_init(d.A[p], d.B[p], r, gs.in, gs.out[p], &rng);
        for (size_t i = 0; i < nb; i++) d.B[p][i] = (float)(2 * rng_uniform(&rng) - 1);
        y[p] = bf16_random((size_t)M * gs.out[p], -1, 1, &rng), dy[p] = bf16_random((size_t)M * gs.out[p], -1, 1, &rng);
        d.state[p] = lora_dropout_advance(99, (uint64_t)p * M * gs.in);
    }
    Bf16 dx = bf16_random((size_t)M * gs.in, -1, 1, &rng);
    Out first = {};
    for (int k = 0; k < 3; k++) {
        cuda_host_set_seed((uint64_t)k * 104729 + 3);
        for (int p = 0; p < gs.P; p++) yg[p] = bf16_clone(y[p]);
        Bf16 dxg = bf16_clone(dx);
        Run run = run_make(gs, r, M, 0.1f, d, x, yg, dy, dxg, 1);
        run_go(run, M);
        Out o = run_read(run, M);
        if (k == 0) {
            first = o;
        } else {
            size_t R = (size_t)gs.P * r;
            CHECK(memcmp(first.u, o.u, M * R * 4) == 0);
            CHECK(memcmp(first.dx, o.dx, (size_t)M * gs.in * 4) == 0);
            for (int p = 0; p < gs.P; p++) {
                CHECK(memcmp(first.dA[p], o.dA[p], (size_t)r * gs.in * 4) == 0);
                CHECK(memcmp(first.dB[p], o.dB[p], (size_t)gs.out[p] * r * 4) == 0);
                CHECK(memcmp(first.y[p], o.y[p], (size_t)M * gs.out[p] * 4) == 0);
            }
            out_free(&o, gs.P);
        }
        run_free(run);
        for (int p = 0; p < gs.P; p++) bf16_free(&yg[p]);
        bf16_free(&dxg);
    }
    out_free(&first, gs.P);
    cuda_host_set_seed(saved_seed);
    bf16_free(&x), bf16_free(&dx);
    for (int p = 0; p < gs.P; p++) {
        bf16_free(&y[p]), bf16_free(&dy[p]);
        free(d.A[p]), free(d.B[p]), free(d.dA0[p]), free(d.dB0[p]);
    }
}

// ---------------------------------------------------------------------------------------
// 4. The cast

TEST(cast_rounds_like_half_h) {
    const int64_t n = 1000 + 5;  // a misaligned tail of 5 after whole packs of 8
    uint64_t rng = 8;
    float *src = (float *)xmalloc(n * 4);
    for (int64_t i = 0; i < n; i++) {
        switch (i % 6) {
            case 0: src[i] = (float)(2 * rng_uniform(&rng) - 1); break;
            case 1: src[i] = bf16_to_f32((uint16_t)rng_below(&rng, 0x7f00)) * (1 + 0x1p-8f); break;  // a tie
            case 2: src[i] = (float)(rng_uniform(&rng) * 3e38); break;                                // may overflow
            case 3: src[i] = (float)((rng_uniform(&rng) - 0.5) * 1e-39); break;                       // denormal
            case 4: src[i] = -(float)(rng_uniform(&rng) * 1e4); break;
            default: src[i] = 0.0f; break;
        }
    }
    float *dsrc = f32_upload(src, n);
    __nv_bfloat16 *dst;
    cuda_check(cudaMalloc(&dst, (n + 1) * 2));
    for (int offset = 0; offset < 2; offset++) {  // 16-byte packs, then value by value
        lora_cast(dst + offset, dsrc, n, 0);
        uint16_t *got = (uint16_t *)xmalloc(n * 2);
        cuda_check(cudaMemcpy(got, dst + offset, n * 2, cudaMemcpyDeviceToHost));
        int64_t differ = 0;
        for (int64_t i = 0; i < n; i++) differ += got[i] != f32_to_bf16(src[i]);
        CHECK(differ == 0);
        free(got);
    }
    free(src);
    cuda_check(cudaFree(dsrc)), cuda_check(cudaFree(dst));
}

// ---------------------------------------------------------------------------------------
// 5. Refusals

TEST(refuses_bad_rank_and_small_scratch) {
    char report[512];
    int status = run_in_child(
        [] {
            static LoraGroup g;
            g.P = 1, g.in = 8, g.r = 65, g.out[0] = 8;
            lora_forward(&g, NULL, 4, NULL, NULL, NULL, 0);
        },
        report, sizeof(report));
    CHECK_INT(status, 1);
    CHECK(strstr(report, "rank must be 1..64") != NULL);
    status = run_in_child(
        [] {
            static LoraGroup g;
            static LoraScratch s;
            g.P = 1, g.in = 8, g.r = 4, g.out[0] = 8;
            s.chunk_rows = 64, s.split_cols = 64, s.g_capacity = 1000;
            cuda_check(cudaMalloc(&s.g, 2000));
            static const __nv_bfloat16 *none[1] = {NULL};
            lora_backward(&g, NULL, none, none, 300, &s, 0);
        },
        report, sizeof(report));
    CHECK_INT(status, 1);
    CHECK(strstr(report, "scratch") != NULL);
}

int main(void) {
    RUN(dropout_mask_is_the_cpu_generators);
    RUN(forward_backward_match_cpu_reference);
    RUN(forward_without_y_writes_only_u);
    RUN(two_runs_give_the_same_bits);
    RUN(cast_rounds_like_half_h);
    RUN(refuses_bad_rank_and_small_scratch);
    return test_summary();
}
