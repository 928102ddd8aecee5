/*
 * Diagnostic only: an LD_PRELOAD shim that sets TCP_NODELAY on every accepted socket, to measure
 * what Natter's latency would be if the server disabled Nagle's algorithm on its connections
 * (docs/benchmarks.md, "What limits the figures"). Not part of any build or test.
 *
 *   gcc -shared -fPIC -O2 -o /tmp/nodelay.so bench/tools/nodelay.c -ldl
 *   LD_PRELOAD=/tmp/nodelay.so target/release/natter-bench direct --rate 5000
 *
 * (The bench passes its environment to the server it starts; the shim is harmless to the bench.)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static int nodelay(int fd) {
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

int accept4(int s, struct sockaddr *a, socklen_t *l, int flags) {
    static int (*real)(int, struct sockaddr *, socklen_t *, int);
    if (!real) real = dlsym(RTLD_NEXT, "accept4");
    return nodelay(real(s, a, l, flags));
}

int accept(int s, struct sockaddr *a, socklen_t *l) {
    static int (*real)(int, struct sockaddr *, socklen_t *);
    if (!real) real = dlsym(RTLD_NEXT, "accept");
    return nodelay(real(s, a, l));
}
