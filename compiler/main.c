#include "compiler/err.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("quantc %s\n", QC_VERSION);
        return 0;
    }
    fprintf(stderr, "usage: quantc --version\n");
    return 2;
}
