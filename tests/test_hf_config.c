/* config.json parsing: transformers' per-type defaults, both rope spellings,
 * and one-line errors naming the file (line:column for bad JSON, the key for
 * wrong types). */
#include "compiler/hf_config.h"

#include "check.h"

#include <string.h>

#define SIZES                                                                                      \
    "\"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "                  \
    "\"intermediate_size\": 128, \"vocab_size\": 256"

static int parse(const char *json, qc_config *c, qc_hf_config_info *info, qc_err *err) {
    return qc_hf_config_parse(json, strlen(json), "cfg/config.json", c, info, err);
}

static void expect_fail(const char *json, const char *want) {
    qc_config c;
    qc_err err = {{0}};
    CHECK_MSG(parse(json, &c, NULL, &err) != 0, "parsed: %s", json);
    CHECK_MSG(strncmp(err.msg, "cfg/config.json: ", 17) == 0, "'%s' does not name the file",
              err.msg);
    CHECK_MSG(strstr(err.msg, want), "'%s' lacks '%s'", err.msg, want);
    CHECK_MSG(!strchr(err.msg, '\n'), "multi-line '%s'", err.msg);
}

static void test_defaults(void) {
    qc_config c;
    qc_hf_config_info info;
    qc_err err = {{0}};
    /* llama: kv heads = heads, head_dim = hidden/heads, theta 10000, bos 1,
     * eos 2, untied, max_pos 2048. */
    CHECK_MSG(parse("{\"model_type\": \"llama\", " SIZES "}", &c, &info, &err) == 0, "%s", err.msg);
    CHECK(c.arch == QC_ARCH_LLAMA && strcmp(c.arch_name, "llama") == 0);
    CHECK(c.n_kv_heads == 4 && c.head_dim == 16 && c.rope_theta == 10000.0f);
    CHECK(c.bos_id == 1 && c.eos_id == 2 && !c.tied_embeddings && c.max_pos == 2048);
    CHECK(c.norm_eps == 1e-6f && c.rope_scaling == QC_ROPE_NONE && !c.attn_bias && !c.qk_norm);
    CHECK(info.sliding_window == 0);
    /* mistral: kv heads default 8, window 4096 < max_pos reported. */
    CHECK(parse("{\"model_type\": \"mistral\", \"num_key_value_heads\": 2, \"sliding_window\": "
                "4096, " SIZES "}",
                &c, &info, &err) == 0);
    CHECK(c.arch == QC_ARCH_MISTRAL && c.n_kv_heads == 2 && c.max_pos == 131072);
    CHECK(info.sliding_window == 4096);
    CHECK(parse("{\"model_type\": \"mistral\", " SIZES "}", &c, &info, &err) == 0);
    CHECK(c.n_kv_heads == 8);
    /* qwen2: bias, no bos/eos by default, sliding window only with
     * use_sliding_window; null kv heads = heads. */
    CHECK(parse("{\"model_type\": \"qwen2\", \"num_key_value_heads\": null, \"sliding_window\": "
                "128, " SIZES "}",
                &c, &info, &err) == 0);
    CHECK(c.arch == QC_ARCH_QWEN2 && c.attn_bias && c.n_kv_heads == 4);
    CHECK(c.bos_id == -1 && c.eos_id == -1 && info.sliding_window == 0 && c.max_pos == 32768);
    CHECK(parse("{\"model_type\": \"qwen2\", \"use_sliding_window\": true, \"sliding_window\": "
                "128, " SIZES "}",
                &c, &info, &err) == 0);
    CHECK(info.sliding_window == 128 && c.n_kv_heads == 32);
    /* qwen3: qk norm, head_dim default 128. */
    CHECK(parse("{\"model_type\": \"qwen3\", " SIZES "}", &c, NULL, &err) == 0);
    CHECK(c.arch == QC_ARCH_QWEN3 && c.qk_norm && !c.attn_bias && c.head_dim == 128);
    /* architectures alone is enough; eos list takes the first id. */
    CHECK(parse("{\"architectures\": [\"Qwen3ForCausalLM\"], \"head_dim\": 32, \"eos_token_id\": "
                "[7, 8], \"bos_token_id\": null, \"tie_word_embeddings\": true, " SIZES "}",
                &c, NULL, &err) == 0);
    CHECK(c.arch == QC_ARCH_QWEN3 && c.head_dim == 32 && c.eos_id == 7 && c.bos_id == -1);
    CHECK(c.tied_embeddings && strcmp(c.arch_name, "Qwen3ForCausalLM") == 0);
}

static void test_rope(void) {
    qc_config c;
    qc_err err = {{0}};
    /* transformers 4 spelling. */
    CHECK_MSG(parse("{\"model_type\": \"llama\", \"rope_theta\": 500000, \"rope_scaling\": "
                    "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1, "
                    "\"high_freq_factor\": 4, \"original_max_position_embeddings\": 8192}, " SIZES
                    "}",
                    &c, NULL, &err) == 0,
              "%s", err.msg);
    CHECK(c.rope_theta == 500000.0f && c.rope_scaling == QC_ROPE_LLAMA3 && c.rope_factor == 8.0f);
    CHECK(c.rope_low_freq_factor == 1.0f && c.rope_high_freq_factor == 4.0f &&
          c.rope_orig_max_pos == 8192);
    /* transformers 5 spelling. */
    CHECK_MSG(parse("{\"model_type\": \"llama\", \"rope_parameters\": {\"rope_theta\": 250000.0, "
                    "\"rope_type\": \"llama3\", \"factor\": 32.0, \"low_freq_factor\": 1.0, "
                    "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}, " SIZES
                    "}",
                    &c, NULL, &err) == 0,
              "%s", err.msg);
    CHECK(c.rope_theta == 250000.0f && c.rope_scaling == QC_ROPE_LLAMA3 && c.rope_factor == 32.0f);
    CHECK(parse("{\"model_type\": \"qwen2\", \"rope_parameters\": {\"rope_theta\": 1e6, "
                "\"rope_type\": \"default\"}, " SIZES "}",
                &c, NULL, &err) == 0);
    CHECK(c.rope_theta == 1e6f && c.rope_scaling == QC_ROPE_NONE);
    CHECK(parse("{\"model_type\": \"llama\", \"rope_scaling\": {\"type\": \"linear\", \"factor\": "
                "2}, " SIZES "}",
                &c, NULL, &err) == 0);
    CHECK(c.rope_scaling == QC_ROPE_LINEAR && c.rope_factor == 2.0f);
    expect_fail(
        "{\"model_type\": \"llama\", \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4}, " SIZES
        "}",
        "rope_scaling: rope type 'yarn' is not supported");
    expect_fail("{\"model_type\": \"llama\", \"rope_scaling\": {\"rope_type\": \"llama3\", "
                "\"factor\": 8}, " SIZES "}",
                "missing required key 'low_freq_factor'");
    expect_fail("{\"model_type\": \"llama\", \"rope_scaling\": \"linear\", " SIZES "}",
                "key 'rope_scaling' must be an object or null, got string");
    expect_fail("{\"model_type\": \"llama\", \"rope_theta\": \"big\", " SIZES "}",
                "key 'rope_theta' must be a number, got string");
    expect_fail("{\"model_type\": \"llama\", \"rope_theta\": -1, " SIZES "}",
                "key 'rope_theta' = -1 must be positive");
    expect_fail("{\"model_type\": \"llama\", \"rope_parameters\": {\"rope_type\": \"default\", "
                "\"partial_rotary_factor\": 0.5}, " SIZES "}",
                "partial_rotary_factor 0.5 is not supported");
}

static void test_errors(void) {
    expect_fail("{\"model_type\": \"llama\",\n  \"hidden_size\": 64,,\n}", "line 2, column");
    expect_fail("", "line ");
    expect_fail("[1]", "top level is not a JSON object");
    expect_fail("{\"model_type\": \"gpt2\", " SIZES "}",
                "unsupported architecture 'gpt2' (supported: llama");
    expect_fail("{\"architectures\": [\"MixtralForCausalLM\"], " SIZES "}",
                "unsupported architecture 'MixtralForCausalLM'");
    expect_fail("{\"model_type\": \"gpt_neox\", \"architectures\": [\"GPTNeoXForCausalLM\"], " SIZES
                "}",
                "unsupported architecture 'gpt_neox' (GPTNeoXForCausalLM) (supported:");
    expect_fail("{" SIZES "}", "missing 'model_type' and 'architectures'");
    expect_fail("{\"model_type\": 3, " SIZES "}", "key 'model_type' must be a string, got integer");
    expect_fail("{\"model_type\": \"llama\", \"hidden_size\": 64}",
                "missing required key 'num_hidden_layers'");
    expect_fail("{\"model_type\": \"llama\", \"num_hidden_layers\": 2, \"hidden_size\": \"64\", "
                "\"num_attention_heads\": 4, \"intermediate_size\": 128, \"vocab_size\": 256}",
                "key 'hidden_size' must be an integer, got string");
    expect_fail("{\"model_type\": \"llama\", \"num_hidden_layers\": 2, \"hidden_size\": 64, "
                "\"num_attention_heads\": 0, \"intermediate_size\": 128, \"vocab_size\": 256}",
                "key 'num_attention_heads' = 0 is out of range");
    expect_fail("{\"model_type\": \"llama\", \"num_hidden_layers\": 2, \"hidden_size\": "
                "99999999999, \"num_attention_heads\": 4, \"intermediate_size\": 128, "
                "\"vocab_size\": 256}",
                "key 'hidden_size' = 99999999999 is out of range");
    expect_fail("{\"model_type\": \"llama\", \"tie_word_embeddings\": 1, " SIZES "}",
                "key 'tie_word_embeddings' must be true or false, got integer");
    expect_fail("{\"model_type\": \"llama\", \"eos_token_id\": \"</s>\", " SIZES "}",
                "key 'eos_token_id'");
    expect_fail("{\"model_type\": \"llama\", \"attention_bias\": true, " SIZES "}",
                "attention_bias = true (bias on q, k, v and o) is not supported for llama");
    expect_fail("{\"model_type\": \"llama\", \"mlp_bias\": true, " SIZES "}",
                "mlp_bias = true is not supported");
    expect_fail("{\"model_type\": \"llama\", \"hidden_act\": \"gelu\", " SIZES "}",
                "hidden_act 'gelu' is not supported");
    expect_fail("{\"model_type\": \"llama\", \"model_type\": \"qwen2\", " SIZES "}", "duplicate");
    expect_fail("{\"model_type\": \"llama\", \"architectures\": \"LlamaForCausalLM\", " SIZES "}",
                "key 'architectures' must be a list of strings");
}

static void test_file(void) {
    qc_config c;
    qc_err err = {{0}};
    CHECK(qc_hf_config_load("tests/data/tiny/qwen3/config.json", &c, NULL, &err) == 0);
    CHECK(c.arch == QC_ARCH_QWEN3 && c.head_dim == 32 && c.n_heads * c.head_dim == 128);
    CHECK(qc_hf_config_load("tests/data/tiny/nope/config.json", &c, NULL, &err) != 0);
    CHECK_MSG(strstr(err.msg, "tests/data/tiny/nope/config.json: "), "%s", err.msg);
}

int main(void) {
    test_defaults();
    test_rope();
    test_errors();
    test_file();
    TEST_END();
}
