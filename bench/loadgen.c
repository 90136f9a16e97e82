/*
 * loadgen: a closed-loop HTTP/1.1 load generator for the agentkeys benchmarks.
 *
 * N connections (Unix socket or loopback TCP) each send one GET (or, with
 * --body-file, one POST of that JSON body), wait for the whole response
 * (Content-Length or chunked framing), record the latency and send the next one,
 * until the duration ends. It also records the time to first byte: from sending
 * the request to the first byte of the response *body* (for chunked responses, the
 * first data byte of the first non-empty chunk), what a user of a streamed answer
 * waits for; an empty body's first byte is its end.
 *
 * Keep-alive by default; a server that answers "connection: close" (Hypercorn
 * after keep_alive_max_requests) or closes an idle connection is reconnected
 * transparently. With --reconnect every request uses a fresh connection and its
 * latency includes connect(). With --settle the warm-up starts only once every
 * connection has had its first response (at most 10 s after the start), so work
 * a server does once per new connection (caller attestation) stays out of the
 * measured window however long it takes; "settle_s" reports how long that was.
 *
 * Why C: the harness must not be the bottleneck. httpx tops out near 850 req/s
 * and a Python client near a few thousand; the raw Trio floor is ~80,000 req/s.
 *
 * With --requests FILE the requests are not one fixed GET but pre-built raw HTTP/1.1
 * requests, each sent exactly once (for single-use proofs such as K10 PoP nonces).
 * The file holds records "<decimal length>\n<bytes>". When they run out, no new
 * requests start and the measured window ends at the last response.
 *
 * Output: one JSON object on stdout (latency and time-to-first-byte percentiles,
 * body bytes and chunks of the measured responses). Exit status 2 on bad usage,
 * 1 when the target cannot be reached at all.
 *
 * Built by bench/_loadgen.py with `gcc -O2`; no dependencies beyond libc.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
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
#define MAX_BODY 8192
#define MAX_CHUNK_LINE 1024
#define SETTLE_CAP_NS 10000000000ull

/* Where the body parser of a chunked response is. */
enum chunk_state { CS_SIZE, CS_DATA, CS_DATA_END, CS_TRAILER };

struct conn {
    int fd;
    int busy;          /* a request is outstanding */
    int fresh;         /* no response read yet on this connection */
    int answered;      /* this slot has had a response (for --settle) */
    uint64_t t0;       /* when the outstanding request started (ns) */
    uint64_t t_first;  /* when the first body byte arrived (ns), 0 before */
    /* the response being read: its head is parsed once in_body is set */
    int in_body, chunked, status, close_after;
    enum chunk_state cstate;
    uint64_t remaining;  /* Content-Length bytes, or bytes of the current chunk, left */
    uint64_t received;   /* bytes of this response received so far */
    uint64_t body_bytes; /* body bytes of this response (chunk framing excluded) */
    uint64_t chunks;     /* non-empty chunks of this response */
    size_t rlen;       /* unparsed bytes in rbuf */
    char rbuf[RBUF];
};

static struct sockaddr_storage target;
static socklen_t target_len;
static int target_family;
static char request[1024 + MAX_BODY];
static size_t request_len;
static char *prebuilt;          /* --requests: the whole file */
static size_t prebuilt_len, prebuilt_pos;
static int exhausted;
static int reconnect_each;
static int settle;
static int ep;

static uint32_t *samples;      /* latency in ns, capped at ~4.29 s */
static uint32_t *ttfb_samples; /* time to the first body byte, same requests */
static size_t nsamples, max_samples;
static uint64_t completed, errors, non_2xx, reconnects, timeouts;
static uint64_t measured_body_bytes, measured_chunks;
static int first_bad_status; /* status of the first non-2xx response, 0 if none */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die_usage(const char *msg) {
    fprintf(stderr, "loadgen: %s\n", msg);
    fprintf(stderr, "usage: loadgen (--unix PATH | --tcp HOST:PORT) [--conns N] [--duration S]"
                    " [--warmup S] [--path /p] [--body-file F] [--reconnect] [--settle]"
                    " [--max-samples N]\n");
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

static void reset_response(struct conn *c) {
    c->t_first = 0;
    c->in_body = c->chunked = c->status = c->close_after = 0;
    c->cstate = CS_SIZE;
    c->remaining = c->received = c->body_bytes = c->chunks = 0;
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
    reset_response(c);
    if (c->fd < 0 && attach(c, index) != 0) return -1;
    if (send_all(c->fd, data, len) != 0) return -1;
    c->busy = 1;
    return 0;
}

/* Parse the response head at the start of c->rbuf (complete, `head` bytes long). */
static int parse_head(struct conn *c, size_t head) {
    if (head < 12 || memcmp(c->rbuf, "HTTP/1.", 7) != 0) return -1;
    c->status = atoi(c->rbuf + 9);
    long long clen = -1;
    char *line = memchr(c->rbuf, '\n', head);
    while (line != NULL && line + 1 < c->rbuf + head) {
        line++;
        if (strncasecmp(line, "content-length:", 15) == 0) clen = strtoll(line + 15, NULL, 10);
        else if (strncasecmp(line, "transfer-encoding:", 18) == 0) {
            const char *v = line + 18;
            while (*v == ' ') v++;
            if (strncasecmp(v, "chunked", 7) == 0) c->chunked = 1;
        } else if (strncasecmp(line, "connection:", 11) == 0) {
            const char *v = line + 11;
            while (*v == ' ') v++;
            if (strncasecmp(v, "close", 5) == 0) c->close_after = 1;
        }
        line = memchr(line, '\n', (size_t)(c->rbuf + head - line));
    }
    if (!c->chunked) {
        /* every server measured here frames its bodies; close-delimited ones are refused */
        if (clen < 0) return -1;
        c->remaining = (uint64_t)clen;
    }
    c->cstate = CS_SIZE;
    c->in_body = 1;
    return 0;
}

static void take_body(struct conn *c, uint64_t n, uint64_t now) {
    if (n > 0 && c->t_first == 0) c->t_first = now;
    c->body_bytes += n;
}

/* Consume what c->rbuf holds of the current response (received at `now`). Body bytes
 * are counted and dropped, so a streamed body may be longer than the buffer. Returns 1
 * when the response is complete (bytes after it stay in rbuf), 0 when more is needed,
 * -1 when it is malformed. */
static int advance(struct conn *c, uint64_t now) {
    size_t pos = 0;
    int done = 0;
    if (!c->in_body) {
        char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
        if (end == NULL) return c->rlen >= RBUF ? -1 : 0;
        pos = (size_t)(end - c->rbuf) + 4;
        if (parse_head(c, pos) != 0) return -1;
    }
    while (!done) {
        size_t avail = c->rlen - pos;
        if (!c->chunked) {
            uint64_t take = avail < c->remaining ? avail : c->remaining;
            take_body(c, take, now);
            pos += take;
            c->remaining -= take;
            if (c->remaining == 0) done = 1;
            break;
        }
        if (c->cstate == CS_SIZE || c->cstate == CS_TRAILER) {
            char *eol = memmem(c->rbuf + pos, avail, "\r\n", 2);
            if (eol == NULL) {
                if (avail > MAX_CHUNK_LINE) return -1;
                break;
            }
            size_t line = (size_t)(eol - (c->rbuf + pos));
            if (c->cstate == CS_TRAILER) {
                pos += line + 2;
                if (line == 0) done = 1; /* the empty line after the last chunk */
                continue;
            }
            char *stop = NULL;
            if (line == 0 || !isxdigit((unsigned char)c->rbuf[pos])) return -1;
            unsigned long long size = strtoull(c->rbuf + pos, &stop, 16);
            if (stop == NULL || (stop != eol && *stop != ';' && *stop != ' ')) return -1;
            pos += line + 2;
            if (size == 0) {
                c->cstate = CS_TRAILER;
            } else {
                c->remaining = size;
                c->chunks++;
                c->cstate = CS_DATA;
            }
            continue;
        }
        if (c->cstate == CS_DATA) {
            uint64_t take = avail < c->remaining ? avail : c->remaining;
            take_body(c, take, now);
            pos += take;
            c->remaining -= take;
            if (c->remaining > 0) break;
            c->cstate = CS_DATA_END;
            continue;
        }
        /* CS_DATA_END: the CRLF after a chunk's data */
        if (avail < 2) break;
        if (memcmp(c->rbuf + pos, "\r\n", 2) != 0) return -1;
        pos += 2;
        c->cstate = CS_SIZE;
    }
    memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
    c->rlen -= pos;
    if (done && c->t_first == 0) c->t_first = now; /* an empty body: its end */
    return done;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static double pct_us(const uint32_t *sorted, double p) {
    if (nsamples == 0) return 0.0;
    size_t rank = (size_t)((p / 100.0) * (double)nsamples + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > nsamples) rank = nsamples;
    return sorted[rank - 1] / 1000.0;
}

static uint32_t clamp_ns(uint64_t ns) { return ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns; }

int main(int argc, char **argv) {
    const char *unix_path = NULL, *tcp = NULL, *path = "/bench", *requests_file = NULL;
    const char *body_file = NULL;
    long conns = 1;
    double duration = 2.0, warmup = 0.25;
    max_samples = 4000000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--reconnect") == 0) { reconnect_each = 1; continue; }
        if (strcmp(a, "--settle") == 0) { settle = 1; continue; }
        if (v == NULL) die_usage("missing value");
        if (strcmp(a, "--unix") == 0) unix_path = v;
        else if (strcmp(a, "--tcp") == 0) tcp = v;
        else if (strcmp(a, "--conns") == 0) conns = strtol(v, NULL, 10);
        else if (strcmp(a, "--duration") == 0) duration = strtod(v, NULL);
        else if (strcmp(a, "--warmup") == 0) warmup = strtod(v, NULL);
        else if (strcmp(a, "--path") == 0) path = v;
        else if (strcmp(a, "--requests") == 0) requests_file = v;
        else if (strcmp(a, "--body-file") == 0) body_file = v;
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
    const char *close_header = reconnect_each ? "Connection: close\r\n" : "";
    if (body_file != NULL) {
        if (requests_file != NULL) die_usage("give at most one of --body-file, --requests");
        char body[MAX_BODY];
        FILE *f = fopen(body_file, "rb");
        if (f == NULL) die_usage("cannot open --body-file");
        size_t n = fread(body, 1, sizeof body, f);
        int more = fgetc(f) != EOF;
        fclose(f);
        if (n == 0 || more) die_usage("--body-file must hold 1..8192 bytes");
        request_len = (size_t)snprintf(request, sizeof request,
                                       "POST %s HTTP/1.1\r\nHost: bench\r\n%s"
                                       "Content-Type: application/json\r\n"
                                       "Content-Length: %zu\r\n\r\n",
                                       path, close_header, n);
        memcpy(request + request_len, body, n);
        request_len += n;
    } else {
        request_len = (size_t)snprintf(request, sizeof request,
                                       "GET %s HTTP/1.1\r\nHost: bench\r\n%s\r\n", path,
                                       close_header);
    }

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
    ttfb_samples = malloc(max_samples * sizeof *ttfb_samples);
    struct conn *cs = calloc((size_t)conns, sizeof *cs);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (samples == NULL || ttfb_samples == NULL || cs == NULL || ep < 0) {
        perror("loadgen");
        return 1;
    }

    uint64_t start = now_ns();
    uint64_t measure_from = start + (uint64_t)(warmup * 1e9);
    uint64_t stop_at = measure_from + (uint64_t)(duration * 1e9);
    uint64_t hard_stop = stop_at + 5000000000ull;
    uint64_t measured = 0, last_done = 0, settled_at = start;
    long answered = 0;
    if (settle) measure_from = stop_at = hard_stop = UINT64_MAX; /* set once settled */

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
        if (measure_from == UINT64_MAX && (answered == conns || t >= start + SETTLE_CAP_NS)) {
            settled_at = t;
            measure_from = t + (uint64_t)(warmup * 1e9);
            stop_at = measure_from + (uint64_t)(duration * 1e9);
            hard_stop = stop_at + 5000000000ull;
        }
        if (t >= hard_stop) { timeouts += (uint64_t)outstanding; break; }
        int n = epoll_wait(ep, evs, 256, 100);
        if (n < 0) { if (errno == EINTR) continue; perror("epoll_wait"); return 1; }
        for (int e = 0; e < n; e++) {
            int idx = (int)evs[e].data.u32;
            struct conn *c = &cs[idx];
            if (!c->busy || c->fd < 0) continue;
            ssize_t r = recv(c->fd, c->rbuf + c->rlen, RBUF - c->rlen, 0);
            int state = 0;
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r <= 0) {
                /* Closed before a byte of this response: an idle keep-alive close; retry
                 * once on a new connection (same start time). Otherwise an error. */
                int retry = (r == 0 && c->received == 0 && !c->fresh && prebuilt == NULL);
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
            uint64_t done = now_ns();
            c->rlen += (size_t)r;
            c->received += (uint64_t)r;
            state = advance(c, done);
            if (state == 0) continue;
            c->busy = 0;
            if (state < 0) {
                errors++;
                detach(c);
                reconnects++;
            } else {
                c->fresh = 0;
                if (!c->answered) { c->answered = 1; answered++; }
                if (c->status < 200 || c->status > 299) {
                    non_2xx++;
                    if (first_bad_status == 0) first_bad_status = c->status;
                }
                completed++;
                if (c->t0 >= measure_from && done <= stop_at) {
                    measured++;
                    last_done = done;
                    measured_body_bytes += c->body_bytes;
                    measured_chunks += c->chunks;
                    if (nsamples < max_samples) {
                        ttfb_samples[nsamples] = clamp_ns(c->t_first - c->t0);
                        samples[nsamples++] = clamp_ns(done - c->t0);
                    }
                }
                if (c->close_after || reconnect_each) {
                    detach(c);
                    if (c->close_after && !reconnect_each) reconnects++;
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
    qsort(ttfb_samples, nsamples, sizeof *ttfb_samples, cmp_u32);
    double window = duration;
    if (exhausted && last_done > measure_from) window = (double)(last_done - measure_from) / 1e9;
    printf("{\"conns\": %ld, \"duration_s\": %.3f, \"requests\": %llu, \"completed\": %llu, "
           "\"rps\": %.1f, \"p50_us\": %.2f, \"p90_us\": %.2f, \"p99_us\": %.2f, "
           "\"max_us\": %.2f, \"samples\": %zu, \"errors\": %llu, \"non_2xx\": %llu, "
           "\"reconnects\": %llu, \"timeouts\": %llu, \"reconnect_each\": %s, "
           "\"exhausted\": %s, \"first_bad_status\": %d, \"ttfb_p50_us\": %.2f, "
           "\"ttfb_p90_us\": %.2f, \"ttfb_p99_us\": %.2f, \"body_bytes\": %llu, "
           "\"chunks\": %llu, \"settle_s\": %.3f}\n",
           conns, window, (unsigned long long)measured, (unsigned long long)completed,
           (double)measured / window, pct_us(samples, 50), pct_us(samples, 90),
           pct_us(samples, 99),
           nsamples ? samples[nsamples - 1] / 1000.0 : 0.0, nsamples,
           (unsigned long long)errors, (unsigned long long)non_2xx,
           (unsigned long long)reconnects, (unsigned long long)timeouts,
           reconnect_each ? "true" : "false", exhausted ? "true" : "false", first_bad_status,
           pct_us(ttfb_samples, 50), pct_us(ttfb_samples, 90), pct_us(ttfb_samples, 99),
           (unsigned long long)measured_body_bytes, (unsigned long long)measured_chunks,
           (double)(settled_at - start) / 1e9);
    return 0;
}
