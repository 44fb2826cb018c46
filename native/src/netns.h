// Network namespace handling. setns(2) changes the namespace of the calling thread only, and the
// calling thread is the one running the event loop, so every switch is scoped: NetnsScope enters the
// target namespace and its destructor returns to the home namespace before control goes back to
// JavaScript, on success and on every error path.
#pragma once

#include <napi.h>

namespace ambient {

class NetnsScope {
 public:
  // A negative fd means "stay in the current namespace".
  NetnsScope(Napi::Env env, int netns_fd);
  ~NetnsScope();
  NetnsScope(const NetnsScope&) = delete;
  NetnsScope& operator=(const NetnsScope&) = delete;

 private:
  int home_fd_ = -1;
  bool entered_ = false;
};

// True when fd refers to a network namespace (NS_GET_NSTYPE, falling back to the nsfs magic on kernels
// without the ioctl). Throws for an invalid fd.
bool IsNetnsFd(Napi::Env env, int fd);

// Opens the thread's home namespace; called once per environment at load time.
int OpenCurrentNetns(Napi::Env env);

void InitNetns(Napi::Env env, Napi::Object exports);

}  // namespace ambient
