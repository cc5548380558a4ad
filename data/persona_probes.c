// persona_probes.c: questions for a trained character (see persona_probes.h).
#include "persona_probes.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/strmap.h"
#include "../common/util.h"

#define PEOPLE 3
#define PLACES 3

// The indexes of the `want` largest counts (ties: the lower index), -1 where fewer than
// `want` reach min.
static void top(const int *counts, size_t n, int min, int *best, int want) {
    for (int w = 0; w < want; w++) {
        best[w] = -1;
        for (size_t i = 0; i < n; i++) {
            int taken = 0;
            for (int v = 0; v < w; v++) taken |= best[v] == (int)i;
            if (!taken && counts[i] >= min && (best[w] < 0 || counts[i] > counts[best[w]])) best[w] = (int)i;
        }
    }
}

// The people the character talks with most.
static void find_people(const Dialogue *d, int *best) {
    int *counts = xcalloc(d->cast.n, sizeof(int));
    for (size_t k = 0; k < d->n; k++) {
        if (d->turns[k].speaker != ENTITY_CHARACTER) continue;
        for (size_t j = k > 2 ? k - 2 : 0; j <= k + 2 && j < d->n; j++) {
            int e = d->turns[j].speaker;
            if (e > ENTITY_NARRATOR && isupper((unsigned char)d->cast.entities[e].name[0])) counts[e]++;
        }
    }
    top(counts, d->cast.n, 1, best, PEOPLE);
    free(counts);
}

static int is_place_word(const char *s, size_t n) {
    static const char *const not_places[] = {
        "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "January", "February",
        "March", "April", "May", "June", "July", "August", "September", "October", "November", "December",
        "Mr", "Mrs", "Miss", "Sir", "Lady", "Lord", "Dr", "God", "Heaven", "I", "The", "A", "An", "His", "Her",
        "My", "Our", "Your", "Their", "This", "That", "Christmas", NULL};
    if (n < 2 || !isupper((unsigned char)s[0])) return 0;
    for (size_t i = 1; i < n; i++)
        if (!islower((unsigned char)s[i])) return 0;
    for (int i = 0; not_places[i]; i++)
        if (strlen(not_places[i]) == n && !strncmp(not_places[i], s, n)) return 0;
    return 1;
}

// The places named most often after a preposition, in all of the book's text.
static char **find_places(const Dialogue *d, int *n_found) {
    static const char *const preps[] = {"at", "in", "to", "from", "near", "into", NULL};
    StrMap places;
    strmap_init(&places, 256);
    int *counts = NULL;
    size_t n = 0;
    for (size_t p = 0; p < d->book->n; p++) {
        const char *s = d->prose[p];
        if (!s) continue;
        size_t len = d->prose_len[p];
        for (size_t i = 0; i < len;) {
            while (i < len && !isalpha((unsigned char)s[i])) i++;
            size_t w = i;
            while (i < len && isalpha((unsigned char)s[i])) i++;
            int prep = 0;
            for (int k = 0; preps[k]; k++) prep |= i - w == strlen(preps[k]) && !strncmp(s + w, preps[k], i - w);
            if (!prep || i >= len || s[i] != ' ') continue;
            size_t a = i + 1, b = a;
            while (b < len && isalpha((unsigned char)s[b])) b++;
            if (!is_place_word(s + a, b - a)) continue;
            if (b + 1 < len && s[b] == ' ' && isupper((unsigned char)s[b + 1])) {  // "Baker Street"
                size_t c = b + 1;
                while (c < len && isalpha((unsigned char)s[c])) c++;
                if (is_place_word(s + b + 1, c - b - 1)) b = c;
            }
            // people are not places: the cast's keys are lower-case
            char key[64];
            size_t k = b - a < sizeof key - 1 ? b - a : sizeof key - 1;
            for (size_t j = 0; j < k; j++) key[j] = (char)tolower((unsigned char)s[a + j]);
            if (strmap_get(&d->cast.keys, key, k) >= 0) continue;
            if (strmap_put(&places, s + a, b - a, (int32_t)n) == 0) {
                counts = xrealloc(counts, (n + 1) * sizeof(int));
                counts[n++] = 0;
            }
            counts[strmap_get(&places, s + a, b - a)]++;
        }
    }
    int best[PLACES];
    top(counts, n, 2, best, PLACES);
    char **found = xcalloc(PLACES, sizeof(char *));
    *n_found = 0;
    for (int w = 0; w < PLACES && best[w] >= 0; w++)
        for (size_t slot = 0; slot <= places.mask; slot++)
            if (places.slots[slot].hash && places.slots[slot].value == best[w]) {
                found[*n_found] = strndup(places.arena + places.slots[slot].off, places.slots[slot].len);
                (*n_found)++;
                break;
            }
    free(counts);
    strmap_free(&places);
    return found;
}

size_t probes_write(const Dialogue *d, const char *character, FILE *f) {
    static const char *const general[] = {
        "Who are you? Tell me about yourself.",
        "What do you want most in the world?",
        "What are you most afraid of?",
        "What is the worst mistake you have ever made?",
        "Whom do you trust, and why?",
        "Tell me about a day you will never forget.",
        "What would you say to someone who doubted you?",
        NULL};
    size_t n = 0;
    for (int i = 0; general[i]; i++, n++) fprintf(f, "%s\n", general[i]);
    int people[PEOPLE];
    find_people(d, people);
    static const char *const about_people[PEOPLE] = {"What do you think of %s?", "How did you come to know %s?",
                                                     "What would you tell %s, if you could say anything?"};
    for (int i = 0; i < PEOPLE && people[i] >= 0; i++, n++) {
        fprintf(f, about_people[i], d->cast.entities[people[i]].name);
        fputc('\n', f);
    }
    int n_places;
    char **places = find_places(d, &n_places);
    static const char *const about_places[PLACES] = {"What is %s like?", "What happened at %s that you still think about?",
                                                     "Would you go back to %s?"};
    for (int i = 0; i < n_places; i++, n++) {
        fprintf(f, about_places[i], places[i]);
        fputc('\n', f);
    }
    for (int i = 0; i < n_places; i++) free(places[i]);
    free(places);
    fprintf(f, "If your story were told again, %s, what should it leave out?\n", character);
    return n + 1;
}
