/*
 * persona_probes.h: questions to ask a trained character, to see whether it is that character.
 *
 * The questions any reader would ask any character (who are you, what do you want, what do
 * you fear), and questions about the people and places of this book:
 *   people  the other people who speak right before or after the character's lines (within
 *           two turns), most often first; proper names only ("Mr. Darcy", not "the lady");
 *   places  capitalised words after "at", "in", "to", "from", "near" or "into" in the book
 *           ("at Netherfield", "to Baker Street"), one or two of them, that are not people,
 *           days, months or titles, seen at least twice, most often first.
 * One question a line; the same book gives the same questions.
 */
#ifndef PERSONA_PROBES_H
#define PERSONA_PROBES_H

#include <stdio.h>

#include "persona_dialogue.h"

// Writes the probes to f. Returns how many were written.
size_t probes_write(const Dialogue *d, const char *character, FILE *f);

#endif
