// Entry point of @ambient/native. Every export is documented where lib/ wraps it.
#include <napi.h>

#include "addon_data.h"
#include "bpf.h"
#include "malloc_tuning.h"
#include "netns.h"
#include "seqpacket.h"
#include "sockets.h"

namespace ambient {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);
  data->home_netns.reset(OpenCurrentNetns(env));
  InitNetns(env, exports);
  InitSockets(env, exports);
  InitSeqpacket(env, exports);
  InitBpf(env, exports);
  InitMallocTuning(env, exports);
  return exports;
}

}  // namespace ambient

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return ambient::Init(env, exports); }

NODE_API_MODULE(ambient_native, InitAddon)
