//! What the current process may do, which decides defaults: ownership, device nodes and the
//! overlay attribute namespace.

use std::fs;

/// Whether the effective user is root (in its own user namespace).
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether this process runs in a user namespace other than the initial one (a rootless
/// build): there, root may chown among mapped ids but not create devices, and overlayfs
/// needs `userxattr`.
pub(crate) fn in_user_namespace() -> bool {
    match fs::read_to_string("/proc/self/uid_map") {
        // The initial namespace maps the whole id range onto itself.
        Ok(map) => {
            let fields: Vec<&str> = map.split_whitespace().collect();
            fields != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

/// Root of the initial user namespace: the only place device nodes can be made and
/// `trusted.*` attributes set.
pub(crate) fn is_host_root() -> bool {
    is_root() && !in_user_namespace()
}
