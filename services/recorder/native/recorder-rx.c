/* recorder-rx main: ports, control messages, timers and the timed drain rounds.
 * The Node worker (services/recorder/src/native-rx.ts) speaks to it over stdin/stdout. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "recorder-rx.h"

const char *const DROP_NAMES[DR_COUNT] = {"too_short", "over_mtu", "bad_version", "not_rtcp", "unknown_ssrc", "unknown_payload_type", "wrong_source", "segment_closed", "srtp_failed"};


struct rx_config cfg;
struct track *tracks;
int ntracks, ep;
uint64_t dropped_total[DR_COUNT];
unsigned next_serial = 1;
uint64_t batches, datagrams;
static uint64_t rounds;
#define ROTATIONS_PER_TICK 8

static int env_int(const char *name, int dflt) {
  const char *v = getenv(name);
  return v && *v ? atoi(v) : dflt;
}

/* ---------------------------------------------------------------- tracks */

static int bind_udp(int port, int rcvbuf) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_TIMESTAMP, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (inet_pton(AF_INET, cfg.ip, &a.sin_addr) != 1) {
    close(fd);
    return -EINVAL;
  }
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
    int err = errno;
    close(fd);
    return -err;
  }
  return fd;
}

static int port_taken(int port) {
  for (struct track *t = tracks; t; t = t->next)
    if (!t->dead && t->rtp_port == port) return 1;
  return 0;
}

/* The first free even/odd pair in the worker's range; ports another process holds are skipped. */
static int bind_pair(struct track *t) {
  for (int port = cfg.min_port + (cfg.min_port % 2); port + 1 <= cfg.max_port; port += 2) {
    if (port_taken(port)) continue;
    int rtp = bind_udp(port, 4 * 1024 * 1024);
    if (rtp == -EADDRINUSE) continue;
    if (rtp < 0) return rtp;
    int rtcp = bind_udp(port + 1, 1024 * 1024);
    if (rtcp < 0) {
      close(rtp);
      if (rtcp == -EADDRINUSE) continue;
      return rtcp;
    }
    t->rtp_fd = rtp;
    t->rtcp_fd = rtcp;
    t->rtp_port = port;
    return 0;
  }
  return -EADDRNOTAVAIL;
}

static struct track *find_track(const char *id) {
  for (struct track *t = tracks; t; t = t->next)
    if (!t->dead && !strcmp(t->id, id)) return t;
  return NULL;
}

static void start_failed(const char *id, const char *code, const char *message) {
  struct sbuf b = {0};
  msg_start(&b, "startFailed");
  sb_puts(&b, ",\"id\":");
  sb_json_str(&b, id);
  sb_puts(&b, ",\"code\":");
  sb_json_str(&b, code);
  sb_puts(&b, ",\"message\":");
  sb_json_str(&b, message);
  sb_putc(&b, '}');
  emit(&b);
}

static void cmd_start(const struct json_obj *m) {
  const char *id = json_str(m, "id"), *dir = json_str(m, "dir"), *name = json_str(m, "track"), *header = json_str(m, "header");
  double segment, ssrc, pt;
  if (!id || !dir || !name || !header || json_num(m, "segment", &segment) || json_num(m, "ssrc", &ssrc) || json_num(m, "payloadType", &pt) || header[0] != '{') {
    return report_error("BAD_MESSAGE", "start: missing or mistyped field");
  }
  if (find_track(id)) return start_failed(id, "TRACK_EXISTS", "track is already recording");
  struct track *t = calloc(1, sizeof *t);
  if (!t) abort();
  t->id = strdup(id);
  t->dir = strdup(dir);
  t->name = strdup(name);
  t->header_rest = strdup(header + 1); /* fields after the ones this process fills in */
  t->segment = (int)segment;
  t->ssrc = (uint32_t)ssrc;
  t->pt = (int)pt;
  t->rtp_fd = t->rtcp_fd = -1;
  const char *srtp_key = json_str(m, "srtpKey");
  if (srtp_key && srtp_open(t, srtp_key)) {
    start_failed(id, "SRTP_KEY_INVALID", "srtpKey is not a base64 AES_CM_128_HMAC_SHA1_80 master key and salt (30 bytes)");
    free(t->id), free(t->dir), free(t->name), free(t->header_rest), free(t);
    return;
  }
  int err = bind_pair(t);
  if (err == 0) err = -open_segment(t);
  if (err) {
    close_sockets(t);
    char msg[256];
    snprintf(msg, sizeof msg, err == -EADDRNOTAVAIL ? "no free UDP port pair in %d-%d" : "cannot start track (%d-%d): %s", cfg.min_port, cfg.max_port, strerror(-err));
    start_failed(id, err == -EADDRNOTAVAIL ? "NO_PORTS" : err == -ENOSPC ? "DISK_FULL" : errno_code(-err), msg);
    segment_free(&t->seg);
    srtp_close(t);
    free(t->id), free(t->dir), free(t->name), free(t->header_rest), free(t);
    return;
  }
  struct epoll_event ev = {.events = EPOLLIN};
  ev.data.ptr = t;
  epoll_ctl(ep, EPOLL_CTL_ADD, t->rtp_fd, &ev);
  ev.data.ptr = (void *)((uintptr_t)t | TAG_RTCP);
  epoll_ctl(ep, EPOLL_CTL_ADD, t->rtcp_fd, &ev);
  t->next = tracks;
  tracks = t;
  ntracks++;
  struct sbuf b = {0};
  msg_start(&b, "started");
  sb_puts(&b, ",\"id\":");
  sb_json_str(&b, id);
  sb_printf(&b, ",\"segment\":%d,\"rtpPort\":%d,\"rtcpPort\":%d}", t->segment, t->rtp_port, t->rtp_port + 1);
  emit(&b);
}

/* Seals the current segment and releases the ports; what the kernel queued is stored first. */
static void stop_track(struct track *t, const char *reason) {
  if (t->stopped) return;
  drain(t, 0);
  drain(t, 1);
  if (t->stopped) return;
  t->stopped = t->dead = 1;
  close_sockets(t);
  clear_candidate(t, 1);
  seal_and_report(t, reason, 0);
}

static void free_dead_tracks(void) {
  for (struct track **pp = &tracks; *pp;) {
    struct track *t = *pp;
    if (!t->dead) {
      pp = &t->next;
      continue;
    }
    *pp = t->next;
    ntracks--;
    srtp_close(t);
    free(t->id), free(t->dir), free(t->name), free(t->header_rest), free(t);
  }
}

static void cmd_stats(const struct json_obj *m) {
  double seq = 0;
  json_num(m, "seq", &seq);
  uint64_t received = 0, stored = 0;
  struct sbuf b = {0};
  msg_start(&b, "stats");
  sb_printf(&b, ",\"seq\":%.0f,\"tracks\":%d,\"perTrack\":{", seq, ntracks);
  int first = 1;
  for (struct track *t = tracks; t; t = t->next) {
    if (t->dead) continue;
    received += t->received;
    stored += t->stored;
    sb_puts(&b, first ? "" : ",");
    first = 0;
    sb_json_str(&b, t->id);
    sb_putc(&b, ':');
    sb_putc(&b, '{');
    int f2 = 1;
    for (int r = 0; r < DR_COUNT; r++) {
      if (!t->dropped[r]) continue;
      sb_printf(&b, "%s\"%s\":%llu", f2 ? "" : ",", DROP_NAMES[r], (unsigned long long)t->dropped[r]);
      f2 = 0;
    }
    sb_putc(&b, '}');
  }
  sb_puts(&b, "},\"dropped\":{");
  first = 1;
  for (int r = 0; r < DR_COUNT; r++) {
    if (!dropped_total[r]) continue;
    sb_printf(&b, "%s\"%s\":%llu", first ? "" : ",", DROP_NAMES[r], (unsigned long long)dropped_total[r]);
    first = 0;
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  long rss_pages = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f) {
    if (fscanf(f, "%*s %ld", &rss_pages) != 1) rss_pages = 0;
    fclose(f);
  }
  sb_printf(&b, "},\"received\":%llu,\"stored\":%llu,\"cpu\":{\"userUs\":%lld,\"systemUs\":%lld},\"rssBytes\":%ld,\"rounds\":%llu,\"batches\":%llu,\"datagrams\":%llu}",
            (unsigned long long)received, (unsigned long long)stored, (long long)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec,
            (long long)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec, rss_pages * sysconf(_SC_PAGESIZE), (unsigned long long)rounds,
            (unsigned long long)batches, (unsigned long long)datagrams);
  emit(&b);
}

static void shutdown_all(const char *reason) {
  for (struct track *t = tracks; t; t = t->next)
    if (!t->dead) stop_track(t, reason);
  exit(0);
}

static void on_line(char *line) {
  struct json_obj m;
  double v;
  if (json_parse_flat(line, &m) || json_num(&m, "v", &v) || v != RX_PROTOCOL_VERSION || !json_str(&m, "type")) return report_error("BAD_MESSAGE", "not a version 1 control message");
  const char *type = json_str(&m, "type");
  if (!strcmp(type, "start")) return cmd_start(&m);
  if (!strcmp(type, "stats")) return cmd_stats(&m);
  if (!strcmp(type, "stop")) {
    const char *id = json_str(&m, "id"), *reason = json_str(&m, "reason");
    struct track *t = id ? find_track(id) : NULL;
    if (t) stop_track(t, reason ? reason : "stopped");
    return;
  }
  if (!strcmp(type, "shutdown")) {
    const char *reason = json_str(&m, "reason");
    return shutdown_all(reason ? reason : "recorder-shutdown");
  }
  report_error("BAD_MESSAGE", "unknown message type");
}

static struct sbuf in_buf;

/* Control lines from the worker; end of input means the worker is gone. */
static void read_stdin(void) {
  char chunk[65536];
  ssize_t n = read(0, chunk, sizeof chunk);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) shutdown_all("recorder-restart");
  for (ssize_t i = 0; i < n; i++) {
    if (chunk[i] != '\n') {
      sb_putc(&in_buf, chunk[i]);
      continue;
    }
    if (in_buf.len > 0) on_line(in_buf.p);
    in_buf.len = 0;
    if (in_buf.p) in_buf.p[0] = 0;
  }
}

/* ---------------------------------------------------------------- timers and main loop */

static void on_tick(int64_t now_mono, int64_t *next_fsync, int64_t *next_rotate_check) {
  int do_sync = now_mono >= *next_fsync;
  if (do_sync) *next_fsync = now_mono + (int64_t)cfg.fsync_ms * 1000;
  for (struct track *t = tracks; t; t = t->next) {
    if (t->dead) continue;
    /* staged records go to the kernel every 200 ms: a process crash loses at most that */
    segment_flush(&t->seg);
    if (t->seg.failed_errno) {
      on_write_failed(t);
      continue;
    }
    if (do_sync && t->seg.dirty) {
      t->seg.dirty = 0;
      sync_request(t->seg.fd, t->seg.serial);
    }
  }
  if (do_sync) sync_kick();
  unsigned serial;
  int err;
  while (sync_take_failure(&serial, &err)) {
    for (struct track *t = tracks; t; t = t->next) {
      if (t->dead || t->seg.serial != serial) continue;
      segment_fail(&t->seg, err);
      on_write_failed(t);
    }
  }
  if (now_mono >= *next_rotate_check) {
    int64_t wall = now_us();
    /* A seal waits for fsync, rename and a directory fsync: tracks that started together
     * (a large room) rotate a few per tick rather than stall the receive loop all at once. */
    int budget = ROTATIONS_PER_TICK, due_left = 0;
    for (struct track *t = tracks; t; t = t->next) {
      struct segment_file *s = &t->seg;
      /* a segment with nothing in it stays open: silence does not make empty files */
      if (t->dead || wall - t->seg_started_us < (int64_t)cfg.segment_s * 1000000 || s->rtp + s->rtcp + s->staged_rtp + s->staged_rtcp == 0) continue;
      if (budget-- > 0) rotate(t, t->ssrc, "rotation");
      else due_left = 1;
    }
    /* more due: look again at the next tick, else in a second */
    *next_rotate_check = due_left ? now_mono : now_mono + 1000000;
  }
  free_dead_tracks();
}

int main(void) {
  cfg.ip = getenv("RECORDER_RX_IP") ? getenv("RECORDER_RX_IP") : "127.0.0.1";
  cfg.min_port = env_int("RECORDER_RX_MIN_PORT", 30000);
  cfg.max_port = env_int("RECORDER_RX_MAX_PORT", 39999);
  cfg.max_packet = env_int("RECORDER_RX_MAX_PACKET_BYTES", 1500);
  cfg.fsync_ms = env_int("RECORDER_RX_FSYNC_MS", 1000);
  cfg.segment_s = env_int("RECORDER_RX_SEGMENT_SECONDS", 60);
  cfg.drain_us = env_int("RECORDER_RX_DRAIN_MS", 20) * 1000;
  if (cfg.max_packet < 64 || cfg.max_packet > 65535) cfg.max_packet = 1500;
  signal(SIGPIPE, SIG_IGN);
  if (srtp_init() != srtp_err_status_ok) {
    fprintf(stderr, "recorder-rx: libsrtp does not initialise\n");
    return 1;
  }
  rx_setup();
  sync_thread_start();
  ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN};
  ev.data.ptr = NULL;
  /* a file or /dev/null cannot be polled: it is always readable, so read it every round */
  int stdin_unpollable = epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev) < 0;
  struct sbuf b = {0};
  msg_start(&b, "ready");
  sb_printf(&b, ",\"pid\":%d}", (int)getpid());
  emit(&b);

  int64_t flush_us = (cfg.fsync_ms < 200 ? cfg.fsync_ms : 200) * 1000;
  int64_t now = mono_us(), next_flush = now + flush_us, next_fsync = now + (int64_t)cfg.fsync_ms * 1000, next_rotate = now + 1000000;
  struct epoll_event evs[256];
  for (;;) {
    int64_t wait_ms = (next_flush - mono_us() + 999) / 1000;
    int n = epoll_wait(ep, evs, 256, wait_ms < 0 ? 0 : (int)wait_ms);
    int64_t round_start = mono_us();
    int stdin_ready = stdin_unpollable, sockets = 0;
    rounds++;
    for (int i = 0; i < n; i++) {
      if (!evs[i].data.ptr) {
        stdin_ready = 1;
        continue;
      }
      uintptr_t tag = (uintptr_t)evs[i].data.ptr;
      struct track *t = (struct track *)(tag & ~(uintptr_t)TAG_RTCP);
      if (!t->dead) drain(t, (tag & TAG_RTCP) != 0);
      sockets++;
    }
    /* control after packets: a stats or stop sees everything the kernel had queued */
    if (stdin_ready) read_stdin();
    now = mono_us();
    if (now >= next_flush) {
      next_flush = now + flush_us;
      on_tick(now, &next_fsync, &next_rotate);
    } else {
      free_dead_tracks();
    }
    /* Timed drain rounds: wake at most every drain interval, so that each recvmmsg finds a
     * full batch instead of the ~3 packets a wake-up per arrival would see. */
    int64_t spent = mono_us() - round_start;
    if (sockets > 0 && spent < cfg.drain_us) {
      struct timespec ts = {0, (long)(cfg.drain_us - spent) * 1000};
      nanosleep(&ts, NULL);
    }
  }
}
