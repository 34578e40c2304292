//! Docker's default capability set, applied to every capability set of the process.

use caps::{CapSet, Capability, CapsHashSet};

use crate::error::{Error, Result};

/// The capabilities docker grants a container by default.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// The default set as the bit mask `/proc/<pid>/status` shows (`CapEff`, `CapBnd`).
pub fn default_mask() -> u64 {
    DEFAULT_CAPABILITIES.iter().map(|c| c.bitmask()).sum()
}

fn default_set() -> CapsHashSet {
    DEFAULT_CAPABILITIES.iter().copied().collect()
}

fn caps_err(step: &str, e: caps::errors::CapsError) -> Error {
    Error::setup(step, e)
}

/// Drops everything outside the default set from the bounding set. Must run while the process
/// still has CAP_SETPCAP, i.e. before switching user.
pub(crate) fn limit_bounding_set() -> Result<()> {
    let keep = default_set();
    // Only capabilities the running kernel knows can be dropped; newer ones in the caps crate's
    // list would fail with EINVAL on an older kernel.
    let supported = caps::runtime::thread_all_supported();
    for cap in supported.difference(&keep) {
        caps::drop(None, CapSet::Bounding, *cap)
            .map_err(|e| caps_err("dropping capabilities from the bounding set", e))?;
    }
    Ok(())
}

/// Sets effective, permitted and inheritable to the default set and clears the ambient set.
/// Runs after the user switch (with keep-caps on), so permitted still holds what is needed.
/// Effective first, then permitted: the kernel insists that effective ⊆ permitted at each step.
pub(crate) fn apply_process_sets() -> Result<()> {
    let permitted = caps::read(None, CapSet::Permitted)
        .map_err(|e| caps_err("reading permitted capabilities", e))?;
    let target: CapsHashSet = default_set().intersection(&permitted).copied().collect();
    for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable] {
        caps::set(None, set, &target).map_err(|e| caps_err("setting capabilities", e))?;
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| caps_err("clearing ambient capabilities", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_mask_is_dockers() {
        // The CapEff a root process shows in a default docker container.
        assert_eq!(default_mask(), 0x00000000a80425fb);
    }
}
