"""Jinja chat templates of the instruct checkpoints whose layouts slm builds in
(text/chat_format.h), written out here so that nothing is downloaded: the public templates of
Meta-Llama-3-8B-Instruct, Llama-3.1-8B-Instruct (its tool-calling branches left out),
Qwen2.5-Instruct (tool branches left out), SmolLM2-Instruct, Mistral-7B-Instruct v0.2 and v0.3 and
gemma-2-it. make_family_references.py renders test conversations with transformers'
apply_chat_template; tests/parity/chat_format_parity_test.cpp checks slm renders the same text.
"""

TEMPLATES = {
    "llama3": (
        "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
        "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] "
        "| trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
        "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"),
    "llama3_1": (
        "{{- bos_token }}\n"
        "{%- if not date_string is defined %}\n"
        "    {%- set date_string = \"26 Jul 2024\" %}\n"
        "{%- endif %}\n"
        "{%- if messages[0]['role'] == 'system' %}\n"
        "    {%- set system_message = messages[0]['content']|trim %}\n"
        "    {%- set messages = messages[1:] %}\n"
        "{%- else %}\n"
        "    {%- set system_message = \"\" %}\n"
        "{%- endif %}\n"
        "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
        "{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n"
        "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n"
        "{{- system_message }}\n"
        "{{- \"<|eot_id|>\" }}\n"
        "{%- for message in messages %}\n"
        "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ "
        "message['content'] | trim + '<|eot_id|>' }}\n"
        "{%- endfor %}\n"
        "{%- if add_generation_prompt %}\n"
        "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
        "{%- endif %}\n"),
    "chatml": (
        "{%- if messages[0]['role'] == 'system' %}\n"
        "    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
        "{%- else %}\n"
        "    {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
        "assistant.<|im_end|>\\n' }}\n"
        "{%- endif %}\n"
        "{%- for message in messages %}\n"
        "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
        "(message.role == \"assistant\" and not message.tool_calls) %}\n"
        "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
        "    {%- endif %}\n"
        "{%- endfor %}\n"
        "{%- if add_generation_prompt %}\n"
        "    {{- '<|im_start|>assistant\\n' }}\n"
        "{%- endif %}\n"),
    "chatml_smollm2": (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
        "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|im_start|>assistant\n' }}{% endif %}"),
    "mistral": (
        "{%- if messages[0][\"role\"] == \"system\" %}\n"
        "    {%- set system_message = messages[0][\"content\"] %}\n"
        "    {%- set loop_messages = messages[1:] %}\n"
        "{%- else %}\n"
        "    {%- set loop_messages = messages %}\n"
        "{%- endif %}\n"
        "{{- bos_token }}\n"
        "{%- for message in loop_messages %}\n"
        "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
        "        {{- raise_exception('After the optional system message, conversation roles must "
        "alternate user/assistant/user/assistant/...') }}\n"
        "    {%- endif %}\n"
        "    {%- if message[\"role\"] == \"user\" %}\n"
        "        {%- if loop.last and system_message is defined %}\n"
        "            {{- \"[INST] \" + system_message + \"\\n\\n\" + message[\"content\"] + \"[/INST]\" }}\n"
        "        {%- else %}\n"
        "            {{- \"[INST] \" + message[\"content\"] + \"[/INST]\" }}\n"
        "        {%- endif %}\n"
        "    {%- elif message[\"role\"] == \"assistant\" %}\n"
        "        {{- \" \" + message[\"content\"] + eos_token}}\n"
        "    {%- else %}\n"
        "        {{- raise_exception('Only user and assistant roles are supported, with the "
        "exception of an initial optional system message!') }}\n"
        "    {%- endif %}\n"
        "{%- endfor %}\n"),
    "mistral_v0_2": (
        "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
        "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
        "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
        "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
        "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
        "roles are supported!') }}{% endif %}{% endfor %}"),
    "gemma": (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role "
        "not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == "
        "'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must "
        "alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == "
        "'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
        "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"),
}

# The slm format each template is recognised as, and its BOS / EOS strings.
FORMAT = {"llama3": "llama3", "llama3_1": "llama3", "chatml": "chatml", "chatml_smollm2": "chatml",
          "mistral": "mistral", "mistral_v0_2": "mistral", "gemma": "gemma"}
BOS = {"llama3": "<|begin_of_text|>", "llama3_1": "<|begin_of_text|>", "chatml": None,
       "chatml_smollm2": None, "mistral": "<s>", "mistral_v0_2": "<s>", "gemma": "<bos>"}
EOS = {"llama3": "<|eot_id|>", "llama3_1": "<|eot_id|>", "chatml": "<|im_end|>",
       "chatml_smollm2": "<|im_end|>", "mistral": "</s>", "mistral_v0_2": "</s>",
       "gemma": "<eos>"}


def conversations(name):
    """Test conversations for a template (Gemma 2 and Mistral v0.2 refuse system messages)."""
    system_ok = name not in ("gemma", "mistral_v0_2")
    out = [
        {"messages": [{"role": "user", "content": "<speech> Transcribe:"}], "generation": True},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"},
                      {"role": "user", "content": "<speech> and this?"}], "generation": True},
        {"messages": [{"role": "user", "content": " a "}, {"role": "assistant", "content": " b "}],
         "generation": False},
    ]
    if system_ok:
        out.append({"messages": [{"role": "system", "content": "You answer briefly."},
                                 {"role": "user", "content": "What is <image> ?"}],
                    "generation": True})
        out.append({"messages": [{"role": "system", "content": "Be kind."},
                                 {"role": "user", "content": "one"},
                                 {"role": "assistant", "content": "two"},
                                 {"role": "user", "content": "three"}], "generation": True})
    return out
