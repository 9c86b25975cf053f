/* One track: batched receive, classification (as services/recorder/src/packet-classifier.ts),
 * sender pinning, SSRC-change and rotation segments (as track-recorder.ts). */
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
#include <openssl/evp.h>
#include <libdeflate.h>

#include "recorder-rx.h"


#define RTP_HEADER_BYTES 12
#define RTCP_HEADER_BYTES 8
#define RTCP_SR 200

/* ---------------------------------------------------------------- segments */

int open_segment(struct track *t) {
  char iso[32];
  t->seg_started_us = now_us();
  iso_time(t->seg_started_us, iso);
  struct sbuf json = {0};
  sb_printf(&json, "{\"segment\":%d,\"ssrc\":%u,\"startedAt\":\"%s\",\"startedAtUs\":%lld,", t->segment, t->ssrc, iso, (long long)t->seg_started_us);
  sb_puts(&json, t->header_rest);
  /* magic | version u16 | header length u32 | JSON | CRC32 */
  size_t hl = 14 + json.len + 4;
  uint8_t *h = malloc(hl);
  if (!h) abort();
  memcpy(h, "VRBTMRTP", 8);
  h[8] = 0;
  h[9] = RECORDING_FORMAT_VERSION;
  h[10] = (uint8_t)(json.len >> 24);
  h[11] = (uint8_t)(json.len >> 16);
  h[12] = (uint8_t)(json.len >> 8);
  h[13] = (uint8_t)json.len;
  memcpy(h + 14, json.p, json.len);
  uint32_t crc = libdeflate_crc32(0, h, 14 + json.len);
  h[14 + json.len] = (uint8_t)(crc >> 24);
  h[15 + json.len] = (uint8_t)(crc >> 16);
  h[16 + json.len] = (uint8_t)(crc >> 8);
  h[17 + json.len] = (uint8_t)crc;
  char name[4096];
  snprintf(name, sizeof name, "%s-%d", t->name, t->segment);
  int err = segment_open(&t->seg, t->dir, name, h, hl, next_serial++);
  free(h);
  sb_free(&json);
  return err;
}

/* Seals the open segment and tells the worker (sealed message, SegmentEntry shape). */
void seal_and_report(struct track *t, const char *end_reason, int track_open) {
  struct segment_file *s = &t->seg;
  segment_seal(s);
  char started[32], ended[32];
  iso_time(t->seg_started_us, started);
  iso_time(now_us(), ended);
  struct sbuf b = {0};
  msg_start(&b, "sealed");
  sb_puts(&b, ",\"id\":");
  sb_json_str(&b, t->id);
  sb_printf(&b, ",\"trackOpen\":%s,\"entry\":{\"segment\":%d,\"file\":", track_open ? "true" : "false", t->segment);
  const char *slash = strrchr(s->final_path, '/');
  sb_json_str(&b, slash ? slash + 1 : s->final_path);
  sb_printf(&b, ",\"ssrc\":%u,\"startedAt\":\"%s\",\"startedAtUs\":%lld,\"endedAt\":\"%s\",\"endReason\":", t->ssrc, started, (long long)t->seg_started_us, ended);
  sb_json_str(&b, end_reason);
  sb_printf(&b, ",\"bytes\":%llu,\"sha256\":\"%s\",\"rtpPackets\":%llu,\"rtcpPackets\":%llu", (unsigned long long)s->written, s->sha_hex, (unsigned long long)s->rtp, (unsigned long long)s->rtcp);
  if (s->first_us >= 0) sb_printf(&b, ",\"firstArrivalUs\":%lld,\"lastArrivalUs\":%lld", (long long)s->first_us, (long long)s->last_us);
  else sb_puts(&b, ",\"firstArrivalUs\":null,\"lastArrivalUs\":null");
  if (s->failed_errno) sb_printf(&b, ",\"truncated\":true,\"truncatedReason\":\"%s\"}}", errno_code(s->failed_errno));
  else sb_puts(&b, ",\"truncated\":false}}");
  emit(&b);
  segment_free(s);
}

static void drop(struct track *t, enum drop_reason r) {
  t->dropped[r]++;
  dropped_total[r]++;
}

void clear_candidate(struct track *t, int count_as_dropped) {
  for (int i = 0; i < t->cand_n; i++) {
    if (count_as_dropped) drop(t, DR_UNKNOWN_SSRC);
    free(t->cand[i].data);
  }
  t->cand_n = 0;
}

void close_sockets(struct track *t) {
  for (int *fd = &t->rtp_fd; fd <= &t->rtcp_fd; fd++) {
    if (*fd < 0) continue;
    epoll_ctl(ep, EPOLL_CTL_DEL, *fd, NULL);
    close(*fd);
    *fd = -1;
  }
}

/* A failed write (ENOSPC...): the segment sealed itself truncated; report once, stop receiving. */
void on_write_failed(struct track *t) {
  if (t->stopped) return;
  t->stopped = t->dead = 1;
  close_sockets(t);
  clear_candidate(t, 1);
  seal_and_report(t, "write-failed", 0);
}

static void store(struct track *t, int type, int64_t at, const uint8_t *p, size_t len) {
  if (segment_append(&t->seg, type, at, p, len)) {
    t->stored++;
    return;
  }
  drop(t, DR_SEGMENT_CLOSED);
  if (t->seg.failed_errno) on_write_failed(t);
}

void rotate(struct track *t, uint32_t ssrc, const char *reason) {
  seal_and_report(t, reason, 1);
  t->segment++;
  t->ssrc = ssrc;
  int err = open_segment(t);
  if (err) {
    /* no new segment (disk full...): the track ends here, as a failed write would end it */
    t->stopped = t->dead = 1;
    close_sockets(t);
    clear_candidate(t, 1);
    struct sbuf b = {0};
    msg_start(&b, "trackFailed");
    sb_puts(&b, ",\"id\":");
    sb_json_str(&b, t->id);
    sb_printf(&b, ",\"code\":\"%s\"}", errno_code(err));
    emit(&b);
  }
}

/* ---------------------------------------------------------------- SRTP */

int srtp_open(struct track *t, const char *key_base64) {
  /* 30 bytes (16 key + 14 salt) are 40 base64 characters without padding */
  unsigned char key[SRTP_AES_ICM_128_KEY_LEN_WSALT + 3];
  if (strlen(key_base64) != 40 || EVP_DecodeBlock(key, (const unsigned char *)key_base64, 40) != SRTP_AES_ICM_128_KEY_LEN_WSALT) return -1;
  srtp_policy_t policy;
  memset(&policy, 0, sizeof policy);
  srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&policy.rtp);
  srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&policy.rtcp);
  /* any SSRC: the tap's SSRC can change (a new segment), and only packets that authenticate are kept */
  policy.ssrc.type = ssrc_any_inbound;
  policy.key = key;
  policy.window_size = 1024;
  int err = srtp_create(&t->srtp, &policy) == srtp_err_status_ok ? 0 : -1;
  OPENSSL_cleanse(key, sizeof key);
  if (err) t->srtp = NULL;
  return err;
}

void srtp_close(struct track *t) {
  if (t->srtp) srtp_dealloc(t->srtp);
  t->srtp = NULL;
}

/* Decrypts in place (the receive buffers are ours); 0 when the packet does not authenticate. */
static int unprotect(struct track *t, const uint8_t *b, size_t *len, int is_rtcp) {
  if (!t->srtp) return 1;
  int n = (int)*len;
  srtp_err_status_t s = is_rtcp ? srtp_unprotect_rtcp(t->srtp, (void *)b, &n) : srtp_unprotect(t->srtp, (void *)b, &n);
  if (s != srtp_err_status_ok) return 0;
  *len = (size_t)n;
  return 1;
}

/* ---------------------------------------------------------------- classification */

static int is_rtcp_type(uint8_t b) { return b >= 192 && b <= 223; }
static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
/* Sender reports must come from this track's SSRC; other RTCP (SDES, BYE...) is kept as is. */
static int rtcp_ssrc_ok(const uint8_t *b, uint32_t ssrc) { return b[1] != RTCP_SR || be32(b + 4) == ssrc; }

enum { V_RTP = -1, V_RTCP = -2 };

static int classify_rtp_port(const uint8_t *b, size_t len, int trunc, const struct track *t) {
  if (len < RTP_HEADER_BYTES) return len >= RTCP_HEADER_BYTES && (b[0] & 0xc0) == 0x80 && is_rtcp_type(b[1]) ? V_RTCP : DR_TOO_SHORT;
  if (trunc || len > (size_t)cfg.max_packet) return DR_OVER_MTU;
  if ((b[0] & 0xc0) != 0x80) return DR_BAD_VERSION;
  /* RTCP multiplexed on the RTP port (RFC 5761) */
  if (is_rtcp_type(b[1])) return rtcp_ssrc_ok(b, t->ssrc) ? V_RTCP : DR_UNKNOWN_SSRC;
  if (be32(b + 8) != t->ssrc) return DR_UNKNOWN_SSRC;
  if ((b[1] & 0x7f) != t->pt) return DR_UNKNOWN_PAYLOAD_TYPE;
  return V_RTP;
}

static int classify_rtcp_port(const uint8_t *b, size_t len, int trunc, const struct track *t) {
  if (len < RTCP_HEADER_BYTES) return DR_TOO_SHORT;
  if (trunc || len > (size_t)cfg.max_packet) return DR_OVER_MTU;
  if ((b[0] & 0xc0) != 0x80) return DR_BAD_VERSION;
  if (!is_rtcp_type(b[1])) return DR_NOT_RTCP;
  return rtcp_ssrc_ok(b, t->ssrc) ? V_RTCP : DR_UNKNOWN_SSRC;
}

/* The first valid packet pins the sender; datagrams from anyone else are refused. */
static int source_ok(const struct track *t, const struct sockaddr_in *from, int is_rtp) {
  if (!t->pinned) return 1;
  return t->src_addr.s_addr == from->sin_addr.s_addr && (!is_rtp || t->src_rtp_port == from->sin_port);
}

/* A new SSRC with our payload type from our sender: after a few packets it becomes a new segment. */
static void ssrc_probation(struct track *t, const uint8_t *b, size_t len, int64_t at) {
  uint32_t ssrc = be32(b + 8);
  if (t->cand_n == 0 || t->cand_ssrc != ssrc) {
    clear_candidate(t, 1);
    t->cand_ssrc = ssrc;
  }
  struct candidate_pkt *c = &t->cand[t->cand_n++];
  c->at = at;
  c->len = (uint16_t)len;
  c->data = malloc(len);
  if (!c->data) abort();
  memcpy(c->data, b, len);
  if (t->cand_n < SSRC_SWITCH_PACKETS) return;
  rotate(t, ssrc, "ssrc-change");
  for (int i = 0; i < t->cand_n; i++) {
    if (!t->dead) store(t, REC_RTP, t->cand[i].at, t->cand[i].data, t->cand[i].len);
    else drop(t, DR_SEGMENT_CLOSED);
    free(t->cand[i].data);
  }
  t->cand_n = 0;
}

static void on_rtp(struct track *t, const uint8_t *b, size_t len, int trunc, const struct sockaddr_in *from, int64_t at) {
  int v = classify_rtp_port(b, len, trunc, t);
  if (v == V_RTP || v == V_RTCP) {
    if (!source_ok(t, from, 1)) return drop(t, DR_WRONG_SOURCE);
    /* only an authenticated packet pins the sender */
    if (!unprotect(t, b, &len, v == V_RTCP)) return drop(t, DR_SRTP_FAILED);
    if (!t->pinned) {
      t->pinned = 1;
      t->src_addr = from->sin_addr;
      t->src_rtp_port = from->sin_port;
    }
    if (v == V_RTP) clear_candidate(t, 0);
    return store(t, v == V_RTP ? REC_RTP : REC_RTCP, at, b, len);
  }
  if (v == DR_UNKNOWN_SSRC && len >= RTP_HEADER_BYTES && (b[1] & 0x7f) == t->pt && source_ok(t, from, 1)) {
    if (!unprotect(t, b, &len, 0)) return drop(t, DR_SRTP_FAILED);
    return ssrc_probation(t, b, len, at);
  }
  drop(t, (enum drop_reason)v);
}

static void on_rtcp(struct track *t, const uint8_t *b, size_t len, int trunc, const struct sockaddr_in *from, int64_t at) {
  int v = classify_rtcp_port(b, len, trunc, t);
  if (v != V_RTCP) return drop(t, (enum drop_reason)v);
  if (!source_ok(t, from, 0)) return drop(t, DR_WRONG_SOURCE);
  if (!unprotect(t, b, &len, 1)) return drop(t, DR_SRTP_FAILED);
  store(t, REC_RTCP, at, b, len);
}

/* ---------------------------------------------------------------- receive */

static uint8_t rx_bufs[BATCH][65536 + 1];
static struct mmsghdr rx_msgs[BATCH];
static struct iovec rx_iov[BATCH];
static struct sockaddr_in rx_from[BATCH];
static char rx_ctrl[BATCH][CMSG_SPACE(sizeof(struct timeval))];

void rx_setup(void) {
  for (int i = 0; i < BATCH; i++) {
    /* one byte more than the MTU limit, so an oversized datagram shows as over_mtu */
    rx_iov[i].iov_base = rx_bufs[i];
    rx_iov[i].iov_len = (size_t)cfg.max_packet + 1;
  }
}

/* Reads everything queued on one socket, BATCH datagrams per syscall. */
void drain(struct track *t, int is_rtcp) {
  int fd = is_rtcp ? t->rtcp_fd : t->rtp_fd;
  while (fd >= 0 && !t->dead) {
    for (int i = 0; i < BATCH; i++) {
      struct msghdr *h = &rx_msgs[i].msg_hdr;
      h->msg_name = &rx_from[i];
      h->msg_namelen = sizeof rx_from[i];
      h->msg_iov = &rx_iov[i];
      h->msg_iovlen = 1;
      h->msg_control = rx_ctrl[i];
      h->msg_controllen = sizeof rx_ctrl[i];
      h->msg_flags = 0;
    }
    int n = recvmmsg(fd, rx_msgs, BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0) return;
    batches++;
    datagrams += (uint64_t)n;
    int64_t fallback = -1;
    for (int i = 0; i < n && !t->dead; i++) {
      struct msghdr *h = &rx_msgs[i].msg_hdr;
      /* arrival = the kernel's receive time (SO_TIMESTAMP), not when this round got to it */
      int64_t at = -1;
      for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMP) {
          struct timeval tv;
          memcpy(&tv, CMSG_DATA(c), sizeof tv);
          at = (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
        }
      }
      if (at < 0) at = fallback >= 0 ? fallback : (fallback = now_us());
      t->received++;
      int trunc = (h->msg_flags & MSG_TRUNC) != 0;
      if (is_rtcp) on_rtcp(t, rx_bufs[i], rx_msgs[i].msg_len, trunc, &rx_from[i], at);
      else on_rtp(t, rx_bufs[i], rx_msgs[i].msg_len, trunc, &rx_from[i], at);
    }
    if (n < BATCH) return;
  }
}

