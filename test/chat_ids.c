/* test/chat_ids: prints the token ids lucie_chat_tokens() renders for a
 * conversation, for the tests that compare them with transformers'
 * apply_chat_template.
 *
 *   test/chat_ids MODEL.bin [--gen] [--continue] ROLE CONTENT [ROLE CONTENT ...]
 *
 * --gen ends with the assistant header (LUCIE_CHAT_GENERATION_PROMPT),
 * --continue leaves out the leading BOS (LUCIE_CHAT_CONTINUE). The ids go to
 * stdout, space-separated, on one line; errors to stderr with exit code 1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lucie.h"

int main(int argc, char **argv) {
    lucie_model *model = NULL;
    lucie_chat_message *msgs;
    char err[256];
    int flags = 0, first = 2, n_msgs, i, n_ids = 0, rc, *ids = NULL;
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.bin [--gen] [--continue] ROLE CONTENT [ROLE CONTENT ...]\n", argv[0]);
        return 2;
    }
    for (; first < argc; first++) {
        if (strcmp(argv[first], "--gen") == 0) flags |= LUCIE_CHAT_GENERATION_PROMPT;
        else if (strcmp(argv[first], "--continue") == 0) flags |= LUCIE_CHAT_CONTINUE;
        else break;
    }
    if ((argc - first) % 2 != 0) {
        fprintf(stderr, "chat_ids: every ROLE needs a CONTENT\n");
        return 2;
    }
    n_msgs = (argc - first) / 2;
    msgs = (lucie_chat_message *)malloc((size_t)(n_msgs > 0 ? n_msgs : 1) * sizeof *msgs);
    if (!msgs) return 1;
    for (i = 0; i < n_msgs; i++) {
        msgs[i].role = argv[first + 2 * i];
        msgs[i].content = argv[first + 2 * i + 1];
    }
    if (lucie_open(argv[1], NULL, &model, err, sizeof err) != LUCIE_OK) {
        fprintf(stderr, "chat_ids: %s\n", err);
        free(msgs);
        return 1;
    }
    /* Size query first, then the real call: the buffer protocol under test. */
    rc = lucie_chat_tokens(model, msgs, n_msgs, flags, NULL, 0, &n_ids, err, sizeof err);
    if (rc == LUCIE_ESMALL || (rc == LUCIE_OK && n_ids > 0)) {
        ids = (int *)malloc((size_t)n_ids * sizeof *ids);
        rc = ids ? lucie_chat_tokens(model, msgs, n_msgs, flags, ids, n_ids, &n_ids, err, sizeof err) : LUCIE_ENOMEM;
    }
    if (rc != LUCIE_OK) {
        fprintf(stderr, "chat_ids: %s\n", rc == LUCIE_ENOMEM ? "out of memory" : err);
    } else {
        for (i = 0; i < n_ids; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
    }
    free(ids);
    free(msgs);
    lucie_close(model);
    return rc == LUCIE_OK ? 0 : 1;
}
