// The liburcu shim: only what Swift cannot import by itself.
//
// liburcu is linked dynamically and _LGPL_SOURCE is NOT defined, so every
// liburcu call is a call into the shared library (see README, Licensing).
// Both flavours' headers are included; their name-mapping macros are never
// used from Swift: Swift calls the flavour-qualified symbols
// (urcu_qsbr_read_lock, urcu_memb_synchronize_rcu, ...) directly.
#ifndef SMPNET_CURCU_SHIM_H
#define SMPNET_CURCU_SHIM_H

#include <urcu/urcu-qsbr.h>
#include <urcu/urcu-memb.h>
#include <urcu/rculfhash.h>
#include <urcu/wfcqueue.h>

/// caa_cpu_relax() is a macro ("rep; nop" on x86, PAUSE): a spin-wait hint.
static inline void curcu_cpu_relax(void) { caa_cpu_relax(); }

#endif
