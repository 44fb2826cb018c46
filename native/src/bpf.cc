#include "bpf.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "addon_data.h"
#include "errors.h"
#include "netns.h"
#include "options.h"
#include "unique_fd.h"

namespace ambient {

namespace {

// libbpf reports verifier logs and relocation failures through its print callback. While an operation
// runs, messages are collected here and the tail is appended to the error message; otherwise they are
// dropped so libbpf never writes to the process's stderr.
thread_local std::string* g_log_sink = nullptr;
constexpr size_t kLogTail = 4096;

int PrintLibbpf(enum libbpf_print_level level, const char* format, va_list args) {
  if (level == LIBBPF_DEBUG || g_log_sink == nullptr) return 0;
  char line[1024];
  int n = std::vsnprintf(line, sizeof(line), format, args);
  g_log_sink->append(line);
  if (g_log_sink->size() > 4 * kLogTail) g_log_sink->erase(0, g_log_sink->size() - kLogTail);
  return n;
}

class LogCapture {
 public:
  LogCapture() { g_log_sink = &log_; }
  ~LogCapture() { g_log_sink = nullptr; }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  std::string Tail() const {
    if (log_.empty()) return "";
    std::string tail = log_.size() > kLogTail ? log_.substr(log_.size() - kLogTail) : log_;
    while (!tail.empty() && tail.back() == '\n') tail.pop_back();
    return "\nlibbpf: " + tail;
  }

 private:
  std::string log_;
};

Napi::Error LibbpfError(Napi::Env env, int err, const char* op, const std::string& detail, const LogCapture* log) {
  return ErrnoError(env, err < 0 ? -err : err, op, detail + (log != nullptr ? log->Tail() : ""));
}

struct LinkDeleter {
  void operator()(bpf_link* link) const { bpf_link__destroy(link); }
};
using LinkPtr = std::unique_ptr<bpf_link, LinkDeleter>;

bool IsPerCpu(bpf_map_type type) {
  return type == BPF_MAP_TYPE_PERCPU_ARRAY || type == BPF_MAP_TYPE_PERCPU_HASH ||
         type == BPF_MAP_TYPE_LRU_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

// An attached program. close() destroys the link, which detaches it unless it is pinned; detach()
// detaches even a pinned link.
class BpfLink : public Napi::ObjectWrap<BpfLink> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "BpfLink",
                       {
                           InstanceMethod<&BpfLink::Pin>("pin"),
                           InstanceMethod<&BpfLink::Unpin>("unpin"),
                           InstanceMethod<&BpfLink::Detach>("detach"),
                           InstanceMethod<&BpfLink::Close>("close"),
                       });
  }

  explicit BpfLink(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpfLink>(info) {
    if (!info[0].IsExternal()) throw Napi::TypeError::New(info.Env(), "BpfLink is created by attach calls");
    link_.reset(info[0].As<Napi::External<bpf_link>>().Data());
  }

 private:
  bpf_link* Get(Napi::Env env, const char* op) {
    if (!link_) throw ErrnoError(env, EBADF, op, "", "bpf link is closed");
    return link_.get();
  }

  Napi::Value Pin(const Napi::CallbackInfo& info) {
    std::string path = info[0].As<Napi::String>().Utf8Value();
    int rc = bpf_link__pin(Get(info.Env(), "bpf_link__pin"), path.c_str());
    if (rc != 0) throw LibbpfError(info.Env(), rc, "bpf_link__pin", path, nullptr);
    return info.Env().Undefined();
  }

  Napi::Value Unpin(const Napi::CallbackInfo& info) {
    bpf_link* link = Get(info.Env(), "bpf_link__unpin");
    const char* pinned = bpf_link__pin_path(link);
    std::string path = pinned != nullptr ? pinned : "";
    int rc = bpf_link__unpin(link);
    if (rc != 0) throw LibbpfError(info.Env(), rc, "bpf_link__unpin", path, nullptr);
    return info.Env().Undefined();
  }

  Napi::Value Detach(const Napi::CallbackInfo& info) {
    int rc = bpf_link__detach(Get(info.Env(), "bpf_link__detach"));
    if (rc != 0) throw LibbpfError(info.Env(), rc, "bpf_link__detach", "", nullptr);
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    link_.reset();
    return info.Env().Undefined();
  }

  LinkPtr link_;
};

struct TcSpec {
  int ifindex;
  bpf_tc_attach_point attach_point;
  uint32_t handle;
  uint32_t priority;
  UniqueFd netns;  // the namespace the ifindex belongs to; invalid for the current one
};

// A tc filter attached with bpf_tc_attach. Unlike links, tc filters are netlink state that outlives
// every fd: only close() removes it. The clsact qdisc is left in place because other filters may use it.
class TcAttachment : public Napi::ObjectWrap<TcAttachment> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "TcAttachment",
                       {
                           InstanceMethod<&TcAttachment::Close>("close"),
                           InstanceAccessor<&TcAttachment::GetHandle>("handle"),
                           InstanceAccessor<&TcAttachment::GetPriority>("priority"),
                       });
  }

  explicit TcAttachment(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TcAttachment>(info) {
    if (!info[0].IsExternal()) throw Napi::TypeError::New(info.Env(), "TcAttachment is created by attachTc");
    spec_.reset(info[0].As<Napi::External<TcSpec>>().Data());
  }

 private:
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!spec_) return env.Undefined();
    std::unique_ptr<TcSpec> spec = std::move(spec_);
    bpf_tc_hook hook{};
    hook.sz = sizeof(hook);
    hook.ifindex = spec->ifindex;
    hook.attach_point = spec->attach_point;
    bpf_tc_opts opts{};
    opts.sz = sizeof(opts);
    opts.handle = spec->handle;
    opts.priority = spec->priority;
    int rc;
    {
      NetnsScope scope(env, spec->netns.get());
      rc = bpf_tc_detach(&hook, &opts);
    }
    if (rc != 0) throw LibbpfError(env, rc, "bpf_tc_detach", "ifindex " + std::to_string(spec->ifindex), nullptr);
    return env.Undefined();
  }

  Napi::Value GetHandle(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), spec_ ? spec_->handle : 0);
  }
  Napi::Value GetPriority(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), spec_ ? spec_->priority : 0);
  }

  std::unique_ptr<TcSpec> spec_;
};

// A bpf_object. Programs and maps are addressed by name on every call so that nothing can hold a
// pointer into an object after close().
//
// new BpfObject(path); load(); programs() -> string[]; maps() -> MapInfo[];
// attachCgroup(program, cgroupFd) / attachNetns(program, netnsFd) -> BpfLink;
// attachTc(program, { ifindex, egress, handle, priority, netnsFd }) -> TcAttachment;
// mapLookup(map, key) -> Buffer | undefined; mapUpdate(map, key, value, flags); mapDelete(map, key) -> bool;
// pinMap(map, path); unpinMap(map, path); close()
class BpfObject : public Napi::ObjectWrap<BpfObject> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "BpfObject",
                       {
                           InstanceMethod<&BpfObject::Load>("load"),
                           InstanceMethod<&BpfObject::Programs>("programs"),
                           InstanceMethod<&BpfObject::Maps>("maps"),
                           InstanceMethod<&BpfObject::AttachCgroup>("attachCgroup"),
                           InstanceMethod<&BpfObject::AttachNetns>("attachNetns"),
                           InstanceMethod<&BpfObject::AttachTc>("attachTc"),
                           InstanceMethod<&BpfObject::MapLookup>("mapLookup"),
                           InstanceMethod<&BpfObject::MapUpdate>("mapUpdate"),
                           InstanceMethod<&BpfObject::MapDelete>("mapDelete"),
                           InstanceMethod<&BpfObject::PinMap>("pinMap"),
                           InstanceMethod<&BpfObject::UnpinMap>("unpinMap"),
                           InstanceMethod<&BpfObject::Close>("close"),
                       });
  }

  explicit BpfObject(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpfObject>(info) {
    Napi::Env env = info.Env();
    path_ = info[0].As<Napi::String>().Utf8Value();
    LogCapture log;
    obj_ = bpf_object__open_file(path_.c_str(), nullptr);
    if (obj_ == nullptr) throw LibbpfError(env, errno, "bpf_object__open_file", path_, &log);
  }

  ~BpfObject() override { bpf_object__close(obj_); }

 private:
  bpf_object* Get(Napi::Env env, const char* op) {
    if (obj_ == nullptr) throw ErrnoError(env, EBADF, op, path_, "bpf object is closed");
    return obj_;
  }

  bpf_program* Program(Napi::Env env, const Napi::Value& name, const char* op) {
    std::string n = name.As<Napi::String>().Utf8Value();
    bpf_program* prog = bpf_object__find_program_by_name(Get(env, op), n.c_str());
    if (prog == nullptr) throw ErrnoError(env, ENOENT, op, "program " + n + " in " + path_, "no such program");
    return prog;
  }

  bpf_map* Map(Napi::Env env, const Napi::Value& name, const char* op) {
    std::string n = name.As<Napi::String>().Utf8Value();
    bpf_map* map = bpf_object__find_map_by_name(Get(env, op), n.c_str());
    if (map == nullptr) throw ErrnoError(env, ENOENT, op, "map " + n + " in " + path_, "no such map");
    return map;
  }

  Napi::Value Load(const Napi::CallbackInfo& info) {
    LogCapture log;
    int rc = bpf_object__load(Get(info.Env(), "bpf_object__load"));
    if (rc != 0) throw LibbpfError(info.Env(), rc, "bpf_object__load", path_, &log);
    return info.Env().Undefined();
  }

  Napi::Value Programs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Array out = Napi::Array::New(env);
    bpf_program* prog = nullptr;
    bpf_object__for_each_program(prog, Get(env, "bpf_object__next_program")) {
      Napi::Object p = Napi::Object::New(env);
      p.Set("name", bpf_program__name(prog));
      p.Set("section", bpf_program__section_name(prog));
      out.Set(out.Length(), p);
    }
    return out;
  }

  Napi::Value Maps(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Array out = Napi::Array::New(env);
    bpf_map* map = nullptr;
    bpf_object__for_each_map(map, Get(env, "bpf_object__next_map")) {
      if (bpf_map__is_internal(map)) continue;
      Napi::Object m = Napi::Object::New(env);
      m.Set("name", bpf_map__name(map));
      m.Set("type", static_cast<int>(bpf_map__type(map)));
      m.Set("keySize", bpf_map__key_size(map));
      m.Set("valueSize", bpf_map__value_size(map));
      m.Set("maxEntries", bpf_map__max_entries(map));
      out.Set(out.Length(), m);
    }
    return out;
  }

  Napi::Value WrapLink(Napi::Env env, LinkPtr link) {
    Napi::Object obj = GetAddonData(env).bpf_link.New({Napi::External<bpf_link>::New(env, link.get())});
    link.release();  // the BpfLink constructor took ownership
    return obj;
  }

  Napi::Value AttachCgroup(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bpf_program* prog = Program(env, info[0], "bpf_program__attach_cgroup");
    int cgroup_fd = info[1].As<Napi::Number>().Int32Value();
    LogCapture log;
    LinkPtr link(bpf_program__attach_cgroup(prog, cgroup_fd));
    if (!link) {
      throw LibbpfError(env, errno, "bpf_program__attach_cgroup",
                        std::string(bpf_program__name(prog)) + " cgroup fd " + std::to_string(cgroup_fd), &log);
    }
    return WrapLink(env, std::move(link));
  }

  Napi::Value AttachNetns(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bpf_program* prog = Program(env, info[0], "bpf_program__attach_netns");
    int netns_fd = info[1].As<Napi::Number>().Int32Value();
    LogCapture log;
    LinkPtr link(bpf_program__attach_netns(prog, netns_fd));
    if (!link) {
      throw LibbpfError(env, errno, "bpf_program__attach_netns",
                        std::string(bpf_program__name(prog)) + " netns fd " + std::to_string(netns_fd), &log);
    }
    return WrapLink(env, std::move(link));
  }

  Napi::Value AttachTc(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bpf_program* prog = Program(env, info[0], "bpf_tc_attach");
    Napi::Object opts = info[1].As<Napi::Object>();
    auto spec = std::make_unique<TcSpec>();
    spec->ifindex = OptInt(opts, "ifindex", 0);
    spec->attach_point = OptBool(opts, "egress", false) ? BPF_TC_EGRESS : BPF_TC_INGRESS;
    int netns_fd = OptInt(opts, "netnsFd", -1);
    std::string detail = std::string(bpf_program__name(prog)) + " ifindex " + std::to_string(spec->ifindex);
    if (netns_fd >= 0) {
      // Kept so that close() detaches in the same namespace even after the caller closed its fd.
      spec->netns.reset(::fcntl(netns_fd, F_DUPFD_CLOEXEC, 0));
      if (!spec->netns.valid()) throw ErrnoError(env, errno, "fcntl", "F_DUPFD_CLOEXEC netns fd");
    }

    bpf_tc_hook hook{};
    hook.sz = sizeof(hook);
    hook.ifindex = spec->ifindex;
    hook.attach_point = spec->attach_point;
    bpf_tc_opts tc{};
    tc.sz = sizeof(tc);
    tc.prog_fd = bpf_program__fd(prog);
    tc.handle = static_cast<uint32_t>(OptInt64(opts, "handle", 0));
    tc.priority = static_cast<uint32_t>(OptInt64(opts, "priority", 0));
    LogCapture log;
    {
      // ifindexes and the netlink socket libbpf opens both belong to the current namespace.
      NetnsScope scope(env, spec->netns.get());
      int rc = bpf_tc_hook_create(&hook);
      if (rc != 0 && rc != -EEXIST) throw LibbpfError(env, rc, "bpf_tc_hook_create", detail, &log);
      rc = bpf_tc_attach(&hook, &tc);
      if (rc != 0) throw LibbpfError(env, rc, "bpf_tc_attach", detail, &log);
    }
    spec->handle = tc.handle;
    spec->priority = tc.priority;
    Napi::Object obj = GetAddonData(env).tc_attachment.New({Napi::External<TcSpec>::New(env, spec.get())});
    spec.release();  // the TcAttachment constructor took ownership
    return obj;
  }

  size_t ValueSize(bpf_map* map) {
    size_t size = bpf_map__value_size(map);
    if (!IsPerCpu(bpf_map__type(map))) return size;
    int cpus = libbpf_num_possible_cpus();
    return ((size + 7) / 8) * 8 * static_cast<size_t>(cpus > 0 ? cpus : 1);
  }

  Napi::Value MapLookup(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bpf_map* map = Map(env, info[0], "bpf_map__lookup_elem");
    Napi::Buffer<uint8_t> key = info[1].As<Napi::Buffer<uint8_t>>();
    std::vector<uint8_t> value(ValueSize(map));
    int rc = bpf_map__lookup_elem(map, key.Data(), key.Length(), value.data(), value.size(), 0);
    if (rc == -ENOENT) return env.Undefined();
    if (rc != 0) throw LibbpfError(env, rc, "bpf_map__lookup_elem", bpf_map__name(map), nullptr);
    return Napi::Buffer<uint8_t>::Copy(env, value.data(), value.size());
  }

  Napi::Value MapUpdate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bpf_map* map = Map(env, info[0], "bpf_map__update_elem");
    Napi::Buffer<uint8_t> key = info[1].As<Napi::Buffer<uint8_t>>();
    Napi::Buffer<uint8_t> value = info[2].As<Napi::Buffer<uint8_t>>();
    uint64_t flags = info[3].IsNumber() ? info[3].As<Napi::Number>().Int64Value() : uint64_t{BPF_ANY};
    int rc = bpf_map__update_elem(map, key.Data(), key.Length(), value.Data(), value.Length(), flags);
    if (rc != 0) throw LibbpfError(env, rc, "bpf_map__update_elem", bpf_map__name(map), nullptr);
    return env.Undefined();
  }

  Napi::Value MapDelete(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bpf_map* map = Map(env, info[0], "bpf_map__delete_elem");
    Napi::Buffer<uint8_t> key = info[1].As<Napi::Buffer<uint8_t>>();
    int rc = bpf_map__delete_elem(map, key.Data(), key.Length(), 0);
    if (rc == -ENOENT) return Napi::Boolean::New(env, false);
    if (rc != 0) throw LibbpfError(env, rc, "bpf_map__delete_elem", bpf_map__name(map), nullptr);
    return Napi::Boolean::New(env, true);
  }

  Napi::Value PinMap(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bpf_map* map = Map(env, info[0], "bpf_map__pin");
    std::string path = info[1].As<Napi::String>().Utf8Value();
    LogCapture log;
    int rc = bpf_map__pin(map, path.c_str());
    if (rc != 0) throw LibbpfError(env, rc, "bpf_map__pin", path, &log);
    return env.Undefined();
  }

  Napi::Value UnpinMap(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bpf_map* map = Map(env, info[0], "bpf_map__unpin");
    std::string path = info[1].As<Napi::String>().Utf8Value();
    LogCapture log;
    int rc = bpf_map__unpin(map, path.c_str());
    if (rc != 0) throw LibbpfError(env, rc, "bpf_map__unpin", path, &log);
    return env.Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    bpf_object__close(obj_);
    obj_ = nullptr;
    return info.Env().Undefined();
  }

  std::string path_;
  bpf_object* obj_ = nullptr;
};

// pinnedMapSetSocket(path, key, socketFd): puts a socket at u32 `key` of a SOCKMAP pinned at
// `path` (bpf_obj_get). The map takes its own reference; the caller keeps owning socketFd. This is
// how a process that did not load the map (ztunnel) fills a map the CNI agent pinned.
Napi::Value PinnedMapSetSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  uint32_t key = info[1].As<Napi::Number>().Uint32Value();
  int sock = info[2].As<Napi::Number>().Int32Value();
  int map_fd = bpf_obj_get(path.c_str());
  if (map_fd < 0) throw LibbpfError(env, -errno, "bpf_obj_get", path, nullptr);
  UniqueFd map(map_fd);
  bpf_map_info map_info{};
  uint32_t len = sizeof(map_info);
  int rc = bpf_obj_get_info_by_fd(map.get(), &map_info, &len);
  if (rc != 0) throw LibbpfError(env, rc, "bpf_obj_get_info_by_fd", path, nullptr);
  if (map_info.type != BPF_MAP_TYPE_SOCKMAP || map_info.key_size != 4) {
    throw LibbpfError(env, -EINVAL, "pinnedMapSetSocket", path + " is not a SOCKMAP with u32 keys", nullptr);
  }
  uint64_t value = static_cast<uint64_t>(sock);
  rc = bpf_map_update_elem(map.get(), &key, &value, BPF_ANY);
  if (rc != 0) throw LibbpfError(env, rc, "bpf_map_update_elem", path, nullptr);
  return env.Undefined();
}

}  // namespace

void InitBpf(Napi::Env env, Napi::Object exports) {
  libbpf_set_print(PrintLibbpf);
  AddonData& data = GetAddonData(env);
  Napi::Function link = BpfLink::Define(env);
  data.bpf_link = Napi::Persistent(link);
  Napi::Function tc = TcAttachment::Define(env);
  data.tc_attachment = Napi::Persistent(tc);
  exports.Set("BpfObject", BpfObject::Define(env));
  exports.Set("BpfLink", link);
  exports.Set("TcAttachment", tc);
  exports.Set("pinnedMapSetSocket", Napi::Function::New<PinnedMapSetSocket>(env, "pinnedMapSetSocket"));
}

}  // namespace ambient
