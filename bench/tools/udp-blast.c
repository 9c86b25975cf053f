// udp-blast: paced RTP replay generator for the Verbatim benches.
//
// Replays captured RTP packet templates (real Opus / VP8 payloads) to many UDP ports
// at once, rewriting SSRC, payload type, sequence numbers and timestamps per track so
// every track gets a valid, continuous RTP stream. Packets leave in batches through
// sendmmsg(2) from one unconnected socket, each at its scheduled time (template
// timing: a video frame's packets go out together, like an SFU forwards them; or a
// fixed per-track rate). Prints one JSON line with what it sent.
//
//   udp-blast --config FILE --duration SECONDS [--ip 127.0.0.1] [--src-port N] [--per-track OUTFILE]
//
// --src-port fixes the source port, so that receivers which pin their first sender
// (the recorder, comedia transports) accept a later run of the generator too.
//
// Config lines:
//   template <id> <path>          template file (see below), id 0..15
//   track <port> <ssrc> <pt> <template-id> <pps> <start-index> <phase-us>
//                                 pps 0: template timing; pps > 0: evenly spaced
// Template file: "VBT1" u32 count u32 loop_us u32 loop_ts, then per packet
// u32 offset_us u16 len and len bytes of RTP (little-endian integers).
// SIGINT/SIGTERM stop early; the summary is still printed.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_TEMPLATES 16
#define BATCH 512
#define MAX_PKT 1500

typedef struct {
  uint32_t count, loop_us, loop_ts;
  uint32_t *offset_us;
  uint16_t *len;
  uint8_t **data;
  uint32_t ts0;
} template_t;

typedef struct {
  struct sockaddr_in addr;
  uint32_t ssrc;
  uint8_t pt;
  template_t *tpl;
  uint32_t pps;
  uint32_t index;      // next template packet
  uint64_t loop;       // completed template loops
  uint64_t n;          // packets scheduled so far
  uint64_t next_us;    // monotonic send time of the next packet
  uint64_t origin_us;  // start time of loop 0 at index 0 (template timing)
  uint16_t seq;
  uint32_t ts_base;
  uint64_t sent;
} track_t;

static template_t templates[MAX_TEMPLATES];
static volatile sig_atomic_t stop_flag = 0;
static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static uint64_t mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000ull + (uint64_t)ts.tv_nsec / 1000ull;
}

static void sleep_until_us(uint64_t t) {
  struct timespec ts = {.tv_sec = (time_t)(t / 1000000ull), .tv_nsec = (long)((t % 1000000ull) * 1000ull)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR && !stop_flag) {
  }
}

static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24); }

static int load_template(int id, const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) { perror(path); return -1; }
  uint8_t head[16];
  if (fread(head, 1, 16, f) != 16 || memcmp(head, "VBT1", 4) != 0) { fprintf(stderr, "%s: not a VBT1 template\n", path); fclose(f); return -1; }
  template_t *t = &templates[id];
  t->count = rd32(head + 4);
  t->loop_us = rd32(head + 8);
  t->loop_ts = rd32(head + 12);
  if (t->count == 0 || t->loop_us == 0) { fprintf(stderr, "%s: empty template\n", path); fclose(f); return -1; }
  t->offset_us = calloc(t->count, sizeof(uint32_t));
  t->len = calloc(t->count, sizeof(uint16_t));
  t->data = calloc(t->count, sizeof(uint8_t *));
  for (uint32_t i = 0; i < t->count; i++) {
    uint8_t h[6];
    if (fread(h, 1, 6, f) != 6) { fprintf(stderr, "%s: truncated\n", path); fclose(f); return -1; }
    t->offset_us[i] = rd32(h);
    t->len[i] = (uint16_t)(h[4] | (h[5] << 8));
    if (t->len[i] < 12 || t->len[i] > MAX_PKT) { fprintf(stderr, "%s: bad packet length %u\n", path, t->len[i]); fclose(f); return -1; }
    t->data[i] = malloc(t->len[i]);
    if (fread(t->data[i], 1, t->len[i], f) != t->len[i]) { fprintf(stderr, "%s: truncated\n", path); fclose(f); return -1; }
  }
  t->ts0 = ntohl(*(uint32_t *)(t->data[0] + 4));
  fclose(f);
  return 0;
}

// Schedules the track's next packet after packet `index` of loop `loop` was queued.
static void advance(track_t *tr) {
  template_t *t = tr->tpl;
  tr->n++;
  if (++tr->index == t->count) { tr->index = 0; tr->loop++; }
  if (tr->pps) tr->next_us = tr->origin_us + (tr->n * 1000000ull) / tr->pps;
  else tr->next_us = tr->origin_us + tr->loop * t->loop_us + t->offset_us[tr->index];
}

int main(int argc, char **argv) {
  const char *config = NULL, *ip = "127.0.0.1", *per_track = NULL;
  int src_port = 0;
  double duration = 10;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--config") && i + 1 < argc) config = argv[++i];
    else if (!strcmp(argv[i], "--duration") && i + 1 < argc) duration = atof(argv[++i]);
    else if (!strcmp(argv[i], "--ip") && i + 1 < argc) ip = argv[++i];
    else if (!strcmp(argv[i], "--per-track") && i + 1 < argc) per_track = argv[++i];
    else if (!strcmp(argv[i], "--src-port") && i + 1 < argc) src_port = atoi(argv[++i]);
    else { fprintf(stderr, "usage: udp-blast --config FILE --duration SECONDS [--ip IP] [--src-port N] [--per-track OUTFILE]\n"); return 2; }
  }
  if (!config) { fprintf(stderr, "udp-blast: --config is required\n"); return 2; }

  FILE *cf = fopen(config, "r");
  if (!cf) { perror(config); return 1; }
  size_t cap = 1024, ntracks = 0;
  track_t *tracks = calloc(cap, sizeof(track_t));
  char line[1024];
  struct in_addr dst;
  if (inet_pton(AF_INET, ip, &dst) != 1) { fprintf(stderr, "bad --ip %s\n", ip); return 2; }
  srand(12345);
  while (fgets(line, sizeof line, cf)) {
    int id; char path[900];
    unsigned port, ssrc, pt, tid, pps, start, phase;
    if (sscanf(line, "template %d %899s", &id, path) == 2) {
      if (id < 0 || id >= MAX_TEMPLATES || load_template(id, path) != 0) return 1;
    } else if (sscanf(line, "track %u %u %u %u %u %u %u", &port, &ssrc, &pt, &tid, &pps, &start, &phase) == 7) {
      if (tid >= MAX_TEMPLATES || templates[tid].count == 0) { fprintf(stderr, "track uses unknown template %u\n", tid); return 1; }
      if (ntracks == cap) { cap *= 2; tracks = realloc(tracks, cap * sizeof(track_t)); }
      track_t *tr = &tracks[ntracks++];
      memset(tr, 0, sizeof *tr);
      tr->addr.sin_family = AF_INET;
      tr->addr.sin_port = htons((uint16_t)port);
      tr->addr.sin_addr = dst;
      tr->ssrc = ssrc;
      tr->pt = (uint8_t)(pt & 0x7f);
      tr->tpl = &templates[tid];
      tr->pps = pps;
      tr->index = start % tr->tpl->count;
      tr->origin_us = phase;  // made absolute below
      tr->seq = (uint16_t)rand();
      tr->ts_base = (uint32_t)rand();
    } else if (line[0] != '#' && line[0] != '\n') {
      fprintf(stderr, "bad config line: %s", line);
      return 1;
    }
  }
  fclose(cf);
  if (ntracks == 0) { fprintf(stderr, "no tracks\n"); return 1; }

  int sock = socket(AF_INET, SOCK_DGRAM, 0);
  if (sock < 0) { perror("socket"); return 1; }
  int sndbuf = 8 * 1024 * 1024;
  setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  if (src_port > 0) {
    struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = htons((uint16_t)src_port), .sin_addr = dst};
    if (bind(sock, (struct sockaddr *)&src, sizeof src) != 0) { perror("bind --src-port"); return 1; }
  }
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);

  static uint8_t bufs[BATCH][MAX_PKT];
  static struct iovec iov[BATCH];
  static struct mmsghdr msgs[BATCH];
  static uint32_t owner[BATCH];
  int queued = 0;
  uint64_t sent = 0, errors = 0, late_max = 0, late_sum = 0, scheduled = 0;

  uint64_t t0 = mono_us() + 20000;
  uint64_t end = t0 + (uint64_t)(duration * 1e6);
  for (size_t i = 0; i < ntracks; i++) {
    track_t *tr = &tracks[i];
    uint64_t phase = tr->origin_us;
    template_t *t = tr->tpl;
    // Template timing: the start index plays at t0 + phase.
    tr->origin_us = tr->pps ? t0 + phase : t0 + phase - t->offset_us[tr->index];
    tr->next_us = tr->pps ? tr->origin_us : t0 + phase;
  }

#define FLUSH()                                                                      \
  do {                                                                               \
    int off = 0;                                                                     \
    while (off < queued) {                                                           \
      int r = sendmmsg(sock, msgs + off, (unsigned)(queued - off), 0);               \
      if (r < 0) {                                                                   \
        if (errno == EINTR) continue;                                                \
        errors++;                                                                    \
        off++; /* that packet is lost: counted as an error, never as sent */        \
        continue;                                                                    \
      }                                                                              \
      for (int k = 0; k < r; k++) tracks[owner[off + k]].sent++;                     \
      sent += (uint64_t)r;                                                           \
      off += r;                                                                      \
    }                                                                                \
    queued = 0;                                                                      \
  } while (0)

  sleep_until_us(t0);
  while (!stop_flag) {
    uint64_t now = mono_us();
    if (now >= end) break;
    uint64_t next_min = end;
    for (size_t i = 0; i < ntracks; i++) {
      track_t *tr = &tracks[i];
      while (tr->next_us <= now) {
        template_t *t = tr->tpl;
        uint32_t idx = tr->index;
        uint16_t len = t->len[idx];
        uint8_t *b = bufs[queued];
        memcpy(b, t->data[idx], len);
        b[1] = (uint8_t)((b[1] & 0x80) | tr->pt);
        uint16_t seq = tr->seq++;
        b[2] = (uint8_t)(seq >> 8);
        b[3] = (uint8_t)seq;
        uint32_t ts = tr->ts_base + (uint32_t)(tr->loop * t->loop_ts) + (ntohl(*(uint32_t *)(t->data[idx] + 4)) - t->ts0);
        *(uint32_t *)(b + 4) = htonl(ts);
        *(uint32_t *)(b + 8) = htonl(tr->ssrc);
        iov[queued].iov_base = b;
        iov[queued].iov_len = len;
        memset(&msgs[queued].msg_hdr, 0, sizeof(struct msghdr));
        msgs[queued].msg_hdr.msg_name = &tr->addr;
        msgs[queued].msg_hdr.msg_namelen = sizeof tr->addr;
        msgs[queued].msg_hdr.msg_iov = &iov[queued];
        msgs[queued].msg_hdr.msg_iovlen = 1;
        owner[queued] = (uint32_t)i;
        uint64_t late = now - tr->next_us;
        if (late > late_max) late_max = late;
        late_sum += late;
        scheduled++;
        if (++queued == BATCH) FLUSH();
        advance(tr);
      }
      if (tr->next_us < next_min) next_min = tr->next_us;
    }
    if (queued) FLUSH();
    if (next_min > mono_us()) sleep_until_us(next_min < end ? next_min : end);
  }
  if (queued) FLUSH();
  double elapsed = (double)(mono_us() - t0) / 1e6;
  if (elapsed > duration) elapsed = duration;

  if (per_track) {
    FILE *pf = fopen(per_track, "w");
    if (pf) {
      for (size_t i = 0; i < ntracks; i++) fprintf(pf, "%u %llu\n", ntohs(tracks[i].addr.sin_port), (unsigned long long)tracks[i].sent);
      fclose(pf);
    }
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
  // cpu_s includes the kernel's loopback delivery into the receivers' sockets (done in the sender's context).
  printf("{\"sent\":%llu,\"errors\":%llu,\"tracks\":%zu,\"elapsed_s\":%.3f,\"pps\":%.1f,\"late_max_us\":%llu,\"late_mean_us\":%.1f,\"cpu_s\":%.3f}\n",
         (unsigned long long)sent, (unsigned long long)errors, ntracks, elapsed, elapsed > 0 ? (double)sent / elapsed : 0.0,
         (unsigned long long)late_max, scheduled ? (double)late_sum / (double)scheduled : 0.0, cpu_s);
  fflush(stdout);
  return 0;
}
