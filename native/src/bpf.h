// A small libbpf surface: load an object file, attach its programs (cgroup hooks, sk_lookup on a netns,
// tc on an interface), pin, and read or write its maps with Buffer keys and values.
#pragma once

#include <napi.h>

namespace ambient {

void InitBpf(Napi::Env env, Napi::Object exports);

}  // namespace ambient
