/* tune_report.c - compare's Pareto fronts and recommendation, its Markdown, and the HTML / SVG
 * reports of tune and compare (tune_report.h, docs/TUNE.md "Reports").
 *
 * Charts are written by hand as SVG text: a plot is a frame, ticks, and marks placed by one
 * mapping per axis (domain -> pixels, log10 first for log axes). The mapping is written on the
 * axes group and each mark's value on the mark, so the drawing can be checked against the data.
 * Text from the data (method, parameter and choice names) is XML-escaped. */
#include "tune_report.h"

#include "loratune/tune.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cairo.h>
#include <dlfcn.h>
#include <librsvg/rsvg.h>

#define PLOT_W 640
#define PLOT_H 400

static const char *const k_colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd",
                                       "#ff7f0e", "#8c564b", "#e377c2", "#17becf"};

/* ---- small helpers ------------------------------------------------------------------------ */
static void xml_puts(FILE *f, const char *s) {
    for (; s && *s; s++)
        switch (*s) {
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '&':
            fputs("&amp;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        case '\'':
            fputs("&#39;", f);
            break;
        default:
            fputc(*s, f);
        }
}

/* s escaped for an attribute into b (cut to n) */
static const char *xml_esc(const char *s, char *b, size_t n) {
    size_t l = 0;
    for (; s && *s && l + 7 < n; s++) {
        const char *r = *s == '<'    ? "&lt;"
                        : *s == '>'  ? "&gt;"
                        : *s == '&'  ? "&amp;"
                        : *s == '"'  ? "&quot;"
                        : *s == '\'' ? "&#39;"
                                     : NULL;
        if (r)
            l += (size_t)snprintf(b + l, n - l, "%s", r);
        else
            b[l++] = *s;
    }
    b[l] = 0;
    return b;
}

static int mkdirs(const char *path) {
    char b[4096];
    snprintf(b, sizeof b, "%s", path);
    for (char *p = b + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(b, 0777) && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(b, 0777) && errno != EEXIST ? -1 : 0;
}

/* --png: every chart also as NAME.png, rendered from its SVG by librsvg onto a cairo image
 * surface at the SVG's size (one pixel per SVG unit, white background as drawn). */
static int g_png;
void report_set_png(int on) {
    g_png = on;
}

/* librsvg and cairo (with glib, pango, harfbuzz, fontconfig... under them) are loaded when a
 * PNG is first asked for, not linked: linked, every loratune process mapped them at start-up
 * (tests/train/test_budget_grid.py saw the run's reserve grow past its 80 MiB bound). */
static struct {
    int tried;
    void *lib;
    char why[256];
    RsvgHandle *(*new_from_data)(const guint8 *, gsize, GError **);
    gboolean (*size_px)(RsvgHandle *, gdouble *, gdouble *);
    gboolean (*render)(RsvgHandle *, cairo_t *, const RsvgRectangle *, GError **);
    void (*error_free)(GError *);
    void (*unref)(gpointer);
    cairo_surface_t *(*surface_create)(cairo_format_t, int, int);
    cairo_t *(*create)(cairo_surface_t *);
    void (*destroy)(cairo_t *);
    cairo_status_t (*write_png)(cairo_surface_t *, const char *);
    void (*surface_destroy)(cairo_surface_t *);
} R;

static lt_status rsvg_load(void) {
    if (!R.tried) {
        R.tried = 1;
        R.lib = dlopen("librsvg-2.so.2", RTLD_NOW | RTLD_LOCAL);
        if (!R.lib) {
            snprintf(R.why, sizeof R.why, "%s", dlerror());
        } else {
            /* dlsym searches the library and what it depends on: glib, gobject, cairo */
            const char *names[] = {"rsvg_handle_new_from_data",
                                   "rsvg_handle_get_intrinsic_size_in_pixels",
                                   "rsvg_handle_render_document",
                                   "g_error_free",
                                   "g_object_unref",
                                   "cairo_image_surface_create",
                                   "cairo_create",
                                   "cairo_destroy",
                                   "cairo_surface_write_to_png",
                                   "cairo_surface_destroy"};
            void *f[10];
            for (int i = 0; i < 10 && !R.why[0]; i++)
                if (!(f[i] = dlsym(R.lib, names[i])))
                    snprintf(R.why, sizeof R.why, "%s: no %s", "librsvg-2.so.2", names[i]);
            if (!R.why[0]) {
                *(void **)&R.new_from_data = f[0];
                *(void **)&R.size_px = f[1];
                *(void **)&R.render = f[2];
                *(void **)&R.error_free = f[3];
                *(void **)&R.unref = f[4];
                *(void **)&R.surface_create = f[5];
                *(void **)&R.create = f[6];
                *(void **)&R.destroy = f[7];
                *(void **)&R.write_png = f[8];
                *(void **)&R.surface_destroy = f[9];
            }
        }
    }
    if (R.why[0])
        return lt_error(LT_ERR_UNSUPPORTED, "--png: cannot load librsvg (Debian librsvg2-2): %s",
                        R.why);
    return LT_OK;
}

static lt_status svg_to_png(const char *path_svg, const char *svg, size_t n) {
    lt_status ls = rsvg_load();
    if (ls) return ls;
    char png[4400], tmp[4420];
    size_t l = strlen(path_svg);
    snprintf(png, sizeof png, "%.*s.png", (int)(l > 4 ? l - 4 : l), path_svg);
    snprintf(tmp, sizeof tmp, "%s.tmp", png);
    GError *err = NULL;
    RsvgHandle *h = R.new_from_data((const guint8 *)svg, n, &err);
    if (!h) {
        lt_status st = lt_error(LT_ERR_FORMAT, "%s: the SVG does not render: %s", path_svg,
                                err ? err->message : "?");
        if (err) R.error_free(err);
        return st;
    }
    gdouble w = 0, hh = 0;
    if (!R.size_px(h, &w, &hh) || w <= 0 || hh <= 0)
        w = 640, hh = 400;
    cairo_surface_t *surf = R.surface_create(CAIRO_FORMAT_ARGB32, (int)w, (int)hh);
    cairo_t *cr = R.create(surf);
    RsvgRectangle vp = {0, 0, w, hh};
    lt_status st = LT_OK;
    if (!R.render(h, cr, &vp, &err)) {
        st = lt_error(LT_ERR_FORMAT, "%s: the SVG does not render: %s", path_svg,
                      err ? err->message : "?");
        if (err) R.error_free(err);
    }
    R.destroy(cr);
    if (!st && R.write_png(surf, tmp) != CAIRO_STATUS_SUCCESS)
        st = lt_error(LT_ERR_IO, "%s: cannot write", tmp);
    if (!st && rename(tmp, png)) st = lt_error(LT_ERR_IO, "%s: %s", png, strerror(errno));
    if (st) remove(tmp);
    R.surface_destroy(surf);
    R.unref(h);
    return st;
}

static lt_status write_text(const char *dir, const char *name, const char *prefix,
                            const char *text) {
    char p[4352];
    snprintf(p, sizeof p, "%.4000s/%s", dir, name);
    size_t a = strlen(prefix), n = strlen(text);
    char *all = malloc(a + n + 1);
    if (!all) return lt_error(LT_ERR_NOMEM, "%s: out of memory", p);
    memcpy(all, prefix, a);
    memcpy(all + a, text, n + 1);
    lt_status s = lt_file_write_atomic(p, all, a + n);
    size_t nl = strlen(name);
    if (!s && g_png && nl > 4 && !strcmp(name + nl - 4, ".svg")) s = svg_to_png(p, all, a + n);
    free(all);
    return s;
}

static double num(const json_t *o, const char *k) {
    const json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* ---- the plot: axes mapping, ticks, marks ------------------------------------------------- */
typedef struct {
    double lo[2], hi[2]; /* domain of x and y (log10 of the values on a log axis) */
    int log[2];
    double plo[2], phi[2]; /* pixels of lo and hi: x left, right; y bottom, top */
    const char **cats;     /* a categorical x axis: value i is cats[i] */
    int ncats;
    int xint; /* integer x values: ticks at integers */
} plot_map;

static double px(const plot_map *m, int ax, double v) {
    double t = m->log[ax] ? log10(v) : v;
    return m->plo[ax] + (t - m->lo[ax]) / (m->hi[ax] - m->lo[ax]) * (m->phi[ax] - m->plo[ax]);
}

/* The domain of the finite values (positive ones on a log axis), padded by 5%. */
static void domain(plot_map *m, int ax, const double *v, int n) {
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (!isfinite(v[i]) || (m->log[ax] && v[i] <= 0)) continue;
        double t = m->log[ax] ? log10(v[i]) : v[i];
        if (t < lo) lo = t;
        if (t > hi) hi = t;
    }
    if (!(lo <= hi)) lo = 0, hi = 1;
    double pad = hi > lo ? 0.05 * (hi - lo) : (fabs(lo) > 0 ? 0.05 * fabs(lo) : 0.5);
    if (m->log[ax] && hi == lo) pad = 0.1;
    m->lo[ax] = lo - pad;
    m->hi[ax] = hi + pad;
}

static double nice_step(double range) {
    double raw = range / 5, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

static void plot_begin(FILE *f, plot_map *m, const char *title, const char *xlabel,
                       const char *ylabel) {
    m->plo[0] = 80, m->phi[0] = PLOT_W - 20, m->plo[1] = PLOT_H - 55, m->phi[1] = 40;
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n<title>",
            PLOT_W, PLOT_H, PLOT_W, PLOT_H);
    xml_puts(f, title);
    fprintf(f, "</title>\n<rect width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n", PLOT_W, PLOT_H);
    fprintf(f, "<text x=\"%d\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">", PLOT_W / 2);
    xml_puts(f, title);
    fprintf(f, "</text>\n<g class=\"axes\"");
    for (int ax = 0; ax < 2; ax++) {
        const char *c = ax ? "y" : "x";
        fprintf(f,
                " data-%slo=\"%.17g\" data-%shi=\"%.17g\" data-%slog=\"%d\" data-%spxlo=\"%g\" "
                "data-%spxhi=\"%g\"",
                c, m->lo[ax], c, m->hi[ax], c, m->log[ax], c, m->plo[ax], c, m->phi[ax]);
    }
    fprintf(f,
            ">\n<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" "
            "stroke=\"#444\"/>\n",
            m->plo[0], m->phi[1], m->phi[0] - m->plo[0], m->plo[1] - m->phi[1]);
    for (int ax = 0; ax < 2; ax++) { /* ticks and grid: k-th tick at value t0 + k step, or
                                         on a log axis of one decade or more 10^(t0 + k step)
                                         (times 1, 2, 5 when it spans less than 2.5 decades) */
        double t0, step, span = m->hi[ax] - m->lo[ax];
        int cats = ax == 0 && m->cats, lin = 1, mult125 = 0;
        if (cats)
            t0 = 0, step = 1;
        else if (m->log[ax] && span >= 1)
            t0 = floor(m->lo[ax]), step = 1, lin = 0, mult125 = span < 2.5;
        else if (m->log[ax]) { /* less than a decade: evenly spaced values */
            double v0 = pow(10, m->lo[ax]), v1 = pow(10, m->hi[ax]);
            step = nice_step(v1 - v0);
            if (ax == 0 && m->xint && step < 1) step = 1;
            t0 = ceil(v0 / step) * step;
        } else {
            step = nice_step(span);
            if (ax == 0 && m->xint && step < 1) step = 1;
            t0 = ceil(m->lo[ax] / step) * step;
        }
        for (int k = 0; k < 120; k++) {
            double v;
            if (!lin)
                v = pow(10, t0 + k / (mult125 ? 3 : 1)) *
                    (mult125 ? (double[]){1, 2, 5}[k % 3] : 1);
            else
                v = t0 + k * step;
            double t = m->log[ax] ? log10(v) : v;
            if (t < m->lo[ax]) continue;
            if (t > m->hi[ax] + 1e-12 * fabs(span)) break;
            double p =
                m->plo[ax] + (t - m->lo[ax]) / (m->hi[ax] - m->lo[ax]) * (m->phi[ax] - m->plo[ax]);
            char lab[128];
            if (cats && (int)t < m->ncats)
                snprintf(lab, sizeof lab, "%s", m->cats[(int)t]);
            else
                snprintf(lab, sizeof lab, "%.4g", lin && fabs(v) < 1e-9 * step ? 0.0 : v);
            if (ax == 0)
                fprintf(f,
                        "<line x1=\"%.2f\" y1=\"%g\" x2=\"%.2f\" y2=\"%g\" stroke=\"#ddd\"/>"
                        "<text x=\"%.2f\" y=\"%g\" text-anchor=\"middle\">",
                        p, m->plo[1], p, m->phi[1], p, m->plo[1] + 16);
            else
                fprintf(f,
                        "<line x1=\"%g\" y1=\"%.2f\" x2=\"%g\" y2=\"%.2f\" stroke=\"#ddd\"/>"
                        "<text x=\"%g\" y=\"%.2f\" text-anchor=\"end\">",
                        m->plo[0], p, m->phi[0], p, m->plo[0] - 6, p + 4);
            xml_puts(f, lab);
            fputs("</text>\n", f);
        }
    }
    fprintf(f, "<text x=\"%g\" y=\"%d\" text-anchor=\"middle\">", (m->plo[0] + m->phi[0]) / 2,
            PLOT_H - 15);
    xml_puts(f, xlabel);
    fprintf(f,
            "</text>\n<text x=\"16\" y=\"%g\" text-anchor=\"middle\" "
            "transform=\"rotate(-90 16 %g)\">",
            (m->plo[1] + m->phi[1]) / 2, (m->plo[1] + m->phi[1]) / 2);
    xml_puts(f, ylabel);
    fputs("</text>\n</g>\n", f);
}

/* A point: cls its classes, extra more attributes (already escaped), tip its hover text. */
static void plot_point(FILE *f, const plot_map *m, double x, double y, const char *cls,
                       const char *fill, const char *stroke, double r, const char *extra,
                       const char *tip) {
    fprintf(f,
            "<circle class=\"%s\" cx=\"%.3f\" cy=\"%.3f\" r=\"%g\" fill=\"%s\" stroke=\"%s\" "
            "data-x=\"%.17g\" data-value=\"%.17g\"%s>",
            cls, px(m, 0, x), px(m, 1, y), r, fill, stroke, x, y, extra ? extra : "");
    if (tip) {
        fputs("<title>", f);
        xml_puts(f, tip);
        fputs("</title>", f);
    }
    fputs("</circle>\n", f);
}

static void plot_line(FILE *f, const plot_map *m, const double *x, const double *y, int n,
                      const char *cls, const char *stroke, const char *extra) {
    if (n <= 0) return;
    fprintf(f,
            "<polyline class=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\"%s points=\"",
            cls, stroke, extra ? extra : "");
    for (int i = 0; i < n; i++)
        fprintf(f, "%s%.3f,%.3f", i ? " " : "", px(m, 0, x[i]), px(m, 1, y[i]));
    fputs("\" data-values=\"", f);
    for (int i = 0; i < n; i++)
        fprintf(f, "%s%.17g", i ? " " : "", y[i]);
    fputs("\"/>\n", f);
}

static void plot_legend(FILE *f, const plot_map *m, int i, const char *color, const char *label) {
    double x = m->phi[0] - 150, y = m->phi[1] + 14 + 16 * i;
    fprintf(f,
            "<g class=\"legend\"><rect x=\"%g\" y=\"%g\" width=\"146\" height=\"16\" "
            "fill=\"#ffffff\" fill-opacity=\"0.85\"/><line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" "
            "stroke=\"%s\" "
            "stroke-width=\"3\"/><text x=\"%g\" y=\"%g\">",
            x - 4, y - 12, x, y - 4, x + 18, y - 4, color, x + 24, y);
    xml_puts(f, label);
    fputs("</text></g>\n", f);
}

/* Opens a text buffer for a chart. */
typedef struct {
    char *buf;
    size_t len;
    FILE *f;
} membuf;
static int mb_open(membuf *b) {
    b->buf = NULL;
    b->len = 0;
    b->f = open_memstream(&b->buf, &b->len);
    return b->f ? 0 : -1;
}
static char *mb_close(membuf *b) {
    if (b->f) fclose(b->f);
    b->f = NULL;
    return b->buf;
}

#define SVG_DECL "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"

static const char *k_css =
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
    "text-align:right;font-size:90%}th{background:#f3f3f3}td.l,th.l{text-align:left}"
    "svg{display:block;margin:1em 0;border:1px solid #eee}.rec{background:#eef7ee;padding:.5em "
    "1em}";

static void html_begin(FILE *f, const char *title) {
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>", f);
    xml_puts(f, title);
    fprintf(f, "</title>\n<style>%s</style>\n</head>\n<body>\n<h1>", k_css);
    xml_puts(f, title);
    fputs("</h1>\n", f);
}

/* ---- compare: Pareto fronts and the recommendation ---------------------------------------- */
typedef struct {
    const char *method;
    double loss, mem_mib, time_s; /* loss NAN: no complete trial */
    int row;
} method_pt;

static int collect(const json_t *cmp, method_pt *p, int cap) {
    int n = 0;
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(cmp, "methods"), i, r) {
        if (n >= cap) break;
        p[n].method = json_string_value(json_object_get(r, "method"));
        p[n].loss = num(r, "best_val_loss");
        p[n].mem_mib = num(r, "peak_bytes") / 1048576.0;
        p[n].time_s = num(r, "time_s");
        p[n].row = (int)i;
        n++;
    }
    return n;
}

static double cost(const method_pt *p, int axis) {
    return axis ? p->time_s : p->mem_mib;
}

/* a dominates b: no worse in loss and cost, better in one */
static int dominates(const method_pt *a, const method_pt *b, int axis) {
    double ca = cost(a, axis), cb = cost(b, axis);
    return a->loss <= b->loss && ca <= cb && (a->loss < b->loss || ca < cb);
}

static int on_front(const method_pt *p, int n, int i, int axis) {
    if (!isfinite(p[i].loss)) return 0;
    for (int j = 0; j < n; j++)
        if (j != i && isfinite(p[j].loss) && dominates(&p[j], &p[i], axis)) return 0;
    return 1;
}

static json_t *front_json(const method_pt *p, int n, int axis) {
    int idx[64], k = 0;
    for (int i = 0; i < n && k < 64; i++)
        if (on_front(p, n, i, axis)) idx[k++] = i;
    for (int a = 1; a < k; a++) /* cheapest first */
        for (int b = a; b > 0 && cost(&p[idx[b]], axis) < cost(&p[idx[b - 1]], axis); b--) {
            int t = idx[b];
            idx[b] = idx[b - 1];
            idx[b - 1] = t;
        }
    json_t *arr = json_array();
    for (int i = 0; i < k; i++)
        json_array_append_new(arr, json_string(p[idx[i]].method));
    return arr;
}

static int in_front(const json_t *cmp, const char *which, const char *method) {
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(json_object_get(cmp, "pareto"), which), i, v) {
        if (!strcmp(json_string_value(v), method)) return 1;
    }
    return 0;
}

static void addf(json_t *arr, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void addf(json_t *arr, const char *fmt, ...) {
    char b[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    json_array_append_new(arr, json_string(b));
}

void report_compare_analyze(json_t *cmp, const compare_limits *lim) {
    method_pt p[64];
    int n = collect(cmp, p, 64);
    int has_mem = lim->max_memory_bytes > 0, has_time = lim->max_time_s > 0,
        has_loss = isfinite(lim->max_val_loss);
    double max_mib = lim->max_memory_bytes / 1048576.0;
    json_t *c = json_object();
    json_object_set_new(c, "max_memory_bytes",
                        has_mem ? json_integer(lim->max_memory_bytes) : json_null());
    json_object_set_new(c, "max_time_s", has_time ? json_real(lim->max_time_s) : json_null());
    json_object_set_new(c, "max_val_loss", has_loss ? json_real(lim->max_val_loss) : json_null());
    json_object_set_new(cmp, "constraints", c);
    json_t *pareto = json_pack("{s:o, s:o, s:s}", "loss_vs_memory", front_json(p, n, 0),
                               "loss_vs_time", front_json(p, n, 1), "rule",
                               "a method is on a front when no other method has a validation "
                               "loss as low or lower and a cost (peak memory, or training "
                               "time) as low or lower, one of them strictly");
    json_object_set_new(cmp, "pareto", pareto);

    json_t *reasons = json_array(), *excluded = json_array();
    if (!has_mem && !has_time && !has_loss)
        addf(reasons, "no constraints given (--max-memory, --max-time, --min-quality): the "
                      "lowest validation loss wins");
    else {
        char b[512];
        size_t l = 0;
        if (has_mem)
            l += snprintf(b + l, sizeof b - l, "%speak memory <= %.1f MiB", l ? ", " : "", max_mib);
        if (has_time)
            l += snprintf(b + l, sizeof b - l, "%straining time <= %.3g s", l ? ", " : "",
                          lim->max_time_s);
        if (has_loss)
            l += snprintf(b + l, sizeof b - l, "%svalidation loss <= %.5f", l ? ", " : "",
                          lim->max_val_loss);
        addf(reasons, "constraints: %s", b);
    }
    int ok[64], nok = 0, best = -1;
    for (int i = 0; i < n; i++) {
        ok[i] = 0;
        json_t *why = json_array(), *by = json_array();
        if (!isfinite(p[i].loss)) {
            json_array_append_new(by, json_string("no-result"));
            addf(why, "no complete trial");
        } else {
            if (has_mem && p[i].mem_mib > max_mib) {
                json_array_append_new(by, json_string("max-memory"));
                addf(why, "--max-memory: peak %.1f MiB > %.1f MiB", p[i].mem_mib, max_mib);
            }
            if (has_time && p[i].time_s > lim->max_time_s) {
                json_array_append_new(by, json_string("max-time"));
                addf(why, "--max-time: training time %.3g s > %.3g s", p[i].time_s,
                     lim->max_time_s);
            }
            if (has_loss && p[i].loss > lim->max_val_loss) {
                json_array_append_new(by, json_string("min-quality"));
                addf(why, "--min-quality: validation loss %.5f > %.5f", p[i].loss,
                     lim->max_val_loss);
            }
        }
        if (json_array_size(by)) {
            char b[1024];
            size_t l = 0, j;
            json_t *w;
            json_array_foreach(why, j, w) {
                l += snprintf(b + l, sizeof b - l > 0 ? sizeof b - l : 0, "%s%s", j ? "; " : "",
                              json_string_value(w));
                if (l >= sizeof b) l = sizeof b - 1;
            }
            json_array_append_new(excluded, json_pack("{s:s, s:o, s:s}", "method", p[i].method,
                                                      "constraints", by, "reason", b));
            addf(reasons, "excluded: %s (%s)", p[i].method, b);
            json_decref(why);
            continue;
        }
        json_decref(why);
        json_decref(by);
        ok[i] = 1;
        nok++;
        /* the lowest loss; ties: less memory, then less time, then the order given */
        if (best < 0 || p[i].loss < p[best].loss ||
            (p[i].loss == p[best].loss &&
             (p[i].mem_mib < p[best].mem_mib ||
              (p[i].mem_mib == p[best].mem_mib && p[i].time_s < p[best].time_s))))
            best = i;
    }
    json_t *rec = json_object();
    if (best < 0) {
        json_object_set_new(rec, "method", json_null());
        addf(reasons, "no method meets the constraints: none recommended");
        /* what would admit one: a method that misses a single constraint */
        for (int i = 0; i < n; i++) {
            if (!isfinite(p[i].loss)) continue;
            int miss = 0;
            char hint[256] = "";
            if (has_mem && p[i].mem_mib > max_mib)
                miss++,
                    snprintf(hint, sizeof hint, "--max-memory %.1fM", ceil(p[i].mem_mib * 10) / 10);
            if (has_time && p[i].time_s > lim->max_time_s)
                miss++, snprintf(hint, sizeof hint, "--max-time %.3fs",
                                 ceil(p[i].time_s * 1000) / 1000);
            if (has_loss && p[i].loss > lim->max_val_loss)
                miss++,
                    snprintf(hint, sizeof hint, "--min-quality %.5f", ceil(p[i].loss * 1e5) / 1e5);
            if (miss == 1)
                addf(reasons, "%s misses only one constraint: %s would admit it", p[i].method,
                     hint);
        }
    } else {
        const method_pt *b = &p[best];
        json_object_set_new(rec, "method", json_string(b->method));
        addf(reasons, "chosen: %s: the lowest validation loss (%.5f) of the %d method%s %s%s%s",
             b->method, b->loss, nok, nok == 1 ? "" : "s",
             has_mem || has_time || has_loss
                 ? (nok == 1 ? "that meets the constraints" : "that meet the constraints")
                 : "with a result",
             in_front(cmp, "loss_vs_memory", b->method) ? "; on the loss-vs-memory front" : "",
             in_front(cmp, "loss_vs_time", b->method) ? "; on the loss-vs-time front" : "");
        for (int i = 0; i < n; i++) {
            if (!ok[i] || i == best) continue;
            double dl = p[i].loss - b->loss, dm = p[i].mem_mib - b->mem_mib,
                   dt = p[i].time_s - b->time_s;
            addf(reasons,
                 "vs %s: its validation loss %.5f higher (%+.2f%%), its peak memory %.1f MiB %s, "
                 "its training time %.3g s %s%s",
                 p[i].method, dl, 100 * dl / b->loss, fabs(dm), dm < 0 ? "lower" : "higher",
                 fabs(dt), dt < 0 ? "shorter" : "longer",
                 dl == 0              ? " (a tie in loss: less memory, then less time, decides)"
                 : (dm < 0 || dt < 0) ? ": cheaper, but the loss decides"
                                      : "");
        }
        json_object_set_new(rec, "val_loss", json_real(b->loss));
    }
    json_object_set_new(rec, "reasons", reasons);
    json_object_set_new(rec, "excluded", excluded);
    json_object_set_new(rec, "rule",
                        json_string("among the methods that meet every constraint, the lowest "
                                    "best validation loss; ties: less peak memory, then less "
                                    "training time"));
    json_object_set_new(cmp, "recommendation", rec);
}

static void print_front(FILE *f, const json_t *cmp, const char *which, const char *label) {
    fprintf(f, "Pareto front (%s): ", label);
    size_t i;
    json_t *v;
    json_t *arr = json_object_get(json_object_get(cmp, "pareto"), which);
    json_array_foreach(arr, i, v) fprintf(f, "%s%s", i ? ", " : "", json_string_value(v));
    fprintf(f, "%s\n", json_array_size(arr) ? "" : "(no method has a result)");
}

void report_compare_print(const json_t *cmp, FILE *f) {
    print_front(f, cmp, "loss_vs_memory", "validation loss vs peak memory");
    print_front(f, cmp, "loss_vs_time", "validation loss vs training time");
    const json_t *rec = json_object_get(cmp, "recommendation");
    const char *m = json_string_value(json_object_get(rec, "method"));
    fprintf(f, "recommendation: %s\n", m ? m : "none (no method meets the constraints)");
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(rec, "reasons"), i, v)
        fprintf(f, "  - %s\n", json_string_value(v));
}

char *report_compare_markdown(const json_t *cmp) {
    membuf b;
    if (mb_open(&b)) return NULL;
    FILE *f = b.f;
    fprintf(f, "# loratune compare\n\nModel `%s`, data `%s`; quality: %s.\n\n",
            json_string_value(json_object_get(cmp, "model")),
            json_string_value(json_object_get(cmp, "data")),
            json_string_value(json_object_get(cmp, "metric")));
    fputs("| method | trials c/p/f/i | val_loss | val_ppl | time_s | peak_MiB | tokens/s | "
          "trainable | saved_MiB | best trial | fronts | task |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n",
          f);
    size_t i;
    json_t *r;
    const char *rec =
        json_string_value(json_object_get(json_object_get(cmp, "recommendation"), "method"));
    json_array_foreach(json_object_get(cmp, "methods"), i, r) {
        const char *m = json_string_value(json_object_get(r, "method"));
        fprintf(f, "| %s%s%s | %lld/%lld/%lld/%lld |", rec && !strcmp(rec, m) ? "**" : "", m,
                rec && !strcmp(rec, m) ? "**" : "",
                (long long)json_integer_value(json_object_get(r, "complete")),
                (long long)json_integer_value(json_object_get(r, "pruned")),
                (long long)json_integer_value(json_object_get(r, "failed")),
                (long long)json_integer_value(json_object_get(r, "infeasible")));
        if (!isfinite(num(r, "best_val_loss"))) {
            fputs(" - | - | - | - | - | - | - | - | | - |\n", f);
            continue;
        }
        int fm = in_front(cmp, "loss_vs_memory", m), ft = in_front(cmp, "loss_vs_time", m);
        const json_t *tm = json_object_get(r, "task_metric");
        char tv[32] = "-";
        if (tm) snprintf(tv, sizeof tv, "%.4f", num(tm, "value"));
        fprintf(f, " %.5f | %.4g | %.2f | %.1f | %.0f | %lld | %.2f | %lld | %s%s%s | %s |\n",
                num(r, "best_val_loss"), num(r, "best_val_ppl"), num(r, "time_s"),
                num(r, "peak_bytes") / 1048576.0, num(r, "tokens_per_sec"),
                (long long)json_integer_value(json_object_get(r, "trainable_params")),
                num(r, "saved_bytes") / 1048576.0,
                (long long)json_integer_value(json_object_get(r, "best_trial")), fm ? "memory" : "",
                fm && ft ? ", " : "", ft ? "time" : "", tv);
    }
    fputs("\nTime and memory are the best trial's (training wall time; the memory plan's "
          "predicted peak).\n\n## Pareto fronts\n\n",
          f);
    const char *w[] = {"loss_vs_memory", "loss_vs_time"};
    const char *lab[] = {"validation loss vs peak memory", "validation loss vs training time"};
    for (int k = 0; k < 2; k++) {
        fprintf(f, "- %s: ", lab[k]);
        json_t *v;
        json_array_foreach(json_object_get(json_object_get(cmp, "pareto"), w[k]), i, v)
            fprintf(f, "%s%s", i ? ", " : "", json_string_value(v));
        fputc('\n', f);
    }
    fprintf(f, "\n## Recommendation: %s\n\n", rec ? rec : "none");
    json_t *v;
    json_array_foreach(json_object_get(json_object_get(cmp, "recommendation"), "reasons"), i, v)
        fprintf(f, "- %s\n", json_string_value(v));
    return mb_close(&b);
}

/* ---- compare's charts ----------------------------------------------------------------------- */
static char *pareto_svg(const json_t *cmp, int axis) {
    method_pt p[64];
    int n = collect(cmp, p, 64);
    double xs[64], ys[64];
    for (int i = 0; i < n; i++)
        xs[i] = cost(&p[i], axis), ys[i] = p[i].loss;
    plot_map m = {0};
    int ok = 0;
    double fx[64], fy[64];
    for (int i = 0; i < n; i++)
        if (isfinite(p[i].loss)) fx[ok] = xs[i], fy[ok] = ys[i], ok++;
    domain(&m, 0, fx, ok);
    domain(&m, 1, fy, ok);
    membuf b;
    if (mb_open(&b)) return NULL;
    const char *which = axis ? "loss_vs_time" : "loss_vs_memory";
    plot_begin(b.f, &m,
               axis ? "Validation loss vs training time" : "Validation loss vs peak memory",
               axis ? "training time of the best trial (s)" : "planned peak memory (MiB)",
               "best validation loss");
    const char *rec =
        json_string_value(json_object_get(json_object_get(cmp, "recommendation"), "method"));
    /* the front, cheapest first, joined by a line */
    int nf = 0;
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(json_object_get(cmp, "pareto"), which), i, v) {
        for (int k = 0; k < n; k++)
            if (!strcmp(p[k].method, json_string_value(v)) && nf < 64)
                fx[nf] = xs[k], fy[nf] = ys[k], nf++;
    }
    plot_line(b.f, &m, fx, fy, nf, "front", "#888", " stroke-dasharray=\"4 3\"");
    for (int k = 0; k < n; k++) {
        if (!isfinite(p[k].loss)) continue;
        int front = in_front(cmp, which, p[k].method), is_rec = rec && !strcmp(rec, p[k].method);
        char cls[96], extra[160], tip[256];
        snprintf(cls, sizeof cls, "method %s%s", front ? "front" : "dominated",
                 is_rec ? " recommended" : "");
        char esc[96];
        snprintf(extra, sizeof extra, " data-method=\"%s\"", xml_esc(p[k].method, esc, sizeof esc));
        snprintf(tip, sizeof tip, "%s: val_loss %.5f, %s %.4g%s", p[k].method, p[k].loss,
                 axis ? "time" : "peak", xs[k], axis ? " s" : " MiB");
        const char *col = k_colors[k % 8];
        plot_point(b.f, &m, xs[k], ys[k], cls, front ? col : "#ffffff", col, is_rec ? 8 : 6, extra,
                   tip);
        double lx = px(&m, 0, xs[k]);
        int right = lx > m.phi[0] - 120; /* near the right edge: the label on the left */
        fprintf(b.f, "<text class=\"label\" x=\"%.2f\" y=\"%.2f\"%s>", right ? lx - 9 : lx + 9,
                px(&m, 1, ys[k]) - 7, right ? " text-anchor=\"end\"" : "");
        xml_puts(b.f, p[k].method);
        fprintf(b.f, "%s</text>\n", is_rec ? " (recommended)" : "");
    }
    fputs("</svg>\n", b.f);
    return mb_close(&b);
}

/* The best trial's trial.json of a compare row (NULL when none). */
static json_t *best_trial_json(const json_t *row) {
    const char *study = json_string_value(json_object_get(row, "study"));
    const json_t *bt = json_object_get(row, "best_trial");
    if (!study || !json_is_integer(bt)) return NULL;
    char p[4200];
    snprintf(p, sizeof p, "%.4000s/trials/%04lld/trial.json", study,
             (long long)json_integer_value(bt));
    return json_load_file(p, 0, NULL);
}

static int curve_xy(const json_t *curve, double **x, double **y) {
    size_t n = json_array_size(curve), i;
    *x = malloc((n + 1) * sizeof **x);
    *y = malloc((n + 1) * sizeof **y);
    if (!*x || !*y) return 0;
    json_t *pt;
    int k = 0;
    json_array_foreach(curve, i, pt) {
        double a = json_number_value(json_array_get(pt, 0)),
               c = json_number_value(json_array_get(pt, 1));
        if (isfinite(a) && isfinite(c)) (*x)[k] = a, (*y)[k] = c, k++;
    }
    return k;
}

static char *curves_svg(const json_t *cmp) {
    const json_t *rows = json_object_get(cmp, "methods");
    size_t nr = json_array_size(rows), i;
    json_t **tj = calloc(nr + 1, sizeof *tj);
    if (!tj) return NULL;
    /* the domain over every curve */
    double *allx = NULL, *ally = NULL;
    size_t na = 0;
    for (i = 0; i < nr; i++) {
        tj[i] = best_trial_json(json_array_get(rows, i));
        const char *k[] = {"train_curve", "val_curve"};
        for (int c = 0; c < 2; c++) {
            double *x, *y;
            int n = curve_xy(json_object_get(tj[i], k[c]), &x, &y);
            double *nx = realloc(allx, (na + n + 1) * sizeof *nx);
            if (nx) allx = nx;
            double *ny = realloc(ally, (na + n + 1) * sizeof *ny);
            if (ny) ally = ny;
            if (nx && ny && x && y) {
                memcpy(allx + na, x, n * sizeof *x);
                memcpy(ally + na, y, n * sizeof *y);
                na += n;
            }
            free(x);
            free(y);
        }
    }
    plot_map m = {0};
    domain(&m, 0, allx, (int)na);
    domain(&m, 1, ally, (int)na);
    free(allx);
    free(ally);
    membuf b;
    char *out = NULL;
    if (!mb_open(&b)) {
        plot_begin(b.f, &m, "Loss curves of each method's best trial", "optimizer step", "loss");
        for (i = 0; i < nr; i++) {
            const char *meth =
                json_string_value(json_object_get(json_array_get(rows, i), "method"));
            const char *col = k_colors[i % 8];
            char extra[96];
            char esc[64];
            snprintf(extra, sizeof extra, " data-method=\"%s\"", xml_esc(meth, esc, sizeof esc));
            double *x, *y;
            int n = curve_xy(json_object_get(tj[i], "train_curve"), &x, &y);
            plot_line(b.f, &m, x, y, n, "train", col, extra);
            free(x);
            free(y);
            n = curve_xy(json_object_get(tj[i], "val_curve"), &x, &y);
            char ex2[128];
            snprintf(ex2, sizeof ex2, "%s stroke-dasharray=\"6 3\"", extra);
            plot_line(b.f, &m, x, y, n, "val", col, ex2);
            for (int k = 0; k < n; k++) {
                char tip[128];
                snprintf(tip, sizeof tip, "%s: step %.0f, val_loss %.5f", meth, x[k], y[k]);
                plot_point(b.f, &m, x[k], y[k], "val", col, col, 3, extra, tip);
            }
            free(x);
            free(y);
            plot_legend(b.f, &m, (int)i, col, meth);
        }
        fprintf(b.f,
                "<text x=\"%g\" y=\"%g\" font-size=\"11\" fill=\"#555\">solid: training "
                "loss; dashed with dots: validation loss</text>\n</svg>\n",
                m.plo[0] + 6, m.plo[1] - 8);
        out = mb_close(&b);
    }
    for (i = 0; i < nr; i++)
        json_decref(tj[i]);
    free(tj);
    return out;
}

lt_status report_compare_html(const json_t *cmp, const char *outdir) {
    if (mkdirs(outdir))
        return lt_error(LT_ERR_IO, "%s: cannot create the folder: %s", outdir, strerror(errno));
    char *svg[3] = {curves_svg(cmp), pareto_svg(cmp, 0), pareto_svg(cmp, 1)};
    const char *names[3] = {"loss_curves.svg", "pareto_memory.svg", "pareto_time.svg"};
    lt_status s = LT_OK;
    for (int k = 0; k < 3 && !s; k++)
        s = svg[k] ? write_text(outdir, names[k], SVG_DECL, svg[k])
                   : lt_error(LT_ERR_NOMEM, "%s: out of memory", names[k]);
    char *md = NULL;
    membuf b;
    if (!s && !mb_open(&b)) {
        FILE *f = b.f;
        html_begin(f, "loratune compare");
        fputs("<p>Model <code>", f);
        xml_puts(f, json_string_value(json_object_get(cmp, "model")));
        fputs("</code>, data <code>", f);
        xml_puts(f, json_string_value(json_object_get(cmp, "data")));
        fputs("</code>. Quality: ", f);
        xml_puts(f, json_string_value(json_object_get(cmp, "metric")));
        fputs(".</p>\n", f);
        const json_t *rec = json_object_get(cmp, "recommendation");
        const char *rm = json_string_value(json_object_get(rec, "method"));
        fputs("<div class=\"rec\" id=\"recommendation\"><h2>Recommendation: ", f);
        xml_puts(f, rm ? rm : "none (no method meets the constraints)");
        fputs("</h2>\n<ul>\n", f);
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(rec, "reasons"), i, v) {
            fputs("<li>", f);
            xml_puts(f, json_string_value(v));
            fputs("</li>\n", f);
        }
        fputs("</ul></div>\n<h2>Methods</h2>\n<table id=\"methods\"><tr><th class=\"l\">method"
              "</th><th>complete</th><th>pruned</th><th>failed</th><th>infeasible</th>"
              "<th>val_loss</th><th>val_ppl</th><th>time_s</th><th>peak_MiB</th><th>tokens/s</th>"
              "<th>trainable</th><th>saved_MiB</th><th>best trial</th><th>task</th></tr>\n",
              f);
        json_array_foreach(json_object_get(cmp, "methods"), i, v) {
            fputs("<tr><td class=\"l\">", f);
            xml_puts(f, json_string_value(json_object_get(v, "method")));
            fprintf(f, "</td><td>%lld</td><td>%lld</td><td>%lld</td><td>%lld</td>",
                    (long long)json_integer_value(json_object_get(v, "complete")),
                    (long long)json_integer_value(json_object_get(v, "pruned")),
                    (long long)json_integer_value(json_object_get(v, "failed")),
                    (long long)json_integer_value(json_object_get(v, "infeasible")));
            const json_t *tm = json_object_get(v, "task_metric");
            char tv[32] = "-";
            if (tm) snprintf(tv, sizeof tv, "%.4f", num(tm, "value"));
            if (isfinite(num(v, "best_val_loss")))
                fprintf(f,
                        "<td>%.5f</td><td>%.4g</td><td>%.2f</td><td>%.1f</td><td>%.0f</td>"
                        "<td>%lld</td><td>%.2f</td><td>%lld</td><td>%s</td></tr>\n",
                        num(v, "best_val_loss"), num(v, "best_val_ppl"), num(v, "time_s"),
                        num(v, "peak_bytes") / 1048576.0, num(v, "tokens_per_sec"),
                        (long long)json_integer_value(json_object_get(v, "trainable_params")),
                        num(v, "saved_bytes") / 1048576.0,
                        (long long)json_integer_value(json_object_get(v, "best_trial")), tv);
            else
                fputs("<td colspan=\"9\">no complete trial</td></tr>\n", f);
        }
        fputs("</table>\n<p>Time and memory are the best trial's: its training wall time and the "
              "memory plan's predicted peak.</p>\n",
              f);
        const char *heads[3] = {"Loss curves", "Pareto front: validation loss vs peak memory",
                                "Pareto front: validation loss vs training time"};
        for (int k = 0; k < 3; k++) {
            fprintf(f, "<h2>%s</h2>\n", heads[k]);
            if (k) {
                fprintf(f, "<p>On the front (filled, joined by the dashed line): ");
                json_array_foreach(json_object_get(json_object_get(cmp, "pareto"),
                                                   k == 1 ? "loss_vs_memory" : "loss_vs_time"),
                                   i, v) {
                    if (i) fputs(", ", f);
                    xml_puts(f, json_string_value(v));
                }
                fputs(". Hollow: dominated.</p>\n", f);
            }
            fputs(svg[k], f);
        }
        fputs("</body>\n</html>\n", f);
        md = mb_close(&b);
        s = md ? write_text(outdir, "index.html", "", md) : lt_error(LT_ERR_NOMEM, "index.html");
    }
    free(md);
    for (int k = 0; k < 3; k++)
        free(svg[k]);
    return s;
}

/* ---- a study's report --------------------------------------------------------------------- */
/* A parameter value's position on its slice's x axis: the number, or the choice's index. */
static int param_x(const json_t *spec, const json_t *v, double *x) {
    const json_t *ch = json_object_get(spec, "choices");
    if (ch) {
        size_t i;
        json_t *c;
        json_array_foreach(ch, i, c) if (json_equal(c, (json_t *)v)) return *x = (double)i, 1;
        return 0;
    }
    if (!json_is_number(v)) return 0;
    *x = json_number_value(v);
    return 1;
}

static char *choice_label(const json_t *c) {
    if (json_is_string(c)) return strdup(json_string_value(c));
    return json_dumps(c, JSON_ENCODE_ANY);
}

static char *history_svg(const json_t *st, int maximize) {
    const json_t *trials = json_object_get(st, "trials");
    size_t n = json_array_size(trials), i;
    double *x = calloc(n + 1, sizeof *x), *y = calloc(n + 1, sizeof *y),
           *bx = calloc(2 * n + 1, sizeof *bx), *by = calloc(2 * n + 1, sizeof *by);
    membuf b = {0};
    char *out = NULL;
    if (!x || !y || !bx || !by || mb_open(&b)) goto done;
    int k = 0, nb = 0;
    double best = NAN;
    json_t *t;
    json_array_foreach(trials, i, t) { /* the domain: complete values and pruned trials' last */
        const char *state = json_string_value(json_object_get(t, "state"));
        double v = num(t, "value");
        if (state && !strcmp(state, "pruned")) {
            json_t *im = json_object_get(t, "intermediate");
            v = json_number_value(json_array_get(json_array_get(im, json_array_size(im) - 1), 1));
            if (!json_array_size(im)) v = NAN;
        } else if (!state || strcmp(state, "complete"))
            v = NAN;
        x[k] = (double)json_integer_value(json_object_get(t, "trial"));
        y[k++] = v;
    }
    plot_map m = {.xint = 1};
    domain(&m, 0, x, k);
    domain(&m, 1, y, k);
    plot_begin(b.f, &m, "Optimization history", "trial", "objective (final validation loss)");
    json_array_foreach(trials, i, t) {
        const char *state = json_string_value(json_object_get(t, "state"));
        if (!state || strcmp(state, "complete")) continue;
        double v = num(t, "value");
        if (!isfinite(v)) continue;
        /* a staircase: level until an improvement, then down (or up) at that trial */
        if (nb) bx[nb] = x[i], by[nb] = best, nb++;
        if (!(best == best) || (maximize ? v > best : v < best)) best = v;
        bx[nb] = x[i], by[nb++] = best;
    }
    plot_line(b.f, &m, bx, by, nb, "best", "#d62728", "");
    json_array_foreach(trials, i, t) {
        if (!isfinite(y[i])) continue;
        const char *state = json_string_value(json_object_get(t, "state"));
        int pr = strcmp(state, "complete") != 0;
        char extra[64], tip[96];
        snprintf(extra, sizeof extra, " data-trial=\"%.0f\"", x[i]);
        snprintf(tip, sizeof tip, "trial %.0f: %s %.5f", x[i], pr ? "pruned, last value" : "",
                 y[i]);
        plot_point(b.f, &m, x[i], y[i], pr ? "trial pruned" : "trial complete",
                   pr ? "#ffffff" : "#1f77b4", pr ? "#999999" : "#1f77b4", 4, extra, tip);
    }
    plot_legend(b.f, &m, 0, "#d62728", "best so far");
    plot_legend(b.f, &m, 1, "#1f77b4", "complete trial");
    plot_legend(b.f, &m, 2, "#999999", "pruned (last value)");
    fputs("</svg>\n", b.f);
    out = mb_close(&b);
done:
    if (!out && b.f) free(mb_close(&b));
    free(x);
    free(y);
    free(bx);
    free(by);
    return out;
}

static char *slice_svg(const json_t *st, const char *name, const json_t *spec) {
    const json_t *trials = json_object_get(st, "trials");
    size_t n = json_array_size(trials), i;
    double *x = calloc(n + 1, sizeof *x), *y = calloc(n + 1, sizeof *y);
    int *tr = calloc(n + 1, sizeof *tr);
    const json_t *ch = json_object_get(spec, "choices");
    size_t nc = json_array_size(ch);
    char **cats = calloc(nc + 1, sizeof *cats);
    membuf b = {0};
    char *out = NULL;
    if (!x || !y || !tr || !cats || mb_open(&b)) goto done;
    int k = 0;
    json_t *t;
    json_array_foreach(trials, i, t) {
        const char *state = json_string_value(json_object_get(t, "state"));
        double v = num(t, "value"), px_;
        if (!state || strcmp(state, "complete") || !isfinite(v)) continue;
        if (!param_x(spec, json_object_get(json_object_get(t, "params"), name), &px_)) continue;
        x[k] = px_, y[k] = v, tr[k++] = (int)json_integer_value(json_object_get(t, "trial"));
    }
    plot_map m = {0};
    if (ch) {
        for (size_t c = 0; c < nc; c++)
            cats[c] = choice_label(json_array_get(ch, c));
        m.cats = (const char **)cats;
        m.ncats = (int)nc;
        m.lo[0] = -0.5, m.hi[0] = nc - 0.5;
    } else {
        m.log[0] = json_is_true(json_object_get(spec, "log"));
        const char *ty = json_string_value(json_object_get(spec, "type"));
        m.xint = ty && !strcmp(ty, "int");
        double lh[2] = {num(spec, "low"), num(spec, "high")};
        domain(&m, 0, lh, 2); /* the whole range searched */
    }
    domain(&m, 1, y, k);
    char title[256];
    snprintf(title, sizeof title, "Slice: objective vs %s", name);
    plot_begin(b.f, &m, title, name, "objective (final validation loss)");
    for (int j = 0; j < k; j++) {
        char extra[64], tip[256];
        snprintf(extra, sizeof extra, " data-trial=\"%d\"", tr[j]);
        if (ch)
            snprintf(tip, sizeof tip, "trial %d: %s = %s, %.5f", tr[j], name, cats[(int)x[j]],
                     y[j]);
        else
            snprintf(tip, sizeof tip, "trial %d: %s = %.6g, %.5f", tr[j], name, x[j], y[j]);
        plot_point(b.f, &m, x[j], y[j], "trial complete", "#1f77b4", "#1f77b4", 4, extra, tip);
    }
    fputs("</svg>\n", b.f);
    out = mb_close(&b);
done:
    if (!out && b.f) free(mb_close(&b));
    for (size_t c = 0; cats && c < nc; c++)
        free(cats[c]);
    free(cats);
    free(x);
    free(y);
    free(tr);
    return out;
}

/* importance.svg: one bar per parameter, most important first; each bar's top is its
 * importance on the y axis (data-param, data-value). */
static char *importance_svg(const json_t *st, const double *imp, double main_fraction, int n_used) {
    const json_t *space = json_object_get(st, "space");
    int np = (int)json_object_size(space), *order = calloc((size_t)np + 1, sizeof(int));
    const char **names = calloc((size_t)np + 1, sizeof(char *));
    membuf b = {0};
    char *out = NULL;
    if (!order || !names || mb_open(&b)) goto done;
    const char *name;
    json_t *spec;
    int k = 0;
    for (int i = 0; i < np; i++)
        order[i] = i;
    for (int i = 1; i < np; i++) /* insertion sort, descending, stable */
        for (int j = i; j > 0 && imp[order[j]] > imp[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1], order[j - 1] = t;
        }
    json_object_foreach((json_t *)space, name, spec) names[k++] = name;
    {
        const char **tmp = calloc((size_t)np + 1, sizeof(char *));
        if (!tmp) goto done;
        for (int i = 0; i < np; i++)
            tmp[i] = names[order[i]];
        memcpy(names, tmp, sizeof(char *) * (size_t)np);
        free(tmp);
    }
    plot_map m = {.cats = names, .ncats = np};
    m.lo[0] = -0.5, m.hi[0] = np - 0.5, m.lo[1] = 0, m.hi[1] = 1;
    char title[160];
    snprintf(title, sizeof title, "Parameter importance (fANOVA of the GP mean, %d trials)",
             n_used);
    plot_begin(b.f, &m, title, "parameter", "share of the main-effect variance");
    double w = 0.6 * (m.phi[0] - m.plo[0]) / (np > 0 ? np : 1);
    for (int i = 0; i < np; i++) {
        double v = imp[order[i]], x = px(&m, 0, i), top = px(&m, 1, v), base = px(&m, 1, 0);
        fprintf(b.f,
                "<rect class=\"bar\" x=\"%.3f\" y=\"%.3f\" width=\"%.3f\" height=\"%.3f\" "
                "fill=\"#1f77b4\" data-x=\"%d\" data-value=\"%.17g\" data-param=\"",
                x - w / 2, top, w, base - top, i, v);
        xml_puts(b.f, names[i]);
        fputs("\"><title>", b.f);
        char tip[64];
        snprintf(tip, sizeof tip, ": %.4f", v);
        xml_puts(b.f, names[i]);
        xml_puts(b.f, tip);
        fputs("</title></rect>\n", b.f);
    }
    char note[96];
    snprintf(note, sizeof note, "main effects explain %.0f%% of the variance", 100 * main_fraction);
    fprintf(b.f, "<text class=\"note\" x=\"%g\" y=\"%g\" text-anchor=\"end\">", m.phi[0] - 8,
            m.phi[1] + 18);
    xml_puts(b.f, note);
    fputs("</text>\n", b.f);
    fputs("</svg>\n", b.f);
    out = mb_close(&b);
done:
    if (!out && b.f) free(mb_close(&b));
    free(order);
    free(names);
    return out;
}

/* parallel.svg: parallel coordinates, one vertical axis per parameter and the objective last;
 * each complete trial a polyline through its values, darker the better. Each axis group
 * (class pc-axis) carries data-param, data-x (its pixel column), data-lo / data-hi (the domain;
 * log10 on a log axis, choice indices for a categorical), data-log, data-pxlo / data-pxhi
 * (bottom and top pixels); each line its data-trial and data-values (the numbers, choice
 * indices for categoricals, the objective last). */
static char *parallel_svg(const json_t *st, int maximize) {
    const json_t *space = json_object_get(st, "space"), *trials = json_object_get(st, "trials");
    int np = (int)json_object_size(space), na = np + 1;
    size_t nt = json_array_size(trials), i;
    double *val = calloc((nt + 1) * (size_t)na, sizeof(double)), *lo = calloc(na, sizeof(double)),
           *hi = calloc(na, sizeof(double));
    int *lg = calloc(na, sizeof(int)), *tr = calloc(nt + 1, sizeof(int)),
        *ord = calloc(nt + 1, sizeof(int));
    double *colx = NULL;
    membuf b = {0};
    char *out = NULL;
    if (!val || !lo || !hi || !lg || !tr || !ord || mb_open(&b)) goto done;
    int n = 0;
    json_t *t;
    json_array_foreach(trials, i, t) {
        const char *state = json_string_value(json_object_get(t, "state"));
        double v = num(t, "value");
        if (!state || strcmp(state, "complete") || !isfinite(v)) continue;
        const char *name;
        json_t *spec;
        int a = 0, ok = 1;
        json_object_foreach((json_t *)space, name, spec) {
            ok &= param_x(spec, json_object_get(json_object_get(t, "params"), name),
                          &val[(size_t)n * na + a]);
            a++;
        }
        if (!ok) continue;
        val[(size_t)n * na + np] = v;
        tr[n++] = (int)json_integer_value(json_object_get(t, "trial"));
    }
    const double top = 60, bottom = PLOT_H - 45, left = 60, right = PLOT_W - 60;
    fprintf(b.f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n"
            "<title>Parallel coordinates</title>\n<rect width=\"%d\" height=\"%d\" "
            "fill=\"#ffffff\"/>\n<text x=\"%d\" y=\"22\" text-anchor=\"middle\" "
            "font-size=\"14\">Parallel coordinates (%d complete trials; darker is better)</text>\n",
            PLOT_W, PLOT_H, PLOT_W, PLOT_H, PLOT_W, PLOT_H, PLOT_W / 2, n);
    const char *name;
    json_t *spec;
    int a = 0;
    colx = calloc(na, sizeof(double));
    if (!colx) goto done;
    for (int k = 0; k < na; k++)
        colx[k] = na > 1 ? left + (right - left) * k / (na - 1) : left;
    json_object_foreach((json_t *)space, name, spec) {
        const json_t *ch = json_object_get(spec, "choices");
        if (ch) {
            size_t nc = json_array_size(ch);
            lo[a] = nc > 1 ? 0 : -0.5, hi[a] = nc > 1 ? (double)nc - 1 : 0.5;
        } else {
            lg[a] = json_is_true(json_object_get(spec, "log"));
            lo[a] = lg[a] ? log10(num(spec, "low")) : num(spec, "low");
            hi[a] = lg[a] ? log10(num(spec, "high")) : num(spec, "high");
        }
        a++;
    }
    { /* the objective's axis: the values' range */
        double l = INFINITY, h = -INFINITY;
        for (int k = 0; k < n; k++) {
            double v = val[(size_t)k * na + np];
            l = v < l ? v : l, h = v > h ? v : h;
        }
        if (!(l < h)) l = (n ? l : 0) - 0.5, h = l + 1;
        lo[np] = l, hi[np] = h;
    }
    a = 0;
    json_object_foreach((json_t *)space, name, spec) { /* the axes */
        const json_t *ch = json_object_get(spec, "choices");
        fprintf(b.f,
                "<g class=\"pc-axis\" data-x=\"%.3f\" data-lo=\"%.17g\" data-hi=\"%.17g\" "
                "data-log=\"%d\" data-pxlo=\"%g\" data-pxhi=\"%g\" data-param=\"",
                colx[a], lo[a], hi[a], lg[a], bottom, top);
        xml_puts(b.f, name);
        fprintf(b.f,
                "\"><line x1=\"%.3f\" y1=\"%g\" x2=\"%.3f\" y2=\"%g\" stroke=\"#444\"/>"
                "<text x=\"%.3f\" y=\"%g\" text-anchor=\"middle\">",
                colx[a], top, colx[a], bottom, colx[a], bottom + 18);
        xml_puts(b.f, name);
        fputs("</text>", b.f);
        if (ch) {
            size_t c;
            json_t *cv;
            json_array_foreach(ch, c, cv) {
                double y = bottom + ((double)c - lo[a]) / (hi[a] - lo[a]) * (top - bottom);
                char *lab = choice_label(cv);
                fprintf(b.f, "<text x=\"%.3f\" y=\"%.3f\" font-size=\"10\">", colx[a] + 4, y + 4);
                xml_puts(b.f, lab ? lab : "?");
                fputs("</text>", b.f);
                free(lab);
            }
        } else {
            fprintf(b.f,
                    "<text x=\"%.3f\" y=\"%g\" font-size=\"10\">%.4g</text>"
                    "<text x=\"%.3f\" y=\"%g\" font-size=\"10\">%.4g</text>",
                    colx[a] + 4, top + 4, num(spec, "high"), colx[a] + 4, bottom + 4,
                    num(spec, "low"));
        }
        fputs("</g>\n", b.f);
        a++;
    }
    fprintf(b.f,
            "<g class=\"pc-axis\" data-x=\"%.3f\" data-lo=\"%.17g\" data-hi=\"%.17g\" "
            "data-log=\"0\" data-pxlo=\"%g\" data-pxhi=\"%g\" data-param=\"objective\">"
            "<line x1=\"%.3f\" y1=\"%g\" x2=\"%.3f\" y2=\"%g\" stroke=\"#444\"/>"
            "<text x=\"%.3f\" y=\"%g\" text-anchor=\"middle\">objective</text>"
            "<text x=\"%.3f\" y=\"%g\" font-size=\"10\" text-anchor=\"end\">%.5g</text>"
            "<text x=\"%.3f\" y=\"%g\" font-size=\"10\" text-anchor=\"end\">%.5g</text></g>\n",
            colx[np], lo[np], hi[np], bottom, top, colx[np], top, colx[np], bottom, colx[np],
            bottom + 18, colx[np] - 4, top + 4, hi[np], colx[np] - 4, bottom + 4, lo[np]);
    /* worst first, so the best lines are drawn on top */
    for (int k = 0; k < n; k++)
        ord[k] = k;
    for (int k = 1; k < n; k++)
        for (int j = k; j > 0; j--) {
            double vj = val[(size_t)ord[j] * na + np], vp = val[(size_t)ord[j - 1] * na + np];
            if (!(maximize ? vj < vp : vj > vp)) break;
            int x = ord[j];
            ord[j] = ord[j - 1], ord[j - 1] = x;
        }
    for (int r = 0; r < n; r++) {
        int k = ord[r];
        double q = n > 1 ? (double)r / (n - 1) : 1; /* 0 worst .. 1 best */
        int cr = (int)(198 + q * (8 - 198)), cg = (int)(219 + q * (48 - 219)),
            cb = (int)(239 + q * (107 - 239));
        fprintf(b.f,
                "<polyline class=\"trial\" fill=\"none\" stroke=\"rgb(%d,%d,%d)\" "
                "stroke-width=\"1.5\" data-trial=\"%d\" points=\"",
                cr, cg, cb, tr[k]);
        for (int x = 0; x < na; x++) {
            double v = val[(size_t)k * na + x], tv = lg[x] ? log10(v) : v;
            fprintf(b.f, "%s%.3f,%.3f", x ? " " : "", colx[x],
                    bottom + (tv - lo[x]) / (hi[x] - lo[x]) * (top - bottom));
        }
        fputs("\" data-values=\"", b.f);
        for (int x = 0; x < na; x++)
            fprintf(b.f, "%s%.17g", x ? " " : "", val[(size_t)k * na + x]);
        fprintf(b.f, "\"><title>trial %d: %.5f</title></polyline>\n", tr[k],
                val[(size_t)k * na + np]);
    }
    fputs("</svg>\n", b.f);
    out = mb_close(&b);
done:
    if (!out && b.f) free(mb_close(&b));
    free(val);
    free(lo);
    free(hi);
    free(lg);
    free(tr);
    free(ord);
    free(colx);
    return out;
}

/* slice_<name>.svg with the name's characters outside [A-Za-z0-9_-] as '_' */
static void slice_file(const char *name, char *b, size_t n) {
    snprintf(b, n, "slice_%.200s.svg", name);
    for (char *p = b + 6; *p && strcmp(p, ".svg"); p++)
        if (!(('a' <= *p && *p <= 'z') || ('A' <= *p && *p <= 'Z') || ('0' <= *p && *p <= '9') ||
              *p == '-' || *p == '_'))
            *p = '_';
}

lt_status report_study_html(const char *study_dir, const char *outdir) {
    char p[4200];
    snprintf(p, sizeof p, "%.4000s/study.json", study_dir);
    json_error_t err;
    json_t *st = json_load_file(p, 0, &err);
    if (!st) return lt_error(LT_ERR_FORMAT, "%s: %s", p, err.text);
    if (mkdirs(outdir)) {
        json_decref(st);
        return lt_error(LT_ERR_IO, "%s: cannot create the folder: %s", outdir, strerror(errno));
    }
    const char *dir = json_string_value(json_object_get(st, "direction"));
    int maximize = dir && !strcmp(dir, "maximize");
    lt_status s = LT_OK;
    membuf b;
    if (mb_open(&b)) {
        json_decref(st);
        return lt_error(LT_ERR_NOMEM, "report: out of memory");
    }
    FILE *f = b.f;
    char title[4200];
    snprintf(title, sizeof title, "loratune study %s", study_dir);
    html_begin(f, title);
    const json_t *trials = json_object_get(st, "trials"), *t;
    size_t i;
    int counts[5] = {0};
    const char *states[] = {"complete", "pruned", "failed", "running"};
    const json_t *bt = NULL;
    json_array_foreach(trials, i, t) {
        const char *sn = json_string_value(json_object_get(t, "state"));
        for (int k = 0; k < 4; k++)
            if (sn && !strcmp(sn, states[k])) counts[k]++;
        if (sn && !strcmp(sn, "complete") && isfinite(num(t, "value")) &&
            (!bt ||
             (maximize ? num(t, "value") > num(bt, "value") : num(t, "value") < num(bt, "value"))))
            bt = t;
    }
    fprintf(f,
            "<p>%zu trials: %d complete, %d pruned, %d failed (infeasible ones included), "
            "%d running. Direction: %s.</p>\n",
            json_array_size(trials), counts[0], counts[1], counts[2], counts[3],
            maximize ? "maximize" : "minimize");
    if (bt) {
        char *pj = json_dumps(json_object_get(bt, "params"), JSON_COMPACT | JSON_REAL_PRECISION(6));
        fprintf(f, "<p id=\"best\">Best: trial %lld, value %.5f, ",
                (long long)json_integer_value(json_object_get(bt, "trial")), num(bt, "value"));
        xml_puts(f, pj);
        snprintf(p, sizeof p, "%.4000s/best_config.yaml", study_dir);
        fputs(lt_path_exists(p) ? " (its options: best_config.yaml).</p>\n" : ".</p>\n", f);
        free(pj);
    }
    char *svg = history_svg(st, maximize);
    if (!svg) s = lt_error(LT_ERR_NOMEM, "history.svg: out of memory");
    if (!s) s = write_text(outdir, "history.svg", SVG_DECL, svg);
    if (!s) {
        fputs("<h2>Optimization history</h2>\n<p>Each complete trial's value (filled), each "
              "pruned trial's last intermediate value (hollow), and the best value so far "
              "(line).</p>\n",
              f);
        fputs(svg, f);
    }
    free(svg);
    const char *name;
    json_t *spec;
    if (!s)
        fputs("<h2>Slices</h2>\n<p>The objective of each complete trial against each "
              "parameter (the x axis spans the range searched; log-scaled for log "
              "parameters).</p>\n",
              f);
    json_object_foreach(json_object_get(st, "space"), name, spec) {
        if (s) break;
        char fn[256];
        slice_file(name, fn, sizeof fn);
        svg = slice_svg(st, name, spec);
        s = svg ? write_text(outdir, fn, SVG_DECL, svg) : lt_error(LT_ERR_NOMEM, "%s", fn);
        if (!s) fputs(svg, f);
        free(svg);
    }
    if (!s) { /* parameter importance (needs 3 complete trials) and parallel coordinates */
        lt_study *so = NULL;
        int np = (int)json_object_size(json_object_get(st, "space")), nu = 0;
        double imp[np + 1], mf = 0;
        lt_status is = lt_study_open_readonly(study_dir, &so);
        if (!is) is = lt_study_param_importance(so, imp, &mf, &nu);
        lt_study_close(so);
        fputs("<h2>Parameter importance</h2>\n", f);
        if (is) {
            fputs("<p id=\"importance-none\">Not computed: ", f);
            xml_puts(f, lt_errmsg());
            fputs(".</p>\n", f);
        } else {
            fputs("<p>Each parameter's share of the variance of the objective explained by it "
                  "alone: a functional ANOVA of the GP's posterior mean fitted to the complete "
                  "trials, over the distribution each parameter is searched from (docs/TUNE.md, "
                  "\"Parameter importance\"). The shares sum to 1; the legend says how much of "
                  "the variance the parameters explain alone (the rest: interactions).</p>\n",
                  f);
            svg = importance_svg(st, imp, mf, nu);
            s = svg ? write_text(outdir, "importance.svg", SVG_DECL, svg)
                    : lt_error(LT_ERR_NOMEM, "importance.svg");
            if (!s) fputs(svg, f);
            free(svg);
        }
    }
    if (!s) {
        fputs("<h2>Parallel coordinates</h2>\n<p>Each complete trial as a line through its "
              "parameters and its objective (right); darker lines are better trials. "
              "Bundles of dark lines show the ranges that work; crossing lines a parameter "
              "that matters little.</p>\n",
              f);
        svg = parallel_svg(st, maximize);
        s = svg ? write_text(outdir, "parallel.svg", SVG_DECL, svg)
                : lt_error(LT_ERR_NOMEM, "parallel.svg");
        if (!s) fputs(svg, f);
        free(svg);
    }
    if (!s) {
        fputs("<h2>Trials</h2>\n<table id=\"trials\"><tr><th>trial</th><th class=\"l\">state</th>"
              "<th>value</th><th class=\"l\">parameters</th></tr>\n",
              f);
        json_array_foreach(trials, i, t) {
            char *pj =
                json_dumps(json_object_get(t, "params"), JSON_COMPACT | JSON_REAL_PRECISION(6));
            fprintf(f, "<tr><td>%lld</td><td class=\"l\">",
                    (long long)json_integer_value(json_object_get(t, "trial")));
            xml_puts(f, json_string_value(json_object_get(t, "state")));
            if (json_object_get(t, "infeasible")) fputs(" (infeasible)", f);
            if (isfinite(num(t, "value")))
                fprintf(f, "</td><td>%.5f</td><td class=\"l\">", num(t, "value"));
            else
                fputs("</td><td>-</td><td class=\"l\">", f);
            xml_puts(f, pj);
            fputs("</td></tr>\n", f);
            free(pj);
        }
        fputs("</table>\n</body>\n</html>\n", f);
    }
    char *html = mb_close(&b);
    if (!s)
        s = html ? write_text(outdir, "index.html", "", html)
                 : lt_error(LT_ERR_NOMEM, "index.html");
    free(html);
    json_decref(st);
    return s;
}
