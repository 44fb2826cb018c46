// Per-environment state (one per main thread or worker that loads the addon).
#pragma once

#include <napi.h>

#include "unique_fd.h"

namespace ambient {

struct AddonData {
  // The network namespace of the thread that loaded the addon; NetnsScope returns to it. Opened once
  // so that restoring the namespace cannot fail for lack of a free descriptor.
  UniqueFd home_netns;
  Napi::FunctionReference seqpacket_handle;
  Napi::FunctionReference bpf_link;
  Napi::FunctionReference tc_attachment;
};

inline AddonData& GetAddonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

}  // namespace ambient
