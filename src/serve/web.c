/* web.c - serves the web interface: the files of web/ and Chart.js, compiled in by
 * CMakeLists.txt as generated/web_assets.c. The pages are one HTML file (index.html) whose
 * script draws the page named by the path, so "/", "/data", "/train", ... all answer it.
 * The pages need no token (they hold no data); their script asks for one when the API says
 * 401. Every reply carries a Content-Security-Policy: scripts and connections only to this
 * server (no inline script, no eval), no frames. */
#include <string.h>

#include "web.h"

static const char *const k_pages[] = {"/",       "/data", "/train",   "/queue",     "/runs",
                                      "/models", "/tune", "/compare", "/playground",
                                      "/deployments"};

const lt_web_asset *lt_web_find(const char *url) {
    if (!url) return NULL;
    for (size_t i = 0; i < sizeof k_pages / sizeof k_pages[0]; i++)
        if (!strcmp(url, k_pages[i])) {
            url = "/index.html";
            break;
        }
    for (int i = 0; i < lt_web_asset_count; i++)
        if (!strcmp(url, lt_web_assets[i].path)) return &lt_web_assets[i];
    return NULL;
}

enum MHD_Result lt_web_reply(struct MHD_Connection *c, const lt_web_asset *a) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(a->len, (void *)a->data, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, a->type);
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'none'; script-src 'self'; connect-src 'self'; "
                            "img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                            "form-action 'none'; frame-ancestors 'none'; base-uri 'none'");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}
