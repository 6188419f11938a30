/* cmd_info.c - placeholder until the owner of this command lands it. */
#include <stdio.h>
#include "commands.h"
int cmd_info(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "loratune info: not built yet\n");
    return 1;
}
