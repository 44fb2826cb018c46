// Errors thrown to JavaScript carry the errno name as `code`, the positive errno as `errno` and the
// failing system call as `syscall`; lib/errors.ts turns them into NativeError.
#pragma once

#include <napi.h>

#include <string>

namespace ambient {

// `detail` names the value involved (a path, an address); `description` replaces strerror's text when
// the errno alone would mislead (e.g. "not a network namespace" for EINVAL).
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& detail,
                       const char* description = nullptr);

// Throws ErrnoError when `rc` is negative, reading errno; returns rc otherwise.
int CheckSys(Napi::Env env, int rc, const char* syscall, const std::string& detail);

// Calls a JavaScript callback from a libuv callback. The call goes through MakeCallback so that
// microtasks and nextTicks run afterwards; an exception the callback throws becomes an uncaught
// exception of the process instead of vanishing inside the event loop.
void InvokeFromLoop(Napi::Env env, const Napi::FunctionReference& fn, const Napi::Object& recv,
                    const Napi::AsyncContext& context, const std::initializer_list<napi_value>& args);

}  // namespace ambient
