#include "rope.h"

#include <math.h>

int qcrt_rope_inv_freq(const qc_config *c, float *inv_freq, qc_err *err) {
    int hd = c->head_dim, half = hd / 2;
    if (hd <= 0 || hd % 2) return qc_err_set(err, "rope: head_dim %d is not a positive even", hd);
    if (!(c->rope_theta > 0)) return qc_err_set(err, "rope: theta must be positive");
    /* HF: 1 / θ^(arange(0, d, 2) / d), exponent formed in f32. */
    for (int i = 0; i < half; i++) {
        float e = (float)(2 * i) / (float)hd;
        inv_freq[i] = (float)(1.0 / pow((double)c->rope_theta, (double)e));
    }
    if (c->rope_scaling == QC_ROPE_NONE) return 0;
    double f = c->rope_factor;
    if (!(f > 0) || !isfinite(f))
        return qc_err_set(err, "rope: scaling factor %g must be positive", f);
    if (c->rope_scaling == QC_ROPE_LINEAR) {
        /* Positions divided by the factor ⇔ frequencies divided by it. */
        for (int i = 0; i < half; i++)
            inv_freq[i] = (float)(inv_freq[i] / f);
        return 0;
    }
    /* Llama 3.1: keep high frequencies (wavelength < orig/high), divide low
     * frequencies (wavelength > orig/low) by the factor, interpolate between. */
    double lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
    double orig = c->rope_orig_max_pos;
    if (!(lo > 0) || !(hi > lo) || !(orig > 0))
        return qc_err_set(err,
                          "rope: llama3 scaling needs 0 < low_freq_factor (%g) < high_freq_factor "
                          "(%g) and original_max_position_embeddings (%g) > 0",
                          lo, hi, orig);
    for (int i = 0; i < half; i++) {
        double inv = inv_freq[i], wavelen = 2.0 * M_PI / inv;
        if (wavelen < orig / hi) continue;
        if (wavelen > orig / lo) {
            inv_freq[i] = (float)(inv / f);
        } else {
            double smooth = (orig / wavelen - lo) / (hi - lo);
            inv_freq[i] = (float)((1.0 - smooth) * inv / f + smooth * inv);
        }
    }
    return 0;
}

void qcrt_rope_tables(const float *inv_freq, int half, int n_pos, float *cos_t, float *sin_t) {
    for (int p = 0; p < n_pos; p++) {
        for (int i = 0; i < half; i++) {
            /* HF forms the angle as an f32 product, then takes cos/sin. */
            float a = (float)p * inv_freq[i];
            cos_t[(size_t)p * half + i] = (float)cos((double)a);
            sin_t[(size_t)p * half + i] = (float)sin((double)a);
        }
    }
}

void qcrt_rope_apply(float *x, int n_heads, int head_dim, const float *cos_p, const float *sin_p) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            /* [x1, x2] → [x1·cos − x2·sin, x2·cos + x1·sin] */
            float x1 = v[i], x2 = v[i + half];
            v[i] = x1 * cos_p[i] - x2 * sin_p[i];
            v[i + half] = x2 * cos_p[i] + x1 * sin_p[i];
        }
    }
}
