// TUN batching benchmark (scripts/tun-bench.sh runs it inside a network
// namespace of its own; docs/TUN.md has the figures and the choice).
//
//   tun-bench read  MODE SECONDS   the kernel sends UDP into the device as
//                                  fast as it can (sendmmsg on CPU 0); one
//                                  queue reader on CPU 1 counts packets/s
//                                  and system calls per packet.
//   tun-bench write MODE COUNT     COUNT UDP packets are written into the
//                                  device (CPU 1); a kernel UDP socket
//                                  receives them (recvmmsg on CPU 0).
//   tun-bench readv                checks whether one readv(2) returns more
//                                  than one packet (it does not).
//
// MODE: "syscall" = poll(2), then read(2)/write(2) once per packet until
// EAGAIN; "uring" = io_uring with DEPTH reads in flight (read) or DEPTH
// writes submitted per io_uring_enter (write). Built only when liburing is
// installed (-DHAVE_URING).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_URING
#include <liburing.h>
#endif

#define NAME "tbench0"
#define DEPTH 64
#define PAYLOAD 64
#define BUF 2048

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu_seconds(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6;
}

static double thread_cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

// CPU seconds of the peer thread (sender or receiver), set when it ends.
static double peer_cpu;

// Threads of this process now (io_uring's io-wq workers show up here when
// the kernel punts a request that cannot complete without blocking).
static int thread_count(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f)) if (sscanf(line, "Threads: %d", &n) == 1) break;
    if (f) fclose(f);
    return n;
}

// The measurement around one run: the clocks at its start, and at its end
// the elapsed time, this side's CPU time (the whole process but the peer
// thread, so io-wq workers would count) and the thread count.
struct run {
    double t0, thread_cpu0, cpu0;
    double elapsed, own, cpu;
    int threads;
    void *peer_result;
};

static struct run start_run(void);
static void end_run(struct run *r, pthread_t peer);

static void pin(int cpu) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}

static int tun_open(void) {
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    struct ifreq r;
    memset(&r, 0, sizeof r);
    r.ifr_flags = IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE;
    strcpy(r.ifr_name, NAME);
    if (fd < 0 || ioctl(fd, TUNSETIFF, &r) < 0) { perror("tun"); exit(1); }
    if (system("ip addr add 198.18.0.1/24 dev " NAME " && ip link set " NAME " up") != 0) exit(1);
    return fd;
}

static atomic_int stop;

static struct run start_run(void) {
    return (struct run){.t0 = now(), .thread_cpu0 = thread_cpu_seconds(), .cpu0 = cpu_seconds()};
}

// Ends the run: stops the peer thread and joins it (its result and CPU time).
static void end_run(struct run *r, pthread_t peer) {
    r->elapsed = now() - r->t0;
    r->own = thread_cpu_seconds() - r->thread_cpu0;
    r->threads = thread_count();
    atomic_store(&stop, 1);
    pthread_join(peer, &r->peer_result);
    r->cpu = cpu_seconds() - r->cpu0 - peer_cpu;
}

static int unknown_mode(const char *mode) {
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}

static long long stat_of(const char *field) {
    char path[128], line[64];
    snprintf(path, sizeof path, "/sys/class/net/" NAME "/statistics/%s", field);
    FILE *f = fopen(path, "r");
    if (!f || !fgets(line, sizeof line, f)) return -1;
    fclose(f);
    return atoll(line);
}

// The kernel side of the read benchmark: UDP to 198.18.0.2 (routed into the
// device) from 4 source ports, sendmmsg batches of 64.
static void *sender(void *arg) {
    (void)arg;
    pin(0);
    int fds[4];
    for (int i = 0; i < 4; i++) {
        fds[i] = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(40000 + i)};
        inet_pton(AF_INET, "198.18.0.1", &a.sin_addr);
        bind(fds[i], (void *)&a, sizeof a);
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(5353)};
    inet_pton(AF_INET, "198.18.0.2", &to.sin_addr);
    static char payload[PAYLOAD];
    struct iovec iov = {payload, PAYLOAD};
    struct mmsghdr m[64];
    for (int i = 0; i < 64; i++)
        m[i].msg_hdr = (struct msghdr){.msg_name = &to, .msg_namelen = sizeof to, .msg_iov = &iov, .msg_iovlen = 1};
    long long sent = 0;
    for (int k = 0; !atomic_load_explicit(&stop, memory_order_relaxed); k++) {
        int r = sendmmsg(fds[k & 3], m, 64, 0);
        if (r > 0) sent += r;
    }
    for (int i = 0; i < 4; i++) close(fds[i]);
    peer_cpu = thread_cpu_seconds();
    return (void *)(intptr_t)sent;
}

static int bench_read(const char *mode, double seconds) {
    int fd = tun_open();
    long long dropped0 = stat_of("tx_dropped");
    pin(1);
    pthread_t t;
    pthread_create(&t, NULL, sender, NULL);
    static char bufs[DEPTH][BUF];
    long long packets = 0, calls = 0, waits = 0;
    struct run run = start_run();
    double end = run.t0 + seconds;
    if (strcmp(mode, "syscall") == 0) {
        struct pollfd p = {fd, POLLIN, 0};
        while (now() < end) {
            // (a) read(2) per packet until EAGAIN, poll(2) when empty.
            for (;;) {
                calls++;
                if (read(fd, bufs[0], BUF) < 0) break;
                packets++;
            }
            waits++;
            poll(&p, 1, 10);
        }
#ifdef HAVE_URING
    } else if (strcmp(mode, "uring") == 0) {
        // (b) DEPTH reads in flight; each io_uring_enter submits the re-armed
        // reads and waits for at least one completion.
        struct io_uring ring;
        if (io_uring_queue_init(DEPTH * 2, &ring, 0) < 0) { perror("io_uring"); return 1; }
        for (int i = 0; i < DEPTH; i++) {
            struct io_uring_sqe *s = io_uring_get_sqe(&ring);
            io_uring_prep_read(s, fd, bufs[i], BUF, 0);
            s->user_data = i;
        }
        while (now() < end) {
            calls++;
            struct __kernel_timespec ts = {0, 10000000};
            struct io_uring_cqe *cqe;
            io_uring_submit_and_wait_timeout(&ring, &cqe, 1, &ts, NULL);
            unsigned head, n = 0;
            io_uring_for_each_cqe(&ring, head, cqe) {
                n++;
                if (cqe->res > 0) packets++;
                struct io_uring_sqe *s = io_uring_get_sqe(&ring);
                io_uring_prep_read(s, fd, bufs[cqe->user_data], BUF, 0);
                s->user_data = cqe->user_data;
            }
            io_uring_cq_advance(&ring, n);
        }
        io_uring_queue_exit(&ring);
#endif
    } else {
        return unknown_mode(mode);
    }
    end_run(&run, t);
    long long dropped = stat_of("tx_dropped") - dropped0;
    printf("{\"workload\":\"tun-read\",\"impl\":\"%s\",\"packets\":%lld,\"seconds\":%.3f,\"mpps\":%.4f,"
           "\"syscalls_per_packet\":%.4f,\"waits\":%lld,\"sent\":%lld,\"tx_dropped\":%lld,"
           "\"thread_cpu_seconds\":%.3f,\"side_cpu_seconds\":%.3f,\"cpu_ns_per_packet\":%.0f,\"threads\":%d}\n",
           mode, packets, run.elapsed, packets / run.elapsed / 1e6, packets ? (double)(calls + waits) / packets : 0,
           waits, (long long)(intptr_t)run.peer_result, dropped, run.own, run.cpu,
           packets ? run.cpu / packets * 1e9 : 0, run.threads);
    return 0;
}

// An IPv4/UDP packet 198.18.0.2:7000 -> 198.18.0.1:9999, UDP checksum 0.
static int make_packet(unsigned char *p, uint32_t seq) {
    int total = 20 + 8 + PAYLOAD;
    memset(p, 0, total);
    p[0] = 0x45; p[2] = total >> 8; p[3] = total & 0xff; p[6] = 0x40; p[8] = 64; p[9] = 17;
    p[12] = 198; p[13] = 18; p[14] = 0; p[15] = 2; p[16] = 198; p[17] = 18; p[18] = 0; p[19] = 1;
    uint32_t sum = 0;
    for (int i = 0; i < 20; i += 2) sum += p[i] << 8 | p[i + 1];
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
    p[10] = (~sum >> 8) & 0xff; p[11] = ~sum & 0xff;
    p[20] = 7000 >> 8; p[21] = 7000 & 0xff; p[22] = 9999 >> 8; p[23] = 9999 & 0xff;
    p[24] = (8 + PAYLOAD) >> 8; p[25] = (8 + PAYLOAD) & 0xff;
    memcpy(p + 28, &seq, 4);
    return total;
}

static int receive_fd;
static void *receiver(void *arg) {
    (void)arg;
    pin(0);
    static char bufs[64][BUF];
    struct iovec iov[64];
    struct mmsghdr m[64];
    for (int i = 0; i < 64; i++) {
        iov[i] = (struct iovec){bufs[i], BUF};
        m[i].msg_hdr = (struct msghdr){.msg_iov = &iov[i], .msg_iovlen = 1};
    }
    long long got = 0;
    struct pollfd p = {receive_fd, POLLIN, 0};
    int idle = 0;
    while (idle < 20) {   // 20 quiet 10 ms polls after the writer stopped
        int r = recvmmsg(receive_fd, m, 64, MSG_DONTWAIT, NULL);
        if (r > 0) { got += r; idle = 0; continue; }
        if (poll(&p, 1, 10) == 0 && atomic_load(&stop)) idle++;
    }
    peer_cpu = thread_cpu_seconds();
    return (void *)(intptr_t)got;
}

static int bench_write(const char *mode, long long count) {
    int fd = tun_open();
    receive_fd = socket(AF_INET, SOCK_DGRAM, 0);
    int big = 64 << 20;
    setsockopt(receive_fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(9999)};
    inet_pton(AF_INET, "198.18.0.1", &a.sin_addr);
    bind(receive_fd, (void *)&a, sizeof a);
    pin(1);
    pthread_t t;
    pthread_create(&t, NULL, receiver, NULL);
    static unsigned char pkts[DEPTH][BUF];
    int len = 0;
    for (int i = 0; i < DEPTH; i++) len = make_packet(pkts[i], i);
    long long written = 0, calls = 0, errors = 0;
    struct run run = start_run();
    if (strcmp(mode, "syscall") == 0) {
        while (written < count) {
            calls++;
            if (write(fd, pkts[written & (DEPTH - 1)], len) == len) written++; else errors++;
        }
#ifdef HAVE_URING
    } else if (strcmp(mode, "uring") == 0) {
        struct io_uring ring;
        if (io_uring_queue_init(DEPTH, &ring, 0) < 0) { perror("io_uring"); return 1; }
        while (written < count) {
            int n = count - written < DEPTH ? (int)(count - written) : DEPTH;
            for (int i = 0; i < n; i++) io_uring_prep_write(io_uring_get_sqe(&ring), fd, pkts[i], len, 0);
            calls++;
            io_uring_submit_and_wait(&ring, n);
            struct io_uring_cqe *cqe;
            unsigned head, k = 0;
            io_uring_for_each_cqe(&ring, head, cqe) {
                k++;
                if (cqe->res == len) written++; else { errors++; written++; }
            }
            io_uring_cq_advance(&ring, k);
        }
        io_uring_queue_exit(&ring);
#endif
    } else {
        return unknown_mode(mode);
    }
    end_run(&run, t);
    printf("{\"workload\":\"tun-write\",\"impl\":\"%s\",\"packets\":%lld,\"seconds\":%.3f,\"mpps\":%.4f,"
           "\"syscalls_per_packet\":%.4f,\"write_errors\":%lld,\"received\":%lld,\"rx_dropped\":%lld,"
           "\"thread_cpu_seconds\":%.3f,\"side_cpu_seconds\":%.3f,\"cpu_ns_per_packet\":%.0f,\"threads\":%d}\n",
           mode, written, run.elapsed, written / run.elapsed / 1e6, written ? (double)calls / written : 0, errors,
           (long long)(intptr_t)run.peer_result, stat_of("rx_dropped"), run.own, run.cpu,
           written ? run.cpu / written * 1e9 : 0, run.threads);
    return 0;
}

// (c) Does one readv(2) return several queued packets? tun_chr_read_iter
// copies one skb per call, so the second iovec stays empty.
static int check_readv(void) {
    int fd = tun_open();
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(5353)};
    inet_pton(AF_INET, "198.18.0.2", &to.sin_addr);
    char payload[PAYLOAD] = {0};
    for (int i = 0; i < 2; i++) sendto(s, payload, PAYLOAD, 0, (void *)&to, sizeof to);
    static char a[BUF], b[BUF];
    struct iovec iov[2] = {{a, 20 + 8 + PAYLOAD}, {b, BUF}};
    usleep(100000);
    ssize_t n = readv(fd, iov, 2);
    ssize_t second = read(fd, a, BUF);
    printf("{\"workload\":\"tun-readv\",\"first_readv_bytes\":%zd,\"packet_bytes\":%d,\"next_read_bytes\":%zd,"
           "\"batches\":%s}\n", n, 20 + 8 + PAYLOAD, second, n > 20 + 8 + PAYLOAD ? "true" : "false");
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "readv") == 0) return check_readv();
    if (argc < 4) {
        fprintf(stderr, "usage: tun-bench read|write syscall|uring SECONDS|COUNT, or tun-bench readv\n");
        return 2;
    }
    if (strcmp(argv[1], "read") == 0) return bench_read(argv[2], atof(argv[3]));
    if (strcmp(argv[1], "write") == 0) return bench_write(argv[2], atoll(argv[3]));
    return 2;
}
