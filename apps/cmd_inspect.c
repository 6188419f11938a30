/* cmd_inspect.c - placeholder until the owner of this command lands it. */
#include <stdio.h>
#include "commands.h"
int cmd_inspect(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "loratune inspect: not built yet\n");
    return 1;
}
