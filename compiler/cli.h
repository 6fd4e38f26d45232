/* Helpers shared by the command-line files (compiler/main.c, cli_*.c). The
 * CLI decides what to print and which exit code to use. */
#ifndef QC_CLI_H
#define QC_CLI_H

#include "compiler/err.h"
#include "compiler/model.h"

enum { EXIT_FAIL = 1, EXIT_USAGE = 2 };
#define MAX_TEXT_BYTES ((size_t)1 << 30)

/* Prints "quantc: <message>" on stderr; returns EXIT_FAIL. */
int qc_cli_die(const qc_err *err);
/* Prints "quantc: " fmt(arg), then the command's help; returns EXIT_USAGE. */
int qc_cli_usage_error(const char *help, const char *fmt, const char *arg);
double qc_cli_now_s(void);
int qc_cli_parse_int(const char *s, long lo, long hi, long *out);
int qc_cli_parse_float(const char *s, double *out);
/* Loads MODEL, or the demo model when path is NULL. */
qc_model *qc_cli_load_model(const char *path, qc_err *err);
void qc_cli_set_threads(long n);

/* Subcommands in compiler/cli_compile.c; argv[0] is the command name. */
int qc_cli_compile(int argc, char **argv);
int qc_cli_recipe(int argc, char **argv);
int qc_cli_passes(int argc, char **argv);
/* compiler/cli_inspect.c */
int qc_cli_inspect(int argc, char **argv);
/* compiler/cli_export.c */
int qc_cli_export(int argc, char **argv);
/* Exports m as format ("gguf": default types; "compressed-tensors") to out,
 * printing a summary unless quiet (a recipe's export: entries). */
int qc_cli_export_to(const qc_model *m, const char *format, const char *out, int fallback,
                     int quiet, qc_err *err);

#endif
