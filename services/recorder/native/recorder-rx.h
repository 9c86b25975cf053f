/*
 * recorder-rx: the recorder's native receive path (one process per recorder worker).
 * It owns the worker's UDP sockets, receives in timed batches (epoll + recvmmsg),
 * classifies every datagram like services/recorder/src/packet-classifier.ts and
 * appends verbatim-rtp v1 records (services/lib/recording/vrtp-format.ts) itself, so
 * packets never enter JavaScript. Control: JSON lines on stdin/stdout, schemas in
 * services/lib/contracts/recorder-rx.ts.
 */
#ifndef RECORDER_RX_H
#define RECORDER_RX_H

#include <netinet/in.h>
#include <openssl/sha.h>
#include <srtp2/srtp.h>
#include <stddef.h>
#include <stdint.h>

#define RX_PROTOCOL_VERSION 1
#define RECORDING_FORMAT_VERSION 1

enum drop_reason {
  DR_TOO_SHORT,
  DR_OVER_MTU,
  DR_BAD_VERSION,
  DR_NOT_RTCP,
  DR_UNKNOWN_SSRC,
  DR_UNKNOWN_PAYLOAD_TYPE,
  DR_WRONG_SOURCE,
  DR_SEGMENT_CLOSED,
  DR_SRTP_FAILED,
  DR_COUNT
};
extern const char *const DROP_NAMES[DR_COUNT];

enum record_type { REC_RTP = 1, REC_RTCP = 2 };

/* ---- growable string (JSON out, paths) ---- */
struct sbuf {
  char *p;
  size_t len, cap;
};
void sb_putc(struct sbuf *b, char c);
void sb_puts(struct sbuf *b, const char *s);
void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A JSON string literal, quotes included. */
void sb_json_str(struct sbuf *b, const char *s);
void sb_free(struct sbuf *b);

/* ---- flat JSON objects in (control messages): string, number and boolean values ---- */
#define JSON_MAX_FIELDS 32
struct json_field {
  char *key;
  char *str; /* NULL for numbers and booleans */
  double num;
};
struct json_obj {
  int n;
  struct json_field f[JSON_MAX_FIELDS];
};
/* Parses one line in place; 0 on success. Nested objects and arrays are refused. */
int json_parse_flat(char *line, struct json_obj *out);
const char *json_str(const struct json_obj *o, const char *key);
int json_num(const struct json_obj *o, const char *key, double *out);

/* ---- one segment file: <dir>/<name>.vrtp.part, renamed to .vrtp when sealed ---- */
struct segment_file {
  int fd;
  char *part_path, *final_path, *dir;
  uint8_t *buf;
  size_t cap, used;
  uint64_t written;
  SHA256_CTX sha;
  uint64_t rtp, rtcp, staged_rtp, staged_rtcp;
  int64_t first_us, last_us; /* -1: none */
  int failed_errno;          /* set when a write failed: the segment is sealed truncated */
  int sealed, dirty;
  unsigned serial; /* matches fsync results from the sync thread */
  char sha_hex[65];
};
int segment_open(struct segment_file *s, const char *dir, const char *name, const uint8_t *header, size_t header_len, unsigned serial);
/* 1 if stored (staged), 0 if the segment can no longer take packets. */
int segment_append(struct segment_file *s, int type, int64_t arrival_us, const uint8_t *data, size_t len);
void segment_flush(struct segment_file *s);
/* Write failure: cut back to the last complete record, seal as truncated. */
void segment_fail(struct segment_file *s, int err);
void segment_seal(struct segment_file *s);
void segment_free(struct segment_file *s);
void fsync_dir(const char *dir);

/* The fsync thread: periodic fsyncs never stall the receive loop. */
void sync_thread_start(void);
/* Queues a segment for the next period's sync; sync_kick() hands the queued batch over. */
void sync_request(int fd, unsigned serial);
void sync_kick(void);
/* Takes one failed fsync result; 0 when there is none. */
int sync_take_failure(unsigned *serial, int *err);

int64_t now_us(void);     /* wall clock, µs since the epoch */
int64_t mono_us(void);    /* monotonic */
void iso_time(int64_t us, char out[32]);
const char *errno_code(int err);

#define BATCH 64
#define SSRC_SWITCH_PACKETS 5 /* consecutive packets of a new SSRC that start a new segment */

struct candidate_pkt {
  int64_t at;
  uint16_t len;
  uint8_t *data;
};

struct track {
  struct track *next;
  char *id, *dir, *name, *header_rest;
  int rtp_fd, rtcp_fd, rtp_port;
  uint32_t ssrc;
  int pt, segment, stopped, dead;
  int64_t seg_started_us;
  int pinned;
  struct in_addr src_addr;
  uint16_t src_rtp_port; /* network order */
  uint32_t cand_ssrc;
  int cand_n;
  struct candidate_pkt cand[SSRC_SWITCH_PACKETS];
  struct segment_file seg;
  /* The tap's SRTP session (receive only); NULL when the tap sends clear RTP. */
  srtp_t srtp;
  uint64_t received, stored, dropped[DR_COUNT];
};

/* epoll data: a track pointer tagged with the socket (bit 0: RTCP); stdin is NULL. */
#define TAG_RTCP 1u


struct rx_config {
  const char *ip;
  int min_port, max_port, max_packet, fsync_ms, segment_s, drain_us;
};
extern struct rx_config cfg;
extern struct track *tracks;
extern int ntracks, ep;
extern uint64_t dropped_total[DR_COUNT];
extern unsigned next_serial;
extern uint64_t batches, datagrams;

/* ---- control pipe out (control-json.c) ---- */
void emit(struct sbuf *b);
void msg_start(struct sbuf *b, const char *type);
void report_error(const char *code, const char *message);

/* ---- tracks (track-rx.c) ---- */
void rx_setup(void);
void drain(struct track *t, int is_rtcp);
int open_segment(struct track *t);
void close_sockets(struct track *t);
void clear_candidate(struct track *t, int count_as_dropped);
void on_write_failed(struct track *t);
void rotate(struct track *t, uint32_t ssrc, const char *reason);
void seal_and_report(struct track *t, const char *end_reason, int track_open);
/* SRTP: a receive-only session from a base64 master key and salt (AES_CM_128_HMAC_SHA1_80); 0 on success. */
int srtp_open(struct track *t, const char *key_base64);
void srtp_close(struct track *t);

#endif
