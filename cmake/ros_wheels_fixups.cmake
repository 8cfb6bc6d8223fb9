# Injected with -DCMAKE_PROJECT_INCLUDE=<this file> when building interface packages
# against the ROS 2 wheels from PyPI (see Makefile). Not needed on a regular ROS 2 install.
#
# Why: the wheels' exported `<pkg>__rosidl_generator_py` targets carry the wheel builder's
# `/opt/python/cp311-cp311/...` Python and NumPy include directories in
# INTERFACE_INCLUDE_DIRECTORIES. CMake refuses imported targets whose include directories do
# not exist, so we rewrite those entries to this interpreter's directories once every
# find_package() of the project has run (a deferred call at the end of the directory).
cmake_minimum_required(VERSION 3.19)

function(_pgov3d_fix_wheel_include_dirs)
  find_package(Python3 REQUIRED COMPONENTS Interpreter Development NumPy)
  get_property(_targets DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  foreach(_target IN LISTS _targets)
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_fixed "")
    set(_changed FALSE)
    foreach(_dir IN LISTS _dirs)
      if(_dir MATCHES "^/opt/python/cp[0-9]+-cp[0-9]+/include/")
        list(APPEND _fixed ${Python3_INCLUDE_DIRS})
        set(_changed TRUE)
      elseif(_dir MATCHES "^/opt/python/.*/numpy/.*include$")
        list(APPEND _fixed ${Python3_NumPy_INCLUDE_DIRS})
        set(_changed TRUE)
      else()
        list(APPEND _fixed "${_dir}")
      endif()
    endforeach()
    if(_changed)
      list(REMOVE_DUPLICATES _fixed)
      set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_fixed}")
      message(STATUS "pgov3d: rewrote wheel-builder include dirs of ${_target}")
    endif()
  endforeach()
endfunction()

cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _pgov3d_fix_wheel_include_dirs)
