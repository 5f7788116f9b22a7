/* Entry for flat 64-bit guests (the VMM starts them in 64-bit mode with identity paging). */
.section .text.start, "ax"
.global _start
_start:
  mov $stack_top, %rsp
  call main64
  mov $0x7f, %edi
  call guest_exit

.section .bss
.align 16
.skip 16384
stack_top:
