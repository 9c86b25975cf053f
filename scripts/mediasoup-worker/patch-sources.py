#!/usr/bin/env python3
"""Adapt a *copy* of mediasoup's worker sources for an offline Debian 12 build.

Usage: patch-sources.py <worker-dir>

Every replacement must match exactly the expected number of times; otherwise
we exit non-zero, so a mediasoup version bump can never silently skip a fix
(notably the DTLS/kTLS crash fix).
"""

import pathlib
import sys

# (relative file, old text, new text, why)
PATCHES = [
    (
        "meson.build",
        "meson_version: '>= 1.1.0'",
        "meson_version: '>= 1.0.0'",
        "Debian 12 ships meson 1.0.1; the build uses no 1.1-only features",
    ),
    (
        "src/RTC/DtlsTransport.cpp",
        "const long resultOfcallback = (operationType == BIO_CB_RETURN) ? static_cast<long>(ret) : 1;",
        "const long resultOfcallback = (operationType & BIO_CB_RETURN) ? static_cast<long>(ret) : 1;",
        # OpenSSL calls the BIO callback after ctrl operations with
        # BIO_CB_CTRL | BIO_CB_RETURN. The upstream `==` test answers 1 for
        # those, so BIO_CTRL_GET_KTLS_SEND/RECV read as "kTLS enabled" with
        # Debian's kTLS-capable OpenSSL, and SSL_read crashes on the first
        # DTLS handshake. Returning `ret` for every post-call fixes it.
        "DTLS crash with kTLS-enabled OpenSSL (BIO callback return value)",
    ),
]


def main() -> int:
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} <worker-dir>", file=sys.stderr)
        return 2

    worker = pathlib.Path(sys.argv[1])
    failed = False

    for rel, old, new, why in PATCHES:
        path = worker / rel
        text = path.read_text(encoding="utf-8")
        count = text.count(old)
        if count != 1:
            print(
                f"patch-sources: FAILED {rel}: expected exactly 1 match, found {count}\n"
                f"  pattern: {old}\n  purpose: {why}",
                file=sys.stderr,
            )
            failed = True
            continue
        path.write_text(text.replace(old, new), encoding="utf-8")
        print(f"patch-sources: patched {rel} ({why})", file=sys.stderr)

    # Sanity check: the sources must still include libsrtp as <srtp.h>, which
    # our libsrtp3 stand-in subproject resolves to the libsrtp2 adapter.
    srtp_includes = [
        p
        for p in list((worker / "include").rglob("*.hpp")) + list((worker / "src").rglob("*.cpp"))
        if "#include <srtp.h>" in p.read_text(encoding="utf-8", errors="replace")
    ]
    odd_includes = [
        p
        for p in list((worker / "include").rglob("*.hpp")) + list((worker / "src").rglob("*.cpp"))
        if "srtp3/srtp.h" in p.read_text(encoding="utf-8", errors="replace")
    ]
    if not srtp_includes or odd_includes:
        print(
            "patch-sources: FAILED: worker sources no longer include libsrtp as <srtp.h> "
            f"(found <srtp.h> in {len(srtp_includes)} files, srtp3/srtp.h in "
            f"{[str(p) for p in odd_includes]}); update the libsrtp3 adapter wiring",
            file=sys.stderr,
        )
        failed = True

    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
