# Cross build for 64-bit ARM Linux with Debian's cross toolchain
# (gcc-aarch64-linux-gnu) and the arm64 multiarch -dev packages of the
# dependencies (libcjson-dev:arm64, libpcre2-dev:arm64); tests run under
# qemu-aarch64 (qemu-user). scripts/bootstrap.sh --aarch64 installs them.
#
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(MNV_CROSS_TRIPLE aarch64-linux-gnu)

set(CMAKE_C_COMPILER ${MNV_CROSS_TRIPLE}-gcc)
# The C++ header check needs the cross g++ (g++-aarch64-linux-gnu); without
# it the check is left out rather than built by the host's compiler.
find_program(MNV_CROSS_CXX ${MNV_CROSS_TRIPLE}-g++)
if(MNV_CROSS_CXX)
  set(CMAKE_CXX_COMPILER ${MNV_CROSS_CXX})
else()
  set(CMAKE_CXX_COMPILER "")
endif()
set(CMAKE_FIND_ROOT_PATH /usr/${MNV_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# pkg-config reads only the arm64 .pc files (multiarch paths), never the host's.
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/${MNV_CROSS_TRIPLE}/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")

# Test executables run through qemu. With the arm64 libc installed as a
# multiarch package (libc6:arm64, which the -dev packages above pull in) the
# loader and every library are at their usual paths; otherwise -L points
# qemu at the cross toolchain's copy (with qemu 7.2, -L makes thread
# creation hang, so it is the fallback only).
find_program(MNV_QEMU_AARCH64 NAMES qemu-aarch64 qemu-aarch64-static)
if(MNV_QEMU_AARCH64)
  if(EXISTS /lib/ld-linux-aarch64.so.1)
    set(CMAKE_CROSSCOMPILING_EMULATOR ${MNV_QEMU_AARCH64})
  else()
    set(CMAKE_CROSSCOMPILING_EMULATOR ${MNV_QEMU_AARCH64} -L /usr/${MNV_CROSS_TRIPLE})
  endif()
endif()
