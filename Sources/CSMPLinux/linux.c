#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include "CSMPLinux.h"

int smp_pin_current_thread(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

int smp_current_cpu(void) {
    return sched_getcpu();
}

int smp_allowed_cpu_count(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
    int n = CPU_COUNT(&set);
    return n > 0 ? n : 1;
}

void smp_set_current_thread_name(const char *name) {
    char buf[16];
    strncpy(buf, name, sizeof buf - 1);
    buf[sizeof buf - 1] = 0;
    pthread_setname_np(pthread_self(), buf);
}

// ---- futex parking and the executor thread-local (CoreExecutor) ----
#include <errno.h>
#include <linux/futex.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int smp_futex_wait(uint32_t *addr, uint32_t expected, int64_t timeout_ns) {
    struct timespec ts;
    struct timespec *tp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000);
        ts.tv_nsec = (long)(timeout_ns % 1000000000);
        tp = &ts;
    }
    long r = syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, tp, NULL, 0);
    return r == 0 ? 0 : errno;
}

int smp_futex_wake(uint32_t *addr, int count) {
    return (int)syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
}

static _Thread_local void *smp_current_executor_slot;

void *smp_current_executor(void) { return smp_current_executor_slot; }
void smp_set_current_executor(void *executor) { smp_current_executor_slot = executor; }

// ---- the RCU misuse checks' per-thread record (SMPPrimitives/RCU) ----
_Thread_local struct smp_rcu_thread_state smp_rcu_thread_state_slot __attribute__((tls_model("initial-exec")));

// ---- asymmetric fences (membarrier) for the doorbell ----
#include <linux/membarrier.h>

int smp_membarrier_register(void) {
    return syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0 ? 0 : errno;
}

int smp_membarrier(void) {
    return syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0 ? 0 : errno;
}
