# Header-only dependencies (Boost, doctest, GSL) for a cross build, taken from the build host.
# The host's CMake packages cannot be used: their targets put -isystem /usr/include on the command line, where
# the host's C headers shadow the target's (mingw's). Only the libraries' own header folders are exposed,
# through a folder of symlinks.
set(openlock_host_include ${PROJECT_BINARY_DIR}/host-headers)
file(MAKE_DIRECTORY ${openlock_host_include})
foreach(folder boost doctest gsl)
  if(NOT EXISTS ${openlock_host_include}/${folder})
    file(CREATE_LINK /usr/include/${folder} ${openlock_host_include}/${folder} SYMBOLIC)
  endif()
endforeach()

# Boost.Process includes <Windows.h>; the mingw headers are lower case and Linux file names are not.
file(WRITE ${openlock_host_include}/Windows.h "#include <windows.h>\n")

add_library(Boost::headers INTERFACE IMPORTED GLOBAL)
target_include_directories(Boost::headers SYSTEM INTERFACE ${openlock_host_include})
add_library(Microsoft.GSL::GSL INTERFACE IMPORTED GLOBAL)
target_include_directories(Microsoft.GSL::GSL SYSTEM INTERFACE ${openlock_host_include})
add_library(doctest::doctest INTERFACE IMPORTED GLOBAL)
target_include_directories(doctest::doctest SYSTEM INTERFACE ${openlock_host_include})
set(doctest_DIR /usr/lib/cmake/doctest CACHE PATH "doctest's CMake folder (for doctest.cmake)")
