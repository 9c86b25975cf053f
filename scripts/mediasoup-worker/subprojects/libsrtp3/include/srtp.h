/*
 * libsrtp3-API adapter over Debian's libsrtp2 (Verbatim build, not upstream).
 *
 * mediasoup >= 3.16 is written against libsrtp 3.x, whose protect/unprotect
 * functions take separate input/output buffers with size_t lengths:
 *
 *   srtp_protect(ctx, rtp, rtp_len, srtp, &srtp_len, mki_index)
 *   srtp_unprotect(ctx, srtp, srtp_len, rtp, &rtp_len)
 *   (and the same for *_rtcp)
 *
 * libsrtp2 works in place on a single buffer with an int* length. Each
 * wrapper copies the input into the output buffer (if they differ), checks
 * that the output buffer is big enough, and runs the in-place libsrtp2 call.
 * The two libsrtp3-only error codes are defined after libsrtp2's last value.
 * srtp_stream_remove() is libsrtp2's srtp_remove_stream() under its 3.x name.
 *
 * mediasoup never uses MKI (mki_index is always 0 and policies set no MKI),
 * so mki_index is ignored.
 */
#ifndef VERBATIM_SRTP3_OVER_SRTP2_H
#define VERBATIM_SRTP3_OVER_SRTP2_H

#include <srtp2/srtp.h>

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* libsrtp3-only error codes (libsrtp2's enum ends at pkt_idx_adv = 27). */
#define srtp_err_status_buffer_small ((srtp_err_status_t)28)
#define srtp_err_status_cryptex_err ((srtp_err_status_t)29)

/* SRTCP adds the 4-byte E-flag + SRTCP index word on top of tag + MKI. */
#define VERBATIM_SRTCP_MAX_TRAILER_LEN (SRTP_MAX_TRAILER_LEN + 4)

static inline srtp_err_status_t verbatim_srtp3_protect_common(
  srtp_t ctx,
  const uint8_t* in,
  size_t in_len,
  uint8_t* out,
  size_t* out_len,
  int is_rtcp)
{
	const size_t trailer = is_rtcp ? VERBATIM_SRTCP_MAX_TRAILER_LEN : SRTP_MAX_TRAILER_LEN;
	int len;
	srtp_err_status_t err;

	if (in_len > (size_t)INT_MAX - trailer)
		return srtp_err_status_bad_param;
	/* libsrtp2 may write up to `trailer` bytes past the end of the packet. */
	if (*out_len < in_len + trailer)
		return srtp_err_status_buffer_small;

	if (out != in)
		memmove(out, in, in_len);

	len = (int)in_len;
	err = is_rtcp ? srtp_protect_rtcp(ctx, out, &len) : srtp_protect(ctx, out, &len);

	if (err == srtp_err_status_ok)
		*out_len = (size_t)len;

	return err;
}

static inline srtp_err_status_t verbatim_srtp3_unprotect_common(
  srtp_t ctx,
  const uint8_t* in,
  size_t in_len,
  uint8_t* out,
  size_t* out_len,
  int is_rtcp)
{
	int len;
	srtp_err_status_t err;

	if (in_len > (size_t)INT_MAX)
		return srtp_err_status_bad_param;
	/* Decryption only shrinks the packet, but it is done in place in `out`. */
	if (*out_len < in_len)
		return srtp_err_status_buffer_small;

	if (out != in)
		memmove(out, in, in_len);

	len = (int)in_len;
	err = is_rtcp ? srtp_unprotect_rtcp(ctx, out, &len) : srtp_unprotect(ctx, out, &len);

	if (err == srtp_err_status_ok)
		*out_len = (size_t)len;

	return err;
}

static inline srtp_err_status_t verbatim_srtp3_protect(
  srtp_t ctx, const uint8_t* rtp, size_t rtp_len, uint8_t* srtp, size_t* srtp_len, size_t mki_index)
{
	(void)mki_index;
	return verbatim_srtp3_protect_common(ctx, rtp, rtp_len, srtp, srtp_len, 0);
}

static inline srtp_err_status_t verbatim_srtp3_unprotect(
  srtp_t ctx, const uint8_t* srtp, size_t srtp_len, uint8_t* rtp, size_t* rtp_len)
{
	return verbatim_srtp3_unprotect_common(ctx, srtp, srtp_len, rtp, rtp_len, 0);
}

static inline srtp_err_status_t verbatim_srtp3_protect_rtcp(
  srtp_t ctx, const uint8_t* rtcp, size_t rtcp_len, uint8_t* srtcp, size_t* srtcp_len, size_t mki_index)
{
	(void)mki_index;
	return verbatim_srtp3_protect_common(ctx, rtcp, rtcp_len, srtcp, srtcp_len, 1);
}

static inline srtp_err_status_t verbatim_srtp3_unprotect_rtcp(
  srtp_t ctx, const uint8_t* srtcp, size_t srtcp_len, uint8_t* rtcp, size_t* rtcp_len)
{
	return verbatim_srtp3_unprotect_common(ctx, srtcp, srtcp_len, rtcp, rtcp_len, 1);
}

/* Route mediasoup's libsrtp3-style calls to the wrappers above. Defined after
 * the wrappers so that those still call the real libsrtp2 functions. */
#define srtp_protect verbatim_srtp3_protect
#define srtp_unprotect verbatim_srtp3_unprotect
#define srtp_protect_rtcp verbatim_srtp3_protect_rtcp
#define srtp_unprotect_rtcp verbatim_srtp3_unprotect_rtcp

/* libsrtp3 renamed srtp_remove_stream() (same signature). */
#define srtp_stream_remove srtp_remove_stream

#endif /* VERBATIM_SRTP3_OVER_SRTP2_H */
