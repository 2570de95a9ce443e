/*
 * loopback_bind.so: an LD_PRELOAD shim that keeps a process's sockets on the
 * loopback interface.
 *
 * DynamoDB Local has no option for the address it listens on: Jetty binds the
 * wildcard address (0.0.0.0 or ::). This shim wraps libc's bind(2) and
 * rewrites a wildcard address to loopback before the real bind runs:
 *
 *   AF_INET   0.0.0.0 -> 127.0.0.1
 *   AF_INET6  ::      -> ::1               when the socket is IPV6_V6ONLY,
 *                        ::ffff:127.0.0.1  otherwise (a dual-stack socket, so
 *                                          clients of 127.0.0.1 still reach it)
 *
 * Every bind of an inet socket to a fixed port is reported on stderr as one
 * line,
 *
 *   loopback-bind: bound 127.0.0.1:PORT
 *   loopback-bind: failed 127.0.0.1:PORT errno=N (message)
 *
 * which the test bed reads from the child's log to know that the server got
 * the port it was given (and not that some other process holds it).
 *
 * Built by install.sh into .run/ (git-ignored) with the machine's cc.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

static bind_fn real_bind(void) {
    static bind_fn real = NULL;
    if (real == NULL) {
        real = (bind_fn)dlsym(RTLD_NEXT, "bind");
    }
    return real;
}

/* Writes one report line to stderr with a single write(2), so that it is
 * never interleaved with the process's own output. Port 0 (an outgoing socket
 * taking an ephemeral port) is not worth a line. */
static void report(int rc, int err, const struct sockaddr *addr) {
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port;
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)addr;
        inet_ntop(AF_INET, &in4->sin_addr, ip, sizeof ip);
        port = ntohs(in4->sin_port);
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], ip, sizeof ip);
        } else {
            inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
        }
        port = ntohs(in6->sin6_port);
    }
    if (port == 0) {
        return;
    }
    char line[200];
    int n;
    if (rc == 0) {
        n = snprintf(line, sizeof line, "loopback-bind: bound %s:%u\n", ip, port);
    } else {
        n = snprintf(line, sizeof line, "loopback-bind: failed %s:%u errno=%d (%s)\n", ip, port, err,
                     strerror(err));
    }
    if (n > 0) {
        ssize_t ignored = write(STDERR_FILENO, line, (size_t)n);
        (void)ignored;
    }
}

/* Calls the real bind and reports the outcome, keeping errno intact. */
static int bind_and_report(bind_fn real, int fd, const struct sockaddr *addr, socklen_t len) {
    int rc = real(fd, addr, len);
    int err = errno;
    report(rc, err, addr);
    errno = err;
    return rc;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    bind_fn real = real_bind();
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }

    if (addr != NULL && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in in4;
        memcpy(&in4, addr, sizeof in4);
        if (in4.sin_addr.s_addr == htonl(INADDR_ANY)) {
            in4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        }
        return bind_and_report(real, fd, (const struct sockaddr *)&in4, sizeof in4);
    }

    if (addr != NULL && addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 in6;
        memcpy(&in6, addr, sizeof in6);
        if (IN6_IS_ADDR_UNSPECIFIED(&in6.sin6_addr)) {
            int v6only = 0;
            socklen_t optlen = sizeof v6only;
            if (getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &optlen) != 0) {
                v6only = 0;
            }
            if (v6only) {
                in6.sin6_addr = in6addr_loopback;
            } else {
                /* ::ffff:127.0.0.1 */
                memset(&in6.sin6_addr, 0, sizeof in6.sin6_addr);
                in6.sin6_addr.s6_addr[10] = 0xff;
                in6.sin6_addr.s6_addr[11] = 0xff;
                in6.sin6_addr.s6_addr[12] = 127;
                in6.sin6_addr.s6_addr[15] = 1;
            }
        }
        return bind_and_report(real, fd, (const struct sockaddr *)&in6, sizeof in6);
    }

    return real(fd, addr, len);
}
