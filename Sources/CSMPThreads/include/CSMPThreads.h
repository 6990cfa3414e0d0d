// The few Linux thread calls that need _GNU_SOURCE, which Swift's Glibc
// module is built without: CPU affinity and thread names.
#ifndef SMPNET_CSMPTHREADS_H
#define SMPNET_CSMPTHREADS_H
#include "CSMPNet.h"  // network calls (net.c)

/// Pins the calling thread to CPU `cpu`. Returns 0 or an errno value.
int smp_pin_current_thread(int cpu);
/// Number of CPUs in the calling thread's affinity mask (at least 1).
int smp_allowed_cpu_count(void);
/// Names the calling thread (truncated to 15 bytes).
void smp_set_current_thread_name(const char *name);

#endif
