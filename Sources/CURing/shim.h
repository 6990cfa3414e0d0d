// liburing, for CPacketIO's batched TUN writes (packetio.c). Swift code does
// not import this module: it calls the small smp_uring_* shim instead.
#include <liburing.h>
