/* llama.cpp's perplexity statistic computed by quantc's runtime, so that
 * `llama-perplexity` on an exported GGUF and quantc on the compile it came
 * from are compared on the same tokens (issue 7).
 *
 * llama-perplexity (tools/perplexity) tokenizes the whole file (BOS first
 * when the vocabulary's add_bos is set), cuts non-overlapping chunks of
 * n_ctx tokens, puts BOS in place of each chunk's first token (again only
 * with add_bos), and scores only the second half of each chunk: the
 * logits at positions n_ctx/2 .. n_ctx−2 predicting the next token.
 * `quantc eval` scores every position of its windows instead, so its
 * number is not comparable. This does what llama-perplexity does, with
 * quantc's tokenizer and forward pass, and prints the running perplexity
 * per chunk in llama-perplexity's "[1]12.3,[2]..." form, then the final
 * value, and the logits of the first chunk's first positions with
 * --dump-logits FILE (n × vocab f32) for a per-token comparison.
 *
 * usage: gguf_ppl MODEL TEXT [--ctx N] [--chunks N] [--bos] [--dump-logits FILE]
 *   MODEL  a GGUF or a quantc artifact (anything quantc loads)
 *   --bos  add BOS as llama-perplexity does when the GGUF says add_bos */
#include "compiler/mapfile.h"
#include "compiler/model.h"
#include "compiler/tokenizer.h"
#include "runtime/eval.h"
#include "runtime/forward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(void) {
    fprintf(stderr, "usage: gguf_ppl MODEL TEXT [--ctx N] [--chunks N] [--bos] "
                    "[--dump-logits FILE]\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 3) return usage();
    const char *path = argv[1], *text_path = argv[2], *dump = NULL;
    int ctx = 512, chunks = 0, bos = 0;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--ctx") && i + 1 < argc)
            ctx = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--chunks") && i + 1 < argc)
            chunks = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bos"))
            bos = 1;
        else if (!strcmp(argv[i], "--dump-logits") && i + 1 < argc)
            dump = argv[++i];
        else
            return usage();
    }
    if (ctx < 4) return usage();
    qc_err err = {{0}};
    qc_model *m = qc_model_load(path, &err);
    size_t len = 0, n_ids = 0;
    char *text = m ? qc_read_file(text_path, (size_t)1 << 30, &len, &err) : NULL;
    int32_t *ids = NULL, *all = NULL;
    qcrt_model *rm = NULL;
    qcrt_state *st = NULL;
    float *logits = NULL;
    double *lp = NULL;
    int rc = 1;
    if (!text || !m->tok || qc_tokenizer_encode(m->tok, text, len, 0, &ids, &n_ids, &err))
        goto out;
    /* BOS first, as llama.cpp's tokenizer adds it with add_bos. */
    if (!(all = malloc((n_ids + 1) * sizeof *all))) goto out;
    size_t n = 0;
    if (bos) all[n++] = m->cfg.bos_id;
    memcpy(all + n, ids, n_ids * sizeof *ids);
    n += n_ids;
    int vocab = m->cfg.vocab, max_chunks = (int)(n / (size_t)ctx);
    if (chunks <= 0 || chunks > max_chunks) chunks = max_chunks;
    fprintf(stderr, "%s: %zu tokens, %d chunks of %d, scoring positions %d..%d of each\n",
            text_path, n, chunks, ctx, ctx / 2, ctx - 2);
    if (!(rm = qcrt_model_from_ir(m, &err)) || !(st = qcrt_state_new(rm, ctx, ctx, &err)) ||
        !(logits = malloc((size_t)ctx * (size_t)vocab * sizeof *logits)) ||
        !(lp = malloc((size_t)vocab * sizeof *lp)))
        goto out;
    double nll = 0;
    long long scored = 0;
    for (int c = 0; c < chunks; c++) {
        int32_t *win = all + (size_t)c * ctx, first = win[0];
        if (bos) win[0] = m->cfg.bos_id;
        qcrt_state_reset(st);
        if (qcrt_forward(rm, st, win, ctx, logits, 1, &err)) goto out;
        win[0] = first;
        if (dump && c == 0) {
            FILE *f = fopen(dump, "wb");
            if (!f || fwrite(logits, sizeof *logits, (size_t)ctx * vocab, f) != (size_t)ctx * vocab)
                fprintf(stderr, "%s: cannot write\n", dump);
            if (f) fclose(f);
        }
        for (int pos = ctx / 2; pos < ctx - 1; pos++) {
            qcrt_log_softmax(logits + (size_t)pos * vocab, vocab, lp);
            nll -= lp[win[pos + 1]];
            scored++;
        }
        printf("[%d]%.4f,", c + 1, exp(nll / (double)scored));
        fflush(stdout);
    }
    printf("\nFinal estimate: PPL = %.4f over %lld tokens (mean NLL %.6f)\n",
           exp(nll / (double)scored), scored, nll / (double)scored);
    rc = 0;
out:
    if (rc) fprintf(stderr, "gguf_ppl: %s\n", err.msg[0] ? err.msg : "failed");
    free(lp);
    free(logits);
    qcrt_state_free(st);
    qcrt_model_free(rm);
    free(all);
    free(ids);
    free(text);
    qc_model_free(m);
    return rc;
}
