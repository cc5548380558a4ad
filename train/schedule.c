// schedule.c: see schedule.h for the formulas (transformers' optimization.py).
#include "schedule.h"

#include <math.h>
#include <string.h>

int schedule_parse(const char *name, ScheduleKind *kind) {
    if (strcmp(name, "constant") == 0) *kind = SCHEDULE_CONSTANT;
    else if (strcmp(name, "linear") == 0) *kind = SCHEDULE_LINEAR;
    else if (strcmp(name, "cosine") == 0) *kind = SCHEDULE_COSINE;
    else return -1;
    return 0;
}

static double at_least_one(long x) { return x > 1 ? (double)x : 1.0; }

double schedule_multiplier(ScheduleKind kind, long step, long warmup, long total) {
    if (step < warmup) return (double)step / at_least_one(warmup);
    if (kind == SCHEDULE_CONSTANT) return 1.0;
    double rest = at_least_one(total - warmup);
    if (kind == SCHEDULE_LINEAR) return fmax(0.0, (double)(total - step) / rest);
    double progress = (double)(step - warmup) / rest;
    const double pi = 3.14159265358979323846;
    return fmax(0.0, 0.5 * (1.0 + cos(pi * progress)));
}
