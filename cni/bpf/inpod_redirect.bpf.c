// In-pod traffic redirection for istio-cni's eBPF mode: the capture semantics of the in-pod
// nftables rules (spec §6.3) without netfilter. One copy of this object is loaded per pod; its
// links and maps are pinned in the pod's bpffs directory (see cni/src/redirect/ebpf.ts).
//
//   cgroup/connect4, connect6   (pod cgroup)   app TCP connect() -> <pod ip>:15001, original
//                                              destination recorded by socket cookie
//   sockops                     (pod cgroup)   once the source port is known, re-key that record
//                                              by the app's (ip, port): what ztunnel sees as peer
//   cgroup/getpeername4, 6      (pod cgroup)   the app sees the destination it dialled
//   cgroup/sendmsg4, 6, connect (pod cgroup)   DNS (port 53, TCP and UDP) -> loopback:15053 when
//   cgroup/recvmsg4, 6                         DNS capture is on; answers show the server asked
//   cgroup/getsockopt           (proxy cgroup) SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST on
//                                              ztunnel's accepted 15001 socket answers from the
//                                              record: ztunnel's usual call works unchanged
//   sk_lookup                   (pod netns)    new inbound TCP for the pod IP -> ztunnel's 15006
//                                              listener (SOCKMAP), without NAT
//   tc ingress on lo            (pod netns)    packets ztunnel sends to the app (mark 0x539) get the
//                                              route mark 0x111, which tcp_fwmark_accept copies onto
//                                              the app's socket: its replies to spoofed sources
//                                              route back to ztunnel (the connmark of nftables mode);
//                                              and their SYNs are noted so sk_lookup lets them pass
//
// Why the SYN note: ztunnel connects to the app from the original client address (spoofed), so
// sk_lookup sees the same remote address, local address and ingress ifindex (for a local address
// the kernel reports the device owning it, eth0, even over lo) as for a real inbound connection.
// Only the mark tells them apart, and sk_lookup cannot read it; tc on lo can, and runs first.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define SOL_IP 0
#define SOL_IPV6 41
#define SO_ORIGINAL_DST 80
#define IP6T_SO_ORIGINAL_DST 80
#define TC_ACT_OK 0
#define TCP_CLOSE 7
#define LOOPBACK_IFINDEX 1
#define MAX_POD_IPS 4

#define FLAG_CAPTURE_INBOUND 1u
#define FLAG_CAPTURE_DNS 2u

// Written once by the loader before any program is attached. Addresses in network byte order,
// ports in host byte order; an all-zero address slot is unused. Layout mirrored in ebpf-config.ts.
struct redirect_config {
  __u32 pod_ip4[MAX_POD_IPS];
  __u32 pod_ip6[MAX_POD_IPS][4];
  __u32 probe_ip4;
  __u32 probe_ip6[4];
  __u32 proxy_mark;
  __u32 mark_mask;
  __u32 route_mark;
  __u32 outbound_port;
  __u32 inbound_port;
  __u32 hbone_port;
  __u32 dns_port;
  __u32 flags;
};

// A destination as the app dialled it. IPv4 uses addr[0]; port in network byte order.
struct orig_dst {
  __u32 family;
  __u32 port;
  __u32 addr[4];
};

// The app socket's local (ip, port) = the peer of ztunnel's accepted socket. IPv4 addresses are
// stored IPv4-mapped (::ffff:a.b.c.d) so IPv4 and dual-stack IPv6 sockets share one key space.
// Port in host byte order.
struct peer_key {
  __u32 addr[4];
  __u32 port;
};

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct redirect_config);
} config SEC(".maps");

// Filled on connect(), read by sockops and getpeername. LRU: a connect() that fails before the
// SYN leaves an entry no close callback will delete.
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, __u64);
  __type(value, struct orig_dst);
} orig_by_cookie SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, struct peer_key);
  __type(value, struct orig_dst);
} orig_by_peer SEC(".maps");

// Key 0: the listener for IPv4 lookups, key 1: for IPv6 lookups (a dual-stack socket may be in
// both). ztunnel puts its 15006 listener here (registerInboundListener); the kernel drops the
// entry when the socket closes.
struct {
  __uint(type, BPF_MAP_TYPE_SOCKMAP);
  __uint(max_entries, 2);
  __type(key, __u32);
  __type(value, __u64);
} inbound_listeners SEC(".maps");

// A connection as sk_lookup sees it: remote = the SYN's source, local = its destination, both
// IPv4-mapped for IPv4; remote_port in network byte order, local_port in host byte order.
struct flow_key {
  __u32 remote[4];
  __u32 local[4];
  __u32 remote_port;
  __u32 local_port;
};

// SYNs that carried the proxy mark on lo (ztunnel connecting to the app), noted by the tc
// program and consumed by sk_lookup.
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384);
  __type(key, struct flow_key);
  __type(value, __u8);
} proxy_syns SEC(".maps");

static __always_inline struct redirect_config *get_config(void) {
  __u32 zero = 0;
  return bpf_map_lookup_elem(&config, &zero);
}

static __always_inline int is_proxy_mark(const struct redirect_config *cfg, __u32 mark) {
  return (mark & cfg->mark_mask) == cfg->proxy_mark;
}

static __always_inline int is_pod_ip4(const struct redirect_config *cfg, __u32 ip) {
#pragma unroll
  for (int i = 0; i < MAX_POD_IPS; i++) {
    if (cfg->pod_ip4[i] != 0 && cfg->pod_ip4[i] == ip) return 1;
  }
  return 0;
}

static __always_inline int ip6_is_zero(const __u32 *a) { return (a[0] | a[1] | a[2] | a[3]) == 0; }

static __always_inline int ip6_equal(const __u32 *a, const __u32 *b) {
  return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

static __always_inline int is_pod_ip6(const struct redirect_config *cfg, const __u32 *ip) {
#pragma unroll
  for (int i = 0; i < MAX_POD_IPS; i++) {
    if (!ip6_is_zero(cfg->pod_ip6[i]) && ip6_equal(cfg->pod_ip6[i], ip)) return 1;
  }
  return 0;
}

static __always_inline int is_loopback4(__u32 ip) { return (bpf_ntohl(ip) >> 24) == 127; }

static __always_inline int is_v4_mapped(const __u32 *a) {
  return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);
}

static __always_inline int is_loopback6(const __u32 *a) {
  return a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == bpf_htonl(1);
}

static __always_inline void set_mapped(__u32 *out, __u32 ip4) {
  out[0] = 0;
  out[1] = 0;
  out[2] = bpf_htonl(0xffff);
  out[3] = ip4;
}

// What a connect()/sendto() destination becomes.
#define LEAVE 0
#define TO_OUTBOUND 1 // <pod ip>:15001, TCP only
#define TO_DNS 2      // loopback:15053, ztunnel's DNS proxy (TCP and UDP), when DNS capture is on

// Destinations inside the pod (loopback, the pod's own IPs) are never captured, as the nftables
// rules accept traffic that leaves through lo.
static __always_inline int decide4(const struct redirect_config *cfg, __u32 dst, __u32 port_be, int tcp) {
  if (dst == 0 || is_loopback4(dst) || is_pod_ip4(cfg, dst)) return LEAVE;
  if ((cfg->flags & FLAG_CAPTURE_DNS) && port_be == bpf_htons(53)) return TO_DNS;
  if (tcp && cfg->pod_ip4[0] != 0) return TO_OUTBOUND;
  return LEAVE;
}

static __always_inline int decide6(const struct redirect_config *cfg, const __u32 *dst, __u32 port_be, int tcp) {
  if (is_v4_mapped(dst)) return decide4(cfg, dst[3], port_be, tcp);
  if (ip6_is_zero(dst) || is_loopback6(dst) || is_pod_ip6(cfg, dst)) return LEAVE;
  if ((cfg->flags & FLAG_CAPTURE_DNS) && port_be == bpf_htons(53)) return TO_DNS;
  if (tcp && !ip6_is_zero(cfg->pod_ip6[0])) return TO_OUTBOUND;
  return LEAVE;
}

static __always_inline void remember(void *ctx, const struct orig_dst *orig) {
  __u64 cookie = bpf_get_socket_cookie(ctx);
  bpf_map_update_elem(&orig_by_cookie, &cookie, orig, BPF_ANY);
}

// TCP and UDP sockets of the app, not carrying the proxy mark. ztunnel's own sockets are normally
// never seen here (they belong to ztunnel's cgroup), but an app socket with the mark is exempt
// exactly as the nftables rules exempt it.
static __always_inline int app_socket(const struct redirect_config *cfg, struct bpf_sock_addr *ctx, int *tcp) {
  __u32 protocol = ctx->protocol;
  if (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP) return 0;
  *tcp = protocol == IPPROTO_TCP;
  struct bpf_sock *sk = ctx->sk;
  return !(sk && is_proxy_mark(cfg, sk->mark));
}

// connect4 and sendmsg4: rewrite the destination and record the original by socket cookie.
static __always_inline int redirect4(struct bpf_sock_addr *ctx) {
  struct redirect_config *cfg = get_config();
  int tcp = 0;
  if (!cfg || !app_socket(cfg, ctx, &tcp)) return 1;
  __u32 dst = ctx->user_ip4;
  __u32 port = ctx->user_port;
  int action = decide4(cfg, dst, port, tcp);
  if (action == LEAVE) return 1;
  struct orig_dst orig = {.family = AF_INET, .port = port, .addr = {dst, 0, 0, 0}};
  remember(ctx, &orig);
  if (action == TO_OUTBOUND) {
    ctx->user_ip4 = cfg->pod_ip4[0];
    ctx->user_port = bpf_htons((__u16)cfg->outbound_port);
  } else {
    ctx->user_ip4 = bpf_htonl(0x7f000001);
    ctx->user_port = bpf_htons((__u16)cfg->dns_port);
  }
  return 1;
}

static __always_inline int redirect6(struct bpf_sock_addr *ctx) {
  struct redirect_config *cfg = get_config();
  int tcp = 0;
  if (!cfg || !app_socket(cfg, ctx, &tcp)) return 1;
  __u32 dst[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
  __u32 port = ctx->user_port;
  int action = decide6(cfg, dst, port, tcp);
  if (action == LEAVE) return 1;
  struct orig_dst orig = {.port = port};
  int mapped = is_v4_mapped(dst);
  if (mapped) {
    orig.family = AF_INET;
    orig.addr[0] = dst[3];
  } else {
    orig.family = AF_INET6;
    __builtin_memcpy(orig.addr, dst, sizeof(dst));
  }
  remember(ctx, &orig);
  __u32 to[4] = {0, 0, 0, 0};
  if (action == TO_OUTBOUND) {
    if (mapped) {
      set_mapped(to, cfg->pod_ip4[0]);
    } else {
      to[0] = cfg->pod_ip6[0][0];
      to[1] = cfg->pod_ip6[0][1];
      to[2] = cfg->pod_ip6[0][2];
      to[3] = cfg->pod_ip6[0][3];
    }
  } else if (mapped) {
    set_mapped(to, bpf_htonl(0x7f000001));
  } else {
    to[3] = bpf_htonl(1);
  }
  ctx->user_ip6[0] = to[0];
  ctx->user_ip6[1] = to[1];
  ctx->user_ip6[2] = to[2];
  ctx->user_ip6[3] = to[3];
  ctx->user_port = bpf_htons((__u16)(action == TO_OUTBOUND ? cfg->outbound_port : cfg->dns_port));
  return 1;
}

SEC("cgroup/connect4")
int redirect_connect4(struct bpf_sock_addr *ctx) { return redirect4(ctx); }

SEC("cgroup/connect6")
int redirect_connect6(struct bpf_sock_addr *ctx) { return redirect6(ctx); }

// Unconnected UDP: only DNS is captured (decide4 never sends UDP to 15001).
SEC("cgroup/sendmsg4")
int redirect_sendmsg4(struct bpf_sock_addr *ctx) { return redirect4(ctx); }

SEC("cgroup/sendmsg6")
int redirect_sendmsg6(struct bpf_sock_addr *ctx) { return redirect6(ctx); }

SEC("cgroup/getpeername4")
int restore_getpeername4(struct bpf_sock_addr *ctx) {
  __u64 cookie = bpf_get_socket_cookie(ctx);
  struct orig_dst *orig = bpf_map_lookup_elem(&orig_by_cookie, &cookie);
  if (!orig || orig->family != AF_INET) return 1;
  ctx->user_ip4 = orig->addr[0];
  ctx->user_port = orig->port;
  return 1;
}

static __always_inline void restore6(struct bpf_sock_addr *ctx, const struct orig_dst *orig) {
  if (orig->family == AF_INET) {
    ctx->user_ip6[0] = 0;
    ctx->user_ip6[1] = 0;
    ctx->user_ip6[2] = bpf_htonl(0xffff);
    ctx->user_ip6[3] = orig->addr[0];
  } else {
    ctx->user_ip6[0] = orig->addr[0];
    ctx->user_ip6[1] = orig->addr[1];
    ctx->user_ip6[2] = orig->addr[2];
    ctx->user_ip6[3] = orig->addr[3];
  }
  ctx->user_port = orig->port;
}

SEC("cgroup/getpeername6")
int restore_getpeername6(struct bpf_sock_addr *ctx) {
  __u64 cookie = bpf_get_socket_cookie(ctx);
  struct orig_dst *orig = bpf_map_lookup_elem(&orig_by_cookie, &cookie);
  if (orig) restore6(ctx, orig);
  return 1;
}

// A DNS answer from ztunnel's proxy shows the server the app asked.
SEC("cgroup/recvmsg4")
int restore_recvmsg4(struct bpf_sock_addr *ctx) {
  struct redirect_config *cfg = get_config();
  if (!cfg || ctx->user_ip4 != bpf_htonl(0x7f000001) || ctx->user_port != bpf_htons((__u16)cfg->dns_port)) return 1;
  __u64 cookie = bpf_get_socket_cookie(ctx);
  struct orig_dst *orig = bpf_map_lookup_elem(&orig_by_cookie, &cookie);
  if (!orig || orig->family != AF_INET) return 1;
  ctx->user_ip4 = orig->addr[0];
  ctx->user_port = orig->port;
  return 1;
}

SEC("cgroup/recvmsg6")
int restore_recvmsg6(struct bpf_sock_addr *ctx) {
  struct redirect_config *cfg = get_config();
  if (!cfg || ctx->user_port != bpf_htons((__u16)cfg->dns_port)) return 1;
  __u32 src[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
  int from_proxy = is_loopback6(src) || (is_v4_mapped(src) && src[3] == bpf_htonl(0x7f000001));
  if (!from_proxy) return 1;
  __u64 cookie = bpf_get_socket_cookie(ctx);
  struct orig_dst *orig = bpf_map_lookup_elem(&orig_by_cookie, &cookie);
  if (orig) restore6(ctx, orig);
  return 1;
}

// Each context field is loaded in its own branch and pinned there by an empty asm: clang
// otherwise sinks the IPv4 and IPv6 loads into one load from a computed context offset, which
// the verifier rejects ("dereference of modified ctx ptr").
#define CTX_LOAD(dst, field)          \
  do {                                \
    (dst) = (field);                  \
    asm volatile("" : "+r"(dst));     \
  } while (0)

static __always_inline void local_key(struct bpf_sock_ops *skops, struct peer_key *key) {
  __u32 a0, a1, a2, a3, port;
  if (skops->family == AF_INET) {
    CTX_LOAD(a3, skops->local_ip4);
    set_mapped(key->addr, a3);
  } else {
    CTX_LOAD(a0, skops->local_ip6[0]);
    CTX_LOAD(a1, skops->local_ip6[1]);
    CTX_LOAD(a2, skops->local_ip6[2]);
    CTX_LOAD(a3, skops->local_ip6[3]);
    key->addr[0] = a0;
    key->addr[1] = a1;
    key->addr[2] = a2;
    key->addr[3] = a3;
  }
  CTX_LOAD(port, skops->local_port);
  key->port = port;
}

// TCP_CONNECT_CB runs after the source port is bound and before the SYN leaves, so the record is
// in place before ztunnel can accept the connection.
SEC("sockops")
int track_sockops(struct bpf_sock_ops *skops) {
  if (skops->family != AF_INET && skops->family != AF_INET6) return 1;
  if (skops->op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
    __u64 cookie = bpf_get_socket_cookie(skops);
    struct orig_dst *orig = bpf_map_lookup_elem(&orig_by_cookie, &cookie);
    if (!orig) return 1;
    struct peer_key key = {};
    local_key(skops, &key);
    bpf_map_update_elem(&orig_by_peer, &key, orig, BPF_ANY);
    bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
  } else if (skops->op == BPF_SOCK_OPS_STATE_CB && skops->args[1] == TCP_CLOSE) {
    __u64 cookie = bpf_get_socket_cookie(skops);
    struct peer_key key = {};
    local_key(skops, &key);
    bpf_map_delete_elem(&orig_by_peer, &key);
    bpf_map_delete_elem(&orig_by_cookie, &cookie);
  }
  return 1;
}

struct sockaddr4 {
  __u16 family;
  __u16 port;
  __u32 addr;
  __u8 zero[8];
};

struct sockaddr6 {
  __u16 family;
  __u16 port;
  __u32 flowinfo;
  __u32 addr[4];
  __u32 scope_id;
};

// Runs for every getsockopt() on sockets of the proxy's cgroup; only answers SO_ORIGINAL_DST (and
// the IPv6 variant) on a socket accepted by this pod's outbound listener, and only when this pod
// recorded the connection. Everything else keeps the kernel's answer.
SEC("cgroup/getsockopt")
int answer_original_dst(struct bpf_sockopt *ctx) {
  if (ctx->optname != SO_ORIGINAL_DST) return 1;
  if (ctx->level != SOL_IP && ctx->level != SOL_IPV6) return 1;
  struct redirect_config *cfg = get_config();
  struct bpf_sock *sk = ctx->sk;
  if (!cfg || !sk || sk->src_port != cfg->outbound_port) return 1;
  struct peer_key key = {.port = bpf_ntohs(sk->dst_port)};
  if (sk->family == AF_INET) {
    set_mapped(key.addr, sk->dst_ip4);
  } else if (sk->family == AF_INET6) {
    key.addr[0] = sk->dst_ip6[0];
    key.addr[1] = sk->dst_ip6[1];
    key.addr[2] = sk->dst_ip6[2];
    key.addr[3] = sk->dst_ip6[3];
  } else {
    return 1;
  }
  struct orig_dst *orig = bpf_map_lookup_elem(&orig_by_peer, &key);
  if (!orig) return 1;
  if (ctx->level == SOL_IP && orig->family == AF_INET) {
    struct sockaddr4 *sa = ctx->optval;
    if ((void *)(sa + 1) > ctx->optval_end) return 1;
    sa->family = AF_INET;
    sa->port = (__u16)orig->port;
    sa->addr = orig->addr[0];
    __builtin_memset(sa->zero, 0, sizeof(sa->zero));
    ctx->optlen = sizeof(*sa);
    ctx->retval = 0;
  } else if (ctx->level == SOL_IPV6 && orig->family == AF_INET6) {
    struct sockaddr6 *sa = ctx->optval;
    if ((void *)(sa + 1) > ctx->optval_end) return 1;
    sa->family = AF_INET6;
    sa->port = (__u16)orig->port;
    sa->flowinfo = 0;
    sa->addr[0] = orig->addr[0];
    sa->addr[1] = orig->addr[1];
    sa->addr[2] = orig->addr[2];
    sa->addr[3] = orig->addr[3];
    sa->scope_id = 0;
    ctx->optlen = sizeof(*sa);
    ctx->retval = 0;
  }
  return 1;
}

// Inbound means: TCP to a pod IP on an application port, from an address outside the pod that is
// not the kubelet probe address, and not a SYN ztunnel sent itself.
static __always_inline int is_inbound_candidate(const struct redirect_config *cfg, struct bpf_sk_lookup *ctx,
                                                struct flow_key *key) {
  __u32 port = ctx->local_port;
  if (port == cfg->hbone_port || port == cfg->outbound_port || port == cfg->inbound_port) return 0;
  key->remote_port = ctx->remote_port;
  key->local_port = port;
  if (ctx->family == AF_INET) {
    __u32 local = ctx->local_ip4;
    __u32 remote = ctx->remote_ip4;
    if (!is_pod_ip4(cfg, local)) return 0;
    if (is_loopback4(remote) || is_pod_ip4(cfg, remote)) return 0;
    if (cfg->probe_ip4 != 0 && remote == cfg->probe_ip4) return 0;
    set_mapped(key->remote, remote);
    set_mapped(key->local, local);
    return 1;
  }
  if (ctx->family == AF_INET6) {
    __u32 local[4] = {ctx->local_ip6[0], ctx->local_ip6[1], ctx->local_ip6[2], ctx->local_ip6[3]};
    __u32 remote[4] = {ctx->remote_ip6[0], ctx->remote_ip6[1], ctx->remote_ip6[2], ctx->remote_ip6[3]};
    if (!is_pod_ip6(cfg, local)) return 0;
    if (is_loopback6(remote) || is_pod_ip6(cfg, remote)) return 0;
    if (!ip6_is_zero(cfg->probe_ip6) && ip6_equal(remote, cfg->probe_ip6)) return 0;
    __builtin_memcpy(key->remote, remote, sizeof(remote));
    __builtin_memcpy(key->local, local, sizeof(local));
    return 1;
  }
  return 0;
}

SEC("sk_lookup")
int steer_inbound(struct bpf_sk_lookup *ctx) {
  struct redirect_config *cfg = get_config();
  if (!cfg || !(cfg->flags & FLAG_CAPTURE_INBOUND)) return SK_PASS;
  if (ctx->protocol != IPPROTO_TCP || ctx->ingress_ifindex == LOOPBACK_IFINDEX) return SK_PASS;
  struct flow_key key = {};
  if (!is_inbound_candidate(cfg, ctx, &key)) return SK_PASS;
  if (bpf_map_lookup_elem(&proxy_syns, &key)) {
    bpf_map_delete_elem(&proxy_syns, &key);
    return SK_PASS;
  }
  __u32 slot = ctx->family == AF_INET6 ? 1 : 0;
  struct bpf_sock *sk = bpf_map_lookup_elem(&inbound_listeners, &slot);
  // No listener yet (pod pending) or gone: refuse, as REDIRECT to a closed 15006 would.
  if (!sk) return SK_DROP;
  long err = bpf_sk_assign(ctx, sk, 0);
  bpf_sk_release(sk);
  return err == 0 ? SK_PASS : SK_DROP;
}

static __always_inline void note_proxy_syn(struct __sk_buff *skb) {
  void *data = (void *)(long)skb->data;
  void *end = (void *)(long)skb->data_end;
  struct ethhdr *eth = data;
  if ((void *)(eth + 1) > end) return;
  struct flow_key key = {};
  struct tcphdr *tcp;
  if (eth->h_proto == bpf_htons(ETH_P_IP)) {
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP || ip->ihl < 5) return;
    tcp = (void *)ip + ip->ihl * 4;
    set_mapped(key.remote, ip->saddr);
    set_mapped(key.local, ip->daddr);
  } else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
    struct ipv6hdr *ip6 = (void *)(eth + 1);
    if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_TCP) return;
    tcp = (void *)(ip6 + 1);
    __builtin_memcpy(key.remote, &ip6->saddr, 16);
    __builtin_memcpy(key.local, &ip6->daddr, 16);
  } else {
    return;
  }
  if ((void *)(tcp + 1) > end || !tcp->syn || tcp->ack) return;
  key.remote_port = tcp->source;
  key.local_port = bpf_ntohs(tcp->dest);
  __u8 one = 1;
  bpf_map_update_elem(&proxy_syns, &key, &one, BPF_ANY);
}

SEC("tc")
int mark_proxy_to_app(struct __sk_buff *skb) {
  struct redirect_config *cfg = get_config();
  if (!cfg || !is_proxy_mark(cfg, skb->mark)) return TC_ACT_OK;
  skb->mark = (skb->mark & ~cfg->mark_mask) | cfg->route_mark;
  note_proxy_syn(skb);
  return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
