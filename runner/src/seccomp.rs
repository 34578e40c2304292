//! The default seccomp filter: what docker's default profile keeps from an unprivileged container
//! (mounting, loading kernel code, namespaces, keyrings, clocks, swap, raw I/O ports, …) fails
//! with EPERM. `clone3` fails with ENOSYS instead, as in docker, because its flags live in
//! memory a filter cannot read: libcs then fall back to `clone`, whose flags are checked.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Syscalls refused outright.
const DENIED: &[libc::c_long] = &[
    libc::SYS_acct,
    libc::SYS_add_key,
    libc::SYS_bpf,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_settime,
    libc::SYS_delete_module,
    libc::SYS_finit_module,
    libc::SYS_init_module,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fsopen,
    libc::SYS_fspick,
    libc::SYS_get_mempolicy,
    libc::SYS_kcmp,
    libc::SYS_kexec_file_load,
    libc::SYS_kexec_load,
    libc::SYS_keyctl,
    libc::SYS_lookup_dcookie,
    libc::SYS_mbind,
    libc::SYS_mount,
    libc::SYS_mount_setattr,
    libc::SYS_move_mount,
    libc::SYS_move_pages,
    libc::SYS_name_to_handle_at,
    libc::SYS_open_by_handle_at,
    libc::SYS_open_tree,
    libc::SYS_perf_event_open,
    libc::SYS_pidfd_getfd,
    libc::SYS_pivot_root,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_quotactl,
    libc::SYS_reboot,
    libc::SYS_request_key,
    libc::SYS_set_mempolicy,
    libc::SYS_setns,
    libc::SYS_settimeofday,
    libc::SYS_swapoff,
    libc::SYS_swapon,
    libc::SYS_syslog,
    libc::SYS_umount2,
    libc::SYS_unshare,
    libc::SYS_userfaultfd,
    libc::SYS_vhangup,
];

/// Syscalls that exist only on x86_64 among the architectures kiln builds for.
#[cfg(target_arch = "x86_64")]
const DENIED_ARCH: &[libc::c_long] = &[
    libc::SYS_ioperm,
    libc::SYS_iopl,
    libc::SYS_nfsservctl,
    libc::SYS__sysctl,
    libc::SYS_sysfs,
    libc::SYS_uselib,
    libc::SYS_ustat,
];
#[cfg(not(target_arch = "x86_64"))]
const DENIED_ARCH: &[libc::c_long] = &[];

/// The x32 ABI reaches the same kernel entry points with this bit set in the syscall number
/// and passes the x86_64 architecture check, so each denied number is denied with it too.
#[cfg(target_arch = "x86_64")]
const X32_BIT: Option<i64> = Some(0x4000_0000);
#[cfg(not(target_arch = "x86_64"))]
const X32_BIT: Option<i64> = None;

/// `clone` flags that create namespaces.
const NAMESPACE_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

fn err(e: impl std::fmt::Display) -> Error {
    Error::setup("building the seccomp filter", e)
}

// `c_long` is i64 only on 64-bit targets; the conversion is real elsewhere.
#[allow(clippy::useless_conversion)]
fn with_x32(nr: libc::c_long) -> Vec<i64> {
    let nr = i64::from(nr);
    match X32_BIT {
        Some(bit) => vec![nr, nr | bit],
        None => vec![nr],
    }
}

fn arch() -> Result<TargetArch> {
    std::env::consts::ARCH.try_into().map_err(err)
}

/// The compiled filters (docker's default profile as an unprivileged container gets it: no
/// mounts, no new namespaces), to be installed in order right before `execve`.
pub struct Filters(Vec<BpfProgram>);

impl Filters {
    pub fn compile() -> Result<Filters> {
        let mut eperm: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for nr in DENIED.iter().chain(DENIED_ARCH) {
            for n in with_x32(*nr) {
                // An empty rule list matches the syscall whatever its arguments.
                eperm.insert(n, Vec::new());
            }
        }
        // clone(flags, …): one rule per namespace flag; any one of them set denies the call.
        let clone_rules = NAMESPACE_FLAGS
            .iter()
            .map(|flag| {
                let flag = *flag as u64;
                SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(flag),
                    flag,
                )
                .and_then(|c| SeccompRule::new(vec![c]))
                .map_err(err)
            })
            .collect::<Result<Vec<_>>>()?;
        for n in with_x32(libc::SYS_clone) {
            eperm.insert(n, clone_rules.clone());
        }
        let enosys: BTreeMap<i64, Vec<SeccompRule>> = with_x32(libc::SYS_clone3)
            .into_iter()
            .map(|n| (n, Vec::new()))
            .collect();

        let mut programs = Vec::new();
        for (rules, errno) in [(eperm, libc::EPERM), (enosys, libc::ENOSYS)] {
            let filter = SeccompFilter::new(
                rules,
                SeccompAction::Allow,
                SeccompAction::Errno(errno as u32),
                arch()?,
            )
            .map_err(err)?;
            programs.push(BpfProgram::try_from(filter).map_err(err)?);
        }
        Ok(Filters(programs))
    }

    /// Installs the filters on the calling thread. Needs `no_new_privs` (or CAP_SYS_ADMIN).
    /// Makes system calls only, so it may run between `fork` and `exec`.
    pub fn install(&self) -> Result<()> {
        for program in &self.0 {
            seccompiler::apply_filter(program)
                .map_err(|e| Error::setup("installing the seccomp filter", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile_for_this_architecture() {
        let filters = Filters::compile().expect("compile");
        assert_eq!(filters.0.len(), 2);
        assert!(filters.0.iter().all(|p| !p.is_empty()));
    }

    #[test]
    fn denied_list_has_no_duplicates() {
        let mut all: Vec<_> = DENIED.iter().chain(DENIED_ARCH).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        assert!(!all.contains(&&libc::SYS_clone));
    }
}
