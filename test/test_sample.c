// test_sample.c: sampling (train/sample.h) against probabilities computed here another way.
//
// The expected distribution of a setting is computed in double precision without sorting:
// a token's rank is the number of tokens more probable than it (or as probable with a lower
// id); top-k keeps ranks below K; top-p keeps a token when the renormalised mass of the kept
// tokens ranked before it is below P. 10^5 draws per setting, each token's count within 5
// standard deviations of 10^5 times its expected probability (binomial), tokens cut off
// never drawn. Greedy and seeding are checked directly.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"
#include "../train/sample.h"
#include "test.h"

#define DRAWS 100000

static void expected(const float *logits, int V, const SampleConfig *c, double *want) {
    double *q = malloc((size_t)V * sizeof(double)), mx = -INFINITY, sum = 0;
    int *rank = malloc((size_t)V * sizeof(int));
    for (int v = 0; v < V; v++) mx = logits[v] > mx ? logits[v] : mx;
    for (int v = 0; v < V; v++) sum += q[v] = exp((logits[v] - mx) / c->temperature);
    for (int v = 0; v < V; v++) {
        q[v] /= sum;
        rank[v] = 0;
    }
    for (int v = 0; v < V; v++)
        for (int u = 0; u < V; u++) rank[v] += q[u] > q[v] || (q[u] == q[v] && u < v);
    int K = c->top_k > 0 && c->top_k < V ? c->top_k : V;
    double kmass = 0, kept = 0;
    for (int v = 0; v < V; v++) kmass += rank[v] < K ? q[v] : 0;
    for (int v = 0; v < V; v++) {
        double before = 0;
        for (int u = 0; u < V; u++) before += rank[u] < rank[v] ? q[u] : 0;
        want[v] = rank[v] < K && before / kmass < c->top_p ? q[v] : 0;
        kept += want[v];
    }
    for (int v = 0; v < V; v++) want[v] /= kept;
    free(q), free(rank);
}

// Returns the number of tokens whose count is off.
static int draw_and_compare(const float *logits, int V, SampleConfig c) {
    double *want = malloc((size_t)V * sizeof(double));
    int *count = calloc((size_t)V, sizeof(int)), off = 0;
    expected(logits, V, &c, want);
    uint64_t rng = 12345;
    for (int i = 0; i < DRAWS; i++) count[sample_token(logits, V, &c, &rng)]++;
    for (int v = 0; v < V; v++) {
        double mean = DRAWS * want[v], sd = sqrt(DRAWS * want[v] * (1 - want[v]));
        if ((want[v] == 0 && count[v]) || fabs(count[v] - mean) > 5 * sd + 1e-9) {
            if (off++ < 3)
                printf("  T %g top-p %g top-k %d: token %d drawn %d times, expected %.1f +- %.1f\n",
                       (double)c.temperature, (double)c.top_p, c.top_k, v, count[v], mean, sd);
        }
    }
    free(want), free(count);
    return off;
}

static const float small[8] = {2.0f, 1.0f, 0.5f, 2.0f, -1.0f, 0.0f, 1.5f, -3.0f};  // a tie: tokens 0 and 3

TEST(top_p_top_k_and_temperature_match_the_distribution) {
    static const SampleConfig settings[] = {
        {1.0f, 1.0f, 0, 0}, {0.7f, 1.0f, 0, 0}, {1.0f, 0.9f, 0, 0},  {0.7f, 0.9f, 0, 0}, {1.0f, 0.5f, 0, 0},
        {1.0f, 1.0f, 3, 0}, {1.0f, 1.0f, 1, 0}, {0.7f, 0.8f, 4, 0},  {2.0f, 0.6f, 5, 0}, {1.0f, 0.01f, 0, 0},
    };
    int off = 0;
    for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) off += draw_and_compare(small, 8, settings[i]);
    CHECK_INT(off, 0);
}

// A 1000-token vocabulary of random logits, the defaults chat uses (0.7, 0.9) and with top-k.
TEST(large_vocabulary_matches_the_distribution) {
    int V = 1000;
    float *logits = malloc((size_t)V * 4);
    uint64_t rng = 3;
    for (int v = 0; v < V; v++) logits[v] = (float)(rng_uniform(&rng) * 8);
    CHECK_INT(draw_and_compare(logits, V, (SampleConfig){0.7f, 0.9f, 0, 0}), 0);
    CHECK_INT(draw_and_compare(logits, V, (SampleConfig){1.0f, 0.95f, 50, 0}), 0);
    free(logits);
}

// The expected distributions are what the settings say (a check of the oracle itself, by
// hand): top-k 3 of `small` keeps tokens 0, 3 (the tie, both 2.0) and 6 (1.5); top-p 0.5
// at T 1 keeps 0 and 3, whose mass 2 e^2 / sum is 0.59 of the total.
TEST(oracle_keeps_what_the_settings_say) {
    double want[8];
    expected(small, 8, &(SampleConfig){1.0f, 1.0f, 3, 0}, want);
    CHECK(want[0] > 0 && want[3] > 0 && want[6] > 0 && want[1] == 0 && want[2] == 0);
    CHECK(fabs(want[0] - exp(2) / (2 * exp(2) + exp(1.5))) < 1e-12);
    expected(small, 8, &(SampleConfig){1.0f, 0.5f, 0, 0}, want);
    CHECK(fabs(want[0] - 0.5) < 1e-12 && fabs(want[3] - 0.5) < 1e-12);
}

// Temperature 0: the largest logit (the lowest id among equals), the generator untouched.
TEST(greedy_is_argmax_and_draws_nothing) {
    uint64_t rng = 99;
    SampleConfig g = {0.0f, 0.9f, 40, 0};
    for (int i = 0; i < 10; i++) CHECK_INT(sample_token(small, 8, &g, &rng), 0);
    CHECK_INT(rng, 99);
    float shifted[8];
    memcpy(shifted, small, sizeof(shifted));
    shifted[6] = 5.0f;
    CHECK_INT(sample_token(shifted, 8, &g, &rng), 6);
    g.vocab = 6;  // ids from 6 on are not the tokenizer's: never chosen
    CHECK_INT(sample_token(shifted, 8, &g, &rng), 0);
    g.temperature = 1.0f;
    for (int i = 0; i < 1000; i++) CHECK(sample_token(shifted, 8, &g, &rng) < 6);
}

// The same seed gives the same tokens; another seed other tokens.
TEST(seeded_sampling_repeats) {
    SampleConfig c = {0.7f, 0.9f, 0, 0};
    uint64_t a = 42, b = 42, d = 43;
    int same = 1, differ = 0;
    for (int i = 0; i < 200; i++) {
        int32_t x = sample_token(small, 8, &c, &a), y = sample_token(small, 8, &c, &b), z = sample_token(small, 8, &c, &d);
        same &= x == y;
        differ |= x != z;
    }
    CHECK(same);
    CHECK(differ);
}

int main(void) {
    RUN(top_p_top_k_and_temperature_match_the_distribution);
    RUN(large_vocabulary_matches_the_distribution);
    RUN(oracle_keeps_what_the_settings_say);
    RUN(greedy_is_argmax_and_draws_nothing);
    RUN(seeded_sampling_repeats);
    return test_summary();
}
