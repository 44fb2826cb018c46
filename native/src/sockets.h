// TCP sockets created inside another network namespace, and per-socket options used by the proxy.
#pragma once

#include <napi.h>

namespace ambient {

void InitSockets(Napi::Env env, Napi::Object exports);

}  // namespace ambient
