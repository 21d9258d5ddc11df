# Warnings every mapheap target compiles with. Kept clean on GCC 12 and clang 14.
add_library(mapheap_warnings INTERFACE)
target_compile_options(mapheap_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-align
  -Wconversion -Wno-sign-conversion -Wimplicit-fallthrough -Wformat=2)
if(MAPHEAP_WERROR)
  target_compile_options(mapheap_warnings INTERFACE -Werror)
endif()
