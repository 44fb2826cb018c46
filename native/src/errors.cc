#include "errors.h"

#include <cctype>
#include <cerrno>
#include <cstring>

namespace ambient {

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& detail,
                       const char* description) {
  const char* name = strerrorname_np(err);
  std::string text = description != nullptr ? description : strerror(err);
  if (!text.empty()) text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  std::string message = syscall;
  if (!detail.empty()) message += " " + detail;
  message += ": " + text;

  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, name != nullptr ? name : "EUNKNOWN"));
  error.Set("errno", Napi::Number::New(env, err));
  error.Set("syscall", Napi::String::New(env, syscall));
  return error;
}

int CheckSys(Napi::Env env, int rc, const char* syscall, const std::string& detail) {
  if (rc < 0) throw ErrnoError(env, errno, syscall, detail);
  return rc;
}

void InvokeFromLoop(Napi::Env env, const Napi::FunctionReference& fn, const Napi::Object& recv,
                    const Napi::AsyncContext& context, const std::initializer_list<napi_value>& args) {
  try {
    fn.MakeCallback(recv, args, context);
  } catch (const Napi::Error& e) {
    napi_fatal_exception(env, e.Value());
  }
}

}  // namespace ambient
