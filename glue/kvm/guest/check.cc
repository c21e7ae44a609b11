// glue/kvm/guest/check.cc — the test guest's report lines (check.h).
#include "guest/check.h"

#include <cstdint>

#include "guest/hw.h"

namespace guest {

uint32_t g_checks = 0;
uint32_t g_failures = 0;
const char* g_dev_name = "guest";
uint32_t g_flags = 0;

bool Check(bool ok, const char* what) {
  ++g_checks;
  if (!ok) ++g_failures;
  puts(ok ? "PASS " : "FAIL ");
  puts(g_dev_name);
  puts(": ");
  puts(what);
  putc('\n');
  return ok;
}
void Note(const char* what, uint32_t v) {
  puts("     ");
  puts(g_dev_name);
  puts(": ");
  puts(what);
  putc(' ');
  putdec(v);
  putc('\n');
}

}  // namespace guest
