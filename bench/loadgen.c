/*
 * loadgen: a closed-loop HTTP/1.1 load generator for the agentkeys benchmarks.
 *
 * N connections (Unix socket or loopback TCP) each send one GET, wait for the
 * whole response (Content-Length framing), record the latency and send the next
 * one, until the duration ends. Keep-alive by default; a server that answers
 * "connection: close" (Hypercorn after keep_alive_max_requests) or closes an idle
 * connection is reconnected transparently. With --reconnect every request uses a
 * fresh connection and its latency includes connect().
 *
 * Why C: the harness must not be the bottleneck. httpx tops out near 850 req/s
 * and a Python client near a few thousand; the raw Trio floor is ~80,000 req/s.
 *
 * With --requests FILE the requests are not one fixed GET but pre-built raw HTTP/1.1
 * requests, each sent exactly once (for single-use proofs such as K10 PoP nonces).
 * The file holds records "<decimal length>\n<bytes>". When they run out, no new
 * requests start and the measured window ends at the last response.
 *
 * Output: one JSON object on stdout. Exit status 2 on bad usage, 1 when the
 * target cannot be reached at all.
 *
 * Built by bench/_loadgen.py with `gcc -O2`; no dependencies beyond libc.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define RBUF 65536
#define MAX_CONNS 1024

struct conn {
    int fd;
    int busy;          /* a request is outstanding */
    int fresh;         /* no response read yet on this connection */
    uint64_t t0;       /* when the outstanding request started (ns) */
    size_t rlen;
    char rbuf[RBUF];
};

static struct sockaddr_storage target;
static socklen_t target_len;
static int target_family;
static char request[1024];
static size_t request_len;
static char *prebuilt;          /* --requests: the whole file */
static size_t prebuilt_len, prebuilt_pos;
static int exhausted;
static int reconnect_each;
static int ep;

static uint32_t *samples;      /* latency in ns, capped at ~4.29 s */
static size_t nsamples, max_samples;
static uint64_t completed, errors, non_2xx, reconnects, timeouts;
static int first_bad_status; /* status of the first non-2xx response, 0 if none */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die_usage(const char *msg) {
    fprintf(stderr, "loadgen: %s\n", msg);
    fprintf(stderr, "usage: loadgen (--unix PATH | --tcp HOST:PORT) [--conns N] [--duration S]"
                    " [--warmup S] [--path /p] [--reconnect] [--max-samples N]\n");
    exit(2);
}

static int open_conn(void) {
    int fd = socket(target_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&target, target_len) != 0) {
        close(fd);
        return -1;
    }
    if (target_family == AF_INET) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    int flags = fcntl(fd, F_GETFL, 0);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    return fd;
}

static int attach(struct conn *c, int index) {
    c->fd = open_conn();
    if (c->fd < 0) return -1;
    c->rlen = 0;
    c->fresh = 1;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)index};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    return 0;
}

static void detach(struct conn *c) {
    if (c->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->rlen = 0;
}

/* The next pre-built request (NULL when none are left). */
static const char *next_prebuilt(size_t *len) {
    if (prebuilt_pos >= prebuilt_len) return NULL;
    char *end = NULL;
    unsigned long n = strtoul(prebuilt + prebuilt_pos, &end, 10);
    if (end == NULL || *end != '\n' || n == 0) return NULL;
    size_t start = (size_t)(end + 1 - prebuilt);
    if (n > prebuilt_len - start) return NULL;
    prebuilt_pos = start + n;
    *len = n;
    return prebuilt + start;
}

static int send_all(int fd, const char *data, size_t len) {
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, data + off, len - off, MSG_NOSIGNAL);
        if (n > 0) { off += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            poll(&p, 1, 1000);
            continue;
        }
        return -1;
    }
    return 0;
}

/* Send the next request on c (connecting first when needed). 0 on success, -1 on
 * failure, 1 when the pre-built requests are exhausted. */
static int send_request(struct conn *c, int index, uint64_t t0) {
    const char *data = request;
    size_t len = request_len;
    if (prebuilt != NULL) {
        data = next_prebuilt(&len);
        if (data == NULL) { exhausted = 1; return 1; }
    }
    c->t0 = t0;
    if (c->fd < 0 && attach(c, index) != 0) return -1;
    if (send_all(c->fd, data, len) != 0) return -1;
    c->busy = 1;
    return 0;
}

/* Parse a complete response in c->rbuf. Returns its length, 0 if incomplete, -1 if bad.
 * Sets *status and *close_after. */
static long parse_response(struct conn *c, int *status, int *close_after) {
    char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
    if (end == NULL) return c->rlen >= RBUF ? -1 : 0;
    size_t head = (size_t)(end - c->rbuf) + 4;
    if (c->rlen < 12 || memcmp(c->rbuf, "HTTP/1.", 7) != 0) return -1;
    *status = atoi(c->rbuf + 9);
    long clen = -1;
    *close_after = 0;
    char *line = memchr(c->rbuf, '\n', head);
    while (line != NULL && line + 1 < c->rbuf + head) {
        line++;
        if (strncasecmp(line, "content-length:", 15) == 0) clen = strtol(line + 15, NULL, 10);
        else if (strncasecmp(line, "connection:", 11) == 0) {
            const char *v = line + 11;
            while (*v == ' ') v++;
            if (strncasecmp(v, "close", 5) == 0) *close_after = 1;
        }
        line = memchr(line, '\n', (size_t)(c->rbuf + head - line));
    }
    if (clen < 0) return -1; /* the benchmark servers always send Content-Length */
    if (c->rlen < head + (size_t)clen) return (head + (size_t)clen) > RBUF ? -1 : 0;
    return (long)(head + (size_t)clen);
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static double pct_us(double p) {
    if (nsamples == 0) return 0.0;
    size_t rank = (size_t)((p / 100.0) * (double)nsamples + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > nsamples) rank = nsamples;
    return samples[rank - 1] / 1000.0;
}

int main(int argc, char **argv) {
    const char *unix_path = NULL, *tcp = NULL, *path = "/bench", *requests_file = NULL;
    long conns = 1;
    double duration = 2.0, warmup = 0.25;
    max_samples = 4000000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--reconnect") == 0) { reconnect_each = 1; continue; }
        if (v == NULL) die_usage("missing value");
        if (strcmp(a, "--unix") == 0) unix_path = v;
        else if (strcmp(a, "--tcp") == 0) tcp = v;
        else if (strcmp(a, "--conns") == 0) conns = strtol(v, NULL, 10);
        else if (strcmp(a, "--duration") == 0) duration = strtod(v, NULL);
        else if (strcmp(a, "--warmup") == 0) warmup = strtod(v, NULL);
        else if (strcmp(a, "--path") == 0) path = v;
        else if (strcmp(a, "--requests") == 0) requests_file = v;
        else if (strcmp(a, "--max-samples") == 0) max_samples = (size_t)strtoul(v, NULL, 10);
        else die_usage("unknown option");
        i++;
    }
    if ((unix_path == NULL) == (tcp == NULL)) die_usage("give exactly one of --unix, --tcp");
    if (conns < 1 || conns > MAX_CONNS) die_usage("--conns must be 1..1024");
    if (duration <= 0 || duration > 600 || warmup < 0 || warmup > 60) die_usage("bad duration");
    if (max_samples < 1 || max_samples > 100000000) die_usage("bad --max-samples");
    if (strlen(path) > 200 || path[0] != '/') die_usage("bad --path");

    memset(&target, 0, sizeof target);
    if (unix_path != NULL) {
        struct sockaddr_un *sun = (struct sockaddr_un *)&target;
        if (strlen(unix_path) >= sizeof sun->sun_path) die_usage("socket path too long");
        sun->sun_family = AF_UNIX;
        strcpy(sun->sun_path, unix_path);
        target_len = sizeof *sun;
        target_family = AF_UNIX;
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&target;
        char host[64];
        const char *colon = strrchr(tcp, ':');
        if (colon == NULL || (size_t)(colon - tcp) >= sizeof host) die_usage("bad --tcp");
        memcpy(host, tcp, (size_t)(colon - tcp));
        host[colon - tcp] = 0;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)atoi(colon + 1));
        if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) die_usage("bad --tcp host");
        target_len = sizeof *sin;
        target_family = AF_INET;
    }
    request_len = (size_t)snprintf(request, sizeof request,
                                   "GET %s HTTP/1.1\r\nHost: bench\r\n%s\r\n", path,
                                   reconnect_each ? "Connection: close\r\n" : "");

    if (requests_file != NULL) {
        FILE *f = fopen(requests_file, "rb");
        if (f == NULL) die_usage("cannot open --requests file");
        if (fseek(f, 0, SEEK_END) != 0) die_usage("cannot read --requests file");
        long size = ftell(f);
        if (size <= 0 || size > (1L << 30)) die_usage("--requests file empty or too large");
        rewind(f);
        prebuilt = malloc((size_t)size + 1);
        if (prebuilt == NULL || fread(prebuilt, 1, (size_t)size, f) != (size_t)size)
            die_usage("cannot read --requests file");
        prebuilt[size] = 0;
        prebuilt_len = (size_t)size;
        fclose(f);
        long records = 0;
        size_t len;
        while (next_prebuilt(&len) != NULL) records++;
        if (prebuilt_pos != prebuilt_len) die_usage("malformed --requests file");
        if (records < conns) die_usage("fewer pre-built requests than connections");
        prebuilt_pos = 0;
    }

    samples = malloc(max_samples * sizeof *samples);
    struct conn *cs = calloc((size_t)conns, sizeof *cs);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (samples == NULL || cs == NULL || ep < 0) { perror("loadgen"); return 1; }

    uint64_t start = now_ns();
    uint64_t measure_from = start + (uint64_t)(warmup * 1e9);
    uint64_t stop_at = measure_from + (uint64_t)(duration * 1e9);
    uint64_t hard_stop = stop_at + 5000000000ull;
    uint64_t measured = 0, last_done = 0;

    for (long i = 0; i < conns; i++) {
        cs[i].fd = -1;
        int sent = send_request(&cs[i], (int)i, now_ns());
        if (sent == 1) die_usage("fewer pre-built requests than connections");
        if (sent != 0) {
            fprintf(stderr, "loadgen: cannot connect to the target: %s\n", strerror(errno));
            return 1;
        }
    }
    long outstanding = conns;
    struct epoll_event evs[256];
    while (outstanding > 0) {
        uint64_t t = now_ns();
        if (t >= hard_stop) { timeouts += (uint64_t)outstanding; break; }
        int n = epoll_wait(ep, evs, 256, 100);
        if (n < 0) { if (errno == EINTR) continue; perror("epoll_wait"); return 1; }
        for (int e = 0; e < n; e++) {
            int idx = (int)evs[e].data.u32;
            struct conn *c = &cs[idx];
            if (!c->busy || c->fd < 0) continue;
            ssize_t r = recv(c->fd, c->rbuf + c->rlen, RBUF - c->rlen, 0);
            int status = 0, close_after = 0;
            long used = 0;
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r <= 0) {
                /* Closed before a byte of this response: an idle keep-alive close; retry
                 * once on a new connection (same start time). Otherwise an error. */
                int retry = (r == 0 && c->rlen == 0 && !c->fresh && prebuilt == NULL);
                detach(c);
                if (!retry) errors++;
                reconnects++;
                c->busy = 0;
                uint64_t t0 = retry ? c->t0 : now_ns();
                if ((retry || t0 < stop_at) && send_request(c, idx, t0) == 0) continue;
                detach(c);
                outstanding--;
                continue;
            }
            c->rlen += (size_t)r;
            used = parse_response(c, &status, &close_after);
            if (used == 0) continue;
            uint64_t done = now_ns();
            c->busy = 0;
            if (used < 0) {
                errors++;
                detach(c);
                reconnects++;
            } else {
                c->fresh = 0;
                if (status < 200 || status > 299) {
                    non_2xx++;
                    if (first_bad_status == 0) first_bad_status = status;
                }
                completed++;
                if (c->t0 >= measure_from && done <= stop_at) {
                    measured++;
                    last_done = done;
                    if (nsamples < max_samples) {
                        uint64_t lat = done - c->t0;
                        samples[nsamples++] = lat > UINT32_MAX ? UINT32_MAX : (uint32_t)lat;
                    }
                }
                memmove(c->rbuf, c->rbuf + used, c->rlen - (size_t)used);
                c->rlen -= (size_t)used;
                if (close_after || reconnect_each) {
                    detach(c);
                    if (close_after && !reconnect_each) reconnects++;
                }
            }
            int sent = done < stop_at ? send_request(c, idx, now_ns()) : 1;
            if (sent == 0) continue;
            if (sent < 0) errors++;
            detach(c);
            outstanding--;
        }
    }
    for (long i = 0; i < conns; i++) detach(&cs[i]);
    qsort(samples, nsamples, sizeof *samples, cmp_u32);
    double window = duration;
    if (exhausted && last_done > measure_from) window = (double)(last_done - measure_from) / 1e9;
    printf("{\"conns\": %ld, \"duration_s\": %.3f, \"requests\": %llu, \"completed\": %llu, "
           "\"rps\": %.1f, \"p50_us\": %.2f, \"p90_us\": %.2f, \"p99_us\": %.2f, "
           "\"max_us\": %.2f, \"samples\": %zu, \"errors\": %llu, \"non_2xx\": %llu, "
           "\"reconnects\": %llu, \"timeouts\": %llu, \"reconnect_each\": %s, "
           "\"exhausted\": %s, \"first_bad_status\": %d}\n",
           conns, window, (unsigned long long)measured, (unsigned long long)completed,
           (double)measured / window, pct_us(50), pct_us(90), pct_us(99),
           nsamples ? samples[nsamples - 1] / 1000.0 : 0.0, nsamples,
           (unsigned long long)errors, (unsigned long long)non_2xx,
           (unsigned long long)reconnects, (unsigned long long)timeouts,
           reconnect_each ? "true" : "false", exhausted ? "true" : "false", first_bad_status);
    return 0;
}
