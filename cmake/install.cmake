# `cmake --install` puts the headers, libmapheap.a, the CLI, a CMake package
# (find_package(mapheap)) and a pkg-config file (pkg-config --cflags --libs mapheap).
include(CMakePackageConfigHelpers)

install(DIRECTORY include/mapheap DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS mapheap EXPORT mapheapTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT mapheapTargets NAMESPACE mapheap::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/mapheap)
configure_package_config_file(cmake/mapheapConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/mapheapConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/mapheap)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/mapheapConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/mapheapConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/mapheapConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/mapheap)
# The .pc file locates the prefix relative to itself, so the package works
# wherever `cmake --install --prefix` puts it.
file(RELATIVE_PATH MAPHEAP_PC_TO_PREFIX "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
configure_file(cmake/mapheap.pc.in ${CMAKE_CURRENT_BINARY_DIR}/mapheap.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/mapheap.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
if(TARGET mapheap_preload)
  install(TARGETS mapheap_preload LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
endif()
