/* One verbatim-rtp v1 segment file, written exactly as services/recorder/src/segment-writer.ts
 * does: header fsynced before any packet, records staged in a user-space buffer and handed
 * to the kernel on flush, .part renamed on seal, a failed write cut back to the last
 * complete record and sealed as truncated. Plus the clocks and the fsync thread. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <libdeflate.h>

#include "recorder-rx.h"

#define RECORD_PREFIX 12
#define SEGMENT_BUFFER_BYTES (64 * 1024)

int64_t now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

int64_t mono_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* Date#toISOString: 2026-12-07T17:28:37.123Z */
void iso_time(int64_t us, char out[32]) {
  time_t sec = (time_t)(us / 1000000);
  struct tm tm;
  gmtime_r(&sec, &tm);
  size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out + n, 32 - n, ".%03dZ", (int)((us / 1000) % 1000));
}

const char *errno_code(int err) {
  const char *name = strerrorname_np(err);
  return name ? name : "EIO";
}

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

void fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  fsync(fd); /* some filesystems refuse directory fsync; the rename is still atomic */
  close(fd);
}

static int write_all(int fd, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (w == 0) return EIO;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int write_out(struct segment_file *s, const uint8_t *p, size_t n) {
  int err = write_all(s->fd, p, n);
  if (err) return err;
  SHA256_Update(&s->sha, p, n);
  s->written += n;
  s->dirty = 1;
  return 0;
}

static char *join(const char *a, const char *b, const char *c) {
  size_t n = strlen(a) + strlen(b) + strlen(c) + 1;
  char *p = malloc(n);
  if (!p) abort();
  snprintf(p, n, "%s%s%s", a, b, c);
  return p;
}

int segment_open(struct segment_file *s, const char *dir, const char *name, const uint8_t *header, size_t header_len, unsigned serial) {
  memset(s, 0, sizeof *s);
  s->fd = -1;
  s->first_us = s->last_us = -1;
  s->serial = serial;
  s->dir = strdup(dir);
  char *base = join(dir, "/", name);
  s->final_path = join(base, ".vrtp", "");
  s->part_path = join(base, ".vrtp.part", "");
  free(base);
  mkdir(dir, 0777); /* the supervisor made the session directory; this covers a race with nothing */
  s->fd = open(s->part_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (s->fd < 0) return errno;
  s->cap = SEGMENT_BUFFER_BYTES;
  s->buf = malloc(s->cap);
  if (!s->buf) abort();
  SHA256_Init(&s->sha);
  int err = write_out(s, header, header_len);
  /* The header must be durable before any packet: a crash leaves a readable file. */
  if (!err && fsync(s->fd) < 0) err = errno;
  if (err) {
    close(s->fd);
    unlink(s->part_path);
    s->fd = -1;
    return err;
  }
  fsync_dir(dir);
  return 0;
}

static int segment_is_open(const struct segment_file *s) {
  return !s->sealed && !s->failed_errno;
}

int segment_append(struct segment_file *s, int type, int64_t arrival_us, const uint8_t *data, size_t len) {
  if (!segment_is_open(s)) return 0;
  size_t need = RECORD_PREFIX + len + 4;
  if (s->used + need > s->cap) {
    segment_flush(s);
    if (!segment_is_open(s)) return 0;
    if (need > s->cap) {
      s->cap = need * 2;
      s->buf = realloc(s->buf, s->cap);
      if (!s->buf) abort();
    }
  }
  uint8_t *r = s->buf + s->used;
  r[0] = (uint8_t)type;
  r[1] = 0;
  r[2] = (uint8_t)(len >> 8);
  r[3] = (uint8_t)len;
  put_be32(r + 4, (uint32_t)((uint64_t)arrival_us >> 32));
  put_be32(r + 8, (uint32_t)arrival_us);
  memcpy(r + RECORD_PREFIX, data, len);
  put_be32(r + RECORD_PREFIX + len, libdeflate_crc32(0, r, RECORD_PREFIX + len));
  s->used += need;
  if (type == REC_RTP) s->staged_rtp++;
  else s->staged_rtcp++;
  if (s->first_us < 0) s->first_us = arrival_us;
  s->last_us = arrival_us;
  return 1;
}

void segment_flush(struct segment_file *s) {
  if (s->used == 0 || !segment_is_open(s)) return;
  size_t n = s->used;
  s->used = 0;
  int err = write_out(s, s->buf, n);
  if (!err) {
    s->rtp += s->staged_rtp;
    s->rtcp += s->staged_rtcp;
  }
  s->staged_rtp = s->staged_rtcp = 0;
  if (err) segment_fail(s, err);
}

static void seal_internal(struct segment_file *s) {
  if (s->sealed) return;
  s->sealed = 1;
  fsync(s->fd);
  close(s->fd);
  s->fd = -1;
  rename(s->part_path, s->final_path);
  fsync_dir(s->dir);
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256_Final(md, &s->sha);
  for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) snprintf(s->sha_hex + 2 * i, 3, "%02x", md[i]);
}

void segment_fail(struct segment_file *s, int err) {
  if (s->failed_errno || s->sealed) return;
  s->failed_errno = err;
  s->used = 0;
  /* best effort: the reader's CRC check still stops at the last complete record */
  if (ftruncate(s->fd, (off_t)s->written) == 0) fsync(s->fd);
  seal_internal(s);
}

void segment_seal(struct segment_file *s) {
  if (s->sealed) return;
  segment_flush(s);
  seal_internal(s);
}

void segment_free(struct segment_file *s) {
  free(s->buf);
  free(s->part_path);
  free(s->final_path);
  free(s->dir);
  s->buf = NULL;
  s->part_path = s->final_path = s->dir = NULL;
}

/* ---- fsync thread: requests are dup()ed fds, so a segment sealed meanwhile is harmless ---- */
#define SYNC_QUEUE 4096
static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int fds[SYNC_QUEUE];
  unsigned serials[SYNC_QUEUE];
  int head, count;
  unsigned failed_serials[64];
  int failed_errs[64];
  int failed_count;
} sq = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void note_failure(unsigned serial, int err) {
  pthread_mutex_lock(&sq.mu);
  if (sq.failed_count < 64) {
    sq.failed_serials[sq.failed_count] = serial;
    sq.failed_errs[sq.failed_count++] = err;
  }
  pthread_mutex_unlock(&sq.mu);
}

/* Takes every queued request at once: one syncfs per filesystem makes the whole period's
 * segments durable in one journal commit (an fdatasync each cost ~170 µs of CPU apiece with
 * a hundred open segments). Only when syncfs reports an error is each file synced on its own,
 * to tell which segments it hit. */
static void *sync_main(void *arg) {
  (void)arg;
  static int fds[SYNC_QUEUE];
  static unsigned serials[SYNC_QUEUE];
  static dev_t devs[SYNC_QUEUE];
  for (;;) {
    pthread_mutex_lock(&sq.mu);
    while (sq.count == 0) pthread_cond_wait(&sq.cv, &sq.mu);
    int n = sq.count;
    for (int i = 0; i < n; i++) {
      fds[i] = sq.fds[(sq.head + i) % SYNC_QUEUE];
      serials[i] = sq.serials[(sq.head + i) % SYNC_QUEUE];
    }
    sq.head = (sq.head + n) % SYNC_QUEUE;
    sq.count = 0;
    pthread_mutex_unlock(&sq.mu);
    for (int i = 0; i < n; i++) {
      struct stat st;
      devs[i] = fstat(fds[i], &st) == 0 ? st.st_dev : (dev_t)-1;
    }
    for (int i = 0; i < n; i++) {
      if (fds[i] < 0) continue;
      int first = 1, failed = 0;
      for (int j = i; j < n; j++) {
        if (fds[j] < 0 || devs[j] != devs[i]) continue;
        if (first) failed = syncfs(fds[j]) < 0;
        first = 0;
        if (failed) {
          int err = fdatasync(fds[j]) < 0 ? errno : 0;
          if (err && err != EBADF) note_failure(serials[j], err);
        }
        close(fds[j]);
        fds[j] = -1;
      }
    }
  }
  return NULL;
}

void sync_thread_start(void) {
  pthread_t t;
  if (pthread_create(&t, NULL, sync_main, NULL) != 0) abort();
  pthread_detach(t);
}

void sync_request(int fd, unsigned serial) {
  int dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dupfd < 0) return;
  pthread_mutex_lock(&sq.mu);
  if (sq.count == SYNC_QUEUE) {
    /* the disk is far behind; this segment's next period will ask again */
    pthread_mutex_unlock(&sq.mu);
    close(dupfd);
    return;
  }
  int tail = (sq.head + sq.count) % SYNC_QUEUE;
  sq.fds[tail] = dupfd;
  sq.serials[tail] = serial;
  sq.count++;
  pthread_mutex_unlock(&sq.mu);
}

void sync_kick(void) {
  pthread_mutex_lock(&sq.mu);
  if (sq.count > 0) pthread_cond_signal(&sq.cv);
  pthread_mutex_unlock(&sq.mu);
}

int sync_take_failure(unsigned *serial, int *err) {
  int got = 0;
  pthread_mutex_lock(&sq.mu);
  if (sq.failed_count > 0) {
    sq.failed_count--;
    *serial = sq.failed_serials[sq.failed_count];
    *err = sq.failed_errs[sq.failed_count];
    got = 1;
  }
  pthread_mutex_unlock(&sq.mu);
  return got;
}
