{
  "targets": [
    {
      "target_name": "ambient_native",
      "sources": [
        "src/addon.cc",
        "src/bpf.cc",
        "src/errors.cc",
        "src/malloc_tuning.cc",
        "src/netns.cc",
        "src/sockaddr.cc",
        "src/seqpacket.cc",
        "src/sockets.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=gnu++20", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "libraries": ["-lbpf"]
    }
  ]
}
