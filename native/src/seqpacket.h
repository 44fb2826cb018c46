// SOCK_SEQPACKET unix sockets with SCM_RIGHTS, driven by uv_poll so no read or write ever blocks the
// event loop. This is the transport of ZDS (one protobuf message per datagram, the pod netns fd as
// ancillary data).
#pragma once

#include <napi.h>

namespace ambient {

void InitSeqpacket(Napi::Env env, Napi::Object exports);

}  // namespace ambient
