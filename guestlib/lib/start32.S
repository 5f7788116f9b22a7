/* Multiboot v1 entry for 32-bit guests: header, stack, then main32(magic, info). */
#define MB_MAGIC 0x1badb002
#define MB_FLAGS 0x00000003 /* page-align modules, memory information */

.section .multiboot, "a"
.align 4
.long MB_MAGIC
.long MB_FLAGS
.long -(MB_MAGIC + MB_FLAGS)

.section .text
.global _start
_start:
  mov $stack_top, %esp
  push %ebx
  push %eax
  call main32
  push $0x7f
  call guest_exit

.section .bss
.align 16
.skip 16384
stack_top:
