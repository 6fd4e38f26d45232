#include "forward.h"

qcrt_model *qcrt_model_from_ir(const qc_model *m, qc_err *err) {
    (void)m;
    qc_err_set(err, "forward pass not implemented yet");
    return 0;
}
void qcrt_model_free(qcrt_model *m) {
    (void)m;
}
qcrt_state *qcrt_state_new(const qcrt_model *m, int max_ctx, int max_batch, qc_err *err) {
    (void)m, (void)max_ctx, (void)max_batch;
    qc_err_set(err, "forward pass not implemented yet");
    return 0;
}
void qcrt_state_free(qcrt_state *s) {
    (void)s;
}
void qcrt_state_reset(qcrt_state *s) {
    (void)s;
}
int qcrt_state_pos(const qcrt_state *s) {
    (void)s;
    return 0;
}
int qcrt_forward(const qcrt_model *m, qcrt_state *s, const int32_t *tokens, int n, float *logits,
                 int all_logits, qc_err *err) {
    (void)m, (void)s, (void)tokens, (void)n, (void)logits, (void)all_logits;
    return qc_err_set(err, "forward pass not implemented yet");
}
