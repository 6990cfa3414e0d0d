// Linux network calls Swift's Glibc module cannot import: sendmmsg/recvmmsg
// and setns need _GNU_SOURCE, epoll is not in the Glibc module, and
// ioctl(TUNSETIFF) is variadic. Implemented in packetio.c.
//
// This header deliberately includes no system header: a system header
// included here would be compiled into this module a second time and hide
// its declarations (SOCK_DGRAM, ...) from Swift files that do not import
// CPacketIO. Only plain C types cross this interface.
#ifndef SMPNET_CPACKETIO_H
#define SMPNET_CPACKETIO_H

/// A batch of datagram buffers for sendmmsg/recvmmsg (struct mmsghdr,
/// iovec and the buffers in one allocation). Opaque; one thread at a time.
struct smp_mmsg_batch;

/// `count` messages of up to `buffer_size` bytes each; NULL if out of memory.
struct smp_mmsg_batch *smp_mmsg_batch_create(unsigned int count, unsigned int buffer_size);
void smp_mmsg_batch_destroy(struct smp_mmsg_batch *batch);
/// Message `i`'s buffer (`buffer_size` bytes, 16-byte aligned).
void *smp_mmsg_batch_buffer(struct smp_mmsg_batch *batch, unsigned int i);
/// Sending: message `i` carries `length` bytes of its buffer to `address`
/// (a struct sockaddr of `address_length` bytes, which must stay valid).
void smp_mmsg_batch_set_message(struct smp_mmsg_batch *batch, unsigned int i, unsigned int length,
                                const void *address, unsigned int address_length);
/// Receiving: the length of message `i` after smp_mmsg_receive.
unsigned int smp_mmsg_batch_received_length(const struct smp_mmsg_batch *batch, unsigned int i);
/// sendmmsg(2) of messages first..<first+count. Returns the number sent, or
/// -1 with errno set.
int smp_mmsg_send(int fd, struct smp_mmsg_batch *batch, unsigned int first, unsigned int count);
/// recvmmsg(2) into messages 0..<count (whole buffers), no timeout, with
/// `dontwait` selecting MSG_DONTWAIT. Returns the number received, or -1
/// with errno set.
int smp_mmsg_receive(int fd, struct smp_mmsg_batch *batch, unsigned int count, int dontwait);
/// recvmmsg(2, MSG_DONTWAIT) into messages 0..<count (whole buffers),
/// keeping each message's source address in the batch, for
/// smp_mmsg_reply. Returns the number received, or -1 with errno set.
int smp_mmsg_receive_from(int fd, struct smp_mmsg_batch *batch, unsigned int count);
/// sendmmsg(2) of messages first..<first+count of the last
/// smp_mmsg_receive_from back to their sources, each with the bytes it
/// received (an echo; the buffers may have been changed in place).
/// Returns the number sent, or -1 with errno set.
int smp_mmsg_reply(int fd, struct smp_mmsg_batch *batch, unsigned int first, unsigned int count);

/// epoll_create1(EPOLL_CLOEXEC). Returns the descriptor or -1 (errno).
int smp_epoll_create(void);
/// Adds `fd` for level-triggered EPOLLIN with `token` as its data. 0 or -1 (errno).
int smp_epoll_add_readable(int epfd, int fd, unsigned int token);
/// epoll_wait; writes the tokens of up to `max` ready descriptors. Returns
/// their number, 0 on timeout, or -1 (errno).
int smp_epoll_wait_tokens(int epfd, unsigned int *tokens, int max, int timeout_ms);

/// Adds a stream socket `fd` edge-triggered for EPOLLIN | EPOLLOUT |
/// EPOLLRDHUP with `token` as its data: reported when it becomes readable
/// or writable (after a write that hit EAGAIN) or the peer shut down; the
/// owner reads and writes until EAGAIN before it waits again. 0 or -1 (errno).
int smp_epoll_add_stream(int epfd, int fd, unsigned int token);

/// Adds `fd` for EPOLLIN | EPOLLONESHOT with `token` as its data: reported
/// once, then disarmed until smp_epoll_rearm_oneshot. 0 or -1 (errno).
int smp_epoll_add_oneshot(int epfd, int fd, unsigned int token);
/// Re-arms a one-shot registration (EPOLL_CTL_MOD). The kernel looks at the
/// descriptor's readiness during the call, so input that arrived before it
/// is reported too. 0 or -1 (errno).
int smp_epoll_rearm_oneshot(int epfd, int fd, unsigned int token);

/// Opens /dev/net/tun and attaches it to TUN interface `name` (created if
/// absent; NULL lets the kernel pick tunN) with IFF_TUN | IFF_NO_PI, plus
/// IFF_MULTI_QUEUE if `multi_queue` (each call then attaches one more
/// queue), plus IFF_VNET_HDR if `vnet_header` (then TUNSETVNETHDRSZ of
/// sizeof(struct virtio_net_hdr) = 10 and TUNSETOFFLOAD 0: every read and
/// write carries a 10-byte header before the packet). Writes the interface
/// name (16 bytes incl. NUL) to `actual_name` if not NULL. Returns the file
/// descriptor, or -errno.
int smp_tun_open(const char *name, char *actual_name, int nonblocking, int multi_queue, int vnet_header);
/// readv(2) of two pieces. Returns the bytes read or -1 (errno).
long smp_readv2(int fd, void *first, unsigned long first_length, void *second, unsigned long second_length);
/// writev(2) of two pieces. Returns the bytes written or -1 (errno).
long smp_writev2(int fd, const void *first, unsigned long first_length, const void *second,
                 unsigned long second_length);
/// sizeof(struct virtio_net_hdr) (10).
unsigned int smp_virtio_net_hdr_size(void);
/// Writes a struct virtio_net_hdr (10 bytes) to `header` for a TCP
/// super-segment: NEEDS_CSUM from the TCP header (csum_start = the IP
/// header length, csum_offset 16), gso_type TCPV4 or TCPV6, gso_size
/// `segment_size`, hdr_len the IP and TCP headers.
void smp_virtio_net_hdr_tcp(void *header, unsigned int ip_header_length, unsigned int tcp_header_length,
                            unsigned int segment_size, int ipv6);
/// The driver and bus names ethtool reports for interface `name` in the
/// calling thread's network namespace (ETHTOOL_GDRVINFO; TUN devices say
/// driver "tun", bus "tun" or "tap"), each up to 32 bytes incl. NUL.
/// Returns 0, or -errno (-ENODEV: no such interface).
int smp_netdev_driver(const char *name, char *driver, char *bus);
/// An io_uring instance for batched writes (liburing). Opaque; used by one
/// thread at a time.
struct smp_uring;
/// A ring of `entries` submission slots; NULL with errno set if io_uring
/// is unavailable (old kernel, kernel.io_uring_disabled, a seccomp filter).
struct smp_uring *smp_uring_create(unsigned int entries);
void smp_uring_destroy(struct smp_uring *ring);
/// Writes buffers[i] (lengths[i] bytes) to `fd` for i in 0..<count, queued
/// in that order and submitted with one io_uring_enter that also waits for
/// every completion; results[i] is then the bytes written or -errno.
/// `count` is at most the ring's entries. Returns the number of
/// io_uring_enter calls made (≥ 1), or -errno if one failed; writes whose
/// completion was not seen then report -EIO (they may have happened).
int smp_uring_write_batch(struct smp_uring *ring, int fd, const void *const *buffers,
                          const unsigned int *lengths, int *results, unsigned int count);
/// smp_uring_write_batch with `prefix_length` bytes of `prefix` written
/// before each buffer (one writev of two pieces each; results[i] counts
/// both). A `prefix_length` of 0 is smp_uring_write_batch.
int smp_uring_write_batch_prefixed(struct smp_uring *ring, int fd, const void *prefix, unsigned int prefix_length,
                                   const void *const *buffers, const unsigned int *lengths, int *results,
                                   unsigned int count);

/// Moves the calling thread (only) into the network namespace at `path`
/// (e.g. /run/netns/NAME). Needs CAP_SYS_ADMIN. Returns 0 or -errno.
int smp_enter_netns(const char *path);

#endif
