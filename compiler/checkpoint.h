/* Crash-safe, resumable compiles: the calibration driver saves what each
 * finished block changed in the model IR (tensors a pass replaced, quantized
 * states), its report lines and the next block's inputs into a checkpoint
 * directory; a rerun of the same compile restores them and continues with
 * the next block, producing the same artifact as an uninterrupted run.
 *
 * Directory layout (every file written to a temporary name, fsync'd and
 * renamed, in the artifact container format of runtime/artifact.h so each
 * section is checksummed):
 *   meta.json          {"key": K, "what": ...}: the compile it belongs to
 *   block-NNNNN.qck    block NNNNN: manifest "block.json" (tensors, states,
 *                      report lines) and one tensor section per array
 *   inputs.qck         "state.json" {"next_block": k} and tensor "X": the
 *                      inputs of block k, so blocks 0..k-1 are done
 * Progress is defined by inputs.qck alone: it is replaced only after block
 * k-1's file is complete, so a kill at any moment leaves a consistent
 * checkpoint (at worst the last block is redone).
 *
 * The key hashes everything the result depends on (quantc version, recipe
 * text, source model files, calibration text and settings); a checkpoint
 * with another key is refused with a message, never mixed in. */
#ifndef QC_CHECKPOINT_H
#define QC_CHECKPOINT_H

#include "calibrate.h"
#include "err.h"
#include "model.h"
#include "recipe.h"

#include <stddef.h>

typedef struct qc_ckpt qc_ckpt;

/* Opens dir (created when absent) for the compile identified by key (any
 * string; what: a one-line description for meta.json). Fails when dir holds
 * a checkpoint with another key, or is not a directory we can write. */
qc_ckpt *qc_ckpt_open(const char *dir, const char *key, const char *what, qc_err *err);

/* Restores a checkpoint into m (after the model-level passes ran again),
 * appending the saved report lines to rep and writing the saved inputs to X
 * (x_floats floats). Returns the number of finished blocks (0: nothing to
 * resume), or -1 with err (damaged or inconsistent checkpoint: the message
 * says which file). */
int qc_ckpt_restore(qc_ckpt *c, qc_model *m, const qc_recipe *r, qc_calib_report *rep, float *X,
                    size_t x_floats, qc_err *err);

/* Before block b runs: remembers the data of the block's tensors so that
 * qc_ckpt_save_block stores only what the block changed. */
int qc_ckpt_mark(qc_ckpt *c, const qc_model *m, int b, qc_err *err);

/* After block b ran: saves what it changed, rep's lines from index
 * rep_from on, then X (the inputs of block b+1). */
int qc_ckpt_save_block(qc_ckpt *c, const qc_model *m, int b, const qc_calib_report *rep,
                       int rep_from, const float *X, size_t x_floats, qc_err *err);

/* Deletes the checkpoint's files in dir (meta.json, block-*, inputs.qck and
 * their temporaries) and dir itself when that leaves it empty. */
int qc_ckpt_remove_dir(const char *dir, qc_err *err);
void qc_ckpt_free(qc_ckpt *c);

#endif
