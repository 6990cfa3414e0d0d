// The few Linux calls that need _GNU_SOURCE (or are variadic), which Swift's Glibc
// module cannot import: CPU affinity, thread names, sendmmsg/recvmmsg, TUN open.
#ifndef SMPNET_CSMPTHREADS_H
#define SMPNET_CSMPTHREADS_H

/// Pins the calling thread to CPU `cpu`. Returns 0 or an errno value.
int smp_pin_current_thread(int cpu);
/// Number of CPUs in the calling thread's affinity mask (at least 1).
int smp_allowed_cpu_count(void);
/// Names the calling thread (truncated to 15 bytes).
void smp_set_current_thread_name(const char *name);

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
/// absent; NULL or "" lets the kernel pick tunN) with IFF_TUN | IFF_NO_PI.
/// Writes the interface name (16 bytes incl. NUL) to `actual_name` if not
/// NULL. Returns the file descriptor, or -errno.
int smp_tun_open(const char *name, char *actual_name, int nonblocking);
/// Moves the calling thread (only) into the network namespace at `path`
/// (e.g. /run/netns/NAME). Needs CAP_SYS_ADMIN. Returns 0 or -errno.
int smp_enter_netns(const char *path);

#endif
