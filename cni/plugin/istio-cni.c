/*
 * istio-cni: the chained CNI plugin of the ambient node agent (spec section 6.1).
 *
 * Why C and not TypeScript: the container runtime execs this binary on the host, once per pod
 * sandbox and outside any container, so it can rely on nothing but the kernel and libc. A Node
 * plugin would need a Node runtime on every host (or a ~100 MB single-executable copy in
 * /opt/cni/bin) and would add Node's start-up time to every pod start. The plugin's job is small and
 * fixed: read the config from stdin, forward it with the CNI_* variables to the node agent over a
 * unix socket, print the agent's answer. A static C program of this size has no dependencies to
 * install or patch, and every decision (is this pod ambient, how to enroll it) stays in the agent.
 *
 * Contract with the agent (cni/src/plugin-protocol.ts holds the other side):
 *   ADD    POST /cmdadd over <cni_agent_run_dir>/pluginevent.sock, HTTP/1.1, 5 s deadline, body
 *          {"Netns","PodName","PodNamespace","PodUID","InfraContainerID","ContainerID","IfName",
 *           "IPs": <prevResult.ips as received>, "Config": <stdin as received>}
 *          200: the body is the result to print. Otherwise the body is a CNI error object to print.
 *   agent unreachable (nothing listening on the socket): the plugin cannot tell whether the pod is
 *          ambient, so it reads <cni_agent_run_dir>/enrollment-state, written by the agent, and
 *          fails ADD for pods that file marks as possibly ambient; it fails ADD for every pod when
 *          the file is missing, and lets every other pod start with prevResult unchanged.
 *   DEL, CHECK, GC, STATUS: success without contacting the agent (its pod watch drives cleanup).
 *
 * Output: the result or error JSON on stdout, nothing else; logs on stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Well-known CNI error codes (CNI spec, "Error"), plus this plugin's own (100+). */
enum {
  ERR_INCOMPATIBLE_VERSION = 1,
  ERR_INVALID_ENV = 4,
  ERR_IO = 5,
  ERR_DECODE = 6,
  ERR_INVALID_CONFIG = 7,
  ERR_TRY_AGAIN_LATER = 11,
  ERR_AGENT_PROTOCOL = 101,
};

#define PLUGIN_NAME "istio-cni"
#define LATEST_VERSION "1.1.0"
#define DEFAULT_RUN_DIR "/var/run/istio-cni"
#define SOCKET_NAME "pluginevent.sock"
#define STATE_FILE_NAME "enrollment-state"
#define STATE_FILE_HEADER "istio-cni-enrollment-state 1"
#define AGENT_TIMEOUT_MS 5000
/* Limits: a network config with prevResult is a few KiB; these only bound hostile input. */
#define MAX_STDIN (4u << 20)
#define MAX_RESPONSE (4u << 20)
#define MAX_JSON_DEPTH 64
#define MAX_NAME 512

static const char *const SUPPORTED_VERSIONS[] = {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"};
#define N_SUPPORTED (sizeof SUPPORTED_VERSIONS / sizeof SUPPORTED_VERSIONS[0])

/* ---------------------------------------------------------------- output and logging */

enum { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_NONE };
static int g_log_level = LOG_INFO;
/* The cniVersion echoed in results and errors; the config's once it is known. */
static char g_version[32] = LATEST_VERSION;
static const char *g_command = "?";

static void logf_(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(int level, const char *fmt, ...) {
  static const char *const names[] = {"debug", "info", "warn", "error"};
  if (level < g_log_level || level >= LOG_NONE) return;
  char line[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  fprintf(stderr, "istio-cni %s %s: %s\n", names[level], g_command, line);
}

typedef struct {
  char *data;
  size_t len, cap;
} buf_t;

static void buf_reserve(buf_t *b, size_t extra) {
  if (b->len + extra + 1 <= b->cap) return;
  size_t cap = b->cap ? b->cap : 1024;
  while (cap < b->len + extra + 1) cap *= 2;
  char *d = realloc(b->data, cap);
  if (!d) {
    fputs("istio-cni: out of memory\n", stderr);
    exit(1);
  }
  b->data = d;
  b->cap = cap;
}

static void buf_add(buf_t *b, const char *s, size_t n) {
  buf_reserve(b, n);
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
}

static void buf_puts(buf_t *b, const char *s) { buf_add(b, s, strlen(s)); }

static void buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(buf_t *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  buf_reserve(b, (size_t)n);
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

/* Appends s as a JSON string. Bytes >= 0x80 pass through: callers only hand in validated ASCII or
 * text that arrived inside valid JSON. */
static void buf_json_string(buf_t *b, const char *s, size_t n) {
  buf_add(b, "\"", 1);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      char esc[2] = {'\\', (char)c};
      buf_add(b, esc, 2);
    } else if (c < 0x20 || c == 0x7f) {
      buf_printf(b, "\\u%04x", c);
    } else {
      buf_add(b, (const char *)&s[i], 1);
    }
  }
  buf_add(b, "\"", 1);
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Prints a CNI error result and exits 1. `details` may be NULL. */
static void fail(int code, const char *details, const char *fmt, ...) __attribute__((format(printf, 3, 4), noreturn));
static void fail(int code, const char *details, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  logf_(LOG_ERROR, "code %d: %s%s%s", code, msg, details ? ": " : "", details ? details : "");
  buf_t out = {0};
  buf_puts(&out, "{\"cniVersion\":");
  buf_json_string(&out, g_version, strlen(g_version));
  buf_printf(&out, ",\"code\":%d,\"msg\":", code);
  buf_json_string(&out, msg, strlen(msg));
  if (details && *details) {
    buf_puts(&out, ",\"details\":");
    buf_json_string(&out, details, strlen(details));
  }
  buf_puts(&out, "}\n");
  write_all(STDOUT_FILENO, out.data, out.len);
  exit(1);
}

/* Prints a result (a JSON document already validated) and exits 0. */
static void succeed(const char *json, size_t n) __attribute__((noreturn));
static void succeed(const char *json, size_t n) {
  if (n > 0 && (write_all(STDOUT_FILENO, json, n) < 0 || write_all(STDOUT_FILENO, "\n", 1) < 0)) {
    logf_(LOG_ERROR, "writing the result to stdout: %s", strerror(errno));
    exit(1);
  }
  exit(0);
}

/* ---------------------------------------------------------------- JSON scanning
 * Only validation and lookup of top-level members: values are forwarded as raw text, so the
 * plugin never re-encodes anything it does not understand. */

typedef struct {
  const char *s, *e; /* [s, e) */
} span_t;

static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

static const char *skip_ws(const char *p, const char *e) {
  while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  return p;
}

/* Each scanner takes p at the first character of its token and returns the end, or NULL. */
static const char *scan_string(const char *p, const char *e) {
  if (p >= e || *p != '"') return NULL;
  for (p++; p < e; p++) {
    unsigned char c = (unsigned char)*p;
    if (c == '"') return p + 1;
    if (c < 0x20) return NULL;
    if (c != '\\') continue;
    if (++p >= e) return NULL;
    switch (*p) {
      case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
        break;
      case 'u':
        if (e - p < 5 || !is_hex(p[1]) || !is_hex(p[2]) || !is_hex(p[3]) || !is_hex(p[4])) return NULL;
        p += 4;
        break;
      default:
        return NULL;
    }
  }
  return NULL;
}

static const char *scan_digits(const char *p, const char *e) {
  if (p >= e || !is_digit(*p)) return NULL;
  while (p < e && is_digit(*p)) p++;
  return p;
}

static const char *scan_number(const char *p, const char *e) {
  if (p < e && *p == '-') p++;
  if (p < e && *p == '0') p++;
  else if (!(p = scan_digits(p, e))) return NULL;
  if (p < e && *p == '.' && !(p = scan_digits(p + 1, e))) return NULL;
  if (p < e && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < e && (*p == '+' || *p == '-')) p++;
    if (!(p = scan_digits(p, e))) return NULL;
  }
  return p;
}

static const char *scan_literal(const char *p, const char *e, const char *lit) {
  size_t n = strlen(lit);
  if ((size_t)(e - p) < n || memcmp(p, lit, n) != 0) return NULL;
  return p + n;
}

static const char *scan_value(const char *p, const char *e, int depth) {
  if (p >= e) return NULL;
  switch (*p) {
    case '{':
    case '[': {
      char close = *p == '{' ? '}' : ']';
      int object = *p == '{';
      if (depth >= MAX_JSON_DEPTH) return NULL;
      p = skip_ws(p + 1, e);
      if (p < e && *p == close) return p + 1;
      for (;;) {
        if (object) {
          if (!(p = scan_string(p, e))) return NULL;
          p = skip_ws(p, e);
          if (p >= e || *p != ':') return NULL;
          p = skip_ws(p + 1, e);
        }
        if (!(p = scan_value(p, e, depth + 1))) return NULL;
        p = skip_ws(p, e);
        if (p >= e) return NULL;
        if (*p == close) return p + 1;
        if (*p != ',') return NULL;
        p = skip_ws(p + 1, e);
      }
    }
    case '"': return scan_string(p, e);
    case 't': return scan_literal(p, e, "true");
    case 'f': return scan_literal(p, e, "false");
    case 'n': return scan_literal(p, e, "null");
    default: return scan_number(p, e);
  }
}

/* The whole buffer is one JSON value (surrounding whitespace allowed); sets *doc to it. */
static int json_parse_document(const char *s, size_t n, span_t *doc) {
  const char *e = s + n;
  const char *p = skip_ws(s, e);
  const char *end = scan_value(p, e, 0);
  if (!end || skip_ws(end, e) != e) return 0;
  doc->s = p;
  doc->e = end;
  return 1;
}

static void put_utf8(char **o, unsigned cp) {
  char *q = *o;
  if (cp < 0x80) {
    *q++ = (char)cp;
  } else if (cp < 0x800) {
    *q++ = (char)(0xc0 | (cp >> 6));
    *q++ = (char)(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    *q++ = (char)(0xe0 | (cp >> 12));
    *q++ = (char)(0x80 | ((cp >> 6) & 0x3f));
    *q++ = (char)(0x80 | (cp & 0x3f));
  } else {
    *q++ = (char)(0xf0 | (cp >> 18));
    *q++ = (char)(0x80 | ((cp >> 12) & 0x3f));
    *q++ = (char)(0x80 | ((cp >> 6) & 0x3f));
    *q++ = (char)(0x80 | (cp & 0x3f));
  }
  *o = q;
}

static unsigned hex4(const char *p) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    v = v * 16 + (unsigned)(is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10);
  }
  return v;
}

/* Decodes a validated JSON string token into out (NUL-terminated). Returns the length, or -1 when
 * it does not fit or holds a NUL (which no name or path this plugin reads can contain). */
static long json_string_decode(span_t str, char *out, size_t cap) {
  char *o = out;
  const char *p = str.s + 1, *e = str.e - 1;
  while (p < e) {
    if ((size_t)(o - out) + 4 >= cap) return -1;
    if (*p != '\\') {
      *o++ = *p++;
      continue;
    }
    p++;
    char c = *p++;
    switch (c) {
      case 'b': *o++ = '\b'; break;
      case 'f': *o++ = '\f'; break;
      case 'n': *o++ = '\n'; break;
      case 'r': *o++ = '\r'; break;
      case 't': *o++ = '\t'; break;
      case 'u': {
        unsigned cp = hex4(p);
        p += 4;
        if (cp >= 0xd800 && cp <= 0xdbff && e - p >= 6 && p[0] == '\\' && p[1] == 'u') {
          unsigned lo = hex4(p + 2);
          if (lo >= 0xdc00 && lo <= 0xdfff) {
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            p += 6;
          }
        }
        if (cp == 0) return -1;
        if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xfffd;
        put_utf8(&o, cp);
        break;
      }
      default: *o++ = c; break; /* " \ / */
    }
  }
  *o = '\0';
  return o - out;
}

/* Looks up member `key` of a validated object; the last occurrence wins, as in JSON.parse and Go's
 * encoding/json, so the plugin and the agent always read the same value. */
static int json_get(span_t obj, const char *key, span_t *val) {
  int found = 0;
  if (obj.s >= obj.e || *obj.s != '{') return 0;
  const char *e = obj.e, *p = skip_ws(obj.s + 1, e);
  if (*p == '}') return 0;
  for (;;) {
    span_t k = {p, scan_string(p, e)};
    p = skip_ws(skip_ws(k.e, e) + 1, e);
    span_t v = {p, scan_value(p, e, 0)};
    char name[128];
    if (json_string_decode(k, name, sizeof name) >= 0 && strcmp(name, key) == 0) {
      *val = v;
      found = 1;
    }
    p = skip_ws(v.e, e);
    if (*p != ',') return found;
    p = skip_ws(p + 1, e);
  }
}

/* Iterates a validated array: *cursor starts at arr.s. Returns 0 after the last element. */
static int json_next(const char **cursor, const char *e, span_t *elem) {
  const char *p = skip_ws(*cursor, e);
  if (*p == '[' || *p == ',') p = skip_ws(p + 1, e);
  if (*p == ']') return 0;
  elem->s = p;
  elem->e = scan_value(p, e, 0);
  *cursor = elem->e;
  return 1;
}

/* 1: member is a string that fits; 0: absent or null; -1: another type, or too long. */
static int json_get_string(span_t obj, const char *key, char *out, size_t cap) {
  span_t v;
  if (!json_get(obj, key, &v) || *v.s == 'n') return 0;
  if (*v.s != '"' || json_string_decode(v, out, cap) < 0) return -1;
  return 1;
}

/* ---------------------------------------------------------------- inputs */

typedef struct {
  const char *container_id, *netns, *ifname, *cni_path;
  char pod_name[MAX_NAME], pod_namespace[MAX_NAME], pod_uid[MAX_NAME], infra_container_id[MAX_NAME];
} cni_env_t;

typedef struct {
  span_t doc;       /* the whole config object */
  span_t prev;      /* prevResult, when present */
  int has_prev;
  char run_dir[4096];
  int ambient_enabled;
} cni_conf_t;

static char *read_stdin(size_t *len) {
  buf_t b = {0};
  buf_reserve(&b, 4096);
  for (;;) {
    if (b.len > MAX_STDIN) fail(ERR_DECODE, NULL, "network configuration on stdin exceeds %u bytes", MAX_STDIN);
    buf_reserve(&b, 65536);
    ssize_t r = read(STDIN_FILENO, b.data + b.len, b.cap - b.len - 1);
    if (r < 0) {
      if (errno == EINTR) continue;
      fail(ERR_IO, strerror(errno), "reading the network configuration from stdin failed");
    }
    if (r == 0) break;
    b.len += (size_t)r;
  }
  b.data[b.len] = '\0';
  *len = b.len;
  return b.data;
}

static int printable_ascii(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) return 0;
  return 1;
}

/* A CNI_* variable; required ones missing or empty fail with code 4. */
static const char *env_var(const char *name, int required) {
  const char *v = getenv(name);
  if ((!v || !*v) && required) fail(ERR_INVALID_ENV, NULL, "required environment variable %s is missing or empty", name);
  if (v && !printable_ascii(v)) fail(ERR_INVALID_ENV, NULL, "environment variable %s holds non-printable or non-ASCII bytes", name);
  return v ? v : "";
}

/* CNI_ARGS is `K=V;K=V`; only the Kubernetes keys matter here. */
static void parse_cni_args(const char *args, cni_env_t *env) {
  static const struct {
    const char *key;
    size_t off;
  } keys[] = {
      {"K8S_POD_NAME", offsetof(cni_env_t, pod_name)},
      {"K8S_POD_NAMESPACE", offsetof(cni_env_t, pod_namespace)},
      {"K8S_POD_UID", offsetof(cni_env_t, pod_uid)},
      {"K8S_POD_INFRA_CONTAINER_ID", offsetof(cni_env_t, infra_container_id)},
  };
  const char *p = args;
  while (*p) {
    const char *end = strchr(p, ';');
    if (!end) end = p + strlen(p);
    const char *eq = memchr(p, '=', (size_t)(end - p));
    if (eq) {
      for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        size_t kl = strlen(keys[i].key);
        if ((size_t)(eq - p) != kl || memcmp(p, keys[i].key, kl) != 0) continue;
        size_t vl = (size_t)(end - eq - 1);
        if (vl >= MAX_NAME) fail(ERR_INVALID_ENV, NULL, "CNI_ARGS %s is longer than %d bytes", keys[i].key, MAX_NAME - 1);
        char *dst = (char *)env + keys[i].off;
        memcpy(dst, eq + 1, vl);
        dst[vl] = '\0';
        if (!printable_ascii(dst)) fail(ERR_INVALID_ENV, NULL, "CNI_ARGS %s holds non-printable or non-ASCII bytes", keys[i].key);
      }
    }
    p = *end ? end + 1 : end;
  }
}

static int version_supported(const char *v) {
  for (size_t i = 0; i < N_SUPPORTED; i++)
    if (strcmp(v, SUPPORTED_VERSIONS[i]) == 0) return 1;
  return 0;
}

/* Orders dotted versions numerically: <0, 0, >0 like strcmp. */
static int version_cmp(const char *a, const char *b) {
  while (*a || *b) {
    long x = strtol(a, (char **)&a, 10), y = strtol(b, (char **)&b, 10);
    if (x != y) return x < y ? -1 : 1;
    if (*a == '.') a++;
    if (*b == '.') b++;
    if (!*a && !*b) break;
  }
  return 0;
}

static void parse_conf(const char *in, size_t n, cni_conf_t *conf) {
  if (!json_parse_document(in, n, &conf->doc))
    fail(ERR_DECODE, NULL, "network configuration on stdin is not valid JSON (or nests deeper than %d levels)", MAX_JSON_DEPTH);
  if (*conf->doc.s != '{') fail(ERR_DECODE, NULL, "network configuration on stdin is not a JSON object");

  char version[32];
  int r = json_get_string(conf->doc, "cniVersion", version, sizeof version);
  if (r < 0) fail(ERR_DECODE, NULL, "network configuration field cniVersion is not a version string");
  if (r == 0) fail(ERR_INCOMPATIBLE_VERSION, NULL, "network configuration has no cniVersion; this plugin needs one of 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0");
  if (!version_supported(version)) {
    if (printable_ascii(version)) snprintf(g_version, sizeof g_version, "%s", version);
    fail(ERR_INCOMPATIBLE_VERSION, NULL, "cniVersion %s is not supported; this plugin supports 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0", version);
  }
  snprintf(g_version, sizeof g_version, "%s", version);

  char level[16];
  if (json_get_string(conf->doc, "plugin_log_level", level, sizeof level) == 1) {
    if (strcmp(level, "debug") == 0) g_log_level = LOG_DEBUG;
    else if (strcmp(level, "warn") == 0) g_log_level = LOG_WARN;
    else if (strcmp(level, "error") == 0) g_log_level = LOG_ERROR;
    else if (strcmp(level, "none") == 0) g_log_level = LOG_NONE;
  }

  r = json_get_string(conf->doc, "cni_agent_run_dir", conf->run_dir, sizeof conf->run_dir);
  if (r < 0) fail(ERR_INVALID_CONFIG, NULL, "network configuration field cni_agent_run_dir is not a string path");
  if (r == 0 || conf->run_dir[0] == '\0') snprintf(conf->run_dir, sizeof conf->run_dir, "%s", DEFAULT_RUN_DIR);
  if (conf->run_dir[0] != '/') fail(ERR_INVALID_CONFIG, NULL, "network configuration field cni_agent_run_dir %s is not an absolute path", conf->run_dir);

  span_t v;
  conf->ambient_enabled = 1;
  if (json_get(conf->doc, "ambient_enabled", &v)) {
    if (*v.s == 'f') conf->ambient_enabled = 0;
    else if (*v.s != 't') fail(ERR_INVALID_CONFIG, NULL, "network configuration field ambient_enabled is not a boolean");
  }
  conf->has_prev = json_get(conf->doc, "prevResult", &conf->prev) && *conf->prev.s != 'n';
  if (conf->has_prev && *conf->prev.s != '{') fail(ERR_INVALID_CONFIG, NULL, "network configuration field prevResult is not an object");
}

/* Namespaces the installer excluded (`exclude_namespaces`); their pods never reach the agent. */
static int namespace_excluded(span_t doc, const char *ns) {
  span_t arr, el;
  if (!json_get(doc, "exclude_namespaces", &arr) || *arr.s == 'n') return 0;
  if (*arr.s != '[') fail(ERR_INVALID_CONFIG, NULL, "network configuration field exclude_namespaces is not an array");
  const char *cur = arr.s;
  while (json_next(&cur, arr.e, &el)) {
    char name[MAX_NAME];
    if (*el.s != '"' || json_string_decode(el, name, sizeof name) < 0)
      fail(ERR_INVALID_CONFIG, NULL, "network configuration field exclude_namespaces holds a value that is not a namespace name");
    if (strcmp(name, ns) == 0) return 1;
  }
  return 0;
}

/* ---------------------------------------------------------------- agent client */

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for `events` on fd until the deadline; 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, long long deadline) {
  for (;;) {
    long long left = deadline - now_ms();
    if (left <= 0) return 0;
    struct pollfd pfd = {.fd = fd, .events = events};
    int r = poll(&pfd, 1, (int)left);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    return r > 0;
  }
}

typedef enum { AGENT_ANSWERED, AGENT_UNREACHABLE } agent_outcome_t;

typedef struct {
  int status;
  const char *body;
  size_t body_len;
  char error[256]; /* why the agent is unreachable */
} agent_reply_t;

static size_t header_value(const char *headers, size_t n, const char *name, char *out, size_t cap) {
  size_t nl = strlen(name);
  const char *p = headers, *e = headers + n;
  while (p < e) {
    const char *eol = memmem(p, (size_t)(e - p), "\r\n", 2);
    if (!eol) eol = e;
    if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
      const char *v = p + nl + 1;
      while (v < eol && (*v == ' ' || *v == '\t')) v++;
      size_t vl = (size_t)(eol - v);
      if (vl >= cap) vl = cap - 1;
      memcpy(out, v, vl);
      out[vl] = '\0';
      return vl + 1;
    }
    p = eol == e ? e : eol + 2;
  }
  return 0;
}

/* POSTs body to the agent. Returns AGENT_UNREACHABLE only when the request certainly never reached
 * a listening agent (no socket, nothing listening); every later failure fails the ADD, because the
 * agent may already be enrolling the pod. */
static agent_outcome_t post_to_agent(const char *socket_path, const buf_t *body, agent_reply_t *reply) {
  long long deadline = now_ms() + AGENT_TIMEOUT_MS;
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(socket_path) >= sizeof addr.sun_path)
    fail(ERR_INVALID_CONFIG, NULL, "agent socket path %s is longer than %zu bytes", socket_path, sizeof addr.sun_path - 1);
  memcpy(addr.sun_path, socket_path, strlen(socket_path) + 1);

  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) fail(ERR_IO, strerror(errno), "creating a unix socket failed");
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    int err = errno;
    close(fd);
    /* EAGAIN: the listen backlog is full, so the agent exists but is overloaded. */
    if (err == EAGAIN) fail(ERR_TRY_AGAIN_LATER, strerror(err), "istio-cni node agent at %s is overloaded", socket_path);
    snprintf(reply->error, sizeof reply->error, "%s", strerror(err));
    return AGENT_UNREACHABLE;
  }

  buf_t req = {0};
  buf_printf(&req,
             "POST /cmdadd HTTP/1.1\r\nHost: unix\r\nUser-Agent: istio-cni-plugin\r\n"
             "Content-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
             body->len);
  buf_add(&req, body->data, body->len);
  size_t off = 0;
  while (off < req.len) {
    int w = wait_fd(fd, POLLOUT, deadline);
    if (w == 0) fail(ERR_TRY_AGAIN_LATER, NULL, "sending the pod to the istio-cni node agent at %s timed out after %d ms", socket_path, AGENT_TIMEOUT_MS);
    ssize_t n = w < 0 ? -1 : send(fd, req.data + off, req.len - off, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n < 0) fail(ERR_TRY_AGAIN_LATER, strerror(errno), "sending the pod to the istio-cni node agent at %s failed", socket_path);
    off += (size_t)n;
  }
  free(req.data);

  buf_t resp = {0};
  size_t header_end = 0, want = SIZE_MAX;
  for (;;) {
    if (resp.len >= want) break;
    int w = wait_fd(fd, POLLIN, deadline);
    if (w == 0) fail(ERR_TRY_AGAIN_LATER, NULL, "istio-cni node agent at %s did not answer within %d ms", socket_path, AGENT_TIMEOUT_MS);
    buf_reserve(&resp, 16384);
    ssize_t n = w < 0 ? -1 : read(fd, resp.data + resp.len, resp.cap - resp.len - 1);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n < 0) fail(ERR_TRY_AGAIN_LATER, strerror(errno), "reading the istio-cni node agent's answer failed");
    if (n == 0) break;
    resp.len += (size_t)n;
    resp.data[resp.len] = '\0';
    if (resp.len > MAX_RESPONSE) fail(ERR_AGENT_PROTOCOL, NULL, "istio-cni node agent's answer exceeds %u bytes", MAX_RESPONSE);
    if (!header_end) {
      char *he = memmem(resp.data, resp.len, "\r\n\r\n", 4);
      if (!he) continue;
      header_end = (size_t)(he - resp.data) + 4;
      char value[64];
      if (header_value(resp.data, header_end, "Transfer-Encoding", value, sizeof value))
        fail(ERR_AGENT_PROTOCOL, value, "istio-cni node agent answered with a transfer encoding; a Content-Length is required");
      if (header_value(resp.data, header_end, "Content-Length", value, sizeof value)) {
        char *endp;
        unsigned long long cl = strtoull(value, &endp, 10);
        if (*endp || cl > MAX_RESPONSE) fail(ERR_AGENT_PROTOCOL, value, "istio-cni node agent answered with an invalid Content-Length");
        want = header_end + (size_t)cl;
      }
    }
  }
  close(fd);
  if (!header_end) fail(ERR_TRY_AGAIN_LATER, NULL, "istio-cni node agent at %s closed the connection without a complete answer", socket_path);
  if (want != SIZE_MAX && resp.len < want) fail(ERR_TRY_AGAIN_LATER, NULL, "istio-cni node agent's answer was cut short");
  int status;
  if (resp.len < 12 || strncmp(resp.data, "HTTP/1.", 7) != 0 || sscanf(resp.data + 9, "%3d", &status) != 1)
    fail(ERR_AGENT_PROTOCOL, NULL, "istio-cni node agent's answer is not HTTP/1.x");
  reply->status = status;
  reply->body = resp.data + header_end;
  reply->body_len = (want == SIZE_MAX ? resp.len : want) - header_end;
  return AGENT_ANSWERED;
}

/* ---------------------------------------------------------------- agent-down decision */

typedef enum { STATE_MISSING, STATE_NOT_AMBIENT, STATE_AMBIENT } offline_verdict_t;

/* Reads the agent's enrollment state file: `namespace <ns>` (pods there are ambient unless
 * exempt), `pod <ns>/<name>` (ambient wherever it is), `exempt <ns>/<name>` (not ambient although
 * its namespace is listed). A pod listed as ambient stays ambient even when also exempt: the
 * plugin resolves contradictions towards failing closed. */
static offline_verdict_t offline_verdict(const char *path, const cni_env_t *env, char *why, size_t why_cap) {
  FILE *f = fopen(path, "re");
  if (!f) {
    snprintf(why, why_cap, "%s: %s", path, strerror(errno));
    return STATE_MISSING;
  }
  char pod_key[2 * MAX_NAME + 2];
  snprintf(pod_key, sizeof pod_key, "%s/%s", env->pod_namespace, env->pod_name);
  char line[2 * MAX_NAME + 32];
  int header = 0, ns_listed = 0, pod_listed = 0, exempt = 0;
  while (fgets(line, sizeof line, f)) {
    size_t n = strlen(line);
    if (n > 0 && line[n - 1] != '\n' && !feof(f)) {
      fclose(f);
      snprintf(why, why_cap, "%s has a line longer than %zu bytes", path, sizeof line - 2);
      return STATE_MISSING;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
    if (n == 0 || line[0] == '#') continue;
    if (!header) {
      if (strcmp(line, STATE_FILE_HEADER) != 0) {
        fclose(f);
        snprintf(why, why_cap, "%s does not start with \"%s\"", path, STATE_FILE_HEADER);
        return STATE_MISSING;
      }
      header = 1;
      continue;
    }
    char *arg = strchr(line, ' ');
    if (!arg) continue;
    *arg++ = '\0';
    if (strcmp(line, "namespace") == 0 && strcmp(arg, env->pod_namespace) == 0) ns_listed = 1;
    else if (strcmp(line, "pod") == 0 && strcmp(arg, pod_key) == 0) pod_listed = 1;
    else if (strcmp(line, "exempt") == 0 && strcmp(arg, pod_key) == 0) exempt = 1;
  }
  int read_error = ferror(f);
  fclose(f);
  if (read_error || !header) {
    snprintf(why, why_cap, "%s is %s", path, read_error ? "unreadable" : "empty");
    return STATE_MISSING;
  }
  if (pod_listed) {
    snprintf(why, why_cap, "%s lists pod %s as ambient", path, pod_key);
    return STATE_AMBIENT;
  }
  if (ns_listed && !exempt) {
    snprintf(why, why_cap, "%s lists namespace %s as ambient", path, env->pod_namespace);
    return STATE_AMBIENT;
  }
  snprintf(why, why_cap, "%s %s", path, ns_listed ? "exempts the pod" : "lists neither the pod nor its namespace");
  return STATE_NOT_AMBIENT;
}

/* ---------------------------------------------------------------- commands */

static void print_prev_result(const cni_conf_t *conf) { succeed(conf->prev.s, (size_t)(conf->prev.e - conf->prev.s)); }

static void cmd_add(const cni_conf_t *conf, const cni_env_t *env) {
  if (!conf->has_prev) fail(ERR_INVALID_CONFIG, NULL, "istio-cni must run as a chained plugin, after the plugin that creates the interface, but prevResult is missing");
  if (!conf->ambient_enabled) {
    logf_(LOG_DEBUG, "ambient_enabled is false; passing prevResult through");
    print_prev_result(conf);
  }
  if (!env->pod_name[0] || !env->pod_namespace[0]) {
    logf_(LOG_DEBUG, "container %s has no K8S_POD_NAME/K8S_POD_NAMESPACE in CNI_ARGS; not a Kubernetes pod", env->container_id);
    print_prev_result(conf);
  }
  if (namespace_excluded(conf->doc, env->pod_namespace)) {
    logf_(LOG_DEBUG, "pod %s/%s is in an excluded namespace", env->pod_namespace, env->pod_name);
    print_prev_result(conf);
  }

  buf_t body = {0};
  static const struct {
    const char *key;
    size_t off;
  } fields[] = {
      {"PodName", offsetof(cni_env_t, pod_name)},
      {"PodNamespace", offsetof(cni_env_t, pod_namespace)},
      {"PodUID", offsetof(cni_env_t, pod_uid)},
      {"InfraContainerID", offsetof(cni_env_t, infra_container_id)},
  };
  buf_puts(&body, "{\"Netns\":");
  buf_json_string(&body, env->netns, strlen(env->netns));
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
    const char *v = (const char *)env + fields[i].off;
    buf_printf(&body, ",\"%s\":", fields[i].key);
    buf_json_string(&body, v, strlen(v));
  }
  buf_puts(&body, ",\"ContainerID\":");
  buf_json_string(&body, env->container_id, strlen(env->container_id));
  buf_puts(&body, ",\"IfName\":");
  buf_json_string(&body, env->ifname, strlen(env->ifname));
  span_t ips;
  buf_puts(&body, ",\"IPs\":");
  if (json_get(conf->prev, "ips", &ips) && *ips.s == '[') buf_add(&body, ips.s, (size_t)(ips.e - ips.s));
  else buf_puts(&body, "[]");
  buf_puts(&body, ",\"Config\":");
  buf_add(&body, conf->doc.s, (size_t)(conf->doc.e - conf->doc.s));
  buf_puts(&body, "}");

  char socket_path[4096 + sizeof SOCKET_NAME + 1];
  snprintf(socket_path, sizeof socket_path, "%s/%s", conf->run_dir, SOCKET_NAME);
  agent_reply_t reply = {0};
  if (post_to_agent(socket_path, &body, &reply) == AGENT_UNREACHABLE) {
    char state_path[4096 + sizeof STATE_FILE_NAME + 1], why[8192];
    snprintf(state_path, sizeof state_path, "%s/%s", conf->run_dir, STATE_FILE_NAME);
    switch (offline_verdict(state_path, env, why, sizeof why)) {
      case STATE_NOT_AMBIENT:
        logf_(LOG_WARN, "istio-cni node agent unreachable at %s (%s); pod %s/%s starts outside the mesh because %s",
              socket_path, reply.error, env->pod_namespace, env->pod_name, why);
        print_prev_result(conf);
        break;
      case STATE_AMBIENT:
        fail(ERR_TRY_AGAIN_LATER, why, "istio-cni node agent unreachable at %s (%s) and pod %s/%s may be ambient; retry once the agent runs",
             socket_path, reply.error, env->pod_namespace, env->pod_name);
      case STATE_MISSING:
        fail(ERR_TRY_AGAIN_LATER, why, "istio-cni node agent unreachable at %s (%s) and its enrollment state is unavailable, so pod %s/%s cannot be told apart from an ambient pod; retry once the agent runs",
             socket_path, reply.error, env->pod_namespace, env->pod_name);
    }
  }

  span_t answer;
  int is_json = json_parse_document(reply.body, reply.body_len, &answer) && *answer.s == '{';
  if (reply.status == 200) {
    if (!is_json) fail(ERR_AGENT_PROTOCOL, NULL, "istio-cni node agent answered 200 without a JSON result");
    logf_(LOG_INFO, "pod %s/%s (container %s) accepted by the node agent", env->pod_namespace, env->pod_name, env->container_id);
    succeed(answer.s, (size_t)(answer.e - answer.s));
  }
  /* The agent's error body is already a CNI error result; print it when it has the required fields. */
  span_t code, msg;
  if (is_json && json_get(answer, "code", &code) && scan_number(code.s, code.e) == code.e && json_get(answer, "msg", &msg) && *msg.s == '"') {
    char text[1024];
    if (json_string_decode(msg, text, sizeof text) < 0) snprintf(text, sizeof text, "(message too long)");
    logf_(LOG_ERROR, "node agent refused pod %s/%s (HTTP %d): %s", env->pod_namespace, env->pod_name, reply.status, text);
    write_all(STDOUT_FILENO, answer.s, (size_t)(answer.e - answer.s));
    write_all(STDOUT_FILENO, "\n", 1);
    exit(1);
  }
  char details[512];
  size_t dl = reply.body_len < sizeof details - 1 ? reply.body_len : sizeof details - 1;
  memcpy(details, reply.body, dl);
  details[dl] = '\0';
  for (size_t i = 0; i < dl; i++)
    if ((unsigned char)details[i] < 0x20 || (unsigned char)details[i] > 0x7e) details[i] = '?';
  fail(reply.status == 503 ? ERR_TRY_AGAIN_LATER : ERR_AGENT_PROTOCOL, details,
       "istio-cni node agent answered HTTP %d for pod %s/%s", reply.status, env->pod_namespace, env->pod_name);
}

static void cmd_version(const char *in, size_t n) {
  (void)in;
  (void)n;
  buf_t out = {0};
  buf_puts(&out, "{\"cniVersion\":\"" LATEST_VERSION "\",\"supportedVersions\":[");
  for (size_t i = 0; i < N_SUPPORTED; i++) buf_printf(&out, "%s\"%s\"", i ? "," : "", SUPPORTED_VERSIONS[i]);
  buf_puts(&out, "]}");
  succeed(out.data, out.len);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const char *command = getenv("CNI_COMMAND");
  if (!command || !*command) fail(ERR_INVALID_ENV, NULL, "required environment variable CNI_COMMAND is missing or empty");
  g_command = command;
  size_t n;
  char *in = read_stdin(&n);
  if (strcmp(command, "VERSION") == 0) cmd_version(in, n);

  int add = strcmp(command, "ADD") == 0, del = strcmp(command, "DEL") == 0, check = strcmp(command, "CHECK") == 0;
  int gc = strcmp(command, "GC") == 0, status = strcmp(command, "STATUS") == 0;
  if (!add && !del && !check && !gc && !status) {
    g_command = "?";
    fail(ERR_INVALID_ENV, NULL, "CNI_COMMAND %.32s is not one of ADD, DEL, CHECK, GC, STATUS, VERSION", printable_ascii(command) ? command : "(not printable)");
  }

  cni_conf_t conf = {0};
  parse_conf(in, n, &conf);
  cni_env_t env = {0};
  if (add || del || check) {
    env.container_id = env_var("CNI_CONTAINERID", 1);
    env.netns = env_var("CNI_NETNS", !del);
    env.ifname = env_var("CNI_IFNAME", 1);
    /* Only the Kubernetes keys are checked: other arguments are none of this plugin's business. */
    const char *args = getenv("CNI_ARGS");
    parse_cni_args(args ? args : "", &env);
  }
  env.cni_path = env_var("CNI_PATH", 1);

  if (check && version_cmp(g_version, "0.4.0") < 0) fail(ERR_INCOMPATIBLE_VERSION, NULL, "cniVersion %s does not allow CHECK (0.4.0 or later)", g_version);
  if ((gc || status) && version_cmp(g_version, "1.1.0") < 0) fail(ERR_INCOMPATIBLE_VERSION, NULL, "cniVersion %s does not allow %s (1.1.0 or later)", g_version, command);
  if (add) cmd_add(&conf, &env);
  /* DEL and GC: the agent's pod watch removes what enrollment created. CHECK: enrollment is verified
   * by the agent's reconciliation, not per call. STATUS: readiness must not depend on the agent, or
   * an agent outage would stop pods that are not ambient from being scheduled on the node. */
  logf_(LOG_DEBUG, "%s is a no-op for this plugin", command);
  return 0;
}
