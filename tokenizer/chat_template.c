// chat_template.c: Jinja templates for chat.h's formats (see chat_template.h for what they
// must render). The Jinja is one line of tags and quoted literals, so that no whitespace
// control of the renderer (trim_blocks, lstrip_blocks) can change the text.
#include "chat_template.h"

#include <stdio.h>
#include <string.h>

static void put(ByteBuf *b, const char *s) { bytebuf_append(b, s, strlen(s)); }

// s as a Jinja string literal: quoted with ', the characters that need it escaped (the escapes
// both Jinja and llama.cpp's Jinja engine read).
static void put_literal(ByteBuf *b, const char *s, size_t n) {
    bytebuf_push(b, '\'');
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        const char *esc = c == '\\' ? "\\\\" : c == '\'' ? "\\'" : c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
        if (esc) put(b, esc);
        else bytebuf_push(b, c);
    }
    bytebuf_push(b, '\'');
}

// The joined content of the group of messages of one role that ends at this message
// (mistral-common's aggregation: consecutive messages of a role, empty contents skipped, the
// rest joined with "\n\n"), in ns.text; TURN is emitted at the group's last message.
#define GROUP_BEGIN                                                                                                   \
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != m['role'] -%}{%- set ns.text = '' -%}{%- endif -%}"   \
    "{%- if m['content'] -%}{%- set ns.text = ns.text + ('\\n\\n' if ns.text else '') + m['content'] -%}{%- endif -%}" \
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != m['role'] -%}"
#define GROUP_END "{%- endif -%}"

#define CHECK_ROLE                                                                                                    \
    "{%- if m['role'] != 'system' and m['role'] != 'user' and m['role'] != 'assistant' -%}"                          \
    "{{- raise_exception('Only system, user and assistant messages are supported, not ' + m['role']) -}}{%- endif -%}"

// An answer: mistral-common refuses an empty one; from V2 on trailing spaces are stripped.
#define ANSWER(strip)                                                                                                 \
    "{%- if not ns.text -%}{{- raise_exception('An assistant message is empty') -}}{%- endif -%}"                    \
    "{{- " strip " + eos_token -}}"

static void mistral(ByteBuf *b, ChatFormat f) {
    put(b, "{%- set ns = namespace(system='', has_system=false, first='', last_user=-1, text='', seen_user=false, "
           "after_text=false) -%}");
    if (f == CHAT_V7) {
        put(b, "{%- for m in messages -%}" CHECK_ROLE
               "{%- if m['role'] == 'system' -%}{%- set ns.has_system = true -%}{%- endif -%}{%- endfor -%}"
               "{{- bos_token -}}"
               "{%- if not ns.has_system and default_system -%}"
               "{{- '[SYSTEM_PROMPT]' + default_system + '[/SYSTEM_PROMPT]' -}}{%- endif -%}"
               "{%- if messages|length == 0 and not default_system -%}{{- '[INST][/INST]' -}}{%- endif -%}"
               "{%- for m in messages -%}"
               "{%- if m['role'] == 'system' -%}{{- '[SYSTEM_PROMPT]' + m['content'] + '[/SYSTEM_PROMPT]' -}}"
               "{%- else -%}" GROUP_BEGIN
               "{%- if m['role'] == 'user' -%}{{- '[INST]' + ns.text + '[/INST]' -}}"
               "{%- else -%}" ANSWER("ns.text.rstrip(' ')") "{%- endif -%}" GROUP_END
               "{%- endif -%}{%- endfor -%}");
        return;
    }
    // V1, V2, V3: the system prompt (all system messages, or the default when there are none)
    // and where the first non-system message and the last user message are
    put(b, "{%- for m in messages -%}" CHECK_ROLE
           "{%- if m['role'] == 'system' -%}{%- set ns.has_system = true -%}"
           "{%- if m['content'] -%}{%- set ns.system = ns.system + ('\\n\\n' if ns.system else '') + m['content'] -%}"
           "{%- endif -%}"
           "{%- else -%}{%- if not ns.first -%}{%- set ns.first = m['role'] -%}{%- endif -%}"
           "{%- if m['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}"
           "{%- endif -%}{%- endfor -%}"
           "{%- if not ns.has_system -%}{%- set ns.system = default_system -%}{%- endif -%}"
           "{{- bos_token -}}");
    if (f == CHAT_V1) {
        // The system prompt goes to the first user message, the inserted one if any. Each user
        // or answer text is its own encode() in chat.c, which starts it with the dummy prefix
        // "▁": after a special token (<s>, </s>) the tokenizer adds it, after text (an answer
        // after " [/INST]", a user message after another) a space stands for it.
        put(b, "{%- if ns.first != 'user' -%}{{- '[INST] ' + (ns.system + '\\n\\n' if ns.system else '') + ' [/INST]' -}}"
               "{%- set ns.seen_user = true -%}{%- set ns.after_text = true -%}{%- endif -%}"
               "{%- for m in messages -%}{%- if m['role'] != 'system' -%}" GROUP_BEGIN
               "{%- if m['role'] == 'user' -%}"
               "{{- (' ' if ns.after_text else '') + '[INST] ' + "
               "(ns.system + '\\n\\n' if ns.system and not ns.seen_user else '') + ns.text + ' [/INST]' -}}"
               "{%- set ns.seen_user = true -%}{%- set ns.after_text = true -%}"
               "{%- else -%}" ANSWER("' ' + ns.text") "{%- set ns.after_text = false -%}{%- endif -%}" GROUP_END
               "{%- endif -%}{%- endfor -%}");
        return;
    }
    // V2, V3: the system prompt goes to the last user message, the inserted one if it is the only one
    put(b, "{%- if ns.first != 'user' -%}"
           "{{- '[INST]' + (ns.system + '\\n\\n' if ns.system and ns.last_user < 0 else '') + '[/INST]' -}}{%- endif -%}"
           "{%- for m in messages -%}{%- if m['role'] != 'system' -%}" GROUP_BEGIN
           "{%- if m['role'] == 'user' -%}"
           "{{- '[INST]' + (ns.system + '\\n\\n' if ns.system and loop.index0 == ns.last_user else '') + ns.text + '[/INST]' -}}"
           "{%- else -%}" ANSWER("ns.text.rstrip(' ')") "{%- endif -%}" GROUP_END "{%- endif -%}{%- endfor -%}");
}

static void chatml(ByteBuf *b) {
    put(b, "{%- if default_system and (messages|length == 0 or messages[0]['role'] != 'system') -%}"
           "{{- '<|im_start|>system\\n' + default_system + '<|im_end|>\\n' -}}{%- endif -%}"
           "{%- for m in messages -%}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' -}}"
           "{%- endfor -%}"
           "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}");
}

char *chat_template_jinja(ChatFormat f, const char *default_system, size_t system_len) {
    ByteBuf b = {0};
    put(&b, "{%- set default_system = ");
    put_literal(&b, default_system ? default_system : "", default_system ? system_len : 0);
    put(&b, " -%}");
    if (f == CHAT_CHATML) chatml(&b);
    else mistral(&b, f);
    bytebuf_push(&b, '\0');
    return b.data;
}
