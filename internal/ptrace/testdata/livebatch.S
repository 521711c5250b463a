	.intel_syntax noprefix
	.text
	.globl start
start:
loop:
	mov rax, [rbx]
	mov rdi, [rbx+8]
	mov rsi, [rbx+16]
	mov rdx, [rbx+24]
	mov r10, [rbx+32]
	mov r8,  [rbx+40]
	mov r9,  [rbx+48]
	syscall
	mov [rbx+56], rax
	add rbx, 64
	dec r12
	jnz loop
	mov eax, 234
	mov rdi, [rip+d_tgid]
	mov rsi, [rip+d_tid]
	mov rdx, [rip+d_sig]
	syscall
	mov eax, 14
	mov edi, 1
	lea rsi, [rip+d_sigset]
	xor edx, edx
	mov r10d, 8
	syscall
stop:
	mov eax, 14
	mov edi, 2
	lea rsi, [rip+d_mask]
	xor edx, edx
	mov r10d, 8
	syscall
	lea rsp, [rip+d_rflags]
	popfq
	mov rax, [rip+d_rax]
	mov rbx, [rip+d_rbx]
	mov rcx, [rip+d_rcx]
	mov rdx, [rip+d_rdx]
	mov rsi, [rip+d_rsi]
	mov rdi, [rip+d_rdi]
	mov rbp, [rip+d_rbp]
	mov r8,  [rip+d_r8]
	mov r9,  [rip+d_r9]
	mov r10, [rip+d_r10]
	mov r11, [rip+d_r11]
	mov r12, [rip+d_r12]
	mov r13, [rip+d_r13]
	mov r14, [rip+d_r14]
	mov r15, [rip+d_r15]
	mov rsp, [rip+d_rsp]
	jmp [rip+d_rip]
	.balign 8
data:
d_tgid:   .quad 0
d_tid:    .quad 0
d_sig:    .quad 0
d_sigset: .quad 0
d_mask:   .quad 0
d_rflags: .quad 0
d_rax: .quad 0
d_rbx: .quad 0
d_rcx: .quad 0
d_rdx: .quad 0
d_rsi: .quad 0
d_rdi: .quad 0
d_rbp: .quad 0
d_r8:  .quad 0
d_r9:  .quad 0
d_r10: .quad 0
d_r11: .quad 0
d_r12: .quad 0
d_r13: .quad 0
d_r14: .quad 0
d_r15: .quad 0
d_rsp: .quad 0
d_rip: .quad 0
end:
