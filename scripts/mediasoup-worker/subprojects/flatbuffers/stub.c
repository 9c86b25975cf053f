/* Object for the placeholder static library that mediasoup's meson.build
 * passes to link_whole; the real code comes from the Debian shared library.
 * (Meson deprecates source-less targets, hence this file.) */
typedef int verbatim_mediasoup_stub_unused;
