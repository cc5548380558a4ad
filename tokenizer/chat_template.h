/*
 * chat_template.h: the chat formats of chat.h as Jinja chat templates, for the
 * `tokenizer.chat_template` of a GGUF file (what llama.cpp's `--jinja`, its server and
 * transformers' apply_chat_template render).
 *
 * A template renders a conversation as text; the program then tokenizes that text with
 * special-token strings parsed as special tokens, encoding each stretch of text between them
 * by itself (llama.cpp: llama_tokenize with parse_special; for SentencePiece it gives each
 * stretch that starts the text or follows a special token the dummy-prefix space, as a
 * separate encode() call does). The templates are written so that this gives exactly the
 * ids chat.c produces for the same conversation: the same normalisation of the messages
 * (mistral-common's: consecutive messages of one role joined with "\n\n", empty contents
 * skipped; before V7 the system messages joined into one prompt placed in the first (V1) or
 * last (V2, V3) user message, and an empty user message first when the conversation does not
 * start with one; an empty answer is an error, as mistral-common raises) and the same text
 * between the special tokens. V1's brackets are text, so there the answer follows " [/INST]"
 * after a space, which SentencePiece's dummy prefix stands for (V1 exists only for
 * SentencePiece tokenizers). Assistant messages end with eos_token. Generation: the Mistral
 * formats end the prompt after the last [/INST]; ChatML appends "<|im_start|>assistant\n"
 * when add_generation_prompt is set. Roles other than system, user and assistant are refused
 * (raise_exception) in the Mistral formats, as mistral-common refuses them.
 *
 * default_system (may be NULL): the system prompt used when a conversation has none (no
 * system message at all in the Mistral formats; a first message that is not a system message
 * in ChatML, as Hugging Face's ChatML templates do); the persona prompt the character was
 * trained with goes here, so that a chat without one still talks to the character.
 */
#ifndef PERSONA_CHAT_TEMPLATE_H
#define PERSONA_CHAT_TEMPLATE_H

#include "chat.h"

// A new NUL-terminated template (free it).
char *chat_template_jinja(ChatFormat f, const char *default_system, size_t system_len);

#endif
