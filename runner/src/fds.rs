//! Keeping descriptors from leaking into the sandbox. Rust opens everything close-on-exec, but a
//! caller's parent may have left descriptors open without it, and the sandbox must start with
//! nothing but its standard streams (as runc does).

use std::os::fd::RawFd;

/// Closes every descriptor from 3 up except those in `keep`.
pub(crate) fn close_all_except(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|fd| u32::try_from(*fd).ok())
        .filter(|fd| *fd >= 3)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    if !close_ranges(&keep) {
        close_by_listing(&keep);
    }
}

/// Closes the gaps between the kept descriptors; false when close_range is unavailable.
fn close_ranges(keep: &[u32]) -> bool {
    let mut from = 3u32;
    for &k in keep {
        if k > from && !close_range(from, k - 1) {
            return false;
        }
        from = k.saturating_add(1);
    }
    close_range(from, u32::MAX)
}

/// close_range(2); false when the kernel lacks it (before 5.9).
fn close_range(first: u32, last: u32) -> bool {
    // SAFETY: close_range only closes descriptors; none in the range is used afterwards.
    unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) == 0 }
}

/// The fallback: list `/proc/self/fd` and close what is not kept.
fn close_by_listing(keep: &[u32]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if fd >= 3 && !u32::try_from(fd).is_ok_and(|f| keep.contains(&f)) {
            // SAFETY: closing a descriptor nothing here uses (the listing's own descriptor is
            // already closed once the iterator is consumed).
            unsafe {
                libc::close(fd);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, IntoRawFd};

    #[test]
    fn closes_all_but_the_kept_descriptors_in_a_child() {
        // In a forked child, so the test harness's own descriptors are untouched.
        let keep = std::fs::File::open("/dev/null")
            .expect("open")
            .into_raw_fd();
        let other = std::fs::File::open("/dev/null").expect("open");
        // SAFETY: the child only makes async-signal-safe calls (close_range, fcntl, _exit).
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                close_all_except(&[keep]);
                // SAFETY: F_GETFD only queries the descriptor.
                let kept = unsafe { libc::fcntl(keep, libc::F_GETFD) } >= 0;
                let closed = unsafe { libc::fcntl(other.as_raw_fd(), libc::F_GETFD) } < 0;
                // SAFETY: ends the child without running the harness's destructors.
                unsafe { libc::_exit(if kept && closed { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).expect("wait");
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
                // SAFETY: `keep` is ours and open.
                unsafe {
                    libc::close(keep);
                }
            }
        }
    }
}
