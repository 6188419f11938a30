/* cmd_generate.c - placeholder until the owner of this command lands it. */
#include <stdio.h>
#include "commands.h"
int cmd_generate(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "loratune generate: not built yet\n");
    return 1;
}
