// tests/support/temp_dir.hpp — a fresh directory under /tmp for a test's
// files, removed with everything in it when the object goes.
#pragma once

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>

#include <stdlib.h>

namespace mapheap::test {

struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/mapheap-test-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr)
      throw std::runtime_error(std::string("mkdtemp /tmp/mapheap-test-XXXXXX: ") + std::strerror(errno));
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;  // a destructor does not throw; a leftover directory is harmless
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return path + "/" + name; }
  std::string path;
};

}  // namespace mapheap::test
