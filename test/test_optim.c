// test_optim.c: AdamW, gradient clipping and learning-rate schedules against PyTorch and
// transformers (test/fixtures/optim.safetensors, written by scripts/optim_fixtures.py with
// torch 2.15.0 and transformers 5.24.0; the script's header says what each tensor is).
#include <math.h>
#include <stdlib.h>

#include "../train/adamw.h"
#include "../train/safetensors.h"
#include "../train/schedule.h"
#include "test.h"

static SafeTensors fx;

static const void *get(const char *name, StDtype dtype, int64_t numel) {
    const StTensor *t = st_find(&fx, name);
    if (!t || t->dtype != dtype || t->numel != numel) {
        printf("  fixture tensor %s missing or of the wrong type/size\n", name);
        return NULL;
    }
    return t->data;
}

// fp32 vs fp32: the same operations in a possibly different order, so agreement to a few
// ulps; 1e-6 relative (plus 1e-9 absolute near zero) is far tighter than the 1e-4 asked.
static int close_rel(float a, float b, double rel) { return fabs((double)a - b) <= rel * fabs((double)b) + 1e-9; }

TEST(adamw_ten_steps_match_torch) {
    const float *p0 = get("adamw.p0", ST_F32, 37), *grads = get("adamw.grads", ST_F32, 370),
                *want = get("adamw.params", ST_F32, 370), *scale = get("adamw.lr_scale", ST_F32, 10);
    if (!p0 || !grads || !want || !scale) { CHECK(0); return; }
    float p[37], m[37] = {0}, v[37] = {0};
    memcpy(p, p0, sizeof(p));
    AdamWConfig c = {0.9f, 0.999f, 1e-8f, 0.1f};
    double worst = 0;
    for (int step = 1; step <= 10; step++) {
        adamw_step(p, grads + (step - 1) * 37, m, v, 37, step, (float)(1e-3 * (double)scale[step - 1]), &c);
        for (int i = 0; i < 37; i++) {
            const float w = want[(step - 1) * 37 + i];
            double rel = fabs((double)p[i] - w) / fabs((double)w);
            if (rel > worst) worst = rel;
            if (!close_rel(p[i], w, 1e-6)) {
                printf("  step %d, element %d: %.9g vs torch %.9g\n", step, i, p[i], w);
                CHECK(0);
                return;
            }
        }
    }
    printf("  worst relative difference over 10 steps: %.3g\n", worst);
}

TEST(clip_grad_norm_matches_torch) {
    const float *g = get("clip.grads", ST_F32, 25), *want = get("clip.clipped", ST_F32, 25),
                *norm = get("clip.norm", ST_F32, 1);
    if (!g || !want || !norm) { CHECK(0); return; }
    float buf[25];
    memcpy(buf, g, sizeof(buf));
    float *parts[3] = {buf, buf + 5, buf + 22};
    size_t sizes[3] = {5, 17, 3};
    double got = grad_clip(parts, sizes, 3, 1.0f);
    CHECK(close_rel((float)got, norm[0], 1e-6));
    for (int i = 0; i < 25; i++) CHECK(close_rel(buf[i], want[i], 1e-6));
    CHECK(fabs(grad_global_norm(parts, sizes, 3) - 1.0) < 1e-5);  // clipped to max_norm
}

TEST(schedules_match_transformers) {
    static const char *names[] = {"constant", "linear", "cosine"};
    for (int k = 0; k < 3; k++) {
        char key[32];
        snprintf(key, sizeof(key), "sched.%s", names[k]);
        const double *want = get(key, ST_F64, 100);
        ScheduleKind kind;
        CHECK_INT(schedule_parse(names[k], &kind), 0);
        for (int s = 0; want && s < 100; s++)
            if (fabs(schedule_multiplier(kind, s, 10, 100) - want[s]) > 1e-12) {
                printf("  %s step %d: %.17g vs %.17g\n", names[k], s, schedule_multiplier(kind, s, 10, 100), want[s]);
                CHECK(0);
                break;
            }
    }
    ScheduleKind kind;
    CHECK_INT(schedule_parse("exponential", &kind), -1);
}

int main(void) {
    char err[ERR_LEN];
    if (st_open(&fx, "test/fixtures/optim.safetensors", err)) {
        printf("FAIL optim_fixture: %s\n", err);
        return 1;
    }
    RUN(adamw_ten_steps_match_torch);
    RUN(clip_grad_norm_matches_torch);
    RUN(schedules_match_transformers);
    st_close(&fx);
    return test_summary();
}
