#include "sockaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstring>

#include "errors.h"

namespace ambient {

namespace {

std::string FormatIp(const sockaddr* addr, int* port) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (addr->sa_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(addr);
    ::inet_ntop(AF_INET, &in->sin_addr, buf, sizeof(buf));
    *port = ntohs(in->sin_port);
  } else if (addr->sa_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(addr);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof(buf));
    *port = ntohs(in6->sin6_port);
  } else {
    *port = 0;
  }
  return buf;
}

}  // namespace

std::string SocketAddress::ToString() const {
  int port = 0;
  std::string ip = FormatIp(get(), &port);
  if (family() == AF_INET6) return "[" + ip + "]:" + std::to_string(port);
  return ip + ":" + std::to_string(port);
}

SocketAddress ParseSocketAddress(Napi::Env env, const std::string& address, int port) {
  SocketAddress out;
  std::string detail = address + " port " + std::to_string(port);
  if (port < 0 || port > 65535) throw ErrnoError(env, EINVAL, "parse", detail, "port out of range");
  auto* in = reinterpret_cast<sockaddr_in*>(&out.storage);
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&out.storage);
  if (::inet_pton(AF_INET, address.c_str(), &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    in->sin_port = htons(static_cast<uint16_t>(port));
    out.length = sizeof(sockaddr_in);
  } else if (::inet_pton(AF_INET6, address.c_str(), &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(static_cast<uint16_t>(port));
    out.length = sizeof(sockaddr_in6);
  } else {
    throw ErrnoError(env, EINVAL, "parse", detail, "not a numeric IPv4 or IPv6 address");
  }
  return out;
}

Napi::Object SocketAddressToJs(Napi::Env env, const sockaddr* addr) {
  int port = 0;
  std::string ip = FormatIp(addr, &port);
  Napi::Object out = Napi::Object::New(env);
  out.Set("address", ip);
  out.Set("port", port);
  out.Set("family", addr->sa_family == AF_INET6 ? "IPv6" : "IPv4");
  return out;
}

}  // namespace ambient
