// The few Linux calls SMPPrimitives needs that Swift cannot import: CPU
// affinity, the current CPU and thread names (they need _GNU_SOURCE, which
// Swift's Glibc module is built without), futex and membarrier (reached
// only through the variadic syscall(2)), and C thread-locals (the current
// executor, the RCU misuse checks' per-thread record). Nothing about
// packets.
#ifndef SMPNET_CSMPLINUX_H
#define SMPNET_CSMPLINUX_H

/// Pins the calling thread to CPU `cpu`. Returns 0 or an errno value.
int smp_pin_current_thread(int cpu);
/// Number of CPUs in the calling thread's affinity mask (at least 1).
int smp_allowed_cpu_count(void);
/// The CPU the calling thread is running on right now (sched_getcpu(3)),
/// or -1 if unknown. With glibc 2.35+ and rseq registration (the default)
/// a load from the thread's rseq area, otherwise the getcpu vDSO call:
/// a few nanoseconds. The answer may be stale as soon as it is returned
/// (the scheduler may migrate the thread).
int smp_current_cpu(void);
/// Names the calling thread (truncated to 15 bytes).
void smp_set_current_thread_name(const char *name);

#include <stddef.h>
#include <malloc.h>
#include <stdint.h>
/// futex(FUTEX_WAIT_PRIVATE): sleeps while `*addr == expected`, at most
/// `timeout_ns` (relative; negative = no timeout). Returns 0 when woken,
/// else an errno value (EAGAIN: the word had changed; ETIMEDOUT; EINTR).
/// Exists because `syscall` is variadic and Swift cannot import it.
int smp_futex_wait(uint32_t *addr, uint32_t expected, int64_t timeout_ns);
/// futex(FUTEX_WAKE_PRIVATE): wakes up to `count` waiters on `addr`;
/// returns how many were woken.
int smp_futex_wake(uint32_t *addr, int count);
/// The CoreExecutor running on the calling thread (an unretained pointer),
/// or NULL. A C `_Thread_local` because Swift has no thread-local storage.
void *smp_current_executor(void);
void smp_set_current_executor(void *executor);

/// Per-thread RCU bookkeeping for SMPPrimitives' misuse checks
/// (Sources/SMPPrimitives/RCU/RCUMisuseChecks.swift): registration and
/// explicit read-section depth per liburcu flavour. Written only by the
/// thread it belongs to.
///
/// One definition (linux.c), reached through an inline accessor, so that a
/// read lock in any module costs a thread-local load and store rather than
/// a call. initial-exec: the address is %fs plus a constant offset (a
/// link-time constant when the library is linked into the executable, as
/// SwiftPM does; one GOT load in a shared library, whose few bytes come
/// from glibc's static TLS surplus if it is dlopen'd).
struct smp_rcu_thread_state {
    int32_t qsbr_registered;
    int32_t qsbr_online;   /* nonzero only while registered */
    int32_t qsbr_depth;    /* explicit QSBR read sections (readLock) */
    int32_t memb_registered;
    int32_t memb_depth;
    int32_t bp_depth;
};
extern _Thread_local struct smp_rcu_thread_state smp_rcu_thread_state_slot
    __attribute__((tls_model("initial-exec")));
static inline struct smp_rcu_thread_state *smp_rcu_state(void) { return &smp_rcu_thread_state_slot; }

/// membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED): once per process,
/// before smp_membarrier. Returns 0 or an errno value.
int smp_membarrier_register(void);
/// membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED): every other running
/// thread of the process executes a full memory barrier before this
/// returns (the heavy side of an asymmetric fence). Returns 0 or errno.
int smp_membarrier(void);
/// A compiler-only barrier (the light side of an asymmetric fence).
static inline void smp_compiler_barrier(void) { __asm__ __volatile__("" ::: "memory"); }

/// AddressSanitizer's manual poisoning entry point, declared weak: it is
/// non-null exactly when ASan's runtime is in the process (a build with
/// `--sanitize=address`), null otherwise. Declared here rather than taken
/// from <sanitizer/asan_interface.h>, whose declaration is not weak (a
/// normal build would fail to link).
extern void __asan_poison_memory_region(void const volatile *addr, size_t size) __attribute__((weak));
/// Nonzero when AddressSanitizer's runtime is in the process. One load of
/// the weak symbol's address and a compare: the RCU hash table asks it
/// once per reclaimed node (never on a lookup or insert) and then frees
/// the node instead of recycling it, so ASan sees a use after the grace
/// period as a heap-use-after-free.
static inline int smp_asan_active(void) { return __asan_poison_memory_region != 0; }

/// Heap bytes in use now: glibc's mallinfo2() allocated chunks in every
/// arena (uordblks) plus mmap-ed chunks (hblkhd). Swift's Glibc module does
/// not import <malloc.h>. Walks the arenas under their locks: not for hot
/// paths. (Under AddressSanitizer its allocator answers, and reports 0.)
static inline size_t smp_heap_bytes_in_use(void) {
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}

#endif
