/*
 * chat.h: Mistral's instruct chat formats, with mistral-finetune's loss mask.
 *
 * A conversation (system / user / assistant messages) becomes the token ids that
 * mistral-common's instruct tokenizers produce, and one mask byte per id: 1 where the
 * token is a training target, 0 elsewhere. The formats (mistral-common, see
 * reference/mistral.md §6):
 *
 *   V1 (SentencePiece v1; Mistral-7B-Instruct v0.1/v0.2)
 *     <s> encode("[INST] " + [system + "\n\n" if first user] + user + " [/INST]")
 *         encode(assistant) </s> ...            (the brackets are plain text in v1)
 *   V2, V3 (SentencePiece v2/v3, and Tekken v3: Mistral-7B-Instruct-v0.3, Nemo, Ministral)
 *     <s> [INST] encode([system + "\n\n" if last user] + user) [/INST]
 *         encode(rstrip_spaces(assistant)) </s> ...
 *   V7 (SentencePiece v7, Tekken v7: Mistral-Large-2411, Mistral-Small-2501+)
 *     <s> [SYSTEM_PROMPT] encode(system) [/SYSTEM_PROMPT] (where the system message is)
 *         [INST] encode(user) [/INST] encode(rstrip_spaces(assistant)) </s> ...
 *
 * Each encode() is a separate call, so with SentencePiece each segment starts with its own
 * dummy "▁". Before encoding, messages are normalised as mistral-common does: consecutive
 * messages of the same role (and, for assistants, the same weight) are joined with
 * "\n\n" (empty ones skipped); before V7 all system messages are removed and joined into
 * one system prompt, and an empty user message is inserted when the conversation does not
 * start with a user message; from V7 on, system messages stay where they are.
 *
 *   ChatML (byte-level BPE tokenizers that define <|im_start|> and <|im_end|>: SmolLM2, ...)
 *     [<|im_start|> encode("system\n" + DEFAULT) <|im_end|> encode("\n")]   when the first
 *         message is not a system message and the tokenizer's chat template has a default
 *     per message: <|im_start|> encode(role + "\n" + content) <|im_end|> encode("\n")
 *     and, when the conversation ends with a user message, the generation prompt
 *     <|im_start|> encode("assistant\n")
 *   (the text Hugging Face's ChatML templates render, tokenized as transformers does: the
 *   special tokens split the text and each span between them is encoded by itself). No
 *   message is joined or moved; no BOS.
 *
 * Loss mask (mistral-finetune's tokenize_instruct): BOS, system and user tokens are never
 * trained; an assistant message's tokens and its closing EOS are trained unless the
 * message carries a weight other than 1 (`"weight": 0` turns it off).
 * ChatML: an assistant message's content tokens and its <|im_end|> are trained (not the
 * "assistant\n" header, not the "\n" after <|im_end|>), unless its weight says otherwise.
 * mask[i] = 1 means "token i is a target" (the trainer predicts ids[i] from ids[i-1]).
 */
#ifndef PERSONA_CHAT_H
#define PERSONA_CHAT_H

#include "tokenizer.h"

typedef enum { CHAT_V1 = 1, CHAT_V2 = 2, CHAT_V3 = 3, CHAT_V7 = 7, CHAT_CHATML = 100 } ChatFormat;
typedef enum { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT } ChatRole;

typedef struct {
    ChatRole role;
    const char *content;
    size_t len;
    double weight;  // assistant loss weight; < 0 means "not given" (trained)
} ChatMessage;

// The format the tokenizer implies: byte-level BPE -> ChatML; Mistral's by version (v1 -> V1,
// v2 -> V2, v3 -> V3, v7+ -> V7).
ChatFormat chat_format_for(const Tokenizer *t);
// "v1", "v2", "v3", "v7" (case-insensitive, the "v" optional) or "chatml". Returns -1 if unknown.
int chat_format_parse(const char *name, ChatFormat *f);
const char *chat_format_name(ChatFormat f);

// Encodes a conversation, appending to ids and (one byte per id) to mask; ids and mask
// must have the same length on entry.
// Returns -1 with the reason in err: a special token the format needs is missing from the
// tokenizer, or an assistant message is empty (mistral-common refuses both).
int chat_encode(Tokenizer *t, ChatFormat f, const ChatMessage *msgs, size_t n, TokenVec *ids,
                ByteBuf *mask, char *err);

#endif
