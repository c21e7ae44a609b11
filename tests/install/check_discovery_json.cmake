# cmake -DJSON=FILE -DWANT_TYPE=TYPE -P check_discovery_json.cmake
# Checks one installed QEMU vhost-user discovery file against QEMU's
# vhost-user.json schema (VhostUserBackend: description, type, binary, and
# optional tags; nothing else) and prints its binary. Fails on anything
# missing, extra or of the wrong type.
file(READ "${JSON}" text)
string(JSON members ERROR_VARIABLE err LENGTH "${text}")
if(err)
  message(FATAL_ERROR "not a JSON object: ${err}")
endif()
math(EXPR last "${members} - 1")
foreach(i RANGE ${last})
  string(JSON key MEMBER "${text}" ${i})
  if(NOT key MATCHES "^(description|type|binary|tags)$")
    message(FATAL_ERROR "member '${key}' is not in QEMU's VhostUserBackend")
  endif()
endforeach()
foreach(key IN ITEMS description type binary)
  string(JSON value ERROR_VARIABLE err GET "${text}" ${key})
  if(err OR value STREQUAL "")
    message(FATAL_ERROR "'${key}' missing or empty")
  endif()
endforeach()
string(JSON type GET "${text}" type)
if(NOT type STREQUAL WANT_TYPE)
  message(FATAL_ERROR "type '${type}', want '${WANT_TYPE}'")
endif()
string(JSON binary GET "${text}" binary)
if(NOT IS_ABSOLUTE "${binary}")
  message(FATAL_ERROR "binary '${binary}' is not an absolute path")
endif()
# message() goes to stderr; the binary is the script's answer on stdout.
execute_process(COMMAND ${CMAKE_COMMAND} -E echo "${binary}")
