// cref: the bench's C reference contender. One TUN opened the way tundra opens it (IFF_VNET_HDR + TUNSETOFFLOAD
// CSUM|TSO4|TSO6|USO4|USO6), IPv4 DNAT of ClusterIP:port to endpoints with a small conntrack hash, RFC 1624
// incremental checksums, one read() and one write() per packet, one thread, no JavaScript. Every other packet is
// written back unchanged (the node's routing sends it on). It is a yardstick, not a dataplane: no expiry, no
// validation beyond what the rewrite needs, IPv4 only.
//
//   cref -n <tun> [-s] [-q N] RULE...      RULE = tcp|udp:<vip>:<port>=<ip>:<port>[,<ip>:<port>...]
//   -s: print counters to stderr on SIGTERM/SIGINT
//   -q N: N TUN queues (IFF_MULTI_QUEUE), one thread each, one conntrack behind a spinlock held per packet's NAT
//         step (tundra's packet threads share theirs the same way): the TUN design's ceiling with N threads
//
// Build: gcc -O2 -pthread -o bench/tools/build/cref bench/tools/cref.c (scripts/bootstrap, or the bench when missing).
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif

// struct virtio_net_hdr (10 bytes, no num_buffers), include/uapi/linux/virtio_net.h
#define VNET_LEN 10
#define VNET_FLAGS 0
#define VNET_F_NEEDS_CSUM 1
#define IP_PROTO 9
#define IP_CSUM 10
#define IP_SRC 12
#define IP_DST 16
#define IP_FRAG 6
#define PROTO_TCP 6
#define PROTO_UDP 17
#define TCP_CSUM 16
#define UDP_CSUM 6
#define BUF_LEN (65536 + VNET_LEN)

#define MAX_RULES 64
#define MAX_EPS 16
struct ep { uint32_t ip; uint16_t port; };  // network byte order
struct rule { uint8_t proto; uint32_t vip; uint16_t vport; int n; struct ep eps[MAX_EPS]; };
static struct rule rules[MAX_RULES];
static int nrules;

// Conntrack: open addressing, 2^20 slots, one slot per direction. A slot's key is the packet's 5-tuple as it
// arrives; its value says which address:port to rewrite (dst for the original direction, src for replies).
#define CT_BITS 20
#define CT_SIZE (1u << CT_BITS)
#define CT_PROBE 32
struct ct { uint32_t saddr, daddr; uint16_t sport, dport; uint8_t proto, used, rewrite_dst, pad; uint32_t ip; uint16_t port; };
static struct ct *ct;

// counters per thread, summed at exit
struct counters { uint64_t pkts, dnat, snat, new_, pass, full, werr; };
static pthread_spinlock_t ct_lock;
static int locked;  // more than one queue: the conntrack is shared
static inline void ct_lock_take(void) { if (locked) pthread_spin_lock(&ct_lock); }
static inline void ct_lock_give(void) { if (locked) pthread_spin_unlock(&ct_lock); }
static volatile sig_atomic_t stop;
static void on_signal(int s) { (void)s; stop = 1; }

static uint32_t hash5(uint32_t s, uint32_t d, uint16_t sp, uint16_t dp, uint8_t p) {
  uint64_t h = ((uint64_t)s * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)d * 0xC2B2AE3D27D4EB4Full) ^ (((uint64_t)sp << 24 | (uint64_t)dp << 8 | p) * 0x165667B19E3779F9ull);
  return (uint32_t)(h >> (64 - CT_BITS));
}

static struct ct *ct_find(uint32_t s, uint32_t d, uint16_t sp, uint16_t dp, uint8_t p) {
  uint32_t i = hash5(s, d, sp, dp, p);
  for (int k = 0; k < CT_PROBE; k++, i = (i + 1) & (CT_SIZE - 1)) {
    struct ct *e = &ct[i];
    if (!e->used) return NULL;
    if (e->saddr == s && e->daddr == d && e->sport == sp && e->dport == dp && e->proto == p) return e;
  }
  return NULL;
}

static struct ct *ct_slot(uint32_t s, uint32_t d, uint16_t sp, uint16_t dp, uint8_t p) {
  uint32_t i = hash5(s, d, sp, dp, p);
  for (int k = 0; k < CT_PROBE; k++, i = (i + 1) & (CT_SIZE - 1))
    if (!ct[i].used) return &ct[i];
  return NULL;
}

// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), 16-bit words in network order
static inline uint32_t fold(uint32_t s) { s = (s & 0xffff) + (s >> 16); return (s & 0xffff) + (s >> 16); }
static inline void csum_full(uint8_t *f, uint32_t old32, uint32_t new32, uint16_t old16, uint16_t new16, int with_port) {
  uint16_t hc; memcpy(&hc, f, 2);
  uint32_t s = (uint16_t)~hc;
  s += (uint16_t)~(old32 & 0xffff) + (uint16_t)~(old32 >> 16) + (new32 & 0xffff) + (new32 >> 16);
  if (with_port) s += (uint16_t)~old16 + new16;
  hc = (uint16_t)~fold(s);
  memcpy(f, &hc, 2);
}
// With VIRTIO_NET_HDR_F_NEEDS_CSUM the field holds the pseudo-header sum (not complemented), and the kernel or NIC
// sums the L4 header (ports included) over it later: only the address change goes in, added, not complemented.
static inline void csum_partial(uint8_t *f, uint32_t old32, uint32_t new32) {
  uint16_t hc; memcpy(&hc, f, 2);
  uint32_t s = hc + (uint16_t)~(old32 & 0xffff) + (uint16_t)~(old32 >> 16) + (new32 & 0xffff) + (new32 >> 16);
  hc = (uint16_t)fold(s);
  memcpy(f, &hc, 2);
}

static void rewrite(uint8_t *vh, uint8_t *ip, uint8_t *l4, uint8_t proto, int dst, uint32_t nip, uint16_t nport) {
  uint8_t *a = ip + (dst ? IP_DST : IP_SRC), *pp = l4 + (dst ? 2 : 0);
  uint32_t oip; uint16_t oport;
  memcpy(&oip, a, 4); memcpy(&oport, pp, 2);
  csum_full(ip + IP_CSUM, oip, nip, 0, 0, 0);
  uint8_t *f = l4 + (proto == PROTO_TCP ? TCP_CSUM : UDP_CSUM);
  if (vh[VNET_FLAGS] & VNET_F_NEEDS_CSUM) csum_partial(f, oip, nip);
  else if (proto == PROTO_TCP || f[0] | f[1]) {  // UDP checksum 0: none, stays 0
    csum_full(f, oip, nip, oport, nport, 1);
    if (proto == PROTO_UDP && !(f[0] | f[1])) f[0] = f[1] = 0xff;
  }
  memcpy(a, &nip, 4); memcpy(pp, &nport, 2);
}

static inline uint32_t next_rand(uint64_t *rng) { *rng ^= *rng << 13; *rng ^= *rng >> 7; *rng ^= *rng << 17; return (uint32_t)*rng; }

static void process(uint8_t *b, ssize_t n, struct counters *c, uint64_t *rng) {
  uint8_t *ip = b + VNET_LEN;
  if (n < VNET_LEN + 20 || (ip[0] >> 4) != 4) return;
  uint8_t proto = ip[IP_PROTO];
  if (proto != PROTO_TCP && proto != PROTO_UDP) return;
  if ((ip[IP_FRAG] & 0x3f) | ip[IP_FRAG + 1]) return;  // fragments (MF or offset) pass unchanged
  size_t ihl = (size_t)(ip[0] & 0xf) * 4;
  if (n < (ssize_t)(VNET_LEN + ihl + 8)) return;
  uint8_t *l4 = ip + ihl;
  uint32_t s, d; uint16_t sp, dp;
  memcpy(&s, ip + IP_SRC, 4); memcpy(&d, ip + IP_DST, 4); memcpy(&sp, l4, 2); memcpy(&dp, l4 + 2, 2);
  ct_lock_take();
  struct ct *e = ct_find(s, d, sp, dp, proto);
  if (!e) {
    struct rule *r = NULL;
    for (int i = 0; i < nrules; i++)
      if (rules[i].vip == d && rules[i].vport == dp && rules[i].proto == proto) { r = &rules[i]; break; }
    if (!r) { ct_lock_give(); c->pass++; return; }
    struct ep *ep = &r->eps[r->n == 1 ? 0 : next_rand(rng) % (uint32_t)r->n];
    struct ct *o = ct_slot(s, d, sp, dp, proto);
    // a reply slot left by an earlier flow on the same ports (the client reused its port) is taken over
    struct ct *rp = ct_find(ep->ip, s, ep->port, sp, proto);
    if (!rp) rp = ct_slot(ep->ip, s, ep->port, sp, proto);
    if (!o || !rp || o == rp) { ct_lock_give(); c->full++; return; }
    *o = (struct ct){ s, d, sp, dp, proto, 1, 1, 0, ep->ip, ep->port };
    *rp = (struct ct){ ep->ip, s, ep->port, sp, proto, 1, 0, 0, d, dp };
    e = o;
    c->new_++;
  }
  int dst = e->rewrite_dst; uint32_t nip = e->ip; uint16_t nport = e->port;
  ct_lock_give();
  rewrite(b, ip, l4, proto, dst, nip, nport);
  if (dst) c->dnat++; else c->snat++;
}

struct queue { int fd; struct counters c; uint64_t rng; int err; };

static void *serve(void *arg) {
  struct queue *q = arg;
  uint8_t *buf = malloc(BUF_LEN);
  if (!buf) { q->err = 1; return NULL; }
  while (!stop) {
    ssize_t n = read(q->fd, buf, BUF_LEN);
    if (n < 0) { if (errno == EINTR || errno == EAGAIN) continue; perror("cref: read"); q->err = 1; break; }
    q->c.pkts++;
    process(buf, n, &q->c, &q->rng);
    if (write(q->fd, buf, (size_t)n) < 0) q->c.werr++;  // a refused write is a drop, counted
  }
  free(buf);
  return NULL;
}

static int parse_ep(const char *s, uint32_t *ip, uint16_t *port) {
  char host[64]; const char *c = strrchr(s, ':');
  if (!c || c - s >= (long)sizeof host) return -1;
  memcpy(host, s, (size_t)(c - s)); host[c - s] = 0;
  struct in_addr a; if (inet_pton(AF_INET, host, &a) != 1) return -1;
  long p = strtol(c + 1, NULL, 10); if (p <= 0 || p > 65535) return -1;
  *ip = a.s_addr; *port = htons((uint16_t)p);
  return 0;
}

static int parse_rule(char *arg, struct rule *r) {
  char *eq = strchr(arg, '='), *colon = strchr(arg, ':');
  if (!eq || !colon || colon > eq) return -1;
  *colon = 0; *eq = 0;
  if (!strcmp(arg, "tcp")) r->proto = PROTO_TCP; else if (!strcmp(arg, "udp")) r->proto = PROTO_UDP; else return -1;
  if (parse_ep(colon + 1, &r->vip, &r->vport)) return -1;
  for (char *tok = strtok(eq + 1, ","); tok; tok = strtok(NULL, ",")) {
    if (r->n == MAX_EPS || parse_ep(tok, &r->eps[r->n].ip, &r->eps[r->n].port)) return -1;
    r->n++;
  }
  return r->n > 0 ? 0 : -1;
}

int main(int argc, char **argv) {
  const char *name = NULL; int stats = 0, nq = 1, opt;
  while ((opt = getopt(argc, argv, "n:sq:")) != -1) {
    if (opt == 'n') name = optarg; else if (opt == 's') stats = 1;
    else if (opt == 'q') nq = atoi(optarg);
    else { fprintf(stderr, "usage: cref -n <tun> [-s] [-q N] tcp|udp:<vip>:<port>=<ip>:<port>[,...]...\n"); return 2; }
  }
  if (!name || strlen(name) >= IFNAMSIZ) { fprintf(stderr, "cref: -n <tun> (at most 15 bytes) is required\n"); return 2; }
  if (nq < 1 || nq > 16) { fprintf(stderr, "cref: -q takes 1..16 queues\n"); return 2; }
  for (int i = optind; i < argc; i++) {
    if (nrules == MAX_RULES || parse_rule(argv[i], &rules[nrules])) { fprintf(stderr, "cref: bad rule %s\n", argv[i]); return 2; }
    nrules++;
  }
  ct = calloc(CT_SIZE, sizeof *ct);
  if (!ct) { perror("cref: calloc"); return 1; }
  locked = nq > 1;
  pthread_spin_init(&ct_lock, PTHREAD_PROCESS_PRIVATE);
  static struct queue qs[16];
  unsigned off = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6;
  struct ifreq ifr;
  for (int i = 0; i < nq; i++) {
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) { perror("cref: /dev/net/tun"); return 1; }
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR | (nq > 1 ? IFF_MULTI_QUEUE : 0);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    int sz = VNET_LEN;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0) { perror("cref: TUNSETIFF"); return 1; }
    if (ioctl(fd, TUNSETOFFLOAD, off) < 0) {  // kernels before 6.2 refuse USO, as native/tun.c handles it
      off &= ~(unsigned)(TUN_F_USO4 | TUN_F_USO6);
      if (ioctl(fd, TUNSETOFFLOAD, off) < 0) { perror("cref: TUNSETOFFLOAD"); return 1; }
    }
    qs[i].fd = fd;
    qs[i].rng = 0x2545F4914F6CDD1Dull + (uint64_t)i * 0x9E3779B97F4A7C15ull;
  }
  // SIGTERM/SIGINT stop the main thread (it serves queue 0); it wakes the others with SIGUSR1 (no SA_RESTART: a
  // blocked read() returns EINTR and the loop sees `stop`)
  struct sigaction sa; memset(&sa, 0, sizeof sa); sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL); sigaction(SIGINT, &sa, NULL); sigaction(SIGUSR1, &sa, NULL);
  sigset_t term, old; sigemptyset(&term); sigaddset(&term, SIGTERM); sigaddset(&term, SIGINT);
  pthread_sigmask(SIG_BLOCK, &term, &old);
  pthread_t th[16];
  for (int i = 1; i < nq; i++)
    if (pthread_create(&th[i], NULL, serve, &qs[i]) != 0) { fprintf(stderr, "cref: pthread_create failed\n"); return 1; }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  fprintf(stderr, "cref: %s open, %d queue(s), offloads 0x%x, %d rules\n", ifr.ifr_name, nq, off, nrules);
  serve(&qs[0]);
  stop = 1;
  for (int i = 1; i < nq; i++) { pthread_kill(th[i], SIGUSR1); pthread_join(th[i], NULL); }
  struct counters t = {0};
  int err = 0;
  for (int i = 0; i < nq; i++) {
    struct counters *c = &qs[i].c;
    t.pkts += c->pkts; t.dnat += c->dnat; t.snat += c->snat; t.new_ += c->new_; t.pass += c->pass; t.full += c->full; t.werr += c->werr;
    err |= qs[i].err;
  }
  if (stats)
    fprintf(stderr, "cref: packets %lu dnat %lu snat %lu new %lu passed %lu table-full %lu write-errors %lu\n", (unsigned long)t.pkts,
            (unsigned long)t.dnat, (unsigned long)t.snat, (unsigned long)t.new_, (unsigned long)t.pass, (unsigned long)t.full, (unsigned long)t.werr);
  return err;
}
