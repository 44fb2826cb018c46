#include "malloc_tuning.h"

#include <malloc.h>

namespace ambient {
namespace {

// tuneMalloc(mmapThreshold, trimThreshold, topPad) -> boolean: true when glibc took all three.
// Why: xDS responses and HTTP/2 reassembly allocate multi-megabyte buffers. Above the mmap
// threshold each one is a fresh mapping whose pages the kernel must fault in and zero, and a
// freed heap top above the trim threshold is handed back only to be faulted in again. Upstream
// ztunnel avoids the same cost with jemalloc.
Napi::Value TuneMalloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int values[3];
  for (int i = 0; i < 3; i++) {
    if (!info[i].IsNumber()) {
      Napi::TypeError::New(env, "tuneMalloc takes three byte counts").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    int64_t v = info[i].As<Napi::Number>().Int64Value();
    if (v < 0 || v > (int64_t{1} << 30)) {
      Napi::RangeError::New(env, "malloc tuning values must be 0 to 1 GiB").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    values[i] = static_cast<int>(v);
  }
  bool ok = mallopt(M_MMAP_THRESHOLD, values[0]) == 1;
  ok = mallopt(M_TRIM_THRESHOLD, values[1]) == 1 && ok;
  ok = mallopt(M_TOP_PAD, values[2]) == 1 && ok;
  return Napi::Boolean::New(env, ok);
}

}  // namespace

void InitMallocTuning(Napi::Env env, Napi::Object exports) {
  exports.Set("tuneMalloc", Napi::Function::New<TuneMalloc>(env, "tuneMalloc"));
}

}  // namespace ambient
