#include "netns.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "addon_data.h"
#include "errors.h"
#include "unique_fd.h"

namespace ambient {

namespace {

constexpr const char* kThreadNetns = "/proc/thread-self/ns/net";

std::string FdDetail(int fd) { return "fd " + std::to_string(fd); }

int FdArg(const Napi::CallbackInfo& info, size_t index) {
  if (!info[index].IsNumber()) throw Napi::TypeError::New(info.Env(), "fd must be a number");
  return info[index].As<Napi::Number>().Int32Value();
}

// Opens a namespace file and checks that it is a network namespace.
Napi::Value OpenNetns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) throw ErrnoError(env, errno, "open", path);
  if (!IsNetnsFd(env, fd.get())) throw ErrnoError(env, EINVAL, "ioctl", path, "not a network namespace");
  return Napi::Number::New(env, fd.release());
}

Napi::Value IsNetns(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), IsNetnsFd(info.Env(), FdArg(info, 0)));
}

Napi::Value NetnsInode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  struct stat st{};
  CheckSys(env, ::fstat(fd, &st), "fstat", FdDetail(fd));
  return Napi::Number::New(env, static_cast<double>(st.st_ino));
}

Napi::Value CurrentNetnsInode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct stat st{};
  CheckSys(env, ::stat(kThreadNetns, &st), "stat", kThreadNetns);
  return Napi::Number::New(env, static_cast<double>(st.st_ino));
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  // EINTR still releases the descriptor on Linux, so only EBADF is worth reporting.
  if (::close(fd) != 0 && errno == EBADF) throw ErrnoError(env, EBADF, "close", FdDetail(fd));
  return env.Undefined();
}

}  // namespace

NetnsScope::NetnsScope(Napi::Env env, int netns_fd) {
  if (netns_fd < 0) return;
  home_fd_ = GetAddonData(env).home_netns.get();
  if (::setns(netns_fd, CLONE_NEWNET) != 0) throw ErrnoError(env, errno, "setns", FdDetail(netns_fd));
  entered_ = true;
}

NetnsScope::~NetnsScope() {
  if (!entered_) return;
  if (::setns(home_fd_, CLONE_NEWNET) != 0) {
    // The event loop thread would keep running in a pod's namespace and every later socket would be
    // created in the wrong place; there is no safe way to continue.
    std::fprintf(stderr, "@ambient/native: setns back to the home network namespace failed: %s\n",
                 std::strerror(errno));
    std::abort();
  }
}

bool IsNetnsFd(Napi::Env env, int fd) {
  int type = ::ioctl(fd, NS_GET_NSTYPE);
  if (type >= 0) return type == CLONE_NEWNET;
  int ioctl_err = errno;
  if (ioctl_err == EBADF) throw ErrnoError(env, EBADF, "ioctl", FdDetail(fd));
  // ENOTTY: not an nsfs file, or a kernel older than 4.11 without NS_GET_NSTYPE.
  struct statfs st{};
  CheckSys(env, ::fstatfs(fd, &st), "fstatfs", FdDetail(fd));
  if (static_cast<unsigned long>(st.f_type) != NSFS_MAGIC) return false;
  // nsfs without the ioctl: the type cannot be told apart, accept it as ztunnel does.
  return ioctl_err == ENOTTY;
}

int OpenCurrentNetns(Napi::Env env) {
  int fd = ::open(kThreadNetns, O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw ErrnoError(env, errno, "open", kThreadNetns);
  return fd;
}

void InitNetns(Napi::Env env, Napi::Object exports) {
  exports.Set("openNetns", Napi::Function::New<OpenNetns>(env, "openNetns"));
  exports.Set("isNetns", Napi::Function::New<IsNetns>(env, "isNetns"));
  exports.Set("netnsInode", Napi::Function::New<NetnsInode>(env, "netnsInode"));
  exports.Set("currentNetnsInode", Napi::Function::New<CurrentNetnsInode>(env, "currentNetnsInode"));
  exports.Set("closeFd", Napi::Function::New<CloseFd>(env, "closeFd"));
}

}  // namespace ambient
