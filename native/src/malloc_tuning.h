// glibc malloc parameters (mallopt(3)), set once at process start.
#pragma once

#include <napi.h>

namespace ambient {

void InitMallocTuning(Napi::Env env, Napi::Object exports);

}  // namespace ambient
