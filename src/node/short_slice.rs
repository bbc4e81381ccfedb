//! A short scheduler slice for a thread that runs for moments between waits.
//!
//! Linux's scheduler (EEVDF, 6.6 and later) gives each thread a slice, and since 6.12 a
//! thread whose slice is shorter than the running one's takes the CPU as soon as it wakes,
//! instead of queueing behind it. The node's fsync thread works for microseconds between its
//! waits for the disk, and every write acknowledged under `--fsync always` waits for it: on a
//! busy machine, queueing for the CPU after each wait made a round several times as long as
//! its fsync. The request keeps the thread's policy and nice value, needs no privilege, and is
//! best effort: another kernel or system leaves the thread as it was.

use std::time::Duration;

/// Asks for slices of `slice` for the calling thread; true when the kernel took the request
/// (which an older kernel may take and ignore).
pub fn request(slice: Duration) -> bool {
    imp::request(slice)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use std::time::Duration;

    // `struct sched_attr` of sched_setattr(2), in its first version (48 bytes), which every
    // kernel with the call accepts.
    #[repr(C)]
    #[derive(Default)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
    }

    const SCHED_OTHER: u32 = 0;
    const SCHED_BATCH: u32 = 3;
    const SCHED_FLAG_RESET_ON_FORK: u64 = 1;

    pub fn request(slice: Duration) -> bool {
        let size = std::mem::size_of::<SchedAttr>();
        let mut attr = SchedAttr::default();
        // SAFETY: the kernel writes at most `size` bytes into `attr`, a live value of that
        // size laid out as the call expects; pid 0 is the calling thread.
        let read = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                0,
                &mut attr as *mut SchedAttr,
                size,
                0,
            )
        };
        // Real-time and idle policies have no slice to shorten.
        if read != 0 || !matches!(attr.policy, SCHED_OTHER | SCHED_BATCH) {
            return false;
        }
        attr.size = u32::try_from(size).unwrap_or(u32::MAX);
        attr.flags &= SCHED_FLAG_RESET_ON_FORK;
        attr.runtime = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
        // SAFETY: `attr` is a valid, initialised `sched_attr` of the size it states, read
        // only by the kernel; pid 0 is the calling thread.
        let set =
            unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
        set == 0
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    use std::time::Duration;

    pub fn request(_slice: Duration) -> bool {
        false
    }
}

#[cfg(test)]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    // The calling thread's slice in nanoseconds as /proc reports it, on kernels that do.
    fn reported_slice() -> Option<u64> {
        let sched = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        let line = sched
            .lines()
            .find(|l| l.trim_start().starts_with("se.slice"))?;
        line.split(':').nth(1)?.trim().parse().ok()
    }

    fn nice() -> i32 {
        // SAFETY: getpriority reads the calling thread's nice value; it has no preconditions.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[test]
    fn a_thread_gets_the_slice_it_asks_for_and_keeps_its_nice_value() {
        std::thread::spawn(|| {
            // A nice value of its own first, which the request must leave alone.
            // SAFETY: setpriority on the calling thread; raising nice needs no privilege.
            let raised = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 3) };
            assert_eq!(raised, 0);
            assert!(request(Duration::from_micros(100)), "the kernel refused");
            assert_eq!(nice(), 3, "the nice value changed");
            // Kernels before EEVDF take the request without a slice to report.
            if let Some(slice) = reported_slice() {
                assert_eq!(slice, 100_000);
            }
        })
        .join()
        .unwrap();
    }
}
