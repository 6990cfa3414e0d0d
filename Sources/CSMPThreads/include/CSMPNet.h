// Linux network calls Swift's Glibc module cannot import: sendmmsg/recvmmsg
// need _GNU_SOURCE, ioctl(TUNSETIFF) is variadic, setns needs _GNU_SOURCE.
// Implemented in net.c.
#ifndef SMPNET_CSMPNET_H
#define SMPNET_CSMPNET_H

#include <sys/epoll.h>
#include <sys/socket.h>

/// struct mmsghdr (sendmmsg/recvmmsg need _GNU_SOURCE); same layout.
struct smp_mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
};
/// sendmmsg(2). Returns the number sent, or -1 with errno set.
int smp_sendmmsg(int fd, struct smp_mmsghdr *msgs, unsigned int count, int flags);
/// recvmmsg(2) without a timeout. Returns the number received, or -1 with errno set.
int smp_recvmmsg(int fd, struct smp_mmsghdr *msgs, unsigned int count, int flags);
/// Opens /dev/net/tun and attaches it to TUN interface `name` (created if
/// absent; NULL lets the kernel pick tunN) with IFF_TUN | IFF_NO_PI.
/// Writes the interface name (16 bytes incl. NUL) to `actual_name` if not
/// NULL. Returns the file descriptor, or -errno.
int smp_tun_open(const char *name, char *actual_name, int nonblocking);
/// Moves the calling thread (only) into the network namespace at `path`
/// (e.g. /run/netns/NAME). Needs CAP_SYS_ADMIN. Returns 0 or -errno.
int smp_enter_netns(const char *path);

#endif
