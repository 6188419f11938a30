/* chat_template.c - recognise Jinja chat templates and render conversations without Jinja.
 *
 * Templates are data: a template string is never executed. Recognition lexes it the way
 * Jinja's lexer does under transformers' settings (trim_blocks, lstrip_blocks, keep trailing
 * newline off) into a canonical form - literal output text after whitespace control, tag
 * contents with insignificant whitespace dropped, string literals decoded, comments removed -
 * and compares that with the canonical forms of the known real templates below. Two templates
 * with the same canonical form render identically, so a match is reported as exact; otherwise
 * distinctive markers give a family guess (rendered in that family's known format), and with
 * no marker a generic ChatML fallback is used.
 *
 * Each family has a hand-written renderer that follows its template statement by statement;
 * the comments cite the Jinja they mirror. Content trimming follows Python's str.strip()
 * (Jinja's `trim` filter and `.strip()` both use it), i.e. Unicode whitespace, not just ASCII.
 * Invariants: the renderers never read past msgs[n-1]; all allocation goes through sbuf, whose
 * failure is reported as LT_ERR_NOMEM once at the end. */
#include "loratune/chat.h"
#include "core/json_file.h"

#include "loratune/gguf.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- growable byte buffer ----------------------------------------------------------- */
typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = lt_realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_puts(sbuf *b, const char *s) {
    sb_put(b, s, strlen(s));
}
static void sb_putc(sbuf *b, char c) {
    sb_put(b, &c, 1);
}
static void sb_putlen(sbuf *b, size_t v) {
    char tmp[32];
    int k = snprintf(tmp, sizeof tmp, "%zu:", v);
    sb_put(b, tmp, (size_t)k);
}

/* ---- Python str.strip() on UTF-8 ---------------------------------------------------- */
/* Code points for which Python's str.isspace() is true. */
static int py_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}
/* Decodes one code point at s[i]; returns its byte length (1 for a malformed byte, with
 * *cp set to a non-space value so that malformed bytes are never trimmed). */
static size_t u8_decode(const unsigned char *s, size_t n, size_t i, uint32_t *cp) {
    unsigned c = s[i];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    *cp = 0xFFFFFFFFu;
    if (len == 0 || i + len > n) return 1;
    uint32_t v = len == 1 ? c : len == 2 ? (c & 0x1f) : len == 3 ? (c & 0x0f) : (c & 0x07);
    for (size_t k = 1; k < len; k++) {
        if ((s[i + k] & 0xc0) != 0x80) return 1;
        v = (v << 6) | (s[i + k] & 0x3f);
    }
    *cp = v;
    return len;
}
/* [*b, *e) = s[0..n) without leading/trailing Python whitespace. */
static void py_strip(const char *s, size_t n, size_t *b, size_t *e) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, first = n, last = n;
    int seen = 0;
    while (i < n) {
        uint32_t cp;
        size_t l = u8_decode(u, n, i, &cp);
        if (!py_space(cp)) {
            if (!seen) first = i;
            seen = 1;
            last = i + l;
        }
        i += l;
    }
    if (!seen) first = last = n;
    *b = first;
    *e = last;
}

/* ---- known templates ---------------------------------------------------------------- */
enum { F_CHATML, F_LLAMA3, F_LLAMA31, F_LLAMA2, F_MISTRAL, F_ZEPHYR };
static const char *const family_names[] = {"chatml", "llama3",  "llama3.1",
                                           "llama2", "mistral", "zephyr"};
enum { SYS_NONE, SYS_FIRST, SYS_LAST }; /* where Mistral folds the system prompt */

typedef struct {
    const char *name;
    int family;
    const char *default_system; /* ChatML: system turn added when messages[0] is not one */
    /* Mistral: user turn = user_prefix [+ system "\n\n"] + content + user_suffix;
     * assistant turn = asst_prefix + content (trimmed if trim_asst) + eos + asst_suffix */
    const char *user_prefix, *user_suffix, *asst_prefix, *asst_suffix;
    int sys_mode, trim_asst;
    const char *text; /* the real template string; NULL for the fallback */
} known_tpl;

/* The template strings, as in the models' tokenizer_config.json (JSON-decoded). The same
 * strings live in tests/data/chat_templates/, where the peer test renders them with Jinja2. */
static const char T_CHATML[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' "
    "}}{% endif %}";
static const char T_QWEN2[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' "
    "+ message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if "
    "add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
static const char T_SMOLLM2[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|im_start|>assistant\n' }}{% endif %}";
static const char T_LLAMA3[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif "
    "%}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
static const char T_LLAMA2[] =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
    "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set "
    "system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] "
    "== 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != "
    "false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + "
    "message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if "
    "message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif "
    "message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% "
    "endfor %}";
static const char T_MISTRAL_LEGACY_MIXTRAL[] =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] "
    "' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ "
    "message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles "
    "are supported!') }}{% endif %}{% endfor %}";
static const char T_MISTRAL_LEGACY_V01[] =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] "
    "' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ "
    "message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}";
static const char T_ZEPHYR[] =
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + "
    "message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' "
    "+ "
    "message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ "
    "'<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and "
    "add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";
static const char T_MISTRAL_V01[] =
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must "
    "alternate user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n"
    "            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the exception "
    "of an initial optional system message!') }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n";
static const char T_MISTRAL_V03_EARLY[] =
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must "
    "alternate user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.last and system_message is defined %}\n"
    "            {{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}\n"
    "        {%- else %}\n"
    "            {{- '[INST] ' + message['content'] + '[/INST]' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the exception "
    "of an initial optional system message!') }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n";
static const char T_LLAMA31[] =
    "{{- bos_token }}\n"
    "{%- if custom_tools is defined %}\n"
    "    {%- set tools = custom_tools %}\n"
    "{%- endif %}\n"
    "{%- if not tools_in_user_message is defined %}\n"
    "    {%- set tools_in_user_message = true %}\n"
    "{%- endif %}\n"
    "{%- if not date_string is defined %}\n"
    "    {%- set date_string = \"26 Jul 2024\" %}\n"
    "{%- endif %}\n"
    "{%- if not tools is defined %}\n"
    "    {%- set tools = none %}\n"
    "{%- endif %}\n"
    "\n"
    "{#- This block extracts the system message, so we can slot it into the right place. #}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set system_message = \"\" %}\n"
    "{%- endif %}\n"
    "\n"
    "{#- System message + builtin tools #}\n"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{%- if builtin_tools is defined or tools is not none %}\n"
    "    {{- \"Environment: ipython\\n\" }}\n"
    "{%- endif %}\n"
    "{%- if builtin_tools is defined %}\n"
    "    {{- \"Tools: \" + builtin_tools | reject('equalto', 'code_interpreter') | join(\", \")"
    " + \"\\n\\n\"}}\n"
    "{%- endif %}\n"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n"
    "{%- if tools is not none and not tools_in_user_message %}\n"
    "    {{- \"You have access to the following functions. To call a function, please respond w"
    "ith JSON for a function call.\" }}\n"
    "    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of arg"
    "ument name and its value}.' }}\n"
    "    {{- \"Do not use variables.\\n\\n\" }}\n"
    "    {%- for t in tools %}\n"
    "        {{- t | tojson(indent=4) }}\n"
    "        {{- \"\\n\\n\" }}\n"
    "    {%- endfor %}\n"
    "{%- endif %}\n"
    "{{- system_message }}\n"
    "{{- \"<|eot_id|>\" }}\n"
    "\n"
    "{#- Custom tools are passed in a user message with some extra guidance #}\n"
    "{%- if tools_in_user_message and not tools is none %}\n"
    "    {#- Extract the first user message so we can plug it in here #}\n"
    "    {%- if messages | length != 0 %}\n"
    "        {%- set first_user_message = messages[0]['content']|trim %}\n"
    "        {%- set messages = messages[1:] %}\n"
    "    {%- else %}\n"
    "        {{- raise_exception(\"Cannot put tools in the first user message when there's no f"
    "irst user message!\") }}\n"
    "{%- endif %}\n"
    "    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}\n"
    "    {{- \"Given the following functions, please respond with a JSON for a function call \""
    " }}\n"
    "    {{- \"with its proper arguments that best answers the given prompt.\\n\\n\" }}\n"
    "    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of arg"
    "ument name and its value}.' }}\n"
    "    {{- \"Do not use variables.\\n\\n\" }}\n"
    "    {%- for t in tools %}\n"
    "        {{- t | tojson(indent=4) }}\n"
    "        {{- \"\\n\\n\" }}\n"
    "    {%- endfor %}\n"
    "    {{- first_user_message + \"<|eot_id|>\"}}\n"
    "{%- endif %}\n"
    "\n"
    "{%- for message in messages %}\n"
    "    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in mes"
    "sage) %}\n"
    "        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['"
    "content'] | trim + '<|eot_id|>' }}\n"
    "    {%- elif 'tool_calls' in message %}\n"
    "        {%- if not message.tool_calls|length == 1 %}\n"
    "            {{- raise_exception(\"This model only supports single tool-calls at once!\") }"
    "}\n"
    "        {%- endif %}\n"
    "        {%- set tool_call = message.tool_calls[0].function %}\n"
    "        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}\n"
    "            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
    "            {{- \"<|python_tag|>\" + tool_call.name + \".call(\" }}\n"
    "            {%- for arg_name, arg_val in tool_call.arguments | items %}\n"
    "                {{- arg_name + '=\"' + arg_val + '\"' }}\n"
    "                {%- if not loop.last %}\n"
    "                    {{- \", \" }}\n"
    "                {%- endif %}\n"
    "                {%- endfor %}\n"
    "            {{- \")\" }}\n"
    "        {%- else  %}\n"
    "            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
    "            {{- '{\"name\": \"' + tool_call.name + '\", ' }}\n"
    "            {{- '\"parameters\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- \"}\" }}\n"
    "        {%- endif %}\n"
    "        {%- if builtin_tools is defined %}\n"
    "            {#- This means we're in ipython mode #}\n"
    "            {{- \"<|eom_id|>\" }}\n"
    "        {%- else %}\n"
    "            {{- \"<|eot_id|>\" }}\n"
    "        {%- endif %}\n"
    "    {%- elif message.role == \"tool\" or message.role == \"ipython\" %}\n"
    "        {{- \"<|start_header_id|>ipython<|end_header_id|>\\n\\n\" }}\n"
    "        {%- if message.content is mapping or message.content is iterable %}\n"
    "            {{- message.content | tojson }}\n"
    "        {%- else %}\n"
    "            {{- message.content }}\n"
    "        {%- endif %}\n"
    "        {{- \"<|eot_id|>\" }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n";
static const char T_MISTRAL_V03[] =
    "{%- if messages[0][\"role\"] == \"system\" %}\n"
    "    {%- set system_message = messages[0][\"content\"] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "{%- if not tools is defined %}\n"
    "    {%- set tools = none %}\n"
    "{%- endif %}\n"
    "{%- set user_messages = loop_messages | selectattr(\"role\", \"equalto\", \"user\") | list"
    " %}\n"
    "\n"
    "{#- This block checks for alternating user/assistant messages, skipping tool calling messa"
    "ges #}\n"
    "{%- set ns = namespace() %}\n"
    "{%- set ns.index = 0 %}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if not (message.role == \"tool\" or message.role == \"tool_results\" or (message.t"
    "ool_calls is defined and message.tool_calls is not none)) %}\n"
    "        {%- if (message[\"role\"] == \"user\") != (ns.index % 2 == 0) %}\n"
    "            {{- raise_exception(\"After the optional system message, conversation roles mu"
    "st alternate user/assistant/user/assistant/...\") }}\n"
    "        {%- endif %}\n"
    "        {%- set ns.index = ns.index + 1 %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if message[\"role\"] == \"user\" %}\n"
    "        {%- if tools is not none and (message == user_messages[-1]) %}\n"
    "            {{- \"[AVAILABLE_TOOLS] [\" }}\n"
    "            {%- for tool in tools %}\n"
    "                {%- set tool = tool.function %}\n"
    "                {{- '{\"type\": \"function\", \"function\": {' }}\n"
    "                {%- for key, val in tool.items() if key != \"return\" %}\n"
    "                    {%- if val is string %}\n"
    "                        {{- '\"' + key + '\": \"' + val + '\"' }}\n"
    "                    {%- else %}\n"
    "                        {{- '\"' + key + '\": ' + val|tojson }}\n"
    "                    {%- endif %}\n"
    "                    {%- if not loop.last %}\n"
    "                        {{- \", \" }}\n"
    "                    {%- endif %}\n"
    "                {%- endfor %}\n"
    "                {{- \"}}\" }}\n"
    "                {%- if not loop.last %}\n"
    "                    {{- \", \" }}\n"
    "                {%- else %}\n"
    "                    {{- \"]\" }}\n"
    "                {%- endif %}\n"
    "            {%- endfor %}\n"
    "            {{- \"[/AVAILABLE_TOOLS]\" }}\n"
    "            {%- endif %}\n"
    "        {%- if loop.last and system_message is defined %}\n"
    "            {{- \"[INST] \" + system_message + \"\\n\\n\" + message[\"content\"] + \"[/INS"
    "T]\" }}\n"
    "        {%- else %}\n"
    "            {{- \"[INST] \" + message[\"content\"] + \"[/INST]\" }}\n"
    "        {%- endif %}\n"
    "    {%- elif message.tool_calls is defined and message.tool_calls is not none %}\n"
    "        {{- \"[TOOL_CALLS] [\" }}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- set out = tool_call.function|tojson %}\n"
    "            {{- out[:-1] }}\n"
    "            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}\n"
    "                {{- raise_exception(\"Tool call IDs should be alphanumeric strings with le"
    "ngth 9!\") }}\n"
    "            {%- endif %}\n"
    "            {{- ', \"id\": \"' + tool_call.id + '\"}' }}\n"
    "            {%- if not loop.last %}\n"
    "                {{- \", \" }}\n"
    "            {%- else %}\n"
    "                {{- \"]\" + eos_token }}\n"
    "            {%- endif %}\n"
    "        {%- endfor %}\n"
    "    {%- elif message[\"role\"] == \"assistant\" %}\n"
    "        {{- \" \" + message[\"content\"]|trim + eos_token}}\n"
    "    {%- elif message[\"role\"] == \"tool_results\" or message[\"role\"] == \"tool\" %}\n"
    "        {%- if message.content is defined and message.content.content is defined %}\n"
    "            {%- set content = message.content.content %}\n"
    "        {%- else %}\n"
    "            {%- set content = message.content %}\n"
    "        {%- endif %}\n"
    "        {{- '[TOOL_RESULTS] {\"content\": ' + content|string + \", \" }}\n"
    "        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}"
    "\n"
    "            {{- raise_exception(\"Tool call IDs should be alphanumeric strings with length"
    " 9!\") }}\n"
    "        {%- endif %}\n"
    "        {{- '\"call_id\": \"' + message.tool_call_id + '\"}[/TOOL_RESULTS]' }}\n"
    "    {%- else %}\n"
    "        {{- raise_exception(\"Only user and assistant roles are supported, with the except"
    "ion of an initial optional system message!\") }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n";

static const known_tpl KNOWN[] = {
    {"chatml", F_CHATML, NULL, 0, 0, 0, 0, 0, 0, T_CHATML},
    {"qwen2-instruct", F_CHATML, "You are a helpful assistant.", 0, 0, 0, 0, 0, 0, T_QWEN2},
    {"smollm2-instruct", F_CHATML,
     "You are a helpful AI assistant named SmolLM, trained by Hugging Face", 0, 0, 0, 0, 0, 0,
     T_SMOLLM2},
    {"llama3-instruct", F_LLAMA3, NULL, 0, 0, 0, 0, 0, 0, T_LLAMA3},
    {"llama3.1-instruct", F_LLAMA31, NULL, 0, 0, 0, 0, 0, 0, T_LLAMA31},
    {"llama2-chat", F_LLAMA2, NULL, 0, 0, 0, 0, 0, 0, T_LLAMA2},
    {"mistral-7b-instruct-v0.1", F_MISTRAL, NULL, " [INST] ", " [/INST]", " ", "", SYS_FIRST, 0,
     T_MISTRAL_V01},
    {"mistral-7b-instruct-v0.3", F_MISTRAL, NULL, "[INST] ", "[/INST]", " ", "", SYS_LAST, 1,
     T_MISTRAL_V03},
    {"mistral-7b-instruct-v0.3-2024-05", F_MISTRAL, NULL, "[INST] ", "[/INST]", " ", "", SYS_LAST,
     0, T_MISTRAL_V03_EARLY},
    {"mistral-legacy-mixtral", F_MISTRAL, NULL, "[INST] ", " [/INST]", "", "", SYS_NONE, 0,
     T_MISTRAL_LEGACY_MIXTRAL},
    {"mistral-legacy-v0.1", F_MISTRAL, NULL, "[INST] ", " [/INST]", "", " ", SYS_NONE, 0,
     T_MISTRAL_LEGACY_V01},
    {"tinyllama-chat", F_ZEPHYR, NULL, 0, 0, 0, 0, 0, 0, T_ZEPHYR},
};
enum { N_KNOWN = sizeof KNOWN / sizeof KNOWN[0] };
static const known_tpl FALLBACK = {"generic-chatml", F_CHATML, NULL, 0, 0, 0, 0, 0, 0, NULL};

/* noinline: once inlined, gcc's -Wstring-compare compares each literal with each table
 * entry and warns about the (intended) mismatches. */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static const known_tpl *known_by_name(const char *name) {
    for (size_t i = 0; i < N_KNOWN; i++)
        if (strcmp(KNOWN[i].name, name) == 0) return &KNOWN[i];
    return &FALLBACK;
}

/* ---- canonical form (a Jinja lexer, no parser, no evaluation) ----------------------- */
static int is_jws(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
static int is_word(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* Emits a string literal starting at s[*i] (a quote) decoded like Jinja does
 * (Python unicode-escape); escapes other than the common ones are kept verbatim, which can
 * only make two equivalent templates compare unequal, never the reverse. -1 if unterminated. */
static int canon_string(const char *s, size_t n, size_t *i, sbuf *out) {
    char q = s[*i];
    sbuf lit = {0};
    size_t k = *i + 1;
    for (; k < n && s[k] != q; k++) {
        if (s[k] == '\\' && k + 1 < n) {
            char e = s[++k];
            switch (e) {
            case 'n':
                sb_putc(&lit, '\n');
                break;
            case 't':
                sb_putc(&lit, '\t');
                break;
            case 'r':
                sb_putc(&lit, '\r');
                break;
            case '\\':
            case '\'':
            case '"':
                sb_putc(&lit, e);
                break;
            default:
                sb_putc(&lit, '\\');
                sb_putc(&lit, e);
                break;
            }
        } else {
            sb_putc(&lit, s[k]);
        }
    }
    if (k >= n) {
        free(lit.p);
        return -1;
    }
    sb_putc(out, 'S');
    sb_putlen(out, lit.n);
    sb_put(out, lit.p ? lit.p : "", lit.n);
    if (lit.oom) out->oom = 1;
    free(lit.p);
    *i = k + 1;
    return 0;
}

/* Canonical form of a template: 'T<len>:<text>' for output text (after whitespace control),
 * '<B...>' / '<V...>' for block and variable tags. Returns 0, or -1 when the template does not
 * lex (unterminated tag or string) or uses {% raw %}: such a template can't be exact. */
static int canonicalise(const char *src, size_t len, sbuf *out) {
    /* Jinja first turns every newline sequence into \n and drops one trailing newline. */
    sbuf nb = {0};
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            sb_putc(&nb, '\n');
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            sb_putc(&nb, src[i]);
        }
    }
    if (nb.oom) {
        free(nb.p);
        return -1;
    }
    const char *s = nb.p ? nb.p : "";
    size_t n = nb.n;
    if (n && s[n - 1] == '\n') n--;

    size_t pos = 0;
    int strip_next = 0; /* 0 none, 1 all whitespace (`-}}`), 2 one newline (trim_blocks) */
    int rc = 0;
    for (;;) {
        size_t t = pos;
        while (t + 1 < n &&
               !(s[t] == '{' && (s[t + 1] == '{' || s[t + 1] == '%' || s[t + 1] == '#')))
            t++;
        if (t + 1 >= n) t = n;
        size_t a = pos, z = t;
        if (strip_next == 1)
            while (a < z && is_jws(s[a]))
                a++;
        else if (strip_next == 2 && a < z && s[a] == '\n')
            a++;
        /* Jinja's line_starting: the previous lexeme (tag end plus what it swallowed)
         * ended with a newline, or this is the start of the template. */
        int line_starting = pos == 0 || (a > pos && s[a - 1] == '\n');
        if (t < n) {
            char kind = s[t + 1];
            char mod = t + 2 < n ? s[t + 2] : 0;
            if (mod == '-') {
                while (z > a && is_jws(s[z - 1]))
                    z--;
            } else if (mod != '+' && kind != '{') { /* lstrip_blocks */
                size_t l = z;
                while (l > a && s[l - 1] != '\n')
                    l--;
                int only_blank = 1;
                for (size_t q = l; q < z; q++)
                    if (s[q] != ' ' && s[q] != '\t') only_blank = 0;
                if ((l > a || line_starting) && only_blank) z = l;
            }
        }
        if (z > a) {
            sb_putc(out, 'T');
            sb_putlen(out, z - a);
            sb_put(out, s + a, z - a);
        }
        if (t >= n) break;

        char kind = s[t + 1];
        size_t p = t + 2;
        if (p < n && (s[p] == '-' || s[p] == '+')) p++;
        char endmod = 0;
        if (kind == '#') {
            size_t e = p;
            while (e + 1 < n && !(s[e] == '#' && s[e + 1] == '}'))
                e++;
            if (e + 1 >= n) {
                rc = -1;
                break;
            }
            if (e > p && (s[e - 1] == '-' || s[e - 1] == '+')) endmod = s[e - 1];
            pos = e + 2;
            strip_next = endmod == '-' ? 1 : endmod == '+' ? 0 : 2;
            continue;
        }
        char close = kind == '{' ? '}' : '%';
        size_t mark = out->n;
        sb_puts(out, kind == '{' ? "<V" : "<B");
        int depth = 0, prev_word = 0, done = 0;
        size_t q = p;
        while (q < n) {
            char c = s[q];
            if (is_jws(c)) {
                q++;
                continue;
            }
            if (depth == 0) {
                if ((c == '-' || c == '+') && q + 2 < n && s[q + 1] == close && s[q + 2] == '}') {
                    endmod = c;
                    q += 3;
                    done = 1;
                    break;
                }
                if (c == close && q + 1 < n && s[q + 1] == '}') {
                    q += 2;
                    done = 1;
                    break;
                }
            }
            if (c == '\'' || c == '"') {
                if (canon_string(s, n, &q, out) != 0) break;
                prev_word = 0;
                continue;
            }
            if (is_word(c)) {
                if (prev_word) sb_putc(out, ' ');
                while (q < n && is_word(s[q]))
                    sb_putc(out, s[q++]);
                prev_word = 1;
                continue;
            }
            if (c == '(' || c == '[' || c == '{') depth++;
            if ((c == ')' || c == ']' || c == '}') && depth > 0) depth--;
            sb_putc(out, c);
            prev_word = 0;
            q++;
        }
        if (!done) {
            rc = -1;
            break;
        }
        sb_putc(out, '>');
        if (kind == '%' && out->n - mark == 6 && memcmp(out->p + mark, "<Braw>", 6) == 0) {
            rc = -1; /* raw blocks would need real lexing of their body */
            break;
        }
        pos = q;
        strip_next = endmod == '-' ? 1 : (kind == '%' && endmod != '+') ? 2 : 0;
    }
    if (out->oom) rc = -1;
    free(nb.p);
    return rc;
}

/* ---- handle ------------------------------------------------------------------------- */
struct lt_chat_template {
    const known_tpl *k;
    int exact, recognised;
    char *source;
    char *bos, *eos;
};

static char *dup_n(const char *s, size_t n) {
    char *p = lt_malloc(n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* Marker-based guess for a template that matched no known one exactly. */
static const known_tpl *guess_family(const char *s) {
    if (strstr(s, "<|start_header_id|>"))
        return known_by_name(strstr(s, "Cutting Knowledge Date") ? "llama3.1-instruct"
                                                                 : "llama3-instruct");
    if (strstr(s, "<|im_start|>")) {
        if (strstr(s, "You are a helpful AI assistant named SmolLM"))
            return known_by_name("smollm2-instruct");
        if (strstr(s, "You are a helpful assistant.")) return known_by_name("qwen2-instruct");
        return known_by_name("chatml");
    }
    if (strstr(s, "[INST]")) {
        if (strstr(s, "<<SYS>>")) return known_by_name("llama2-chat");
        if (strstr(s, "[AVAILABLE_TOOLS]")) return known_by_name("mistral-7b-instruct-v0.3");
        if (strstr(s, "loop.last and system_message"))
            return known_by_name("mistral-7b-instruct-v0.3-2024-05");
        if (strstr(s, "system_message")) return known_by_name("mistral-7b-instruct-v0.1");
        if (strstr(s, "eos_token + ' '")) return known_by_name("mistral-legacy-v0.1");
        return known_by_name("mistral-legacy-mixtral");
    }
    if (strstr(s, "<|user|>") && strstr(s, "<|assistant|>")) return known_by_name("tinyllama-chat");
    return NULL;
}

lt_status lt_chat_template_from_string(const char *jinja, size_t len, lt_chat_template **out) {
    if (!out) return lt_error(LT_ERR_ARG, "lt_chat_template_from_string: out is NULL");
    *out = NULL;
    if (!jinja && len) return lt_error(LT_ERR_ARG, "lt_chat_template_from_string: NULL template");
    lt_chat_template *t = lt_calloc(1, sizeof *t);
    if (!t) return lt_error(LT_ERR_NOMEM, "out of memory");
    t->source = dup_n(jinja ? jinja : "", len);
    t->bos = dup_n("", 0);
    t->eos = dup_n("", 0);
    if (!t->source || !t->bos || !t->eos) {
        lt_chat_template_free(t);
        return lt_error(LT_ERR_NOMEM, "out of memory");
    }
    sbuf mine = {0};
    int ok = canonicalise(t->source, len, &mine) == 0;
    for (size_t i = 0; ok && i < N_KNOWN && !t->exact; i++) {
        sbuf ref = {0};
        if (canonicalise(KNOWN[i].text, strlen(KNOWN[i].text), &ref) == 0 && ref.n == mine.n &&
            (ref.n == 0 || memcmp(ref.p, mine.p, ref.n) == 0)) {
            t->k = &KNOWN[i];
            t->exact = 1;
        }
        free(ref.p);
    }
    free(mine.p);
    if (!t->exact) {
        /* strstr needs a NUL-free prefix; a template with NUL bytes is only guessed on the
         * part before the first NUL. */
        t->k = guess_family(t->source);
    }
    t->recognised = t->k != NULL;
    if (!t->k) t->k = &FALLBACK;
    *out = t;
    return LT_OK;
}

lt_status lt_chat_template_set_special(lt_chat_template *t, const char *bos, const char *eos) {
    if (!t) return lt_error(LT_ERR_ARG, "lt_chat_template_set_special: NULL template");
    char *b = dup_n(bos ? bos : "", bos ? strlen(bos) : 0);
    char *e = dup_n(eos ? eos : "", eos ? strlen(eos) : 0);
    if (!b || !e) {
        free(b);
        free(e);
        return lt_error(LT_ERR_NOMEM, "out of memory");
    }
    free(t->bos);
    free(t->eos);
    t->bos = b;
    t->eos = e;
    return LT_OK;
}

void lt_chat_template_free(lt_chat_template *t) {
    if (!t) return;
    free(t->source);
    free(t->bos);
    free(t->eos);
    free(t);
}

const char *lt_chat_template_family(const lt_chat_template *t) {
    return t ? family_names[t->k->family] : "";
}
const char *lt_chat_template_name(const lt_chat_template *t) {
    return t ? t->k->name : "";
}
int lt_chat_template_is_exact(const lt_chat_template *t) {
    return t && t->exact;
}
int lt_chat_template_is_recognised(const lt_chat_template *t) {
    return t && t->recognised;
}
const char *lt_chat_template_bos(const lt_chat_template *t) {
    return t ? t->bos : "";
}
const char *lt_chat_template_eos(const lt_chat_template *t) {
    return t ? t->eos : "";
}
const char *lt_chat_template_source(const lt_chat_template *t) {
    return t ? t->source : "";
}

/* ---- tokenizer_config.json ---------------------------------------------------------- */
/* bos_token / eos_token: a string, an AddedToken object {"content": ...}, null or absent. */
static lt_status special_from_json(const char *path, json_t *root, const char *key, char **out) {
    json_t *v = json_object_get(root, key);
    *out = NULL;
    const char *s = "";
    size_t n = 0;
    if (v && json_is_object(v)) v = json_object_get(v, "content");
    if (v && json_is_string(v)) {
        s = json_string_value(v);
        n = json_string_length(v);
    } else if (v && !json_is_null(v)) {
        return lt_error(LT_ERR_FORMAT,
                        "%s: field \"%s\": expected a string, an object with a \"content\" "
                        "string, or null",
                        path, key);
    }
    *out = dup_n(s, n);
    return *out ? LT_OK : lt_error(LT_ERR_NOMEM, "out of memory");
}

lt_status lt_chat_template_from_config(const char *path, lt_chat_template **out) {
    if (!out || !path) return lt_error(LT_ERR_ARG, "lt_chat_template_from_config: NULL argument");
    *out = NULL;
    /* INT_AS_REAL: real configs hold integers beyond int64 (model_max_length = 1e30) */
    json_t *root = NULL;
    lt_status st =
        lt_json_load_file(path, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &root);
    if (st == LT_ERR_FORMAT) return lt_error_wrap(st, "tokenizer config is not valid JSON");
    if (st) return st;
    char *tpl = NULL, *bos = NULL, *eos = NULL;
    size_t tpl_len = 0;
    if (!json_is_object(root)) {
        st = lt_error(LT_ERR_FORMAT, "%s: expected a JSON object at the top level", path);
        goto done;
    }
    json_t *ct = json_object_get(root, "chat_template");
    if (ct && json_is_string(ct)) {
        tpl = dup_n(json_string_value(ct), json_string_length(ct));
        tpl_len = json_string_length(ct);
        if (!tpl) st = lt_error(LT_ERR_NOMEM, "out of memory");
    } else if (ct && json_is_array(ct)) {
        size_t i;
        json_t *e;
        json_array_foreach(ct, i, e) {
            json_t *nm = json_object_get(e, "name"), *tx = json_object_get(e, "template");
            if (!json_is_object(e) || !json_is_string(nm) || !json_is_string(tx)) {
                st = lt_error(LT_ERR_FORMAT,
                              "%s: field \"chat_template\"[%zu]: expected an object with string "
                              "fields \"name\" and \"template\"",
                              path, i);
                goto done;
            }
            if (strcmp(json_string_value(nm), "default") == 0 && !tpl) {
                tpl = dup_n(json_string_value(tx), json_string_length(tx));
                tpl_len = json_string_length(tx);
                if (!tpl) {
                    st = lt_error(LT_ERR_NOMEM, "out of memory");
                    goto done;
                }
            }
        }
        if (!tpl) {
            st = lt_error(LT_ERR_NOTFOUND,
                          "%s: field \"chat_template\": list of named templates has no entry "
                          "named \"default\"",
                          path);
            goto done;
        }
    } else if (ct && !json_is_null(ct)) {
        st = lt_error(LT_ERR_FORMAT,
                      "%s: field \"chat_template\": expected a string or a list of "
                      "{\"name\", \"template\"} objects",
                      path);
        goto done;
    } else {
        /* transformers >= 4.43 may keep the template in chat_template.jinja beside the config */
        const char *slash = strrchr(path, '/');
        size_t dl = slash ? (size_t)(slash - path + 1) : 0;
        char *jp = lt_malloc(dl + 32);
        if (!jp) {
            st = lt_error(LT_ERR_NOMEM, "out of memory");
            goto done;
        }
        memcpy(jp, path, dl);
        strcpy(jp + dl, "chat_template.jinja");
        if (lt_path_exists(jp)) {
            st = lt_file_read_all(jp, &tpl, &tpl_len);
        } else {
            st = lt_error(LT_ERR_NOTFOUND,
                          "%s: no \"chat_template\" field (and no chat_template.jinja beside it)",
                          path);
        }
        free(jp);
        if (st) goto done;
    }
    if ((st = special_from_json(path, root, "bos_token", &bos)) != LT_OK) goto done;
    if ((st = special_from_json(path, root, "eos_token", &eos)) != LT_OK) goto done;
    if ((st = lt_chat_template_from_string(tpl, tpl_len, out)) != LT_OK) goto done;
    free((*out)->bos);
    free((*out)->eos);
    (*out)->bos = bos;
    (*out)->eos = eos;
    bos = eos = NULL;
done:
    free(tpl);
    free(bos);
    free(eos);
    json_decref(root);
    return st;
}

/* ---- GGUF --------------------------------------------------------------------------- */
/* The piece of the token whose id is stored under id_key, or "" when the key is absent. */
static lt_status gguf_special(const lt_gguf *g, const char *id_key, char **out) {
    *out = NULL;
    uint32_t id;
    const char *s = "";
    size_t n = 0;
    lt_status st = lt_gguf_get_u32(g, id_key, &id);
    if (st == LT_OK) {
        st = lt_gguf_get_arr_str(g, "tokenizer.ggml.tokens", id, &s, &n);
        if (st != LT_OK) {
            char why[256]; /* a copy: lt_error writes the buffer lt_errmsg() points into */
            snprintf(why, sizeof why, "%s", lt_errmsg());
            return lt_error(LT_ERR_FORMAT,
                            "%s: %s = %u: no such entry in tokenizer.ggml.tokens (%s)",
                            lt_gguf_path(g), id_key, id, why);
        }
    } else if (st != LT_ERR_NOTFOUND) {
        return st;
    }
    *out = dup_n(s, n);
    return *out ? LT_OK : lt_error(LT_ERR_NOMEM, "out of memory");
}

lt_status lt_chat_template_from_gguf(const lt_gguf *g, lt_chat_template **out) {
    if (!out || !g) return lt_error(LT_ERR_ARG, "lt_chat_template_from_gguf: NULL argument");
    *out = NULL;
    const char *s;
    size_t len;
    lt_status st = lt_gguf_get_str(g, "tokenizer.chat_template", &s, &len);
    if (st == LT_ERR_NOTFOUND)
        return lt_error(LT_ERR_NOTFOUND, "%s: no \"tokenizer.chat_template\" key", lt_gguf_path(g));
    if (st != LT_OK) return st;
    char *bos = NULL, *eos = NULL;
    if ((st = gguf_special(g, "tokenizer.ggml.bos_token_id", &bos)) == LT_OK &&
        (st = gguf_special(g, "tokenizer.ggml.eos_token_id", &eos)) == LT_OK &&
        (st = lt_chat_template_from_string(s, len, out)) == LT_OK) {
        free((*out)->bos);
        free((*out)->eos);
        (*out)->bos = bos;
        (*out)->eos = eos;
        return LT_OK;
    }
    free(bos);
    free(eos);
    return st;
}

/* ---- renderers ---------------------------------------------------------------------- */
typedef struct {
    const lt_chat_template *t;
    const lt_chat_message *m;
    size_t n;
    int add_gen;
    sbuf b;
    lt_chat_span *sp; /* may be NULL */
    json_t *tools;    /* tool definitions (a list), NULL when none */
} render_ctx;

/* ---- Python's json.dumps, as transformers' tojson filter calls it ---------------------- */
/* tojson(x, indent=None|N) = json.dumps(x, ensure_ascii=False, indent=indent): separators
 * ", " / ": " without indent, "," + newline + indent with it; empty containers "[]" / "{}";
 * strings escape only '"', '\\' and control characters; floats as Python's repr. Object keys
 * keep their order (jansson keeps insertion order, as Python dicts do). */
static void py_json_str(sbuf *b, const char *s, size_t n) {
    sb_putc(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char tmp[8];
        switch (c) {
        case '"':
            sb_puts(b, "\\\"");
            break;
        case '\\':
            sb_puts(b, "\\\\");
            break;
        case '\n':
            sb_puts(b, "\\n");
            break;
        case '\r':
            sb_puts(b, "\\r");
            break;
        case '\t':
            sb_puts(b, "\\t");
            break;
        case '\b':
            sb_puts(b, "\\b");
            break;
        case '\f':
            sb_puts(b, "\\f");
            break;
        default:
            if (c < 0x20) {
                snprintf(tmp, sizeof tmp, "\\u%04x", c);
                sb_puts(b, tmp);
            } else {
                sb_putc(b, (char)c);
            }
        }
    }
    sb_putc(b, '"');
}

/* Python's float repr: the shortest digits that round-trip, fixed notation when the decimal
 * exponent is in [-4, 16), else d.ddde+XX. */
static void py_float(sbuf *b, double v) {
    char tmp[64];
    if (v != v) {
        sb_puts(b, "NaN");
        return;
    }
    if (v > 1.7976931348623157e308 || v < -1.7976931348623157e308) {
        sb_puts(b, v > 0 ? "Infinity" : "-Infinity");
        return;
    }
    int p = 1;
    for (; p < 17; p++) {
        snprintf(tmp, sizeof tmp, "%.*e", p - 1, v);
        if (strtod(tmp, NULL) == v) break;
    }
    snprintf(tmp, sizeof tmp, "%.*e", p - 1, v);
    /* tmp = [-]d[.ddd]e[+-]XX */
    char digits[32];
    int nd = 0, neg = tmp[0] == '-';
    const char *q = tmp + neg;
    for (; *q && *q != 'e'; q++)
        if (*q != '.') digits[nd++] = *q;
    int exp10 = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = 0;
    if (neg) sb_putc(b, '-');
    if (exp10 >= -5 + 1 && exp10 < 16) {
        if (exp10 < 0) {
            sb_puts(b, "0.");
            for (int i = 0; i < -exp10 - 1; i++)
                sb_putc(b, '0');
            sb_puts(b, digits);
        } else {
            for (int i = 0; i <= exp10; i++)
                sb_putc(b, i < nd ? digits[i] : '0');
            sb_putc(b, '.');
            if (nd > exp10 + 1)
                sb_puts(b, digits + exp10 + 1);
            else
                sb_putc(b, '0');
        }
    } else {
        sb_putc(b, digits[0]);
        if (nd > 1) {
            sb_putc(b, '.');
            sb_puts(b, digits + 1);
        }
        snprintf(tmp, sizeof tmp, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
        sb_puts(b, tmp);
    }
}

static void py_json(sbuf *b, const json_t *v, int indent, int level) {
    char tmp[32];
    switch (json_typeof(v)) {
    case JSON_OBJECT:
    case JSON_ARRAY: {
        int is_obj = json_is_object(v);
        size_t n = is_obj ? json_object_size(v) : json_array_size(v);
        if (!n) {
            sb_puts(b, is_obj ? "{}" : "[]");
            return;
        }
        sb_putc(b, is_obj ? '{' : '[');
        size_t i = 0;
        const char *key;
        json_t *val;
        void *it = is_obj ? json_object_iter((json_t *)v) : NULL;
        for (i = 0; i < n; i++) {
            if (i) sb_puts(b, indent >= 0 ? "," : ", ");
            if (indent >= 0) {
                sb_putc(b, '\n');
                for (int k = 0; k < indent * (level + 1); k++)
                    sb_putc(b, ' ');
            }
            if (is_obj) {
                key = json_object_iter_key(it);
                val = json_object_iter_value(it);
                py_json_str(b, key, strlen(key));
                sb_puts(b, ": ");
                it = json_object_iter_next((json_t *)v, it);
            } else {
                val = json_array_get(v, i);
            }
            py_json(b, val, indent, level + 1);
        }
        if (indent >= 0) {
            sb_putc(b, '\n');
            for (int k = 0; k < indent * level; k++)
                sb_putc(b, ' ');
        }
        sb_putc(b, is_obj ? '}' : ']');
        return;
    }
    case JSON_STRING:
        py_json_str(b, json_string_value(v), json_string_length(v));
        return;
    case JSON_INTEGER:
        snprintf(tmp, sizeof tmp, "%lld", (long long)json_integer_value(v));
        sb_puts(b, tmp);
        return;
    case JSON_REAL:
        py_float(b, json_real_value(v));
        return;
    case JSON_TRUE:
        sb_puts(b, "true");
        return;
    case JSON_FALSE:
        sb_puts(b, "false");
        return;
    default:
        sb_puts(b, "null");
        return;
    }
}

static int role_is(const lt_chat_message *m, const char *r) {
    return strcmp(m->role, r) == 0;
}

static void span_begin(render_ctx *c, size_t i) {
    if (c->sp) c->sp[i].begin = c->b.n;
}
static void span_end(render_ctx *c, size_t i) {
    if (c->sp) c->sp[i].end = c->b.n;
}
/* Appends text as message i's content and records its range. */
static void put_content(render_ctx *c, size_t i, const char *s, size_t n) {
    if (c->sp) c->sp[i].content_begin = c->b.n;
    sb_put(&c->b, s, n);
    if (c->sp) c->sp[i].content_end = c->b.n;
}
static void put_content_trimmed(render_ctx *c, size_t i, const char *s) {
    size_t b, e;
    py_strip(s, strlen(s), &b, &e);
    put_content(c, i, s + b, e - b);
}

static lt_status role_error(const render_ctx *c, size_t i, const char *allowed) {
    return lt_error(LT_ERR_ARG,
                    "chat template '%s': message %zu has role '%s'; this template supports %s",
                    c->t->k->name, i, c->m[i].role, allowed);
}
static lt_status alternation_error(const render_ctx *c, size_t i, int after_system) {
    return lt_error(LT_ERR_ARG,
                    "chat template '%s': message %zu (role '%s') breaks the alternation "
                    "user/assistant/user/assistant/...%s that the template requires",
                    c->t->k->name, i, c->m[i].role,
                    after_system ? " (after an optional first system message)" : "");
}

/* ChatML: {'<|im_start|>' + role + '\n' + content + '<|im_end|>' + '\n'} per message; Qwen2 and
 * SmolLM2 first add a default system turn `if loop.first and messages[0]['role'] != 'system'`. */
static lt_status render_chatml(render_ctx *c) {
    const known_tpl *k = c->t->k;
    for (size_t i = 0; i < c->n; i++)
        if (!role_is(&c->m[i], "system") && !role_is(&c->m[i], "user") &&
            !role_is(&c->m[i], "assistant") && !role_is(&c->m[i], "tool"))
            return role_error(c, i, "system, user, assistant and tool");
    for (size_t i = 0; i < c->n; i++) {
        if (i == 0 && k->default_system && !role_is(&c->m[0], "system")) {
            sb_puts(&c->b, "<|im_start|>system\n");
            sb_puts(&c->b, k->default_system);
            sb_puts(&c->b, "<|im_end|>\n");
        }
        span_begin(c, i);
        sb_puts(&c->b, "<|im_start|>");
        sb_puts(&c->b, c->m[i].role);
        sb_puts(&c->b, "\n");
        put_content(c, i, c->m[i].content, strlen(c->m[i].content));
        sb_puts(&c->b, "<|im_end|>\n");
        span_end(c, i);
    }
    if (c->add_gen) sb_puts(&c->b, "<|im_start|>assistant\n");
    return LT_OK;
}

/* The Llama 3 / 3.1 turns from message `start` on: '<|start_header_id|>' + role +
 * '<|end_header_id|>\n\n' + content|trim + '<|eot_id|>' (bos_token before message 0 when
 * bos_first), then the generation prompt. */
static lt_status put_llama3_turns(render_ctx *c, size_t start, int bos_first) {
    for (size_t i = start; i < c->n; i++) {
        span_begin(c, i);
        if (bos_first && i == 0) sb_puts(&c->b, c->t->bos);
        sb_puts(&c->b, "<|start_header_id|>");
        sb_puts(&c->b, c->m[i].role);
        sb_puts(&c->b, "<|end_header_id|>\n\n");
        put_content_trimmed(c, i, c->m[i].content);
        sb_puts(&c->b, "<|eot_id|>");
        span_end(c, i);
    }
    if (c->add_gen) sb_puts(&c->b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return LT_OK;
}

/* Llama 3: (bos_token on the first) + '<|start_header_id|>' + role + '<|end_header_id|>\n\n' +
 * content|trim + '<|eot_id|>'. */
static lt_status render_llama3(render_ctx *c) {
    for (size_t i = 0; i < c->n; i++)
        if (!role_is(&c->m[i], "system") && !role_is(&c->m[i], "user") &&
            !role_is(&c->m[i], "assistant") && !role_is(&c->m[i], "tool"))
            return role_error(c, i, "system, user, assistant and tool");
    return put_llama3_turns(c, 0, 1);
}

/* Llama 3.1 without tools (tools undefined -> none, no builtin_tools, no tool messages):
 * bos_token + system header + the date lines + messages[0].content|trim if it is a system
 * message + '<|eot_id|>', then the remaining messages as in Llama 3. date_string keeps the
 * template's default "26 Jul 2024" (transformers passes none unless asked). */
static lt_status render_llama31(render_ctx *c) {
    for (size_t i = 0; i < c->n; i++)
        if (!role_is(&c->m[i], "system") && !role_is(&c->m[i], "user") &&
            !role_is(&c->m[i], "assistant"))
            return role_error(c, i, "system, user and assistant (tool calls are not supported)");
    size_t start = 0;
    sb_puts(&c->b, c->t->bos);
    sb_puts(&c->b, "<|start_header_id|>system<|end_header_id|>\n\n");
    /* tools is not none (tools_in_user_message defaults to true, no builtin_tools) */
    if (c->tools) sb_puts(&c->b, "Environment: ipython\n");
    sb_puts(&c->b, "Cutting Knowledge Date: December 2023\n");
    sb_puts(&c->b, "Today Date: 26 Jul 2024\n\n");
    if (role_is(&c->m[0], "system")) {
        if (c->sp) c->sp[0].begin = 0;
        put_content_trimmed(c, 0, c->m[0].content);
        start = 1;
    }
    sb_puts(&c->b, "<|eot_id|>");
    if (start) span_end(c, 0);
    if (c->tools) {
        /* the first message after the system one becomes the user turn holding the tools */
        if (start >= c->n)
            return lt_error(LT_ERR_ARG,
                            "chat template '%s': tools need a first user message "
                            "to go into, and there is none",
                            c->t->k->name);
        if (!role_is(&c->m[start], "user"))
            return lt_error(LT_ERR_ARG,
                            "chat template '%s': with tools, message %zu must be the "
                            "user's (the template puts the tool definitions into it), not '%s'",
                            c->t->k->name, start, c->m[start].role);
        span_begin(c, start);
        sb_puts(&c->b, "<|start_header_id|>user<|end_header_id|>\n\n");
        sb_puts(&c->b, "Given the following functions, please respond with a JSON for a function "
                       "call with its proper arguments that best answers the given prompt.\n\n");
        sb_puts(&c->b, "Respond in the format {\"name\": function name, \"parameters\": "
                       "dictionary of argument name and its value}.Do not use variables.\n\n");
        for (size_t i = 0; i < json_array_size(c->tools); i++) {
            py_json(&c->b, json_array_get(c->tools, i), 4, 0);
            sb_puts(&c->b, "\n\n");
        }
        put_content_trimmed(c, start, c->m[start].content);
        sb_puts(&c->b, "<|eot_id|>");
        span_end(c, start);
        start++;
    }
    return put_llama3_turns(c, start, 0);
}

/* Llama 2: optional system message folded into the first turn as
 * '<<SYS>>\n' + system + '\n<</SYS>>\n\n' + content; roles must alternate starting with user;
 * user: bos_token + '[INST] ' + content.strip() + ' [/INST]'; assistant: ' ' + content.strip()
 * + ' ' + eos_token. add_generation_prompt is ignored by the template. */
static lt_status render_llama2(render_ctx *c) {
    size_t start = role_is(&c->m[0], "system") ? 1 : 0;
    for (size_t i = start; i < c->n; i++) {
        size_t k = i - start;
        int is_user = role_is(&c->m[i], "user");
        if (is_user != (k % 2 == 0)) return alternation_error(c, i, 1);
        if (!is_user && !role_is(&c->m[i], "assistant"))
            return role_error(c, i, "a first system message, then user and assistant");
    }
    static const char pre[] = "<<SYS>>\n", mid[] = "\n<</SYS>>\n\n";
    for (size_t i = start; i < c->n; i++) {
        const char *content = c->m[i].content;
        size_t clen = strlen(content), sys_len = 0, user_off = 0;
        char *joined = NULL;
        if (i == start && start == 1) {
            sys_len = strlen(c->m[0].content);
            user_off = (sizeof pre - 1) + sys_len + (sizeof mid - 1);
            joined = lt_malloc(user_off + clen + 1);
            if (!joined) return lt_error(LT_ERR_NOMEM, "out of memory");
            memcpy(joined, pre, sizeof pre - 1);
            memcpy(joined + sizeof pre - 1, c->m[0].content, sys_len);
            memcpy(joined + sizeof pre - 1 + sys_len, mid, sizeof mid - 1);
            memcpy(joined + user_off, content, clen + 1);
            content = joined;
            clen += user_off;
        }
        size_t b, e;
        py_strip(content, clen, &b, &e);
        span_begin(c, i);
        if (role_is(&c->m[i], "user")) {
            sb_puts(&c->b, c->t->bos);
            sb_puts(&c->b, "[INST] ");
        } else {
            sb_puts(&c->b, " ");
        }
        size_t at = c->b.n;
        sb_put(&c->b, content + b, e - b);
        if (c->sp) {
            /* the user's own text starts after the <<SYS>> block (strip can't reach into the
             * system text: '<<SYS>>' and '\n<</SYS>>' fence it) */
            size_t ub = user_off > b ? user_off : b, ue = e > ub ? e : ub;
            c->sp[i].content_begin = at + (ub - b);
            c->sp[i].content_end = at + (ue - b);
            if (joined) {
                c->sp[0].begin = c->sp[0].end = 0;
                c->sp[0].content_begin = at + (sizeof pre - 1) - b;
                c->sp[0].content_end = c->sp[0].content_begin + sys_len;
            }
        }
        if (role_is(&c->m[i], "user")) {
            sb_puts(&c->b, " [/INST]");
        } else {
            sb_puts(&c->b, " ");
            sb_puts(&c->b, c->t->eos);
        }
        span_end(c, i);
        free(joined);
    }
    return LT_OK;
}

/* Mistral Instruct: bos_token, then user/assistant turns that must alternate (after an optional
 * first system message, for the templates that take one). The system prompt goes into the
 * first user turn (v0.1/v0.2) or into the user turn that is the LAST message (v0.3) - if the
 * conversation ends with an assistant turn, v0.3 drops it. add_generation_prompt is ignored. */
static lt_status render_mistral(render_ctx *c) {
    const known_tpl *k = c->t->k;
    size_t start = (k->sys_mode != SYS_NONE && role_is(&c->m[0], "system")) ? 1 : 0;
    for (size_t i = start; i < c->n; i++) {
        int is_user = role_is(&c->m[i], "user");
        if (is_user != ((i - start) % 2 == 0))
            return alternation_error(c, i, k->sys_mode != SYS_NONE);
    }
    for (size_t i = start; i < c->n; i++)
        if (!role_is(&c->m[i], "user") && !role_is(&c->m[i], "assistant"))
            return role_error(c, i,
                              k->sys_mode != SYS_NONE
                                  ? "a first system message, then user and assistant"
                                  : "user and assistant only");
    if (start && c->sp) memset(&c->sp[0], 0, sizeof c->sp[0]);
    size_t last_user = c->n;
    for (size_t i = start; i < c->n; i++)
        if (role_is(&c->m[i], "user")) last_user = i;
    if (c->tools)
        for (size_t i = 0; i < json_array_size(c->tools); i++)
            if (!json_is_object(json_object_get(json_array_get(c->tools, i), "function")))
                return lt_error(LT_ERR_ARG,
                                "chat template '%s': tools[%zu] has no 'function' "
                                "object (expected {\"type\": \"function\", \"function\": {...}})",
                                k->name, i);
    sb_puts(&c->b, c->t->bos);
    for (size_t i = start; i < c->n; i++) {
        span_begin(c, i);
        /* `tools is not none and (message == user_messages[-1])`: dict equality, so an earlier
         * user message with the same content gets the tools too */
        if (c->tools && role_is(&c->m[i], "user") &&
            !strcmp(c->m[i].content, c->m[last_user].content)) {
            sb_puts(&c->b, "[AVAILABLE_TOOLS] [");
            size_t nt = json_array_size(c->tools);
            for (size_t j = 0; j < nt; j++) {
                json_t *fn = json_object_get(json_array_get(c->tools, j), "function");
                sb_puts(&c->b, "{\"type\": \"function\", \"function\": {");
                const char *key;
                json_t *val;
                int first = 1;
                json_object_foreach(fn, key, val) {
                    if (!strcmp(key, "return")) continue;
                    if (!first) sb_puts(&c->b, ", ");
                    first = 0;
                    sb_putc(&c->b, '"');
                    sb_puts(&c->b, key);
                    sb_puts(&c->b, "\": ");
                    if (json_is_string(val)) { /* '"' + val + '"', unescaped */
                        sb_putc(&c->b, '"');
                        sb_put(&c->b, json_string_value(val), json_string_length(val));
                        sb_putc(&c->b, '"');
                    } else {
                        py_json(&c->b, val, -1, 0);
                    }
                }
                sb_puts(&c->b, "}}");
                sb_puts(&c->b, j + 1 < nt ? ", " : "]");
            }
            sb_puts(&c->b, "[/AVAILABLE_TOOLS]");
        }
        if (role_is(&c->m[i], "user")) {
            sb_puts(&c->b, k->user_prefix);
            int with_sys = start && ((k->sys_mode == SYS_FIRST && i == start) ||
                                     (k->sys_mode == SYS_LAST && i == c->n - 1));
            if (with_sys) {
                put_content(c, 0, c->m[0].content, strlen(c->m[0].content));
                sb_puts(&c->b, "\n\n");
            }
            put_content(c, i, c->m[i].content, strlen(c->m[i].content));
            sb_puts(&c->b, k->user_suffix);
        } else {
            sb_puts(&c->b, k->asst_prefix);
            if (k->trim_asst)
                put_content_trimmed(c, i, c->m[i].content);
            else
                put_content(c, i, c->m[i].content, strlen(c->m[i].content));
            sb_puts(&c->b, c->t->eos);
            sb_puts(&c->b, k->asst_suffix);
        }
        span_end(c, i);
    }
    return LT_OK;
}

/* Zephyr (TinyLlama chat): '<|user|>\n' / '<|system|>\n' / '<|assistant|>\n' + content +
 * eos_token, each followed by the '\n' that trim_blocks leaves after `}}`; with
 * add_generation_prompt, '<|assistant|>\n' after the last message. */
static lt_status render_zephyr(render_ctx *c) {
    for (size_t i = 0; i < c->n; i++)
        if (!role_is(&c->m[i], "system") && !role_is(&c->m[i], "user") &&
            !role_is(&c->m[i], "assistant"))
            return role_error(c, i, "system, user and assistant");
    for (size_t i = 0; i < c->n; i++) {
        span_begin(c, i);
        sb_puts(&c->b, "<|");
        sb_puts(&c->b, c->m[i].role);
        sb_puts(&c->b, "|>\n");
        put_content(c, i, c->m[i].content, strlen(c->m[i].content));
        sb_puts(&c->b, c->t->eos);
        sb_puts(&c->b, "\n");
        span_end(c, i);
        if (i == c->n - 1 && c->add_gen) sb_puts(&c->b, "<|assistant|>\n");
    }
    return LT_OK;
}

static lt_status render_any(const lt_chat_template *t, const lt_chat_message *msgs, size_t n,
                            json_t *tools, int add_generation_prompt, char **out, size_t *out_len,
                            lt_chat_span *spans);

int lt_chat_template_supports_tools(const lt_chat_template *t) {
    if (!t) return 0;
    return t->k->family == F_LLAMA31 || !strcmp(t->k->name, "mistral-7b-instruct-v0.3");
}

lt_status lt_chat_render_tools(const lt_chat_template *t, const lt_chat_message *msgs, size_t n,
                               const char *tools_json, int add_generation_prompt, char **out,
                               size_t *out_len, lt_chat_span *spans) {
    if (out) *out = NULL;
    if (out_len) *out_len = 0;
    if (!tools_json)
        return render_any(t, msgs, n, NULL, add_generation_prompt, out, out_len, spans);
    if (!t || !out) return lt_error(LT_ERR_ARG, "lt_chat_render: NULL template or output");
    if (!lt_chat_template_supports_tools(t))
        return lt_error(LT_ERR_UNSUPPORTED,
                        "chat template '%s' does not render tool definitions (known templates "
                        "that do: llama3.1-instruct, mistral-7b-instruct-v0.3)",
                        t->k->name);
    json_error_t e;
    json_t *tools = json_loads(tools_json, 0, &e);
    if (!tools || !json_is_array(tools)) {
        json_decref(tools);
        return lt_error(LT_ERR_ARG,
                        "chat template '%s': tools: expected a JSON list of tool "
                        "definitions",
                        t->k->name);
    }
    lt_status st = render_any(t, msgs, n, tools, add_generation_prompt, out, out_len, spans);
    json_decref(tools);
    return st;
}

lt_status lt_chat_render_spans(const lt_chat_template *t, const lt_chat_message *msgs, size_t n,
                               int add_generation_prompt, char **out, size_t *out_len,
                               lt_chat_span *spans) {
    return render_any(t, msgs, n, NULL, add_generation_prompt, out, out_len, spans);
}

static lt_status render_any(const lt_chat_template *t, const lt_chat_message *msgs, size_t n,
                            json_t *tools, int add_generation_prompt, char **out, size_t *out_len,
                            lt_chat_span *spans) {
    if (out) *out = NULL;
    if (out_len) *out_len = 0;
    if (!t || !out) return lt_error(LT_ERR_ARG, "lt_chat_render: NULL template or output");
    if (n == 0 || !msgs)
        return lt_error(LT_ERR_ARG, "chat template '%s': empty conversation (no messages)",
                        t->k->name);
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content)
            return lt_error(LT_ERR_ARG, "chat template '%s': message %zu has a NULL %s", t->k->name,
                            i, msgs[i].role ? "content" : "role");
    }
    if (spans) memset(spans, 0, n * sizeof *spans);
    render_ctx c = {t, msgs, n, add_generation_prompt != 0, {0}, spans, tools};
    lt_status st;
    switch (t->k->family) {
    case F_CHATML:
        st = render_chatml(&c);
        break;
    case F_LLAMA3:
        st = render_llama3(&c);
        break;
    case F_LLAMA31:
        st = render_llama31(&c);
        break;
    case F_LLAMA2:
        st = render_llama2(&c);
        break;
    case F_MISTRAL:
        st = render_mistral(&c);
        break;
    case F_ZEPHYR:
        st = render_zephyr(&c);
        break;
    default:
        st = lt_error(LT_ERR_INTERNAL, "chat template: bad family %d", t->k->family);
    }
    if (st == LT_OK && c.b.oom) st = lt_error(LT_ERR_NOMEM, "out of memory rendering a chat");
    if (st == LT_OK && !c.b.p) sb_put(&c.b, "", 0);
    if (st == LT_OK && c.b.oom) st = lt_error(LT_ERR_NOMEM, "out of memory rendering a chat");
    if (st != LT_OK) {
        free(c.b.p);
        if (spans) memset(spans, 0, n * sizeof *spans);
        return st;
    }
    *out = c.b.p;
    if (out_len) *out_len = c.b.n;
    return LT_OK;
}

lt_status lt_chat_render(const lt_chat_template *t, const lt_chat_message *msgs, size_t n,
                         int add_generation_prompt, char **out) {
    return lt_chat_render_spans(t, msgs, n, add_generation_prompt, out, NULL, NULL);
}
