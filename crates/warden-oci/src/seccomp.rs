//! `linux.seccomp` (the OCI JSON profile) compiled to classic BPF with the
//! jail's instruction helpers. Rules are tried in the profile's order, the
//! first whose name and argument conditions match decides; the default
//! action decides the rest. x86_64 is native; i386 (`SCMP_ARCH_X86`) is
//! filtered with its own syscall numbers when the profile lists it; x32
//! and any other architecture are killed, as libseccomp does for an
//! architecture the filter does not hold.

use std::os::fd::{FromRawFd, OwnedFd};

use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use warden_jail::{bpf_jump as jump, bpf_stmt as stmt};

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0x0000_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_USER_NOTIF: u32 = 0x7fc0_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

// Classic BPF opcodes.
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// seccomp_data offsets.
const NR: u32 = 0;
const ARCH: u32 = 4;
fn arg_lo(i: usize) -> u32 {
    16 + 8 * i as u32
}
fn arg_hi(i: usize) -> u32 {
    arg_lo(i) + 4
}

/// A compiled profile: the program, its install flags, and whether it
/// asks for a listener (a `SCMP_ACT_NOTIFY` rule).
#[derive(Debug)]
pub struct Compiled {
    pub program: Vec<libc::sock_filter>,
    pub flags: libc::c_ulong,
    pub notify: bool,
}

fn action(a: LinuxSeccompAction, errno: Option<u32>, default_errno: u32) -> u32 {
    match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => RET_KILL_THREAD,
        LinuxSeccompAction::ScmpActKillProcess => RET_KILL_PROCESS,
        LinuxSeccompAction::ScmpActTrap => RET_TRAP,
        LinuxSeccompAction::ScmpActErrno => RET_ERRNO | (errno.unwrap_or(default_errno) & 0xffff),
        LinuxSeccompAction::ScmpActNotify => RET_USER_NOTIF,
        LinuxSeccompAction::ScmpActTrace => RET_TRACE | (errno.unwrap_or(0) & 0xffff),
        LinuxSeccompAction::ScmpActLog => RET_LOG,
        LinuxSeccompAction::ScmpActAllow => RET_ALLOW,
    }
}

fn number(name: &str, i386: bool) -> Option<u32> {
    if i386 {
        name.parse::<syscalls::x86::Sysno>()
            .ok()
            .map(|s| s.id() as u32)
    } else {
        name.parse::<syscalls::x86_64::Sysno>()
            .ok()
            .map(|s| s.id() as u32)
    }
}

/// The checks of one 64-bit argument condition, jumping `fail` forward
/// (counted from after the last instruction of the checks) when it does
/// not hold. Emitted into `out`; A is clobbered.
fn condition(
    out: &mut Vec<libc::sock_filter>,
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    two: u64,
) {
    // Each form below ends at a common "holds" point; FAIL is patched to
    // jump to the block's end by the caller (marked with jt/jf 0xff).
    let (hi, lo) = ((value >> 32) as u32, value as u32);
    const FAIL: u8 = 0xff;
    match op {
        LinuxSeccompOperator::ScmpCmpEq => {
            out.push(stmt(LD_W_ABS, arg_hi(index)));
            out.push(jump(JEQ_K, hi, 0, FAIL));
            out.push(stmt(LD_W_ABS, arg_lo(index)));
            out.push(jump(JEQ_K, lo, 0, FAIL));
        }
        LinuxSeccompOperator::ScmpCmpNe => {
            out.push(stmt(LD_W_ABS, arg_hi(index)));
            out.push(jump(JEQ_K, hi, 0, 2)); // hi differs: holds
            out.push(stmt(LD_W_ABS, arg_lo(index)));
            out.push(jump(JEQ_K, lo, FAIL, 0));
        }
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            let (mhi, mlo) = ((value >> 32) as u32, value as u32);
            let (thi, tlo) = ((two >> 32) as u32, two as u32);
            out.push(stmt(LD_W_ABS, arg_hi(index)));
            out.push(stmt(AND_K, mhi));
            out.push(jump(JEQ_K, thi, 0, FAIL));
            out.push(stmt(LD_W_ABS, arg_lo(index)));
            out.push(stmt(AND_K, mlo));
            out.push(jump(JEQ_K, tlo, 0, FAIL));
        }
        // Unsigned 64-bit orders: decided by the high words unless equal.
        LinuxSeccompOperator::ScmpCmpGt | LinuxSeccompOperator::ScmpCmpGe => {
            let low_op = if op == LinuxSeccompOperator::ScmpCmpGt {
                JGT_K
            } else {
                JGE_K
            };
            out.push(stmt(LD_W_ABS, arg_hi(index)));
            out.push(jump(JGT_K, hi, 3, 0)); // hi greater: holds
            out.push(jump(JEQ_K, hi, 0, FAIL)); // hi less: fails
            out.push(stmt(LD_W_ABS, arg_lo(index)));
            out.push(jump(low_op, lo, 0, FAIL));
        }
        LinuxSeccompOperator::ScmpCmpLt | LinuxSeccompOperator::ScmpCmpLe => {
            // a < v  ⇔ !(a >= v);  a <= v ⇔ !(a > v)
            let low_op = if op == LinuxSeccompOperator::ScmpCmpLt {
                JGE_K
            } else {
                JGT_K
            };
            out.push(stmt(LD_W_ABS, arg_hi(index)));
            out.push(jump(JGT_K, hi, FAIL, 0)); // hi greater: fails
            out.push(jump(JEQ_K, hi, 0, 2)); // hi less: holds
            out.push(stmt(LD_W_ABS, arg_lo(index)));
            out.push(jump(low_op, lo, FAIL, 0));
        }
    }
}

/// Compiles `profile`.
pub fn compile(profile: &LinuxSeccomp) -> Result<Compiled, String> {
    let default_errno = profile.default_errno_ret().unwrap_or(libc::EPERM as u32);
    let default = action(profile.default_action(), None, default_errno);
    let arches: Vec<Arch> = profile.architectures().clone().unwrap_or_default();
    let i386 = arches.contains(&Arch::ScmpArchX86);
    let x32 = arches.contains(&Arch::ScmpArchX32);
    let mut notify = profile.default_action() == LinuxSeccompAction::ScmpActNotify;
    let mut flags: libc::c_ulong = 0;
    for f in profile.flags().iter().flatten() {
        flags |= match f.to_string().as_str() {
            "SECCOMP_FILTER_FLAG_TSYNC" => 1,
            "SECCOMP_FILTER_FLAG_LOG" => 2,
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => 4,
            other => {
                return Err(format!(
                    "config.json: linux.seccomp.flags: {other} is not supported"
                ))
            }
        };
    }
    let rules =
        |i386: bool, out: &mut Vec<libc::sock_filter>, notify: &mut bool| -> Result<(), String> {
            // Whether A holds the syscall number (no condition has run since).
            let mut a_is_nr = false;
            for (ri, rule) in profile.syscalls().iter().flatten().enumerate() {
                let act = action(rule.action(), rule.errno_ret(), default_errno);
                if rule.action() == LinuxSeccompAction::ScmpActNotify {
                    *notify = true;
                }
                let args = rule.args().clone().unwrap_or_default();
                for a in &args {
                    if a.index() > 5 {
                        return Err(format!(
                            "config.json: linux.seccomp.syscalls[{ri}].args: index {} is over 5",
                            a.index()
                        ));
                    }
                }
                for name in rule.names() {
                    // Names this architecture does not have are skipped, as
                    // libseccomp does for a profile written for many.
                    let Some(nr) = number(name, i386) else {
                        continue;
                    };
                    if args.is_empty() {
                        if !a_is_nr {
                            out.push(stmt(LD_W_ABS, NR));
                            a_is_nr = true;
                        }
                        out.push(jump(JEQ_K, nr, 0, 1));
                        out.push(stmt(RET_K, act));
                        continue;
                    }
                    // nr check, conditions, ret; every failure jumps past the ret.
                    let start = out.len();
                    a_is_nr = false;
                    out.push(stmt(LD_W_ABS, NR));
                    out.push(jump(JEQ_K, nr, 0, 0xff));
                    for a in &args {
                        condition(
                            out,
                            a.index(),
                            a.op(),
                            a.value(),
                            a.value_two().unwrap_or(0),
                        );
                    }
                    out.push(stmt(RET_K, act));
                    let end = out.len(); // the instruction after the ret
                    for (i, ins) in out.iter_mut().enumerate().take(end).skip(start) {
                        let to_end = end - i - 1;
                        if to_end > 255 {
                            return Err("a seccomp rule's conditions are too long".into());
                        }
                        if ins.jt == 0xff {
                            ins.jt = to_end as u8;
                        }
                        if ins.jf == 0xff {
                            ins.jf = to_end as u8;
                        }
                    }
                }
            }
            Ok(())
        };
    let mut native = Vec::new();
    rules(false, &mut native, &mut notify)?;
    let mut prog = vec![stmt(LD_W_ABS, ARCH)];
    let mut foreign = Vec::new();
    if i386 {
        rules(true, &mut foreign, &mut notify)?;
        foreign.push(stmt(RET_K, default));
    }
    // arch == x86_64 → native block; arch == i386 (listed) → its block;
    // anything else is killed.
    prog.push(jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0));
    // Not x86_64: i386's block follows the native one, reached by a long jump.
    prog.push(stmt(JA, 0)); // patched below
    let ja_at = prog.len() - 1;
    // x32 system calls carry the x32 bit.
    prog.push(stmt(LD_W_ABS, NR));
    prog.push(jump(JGE_K, X32_SYSCALL_BIT, 0, 1));
    prog.push(stmt(RET_K, if x32 { default } else { RET_KILL_PROCESS }));
    prog.extend(native);
    prog.push(stmt(RET_K, default));
    let foreign_at = prog.len();
    prog[ja_at].k = (foreign_at - ja_at - 1) as u32;
    if i386 {
        prog.push(jump(JEQ_K, AUDIT_ARCH_I386, 1, 0));
        prog.push(stmt(RET_K, RET_KILL_PROCESS));
        prog.extend(foreign);
    } else {
        prog.push(stmt(RET_K, RET_KILL_PROCESS));
    }
    // The arch word was loaded once at the top; the i386 block starts with
    // the arch still in A (no rule ran), as does the jump to it.
    if prog.len() > 4096 {
        return Err(format!(
            "the seccomp profile compiles to {} instructions (the kernel takes 4096)",
            prog.len()
        ));
    }
    Ok(Compiled {
        program: prog,
        flags,
        notify,
    })
}

/// Installs `c`; with a notify rule, returns the listener.
pub fn install(c: &Compiled) -> Result<Option<OwnedFd>, String> {
    const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
    const NEW_LISTENER: libc::c_ulong = 1 << 3;
    let prog = libc::sock_fprog {
        len: c.program.len() as libc::c_ushort,
        filter: c.program.as_ptr() as *mut libc::sock_filter,
    };
    let flags = c.flags | if c.notify { NEW_LISTENER } else { 0 };
    // SAFETY: prog points at the program, which outlives the call; the
    // kernel copies it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        return Err(format!(
            "install the seccomp profile: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: with NEW_LISTENER the kernel returned a new descriptor.
    Ok(c.notify.then(|| unsafe { OwnedFd::from_raw_fd(r as i32) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `prog` on a seccomp_data as the kernel would (classic BPF, the
    /// few opcodes the compiler emits).
    fn eval(prog: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let ins = prog[pc];
            pc += 1;
            match ins.code {
                LD_W_ABS => {
                    a = u32::from_le_bytes(
                        data[ins.k as usize..ins.k as usize + 4].try_into().unwrap(),
                    )
                }
                AND_K => a &= ins.k,
                RET_K => return ins.k,
                JA => pc += ins.k as usize,
                JEQ_K | JGT_K | JGE_K => {
                    let t = match ins.code {
                        JEQ_K => a == ins.k,
                        JGT_K => a > ins.k,
                        _ => a >= ins.k,
                    };
                    pc += if t { ins.jt } else { ins.jf } as usize;
                }
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    fn profile(v: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn rules_match_in_order_with_64_bit_conditions() {
        let p = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "syscalls": [
                {"names": ["getpid", "no_such_call"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["read"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 2, "value": 4294967296u64, "op": "SCMP_CMP_LT"}]},
                {"names": ["write"], "action": "SCMP_ACT_KILL_PROCESS",
                 "args": [{"index": 1, "value": 5, "op": "SCMP_CMP_NE"}, {"index": 2, "value": 10, "op": "SCMP_CMP_GE"}]},
                {"names": ["kill"], "action": "SCMP_ACT_NOTIFY"}
            ]
        }));
        let c = compile(&p).unwrap();
        assert!(c.notify);
        let x = AUDIT_ARCH_X86_64;
        let nr = |n: &str| number(n, false).unwrap();
        let errno = |e: u32| RET_ERRNO | e;
        assert_eq!(eval(&c.program, x, nr("getpid"), [0; 6]), RET_ALLOW);
        assert_eq!(eval(&c.program, x, nr("getppid"), [0; 6]), errno(38));
        assert_eq!(
            eval(&c.program, x, nr("personality"), [8, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            eval(
                &c.program,
                x,
                nr("personality"),
                [8 | 1 << 32, 0, 0, 0, 0, 0]
            ),
            errno(1)
        );
        assert_eq!(
            eval(&c.program, x, nr("clone"), [0x11, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            eval(&c.program, x, nr("clone"), [0x1000_0000, 0, 0, 0, 0, 0]),
            errno(38)
        );
        assert_eq!(
            eval(&c.program, x, nr("read"), [0, 0, 4096, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            eval(&c.program, x, nr("read"), [0, 0, 1 << 33, 0, 0, 0]),
            errno(38)
        );
        assert_eq!(
            eval(&c.program, x, nr("write"), [0, 4, 10, 0, 0, 0]),
            RET_KILL_PROCESS
        );
        assert_eq!(
            eval(&c.program, x, nr("write"), [0, 5, 10, 0, 0, 0]),
            errno(38)
        );
        assert_eq!(
            eval(&c.program, x, nr("write"), [0, 4, 9, 0, 0, 0]),
            errno(38)
        );
        assert_eq!(eval(&c.program, x, nr("kill"), [0; 6]), RET_USER_NOTIF);
        // x32 calls and unlisted architectures are killed; i386 has its own numbers.
        assert_eq!(
            eval(&c.program, x, nr("getpid") | X32_SYSCALL_BIT, [0; 6]),
            RET_KILL_PROCESS
        );
        assert_eq!(eval(&c.program, 0x4000_0028, 20, [0; 6]), RET_KILL_PROCESS);
        let i386_getpid = number("getpid", true).unwrap();
        assert_eq!(
            eval(&c.program, AUDIT_ARCH_I386, i386_getpid, [0; 6]),
            RET_ALLOW
        );
        assert_eq!(
            eval(&c.program, AUDIT_ARCH_I386, nr("getpid"), [0; 6]),
            errno(38)
        );
    }
}
