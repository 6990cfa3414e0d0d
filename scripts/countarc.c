// countarc.c - LD_PRELOAD shim used to check that the demux fast path makes
// no allocation and no ARC retain/release per packet.
//
// It counts malloc/calloc/realloc and swift_retain/swift_retain_n/
// swift_release/swift_release_n calls made on the benchmark's two threads
// (named "demux-input" and "demux-consumer") and prints the totals at exit.
// Run the benchmark at two sizes: the counts that do not grow with the
// number of packets are set-up costs; per-packet costs show up as the
// difference divided by the extra packets.
//
//   gcc -O2 -shared -fPIC -o /tmp/countarc.so scripts/countarc.c -ldl
//   swift build -c release
//   for n in 327680 655360; do
//     LD_PRELOAD=/tmp/countarc.so .build/release/fastdemux bench demux --impl fastpath --json --n $n
//   done
//
// (Calls inlined into the binary, e.g. swift_retain through a direct call
// rather than the PLT, would not be seen; the Swift runtime entry points are
// in libswiftCore.so, so binaries call them through the PLT.)
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
static unsigned long c_malloc[2], c_retain[2], c_release[2];
static __thread int mode; /* 0 unknown, 1 input, 2 consumer, 3 other */
static __thread int inhook;
static int which(void) {
	if (mode) return mode;
	char name[32] = {0};
	if (pthread_getname_np(pthread_self(), name, sizeof name) != 0) return 0;
	if (!strcmp(name, "demux-input")) mode = 1;
	else if (!strcmp(name, "demux-consumer")) mode = 2;
	return mode; /* stay 0 (re-check) for others: names are set after start */
}
#define COUNT(arr) do { if (!inhook) { inhook = 1; int w = which(); if (w == 1 || w == 2) __atomic_add_fetch(&arr[w-1], 1, __ATOMIC_RELAXED); inhook = 0; } } while (0)
void *malloc(size_t n) { COUNT(c_malloc); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { COUNT(c_malloc); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { COUNT(c_malloc); return __libc_realloc(p, n); }
typedef void *(*rfn)(void *);
typedef void *(*rnfn)(void *, unsigned);
typedef void (*relfn)(void *);
void *swift_retain(void *o) { static rfn real; if (!real) real = (rfn)dlsym(RTLD_NEXT, "swift_retain"); COUNT(c_retain); return real(o); }
void *swift_retain_n(void *o, unsigned n) { static rnfn real; if (!real) real = (rnfn)dlsym(RTLD_NEXT, "swift_retain_n"); COUNT(c_retain); return real(o, n); }
void swift_release(void *o) { static relfn real; if (!real) real = (relfn)dlsym(RTLD_NEXT, "swift_release"); COUNT(c_release); real(o); }
void swift_release_n(void *o, unsigned n) { typedef void (*f)(void*, unsigned); static f real; if (!real) real = (f)dlsym(RTLD_NEXT, "swift_release_n"); COUNT(c_release); real(o, n); }
__attribute__((destructor)) static void report(void) {
	fprintf(stderr, "countarc: input malloc=%lu retain=%lu release=%lu | consumer malloc=%lu retain=%lu release=%lu\n",
		c_malloc[0], c_retain[0], c_release[0], c_malloc[1], c_retain[1], c_release[1]);
}
