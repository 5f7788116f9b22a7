/*
 * A two-stage boot sector for BIOS boots. Stage 1 (the MBR, loaded by the BIOS at 0:0x7c00)
 * prints "mbr: stage 1", reads the next STAGE2_SECTORS sectors of the boot drive through
 * INT 13h's extended read (AH=0x42) to 0:0x7e00 and jumps there. Stage 2 prints "mbr: stage 2
 * from INT 13h" and ends the VM through debug-exit with the byte at EXIT_VALUE (offset 0x3fe of
 * the image; 7 as built, so status 15; tests patch it). Output goes straight to COM1.
 */
.code16
.section .text
.global _start
_start:
  cli
  xor %ax, %ax
  mov %ax, %ds
  mov %ax, %es
  mov %ax, %ss
  mov $0x7c00, %sp
  sti
  mov %dl, boot_drive
  mov $stage1_message, %si
  call print
  mov $0x42, %ah
  mov boot_drive, %dl
  mov $packet, %si
  int $0x13
  jc read_failed
  jmp stage2

read_failed:
  mov $failed_message, %si
  call print
  mov $3, %al
  outb %al, $0xf4
halt:
  cli
  hlt
  jmp halt

/* Prints the NUL-terminated string at DS:SI on COM1. */
print:
  lodsb
  test %al, %al
  jz printed
  mov %al, %bl
wait_thre:
  mov $0x3fd, %dx
  inb %dx, %al
  test $0x20, %al
  jz wait_thre
  mov $0x3f8, %dx
  mov %bl, %al
  outb %al, %dx
  jmp print
printed:
  ret

boot_drive:
  .byte 0
  .balign 4
packet:                 /* the INT 13h disk address packet */
  .byte 16, 0
  .word STAGE2_SECTORS  /* sectors */
  .word 0x7e00, 0       /* buffer offset, segment */
  .quad 1               /* first sector */
stage1_message:
  .asciz "mbr: stage 1\n"
failed_message:
  .asciz "mbr: INT 13h read failed\n"

  .org 510
  .byte 0x55, 0xaa

/* Sector 1 onwards: loaded by stage 1. */
stage2:
  mov $stage2_message, %si
  call print
  mov exit_value, %al
  outb %al, $0xf4
  jmp halt
stage2_message:
  .asciz "mbr: stage 2 from INT 13h\n"
  .org 0x3fe
exit_value:
  .byte 7
  .byte 0
.equ STAGE2_SECTORS, 1
