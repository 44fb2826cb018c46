// Conversion between JavaScript { address, port } pairs and kernel socket addresses.
#pragma once

#include <napi.h>
#include <sys/socket.h>

#include <string>

namespace ambient {

struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;

  int family() const { return storage.ss_family; }
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
  // "10.0.0.1:80" or "[fd00::1]:80", for error messages.
  std::string ToString() const;
};

// Parses a numeric IPv4 or IPv6 address; throws EINVAL naming the value otherwise.
SocketAddress ParseSocketAddress(Napi::Env env, const std::string& address, int port);

// { address, port, family: 'IPv4' | 'IPv6' }, the shape of net.AddressInfo.
Napi::Object SocketAddressToJs(Napi::Env env, const sockaddr* addr);

}  // namespace ambient
