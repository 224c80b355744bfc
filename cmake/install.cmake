include(CMakePackageConfigHelpers)

install(TARGETS flypg flypg_asio EXPORT flypgTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/flypg DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT flypgTargets NAMESPACE flypg:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/flypg)

configure_package_config_file(cmake/flypgConfig.cmake.in ${PROJECT_BINARY_DIR}/flypgConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/flypg)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/flypgConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/flypgConfig.cmake ${PROJECT_BINARY_DIR}/flypgConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/flypg)
