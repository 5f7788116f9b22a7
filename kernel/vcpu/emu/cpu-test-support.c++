// The host side of the comparison tests: runNativeCode (cpu-test-support.h).
#include "kernel/vcpu/emu/cpu-test-support.h"

asm(R"(
  .text
  .globl runNativeCode
runNativeCode:
  push %rbx
  push %r12
  mov %rdi, %r12
  mov 0(%r12), %rax
  mov 8(%r12), %rbx
  mov 16(%r12), %rcx
  mov 24(%r12), %rdx
  pushq 32(%r12)
  popfq
  call *%rsi
  pushfq
  popq 32(%r12)
  mov %rax, 0(%r12)
  mov %rbx, 8(%r12)
  mov %rcx, 16(%r12)
  mov %rdx, 24(%r12)
  pop %r12
  pop %rbx
  ret
)");
