#include "sockets.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <uv.h>

#include <cerrno>
#include <memory>
#include <string>

#include "errors.h"
#include "netns.h"
#include "options.h"
#include "sockaddr.h"
#include "unique_fd.h"

namespace ambient {

namespace {

// From linux/netfilter_ipv4.h and linux/netfilter_ipv6/ip6_tables.h, which clash with glibc's
// netinet/in.h when included together.
constexpr int kSoOriginalDst = 80;
constexpr int kIp6tSoOriginalDst = 80;
#ifndef IPV6_FREEBIND
constexpr int IPV6_FREEBIND = 78;
#endif

std::string FdDetail(int fd) { return "fd " + std::to_string(fd); }

int FdArg(const Napi::CallbackInfo& info, size_t index) {
  if (!info[index].IsNumber()) throw Napi::TypeError::New(info.Env(), "fd must be a number");
  return info[index].As<Napi::Number>().Int32Value();
}

void SetIntOpt(Napi::Env env, int fd, int level, int name, int value, const char* label,
               const std::string& detail) {
  if (::setsockopt(fd, level, name, &value, sizeof(value)) != 0) {
    throw ErrnoError(env, errno, "setsockopt", std::string(label) + " " + detail);
  }
}

// IP_TRANSPARENT lets the socket use (and accept on) addresses that are not local; the IPv6 option
// is separate from the IPv4 one.
int SetTransparent(int fd, int family) {
  int one = 1;
  int rc = family == AF_INET6 ? ::setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof(one))
                              : ::setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one));
  return rc == 0 ? 0 : errno;
}

// socket(2) in the current namespace: callers hold a NetnsScope.
UniqueFd NewTcpSocket(Napi::Env env, int family, const std::string& detail) {
  UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP));
  if (!fd.valid()) throw ErrnoError(env, errno, "socket", detail);
  return fd;
}

// createListener({ netnsFd, address, port, backlog, mark, reusePort, transparent, ipv6Only })
//   -> { fd, transparent }
// transparent: 0 off, 1 best effort, 2 required.
Napi::Value CreateListener(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object opts = info[0].As<Napi::Object>();
  int netns_fd = OptInt(opts, "netnsFd", -1);
  SocketAddress addr = ParseSocketAddress(env, ReqString(opts, "address"), OptInt(opts, "port", 0));
  int backlog = OptInt(opts, "backlog", 511);
  int64_t mark = OptInt64(opts, "mark", -1);
  bool reuse_port = OptBool(opts, "reusePort", true);
  int transparent = OptInt(opts, "transparent", 1);
  Napi::Value v6only = opts.Get("ipv6Only");
  std::string detail = addr.ToString();

  UniqueFd fd;
  bool is_transparent = false;
  {
    NetnsScope scope(env, netns_fd);
    fd = NewTcpSocket(env, addr.family(), detail);
    SetIntOpt(env, fd.get(), SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR", detail);
    if (reuse_port) SetIntOpt(env, fd.get(), SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT", detail);
    if (mark >= 0) {
      SetIntOpt(env, fd.get(), SOL_SOCKET, SO_MARK, static_cast<int>(mark), "SO_MARK", detail);
    }
    if (transparent != 0) {
      int err = SetTransparent(fd.get(), addr.family());
      if (err != 0 && transparent == 2) throw ErrnoError(env, err, "setsockopt", "IP_TRANSPARENT " + detail);
      is_transparent = err == 0;
    }
    if (addr.family() == AF_INET6 && v6only.IsBoolean()) {
      SetIntOpt(env, fd.get(), SOL_IPV6, IPV6_V6ONLY, v6only.As<Napi::Boolean>().Value() ? 1 : 0,
                "IPV6_V6ONLY", detail);
    }
    CheckSys(env, ::bind(fd.get(), addr.get(), addr.length), "bind", detail);
    CheckSys(env, ::listen(fd.get(), backlog), "listen", detail);
  }

  Napi::Object out = Napi::Object::New(env);
  out.Set("transparent", is_transparent);
  out.Set("fd", fd.release());
  return out;
}

// A TCP connect started synchronously inside a namespace and completed asynchronously on the event
// loop: uv_poll waits for writability, SO_ERROR tells the outcome, a uv_timer bounds the wait.
//
// new PendingConnect({ netnsFd, address, port, mark, sourceAddress, sourcePort, transparent,
//                      timeoutMs }, callback(err, fd))
class PendingConnect : public Napi::ObjectWrap<PendingConnect> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "PendingConnect", {InstanceMethod<&PendingConnect::Cancel>("cancel")});
  }

  explicit PendingConnect(const Napi::CallbackInfo& info) : Napi::ObjectWrap<PendingConnect>(info) {
    Napi::Env env = info.Env();
    Napi::Object opts = info[0].As<Napi::Object>();
    if (!info[1].IsFunction()) throw Napi::TypeError::New(env, "callback must be a function");
    int netns_fd = OptInt(opts, "netnsFd", -1);
    SocketAddress dst = ParseSocketAddress(env, ReqString(opts, "address"), OptInt(opts, "port", 0));
    int64_t mark = OptInt64(opts, "mark", -1);
    bool transparent = OptBool(opts, "transparent", false);
    int64_t timeout_ms = OptInt64(opts, "timeoutMs", 0);
    std::string source = OptString(opts, "sourceAddress", "");
    target_ = dst.ToString();

    SocketAddress src;
    if (!source.empty()) {
      src = ParseSocketAddress(env, source, OptInt(opts, "sourcePort", 0));
      if (src.family() != dst.family()) {
        throw ErrnoError(env, EAFNOSUPPORT, "bind", src.ToString() + " for " + target_,
                         "source and destination address families differ");
      }
    }

    {
      NetnsScope scope(env, netns_fd);
      fd_ = NewTcpSocket(env, dst.family(), target_);
      if (mark >= 0) {
        SetIntOpt(env, fd_.get(), SOL_SOCKET, SO_MARK, static_cast<int>(mark), "SO_MARK", target_);
      }
      if (transparent) {
        int err = SetTransparent(fd_.get(), dst.family());
        if (err != 0) throw ErrnoError(env, err, "setsockopt", "IP_TRANSPARENT " + target_);
        if (dst.family() == AF_INET6) {
          SetIntOpt(env, fd_.get(), SOL_IPV6, IPV6_FREEBIND, 1, "IPV6_FREEBIND", target_);
        } else {
          SetIntOpt(env, fd_.get(), SOL_IP, IP_FREEBIND, 1, "IP_FREEBIND", target_);
        }
      }
      if (!source.empty()) {
        CheckSys(env, ::bind(fd_.get(), src.get(), src.length), "bind", src.ToString());
      }
      if (::connect(fd_.get(), dst.get(), dst.length) != 0 && errno != EINPROGRESS) {
        throw ErrnoError(env, errno, "connect", target_);
      }
    }

    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    context_ = std::make_unique<Napi::AsyncContext>(env, "AmbientNativeConnect", info.This().As<Napi::Object>());

    // From here on, every failure closes the handles before throwing: a handle must never point at
    // an object whose constructor failed.
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok) throw Napi::Error::New(env, "no event loop");
    auto poll = std::make_unique<uv_poll_t>();
    int rc = uv_poll_init(loop, poll.get(), fd_.get());
    if (rc != 0) throw ErrnoError(env, -rc, "uv_poll_init", target_);
    poll_ = poll.release();
    poll_->data = this;
    timer_ = new uv_timer_t;
    uv_timer_init(loop, timer_);
    timer_->data = this;

    rc = uv_poll_start(poll_, UV_WRITABLE, OnWritable);
    if (rc != 0) {
      CloseHandles();
      throw ErrnoError(env, -rc, "uv_poll_start", target_);
    }
    if (timeout_ms > 0) uv_timer_start(timer_, OnTimeout, static_cast<uint64_t>(timeout_ms), 0);
    Ref();
  }

  ~PendingConnect() override { CloseHandles(); }

 private:
  Napi::Value Cancel(const Napi::CallbackInfo& info) {
    Finish(ECANCELED);
    return info.Env().Undefined();
  }

  static void OnWritable(uv_poll_t* handle, int status, int /*events*/) {
    auto* self = static_cast<PendingConnect*>(handle->data);
    int err = 0;
    socklen_t len = sizeof(err);
    if (::getsockopt(self->fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    // libuv reports EPOLLERR as UV_EBADF; SO_ERROR holds the real reason (ECONNREFUSED...).
    if (err == 0 && status < 0) err = -status;
    self->Finish(err);
  }

  static void OnTimeout(uv_timer_t* handle) { static_cast<PendingConnect*>(handle->data)->Finish(ETIMEDOUT); }

  void CloseHandles() {
    // uv_close removes the fd from epoll synchronously, so the fd can be closed or handed to Node
    // right after; the memory goes when libuv calls back.
    if (poll_ != nullptr) {
      poll_->data = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(poll_),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
      poll_ = nullptr;
    }
    if (timer_ != nullptr) {
      timer_->data = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(timer_),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
      timer_ = nullptr;
    }
  }

  void Finish(int err) {
    if (done_) return;
    done_ = true;
    CloseHandles();
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (err != 0) {
      fd_.reset();
      Napi::Error error = ErrnoError(env, err, "connect", target_);
      InvokeFromLoop(env, callback_, Value(), *context_, {error.Value()});
    } else {
      Napi::Number fd = Napi::Number::New(env, fd_.release());
      InvokeFromLoop(env, callback_, Value(), *context_, {env.Null(), fd});
    }
    callback_.Reset();
    Unref();
  }

  UniqueFd fd_;
  std::string target_;
  uv_poll_t* poll_ = nullptr;
  uv_timer_t* timer_ = nullptr;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> context_;
  bool done_ = false;
};

// originalDst(fd) -> { address, port, family }: the destination before NAT REDIRECT rewrote it.
Napi::Value OriginalDst(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  sockaddr_storage local{};
  socklen_t len = sizeof(local);
  CheckSys(env, ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len), "getsockname", FdDetail(fd));

  sockaddr_storage orig{};
  len = sizeof(orig);
  if (local.ss_family == AF_INET6) {
    // A dual-stack socket may carry an IPv4 connection, whose conntrack entry only the IPv4 option finds.
    if (::getsockopt(fd, SOL_IPV6, kIp6tSoOriginalDst, &orig, &len) == 0) {
      return SocketAddressToJs(env, reinterpret_cast<sockaddr*>(&orig));
    }
    int err6 = errno;
    len = sizeof(orig);
    if (::getsockopt(fd, SOL_IP, kSoOriginalDst, &orig, &len) == 0) {
      return SocketAddressToJs(env, reinterpret_cast<sockaddr*>(&orig));
    }
    throw ErrnoError(env, err6, "getsockopt", "IP6T_SO_ORIGINAL_DST " + FdDetail(fd));
  }
  CheckSys(env, ::getsockopt(fd, SOL_IP, kSoOriginalDst, &orig, &len), "getsockopt",
           "SO_ORIGINAL_DST " + FdDetail(fd));
  return SocketAddressToJs(env, reinterpret_cast<sockaddr*>(&orig));
}

// setMark(fd, mark)
Napi::Value SetMark(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  int64_t mark = info[1].As<Napi::Number>().Int64Value();
  SetIntOpt(env, fd, SOL_SOCKET, SO_MARK, static_cast<int>(static_cast<uint32_t>(mark)), "SO_MARK", FdDetail(fd));
  return env.Undefined();
}

// getMark(fd) -> number
Napi::Value GetMark(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  uint32_t mark = 0;
  socklen_t len = sizeof(mark);
  CheckSys(env, ::getsockopt(fd, SOL_SOCKET, SO_MARK, &mark, &len), "getsockopt", "SO_MARK " + FdDetail(fd));
  return Napi::Number::New(env, mark);
}

// socketCookie(fd) -> bigint: the kernel's stable socket id, the key eBPF programs see.
Napi::Value SocketCookie(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  CheckSys(env, ::getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len), "getsockopt",
           "SO_COOKIE " + FdDetail(fd));
  return Napi::BigInt::New(env, cookie);
}

// setSendBufferSize(fd, bytes) -> number: SO_SNDBUFFORCE (CAP_NET_ADMIN lifts net.core.wmem_max),
// else SO_SNDBUF, capped by wmem_max. Returns what the kernel granted (it doubles the request to
// account for its own overhead), so the caller can tell whether the size it needs was reached.
Napi::Value SetSendBufferSize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  int64_t bytes = info[1].As<Napi::Number>().Int64Value();
  if (bytes <= 0 || bytes > (1 << 30)) {
    Napi::RangeError::New(env, "send buffer size must be 1 byte to 1 GiB").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int value = static_cast<int>(bytes);
  if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &value, sizeof(value)) != 0) {
    if (errno != EPERM) {
      CheckSys(env, -1, "setsockopt", "SO_SNDBUFFORCE " + FdDetail(fd));
    }
    SetIntOpt(env, fd, SOL_SOCKET, SO_SNDBUF, value, "SO_SNDBUF", FdDetail(fd));
  }
  int granted = 0;
  socklen_t len = sizeof(granted);
  CheckSys(env, ::getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &granted, &len), "getsockopt",
           "SO_SNDBUF " + FdDetail(fd));
  return Napi::Number::New(env, granted);
}

}  // namespace

void InitSockets(Napi::Env env, Napi::Object exports) {
  exports.Set("createListener", Napi::Function::New<CreateListener>(env, "createListener"));
  exports.Set("PendingConnect", PendingConnect::Define(env));
  exports.Set("originalDst", Napi::Function::New<OriginalDst>(env, "originalDst"));
  exports.Set("setMark", Napi::Function::New<SetMark>(env, "setMark"));
  exports.Set("getMark", Napi::Function::New<GetMark>(env, "getMark"));
  exports.Set("socketCookie", Napi::Function::New<SocketCookie>(env, "socketCookie"));
  exports.Set("setSendBufferSize", Napi::Function::New<SetSendBufferSize>(env, "setSendBufferSize"));
}

}  // namespace ambient
