// The TUN device seen from JS: open/ioctl (Node cannot), and one thread per queue that fills preallocated slabs,
// hands whole batches to JS through a threadsafe function and writes what JS queues back (or a batched write on the
// JS thread).
//
// Exports (all errors are JS Errors with `code` = errno name, `errno`, `syscall`):
//   open(name: string, flags: number) -> { fd: number, name: string }      flags: 1 = IFF_VNET_HDR, 2 = IFF_MULTI_QUEUE
//   setOffload(fd, flags) -> accepted flags            retries without TUN_F_USO4|TUN_F_USO6 when the kernel refuses them
//   readerCreate(fd, hdrLen, slabs, slabBytes, maxPackets[, writeRingBytes, writeSlots])
//                                                      -> { handle, bufs: Buffer[], offsets: Uint32Array[],
//                                                           lengths: Uint32Array[] }
//                                                      writeRingBytes > 0: with a write queue (slots: power of two)
//   readerStart(handle, cb(slab, count, bytes))         cb(-1, errno, Error) reports a fatal read error (reader stopped)
//   readerStartInline(handle, cb[, busyPollUs])        the same callbacks, but no thread: the JS thread's event loop
//                                                      polls the fd, reads a batch and calls cb synchronously, and
//                                                      keeps reading busyPollUs after the last packet (0: not)
//   readerRef(handle, ref: boolean)                    ref/unref the threadsafe function (keeps the loop alive or not)
//   readerStop(handle)                                 idempotent; writes what was handed over, joins the thread;
//                                                      no callback runs afterwards
//   readerStats(handle, out: Float64Array(5))          [reads, readErrors, slabWaits, dispatches, busy polls]
//   writeBatch(fd, buf, offsets, lengths, count, hdrLen, counters: Float64Array(4)) -> packets written
//                                                      counters += [EAGAIN, other errors, last errno, bytes written]
//   readerWrite(handle, buf, offsets, lengths, count) -> packets queued for the reader thread to write (with the
//                                                      hdrLen bytes before each); waits for room when the queue is full
//   readerWriteStats(handle, out: Float64Array(13))    [writes, bytes, eagain, errors, lastErrno, drains, queued,
//                                                       copied, invalid, waits, waitNs, dropped, maxBacklog]
//   close(fd)
#include <errno.h>
#include <malloc.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <node_api.h>
#include <uv.h>

// Added in Linux 6.2; the system headers may predate them.
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif

#define FLAG_VNET_HDR 1
#define FLAG_MULTI_QUEUE 2

#define MAX_SLABS 16
// A read must have room for the largest GSO super-packet plus its virtio_net_hdr, or the kernel truncates it.
#define MAX_PACKET 65536
#define ALIGN 8

// ---------------------------------------------------------------------------------------------------------------
// errors

static const char *errno_name(int err) {
  const char *n = strerrorname_np(err);
  return n ? n : "EUNKNOWN";
}

static napi_value errno_error(napi_env env, int err, const char *syscall, const char *what) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s%s%s: %s (%s)", syscall, what ? " " : "", what ? what : "", strerror(err), errno_name(err));
  napi_value code, message, error, num, sc;
  napi_create_string_utf8(env, errno_name(err), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_create_int32(env, err, &num);
  napi_set_named_property(env, error, "errno", num);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sc);
  napi_set_named_property(env, error, "syscall", sc);
  return error;
}

static void throw_errno(napi_env env, int err, const char *syscall, const char *what) {
  napi_throw(env, errno_error(env, err, syscall, what));
}

static void throw_type(napi_env env, const char *msg) { napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg); }

// Throws ERR_NAPI naming `call` unless the failed N-API call left an exception pending.
static void napi_failed(napi_env env, const char *call) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) {
    char msg[256];
    snprintf(msg, sizeof msg, "N-API call failed: %s", call);
    napi_throw_error(env, "ERR_NAPI", msg);
  }
}

#define CHECK(call)                                                                                                    \
  do {                                                                                                                 \
    if ((call) != napi_ok) {                                                                                           \
      napi_failed(env, #call);                                                                                         \
      return NULL;                                                                                                     \
    }                                                                                                                  \
  } while (0)

static bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return false;
  if (argc < want) {
    throw_type(env, "not enough arguments");
    return false;
  }
  return true;
}

static bool get_i32(napi_env env, napi_value v, int32_t *out, const char *what) {
  if (napi_get_value_int32(env, v, out) != napi_ok) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be a number", what);
    throw_type(env, msg);
    return false;
  }
  return true;
}

static bool get_typed(napi_env env, napi_value v, napi_typedarray_type want, void **data, size_t *len, const char *what) {
  bool is = false;
  napi_typedarray_type type;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, v, &type, len, data, NULL, NULL) != napi_ok || type != want) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s has the wrong type", what);
    throw_type(env, msg);
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------------------------
// open / offload / close

static napi_value Open(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  char name[IFNAMSIZ + 8];
  size_t name_len = 0;
  if (napi_get_value_string_utf8(env, argv[0], name, sizeof name, &name_len) != napi_ok) {
    throw_type(env, "name must be a string");
    return NULL;
  }
  int32_t flags;
  if (!get_i32(env, argv[1], &flags, "flags")) return NULL;
  if (name_len >= IFNAMSIZ) {
    throw_errno(env, EINVAL, "TUNSETIFF", "(interface names are at most 15 bytes)");
    return NULL;
  }

  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    throw_errno(env, errno, "open", "/dev/net/tun");
    return NULL;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  if (flags & FLAG_VNET_HDR) ifr.ifr_flags |= IFF_VNET_HDR;
  if (flags & FLAG_MULTI_QUEUE) ifr.ifr_flags |= IFF_MULTI_QUEUE;
  memcpy(ifr.ifr_name, name, name_len);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    close(fd);
    throw_errno(env, err, "TUNSETIFF", name_len ? name : "(kernel-chosen name)");
    return NULL;
  }
  if (flags & FLAG_VNET_HDR) {
    int sz = 10;  // sizeof(struct virtio_net_hdr): no num_buffers, no hash report
    if (ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0) {
      int err = errno;
      close(fd);
      throw_errno(env, err, "TUNSETVNETHDRSZ", ifr.ifr_name);
      return NULL;
    }
  }
  napi_value result, vfd, vname;
  CHECK(napi_create_object(env, &result));
  CHECK(napi_create_int32(env, fd, &vfd));
  CHECK(napi_create_string_utf8(env, ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ), &vname));
  CHECK(napi_set_named_property(env, result, "fd", vfd));
  CHECK(napi_set_named_property(env, result, "name", vname));
  return result;
}

static napi_value SetOffload(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  int32_t fd, flags;
  if (!get_i32(env, argv[0], &fd, "fd") || !get_i32(env, argv[1], &flags, "flags")) return NULL;
  unsigned int want = (unsigned int)flags;
  if (ioctl(fd, TUNSETOFFLOAD, want) < 0) {
    int err = errno;
    // Kernels before 6.2 refuse the USO bits with EINVAL; everything else still helps.
    if (err == EINVAL && (want & (TUN_F_USO4 | TUN_F_USO6))) {
      want &= ~(unsigned int)(TUN_F_USO4 | TUN_F_USO6);
      if (ioctl(fd, TUNSETOFFLOAD, want) < 0) err = errno;
      else err = 0;
    }
    if (err) {
      throw_errno(env, err, "TUNSETOFFLOAD", NULL);
      return NULL;
    }
  }
  napi_value out;
  CHECK(napi_create_int32(env, (int32_t)want, &out));
  return out;
}

static napi_value Close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  int32_t fd;
  if (!get_i32(env, argv[0], &fd, "fd")) return NULL;
  if (close(fd) < 0 && errno != EINTR) {
    throw_errno(env, errno, "close", NULL);
    return NULL;
  }
  return NULL;
}

// ---------------------------------------------------------------------------------------------------------------
// batched write (JS thread)

static napi_value WriteBatch(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  if (!get_args(env, info, 7, argv)) return NULL;
  int32_t fd, count, hdr;
  uint8_t *buf;
  uint32_t *offs, *lens;
  double *ctr;
  size_t buf_len, offs_len, lens_len, ctr_len;
  if (!get_i32(env, argv[0], &fd, "fd")) return NULL;
  if (!get_typed(env, argv[1], napi_uint8_array, (void **)&buf, &buf_len, "buf")) return NULL;
  if (!get_typed(env, argv[2], napi_uint32_array, (void **)&offs, &offs_len, "offsets")) return NULL;
  if (!get_typed(env, argv[3], napi_uint32_array, (void **)&lens, &lens_len, "lengths")) return NULL;
  if (!get_i32(env, argv[4], &count, "count") || !get_i32(env, argv[5], &hdr, "hdrLen")) return NULL;
  if (!get_typed(env, argv[6], napi_float64_array, (void **)&ctr, &ctr_len, "counters")) return NULL;
  if (ctr_len < 4) {
    throw_type(env, "counters needs 4 elements");
    return NULL;
  }
  if (count < 0 || (size_t)count > offs_len || (size_t)count > lens_len || hdr < 0) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "count exceeds offsets/lengths, or hdrLen < 0");
    return NULL;
  }
  int32_t written = 0;
  for (int32_t i = 0; i < count; i++) {
    uint64_t off = offs[i], len = lens[i];
    if (off < (uint64_t)hdr || off + len > buf_len || len == 0) {
      ctr[1] += 1;
      ctr[2] = EINVAL;
      continue;
    }
    ssize_t n;
    do n = write(fd, buf + off - hdr, (size_t)(len + hdr));
    while (n < 0 && errno == EINTR);
    if (n < 0) {
      if (errno == EAGAIN) ctr[0] += 1;
      else {
        ctr[1] += 1;
        ctr[2] = errno;
      }
      continue;
    }
    written++;
    ctr[3] += (double)len;
  }
  napi_value out;
  CHECK(napi_create_int32(env, written, &out));
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// reader thread and write queue
//
// One thread per queue reads the TUN into preallocated slabs and hands whole batches to JS through a threadsafe
// function. With a write queue (readerCreate with writeRingBytes > 0) the same thread also does the write() calls,
// so the kernel's forwarding work for what JS sends (tun_get_user → netif_receive_skb → ip_forward → the receiver's
// stack) runs there and not on the JS thread:
//  - readerWrite() queues packets and returns. Packets that lie in the slab of the batch being processed are not
//    copied (that slab is reused only after they are written); others are copied into the queue's ring, so JS may
//    reuse that memory at once.
//  - What JS queues inside a batch callback is handed over when the callback returns, together with the slab: one
//    wakeup for both. Outside a callback (timers, async answers) it is handed over at once.
//  - The thread writes after dispatching the next batch (JS processes it meanwhile) and before reusing a slab.
//  - When the thread is not running (before readerStart, after readerStop or a fatal read error) readerWrite
//    writes on the calling thread.
// The ring is a byte area (packets never wrap: one that does not fit before the end starts at 0, the gap counts
// against it) plus a power-of-two array of descriptors. Positions are 64-bit counters that only grow: prod_bytes and
// head belong to the producer (the JS thread), cons_bytes and dtail to the consumer, dhead is the published head.
// A full queue makes readerWrite wait for room (backpressure), at most WQ_WAIT_NS per call: whatever is left then
// is counted as dropped (ENOBUFS), never silently lost.

#define WQ_WAIT_NS 200000000LL
#define WSTAT_N 13
#define READER_MAGIC 0x74756e52u  // tells a reader handle from other externals

typedef struct {
  uint8_t *ptr;  // the packet, header included: in the ring or in a slab JS holds
  uint32_t len;  // bytes to write, header included
  uint64_t end;  // prod_bytes after this packet: the consumer frees the ring up to here once it is written
} wdesc_t;

enum {
  // written by the consumer: write() results
  WS_WRITES, WS_BYTES, WS_EAGAIN, WS_ERRORS, WS_LAST_ERRNO, WS_DRAINS,
  // written by the producer (JS thread)
  WS_QUEUED, WS_COPIED, WS_INVALID, WS_WAITS, WS_WAIT_NS, WS_DROPPED, WS_MAX_BACKLOG,
};

typedef struct {
  uint8_t *ring;
  uint64_t ring_bytes;
  wdesc_t *descs;
  uint64_t slots;              // power of two
  pthread_mutex_t mu;          // with `room`: only for the producer waiting for room
  pthread_cond_t room;
  uint64_t prod_bytes, head;   // producer-only; head includes descriptors not handed over yet
  uint64_t dhead;              // handed-over head (atomic)
  uint64_t cons_bytes, dtail;  // consumer-owned (atomic)
  int producer_waiting;        // atomic
  uint64_t st[WSTAT_N];        // relaxed atomics
} wqueue_t;

typedef struct {
  uint8_t *data;
  uint32_t *offsets;
  uint32_t *lengths;
  uint32_t count;   // written by the reader before dispatch, read by JS in call_js
  double bytes;
  int busy;         // atomic: 1 while JS owns the slab
  uint32_t index;
  napi_ref refs[3]; // keep the Buffer and both Uint32Arrays alive while the thread may write into them
} slab_t;

typedef struct {
  uint32_t magic;
  int fd, stop_fd, release_fd;
  uint32_t hdr_len, nslabs, max_pkts;
  size_t slab_bytes;
  slab_t slabs[MAX_SLABS];
  pthread_t thread;
  bool thread_started, stopped;
  bool in_cb;       // JS-thread only: inside the batch callback
  napi_threadsafe_function tsfn;
  napi_ref callback;
  wqueue_t *wq;     // the write queue, or NULL
  bool inline_started;   // readerStartInline: uv_poll on the JS thread instead of a thread
  uv_poll_t poll;
  uint64_t spin_ns;      // inline: busy-poll this long after the last packet (0: never)
  uint64_t affinity_checked_ns;
  bool multi_cpu;
  double spins;          // inline: empty reads while busy polling
  napi_env env;
  napi_async_context actx;
  int io_running;   // atomic: the thread consumes wq; when 0 the JS thread writes for itself
  int inflight;     // atomic: batches handed to JS and not yet released
  int sleeping;     // atomic: 0 awake, 1 asleep, 2 asleep and waiting for JS to release a slab
  int stop;         // atomic
  int fatal_errno;  // set by the reader before it reports a fatal error
  int js_refs;      // JS-thread only: handle external + tsfn; the struct is freed when both are gone
  // stats (written by the reader thread, read racily for display)
  double reads, read_errors, slab_waits, dispatches;
} reader_t;

static inline void wstat_add(wqueue_t *q, int i, uint64_t v) { __atomic_add_fetch(&q->st[i], v, __ATOMIC_RELAXED); }
static inline void wstat_set(wqueue_t *q, int i, uint64_t v) { __atomic_store_n(&q->st[i], v, __ATOMIC_RELAXED); }

static wqueue_t *wq_new(uint64_t ring_bytes, uint64_t slots) {
  wqueue_t *q = calloc(1, sizeof *q);
  if (!q) return NULL;
  q->ring_bytes = ring_bytes;
  q->slots = slots;
  pthread_mutex_init(&q->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);  // the producer's deadline is monotonic
  pthread_cond_init(&q->room, &ca);
  pthread_condattr_destroy(&ca);
  if (posix_memalign((void **)&q->ring, 4096, (size_t)ring_bytes) != 0) q->ring = NULL;
  q->descs = calloc((size_t)slots, sizeof *q->descs);
  return q;
}

static void wq_free(wqueue_t *q) {
  if (!q) return;
  pthread_mutex_destroy(&q->mu);
  pthread_cond_destroy(&q->room);
  free(q->ring);
  free(q->descs);
  free(q);
}

// Consumer: writes the descriptors from dtail up to the handed-over head.
static void wq_drain(reader_t *r) {
  wqueue_t *q = r->wq;
  uint64_t tail = q->dtail, head = __atomic_load_n(&q->dhead, __ATOMIC_ACQUIRE);
  if (tail == head) return;
  wstat_add(q, WS_DRAINS, 1);
  for (; tail != head; tail++) {
    const wdesc_t *d = &q->descs[tail & (q->slots - 1)];
    ssize_t n;
    do n = write(r->fd, d->ptr, d->len);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
      if (errno == EAGAIN) wstat_add(q, WS_EAGAIN, 1);
      else {
        wstat_add(q, WS_ERRORS, 1);
        wstat_set(q, WS_LAST_ERRNO, (uint64_t)errno);
      }
    } else {
      wstat_add(q, WS_WRITES, 1);
      wstat_add(q, WS_BYTES, d->len - r->hdr_len);
    }
    // Free the packet's room; wake the producer if it waits for room (it rechecks under mu after announcing).
    __atomic_store_n(&q->cons_bytes, d->end, __ATOMIC_SEQ_CST);
    __atomic_store_n(&q->dtail, tail + 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&q->producer_waiting, __ATOMIC_SEQ_CST)) {
      pthread_mutex_lock(&q->mu);
      pthread_cond_signal(&q->room);
      pthread_mutex_unlock(&q->mu);
    }
  }
}

static void reader_wake(reader_t *r) {
  uint64_t one = 1;
  ssize_t n = write(r->release_fd, &one, sizeof one);
  (void)n;
}

// Producer: hands what is queued to the reader thread, or writes it here when that thread is not running. Returns
// whether the reader thread sleeps (and so must be woken: here when `wake`, else by the caller).
static bool wq_hand_over(reader_t *r, bool wake) {
  wqueue_t *q = r->wq;
  __atomic_store_n(&q->dhead, q->head, __ATOMIC_SEQ_CST);
  if (!__atomic_load_n(&r->io_running, __ATOMIC_SEQ_CST)) {
    wq_drain(r);
    return false;
  }
  bool sleeping = __atomic_load_n(&r->sleeping, __ATOMIC_SEQ_CST) != 0;
  if (sleeping && wake) reader_wake(r);
  return sleeping;
}

static bool wq_has_room(wqueue_t *q, uint64_t need) {
  return q->ring_bytes - (q->prod_bytes - __atomic_load_n(&q->cons_bytes, __ATOMIC_SEQ_CST)) >= need &&
         q->head - __atomic_load_n(&q->dtail, __ATOMIC_SEQ_CST) < q->slots;
}

// Waits until `need` bytes and a descriptor are free or the deadline passes; false on timeout. If the reader thread
// exits meanwhile (it signals), the JS thread writes the queue itself.
static bool wq_wait_room(reader_t *r, uint64_t need, const struct timespec *deadline) {
  wqueue_t *q = r->wq;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  wstat_add(q, WS_WAITS, 1);
  bool ok = true;
  pthread_mutex_lock(&q->mu);
  __atomic_store_n(&q->producer_waiting, 1, __ATOMIC_SEQ_CST);
  while (!wq_has_room(q, need)) {
    if (!__atomic_load_n(&r->io_running, __ATOMIC_SEQ_CST)) {
      pthread_mutex_unlock(&q->mu);
      wq_drain(r);
      pthread_mutex_lock(&q->mu);
      continue;
    }
    if (pthread_cond_timedwait(&q->room, &q->mu, deadline) == ETIMEDOUT) {
      ok = wq_has_room(q, need);
      break;
    }
  }
  __atomic_store_n(&q->producer_waiting, 0, __ATOMIC_SEQ_CST);
  pthread_mutex_unlock(&q->mu);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  wstat_add(q, WS_WAIT_NS, (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec)));
  return ok;
}

// Whether [p, p + n) lies in a slab JS holds inside its callback: such packets need no copy.
static bool in_held_slab(reader_t *r, const uint8_t *p, uint64_t n) {
  if (!r->in_cb) return false;
  for (uint32_t i = 0; i < r->nslabs; i++) {
    const slab_t *s = &r->slabs[i];
    if (p >= s->data && p + n <= s->data + r->slab_bytes) return __atomic_load_n(&s->busy, __ATOMIC_RELAXED) != 0;
  }
  return false;
}

static reader_t *get_reader(napi_env env, napi_value v) {
  void *p = NULL;
  napi_valuetype type;
  if (napi_typeof(env, v, &type) != napi_ok || type != napi_external || napi_get_value_external(env, v, &p) != napi_ok ||
      !p || ((reader_t *)p)->magic != READER_MAGIC) {
    throw_type(env, "handle must be a reader handle");
    return NULL;
  }
  return p;
}

static reader_t *get_writing_reader(napi_env env, napi_value v) {
  reader_t *r = get_reader(env, v);
  if (r && !r->wq) {
    throw_type(env, "the reader has no write queue (readerCreate without writeRingBytes)");
    return NULL;
  }
  return r;
}

// readerWrite(handle, buf, offsets, lengths, count) -> packets queued (the hdrLen bytes before each offset go too).
static napi_value ReaderWrite(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (!get_args(env, info, 5, argv)) return NULL;
  reader_t *r = get_writing_reader(env, argv[0]);
  if (!r) return NULL;
  int32_t count;
  uint8_t *buf;
  uint32_t *offs, *lens;
  size_t buf_len, offs_len, lens_len;
  if (!get_typed(env, argv[1], napi_uint8_array, (void **)&buf, &buf_len, "buf")) return NULL;
  if (!get_typed(env, argv[2], napi_uint32_array, (void **)&offs, &offs_len, "offsets")) return NULL;
  if (!get_typed(env, argv[3], napi_uint32_array, (void **)&lens, &lens_len, "lengths")) return NULL;
  if (!get_i32(env, argv[4], &count, "count")) return NULL;
  if (count < 0 || (size_t)count > offs_len || (size_t)count > lens_len) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "count exceeds offsets/lengths");
    return NULL;
  }
  wqueue_t *q = r->wq;
  int32_t queued = 0;
  if (r->stopped) goto out;
  const uint64_t hdr = r->hdr_len, size = q->ring_bytes, mask = q->slots - 1;
  struct timespec deadline;
  bool have_deadline = false;
  for (int32_t i = 0; i < count; i++) {
    uint64_t off = offs[i], len = lens[i];
    if (off < hdr || off + len > buf_len || len == 0 || len > MAX_PACKET) {
      wstat_add(q, WS_INVALID, 1);  // refused here (write() would have said EINVAL)
      wstat_set(q, WS_LAST_ERRNO, EINVAL);
      continue;
    }
    uint8_t *src = buf + off - hdr;
    uint64_t n = len + hdr;
    bool copy = !in_held_slab(r, src, n);
    uint64_t na = copy ? (n + 63) & ~(uint64_t)63 : 0;
    uint64_t p = q->prod_bytes % size, pad = na && p + na > size ? size - p : 0;
    if (!wq_has_room(q, pad + na)) {
      wq_hand_over(r, true);  // full: let the thread write what is queued, then wait for room
      if (!have_deadline) {
        have_deadline = true;
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_nsec += WQ_WAIT_NS % 1000000000LL;
        deadline.tv_sec += WQ_WAIT_NS / 1000000000LL + deadline.tv_nsec / 1000000000LL;
        deadline.tv_nsec %= 1000000000LL;
      }
      if (!wq_wait_room(r, pad + na, &deadline)) {
        wstat_add(q, WS_DROPPED, (uint64_t)(count - i));
        wstat_set(q, WS_LAST_ERRNO, ENOBUFS);
        break;
      }
    }
    uint8_t *at = src;
    if (copy) {
      at = q->ring + (pad ? 0 : p);
      memcpy(at, src, (size_t)n);
      q->prod_bytes += pad + na;
      wstat_add(q, WS_COPIED, 1);
    }
    q->descs[q->head & mask] = (wdesc_t){.ptr = at, .len = (uint32_t)n, .end = q->prod_bytes};
    q->head++;
    queued++;
  }
  // Inside the batch callback call_js hands over when it returns. Otherwise now; that also writes (on this thread)
  // a hand-over that raced with the exit of the reader thread.
  if (!r->in_cb && (q->head != q->dhead || (__atomic_load_n(&q->dtail, __ATOMIC_SEQ_CST) != q->dhead &&
                                            !__atomic_load_n(&r->io_running, __ATOMIC_SEQ_CST))))
    wq_hand_over(r, true);
  wstat_add(q, WS_QUEUED, (uint64_t)queued);
  uint64_t backlog = q->head - __atomic_load_n(&q->dtail, __ATOMIC_RELAXED);
  if (backlog > q->st[WS_MAX_BACKLOG]) wstat_set(q, WS_MAX_BACKLOG, backlog);
out:;
  napi_value result;
  CHECK(napi_create_int32(env, queued, &result));
  return result;
}

// readerWriteStats(handle, out: Float64Array) -> out = [writes, bytes, eagain, errors, lastErrno, drains, queued,
//   copied, invalid, waits, waitNs, dropped, maxBacklog]
static napi_value ReaderWriteStats(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  reader_t *r = get_writing_reader(env, argv[0]);
  if (!r) return NULL;
  double *out;
  size_t len;
  if (!get_typed(env, argv[1], napi_float64_array, (void **)&out, &len, "out")) return NULL;
  for (size_t i = 0; i < len && i < WSTAT_N; i++) out[i] = (double)__atomic_load_n(&r->wq->st[i], __ATOMIC_RELAXED);
  return NULL;
}

static void reader_unref(reader_t *r) {
  if (--r->js_refs > 0) return;
  if (r->stop_fd >= 0) close(r->stop_fd);
  if (r->release_fd >= 0) close(r->release_fd);
  wq_free(r->wq);
  free(r);
}

// Returns whether a sleeping reader should be woken for this (it waits for a pending batch or this slab).
static bool release_slab(reader_t *r, slab_t *s) {
  __atomic_store_n(&s->busy, 0, __ATOMIC_SEQ_CST);
  __atomic_sub_fetch(&r->inflight, 1, __ATOMIC_SEQ_CST);
  // Pairs with the store-then-recheck in reader_main, so one side always sees the other.
  return __atomic_load_n(&r->sleeping, __ATOMIC_SEQ_CST) == 2;
}

// data is the slab, or NULL for "the reader died" (errno in fatal_errno).
static void call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  reader_t *r = context;
  slab_t *s = data;
  if (env == NULL || r->stopped) {
    if (s && release_slab(r, s)) reader_wake(r);  // teardown: nobody will look at it
    return;
  }
  napi_value argv[3], undefined;
  napi_get_undefined(env, &undefined);
  if (s) {
    napi_create_int32(env, (int32_t)s->index, &argv[0]);
    napi_create_uint32(env, s->count, &argv[1]);
    napi_create_double(env, s->bytes, &argv[2]);
  } else {
    napi_create_int32(env, -1, &argv[0]);
    napi_create_int32(env, r->fatal_errno, &argv[1]);
    argv[2] = errno_error(env, r->fatal_errno, "read", "(TUN reader stopped)");
  }
  // JS processes the batch synchronously; when the call returns (or throws) what it queued for writing and the slab
  // go back to the reader thread, with one wakeup at most.
  r->in_cb = true;
  napi_status st = napi_call_function(env, undefined, js_cb, 3, argv, NULL);
  r->in_cb = false;
  wqueue_t *q = r->wq;
  bool wake = false;
  if (q && q->head != q->dhead) {
    if (r->stopped) {  // closed from inside the callback: nobody writes any more
      __atomic_sub_fetch(&q->st[WS_QUEUED], q->head - q->dhead, __ATOMIC_RELAXED);
      wstat_add(q, WS_DROPPED, q->head - q->dhead);
      q->head = q->dhead;
    } else wake = wq_hand_over(r, false);
  }
  if (s && release_slab(r, s)) wake = true;
  if (wake) reader_wake(r);
  // A throwing callback is an uncaught exception like any other (Node 20 would only print a deprecation warning).
  bool pending = false;
  if (st != napi_ok && napi_is_exception_pending(env, &pending) == napi_ok && pending) {
    napi_value exc;
    if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
  }
}

static void tsfn_finalize(napi_env env, void *data, void *hint) { reader_unref(hint); }

static bool dispatch(reader_t *r, slab_t *s) {
  __atomic_store_n(&s->busy, 1, __ATOMIC_RELEASE);
  __atomic_add_fetch(&r->inflight, 1, __ATOMIC_ACQ_REL);
  r->dispatches += 1;
  if (napi_call_threadsafe_function(r->tsfn, s, napi_tsfn_nonblocking) != napi_ok) {
    __atomic_store_n(&s->busy, 0, __ATOMIC_RELEASE);
    __atomic_sub_fetch(&r->inflight, 1, __ATOMIC_ACQ_REL);
    return false;
  }
  return true;
}

static inline bool writes_pending(reader_t *r) {
  return r->wq && __atomic_load_n(&r->wq->dhead, __ATOMIC_SEQ_CST) != r->wq->dtail;
}

enum { FILL_FULL, FILL_DRAINED, FILL_FATAL };

// Reads what is ready into slab s after *count packets / *pos bytes until it is full (FILL_FULL), the fd has
// nothing more (FILL_DRAINED) or reading failed for good (FILL_FATAL, errno in fatal_errno).
static int fill_slab(reader_t *r, slab_t *s, uint32_t *count, size_t *pos, double *bytes) {
  const size_t room = MAX_PACKET + r->hdr_len;
  while (*count < r->max_pkts && r->slab_bytes - *pos >= room) {
    ssize_t n = read(r->fd, s->data + *pos, room);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return FILL_DRAINED;
      r->read_errors += 1;
      r->fatal_errno = errno;
      return FILL_FATAL;
    }
    r->reads += 1;
    if ((size_t)n <= r->hdr_len) continue;  // nothing after the header: not a packet
    s->offsets[*count] = (uint32_t)(*pos + r->hdr_len);
    s->lengths[*count] = (uint32_t)(n - r->hdr_len);
    *bytes += (double)(n - r->hdr_len);
    (*count)++;
    *pos = (*pos + (size_t)n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
  }
  return FILL_FULL;
}

// Reads everything that is ready into the current slab. A batch is handed to JS as soon as JS is idle (lowest
// latency), otherwise it keeps growing until JS releases the previous one or the slab is full (largest batches
// exactly when the JS thread is the bottleneck). Writes what JS handed back after dispatching the next batch and
// before reading into a slab again.
static void *reader_main(void *arg) {
  reader_t *r = arg;
  const size_t room = MAX_PACKET + r->hdr_len;
  uint32_t cur = 0, count = 0;
  size_t pos = 0;
  double bytes = 0;
  slab_t *s = &r->slabs[0];
  struct pollfd pfd[3];

  for (;;) {
    if (__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) break;
    bool full = count >= r->max_pkts || r->slab_bytes - pos < room;
    if (count > 0 && (full || __atomic_load_n(&r->inflight, __ATOMIC_ACQUIRE) == 0)) {
      s->count = count;
      s->bytes = bytes;
      if (!dispatch(r, s)) break;  // tsfn closing: we are being stopped
      cur = (cur + 1) % r->nslabs;
      s = &r->slabs[cur];
      count = 0;
      pos = 0;
      bytes = 0;
      continue;
    }
    bool mine = !__atomic_load_n(&s->busy, __ATOMIC_ACQUIRE);
    // After `mine`: whatever JS queued from this slab was handed over before the slab was released.
    if (r->wq) wq_drain(r);
    if (mine && !full) {
      int got = fill_slab(r, s, &count, &pos, &bytes);
      bool drained = got == FILL_DRAINED;
      if (got == FILL_FATAL) {
        // Tell JS (NULL data = error) and stop reading; the device is gone or broken.
        napi_call_threadsafe_function(r->tsfn, NULL, napi_tsfn_nonblocking);
        break;
      }
      if (!drained) continue;  // slab or batch full: dispatch
      if (count > 0 && __atomic_load_n(&r->inflight, __ATOMIC_ACQUIRE) == 0) continue;
    } else if (!mine) {
      r->slab_waits += 1;
    }
    bool need_release = count > 0 || !mine;
    __atomic_store_n(&r->sleeping, need_release ? 2 : 1, __ATOMIC_SEQ_CST);
    if ((count > 0 && __atomic_load_n(&r->inflight, __ATOMIC_SEQ_CST) == 0) ||
        (!mine && !__atomic_load_n(&s->busy, __ATOMIC_SEQ_CST)) || writes_pending(r)) {
      __atomic_store_n(&r->sleeping, 0, __ATOMIC_SEQ_CST);
      continue;  // released or handed writes in between: no need to sleep
    }
    pfd[0] = (struct pollfd){.fd = r->stop_fd, .events = POLLIN};
    pfd[1] = (struct pollfd){.fd = r->release_fd, .events = POLLIN};
    pfd[2] = (struct pollfd){.fd = (mine && !full) ? r->fd : -1, .events = POLLIN};
    int rc = poll(pfd, 3, -1);
    __atomic_store_n(&r->sleeping, 0, __ATOMIC_SEQ_CST);
    if (rc < 0) {
      if (errno == EINTR) continue;
      r->fatal_errno = errno;
      napi_call_threadsafe_function(r->tsfn, NULL, napi_tsfn_nonblocking);
      break;
    }
    if (pfd[0].revents) break;
    if (pfd[1].revents & POLLIN) {
      uint64_t v;
      ssize_t n = read(r->release_fd, &v, sizeof v);
      (void)n;
    }
    // POLLERR/POLLHUP on the tun fd: the next read reports the errno and ends the thread.
  }
  if (r->wq) {
    // What was handed over before the stop is written; from now on the JS thread writes for itself (a hand-over
    // that races with this is written by the next readerWrite or by readerStop).
    wq_drain(r);
    __atomic_store_n(&r->io_running, 0, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&r->wq->producer_waiting, __ATOMIC_SEQ_CST)) {
      pthread_mutex_lock(&r->wq->mu);
      pthread_cond_signal(&r->wq->room);
      pthread_mutex_unlock(&r->wq->mu);
    }
  }
  return NULL;
}

static void reader_halt(reader_t *r);
static void inline_halt(reader_t *r);
static void env_cleanup(void *arg);

static void handle_finalize(napi_env env, void *data, void *hint) {
  reader_t *r = data;
  // Should have been stopped by close(); a thread writing into freed memory would be far worse than a short wait.
  inline_halt(r);
  if (r->thread_started && !r->stopped) {
    reader_halt(r);
    napi_remove_env_cleanup_hook(env, env_cleanup, r);
  }
  reader_unref(r);
}

static napi_value ReaderCreate(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  size_t argc = 7;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 5) {
    throw_type(env, "not enough arguments");
    return NULL;
  }
  int32_t fd, hdr, nslabs, slab_bytes, max_pkts, wring = 0, wslots = 0;
  if (!get_i32(env, argv[0], &fd, "fd") || !get_i32(env, argv[1], &hdr, "hdrLen") ||
      !get_i32(env, argv[2], &nslabs, "slabs") || !get_i32(env, argv[3], &slab_bytes, "slabBytes") ||
      !get_i32(env, argv[4], &max_pkts, "maxPackets"))
    return NULL;
  if (argc >= 7 && (!get_i32(env, argv[5], &wring, "writeRingBytes") || !get_i32(env, argv[6], &wslots, "writeSlots")))
    return NULL;
  if (wring != 0 && (wring < (256 << 10) || wring > (1 << 30) || wslots < 2 || wslots > (1 << 20) ||
                     (wslots & (wslots - 1)))) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE",
                           "a write queue needs a ring of 256 KiB..1 GiB and a power-of-two slot count 2..2^20");
    return NULL;
  }
  if (hdr < 0 || hdr > 64 || nslabs < 2 || nslabs > MAX_SLABS || slab_bytes < MAX_PACKET + 64 + hdr ||
      max_pkts < 1) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE",
                           "reader needs 2..16 slabs of at least 65,600 bytes, maxPackets >= 1, hdrLen 0..64");
    return NULL;
  }
  reader_t *r = calloc(1, sizeof *r);
  if (!r) {
    throw_errno(env, ENOMEM, "calloc", NULL);
    return NULL;
  }
  r->magic = READER_MAGIC;
  r->fd = fd;
  r->hdr_len = (uint32_t)hdr;
  r->nslabs = (uint32_t)nslabs;
  r->slab_bytes = (size_t)slab_bytes;
  r->max_pkts = (uint32_t)max_pkts;
  r->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  r->release_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  r->js_refs = 1;
  if (r->stop_fd < 0 || r->release_fd < 0) {
    int err = errno;
    reader_unref(r);
    throw_errno(env, err, "eventfd", NULL);
    return NULL;
  }
  if (wring != 0) {
    r->wq = wq_new((uint64_t)wring, (uint64_t)wslots);
    if (!r->wq || !r->wq->ring || !r->wq->descs) {
      reader_unref(r);
      throw_errno(env, ENOMEM, "malloc", "(write queue)");
      return NULL;
    }
  }

  napi_value result, handle, bufs, offs, lens;
  if (napi_create_external(env, r, handle_finalize, NULL, &handle) != napi_ok) {
    reader_unref(r);
    napi_throw_error(env, "ERR_NAPI", "napi_create_external failed");
    return NULL;
  }
  CHECK(napi_create_object(env, &result));
  CHECK(napi_create_array_with_length(env, (size_t)nslabs, &bufs));
  CHECK(napi_create_array_with_length(env, (size_t)nslabs, &offs));
  CHECK(napi_create_array_with_length(env, (size_t)nslabs, &lens));
  for (int32_t i = 0; i < nslabs; i++) {
    slab_t *s = &r->slabs[i];
    s->index = (uint32_t)i;
    napi_value buf, ab1, ab2, ta1, ta2;
    void *d1, *d2;
    CHECK(napi_create_buffer(env, (size_t)slab_bytes, (void **)&s->data, &buf));
    CHECK(napi_create_arraybuffer(env, (size_t)max_pkts * 4, &d1, &ab1));
    CHECK(napi_create_arraybuffer(env, (size_t)max_pkts * 4, &d2, &ab2));
    CHECK(napi_create_typedarray(env, napi_uint32_array, (size_t)max_pkts, ab1, 0, &ta1));
    CHECK(napi_create_typedarray(env, napi_uint32_array, (size_t)max_pkts, ab2, 0, &ta2));
    s->offsets = d1;
    s->lengths = d2;
    CHECK(napi_create_reference(env, buf, 1, &s->refs[0]));
    CHECK(napi_create_reference(env, ta1, 1, &s->refs[1]));
    CHECK(napi_create_reference(env, ta2, 1, &s->refs[2]));
    CHECK(napi_set_element(env, bufs, (uint32_t)i, buf));
    CHECK(napi_set_element(env, offs, (uint32_t)i, ta1));
    CHECK(napi_set_element(env, lens, (uint32_t)i, ta2));
  }
  CHECK(napi_set_named_property(env, result, "handle", handle));
  CHECK(napi_set_named_property(env, result, "bufs", bufs));
  CHECK(napi_set_named_property(env, result, "offsets", offs));
  CHECK(napi_set_named_property(env, result, "lengths", lens));
  return result;
}

// Ends the thread and closes the threadsafe function; safe to call more than once. The thread only ever waits in
// poll() (which the stop eventfd ends), never on the JS thread, so the join is short.
static void reader_halt(reader_t *r) {
  if (r->stopped) return;
  if (r->thread_started) {
    __atomic_store_n(&r->stop, 1, __ATOMIC_RELEASE);
    uint64_t one = 1;
    ssize_t n = write(r->stop_fd, &one, sizeof one);
    (void)n;
    pthread_join(r->thread, NULL);
  }
  r->stopped = true;  // call_js now drops whatever is still queued
  if (r->thread_started) napi_release_threadsafe_function(r->tsfn, napi_tsfn_abort);
}

// Environment teardown (the loop ended with an unref'd reader still running): stop the thread before Node frees
// the threadsafe function it calls.
static void env_cleanup(void *arg) { reader_halt(arg); }

static napi_value ReaderStart(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  reader_t *r = get_reader(env, argv[0]);
  if (!r) return NULL;
  if (r->thread_started || r->stopped) {
    napi_throw_error(env, "ERR_INVALID_STATE", "reader was already started or stopped");
    return NULL;
  }
  napi_value name;
  CHECK(napi_create_string_utf8(env, "tundra-tun-reader", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_create_threadsafe_function(env, argv[1], NULL, name, 0, 1, NULL, tsfn_finalize, r, call_js, &r->tsfn));
  r->js_refs++;  // released in tsfn_finalize

  // The reader thread takes no signals: Node's handlers belong on Node's threads.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  if (r->wq) __atomic_store_n(&r->io_running, 1, __ATOMIC_SEQ_CST);  // from now on the thread writes the queue
  int err = pthread_create(&r->thread, NULL, reader_main, r);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (err) {
    __atomic_store_n(&r->io_running, 0, __ATOMIC_SEQ_CST);
    napi_release_threadsafe_function(r->tsfn, napi_tsfn_abort);
    r->stopped = true;
    throw_errno(env, err, "pthread_create", NULL);
    return NULL;
  }
  pthread_setname_np(r->thread, "tundra-tun-rx");
  r->thread_started = true;
  napi_add_env_cleanup_hook(env, env_cleanup, r);
  return NULL;
}

// ---------------------------------------------------------------------------------------------------------------
// inline reading: no thread, the JS thread's event loop polls the fd
//
// Each crossing between threads costs a wakeup (tens of µs on a VM); the threaded reader pays three per packet
// (reader thread, JS thread, reader thread again to write). Inline, the kernel wakes the JS thread once: it reads a
// batch, JS processes it and writes the answers synchronously (writeBatch). The slab is reused after the callback
// returns, as with the thread. At most one slab's worth is read per poll event, so timers and sockets still get
// their turn (the poll is level-triggered and fires again at once).

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

// Busy polling only pays when the packet's other end runs on another CPU; with one CPU to run on (e.g. the whole
// path pinned to a core) it would only take time from the processes we wait for. Checked at most every 100 ms.
static bool may_spin(reader_t *r, uint64_t now) {
  if (r->spin_ns == 0) return false;
  if (now - r->affinity_checked_ns > 100000000u) {
    cpu_set_t set;
    r->multi_cpu = sched_getaffinity(0, sizeof set, &set) != 0 || CPU_COUNT(&set) > 1;
    r->affinity_checked_ns = now;
  }
  return r->multi_cpu;
}

// Calls the batch callback for slab s, or with s NULL the error callback (the fd failed for good: polling stops).
// False when the reader was stopped from inside it. A throwing callback is an uncaught exception, as in call_js.
static bool inline_dispatch(reader_t *r, slab_t *s, uint32_t count, double bytes) {
  napi_env env = r->env;
  if (!s) uv_poll_stop(&r->poll);
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return false;
  napi_value cb, recv, argv[3];
  napi_get_reference_value(env, r->callback, &cb);
  napi_get_global(env, &recv);  // napi_make_callback wants an object
  if (s) {
    s->count = count;
    s->bytes = bytes;
    r->dispatches += 1;
    napi_create_int32(env, (int32_t)s->index, &argv[0]);
    napi_create_uint32(env, count, &argv[1]);
    napi_create_double(env, bytes, &argv[2]);
  } else {
    napi_create_int32(env, -1, &argv[0]);
    napi_create_int32(env, r->fatal_errno, &argv[1]);
    argv[2] = errno_error(env, r->fatal_errno, "read", "(TUN reader stopped)");
  }
  r->in_cb = true;
  napi_status st = napi_make_callback(env, r->actx, recv, cb, 3, argv, NULL);
  r->in_cb = false;
  bool pending = false;
  if (st != napi_ok && napi_is_exception_pending(env, &pending) == napi_ok && pending) {
    napi_value exc;
    if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
  }
  napi_close_handle_scope(env, scope);
  return s != NULL && !r->stopped;
}

static void inline_fail(reader_t *r) { inline_dispatch(r, NULL, 0, 0); }

// Reads and dispatches batches; then, with busy polling on, keeps reading for spin_ns after the last packet (the
// answer to what was just forwarded usually comes back within tens of µs, and catching it here saves the wakeup).
// Returns to the event loop after INLINE_SLICE_NS at most, so timers and sockets keep their turn.
#define INLINE_SLICE_NS 2000000u
static void inline_poll_cb(uv_poll_t *h, int status, int events);

// Back into the loop's epoll set after a spin (inline_poll_cb). uv_poll_start only queues the fd for the loop's next
// poll; a failure (never seen: the fd is open) ends reading as a fatal read error would.
static void inline_reattach(reader_t *r) {
  int err = uv_poll_start(&r->poll, UV_READABLE, inline_poll_cb);
  if (err != 0) {
    r->fatal_errno = -err;
    inline_fail(r);
  }
}

static void inline_poll_cb(uv_poll_t *h, int status, int events) {
  reader_t *r = h->data;
  if (r->stopped) return;
  if (status < 0) {
    // libuv's status is generic (EBADF); a read gives the kernel's own reason, as the reader thread reports it.
    uint32_t count = 0;
    size_t pos = 0;
    double bytes = 0;
    if (fill_slab(r, &r->slabs[0], &count, &pos, &bytes) != FILL_FATAL) r->fatal_errno = -status;
    inline_fail(r);
    return;
  }
  slab_t *s = &r->slabs[0];
  uint64_t start = now_ns(), last = start;
  bool detached = false;
  for (;;) {
    uint32_t count = 0;
    size_t pos = 0;
    double bytes = 0;
    int got = fill_slab(r, s, &count, &pos, &bytes);
    uint64_t now = now_ns();
    if (count > 0) {
      if (!inline_dispatch(r, s, count, bytes)) return;  // stopped: the handle is closing
      last = now = now_ns();
    }
    if (got == FILL_FATAL) {
      inline_fail(r);
      return;
    }
    if (now - start > INLINE_SLICE_NS) {
      if (detached) inline_reattach(r);
      return;
    }
    if (got == FILL_DRAINED) {
      if (!may_spin(r, now) || now - last > r->spin_ns) {
        if (detached) inline_reattach(r);
        return;
      }
      if (!detached) {
        // Spinning, the thread reads the fd itself, so the fd leaves the loop's epoll set until the spin ends: while
        // an epoll watches a TUN, every packet queued to it runs the epoll's wakeup callback on the sender's CPU
        // (under a 64-byte UDP flood tun_net_xmit fell from 2.95 to 1.61 % of all samples, bench/README). libuv's
        // stop is an EPOLL_CTL_DEL; the start before returning is an ADD at the loop's next poll, which reports what
        // came in between.
        uv_poll_stop(&r->poll);
        detached = true;
      }
      r->spins += 1;
      // A spinning thread must not hold a CPU that a runnable task is waiting for: often the very process whose
      // packet we just wrote (woken onto this CPU), which would otherwise wait out the whole spin. With nothing
      // else runnable here sched_yield returns at once. Measured (bench/README "Tried and dropped"): 64-byte UDP
      // delivered 94-110 -> 151-212 kpps in most runs, a new-flow probe's round trip 208 -> 109 us.
      sched_yield();
    }
  }
}

static void inline_closed(uv_handle_t *h) { reader_unref(h->data); }

// What start_poll needs to poll an fd on the JS thread (the inline TUN reader, the batched UDP socket).
typedef struct {
  uv_poll_t *poll;
  int fd;
  void *owner;  // the poll handle's data
  uv_poll_cb cb;
  uv_close_cb closed;  // releases one of *refs
  int *refs;
  const char *name;  // the async resource name of the JS calls
  napi_async_context *actx;
  napi_ref *callback;
} poll_start_t;

// Holds the JS callback and an async context for it, and starts polling for reads. On failure everything is undone
// (a handle that was initialised is closed, holding a ref of the owner until it is), a JS error is thrown and false
// returned.
static bool start_poll(napi_env env, const poll_start_t *p, napi_value fn) {
  struct uv_loop_s *loop;
  napi_value name;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || napi_create_string_utf8(env, p->name, NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, NULL, name, p->actx) != napi_ok) {
    napi_failed(env, "start_poll: async context");
    return false;
  }
  if (napi_create_reference(env, fn, 1, p->callback) != napi_ok) {
    napi_async_destroy(env, *p->actx);
    napi_failed(env, "start_poll: napi_create_reference");
    return false;
  }
  int err = uv_poll_init(loop, p->poll, p->fd);
  if (err == 0) {
    p->poll->data = p->owner;
    err = uv_poll_start(p->poll, UV_READABLE, p->cb);
    if (err != 0) {
      (*p->refs)++;
      uv_close((uv_handle_t *)p->poll, p->closed);
    }
  }
  if (err == 0) return true;
  napi_async_destroy(env, *p->actx);
  napi_delete_reference(env, *p->callback);
  *p->callback = NULL;
  throw_errno(env, -err, "uv_poll_start", NULL);
  return false;
}

static napi_value ReaderStartInline(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  size_t argc = 3;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 2) {
    throw_type(env, "not enough arguments");
    return NULL;
  }
  reader_t *r = get_reader(env, argv[0]);
  if (!r) return NULL;
  int32_t spin_us = 0;
  if (argc >= 3 && !get_i32(env, argv[2], &spin_us, "busyPollUs")) return NULL;
  if (spin_us < 0 || spin_us > 1000000) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "busyPollUs must be 0..1000000");
    return NULL;
  }
  r->spin_ns = (uint64_t)spin_us * 1000u;
  if (r->thread_started || r->inline_started || r->stopped) {
    napi_throw_error(env, "ERR_INVALID_STATE", "reader was already started or stopped");
    return NULL;
  }
  if (r->wq) {
    napi_throw_error(env, "ERR_INVALID_STATE", "an inline reader writes on the JS thread (create it without a write queue)");
    return NULL;
  }
  poll_start_t ps = {&r->poll, r->fd, r, inline_poll_cb, inline_closed, &r->js_refs, "tundra-tun-inline", &r->actx, &r->callback};
  if (!start_poll(env, &ps, argv[1])) return NULL;
  r->env = env;
  r->inline_started = true;
  r->js_refs++;  // released when the poll handle is closed
  return NULL;
}

static void inline_halt(reader_t *r) {
  if (!r->inline_started || r->stopped) return;
  r->stopped = true;
  uv_poll_stop(&r->poll);
  uv_close((uv_handle_t *)&r->poll, inline_closed);
  napi_async_destroy(r->env, r->actx);
  napi_delete_reference(r->env, r->callback);
  r->callback = NULL;
}

static napi_value ReaderRef(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  reader_t *r = get_reader(env, argv[0]);
  if (!r) return NULL;
  bool ref = true;
  napi_get_value_bool(env, argv[1], &ref);
  if (r->inline_started && !r->stopped) {
    if (ref) uv_ref((uv_handle_t *)&r->poll);
    else uv_unref((uv_handle_t *)&r->poll);
    return NULL;
  }
  if (!r->thread_started || r->stopped) return NULL;
  if (ref) CHECK(napi_ref_threadsafe_function(env, r->tsfn));
  else CHECK(napi_unref_threadsafe_function(env, r->tsfn));
  return NULL;
}

static napi_value ReaderStop(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  reader_t *r = get_reader(env, argv[0]);
  if (!r) return NULL;
  if (r->stopped) return NULL;
  inline_halt(r);
  reader_halt(r);
  if (r->thread_started) napi_remove_env_cleanup_hook(env, env_cleanup, r);
  if (r->wq) wq_drain(r);  // a hand-over that raced with a fatal exit of the thread; before the slabs can go
  for (uint32_t i = 0; i < r->nslabs; i++)
    for (int k = 0; k < 3; k++)
      if (r->slabs[i].refs[k]) {
        napi_delete_reference(env, r->slabs[i].refs[k]);
        r->slabs[i].refs[k] = NULL;
      }
  return NULL;
}

static napi_value ReaderStats(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  reader_t *r = get_reader(env, argv[0]);
  if (!r) return NULL;
  double *out;
  size_t len;
  if (!get_typed(env, argv[1], napi_float64_array, (void **)&out, &len, "out")) return NULL;
  double v[5] = {r->reads, r->read_errors, r->slab_waits, r->dispatches, r->spins};
  for (size_t i = 0; i < len && i < 5; i++) out[i] = v[i];
  return NULL;
}

// ---------------------------------------------------------------------------------------------------------------
// batched UDP socket: the DNS front end for node processes, recvmmsg/sendmmsg on the JS thread's event loop
//
// Node's dgram costs a recvmsg, a Buffer, an address object and a 'message' event per datagram, and a SendWrap, an
// address parse and a callback per send. Here the kernel fills a batch area JS owns a view of, JS gets one call per
// batch and sends its answers with one sendmmsg. Readiness comes from a uv_poll_t on the calling thread's loop (as the
// inline TUN reader), so it works on whichever thread opened it.
//
//   udpOpen(address, port, maxDatagrams, slotBytes) -> { handle, address, family, port, buf, lengths, peers }
//       a nonblocking socket bound as Node's dgram binds by default (no SO_REUSEADDR, the kernel's IPV6_V6ONLY).
//       Datagram i of a batch is at buf[i * slotBytes..], lengths[i] long (more than slotBytes: it was cut short, the
//       kernel's MSG_TRUNC length), from the peer at peers[i * 28..] (struct sockaddr_in or sockaddr_in6)
//   udpStart(handle, cb(count))       each readable event reads batches until the socket is drained (or 2 ms have
//                                     passed) and calls cb once per batch, synchronously: the area is reused after
//   udpSend(handle, buf, offsets, lengths, peers, peerIdx, count, counters: Float64Array(4)) -> datagrams sent
//       sendmmsg of buf[offsets[i]..+lengths[i]] to the peer at peers[peerIdx[i] * 28..]; nothing is retried or
//       waited for: counters += [dropped for a full socket buffer (EAGAIN, ENOBUFS), dropped for other errors,
//       last errno, bytes sent]
//   udpStats(handle, out: Float64Array(4))   [recvmmsg calls, datagrams, batches (callbacks), receive errors]
//   udpClose(handle)                  idempotent; no callback runs afterwards; done on env teardown too

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

// <net/if.h> clashes with <linux/if.h> (included above), which lacks this one
extern unsigned int if_nametoindex(const char *ifname);

#define UDP_MAGIC 0x75647042u
#define UDP_PEER_BYTES 28  // sizeof(struct sockaddr_in6), the larger of the two
#define UDP_MAX_BATCH 1024 // UIO_MAXIOV: the most one recvmmsg/sendmmsg takes
#define UDP_SLICE_NS 2000000u

typedef struct {
  uint32_t magic;
  int fd;
  int family;
  uint32_t max, slot;
  uint8_t *buf;
  uint32_t *lens;
  uint8_t *peers;
  napi_ref views[3];
  struct mmsghdr *rmsgs, *smsgs;
  struct iovec *riov, *siov;
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_async_context actx;
  bool polling, closed, hooked;
  int owners;  // the JS handle, and the poll handle until it is closed
  double recvs, datagrams, batches, recv_errors;
} udp_t;

static void udp_unref(udp_t *u) {
  if (--u->owners > 0) return;
  free(u->rmsgs);
  free(u->smsgs);
  free(u->riov);
  free(u->siov);
  free(u);
}

static void udp_poll_closed(uv_handle_t *h) { udp_unref(h->data); }

// Stops polling and closes the socket (at once, as libuv closes its own: the port is free when this returns).
// `js`: also release what JS gave us. Not from the env's cleanup hook, where the env is going away: there the poll
// handle is closed without a callback and u is left allocated (a worker's loop finishes closing its handles after
// this addon may have been unloaded, so no code of ours may run then, and the handle's memory must stay valid).
static void udp_halt(udp_t *u, bool js) {
  if (u->closed) return;
  u->closed = true;
  if (u->polling) {
    uv_poll_stop(&u->poll);
    uv_close((uv_handle_t *)&u->poll, js ? udp_poll_closed : NULL);
  }
  close(u->fd);
  u->fd = -1;
  if (!js) return;
  if (u->callback) {
    napi_async_destroy(u->env, u->actx);
    napi_delete_reference(u->env, u->callback);
    u->callback = NULL;
  }
  for (int k = 0; k < 3; k++)
    if (u->views[k]) {
      napi_delete_reference(u->env, u->views[k]);
      u->views[k] = NULL;
    }
}

static void udp_env_cleanup(void *arg) {
  udp_t *u = arg;
  u->hooked = false;
  udp_halt(u, false);
}

static void udp_finalize(napi_env env, void *data, void *hint) {
  udp_t *u = data;
  if (u->hooked) {
    napi_remove_env_cleanup_hook(env, udp_env_cleanup, u);
    u->hooked = false;
  }
  udp_halt(u, true);
  udp_unref(u);
}

static udp_t *get_udp(napi_env env, napi_value v) {
  void *p = NULL;
  napi_valuetype type;
  if (napi_typeof(env, v, &type) != napi_ok || type != napi_external || napi_get_value_external(env, v, &p) != napi_ok ||
      !p || ((udp_t *)p)->magic != UDP_MAGIC) {
    throw_type(env, "handle must be a UDP socket handle");
    return NULL;
  }
  return p;
}

// "192.0.2.1", "::1", "fe80::1%eth0" -> a sockaddr; false for anything else.
static bool udp_parse_addr(const char *text, uint16_t port, struct sockaddr_in6 *sa, socklen_t *len) {
  memset(sa, 0, sizeof *sa);
  struct sockaddr_in *v4 = (struct sockaddr_in *)sa;
  if (inet_pton(AF_INET, text, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    *len = sizeof *v4;
    return true;
  }
  char host[INET6_ADDRSTRLEN + IFNAMSIZ + 2];
  if (strlen(text) >= sizeof host) return false;
  strcpy(host, text);
  char *scope = strchr(host, '%');
  if (scope) *scope++ = 0;
  if (inet_pton(AF_INET6, host, &sa->sin6_addr) != 1) return false;
  if (scope) {
    sa->sin6_scope_id = if_nametoindex(scope);
    if (sa->sin6_scope_id == 0) sa->sin6_scope_id = (uint32_t)strtoul(scope, NULL, 10);
  }
  sa->sin6_family = AF_INET6;
  sa->sin6_port = htons(port);
  *len = sizeof *sa;
  return true;
}

static napi_value UdpOpen(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;
  char text[128];
  size_t text_len = 0;
  if (napi_get_value_string_utf8(env, argv[0], text, sizeof text, &text_len) != napi_ok) {
    throw_type(env, "address must be a string");
    return NULL;
  }
  int32_t port, max, slot;
  if (!get_i32(env, argv[1], &port, "port") || !get_i32(env, argv[2], &max, "maxDatagrams") ||
      !get_i32(env, argv[3], &slot, "slotBytes"))
    return NULL;
  if (port < 0 || port > 65535 || max < 1 || max > UDP_MAX_BATCH || slot < 512 || slot > 65536) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "udpOpen needs port 0..65535, maxDatagrams 1..1024, slotBytes 512..65536");
    return NULL;
  }
  struct sockaddr_in6 sa;
  socklen_t sa_len;
  if (!udp_parse_addr(text, (uint16_t)port, &sa, &sa_len)) {
    char msg[200];
    snprintf(msg, sizeof msg, "not an IPv4 or IPv6 address: \"%s\"", text);
    napi_throw_type_error(env, "ERR_INVALID_IP_ADDRESS", msg);
    return NULL;
  }
  char where[160];
  snprintf(where, sizeof where, "%s:%d", text, port);
  int fd = socket(sa.sin6_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw_errno(env, errno, "socket", where);
    return NULL;
  }
  if (bind(fd, (struct sockaddr *)&sa, sa_len) != 0) {
    int err = errno;
    close(fd);
    throw_errno(env, err, "bind", where);
    return NULL;
  }
  struct sockaddr_in6 bound;
  socklen_t bound_len = sizeof bound;
  memset(&bound, 0, sizeof bound);
  getsockname(fd, (struct sockaddr *)&bound, &bound_len);

  udp_t *u = calloc(1, sizeof *u);
  if (u) {
    u->rmsgs = calloc((size_t)max, sizeof *u->rmsgs);
    u->smsgs = calloc((size_t)max, sizeof *u->smsgs);
    u->riov = calloc((size_t)max, sizeof *u->riov);
    u->siov = calloc((size_t)max, sizeof *u->siov);
  }
  if (!u || !u->rmsgs || !u->smsgs || !u->riov || !u->siov) {
    close(fd);
    if (u) {
      u->owners = 1;
      udp_unref(u);
    }
    throw_errno(env, ENOMEM, "calloc", "(UDP socket)");
    return NULL;
  }
  u->magic = UDP_MAGIC;
  u->fd = fd;
  u->family = sa.sin6_family;
  u->max = (uint32_t)max;
  u->slot = (uint32_t)slot;
  u->env = env;
  u->owners = 1;

  napi_value handle, result, buf, ab_len, lens, ab_peers, peers, v;
  void *d;
  if (napi_create_external(env, u, udp_finalize, NULL, &handle) != napi_ok) {
    close(fd);
    udp_unref(u);
    napi_throw_error(env, "ERR_NAPI", "napi_create_external failed");
    return NULL;
  }
  // From here on the handle's finalizer owns u (and closes the socket).
  CHECK(napi_create_buffer(env, (size_t)max * (size_t)slot, &d, &buf));
  u->buf = d;
  CHECK(napi_create_arraybuffer(env, (size_t)max * 4, &d, &ab_len));
  u->lens = d;
  CHECK(napi_create_typedarray(env, napi_uint32_array, (size_t)max, ab_len, 0, &lens));
  CHECK(napi_create_arraybuffer(env, (size_t)max * UDP_PEER_BYTES, &d, &ab_peers));
  u->peers = d;
  memset(u->peers, 0, (size_t)max * UDP_PEER_BYTES);
  CHECK(napi_create_typedarray(env, napi_uint8_array, (size_t)max * UDP_PEER_BYTES, ab_peers, 0, &peers));
  CHECK(napi_create_reference(env, buf, 1, &u->views[0]));
  CHECK(napi_create_reference(env, lens, 1, &u->views[1]));
  CHECK(napi_create_reference(env, peers, 1, &u->views[2]));
  for (uint32_t i = 0; i < u->max; i++) {
    u->riov[i].iov_base = u->buf + (size_t)i * u->slot;
    u->riov[i].iov_len = u->slot;
    u->rmsgs[i].msg_hdr.msg_iov = &u->riov[i];
    u->rmsgs[i].msg_hdr.msg_iovlen = 1;
    u->rmsgs[i].msg_hdr.msg_name = u->peers + (size_t)i * UDP_PEER_BYTES;
    u->smsgs[i].msg_hdr.msg_iov = &u->siov[i];
    u->smsgs[i].msg_hdr.msg_iovlen = 1;
  }
  napi_add_env_cleanup_hook(env, udp_env_cleanup, u);
  u->hooked = true;

  char addr[INET6_ADDRSTRLEN] = "";
  int bound_port;
  if (bound.sin6_family == AF_INET6) {
    inet_ntop(AF_INET6, &bound.sin6_addr, addr, sizeof addr);
    bound_port = ntohs(bound.sin6_port);
  } else {
    struct sockaddr_in *b4 = (struct sockaddr_in *)&bound;
    inet_ntop(AF_INET, &b4->sin_addr, addr, sizeof addr);
    bound_port = ntohs(b4->sin_port);
  }
  CHECK(napi_create_object(env, &result));
  CHECK(napi_set_named_property(env, result, "handle", handle));
  CHECK(napi_create_string_utf8(env, addr, NAPI_AUTO_LENGTH, &v));
  CHECK(napi_set_named_property(env, result, "address", v));
  CHECK(napi_create_string_utf8(env, u->family == AF_INET6 ? "IPv6" : "IPv4", NAPI_AUTO_LENGTH, &v));
  CHECK(napi_set_named_property(env, result, "family", v));
  CHECK(napi_create_int32(env, bound_port, &v));
  CHECK(napi_set_named_property(env, result, "port", v));
  CHECK(napi_set_named_property(env, result, "buf", buf));
  CHECK(napi_set_named_property(env, result, "lengths", lens));
  CHECK(napi_set_named_property(env, result, "peers", peers));
  return result;
}

// One recvmmsg: datagrams read (0: none waiting), -1 on an error (counted).
static int udp_recv(udp_t *u) {
  for (uint32_t i = 0; i < u->max; i++) u->rmsgs[i].msg_hdr.msg_namelen = UDP_PEER_BYTES;
  int n;
  do n = recvmmsg(u->fd, u->rmsgs, u->max, MSG_DONTWAIT | MSG_TRUNC, NULL);
  while (n < 0 && errno == EINTR);
  u->recvs += 1;
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    u->recv_errors += 1;
    return -1;
  }
  for (int i = 0; i < n; i++) u->lens[i] = u->rmsgs[i].msg_len;
  u->datagrams += n;
  return n;
}

// Calls cb(count); false when the socket was closed from inside it. A throwing callback is an uncaught exception.
static bool udp_dispatch(udp_t *u, int count) {
  napi_env env = u->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return false;
  napi_value cb, recv, arg;
  napi_get_reference_value(env, u->callback, &cb);
  napi_get_global(env, &recv);
  napi_create_int32(env, count, &arg);
  u->batches += 1;
  napi_status st = napi_make_callback(env, u->actx, recv, cb, 1, &arg, NULL);
  bool pending = false;
  if (st != napi_ok && napi_is_exception_pending(env, &pending) == napi_ok && pending) {
    napi_value exc;
    if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
  }
  napi_close_handle_scope(env, scope);
  return !u->closed;
}

// Level-triggered: whatever is left after the time slice wakes the loop again at once, after timers and sockets.
static void udp_poll_cb(uv_poll_t *h, int status, int events) {
  udp_t *u = h->data;
  if (u->closed) return;
  if (status < 0) {
    // POLLERR: libuv has stopped polling. A socket error is transient for UDP (reading SO_ERROR clears it): count it
    // and poll again, so the socket keeps serving.
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    u->recv_errors += 1;
    if (uv_poll_start(&u->poll, UV_READABLE, udp_poll_cb) != 0) return;
  }
  uint64_t start = now_ns();
  for (;;) {
    int n = udp_recv(u);
    if (n <= 0) return;
    if (!udp_dispatch(u, n)) return;
    if ((uint32_t)n < u->max || now_ns() - start > UDP_SLICE_NS) return;
  }
}

static napi_value UdpStart(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  udp_t *u = get_udp(env, argv[0]);
  if (!u) return NULL;
  if (u->polling || u->closed) {
    napi_throw_error(env, "ERR_INVALID_STATE", "UDP socket was already started or closed");
    return NULL;
  }
  poll_start_t ps = {&u->poll, u->fd, u, udp_poll_cb, udp_poll_closed, &u->owners, "tundra-udp-batch", &u->actx, &u->callback};
  if (!start_poll(env, &ps, argv[1])) return NULL;
  u->polling = true;
  u->owners++;  // released when the poll handle is closed
  return NULL;
}

static napi_value UdpSend(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  if (!get_args(env, info, 8, argv)) return NULL;
  udp_t *u = get_udp(env, argv[0]);
  if (!u) return NULL;
  uint8_t *buf, *peers;
  uint32_t *offs, *lens, *idx;
  double *ctr;
  size_t buf_len, offs_len, lens_len, peers_len, idx_len, ctr_len;
  int32_t count;
  if (!get_typed(env, argv[1], napi_uint8_array, (void **)&buf, &buf_len, "buf") ||
      !get_typed(env, argv[2], napi_uint32_array, (void **)&offs, &offs_len, "offsets") ||
      !get_typed(env, argv[3], napi_uint32_array, (void **)&lens, &lens_len, "lengths") ||
      !get_typed(env, argv[4], napi_uint8_array, (void **)&peers, &peers_len, "peers") ||
      !get_typed(env, argv[5], napi_uint32_array, (void **)&idx, &idx_len, "peerIdx") ||
      !get_i32(env, argv[6], &count, "count") ||
      !get_typed(env, argv[7], napi_float64_array, (void **)&ctr, &ctr_len, "counters"))
    return NULL;
  if (ctr_len < 4) {
    throw_type(env, "counters needs 4 elements");
    return NULL;
  }
  if (count < 0 || (size_t)count > offs_len || (size_t)count > lens_len || (size_t)count > idx_len) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "count exceeds offsets/lengths/peerIdx");
    return NULL;
  }
  if (u->closed) {
    napi_throw_error(env, "ERR_SOCKET_DGRAM_NOT_RUNNING", "UDP socket is closed");
    return NULL;
  }
  socklen_t name_len = u->family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  int32_t sent = 0, i = 0;
  bool full = false;
  while (i < count) {
    uint32_t k = 0;
    for (; i < count && k < u->max; i++) {
      uint64_t off = offs[i], len = lens[i], peer = (uint64_t)idx[i] * UDP_PEER_BYTES;
      if (off + len > buf_len || len > 65535 || peer + name_len > peers_len) {
        ctr[1] += 1;
        ctr[2] = EINVAL;
        continue;
      }
      u->siov[k].iov_base = buf + off;
      u->siov[k].iov_len = (size_t)len;
      u->smsgs[k].msg_hdr.msg_name = peers + peer;
      u->smsgs[k].msg_hdr.msg_namelen = name_len;
      k++;
    }
    // Each round sends some, drops the one the kernel refused, or gives up on the rest: it always ends.
    uint32_t done = 0;
    while (done < k && !full) {
      int n = sendmmsg(u->fd, u->smsgs + done, k - done, MSG_DONTWAIT);
      if (n > 0) {
        for (int j = 0; j < n; j++) ctr[3] += u->smsgs[done + (uint32_t)j].msg_len;
        sent += n;
        done += (uint32_t)n;
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
        full = true;
      } else {
        ctr[1] += 1;
        ctr[2] = n < 0 ? errno : EIO;
        done += 1;
      }
    }
    if (full) ctr[0] += (double)(k - done);
  }
  napi_value out;
  CHECK(napi_create_int32(env, sent, &out));
  return out;
}

static napi_value UdpStats(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  udp_t *u = get_udp(env, argv[0]);
  if (!u) return NULL;
  double *out;
  size_t len;
  if (!get_typed(env, argv[1], napi_float64_array, (void **)&out, &len, "out")) return NULL;
  double v[4] = {u->recvs, u->datagrams, u->batches, u->recv_errors};
  for (size_t i = 0; i < len && i < 4; i++) out[i] = v[i];
  return NULL;
}

static napi_value UdpClose(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  udp_t *u = get_udp(env, argv[0]);
  if (!u) return NULL;
  if (u->hooked) {
    napi_remove_env_cleanup_hook(env, udp_env_cleanup, u);
    u->hooked = false;
  }
  udp_halt(u, true);
  return NULL;
}

// ---------------------------------------------------------------------------------------------------------------

static napi_value Init(napi_env env, napi_value exports) {
  // A fixed mmap threshold: glibc otherwise raises it each time a large block is freed, after which the conntrack
  // chunks a snapshot or count passes between threads (~400 KiB each) come from the heap and stay in RSS once freed
  // (measured: RSS at the conntrack cap 95 or 120 MB from run to run; with the threshold fixed, 95 MB every time).
  // Once per process is enough; a second load (another thread) sets the same value.
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  napi_property_descriptor props[] = {
      {"open", NULL, Open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setOffload", NULL, SetOffload, NULL, NULL, NULL, napi_enumerable, NULL},
      {"close", NULL, Close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"writeBatch", NULL, WriteBatch, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readerWrite", NULL, ReaderWrite, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readerWriteStats", NULL, ReaderWriteStats, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readerCreate", NULL, ReaderCreate, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readerStart", NULL, ReaderStart, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readerStartInline", NULL, ReaderStartInline, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readerRef", NULL, ReaderRef, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readerStop", NULL, ReaderStop, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readerStats", NULL, ReaderStats, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpOpen", NULL, UdpOpen, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpStart", NULL, UdpStart, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpSend", NULL, UdpSend, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpStats", NULL, UdpStats, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpClose", NULL, UdpClose, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
