/*
 * Interrupts from the UART, seen by a real-mode guest started at 0:0x7c00 (real mode, because
 * KVM on this project's machines cannot emulate a protected-mode IRET).
 *
 * 16 rounds of: enable the THR-empty interrupt (the UART raises IRQ 4 at once) and wait for it.
 * Prints "irqs=NN spurious=NN": interrupts that found the UART's THRE interrupt pending, and
 * interrupts that found nothing pending (IIR bit 0 set). Then "done" and debug-exit value 0.
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
  movw $handler, 0x30          /* IVT entry 0x0c = IRQ 4 with the PIC at vector 8 */
  movw $0, 0x32
  /* 8259A: edge-triggered, vectors 0x08 and 0x70 as on a PC, only IRQ 4 unmasked. */
  mov $0x11, %al
  out %al, $0x20
  out %al, $0xa0
  mov $0x08, %al
  out %al, $0x21
  mov $0x70, %al
  out %al, $0xa1
  mov $0x04, %al
  out %al, $0x21
  mov $0x02, %al
  out %al, $0xa1
  mov $0x01, %al
  out %al, $0x21
  out %al, $0xa1
  mov $0xef, %al
  out %al, $0x21
  mov $0xff, %al
  out %al, $0xa1
  mov $0x3fc, %dx              /* MCR: DTR, RTS, OUT2 (the UART's interrupt reaches the PIC) */
  mov $0x0b, %al
  out %al, %dx
  sti
  mov $16, %cx
round:
  mov interrupts, %bx
  mov $0x3f9, %dx              /* IER: THR empty */
  mov $0x02, %al
  out %al, %dx
  rdtsc                        /* wait 2^31 TSC cycles (about a second): time, not loop */
  add $0x80000000, %eax        /* turns, so a slow host and a fast software CPU wait alike, */
  adc $0, %edx                 /* long enough for a device server's restart */
  mov %eax, %edi
  mov %edx, %esi
wait:
  cmp interrupts, %bx
  jne next
  pause
  rdtsc
  cmp %esi, %edx
  jb wait
  ja next
  cmp %edi, %eax
  jb wait
next:
  mov $0x3f9, %dx
  xor %al, %al
  out %al, %dx
  mov $0x3fa, %dx              /* acknowledge, in case it never came */
  in %dx, %al
  loop round
  cli
  mov $text_irqs, %si
  call puts
  mov interrupts, %ax
  call put2
  mov $text_spurious, %si
  call puts
  mov spurious, %ax
  call put2
  mov $text_done, %si
  call puts
  xor %al, %al
  out %al, $0xf4
halt:
  cli
  hlt
  jmp halt

handler:
  push %ax
  push %dx
  mov $0x3fa, %dx              /* IIR: reading it acknowledges THR empty */
  in %dx, %al
  test $1, %al
  jnz nothing_pending
  incw interrupts
  jmp acknowledge
nothing_pending:
  incw spurious
acknowledge:
  mov $0x3f9, %dx
  xor %al, %al
  out %al, %dx
  mov $0x20, %al               /* EOI */
  out %al, $0x20
  pop %dx
  pop %ax
  iret

/* Prints the string at %si. */
puts:
  lodsb
  test %al, %al
  jz puts_done
  call putc
  jmp puts
puts_done:
  ret

/* Prints %ax (below 100) as two digits. */
put2:
  mov $10, %bl
  div %bl
  add $'0', %al
  push %ax
  call putc
  pop %ax
  mov %ah, %al
  add $'0', %al
  call putc
  ret

putc:
  push %dx
  push %ax
  mov $0x3fd, %dx
putc_wait:
  in %dx, %al
  test $0x20, %al
  jz putc_wait
  pop %ax
  mov $0x3f8, %dx
  out %al, %dx
  pop %dx
  ret

interrupts: .word 0
spurious: .word 0
text_irqs: .asciz "irqs="
text_spurious: .asciz " spurious="
text_done: .asciz "\ndone\n"
