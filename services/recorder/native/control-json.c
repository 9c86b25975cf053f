/* JSON for the control pipe: a writer for what recorder-rx says, and a parser for the
 * flat objects the Node worker sends (contracts/recorder-rx.ts keeps them flat). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "recorder-rx.h"

static void sb_reserve(struct sbuf *b, size_t more) {
  if (b->len + more + 1 <= b->cap) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + more + 1) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) abort();
  b->p = p;
  b->cap = cap;
}

void sb_putc(struct sbuf *b, char c) {
  sb_reserve(b, 1);
  b->p[b->len++] = c;
  b->p[b->len] = 0;
}

void sb_puts(struct sbuf *b, const char *s) {
  size_t n = strlen(s);
  sb_reserve(b, n);
  memcpy(b->p + b->len, s, n + 1);
  b->len += n;
}

void sb_printf(struct sbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  sb_reserve(b, (size_t)n);
  va_start(ap, fmt);
  vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

void sb_json_str(struct sbuf *b, const char *s) {
  sb_putc(b, '"');
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if (*c == '"' || *c == '\\') {
      sb_putc(b, '\\');
      sb_putc(b, (char)*c);
    } else if (*c < 0x20) {
      sb_printf(b, "\\u%04x", *c);
    } else {
      sb_putc(b, (char)*c);
    }
  }
  sb_putc(b, '"');
}

void sb_free(struct sbuf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

static char *skip_ws(char *p) {
  while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
  return p;
}

static int hex4(const char *p, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return -1;
  }
  *out = v;
  return 0;
}

static char *put_utf8(char *w, unsigned cp) {
  if (cp < 0x80) {
    *w++ = (char)cp;
  } else if (cp < 0x800) {
    *w++ = (char)(0xc0 | (cp >> 6));
    *w++ = (char)(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    *w++ = (char)(0xe0 | (cp >> 12));
    *w++ = (char)(0x80 | ((cp >> 6) & 0x3f));
    *w++ = (char)(0x80 | (cp & 0x3f));
  } else {
    *w++ = (char)(0xf0 | (cp >> 18));
    *w++ = (char)(0x80 | ((cp >> 12) & 0x3f));
    *w++ = (char)(0x80 | ((cp >> 6) & 0x3f));
    *w++ = (char)(0x80 | (cp & 0x3f));
  }
  return w;
}

/* Decodes a string literal in place (the decoded form is never longer); returns the char after it. */
static char *parse_string(char *p, char **out) {
  if (*p != '"') return NULL;
  char *r = p + 1, *w = p + 1;
  *out = w;
  while (*r != '"') {
    if (*r == 0) return NULL;
    if (*r != '\\') {
      *w++ = *r++;
      continue;
    }
    r++;
    switch (*r) {
      case '"': case '\\': case '/': *w++ = *r++; break;
      case 'b': *w++ = '\b'; r++; break;
      case 'f': *w++ = '\f'; r++; break;
      case 'n': *w++ = '\n'; r++; break;
      case 'r': *w++ = '\r'; r++; break;
      case 't': *w++ = '\t'; r++; break;
      case 'u': {
        unsigned cp, lo;
        if (hex4(r + 1, &cp)) return NULL;
        r += 5;
        if (cp >= 0xd800 && cp < 0xdc00 && r[0] == '\\' && r[1] == 'u' && !hex4(r + 2, &lo) && lo >= 0xdc00 && lo < 0xe000) {
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          r += 6;
        }
        if (cp == 0) return NULL; /* NUL cannot live in a C string or a path */
        w = put_utf8(w, cp);
        break;
      }
      default: return NULL;
    }
  }
  *w = 0;
  return r + 1;
}

int json_parse_flat(char *line, struct json_obj *out) {
  out->n = 0;
  char *p = skip_ws(line);
  if (*p++ != '{') return -1;
  p = skip_ws(p);
  if (*p == '}') return *skip_ws(p + 1) ? -1 : 0;
  for (;;) {
    if (out->n == JSON_MAX_FIELDS) return -1;
    struct json_field *f = &out->f[out->n];
    p = parse_string(skip_ws(p), &f->key);
    if (!p) return -1;
    p = skip_ws(p);
    if (*p++ != ':') return -1;
    p = skip_ws(p);
    f->str = NULL;
    f->num = 0;
    if (*p == '"') {
      p = parse_string(p, &f->str);
      if (!p) return -1;
    } else if (!strncmp(p, "true", 4)) {
      f->num = 1;
      p += 4;
    } else if (!strncmp(p, "false", 5)) {
      p += 5;
    } else {
      char *end;
      f->num = strtod(p, &end);
      if (end == p) return -1;
      p = end;
    }
    out->n++;
    p = skip_ws(p);
    if (*p == ',') {
      p++;
      continue;
    }
    if (*p++ != '}') return -1;
    return *skip_ws(p) ? -1 : 0;
  }
}

const char *json_str(const struct json_obj *o, const char *key) {
  for (int i = 0; i < o->n; i++)
    if (!strcmp(o->f[i].key, key)) return o->f[i].str;
  return NULL;
}

int json_num(const struct json_obj *o, const char *key, double *out) {
  for (int i = 0; i < o->n; i++)
    if (!strcmp(o->f[i].key, key) && !o->f[i].str) {
      *out = o->f[i].num;
      return 0;
    }
  return -1;
}

/* One message per line on stdout. */
void emit(struct sbuf *b) {
  sb_putc(b, '\n');
  const char *p = b->p;
  size_t n = b->len;
  while (n > 0) {
    ssize_t w = write(1, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      /* The worker is gone: keep sealing (end of input follows) without telling anyone. */
      break;
    }
    p += w;
    n -= (size_t)w;
  }
  sb_free(b);
}

void msg_start(struct sbuf *b, const char *type) {
  sb_printf(b, "{\"v\":%d,\"type\":\"%s\"", RX_PROTOCOL_VERSION, type);
}

void report_error(const char *code, const char *message) {
  struct sbuf b = {0};
  msg_start(&b, "error");
  sb_puts(&b, ",\"code\":");
  sb_json_str(&b, code);
  sb_puts(&b, ",\"message\":");
  sb_json_str(&b, message);
  sb_putc(&b, '}');
  emit(&b);
}

