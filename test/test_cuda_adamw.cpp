// test_cuda_adamw.cpp: the AdamW and global-gradient-norm kernels (kernels/adamw.cuh) in the
// CUDA-on-CPU harness.
//
// 1. AdamW against train/adamw.c (tested against torch.optim.AdamW by test_optim) over 10
//    steps with a changing learning rate, weight decay and, on some steps, clipping, at
//    awkward lengths (1, 3, not a multiple of the 4-float pack, misaligned pointers, a
//    length spanning many blocks), within adamw_tolerance (kernels/adamw.cuh: what FMA
//    contraction on a GPU can change, 8·t·u·(|p| + 8·Σ lr)); the number of bit-identical
//    results is printed (all of them where the host compiler does not contract).
// 2. AdamW against PyTorch directly: test/fixtures/optim.safetensors (scripts/
//    optim_fixtures.py, torch 2.15.0), 37 parameters over 10 torch.optim.AdamW steps, within
//    the same tolerance.
// 3. The squared global norm against a double-precision sum written here, over tensor lists
//    with empty tensors, tensors straddling the blocks' slices, fewer elements than blocks,
//    and a scaled-down LoRA layout, within 32u relative (kernels/adamw.cuh); and clipping
//    end to end (kernel norm -> scale -> kernel AdamW) against train/adamw.c's grad_clip +
//    adamw_step.
// 4. The same bits under different harness schedules (thread and block orders).
#include "../kernels/adamw.cuh"
#include "cuda_host/cuda_host_testing.h"
#include "test.h"

extern "C" {
#include "../common/half.h"
#include "../common/util.h"
#include "../train/adamw.h"
#include "../train/safetensors.h"
}

#include <math.h>
#include <stdlib.h>

static const AdamWConfig kConfig = {0.9f, 0.999f, 1e-8f, 0.1f};

static float *device_copy(const float *host, size_t n, int offset) {
    float *base;
    cuda_check(cudaMalloc(&base, (n + (size_t)offset) * sizeof(float)));
    cuda_check(cudaMemcpy(base + offset, host, n * sizeof(float), cudaMemcpyHostToDevice));
    return base;
}

static void random_fill(float *x, size_t n, uint64_t *rng, double scale) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(scale * (2 * rng_uniform(rng) - 1));
}

// ---------------------------------------------------------------------------------------
// 1. AdamW against train/adamw.c

// Both sides over `steps` steps from the same start, the reference clipping its (copied)
// gradients with grad_clip and the kernel receiving the same factor as grad_scale. Returns
// the number of elements outside the tolerance; adds the identical ones to *same.
static int adamw_against_reference(size_t n, int offset, int steps, float max_norm, uint64_t seed, size_t *same,
                                   double *worst) {
    uint64_t rng = seed;
    float *p = (float *)xmalloc(n * sizeof(float)), *m = (float *)xcalloc(n, sizeof(float));
    float *v = (float *)xcalloc(n, sizeof(float)), *g = (float *)xmalloc(n * sizeof(float));
    float *got = (float *)xmalloc(n * sizeof(float));
    random_fill(p, n, &rng, 1.0);
    float *dp = device_copy(p, n, offset), *dm = device_copy(m, n, offset), *dv = device_copy(v, n, offset);
    float *dg;
    cuda_check(cudaMalloc(&dg, (n + (size_t)offset) * sizeof(float)));
    int bad = 0;
    double lr_sum = 0;
    for (int step = 1; step <= steps; step++) {
        // gradients of varying size, one step with a spike far above the history
        random_fill(g, n, &rng, step == 4 ? 20.0 : 0.5 + 0.1 * step);
        cuda_check(cudaMemcpy(dg + offset, g, n * sizeof(float), cudaMemcpyHostToDevice));
        float lr = 1e-3f * (1.0f - 0.05f * (float)step);  // a decaying schedule
        lr_sum += lr;
        float scale = 1.0f;
        if (max_norm > 0) {
            float *parts[1] = {g};
            size_t sizes[1] = {n};
            scale = grad_clip_scale(grad_clip(parts, sizes, 1, max_norm), max_norm);
        }
        adamw_step(p, g, m, v, n, step, lr, &kConfig);
        adamw_update(dp + offset, dg + offset, dm + offset, dv + offset, n, step, lr, kConfig.beta1, kConfig.beta2,
                     kConfig.eps, kConfig.weight_decay, scale, 0);
        cuda_check(cudaMemcpy(got, dp + offset, n * sizeof(float), cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < n; i++) {
            double e = fabs((double)got[i] - p[i]), tol = adamw_tolerance(p[i], step, lr_sum);
            if (e / tol > *worst) *worst = e / tol;
            if (!(e <= tol) && bad++ < 3)
                printf("  n=%zu step %d [%zu]: kernel %.9g, reference %.9g, tolerance %.3g\n", n, step, i, got[i], p[i],
                       tol);
            if (step == steps) *same += got[i] == p[i];
        }
    }
    // the moments too, at the end
    float *gm = (float *)xmalloc(n * sizeof(float)), *gv = (float *)xmalloc(n * sizeof(float));
    cuda_check(cudaMemcpy(gm, dm + offset, n * sizeof(float), cudaMemcpyDeviceToHost));
    cuda_check(cudaMemcpy(gv, dv + offset, n * sizeof(float), cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) {
        // m, v: a few roundings of their own size per step (see adamw_tolerance), m also of
        // w1·|g| <= 2 (the largest gradient times w1) when it cancels
        if (!(fabs((double)gm[i] - m[i]) <= 8.0 * steps * 0x1p-24 * (fabs(m[i]) + 2.0)) && bad++ < 3)
            printf("  n=%zu m[%zu]: kernel %.9g, reference %.9g\n", n, i, gm[i], m[i]);
        if (!(fabs((double)gv[i] - v[i]) <= 8.0 * steps * 0x1p-24 * fabs(v[i])) && bad++ < 3)
            printf("  n=%zu v[%zu]: kernel %.9g, reference %.9g\n", n, i, gv[i], v[i]);
    }
    free(p), free(m), free(v), free(g), free(got), free(gm), free(gv);
    cuda_check(cudaFree(dp)), cuda_check(cudaFree(dm)), cuda_check(cudaFree(dv)), cuda_check(cudaFree(dg));
    return bad;
}

TEST(adamw_matches_reference) {
    // {n, offset, max_norm}: single floats, the 4-float packs, misaligned, clipping on/off
    static const struct {
        size_t n;
        int offset;
        float max_norm;
    } cases[] = {{1, 0, 0}, {3, 0, 1.0f}, {37, 1, 0}, {64, 0, 0}, {64, 1, 5.0f}, {1024, 0, 10.0f},
                 {4099, 0, 0}, {65536 + 12, 0, 50.0f}, {65536 + 4, 3, 0}};
    size_t same = 0, total = 0;
    double worst = 0;
    uint64_t seed = 10;
    for (auto &c : cases) {
        CHECK_INT(adamw_against_reference(c.n, c.offset, 10, c.max_norm, seed++, &same, &worst), 0);
        total += c.n;
    }
    printf("  worst error / tolerance %.3g; after 10 steps %zu of %zu parameters bit-identical to train/adamw.c\n",
           worst, same, total);
}

// ---------------------------------------------------------------------------------------
// 2. AdamW against torch (the fixture test_optim checks train/adamw.c with)

TEST(adamw_matches_torch_fixture) {
    SafeTensors fx;
    char err[ERR_LEN];
    if (st_open(&fx, "test/fixtures/optim.safetensors", err)) {
        printf("  %s\n", err);
        CHECK(0);
        return;
    }
    const StTensor *p0 = st_find(&fx, "adamw.p0"), *grads = st_find(&fx, "adamw.grads");
    const StTensor *want = st_find(&fx, "adamw.params"), *scale = st_find(&fx, "adamw.lr_scale");
    const int n = 37, steps = 10;
    if (!p0 || !grads || !want || !scale || p0->numel != n || grads->numel != n * steps ||
        want->numel != n * steps || scale->numel != steps || p0->dtype != ST_F32 || grads->dtype != ST_F32 ||
        want->dtype != ST_F32 || scale->dtype != ST_F32) {
        printf("  fixture tensors missing or of the wrong type/size\n");
        CHECK(0);
        st_close(&fx);
        return;
    }
    float zeros[37] = {0}, got[37];
    float *dp = device_copy((const float *)p0->data, n, 0), *dm = device_copy(zeros, n, 0);
    float *dv = device_copy(zeros, n, 0), *dg = device_copy(zeros, n, 0);
    double lr_sum = 0, worst = 0;
    int bad = 0;
    for (int step = 1; step <= steps; step++) {
        // the fixture's lr: 1e-3 times the step's factor, rounded to fp32 as test_optim does
        float lr = (float)(1e-3 * (double)((const float *)scale->data)[step - 1]);
        lr_sum += lr;
        cuda_check(cudaMemcpy(dg, (const float *)grads->data + (step - 1) * n, n * sizeof(float),
                              cudaMemcpyHostToDevice));
        adamw_update(dp, dg, dm, dv, n, step, lr, 0.9f, 0.999f, 1e-8f, 0.1f, 1.0f, 0);
        cuda_check(cudaMemcpy(got, dp, sizeof(got), cudaMemcpyDeviceToHost));
        for (int i = 0; i < n; i++) {
            float w = ((const float *)want->data)[(step - 1) * n + i];
            double e = fabs((double)got[i] - w), tol = adamw_tolerance(w, step, lr_sum);
            if (e / tol > worst) worst = e / tol;
            if (!(e <= tol) && bad++ < 3)
                printf("  step %d [%d]: kernel %.9g, torch %.9g, tolerance %.3g\n", step, i, got[i], w, tol);
        }
    }
    CHECK_INT(bad, 0);
    printf("  worst error / tolerance against torch over 10 steps: %.3g\n", worst);
    cuda_check(cudaFree(dp)), cuda_check(cudaFree(dm)), cuda_check(cudaFree(dv)), cuda_check(cudaFree(dg));
    st_close(&fx);
}

// ---------------------------------------------------------------------------------------
// 3. The global norm

// A list of gradient tensors on the device, with the tables the kernel takes.
struct TensorList {
    int count;
    size_t total;
    float **host;          // host copies of the values
    float **dev;           // the device tensors
    float **dev_table;     // device array of the device pointers
    size_t *dev_offsets;   // device array of count + 1 offsets
    float *partial, *out;  // GRAD_NORM_BLOCKS floats of scratch; the result
    size_t *sizes;
};

static TensorList tensors_random(const size_t *sizes, int count, uint64_t seed) {
    TensorList l;
    uint64_t rng = seed;
    l.count = count;
    l.sizes = (size_t *)xmalloc((size_t)(count ? count : 1) * sizeof(size_t));
    l.host = (float **)xmalloc((size_t)(count ? count : 1) * sizeof(float *));
    l.dev = (float **)xmalloc((size_t)(count ? count : 1) * sizeof(float *));
    size_t *offsets = (size_t *)xmalloc((size_t)(count + 1) * sizeof(size_t));
    offsets[0] = 0;
    for (int t = 0; t < count; t++) {
        l.sizes[t] = sizes[t];
        l.host[t] = (float *)xmalloc((sizes[t] ? sizes[t] : 1) * sizeof(float));
        // magnitudes differing by tensor, as gradients of A and B matrices do
        random_fill(l.host[t], sizes[t], &rng, 1e-3 * (1 + t % 7));
        l.dev[t] = device_copy(l.host[t], sizes[t], 0);
        offsets[t + 1] = offsets[t] + sizes[t];
    }
    l.total = offsets[count];
    cuda_check(cudaMalloc(&l.dev_table, (size_t)(count ? count : 1) * sizeof(float *)));
    cuda_check(cudaMemcpy(l.dev_table, l.dev, (size_t)count * sizeof(float *), cudaMemcpyHostToDevice));
    cuda_check(cudaMalloc(&l.dev_offsets, (size_t)(count + 1) * sizeof(size_t)));
    cuda_check(cudaMemcpy(l.dev_offsets, offsets, (size_t)(count + 1) * sizeof(size_t), cudaMemcpyHostToDevice));
    cuda_check(cudaMalloc(&l.partial, GRAD_NORM_BLOCKS * sizeof(float)));
    cuda_check(cudaMalloc(&l.out, sizeof(float)));
    free(offsets);
    return l;
}

static void tensors_free(TensorList *l) {
    for (int t = 0; t < l->count; t++) free(l->host[t]), cuda_check(cudaFree(l->dev[t]));
    free(l->host), free(l->dev), free(l->sizes);
    cuda_check(cudaFree(l->dev_table)), cuda_check(cudaFree(l->dev_offsets));
    cuda_check(cudaFree(l->partial)), cuda_check(cudaFree(l->out));
}

static float kernel_norm_squared(const TensorList &l) {
    grad_norm_squared(l.out, l.partial, l.dev_table, l.dev_offsets, l.count, l.total, 0);
    float got;
    cuda_check(cudaMemcpy(&got, l.out, sizeof(float), cudaMemcpyDeviceToHost));
    return got;
}

// Σ g² in double, element by element: the independent value the kernel must approach.
static double double_norm_squared(const TensorList &l) {
    double sum = 0;
    for (int t = 0; t < l.count; t++)
        for (size_t i = 0; i < l.sizes[t]; i++) sum += (double)l.host[t][i] * l.host[t][i];
    return sum;
}

// r = 4, hidden 64, kv 16, mlp 224, 2 layers: A (r x in) and B (out x r) of all 7 projections
static const size_t kLoraSizes[] = {
    256, 256, 256, 64, 256, 64, 256, 256, 256, 896, 256, 896, 896, 256,
    256, 256, 256, 64, 256, 64, 256, 256, 256, 896, 256, 896, 896, 256,
};

TEST(grad_norm_matches_double_sum) {
    static const size_t one[] = {1}, empties[] = {0, 5, 0, 0, 3, 0}, small[] = {7, 300, 1, 999},
                        straddle[] = {1023, 1025, 4097, 1, 77777, 2048, 5}, big[] = {300000};
    static const struct {
        const size_t *sizes;
        int count;
    } cases[] = {{one, 1},         {empties, 6}, {small, 4}, {straddle, 7},
                 {big, 1},         {kLoraSizes, 28}, {empties, 0}};
    double worst = 0;
    uint64_t seed = 500;
    for (auto &c : cases) {
        TensorList l = tensors_random(c.sizes, c.count, seed++);
        double want = double_norm_squared(l), got = kernel_norm_squared(l), tol = grad_norm_squared_tolerance(want);
        if (want > 0 && fabs(got - want) / want > worst) worst = fabs(got - want) / want;
        if (!(fabs(got - want) <= tol)) {
            printf("  %d tensors, %zu elements: kernel %.9g, double %.9g, tolerance %.3g\n", c.count, l.total, got, want,
                   tol);
            CHECK(0);
        }
        // and train/adamw.c's norm, which clipping uses on the CPU, agrees with the same sum
        CHECK(fabs(grad_global_norm(l.host, l.sizes, l.count) - sqrt(want)) <= 1e-12 * sqrt(want));
        tensors_free(&l);
    }
    printf("  worst relative error of the squared norm: %.3g (tolerance 32u = %.3g)\n", worst, 32.0 * 0x1p-24);
}

// Clipping as the engine does it: the norm on the device, its factor into AdamW, against
// train/adamw.c's grad_clip and adamw_step on the same gradients, over several steps.
TEST(clipped_step_matches_reference) {
    TensorList l = tensors_random(kLoraSizes, 28, 600);
    float **p = (float **)xmalloc(28 * sizeof(float *)), **m = (float **)xmalloc(28 * sizeof(float *));
    float **v = (float **)xmalloc(28 * sizeof(float *)), **g = (float **)xmalloc(28 * sizeof(float *));
    // one contiguous parameter buffer (as the engine allocates it) and its gradient
    float *dp, *dm, *dv, *dg;
    cuda_check(cudaMalloc(&dp, l.total * sizeof(float)));
    cuda_check(cudaMalloc(&dm, l.total * sizeof(float)));
    cuda_check(cudaMalloc(&dv, l.total * sizeof(float)));
    cuda_check(cudaMemset(dm, 0, l.total * sizeof(float)));
    cuda_check(cudaMemset(dv, 0, l.total * sizeof(float)));
    uint64_t rng = 601;
    size_t off = 0;
    for (int t = 0; t < 28; t++) {
        size_t n = l.sizes[t];
        p[t] = (float *)xmalloc(n * sizeof(float)), g[t] = (float *)xmalloc(n * sizeof(float));
        m[t] = (float *)xcalloc(n, sizeof(float)), v[t] = (float *)xcalloc(n, sizeof(float));
        random_fill(p[t], n, &rng, 0.1);
        cuda_check(cudaMemcpy(dp + off, p[t], n * sizeof(float), cudaMemcpyHostToDevice));
        off += n;
    }
    // the gradients: the list's tensors, viewed as one buffer for AdamW
    cuda_check(cudaMalloc(&dg, l.total * sizeof(float)));
    float *got = (float *)xmalloc(l.total * sizeof(float));
    const float max_norm = 0.05f;  // below the gradients' norm (~0.1), so every step clips
    double lr_sum = 0, worst = 0;
    int bad = 0;
    for (int step = 1; step <= 3; step++) {
        off = 0;
        for (int t = 0; t < 28; t++) {
            random_fill(l.host[t], l.sizes[t], &rng, 1e-3 * (1 + step) * (1 + t % 5));
            memcpy(g[t], l.host[t], l.sizes[t] * sizeof(float));
            cuda_check(cudaMemcpy(l.dev[t], l.host[t], l.sizes[t] * sizeof(float), cudaMemcpyHostToDevice));
            cuda_check(cudaMemcpy(dg + off, l.host[t], l.sizes[t] * sizeof(float), cudaMemcpyHostToDevice));
            off += l.sizes[t];
        }
        float lr = 2e-3f;
        lr_sum += lr;
        double norm = sqrt((double)kernel_norm_squared(l));
        float scale = grad_clip_scale(norm, max_norm);
        double ref_norm = grad_clip(g, l.sizes, 28, max_norm);
        CHECK(scale < 1.0f);
        CHECK(fabs(norm - ref_norm) <= 16.0 * 0x1p-24 * ref_norm);  // half the squared norm's bound
        adamw_update(dp, dg, dm, dv, l.total, step, lr, kConfig.beta1, kConfig.beta2, kConfig.eps, kConfig.weight_decay,
                     scale, 0);
        for (int t = 0; t < 28; t++) adamw_step(p[t], g[t], m[t], v[t], l.sizes[t], step, lr, &kConfig);
        cuda_check(cudaMemcpy(got, dp, l.total * sizeof(float), cudaMemcpyDeviceToHost));
        off = 0;
        for (int t = 0; t < 28; t++)
            for (size_t i = 0; i < l.sizes[t]; i++, off++) {
                // the kernel's clipping factor comes from its fp32 norm (<= 16u from the
                // reference's): one more relative difference of 16u on each step's
                // update, far inside the tolerance's 8·8·u·lr per step
                double e = fabs((double)got[off] - p[t][i]), tol = adamw_tolerance(p[t][i], step, lr_sum);
                if (e / tol > worst) worst = e / tol;
                if (!(e <= tol) && bad++ < 3)
                    printf("  step %d tensor %d [%zu]: kernel %.9g, reference %.9g\n", step, t, i, got[off], p[t][i]);
            }
    }
    CHECK_INT(bad, 0);
    printf("  worst error / tolerance with clipping: %.3g\n", worst);
    for (int t = 0; t < 28; t++) free(p[t]), free(m[t]), free(v[t]), free(g[t]);
    free(p), free(m), free(v), free(g), free(got);
    cuda_check(cudaFree(dp)), cuda_check(cudaFree(dm)), cuda_check(cudaFree(dv)), cuda_check(cudaFree(dg));
    tensors_free(&l);
}

// ---------------------------------------------------------------------------------------
// 4. The same bits under every schedule

TEST(bits_do_not_depend_on_the_schedule) {
    const uint64_t saved_seed = cuda_host_seed();
    static const size_t sizes[] = {1023, 1025, 4097, 1, 77777, 2048, 5};
    TensorList l = tensors_random(sizes, 7, 700);
    const size_t n = 4099;
    uint64_t rng = 701;
    float *p = (float *)xmalloc(n * sizeof(float)), *g = (float *)xmalloc(n * sizeof(float));
    float *first = (float *)xmalloc(3 * n * sizeof(float)), *again = (float *)xmalloc(3 * n * sizeof(float));
    random_fill(p, n, &rng, 1.0), random_fill(g, n, &rng, 1.0);
    float first_norm = 0;
    static const uint64_t seeds[] = {0, 987654321};  // in order, then shuffled
    for (int k = 0; k < 2; k++) {
        cuda_host_set_seed(seeds[k]);
        float norm = kernel_norm_squared(l);
        float *dp = device_copy(p, n, 0), *dg = device_copy(g, n, 0), *dm, *dv;
        cuda_check(cudaMalloc(&dm, n * sizeof(float))), cuda_check(cudaMalloc(&dv, n * sizeof(float)));
        cuda_check(cudaMemset(dm, 0, n * sizeof(float))), cuda_check(cudaMemset(dv, 0, n * sizeof(float)));
        for (int step = 1; step <= 3; step++)
            adamw_update(dp, dg, dm, dv, n, step, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, 0.5f, 0);
        float *out = k ? again : first;
        cuda_check(cudaMemcpy(out, dp, n * sizeof(float), cudaMemcpyDeviceToHost));
        cuda_check(cudaMemcpy(out + n, dm, n * sizeof(float), cudaMemcpyDeviceToHost));
        cuda_check(cudaMemcpy(out + 2 * n, dv, n * sizeof(float), cudaMemcpyDeviceToHost));
        if (k == 0) first_norm = norm;
        else {
            CHECK(memcmp(&norm, &first_norm, sizeof(float)) == 0);
            CHECK(memcmp(first, again, 3 * n * sizeof(float)) == 0);
        }
        cuda_check(cudaFree(dp)), cuda_check(cudaFree(dg)), cuda_check(cudaFree(dm)), cuda_check(cudaFree(dv));
    }
    cuda_host_set_seed(saved_seed);
    free(p), free(g), free(first), free(again);
    tensors_free(&l);
}

// The bf16 copy written in the same pass is the updated fp32 parameter rounded to nearest-
// even (common/half.h, bit-exact with CUDA's conversion), on both the packed and the
// element path (a length of 4k + 3 and an odd offset take the latter).
TEST(adamw_refreshes_bf16_copy) {
    for (int offset = 0; offset < 2; offset++) {
        size_t n = offset ? 1003 : 1024;
        uint64_t rng = 99;
        float *p = (float *)xmalloc(n * sizeof(float)), *g = (float *)xmalloc(n * sizeof(float));
        random_fill(p, n, &rng, 1.0);
        random_fill(g, n, &rng, 0.1);
        float *dp = device_copy(p, n, offset), *dg = device_copy(g, n, offset);
        float *dm = device_copy(g, n, offset);
        for (size_t i = 0; i < n; i++) g[i] *= g[i];  // a second moment: non-negative
        float *dv = device_copy(g, n, offset);
        __nv_bfloat16 *copy;
        cuda_check(cudaMalloc(&copy, (n + (size_t)offset) * sizeof(__nv_bfloat16)));
        adamw_update(dp + offset, dg + offset, dm + offset, dv + offset, n, 3, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, 1.0f,
                     0, copy + offset);
        uint16_t *bits = (uint16_t *)xmalloc(n * sizeof(uint16_t));
        cuda_check(cudaMemcpy(p, dp + offset, n * sizeof(float), cudaMemcpyDeviceToHost));
        cuda_check(cudaMemcpy(bits, copy + offset, n * sizeof(uint16_t), cudaMemcpyDeviceToHost));
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) bad += bits[i] != f32_to_bf16(p[i]);
        CHECK_INT(bad, 0);
        cuda_check(cudaFree(dp)), cuda_check(cudaFree(dg)), cuda_check(cudaFree(dm)), cuda_check(cudaFree(dv));
        cuda_check(cudaFree(copy));
        free(p), free(g), free(bits);
    }
}

int main(void) {
    RUN(adamw_matches_reference);
    RUN(adamw_matches_torch_fixture);
    RUN(grad_norm_matches_double_sum);
    RUN(clipped_step_matches_reference);
    RUN(bits_do_not_depend_on_the_schedule);
    RUN(adamw_refreshes_bf16_copy);
    return test_summary();
}
