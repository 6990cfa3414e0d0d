// Linux network calls Swift's Glibc module cannot import (see CPacketIO.h).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/ethtool.h>
#include <linux/if.h>
#include <linux/sockios.h>
#include <liburing.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <sys/uio.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include "CPacketIO.h"

struct smp_mmsg_batch {
    unsigned int count, buffer_size;
    struct mmsghdr *msgs;
    struct iovec *iov;
    unsigned char *buffers;
    /// The source of each message of smp_mmsg_receive_from (what
    /// smp_mmsg_reply sends back to).
    struct sockaddr_storage *names;
};

struct smp_mmsg_batch *smp_mmsg_batch_create(unsigned int count, unsigned int buffer_size) {
    struct smp_mmsg_batch *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->count = count;
    b->buffer_size = (buffer_size + 15u) & ~15u;
    b->msgs = calloc(count, sizeof *b->msgs);
    b->iov = calloc(count, sizeof *b->iov);
    b->names = calloc(count, sizeof *b->names);
    if (posix_memalign((void **)&b->buffers, 64, (size_t)count * b->buffer_size) != 0) b->buffers = NULL;
    if (!b->msgs || !b->iov || !b->names || !b->buffers) {
        smp_mmsg_batch_destroy(b);
        return NULL;
    }
    memset(b->buffers, 0, (size_t)count * b->buffer_size);
    for (unsigned int i = 0; i < count; i++) {
        b->iov[i].iov_base = b->buffers + (size_t)i * b->buffer_size;
        b->iov[i].iov_len = buffer_size;
        b->msgs[i].msg_hdr.msg_iov = &b->iov[i];
        b->msgs[i].msg_hdr.msg_iovlen = 1;
    }
    return b;
}

void smp_mmsg_batch_destroy(struct smp_mmsg_batch *b) {
    if (!b) return;
    free(b->msgs);
    free(b->iov);
    free(b->names);
    free(b->buffers);
    free(b);
}

void *smp_mmsg_batch_buffer(struct smp_mmsg_batch *b, unsigned int i) {
    return b->buffers + (size_t)i * b->buffer_size;
}

void smp_mmsg_batch_set_message(struct smp_mmsg_batch *b, unsigned int i, unsigned int length,
                                const void *address, unsigned int address_length) {
    b->iov[i].iov_len = length;
    b->msgs[i].msg_hdr.msg_name = (void *)address;
    b->msgs[i].msg_hdr.msg_namelen = address_length;
}

unsigned int smp_mmsg_batch_received_length(const struct smp_mmsg_batch *b, unsigned int i) {
    return b->msgs[i].msg_len;
}

int smp_mmsg_send(int fd, struct smp_mmsg_batch *b, unsigned int first, unsigned int count) {
    return sendmmsg(fd, b->msgs + first, count, 0);
}

int smp_mmsg_receive(int fd, struct smp_mmsg_batch *b, unsigned int count, int dontwait) {
    for (unsigned int i = 0; i < count; i++) {
        b->iov[i].iov_len = b->buffer_size;
        b->msgs[i].msg_hdr.msg_name = NULL;
        b->msgs[i].msg_hdr.msg_namelen = 0;
    }
    return recvmmsg(fd, b->msgs, count, dontwait ? MSG_DONTWAIT : 0, NULL);
}

int smp_mmsg_receive_from(int fd, struct smp_mmsg_batch *b, unsigned int count) {
    for (unsigned int i = 0; i < count; i++) {
        b->iov[i].iov_len = b->buffer_size;
        b->msgs[i].msg_hdr.msg_name = &b->names[i];
        b->msgs[i].msg_hdr.msg_namelen = sizeof b->names[i];
    }
    return recvmmsg(fd, b->msgs, count, MSG_DONTWAIT, NULL);
}

int smp_mmsg_reply(int fd, struct smp_mmsg_batch *b, unsigned int first, unsigned int count) {
    // recvmmsg left msg_name pointing at names[i] and msg_namelen at the
    // source's length; only the lengths to send change.
    for (unsigned int i = first; i < first + count; i++) b->iov[i].iov_len = b->msgs[i].msg_len;
    return sendmmsg(fd, b->msgs + first, count, 0);
}

int smp_epoll_create(void) {
    return epoll_create1(EPOLL_CLOEXEC);
}

int smp_epoll_add_readable(int epfd, int fd, unsigned int token) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.u32 = token;
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

int smp_epoll_wait_tokens(int epfd, unsigned int *tokens, int max, int timeout_ms) {
    struct epoll_event ev[256];
    if (max > 256) max = 256;
    int n = epoll_wait(epfd, ev, max, timeout_ms);
    for (int i = 0; i < n; i++) tokens[i] = ev[i].data.u32;
    return n;
}

int smp_epoll_add_stream(int epfd, int fd, unsigned int token) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u32 = token;
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

static int epoll_oneshot(int epfd, int op, int fd, unsigned int token) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN | EPOLLONESHOT;
    ev.data.u32 = token;
    return epoll_ctl(epfd, op, fd, &ev);
}

int smp_epoll_add_oneshot(int epfd, int fd, unsigned int token) {
    return epoll_oneshot(epfd, EPOLL_CTL_ADD, fd, token);
}

int smp_epoll_rearm_oneshot(int epfd, int fd, unsigned int token) {
    return epoll_oneshot(epfd, EPOLL_CTL_MOD, fd, token);
}

int smp_tun_open(const char *name, char *actual_name, int nonblocking, int multi_queue, int vnet_header) {
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | (nonblocking ? O_NONBLOCK : 0));
    if (fd < 0) return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    // IFF_NO_PI: every read/write is exactly one IP packet, no 4-byte header.
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (multi_queue ? IFF_MULTI_QUEUE : 0) | (vnet_header ? IFF_VNET_HDR : 0);
    if (name) strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (vnet_header) {
        // The plain 10-byte struct virtio_net_hdr (no num_buffers: that
        // field belongs to mergeable receive buffers, which a TUN read
        // never uses). Offloads 0: the kernel segments and checksums what
        // it sends us (tun_net_fix_features keeps TSO/CSUM off), so reads
        // stay plain packets; writes with gso_type set are accepted anyway
        // (tun_get_user hands every header to virtio_net_hdr_to_skb).
        int size = (int)sizeof(struct virtio_net_hdr);
        if (ioctl(fd, TUNSETVNETHDRSZ, &size) < 0 || ioctl(fd, TUNSETOFFLOAD, 0UL) < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
    }
    if (actual_name) {
        memcpy(actual_name, ifr.ifr_name, IFNAMSIZ);
        actual_name[IFNAMSIZ - 1] = 0;
    }
    return fd;
}

int smp_netdev_driver(const char *name, char *driver, char *bus) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -errno;
    struct ethtool_drvinfo info;
    memset(&info, 0, sizeof info);
    info.cmd = ETHTOOL_GDRVINFO;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    ifr.ifr_data = (void *)&info;
    int rc = ioctl(s, SIOCETHTOOL, &ifr);
    int e = errno;
    close(s);
    if (rc < 0) return -e;
    memcpy(driver, info.driver, 32);
    driver[31] = 0;
    memcpy(bus, info.bus_info, 32);
    bus[31] = 0;
    return 0;
}

struct smp_uring {
    struct io_uring ring;
    unsigned int entries;
    /// Two iovecs per entry (prefix, packet) for prefixed writes: they must
    /// stay valid until the submission is consumed.
    struct iovec *iov;
};

struct smp_uring *smp_uring_create(unsigned int entries) {
    struct smp_uring *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    int rc = io_uring_queue_init(entries, &r->ring, 0);
    if (rc < 0) {
        free(r);
        errno = -rc;
        return NULL;
    }
    r->entries = entries;
    r->iov = calloc((size_t)entries * 2, sizeof *r->iov);
    if (!r->iov) {
        io_uring_queue_exit(&r->ring);
        free(r);
        errno = ENOMEM;
        return NULL;
    }
    return r;
}

void smp_uring_destroy(struct smp_uring *r) {
    if (!r) return;
    io_uring_queue_exit(&r->ring);
    free(r->iov);
    free(r);
}

int smp_uring_write_batch(struct smp_uring *r, int fd, const void *const *buffers,
                          const unsigned int *lengths, int *results, unsigned int count) {
    return smp_uring_write_batch_prefixed(r, fd, NULL, 0, buffers, lengths, results, count);
}

int smp_uring_write_batch_prefixed(struct smp_uring *r, int fd, const void *prefix, unsigned int prefix_length,
                                   const void *const *buffers, const unsigned int *lengths, int *results,
                                   unsigned int count) {
    if (count == 0) return 0;
    if (count > r->entries) return -EINVAL;
    for (unsigned int i = 0; i < count; i++) {
        results[i] = -EIO;   // until its completion says otherwise
        struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
        // Offset 0: a TUN descriptor is a stream (no file position).
        if (prefix_length > 0) {
            struct iovec *v = r->iov + 2 * i;
            v[0].iov_base = (void *)prefix;
            v[0].iov_len = prefix_length;
            v[1].iov_base = (void *)buffers[i];
            v[1].iov_len = lengths[i];
            io_uring_prep_writev(sqe, fd, v, 2, 0);
        } else {
            io_uring_prep_write(sqe, fd, buffers[i], lengths[i], 0);
        }
        io_uring_sqe_set_data64(sqe, i);
    }
    int enters = 0;
    int rc;
    do {
        rc = io_uring_submit_and_wait(&r->ring, count);
        enters++;
    } while (rc == -EINTR);
    if (rc < 0) return rc;
    // submit_and_wait returns once `count` completions are posted; a short
    // submission (not expected: the ring has room for `count`) or a wait
    // cut short is finished here.
    unsigned int seen = 0;
    while (seen < count) {
        struct io_uring_cqe *cqe;
        unsigned int head, n = 0;
        io_uring_for_each_cqe(&r->ring, head, cqe) {
            results[io_uring_cqe_get_data64(cqe)] = cqe->res;
            n++;
        }
        io_uring_cq_advance(&r->ring, n);
        seen += n;
        if (seen < count) {
            do {
                rc = io_uring_submit_and_wait(&r->ring, 1);
                enters++;
            } while (rc == -EINTR);
            if (rc < 0) return rc;
        }
    }
    return enters;
}

int smp_enter_netns(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int rc = setns(fd, CLONE_NEWNET);
    int e = errno;
    close(fd);
    return rc == 0 ? 0 : -e;
}

long smp_readv2(int fd, void *first, unsigned long first_length, void *second, unsigned long second_length) {
    struct iovec v[2] = {{first, first_length}, {second, second_length}};
    return readv(fd, v, 2);
}

long smp_writev2(int fd, const void *first, unsigned long first_length, const void *second,
                 unsigned long second_length) {
    struct iovec v[2] = {{(void *)first, first_length}, {(void *)second, second_length}};
    return writev(fd, v, 2);
}

unsigned int smp_virtio_net_hdr_size(void) { return (unsigned int)sizeof(struct virtio_net_hdr); }

void smp_virtio_net_hdr_tcp(void *header, unsigned int ip_header_length, unsigned int tcp_header_length,
                            unsigned int segment_size, int ipv6) {
    struct virtio_net_hdr h;
    memset(&h, 0, sizeof h);
    // Little-endian fields: a TUN device without TUNSETVNETLE/BE uses the
    // host's order (tun16_to_cpu on a little-endian machine).
    h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    h.gso_type = ipv6 ? VIRTIO_NET_HDR_GSO_TCPV6 : VIRTIO_NET_HDR_GSO_TCPV4;
    h.hdr_len = (unsigned short)(ip_header_length + tcp_header_length);
    h.gso_size = (unsigned short)segment_size;
    h.csum_start = (unsigned short)ip_header_length;
    h.csum_offset = 16;   // offsetof(struct tcphdr, check)
    memcpy(header, &h, sizeof h);
}
