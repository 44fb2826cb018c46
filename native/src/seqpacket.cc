#include "seqpacket.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <uv.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "addon_data.h"
#include "errors.h"
#include "unique_fd.h"

namespace ambient {

namespace {

// Messages and accepts handled per poll callback before yielding to the rest of the loop.
constexpr int kBatch = 64;

sockaddr_un UnixAddress(Napi::Env env, const std::string& path, const char* syscall) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    throw ErrnoError(env, ENAMETOOLONG, syscall, path, "unix socket path empty or longer than 107 bytes");
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

UniqueFd NewSeqpacketSocket(Napi::Env env, const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) throw ErrnoError(env, errno, "socket", path);
  return fd;
}

// Collects the descriptors of every SCM_RIGHTS message so they are closed if anything fails.
std::vector<UniqueFd> TakeFds(msghdr* msg) {
  std::vector<UniqueFd> fds;
  for (cmsghdr* c = CMSG_FIRSTHDR(msg); c != nullptr; c = CMSG_NXTHDR(msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* data = CMSG_DATA(c);
    for (size_t i = 0; i < count; ++i) {
      int fd = -1;
      std::memcpy(&fd, data + i * sizeof(int), sizeof(int));
      fds.emplace_back(fd);
    }
  }
  return fds;
}

// One SOCK_SEQPACKET socket, listening or connected. The JavaScript object stays alive until close():
// the event loop may deliver messages to it at any time, as with a net.Socket.
//
// new SeqpacketHandle(fd) takes ownership of fd. Static: listen(path, backlog), connect(path).
// Instance: startAccept(cb(err, handle)), startRead(cb(err, buf | null, fds), maxMessageSize, maxFds),
// stopRead(), write(buf, fds, cb(err)) -> sentNow, close(), setRef(bool), fd.
class SeqpacketHandle : public Napi::ObjectWrap<SeqpacketHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "SeqpacketHandle",
                       {
                           StaticMethod<&SeqpacketHandle::Listen>("listen"),
                           StaticMethod<&SeqpacketHandle::Connect>("connect"),
                           InstanceMethod<&SeqpacketHandle::StartAccept>("startAccept"),
                           InstanceMethod<&SeqpacketHandle::StartRead>("startRead"),
                           InstanceMethod<&SeqpacketHandle::StopRead>("stopRead"),
                           InstanceMethod<&SeqpacketHandle::Write>("write"),
                           InstanceMethod<&SeqpacketHandle::Close>("close"),
                           InstanceMethod<&SeqpacketHandle::SetRef>("setRef"),
                           InstanceAccessor<&SeqpacketHandle::GetFd>("fd"),
                       });
  }

  explicit SeqpacketHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SeqpacketHandle>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsNumber()) throw Napi::TypeError::New(env, "fd must be a number");
    fd_.reset(info[0].As<Napi::Number>().Int32Value());
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok) throw Napi::Error::New(env, "no event loop");
    context_ = std::make_unique<Napi::AsyncContext>(env, "AmbientNativeSeqpacket", info.This().As<Napi::Object>());
    auto poll = std::make_unique<uv_poll_t>();
    int rc = uv_poll_init(loop, poll.get(), fd_.get());
    if (rc != 0) throw ErrnoError(env, -rc, "uv_poll_init", "fd " + std::to_string(fd_.get()));
    poll_ = poll.release();
    poll_->data = this;
    Ref();
  }

  ~SeqpacketHandle() override { ReleaseResources(); }

 private:
  struct QueuedWrite {
    std::vector<uint8_t> data;
    std::vector<UniqueFd> fds;  // duplicates, so the caller may close its own fds right away
    Napi::FunctionReference callback;
  };

  static Napi::Value Listen(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string path = info[0].As<Napi::String>().Utf8Value();
    int backlog = info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 128;
    sockaddr_un addr = UnixAddress(env, path, "bind");
    UniqueFd fd = NewSeqpacketSocket(env, path);
    CheckSys(env, ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), "bind", path);
    CheckSys(env, ::listen(fd.get(), backlog), "listen", path);
    return GetAddonData(env).seqpacket_handle.New({Napi::Number::New(env, fd.release())});
  }

  static Napi::Value Connect(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string path = info[0].As<Napi::String>().Utf8Value();
    sockaddr_un addr = UnixAddress(env, path, "connect");
    UniqueFd fd = NewSeqpacketSocket(env, path);
    // A unix connect completes at once or fails (EAGAIN when the listener's backlog is full); it
    // never returns EINPROGRESS, so there is nothing to wait for.
    int rc;
    do {
      rc = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) throw ErrnoError(env, errno, "connect", path);
    return GetAddonData(env).seqpacket_handle.New({Napi::Number::New(env, fd.release())});
  }

  Napi::Value StartAccept(const Napi::CallbackInfo& info) {
    EnsureOpen(info.Env(), "accept4");
    on_accept_ = Napi::Persistent(info[0].As<Napi::Function>());
    accepting_ = true;
    UpdatePoll();
    return info.Env().Undefined();
  }

  Napi::Value StartRead(const Napi::CallbackInfo& info) {
    EnsureOpen(info.Env(), "recvmsg");
    on_read_ = Napi::Persistent(info[0].As<Napi::Function>());
    size_t max_message = info[1].As<Napi::Number>().Uint32Value();
    size_t max_fds = info[2].As<Napi::Number>().Uint32Value();
    read_buf_.assign(max_message, 0);
    max_fds_ = max_fds;
    control_len_ = max_fds > 0 ? CMSG_SPACE(sizeof(int) * max_fds) : 0;
    control_buf_.assign((control_len_ + sizeof(uint64_t) - 1) / sizeof(uint64_t), 0);
    reading_ = true;
    UpdatePoll();
    return info.Env().Undefined();
  }

  Napi::Value StopRead(const Napi::CallbackInfo& info) {
    reading_ = false;
    UpdatePoll();
    return info.Env().Undefined();
  }

  Napi::Value Write(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EnsureOpen(env, "sendmsg");
    Napi::Buffer<uint8_t> buf = info[0].As<Napi::Buffer<uint8_t>>();
    Napi::Array fd_array = info[1].As<Napi::Array>();
    std::vector<int> fds;
    for (uint32_t i = 0; i < fd_array.Length(); ++i) {
      fds.push_back(fd_array.Get(i).As<Napi::Number>().Int32Value());
    }
    if (buf.Length() == 0) {
      // The receiver could not tell an empty datagram from end-of-stream.
      throw ErrnoError(env, EINVAL, "sendmsg", "", "empty seqpacket messages are not supported");
    }
    if (writes_.empty()) {
      int err = SendNow(buf.Data(), buf.Length(), fds);
      if (err == 0) return Napi::Boolean::New(env, true);
      if (err != EAGAIN && err != EWOULDBLOCK) throw ErrnoError(env, err, "sendmsg", "");
    }
    QueuedWrite w;
    w.data.assign(buf.Data(), buf.Data() + buf.Length());
    for (int fd : fds) {
      UniqueFd dup(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
      if (!dup.valid()) throw ErrnoError(env, errno, "fcntl", "F_DUPFD_CLOEXEC fd " + std::to_string(fd));
      w.fds.push_back(std::move(dup));
    }
    w.callback = Napi::Persistent(info[2].As<Napi::Function>());
    writes_.push_back(std::move(w));
    UpdatePoll();
    return Napi::Boolean::New(env, false);
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (!closed_) {
      ReleaseResources();
      Unref();
    }
    return info.Env().Undefined();
  }

  Napi::Value SetRef(const Napi::CallbackInfo& info) {
    if (poll_ != nullptr) {
      auto* handle = reinterpret_cast<uv_handle_t*>(poll_);
      if (info[0].ToBoolean().Value()) {
        uv_ref(handle);
      } else {
        uv_unref(handle);
      }
    }
    return info.Env().Undefined();
  }

  Napi::Value GetFd(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), closed_ ? -1 : fd_.get());
  }

  void EnsureOpen(Napi::Env env, const char* syscall) {
    if (closed_) throw ErrnoError(env, EBADF, syscall, "", "seqpacket socket is closed");
  }

  // Drops the queue without calling its callbacks: lib/seqpacket.ts rejects what is still pending.
  void ReleaseResources() {
    if (closed_) return;
    closed_ = true;
    accepting_ = false;
    reading_ = false;
    if (poll_ != nullptr) {
      poll_->data = nullptr;
      // uv_close takes the fd out of epoll before it returns, so closing the fd next is safe.
      uv_close(reinterpret_cast<uv_handle_t*>(poll_),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
      poll_ = nullptr;
    }
    fd_.reset();
    writes_.clear();
    on_accept_.Reset();
    on_read_.Reset();
  }

  void UpdatePoll() {
    if (closed_ || poll_ == nullptr) return;
    int events = 0;
    if (accepting_) events |= UV_READABLE;
    if (reading_) events |= UV_READABLE | UV_DISCONNECT;
    if (!writes_.empty()) events |= UV_WRITABLE;
    if (events == poll_events_) return;
    if (events == 0) {
      uv_poll_stop(poll_);
    } else if (uv_poll_start(poll_, events, OnPoll) != 0) {
      // Only possible for an fd libuv cannot watch, which uv_poll_init already rejected.
      return;
    }
    poll_events_ = events;
  }

  static void OnPoll(uv_poll_t* handle, int status, int events) {
    auto* self = static_cast<SeqpacketHandle*>(handle->data);
    if (self == nullptr) return;
    Napi::Env env = self->Env();
    Napi::HandleScope scope(env);
    // A local handle keeps the wrapper from being collected while callbacks run.
    [[maybe_unused]] Napi::Object keep = self->Value();
    if (status < 0) {
      // libuv has already stopped the handle (it reports EPOLLERR as UV_EBADF); SO_ERROR has the cause.
      self->poll_events_ = 0;
      int err = 0;
      socklen_t len = sizeof(err);
      if (::getsockopt(self->fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err == 0) err = -status;
      self->FailAll(err);
      return;
    }
    if ((events & UV_WRITABLE) != 0) self->FlushWrites();
    if ((events & (UV_READABLE | UV_DISCONNECT)) != 0) {
      if (self->accepting_) {
        self->AcceptReady();
      } else if (self->reading_) {
        self->ReadReady();
      }
    }
  }

  void Emit(const Napi::FunctionReference& fn, const std::initializer_list<napi_value>& args) {
    if (fn.IsEmpty()) return;
    InvokeFromLoop(Env(), fn, Value(), *context_, args);
  }

  void FailAll(int err) {
    Napi::Env env = Env();
    std::deque<QueuedWrite> writes = std::move(writes_);
    writes_.clear();
    for (QueuedWrite& w : writes) {
      Emit(w.callback, {ErrnoError(env, err, "sendmsg", "").Value()});
      if (closed_) return;
    }
    if (accepting_) {
      accepting_ = false;
      Emit(on_accept_, {ErrnoError(env, err, "accept4", "").Value()});
    } else if (reading_) {
      reading_ = false;
      Emit(on_read_, {ErrnoError(env, err, "recvmsg", "").Value()});
    }
    UpdatePoll();
  }

  void AcceptReady() {
    Napi::Env env = Env();
    for (int i = 0; i < kBatch && accepting_ && !closed_; ++i) {
      int fd = ::accept4(fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        int err = errno;
        if (err == EAGAIN || err == EWOULDBLOCK) return;
        if (err == EINTR || err == ECONNABORTED) continue;
        accepting_ = false;
        UpdatePoll();
        Emit(on_accept_, {ErrnoError(env, err, "accept4", "").Value()});
        return;
      }
      Napi::Value conn;
      try {
        conn = GetAddonData(env).seqpacket_handle.New({Napi::Number::New(env, fd)});
      } catch (const Napi::Error& e) {
        // The constructor owned fd from its first statement and closed it when it threw.
        Emit(on_accept_, {e.Value()});
        continue;
      }
      Emit(on_accept_, {env.Null(), conn});
    }
  }

  void ReadFailed(Napi::Error error) {
    reading_ = false;
    UpdatePoll();
    Emit(on_read_, {error.Value()});
  }

  void ReadReady() {
    Napi::Env env = Env();
    for (int i = 0; i < kBatch && reading_ && !closed_; ++i) {
      iovec iov{read_buf_.data(), read_buf_.size()};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control_len_ > 0 ? control_buf_.data() : nullptr;
      msg.msg_controllen = control_len_;
      ssize_t n = ::recvmsg(fd_.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
      if (n < 0) {
        int err = errno;
        if (err == EAGAIN || err == EWOULDBLOCK) return;
        if (err == EINTR) continue;
        ReadFailed(ErrnoError(env, err, "recvmsg", ""));
        return;
      }
      std::vector<UniqueFd> fds = TakeFds(&msg);
      if ((msg.msg_flags & MSG_TRUNC) != 0) {
        std::string text = "message longer than " + std::to_string(read_buf_.size()) + " bytes (MSG_TRUNC)";
        ReadFailed(ErrnoError(env, EMSGSIZE, "recvmsg", "", text.c_str()));
        return;
      }
      // CMSG_SPACE rounds up, so the control buffer can hold a few more fds than max_fds_.
      if ((msg.msg_flags & MSG_CTRUNC) != 0 || fds.size() > max_fds_) {
        std::string text = "ancillary data truncated, more than " + std::to_string(max_fds_) + " fds (MSG_CTRUNC)";
        ReadFailed(ErrnoError(env, EMSGSIZE, "recvmsg", "", text.c_str()));
        return;
      }
      if (n == 0 && fds.empty()) {
        reading_ = false;
        UpdatePoll();
        Emit(on_read_, {env.Null(), env.Null()});
        return;
      }
      Napi::Buffer<uint8_t> data = Napi::Buffer<uint8_t>::Copy(env, read_buf_.data(), static_cast<size_t>(n));
      Napi::Array fd_array = Napi::Array::New(env, fds.size());
      for (uint32_t j = 0; j < fds.size(); ++j) fd_array.Set(j, Napi::Number::New(env, fds[j].release()));
      Emit(on_read_, {env.Null(), data, fd_array});
    }
  }

  void FlushWrites() {
    Napi::Env env = Env();
    while (!writes_.empty() && !closed_) {
      QueuedWrite& front = writes_.front();
      std::vector<int> fds;
      for (const UniqueFd& fd : front.fds) fds.push_back(fd.get());
      int err = SendNow(front.data.data(), front.data.size(), fds);
      if (err == EAGAIN || err == EWOULDBLOCK) break;
      QueuedWrite done = std::move(front);
      writes_.pop_front();
      if (err != 0) {
        Emit(done.callback, {ErrnoError(env, err, "sendmsg", "").Value()});
      } else {
        Emit(done.callback, {env.Null()});
      }
    }
    UpdatePoll();
  }

  // Returns 0 or the errno of sendmsg.
  int SendNow(const uint8_t* data, size_t len, const std::vector<int>& fds) {
    iovec iov{const_cast<uint8_t*>(data), len};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    std::vector<uint64_t> control;
    if (!fds.empty()) {
      size_t space = CMSG_SPACE(sizeof(int) * fds.size());
      control.assign((space + sizeof(uint64_t) - 1) / sizeof(uint64_t), 0);
      msg.msg_control = control.data();
      msg.msg_controllen = space;
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    for (;;) {
      ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n >= 0) return static_cast<size_t>(n) == len ? 0 : EMSGSIZE;
      if (errno != EINTR) return errno;
    }
  }

  UniqueFd fd_;
  uv_poll_t* poll_ = nullptr;
  int poll_events_ = 0;
  bool accepting_ = false;
  bool reading_ = false;
  bool closed_ = false;
  std::vector<uint8_t> read_buf_;
  std::vector<uint64_t> control_buf_;  // uint64_t for cmsghdr alignment
  size_t control_len_ = 0;
  size_t max_fds_ = 0;
  Napi::FunctionReference on_accept_;
  Napi::FunctionReference on_read_;
  std::deque<QueuedWrite> writes_;
  std::unique_ptr<Napi::AsyncContext> context_;
};

}  // namespace

void InitSeqpacket(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = SeqpacketHandle::Define(env);
  GetAddonData(env).seqpacket_handle = Napi::Persistent(ctor);
  exports.Set("SeqpacketHandle", ctor);
}

}  // namespace ambient
