/* cmd_tokenize.c - placeholder until the owner of this command lands it. */
#include <stdio.h>
#include "commands.h"
int cmd_tokenize(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "loratune tokenize: not built yet\n");
    return 1;
}
