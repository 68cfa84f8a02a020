// dnsblast: a DNS load generator that batches its own syscalls, so that on a small machine the server, not the
// load generator, is what runs out of CPU (bench/README.md "DNS: fair shares and where the time goes": dnsperf's one
// CPU was 96-100 % busy for every server, so its q/s were dnsperf's own ceiling).
//
//   dnsblast -s <server> [-p port] -d <queryfile> -l <seconds> [-c sockets] [-q outstanding]
//
// The query file is dnsperf's ("name TYPE" per line). Each of the c connected UDP sockets keeps q/c queries in
// flight: it sends with sendmmsg, reads answers with recvmmsg (up to BATCH per call) and sends one new query for
// each answer, like dnsperf's -q. A query unanswered after TIMEOUT_NS counts as lost and its slot is reused. An
// answer counts as completed when its ID matches a query in flight on that socket, whatever its rcode (as dnsperf
// counts); rcodes other than NOERROR are counted apart. Prints one JSON line:
//   {"completed":…,"lost":…,"notNoerror":…,"sendErrors":…,"seconds":…,"qps":…,"avgLatencyMs":…}
// q/s counts the answers that arrived within the -l seconds; completed also those of the drain after it (up to 1 s).
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define BATCH 64
#define MAX_SOCKETS 64
#define MAX_WINDOW 4096  // per socket: the ID's low 12 bits are the slot, the high 4 a generation
#define MAX_QUERY 300
#define TIMEOUT_NS 1000000000ull
#define DRAIN_NS 1000000000ull

typedef struct {
  uint8_t wire[MAX_QUERY];
  uint16_t len;
} query_t;

typedef struct {
  uint64_t sent_ns;  // 0: free
  uint8_t gen;
} slot_t;

typedef struct {
  int fd;
  uint32_t window, inflight;
  slot_t slots[MAX_WINDOW];
  uint32_t free_list[MAX_WINDOW], nfree;
} sock_t;

static query_t *queries;
static size_t nqueries, next_query;
static uint64_t completed, completed_in_time, lost, not_noerror, send_errors;
static double latency_sum_ns;
static uint64_t run_end;  // answers after it (the drain) count as completed, not towards q/s

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "dnsblast: %s\n", what);
  exit(2);
}

static int qtype_code(const char *t) {
  static const struct { const char *name; int code; } types[] = {
      {"A", 1}, {"NS", 2}, {"CNAME", 5}, {"SOA", 6}, {"PTR", 12}, {"MX", 15}, {"TXT", 16}, {"AAAA", 28}, {"SRV", 33}, {"ANY", 255}};
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
    if (strcasecmp(t, types[i].name) == 0) return types[i].code;
  return -1;
}

// One query in wire form, ID 0 (set per send), RD set as dnsperf sets it.
static int encode(const char *name, int qtype, query_t *q) {
  uint8_t *p = q->wire;
  memset(p, 0, 12);
  p[2] = 0x01;  // RD
  p[5] = 1;     // QDCOUNT
  size_t pos = 12;
  const char *s = name;
  while (*s) {
    const char *dot = strchr(s, '.');
    size_t n = dot ? (size_t)(dot - s) : strlen(s);
    if (n == 0 || n > 63 || pos + 1 + n + 5 > MAX_QUERY) return -1;
    p[pos++] = (uint8_t)n;
    memcpy(p + pos, s, n);
    pos += n;
    s += n;
    if (*s == '.') s++;
  }
  p[pos++] = 0;
  p[pos++] = (uint8_t)(qtype >> 8);
  p[pos++] = (uint8_t)qtype;
  p[pos++] = 0;
  p[pos++] = 1;  // IN
  q->len = (uint16_t)pos;
  return 0;
}

static void load_queries(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) die("cannot open the query file");
  size_t cap = 1024;
  queries = malloc(cap * sizeof *queries);
  char line[512], name[300], type[32];
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "%299s %31s", name, type) != 2 || name[0] == '#') continue;
    int code = qtype_code(type);
    if (code < 0) die("unknown query type in the query file");
    if (nqueries == cap) queries = realloc(queries, (cap *= 2) * sizeof *queries);
    if (encode(name, code, &queries[nqueries]) != 0) die("a name in the query file does not fit a query");
    nqueries++;
  }
  fclose(f);
  if (nqueries == 0) die("the query file has no queries");
}

// Sends up to n new queries on s (fewer when the window is full or the socket's buffer is).
static void send_some(sock_t *s, uint32_t n, uint64_t t) {
  struct mmsghdr msgs[BATCH];
  struct iovec iov[BATCH];
  uint8_t bufs[BATCH][MAX_QUERY];
  uint32_t slots[BATCH];
  while (n > 0 && s->nfree > 0) {
    uint32_t k = 0;
    while (k < BATCH && k < n && s->nfree > 0) {
      uint32_t slot = s->free_list[--s->nfree];
      slot_t *sl = &s->slots[slot];
      sl->gen = (uint8_t)((sl->gen + 1) & 0x0f);
      uint16_t id = (uint16_t)(slot | ((uint32_t)sl->gen << 12));
      const query_t *q = &queries[next_query];
      next_query = (next_query + 1) % nqueries;
      memcpy(bufs[k], q->wire, q->len);
      bufs[k][0] = (uint8_t)(id >> 8);
      bufs[k][1] = (uint8_t)id;
      iov[k].iov_base = bufs[k];
      iov[k].iov_len = q->len;
      memset(&msgs[k], 0, sizeof msgs[k]);
      msgs[k].msg_hdr.msg_iov = &iov[k];
      msgs[k].msg_hdr.msg_iovlen = 1;
      slots[k] = slot;
      sl->sent_ns = t;
      k++;
    }
    int sent = sendmmsg(s->fd, msgs, k, MSG_DONTWAIT);
    if (sent < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) send_errors++;  // e.g. ECONNREFUSED: no server
      sent = 0;
    }
    // What the kernel did not take goes back to the free list (sent again later).
    for (uint32_t i = (uint32_t)sent; i < k; i++) {
      s->slots[slots[i]].sent_ns = 0;
      s->free_list[s->nfree++] = slots[i];
    }
    s->inflight += (uint32_t)sent;
    n -= (uint32_t)sent;
    if ((uint32_t)sent < k) break;
  }
}

static uint32_t read_answers(sock_t *s, uint64_t t) {
  struct mmsghdr msgs[BATCH];
  struct iovec iov[BATCH];
  static uint8_t bufs[BATCH][1500];
  uint32_t freed = 0;
  for (;;) {
    for (int i = 0; i < BATCH; i++) {
      iov[i].iov_base = bufs[i];
      iov[i].iov_len = sizeof bufs[i];
      memset(&msgs[i], 0, sizeof msgs[i]);
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int got = recvmmsg(s->fd, msgs, BATCH, MSG_DONTWAIT, NULL);
    if (got <= 0) break;
    for (int i = 0; i < got; i++) {
      if (msgs[i].msg_len < 12) continue;
      const uint8_t *p = bufs[i];
      if (!(p[2] & 0x80)) continue;  // not an answer
      uint16_t id = (uint16_t)(p[0] << 8 | p[1]);
      uint32_t slot = id & 0x0fff;
      if (slot >= s->window) continue;
      slot_t *sl = &s->slots[slot];
      if (sl->sent_ns == 0 || sl->gen != (id >> 12)) continue;  // late answer to a slot already given up
      completed++;
      if (t <= run_end) completed_in_time++;
      if ((p[3] & 0x0f) != 0) not_noerror++;
      latency_sum_ns += (double)(t - sl->sent_ns);
      sl->sent_ns = 0;
      s->free_list[s->nfree++] = slot;
      s->inflight--;
      freed++;
    }
    if (got < BATCH) break;
  }
  return freed;
}

static void expire(sock_t *s, uint64_t t) {
  for (uint32_t i = 0; i < s->window; i++) {
    slot_t *sl = &s->slots[i];
    if (sl->sent_ns != 0 && t - sl->sent_ns > TIMEOUT_NS) {
      lost++;
      sl->sent_ns = 0;
      s->free_list[s->nfree++] = i;
      s->inflight--;
    }
  }
}

int main(int argc, char **argv) {
  const char *server = NULL, *file = NULL;
  int port = 53, seconds = 0, nsock = 4, outstanding = 200;
  int opt;
  while ((opt = getopt(argc, argv, "s:p:d:l:c:q:")) != -1) {
    switch (opt) {
      case 's': server = optarg; break;
      case 'p': port = atoi(optarg); break;
      case 'd': file = optarg; break;
      case 'l': seconds = atoi(optarg); break;
      case 'c': nsock = atoi(optarg); break;
      case 'q': outstanding = atoi(optarg); break;
      default: die("usage: dnsblast -s server [-p port] -d queryfile -l seconds [-c sockets] [-q outstanding]");
    }
  }
  if (!server || !file || seconds <= 0 || seconds > 3600) die("need -s, -d and -l (1..3600 seconds)");
  if (nsock < 1 || nsock > MAX_SOCKETS || port < 1 || port > 65535) die("-c must be 1..64 and -p 1..65535");
  if (outstanding < nsock || outstanding / nsock > MAX_WINDOW) die("-q must be at least -c and at most 4096 per socket");
  load_queries(file);

  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (inet_pton(AF_INET, server, &to.sin_addr) != 1) die("-s must be an IPv4 address");
  static sock_t socks[MAX_SOCKETS];
  struct pollfd pfds[MAX_SOCKETS];
  for (int i = 0; i < nsock; i++) {
    sock_t *s = &socks[i];
    s->fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (s->fd < 0 || connect(s->fd, (struct sockaddr *)&to, sizeof to) != 0) die("cannot open or connect a UDP socket");
    int rcv = 4 << 20;
    setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    s->window = (uint32_t)(outstanding / nsock);
    for (uint32_t k = 0; k < s->window; k++) s->free_list[s->nfree++] = s->window - 1 - k;
    pfds[i].fd = s->fd;
    pfds[i].events = POLLIN;
  }

  uint64_t start = now_ns(), end = start + (uint64_t)seconds * 1000000000ull, last_expire = start;
  run_end = end;
  for (int i = 0; i < nsock; i++) send_some(&socks[i], socks[i].window, start);
  uint64_t t = start;
  for (;;) {
    int sending = t < end;
    uint32_t inflight = 0;
    for (int i = 0; i < nsock; i++) inflight += socks[i].inflight;
    if (!sending && (inflight == 0 || t > end + DRAIN_NS)) break;
    int ready = poll(pfds, (nfds_t)nsock, 1);
    // After a refusal nothing may be in flight; do not spin on it.
    if (ready > 0 && inflight == 0 && sending) usleep(1000);
    t = now_ns();
    if (ready > 0) {
      for (int i = 0; i < nsock; i++) {
        if (!(pfds[i].revents & (POLLIN | POLLERR))) continue;  // POLLERR: a refusal, cleared by the read
        uint32_t freed = read_answers(&socks[i], t);
        if (sending) send_some(&socks[i], freed, t);
      }
    }
    if (t - last_expire > 100000000ull) {
      last_expire = t;
      for (int i = 0; i < nsock; i++) {
        expire(&socks[i], t);
        if (sending) send_some(&socks[i], socks[i].nfree, t);
      }
    }
  }
  // Queries still in flight after the drain count as lost.
  for (int i = 0; i < nsock; i++) lost += socks[i].inflight;
  double secs = (double)(end - start) / 1e9;
  printf("{\"completed\":%llu,\"lost\":%llu,\"notNoerror\":%llu,\"sendErrors\":%llu,\"seconds\":%.3f,\"qps\":%.1f,\"avgLatencyMs\":%.4f}\n",
         (unsigned long long)completed, (unsigned long long)lost, (unsigned long long)not_noerror, (unsigned long long)send_errors, secs,
         (double)completed_in_time / secs,
         completed > 0 ? latency_sum_ns / (double)completed / 1e6 : 0.0);
  return 0;
}
