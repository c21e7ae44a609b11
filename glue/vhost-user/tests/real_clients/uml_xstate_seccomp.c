// uml_xstate_seccomp PROGRAM ARGS...: runs PROGRAM under a seccomp filter
// that makes ptrace(PTRACE_GETREGSET / PTRACE_SETREGSET, pid, NT_X86_XSTATE,
// ...) fail with EIO. User-mode Linux 6.1 keeps a guest process's FP state
// in a fixed 2696-byte buffer; on a host whose xstate is larger (AMX: about
// 10.7 KB) every restore fails with EFAULT and the guest's first process
// dies. With XSTATE regsets refused, UML falls back to FXSAVE-only state.
// Built and used by uml_blk.sh only on hosts with AMX (see machine.md).
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NT_X86_XSTATE_ 0x202
#define PTRACE_GETREGSET_ 0x4204
#define PTRACE_SETREGSET_ 0x4205

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s PROGRAM [ARGS...]\n", argv[0]);
    return 2;
  }
  struct sock_filter f[] = {
      /* 0 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      /* 1 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 8),
      /* 2 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      /* 3 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ptrace, 0, 6),
      /* 4 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
      /* 5 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PTRACE_GETREGSET_, 1, 0),
      /* 6 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PTRACE_SETREGSET_, 0, 3),
      /* 7 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[2])),
      /* 8 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NT_X86_XSTATE_, 0, 1),
      /* 9 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EIO & SECCOMP_RET_DATA)),
      /* 10 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    perror("prctl(NO_NEW_PRIVS)");
    return 2;
  }
  if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
    perror("prctl(SECCOMP)");
    return 2;
  }
  execvp(argv[1], argv + 1);
  perror(argv[1]);
  return 127;
}
