#include "tokenizer.h"

qc_tokenizer *qc_tokenizer_new(const qc_vocab_desc *d, qc_err *err) {
    (void)d;
    qc_err_set(err, "tokenizer not implemented yet");
    return 0;
}
qc_tokenizer *qc_tokenizer_from_json(const char *path, qc_err *err) {
    qc_err_set(err, "%s: tokenizer not implemented yet", path);
    return 0;
}
void qc_tokenizer_free(qc_tokenizer *t) {
    (void)t;
}
int qc_tokenizer_encode(const qc_tokenizer *t, const char *text, size_t len, int add_special,
                        int32_t **ids, size_t *n_ids, qc_err *err) {
    (void)t, (void)text, (void)len, (void)add_special, (void)ids, (void)n_ids;
    return qc_err_set(err, "tokenizer not implemented yet");
}
const char *qc_tokenizer_piece(const qc_tokenizer *t, int32_t id, size_t *len) {
    (void)t, (void)id, (void)len;
    return 0;
}
char *qc_tokenizer_decode(const qc_tokenizer *t, const int32_t *ids, size_t n, qc_err *err) {
    (void)t, (void)ids, (void)n;
    qc_err_set(err, "tokenizer not implemented yet");
    return 0;
}
int qc_tokenizer_vocab_size(const qc_tokenizer *t) {
    (void)t;
    return 0;
}
int qc_tokenizer_bos(const qc_tokenizer *t) {
    (void)t;
    return -1;
}
int qc_tokenizer_eos(const qc_tokenizer *t) {
    (void)t;
    return -1;
}
int qc_tokenizer_find(const qc_tokenizer *t, const char *text) {
    (void)t, (void)text;
    return -1;
}
