/* A flat 16-bit guest, started in real mode at 0:0x7c00: prints, exits with value 5 (status 11). */
.code16
.section .text
.global _start
_start:
  xor %ax, %ax
  mov %ax, %ds
  mov %ax, %ss
  mov $0x7c00, %sp
  mov $message, %si
next:
  lodsb
  test %al, %al
  jz done
  mov %al, %bl
wait_thre:
  mov $0x3fd, %dx
  inb %dx, %al
  test $0x20, %al
  jz wait_thre
  mov $0x3f8, %dx
  mov %bl, %al
  outb %al, %dx
  jmp next
done:
  mov $5, %al
  outb %al, $0xf4
halt:
  cli
  hlt
  jmp halt
message:
  .asciz "real mode ok\n"
