// The TUN device seen from JS: open/ioctl (Node cannot), one reader thread per queue that fills preallocated slabs
// and hands whole batches to JS through a threadsafe function, and a batched write on the JS thread.
//
// Exports (all errors are JS Errors with `code` = errno name, `errno`, `syscall`):
//   open(name: string, flags: number) -> { fd: number, name: string }      flags: 1 = IFF_VNET_HDR, 2 = IFF_MULTI_QUEUE
//   setOffload(fd, flags) -> accepted flags            retries without TUN_F_USO4|TUN_F_USO6 when the kernel refuses them
//   readerCreate(fd, hdrLen, slabs, slabBytes, maxPackets) -> { handle, bufs: Buffer[], offsets: Uint32Array[],
//                                                                lengths: Uint32Array[] }
//   readerStart(handle, cb(slab, count, bytes))         cb(-1, errno, Error) reports a fatal read error (reader stopped)
//   readerRef(handle, ref: boolean)                    ref/unref the threadsafe function (keeps the loop alive or not)
//   readerStop(handle)                                 idempotent; joins the thread; no callback runs afterwards
//   readerStats(handle, out: Float64Array(4))          [reads, readErrors, slabWaits, dispatches]
//   writeBatch(fd, buf, offsets, lengths, count, hdrLen, counters: Float64Array(4)) -> packets written
//                                                      counters += [EAGAIN, other errors, last errno, bytes written]
//   close(fd)
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <node_api.h>

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

#define CHECK(call)                                                                                                    \
  do {                                                                                                                 \
    if ((call) != napi_ok) {                                                                                           \
      bool pending = false;                                                                                            \
      napi_is_exception_pending(env, &pending);                                                                        \
      if (!pending) napi_throw_error(env, "ERR_NAPI", "N-API call failed: " #call);                                   \
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
// reader thread

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
  int fd, stop_fd, release_fd;
  uint32_t hdr_len, nslabs, max_pkts;
  size_t slab_bytes;
  slab_t slabs[MAX_SLABS];
  pthread_t thread;
  bool thread_started, stopped;
  napi_threadsafe_function tsfn;
  napi_ref callback;
  int inflight;     // atomic: batches handed to JS and not yet released
  int want_release; // atomic: the reader sleeps until JS releases a slab
  int stop;         // atomic
  int fatal_errno;  // set by the reader before it reports a fatal error
  int js_refs;      // JS-thread only: handle external + tsfn; the struct is freed when both are gone
  // stats (written by the reader thread, read racily for display)
  double reads, read_errors, slab_waits, dispatches;
} reader_t;

static void reader_unref(reader_t *r) {
  if (--r->js_refs > 0) return;
  if (r->stop_fd >= 0) close(r->stop_fd);
  if (r->release_fd >= 0) close(r->release_fd);
  free(r);
}

static void release_slab(reader_t *r, slab_t *s) {
  __atomic_store_n(&s->busy, 0, __ATOMIC_SEQ_CST);
  __atomic_sub_fetch(&r->inflight, 1, __ATOMIC_SEQ_CST);
  // Wake the reader only when it sleeps waiting for this (a pending batch or a busy slab); pairs with the
  // store-then-recheck in reader_main, so one side always sees the other.
  if (__atomic_load_n(&r->want_release, __ATOMIC_SEQ_CST)) {
    uint64_t one = 1;
    ssize_t n = write(r->release_fd, &one, sizeof one);
    (void)n;
  }
}

// data is the slab, or NULL for "the reader died" (errno in fatal_errno).
static void call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  reader_t *r = context;
  slab_t *s = data;
  if (env == NULL || r->stopped) {
    if (s) release_slab(r, s);  // teardown: nobody will look at it
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
  // JS processes the batch synchronously; when the call returns (or throws) the slab goes back to the reader.
  napi_status st = napi_call_function(env, undefined, js_cb, 3, argv, NULL);
  if (s) release_slab(r, s);
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

// Reads everything that is ready into the current slab. A batch is handed to JS as soon as JS is idle (lowest
// latency), otherwise it keeps growing until JS releases the previous one or the slab is full (largest batches
// exactly when the JS thread is the bottleneck).
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
    if (mine && !full) {
      bool drained = false, fatal = false;
      while (count < r->max_pkts && r->slab_bytes - pos >= room) {
        ssize_t n = read(r->fd, s->data + pos, room);
        if (n < 0) {
          if (errno == EINTR) continue;
          if (errno == EAGAIN) drained = true;
          else {
            r->read_errors += 1;
            r->fatal_errno = errno;
            fatal = true;
          }
          break;
        }
        r->reads += 1;
        if ((size_t)n <= r->hdr_len) continue;  // nothing after the header: not a packet
        s->offsets[count] = (uint32_t)(pos + r->hdr_len);
        s->lengths[count] = (uint32_t)(n - r->hdr_len);
        bytes += (double)(n - r->hdr_len);
        count++;
        pos = (pos + (size_t)n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
      }
      if (fatal) {
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
    if (need_release) {
      __atomic_store_n(&r->want_release, 1, __ATOMIC_SEQ_CST);
      if ((count > 0 && __atomic_load_n(&r->inflight, __ATOMIC_SEQ_CST) == 0) ||
          (!mine && !__atomic_load_n(&s->busy, __ATOMIC_SEQ_CST))) {
        __atomic_store_n(&r->want_release, 0, __ATOMIC_RELAXED);
        continue;  // released in between: no need to sleep
      }
    }
    pfd[0] = (struct pollfd){.fd = r->stop_fd, .events = POLLIN};
    pfd[1] = (struct pollfd){.fd = r->release_fd, .events = POLLIN};
    pfd[2] = (struct pollfd){.fd = (mine && !full) ? r->fd : -1, .events = POLLIN};
    int rc = poll(pfd, 3, -1);
    if (need_release) __atomic_store_n(&r->want_release, 0, __ATOMIC_RELAXED);
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
  return NULL;
}

static void reader_halt(reader_t *r);
static void env_cleanup(void *arg);

static void handle_finalize(napi_env env, void *data, void *hint) {
  reader_t *r = data;
  // Should have been stopped by close(); a thread writing into freed memory would be far worse than a short wait.
  if (r->thread_started && !r->stopped) {
    reader_halt(r);
    napi_remove_env_cleanup_hook(env, env_cleanup, r);
  }
  reader_unref(r);
}

static reader_t *get_reader(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p) {
    throw_type(env, "handle must be a reader handle");
    return NULL;
  }
  return p;
}

static napi_value ReaderCreate(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (!get_args(env, info, 5, argv)) return NULL;
  int32_t fd, hdr, nslabs, slab_bytes, max_pkts;
  if (!get_i32(env, argv[0], &fd, "fd") || !get_i32(env, argv[1], &hdr, "hdrLen") ||
      !get_i32(env, argv[2], &nslabs, "slabs") || !get_i32(env, argv[3], &slab_bytes, "slabBytes") ||
      !get_i32(env, argv[4], &max_pkts, "maxPackets"))
    return NULL;
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
  int err = pthread_create(&r->thread, NULL, reader_main, r);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (err) {
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

static napi_value ReaderRef(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  reader_t *r = get_reader(env, argv[0]);
  if (!r) return NULL;
  bool ref = true;
  napi_get_value_bool(env, argv[1], &ref);
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
  reader_halt(r);
  if (r->thread_started) napi_remove_env_cleanup_hook(env, env_cleanup, r);
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
  double v[4] = {r->reads, r->read_errors, r->slab_waits, r->dispatches};
  for (size_t i = 0; i < len && i < 4; i++) out[i] = v[i];
  return NULL;
}

// ---------------------------------------------------------------------------------------------------------------

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"open", NULL, Open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setOffload", NULL, SetOffload, NULL, NULL, NULL, napi_enumerable, NULL},
      {"close", NULL, Close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"writeBatch", NULL, WriteBatch, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readerCreate", NULL, ReaderCreate, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readerStart", NULL, ReaderStart, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readerRef", NULL, ReaderRef, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readerStop", NULL, ReaderStop, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readerStats", NULL, ReaderStats, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
