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
    let mut from = 3u32;
    for k in keep {
        if k > from && !close_range(from, k - 1) {
            return close_by_listing(&[k]);
        }
        from = k + 1;
    }
    if !close_range(from, u32::MAX) {
        close_by_listing(&[]);
    }
}

/// close_range(2); false when the kernel lacks it (before 5.9).
fn close_range(first: u32, last: u32) -> bool {
    // SAFETY: close_range only closes descriptors; none in the range is used afterwards.
    unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) == 0 }
}

/// The fallback: list `/proc/self/fd` and close what is not kept.
fn close_by_listing(also_keep: &[u32]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if fd >= 3 && !u32::try_from(fd).is_ok_and(|f| also_keep.contains(&f)) {
            // SAFETY: closing a descriptor nothing here uses (the listing's own descriptor is
            // already closed once the iterator is consumed).
            unsafe {
                libc::close(fd);
            }
        }
    }
}
