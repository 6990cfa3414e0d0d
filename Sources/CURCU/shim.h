// The liburcu shim: only what Swift cannot import by itself.
//
// liburcu is linked dynamically and _LGPL_SOURCE is NOT defined, so every
// liburcu call is a call into the shared library (see README, Licensing).
// The three flavours' headers are included (QSBR, memb, bp); their
// name-mapping macros are never used from Swift: Swift calls the
// flavour-qualified symbols (urcu_qsbr_read_lock, urcu_memb_synchronize_rcu,
// urcu_bp_barrier, ...) directly. The misuse checks' per-thread record is a
// thread-local defined in C, so it lives in CSMPLinux (this module is a
// system library: headers only).
#ifndef SMPNET_CURCU_SHIM_H
#define SMPNET_CURCU_SHIM_H

#include <urcu/urcu-qsbr.h>
#include <urcu/urcu-memb.h>
#include <urcu/urcu-bp.h>
#include <urcu/rculfhash.h>
#include <urcu/wfcqueue.h>

/// caa_cpu_relax() is a macro ("rep; nop" on x86, PAUSE): a spin-wait hint.
static inline void curcu_cpu_relax(void) { caa_cpu_relax(); }

/* call-rcu.h and flavor.h are guarded by one include guard each, so only
 * the first flavour included (QSBR) got its call_rcu, barrier and flavour
 * descriptor declared; these are memb's and bp's (liburcu-memb.so and
 * liburcu-bp.so define them). */
void urcu_memb_call_rcu(struct rcu_head *head, void (*func)(struct rcu_head *head));
void urcu_memb_barrier(void);
extern const struct rcu_flavor_struct urcu_memb_flavor;
void urcu_bp_call_rcu(struct rcu_head *head, void (*func)(struct rcu_head *head));
void urcu_bp_barrier(void);
extern const struct rcu_flavor_struct urcu_bp_flavor;
/* For cds_lfht_new_flavor(): Swift cannot take the address of a C const. */
static inline const struct rcu_flavor_struct *curcu_qsbr_flavor(void) { return &urcu_qsbr_flavor; }

/* ThreadSanitizer cannot see liburcu's grace periods (uninstrumented
 * barriers and futexes). Readers "release" a per-flavour address (the
 * flavour's descriptor in liburcu, never written through here) before they
 * announce a quiescent state; reclaimers "acquire" it once a grace period
 * is over. The symbols are weak: without TSan they are null, so each call
 * is a not-taken branch and never a memory write. */
extern void __tsan_acquire(void *addr) __attribute__((weak));
extern void __tsan_release(void *addr) __attribute__((weak));
static inline void curcu_qsbr_tsan_release(void) { if (__tsan_release) __tsan_release((void *)&urcu_qsbr_flavor); }
static inline void curcu_qsbr_tsan_acquire(void) { if (__tsan_acquire) __tsan_acquire((void *)&urcu_qsbr_flavor); }
static inline void curcu_memb_tsan_release(void) { if (__tsan_release) __tsan_release((void *)&urcu_memb_flavor); }
static inline void curcu_memb_tsan_acquire(void) { if (__tsan_acquire) __tsan_acquire((void *)&urcu_memb_flavor); }
static inline void curcu_bp_tsan_release(void) { if (__tsan_release) __tsan_release((void *)&urcu_bp_flavor); }
static inline void curcu_bp_tsan_acquire(void) { if (__tsan_acquire) __tsan_acquire((void *)&urcu_bp_flavor); }
/* The same for one object published through uninstrumented code (cds_lfht). */
static inline void curcu_tsan_release_object(const void *addr) { if (__tsan_release) __tsan_release((void *)addr); }
static inline void curcu_tsan_acquire_object(const void *addr) { if (__tsan_acquire) __tsan_acquire((void *)addr); }

#endif
