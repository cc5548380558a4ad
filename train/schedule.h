/*
 * schedule.h: learning-rate schedules, as transformers' get_*_schedule_with_warmup define
 * the multiplier of the base learning rate at optimizer step s (0-based), with W warmup
 * steps and T steps in all:
 *   warmup (s < W):  s / max(1, W)                                        (all three)
 *   constant:        1
 *   linear:          max(0, (T - s) / max(1, T - W))
 *   cosine:          max(0, 0.5 * (1 + cos(pi * (s - W) / max(1, T - W))))
 */
#ifndef PERSONA_SCHEDULE_H
#define PERSONA_SCHEDULE_H

typedef enum { SCHEDULE_CONSTANT, SCHEDULE_LINEAR, SCHEDULE_COSINE } ScheduleKind;

// "constant", "linear" or "cosine"; -1 if unknown.
int schedule_parse(const char *name, ScheduleKind *kind);
double schedule_multiplier(ScheduleKind kind, long step, long warmup, long total);

#endif
