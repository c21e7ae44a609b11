# libvirtio_link_closure(<target> <out-var>)
#
# Sets <out-var> to every library <target> brings to a program that links
# it: its INTERFACE_LINK_LIBRARIES, and theirs, recursively (targets by
# name, plain libraries as given; generator expressions are kept as text).
# Used to prove at configure time that the core links no backend library.
include_guard(GLOBAL)

function(libvirtio_link_closure target out_var)
  set(_seen "")
  set(_queue "${target}")
  while(_queue)
    list(POP_FRONT _queue _t)
    if(NOT TARGET "${_t}")
      continue()
    endif()
    get_target_property(_aliased "${_t}" ALIASED_TARGET)
    if(_aliased)
      set(_t "${_aliased}")
    endif()
    get_target_property(_libs "${_t}" INTERFACE_LINK_LIBRARIES)
    if(NOT _libs)
      continue()
    endif()
    foreach(_lib IN LISTS _libs)
      # $<LINK_ONLY:x> wraps private dependencies of static libraries.
      string(REGEX REPLACE "^\\$<LINK_ONLY:(.*)>$" "\\1" _lib "${_lib}")
      if(NOT _lib IN_LIST _seen)
        list(APPEND _seen "${_lib}")
        list(APPEND _queue "${_lib}")
      endif()
    endforeach()
  endwhile()
  set(${out_var} "${_seen}" PARENT_SCOPE)
endfunction()
