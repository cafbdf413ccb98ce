# Installation (`cmake --install BUILD --prefix P`, `make install PREFIX=P`) and the Debian
# package of the runtime (`make deb`). Components:
#   runtime  libapot_runtime.so and .a, the public headers (apot/apot.h, apot/runtime/model.h),
#            the CMake package (find_package(apot): apot::runtime, apot::runtime_static) and the
#            pkg-config file apot-runtime.pc
#   cli      the `apot` command (with LibTorch)
include(CMakePackageConfigHelpers)

set(APOT_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/apot)
install(TARGETS apot_runtime_shared apot_runtime_static EXPORT apotTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT runtime
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime)
install(FILES include/apot/apot.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/apot COMPONENT runtime)
install(FILES include/apot/runtime/model.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/apot/runtime COMPONENT runtime)
install(EXPORT apotTargets NAMESPACE apot:: DESTINATION ${APOT_CMAKE_DIR} COMPONENT runtime)
configure_package_config_file(cmake/apotConfig.cmake.in ${PROJECT_BINARY_DIR}/apotConfig.cmake
                              INSTALL_DESTINATION ${APOT_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/apotConfigVersion.cmake COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/apotConfig.cmake ${PROJECT_BINARY_DIR}/apotConfigVersion.cmake
        DESTINATION ${APOT_CMAKE_DIR} COMPONENT runtime)

# pkg-config: relocatable (prefix found from the .pc file's own directory), so that
# `cmake --install --prefix` anywhere gives a working file.
file(RELATIVE_PATH APOT_PC_TO_PREFIX /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
configure_file(cmake/apot-runtime.pc.in ${PROJECT_BINARY_DIR}/apot-runtime.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/apot-runtime.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT runtime)

if(TARGET apot)
  install(TARGETS apot RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT cli)
endif()

# `make deb`: the runtime component as one Debian package, apot-runtime (its dependencies from
# dpkg-shlibdeps: libgomp1, libxxhash0, libstdc++6, libc6).
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME apot-runtime)
set(CPACK_PACKAGE_VENDOR "apot")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "APoT integer inference engine: runtime library, C and C++ headers")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL runtime)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME apot-runtime)
set(CPACK_DEBIAN_RUNTIME_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "apot developers <apot@localhost>")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_STRIP_FILES ON)  # no debug information in the package
set(CPACK_OUTPUT_FILE_PREFIX ${PROJECT_BINARY_DIR}/packages)
include(CPack)
