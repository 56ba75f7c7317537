/* fuzz_server.c - libFuzzer target: examples/server.c's request parsing.
 *
 * server.c is compiled in without its main(). Each input is a raw HTTP
 * request: the head (up to the first blank line) goes through
 * parse_http_head, the rest, as a body, through parse_api_request for both
 * endpoints. No model and no network: this is the code that sees a client's
 * bytes first. Invariants: a parsed JSON document written back and parsed
 * again writes back identically (the parser and writer agree, strings keep
 * every byte), an accepted request is within the documented limits, and a
 * refused one carries an OpenAI-style error (4xx/5xx status, type, message). */
#include "fuzz_common.h"

#define SERVER_NO_MAIN
#include "../examples/server.c"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    return 0;
}

static void check_json_round_trip(const char *text, size_t len) {
    const char *error = NULL;
    json *first = json_parse(text, len, &error), *second;
    sbuf a = {NULL, 0, 0, 0}, b = {NULL, 0, 0, 0};
    if (!first) {
        fuzz_check(error != NULL, "refused JSON without a reason");
        return;
    }
    json_write(&a, first);
    fuzz_check(!a.failed, "out of memory");
    second = json_parse(a.data, a.len, &error);
    fuzz_check(second != NULL, "the writer's output does not parse");
    json_write(&b, second);
    fuzz_check(a.len == b.len && memcmp(a.data, b.data, a.len) == 0, "write(parse(write(x))) != write(x)");
    sb_free(&a);
    sb_free(&b);
    json_free(first);
    json_free(second);
}

static void check_request(const char *body, size_t len, int chat) {
    api_request r;
    api_error e;
    int i;
    memset(&e, 0, sizeof e);
    if (parse_api_request(body, len, chat, &r, &e)) {
        fuzz_check(r.n >= 1 && r.n <= MAX_CHOICES, "n out of range");
        fuzz_check(r.n_stop >= 0 && r.n_stop <= MAX_STOP, "too many stop strings");
        for (i = 0; i < r.n_stop; i++)
            fuzz_check(strlen(r.stop[i]) >= 1 && strlen(r.stop[i]) <= MAX_STOP_LEN, "stop string length");
        if (chat) {
            fuzz_check(r.n_messages >= 1 && r.messages != NULL, "chat request without messages");
            for (i = 0; i < r.n_messages; i++)
                fuzz_check(r.messages[i].role && r.messages[i].content, "message without role or content");
        } else {
            fuzz_check(r.prompt != NULL && strlen(r.prompt) == r.prompt_len, "prompt with a NUL byte");
        }
        fuzz_check(!r.has_top_p || (r.top_p > 0 && r.top_p <= 1), "top_p out of range");
        fuzz_check(!r.has_temperature || (r.temperature >= 0 && r.temperature <= 100), "temperature out of range");
    } else {
        fuzz_check(e.status >= 400 && e.status < 600 && e.type && e.message[0], "refusal without an error object");
    }
    api_request_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *text = (const char *)data;
    size_t head_len = size, i;
    http_head h;
    int status;
    if (size > 65536) return 0;
    for (i = 3; i < size; i++)
        if (memcmp(text + i - 3, "\r\n\r\n", 4) == 0) {
            head_len = i + 1;
            break;
        }
    status = parse_http_head(text, head_len, &h);
    fuzz_check(status == 0 || (status >= 400 && status < 500), "head refused with a non-4xx status");
    if (status == 0) fuzz_check(h.content_length >= -1 && h.method[0] != '\0', "parsed head without a method");
    check_json_round_trip(text + head_len, size - head_len);
    check_request(text + head_len, size - head_len, 0);
    check_request(text + head_len, size - head_len, 1);
    return 0;
}
