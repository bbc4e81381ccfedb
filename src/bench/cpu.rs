//! CPU time of processes, read from the outside: the node processes the bench started (by
//! pid) and the bench's own, each as user plus system time from `/proc/<pid>/stat`. This is
//! the figure to drive down: unlike ops/s it does not depend on how busy the machine is.
//!
//! Only Linux with glibc reads it (the clock tick comes from `sysconf`); elsewhere every
//! figure is absent, and the reports say `n/a`.

use std::time::{Duration, Instant};

/// User plus system CPU time of process `pid` so far; `None` when it cannot be read (the
/// process is gone, or not Linux).
pub fn process_cpu(pid: u32) -> Option<Duration> {
    read_stat(&format!("/proc/{pid}/stat"))
}

/// User plus system CPU time of this process so far, all its threads.
pub fn own_cpu() -> Option<Duration> {
    read_stat("/proc/self/stat")
}

fn read_stat(path: &str) -> Option<Duration> {
    let hz = clock_ticks_per_sec()?;
    let text = std::fs::read_to_string(path).ok()?;
    let ticks = stat_cpu_ticks(&text)?;
    Some(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// utime + stime (fields 14 and 15, in clock ticks) of a `/proc/<pid>/stat` line.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    // Field 2, the command name, is in parentheses and may itself hold spaces and
    // parentheses: the numbered fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (the state), so utime is its 12th word.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn clock_ticks_per_sec() -> Option<u64> {
    // SAFETY: sysconf only reads a constant of the C library; it has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&hz| hz > 0)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn clock_ticks_per_sec() -> Option<u64> {
    None
}

/// CPU time used over a window by a set of node processes and by this process.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CpuUsed {
    /// Wall-clock length of the window.
    pub wall: Duration,
    /// Per node process, in the order of the pids given; `None` when the pids were not known
    /// or one of them could not be read at both ends (a process gone takes its CPU time along).
    pub per_node: Option<Vec<Duration>>,
    /// This process's own.
    pub own: Option<Duration>,
}

impl CpuUsed {
    /// Summed over the node processes.
    pub fn nodes(&self) -> Option<Duration> {
        self.per_node.as_ref().map(|per| per.iter().sum())
    }

    /// Each node's CPU time as a percentage of one core over the window.
    pub fn percent_of_core(&self) -> Option<Vec<f64>> {
        let wall = self.wall.as_secs_f64();
        let per = self.per_node.as_ref()?;
        (wall > 0.0).then(|| {
            per.iter()
                .map(|cpu| 100.0 * cpu.as_secs_f64() / wall)
                .collect()
        })
    }
}

/// The CPU clocks at the start of a window.
#[derive(Clone, Debug)]
pub struct CpuMeter {
    started: Instant,
    /// `(pid, cpu)` per node process; `None` when the pids are not known or not readable.
    nodes: Option<Vec<(u32, Duration)>>,
    own: Option<Duration>,
}

impl CpuMeter {
    /// Reads the clocks of `node_pids` (`None`: nodes this process did not start) and of
    /// this process now.
    pub fn start(node_pids: Option<&[u32]>) -> CpuMeter {
        let nodes = node_pids.and_then(|pids| {
            pids.iter()
                .map(|&pid| process_cpu(pid).map(|cpu| (pid, cpu)))
                .collect()
        });
        CpuMeter {
            started: Instant::now(),
            nodes,
            own: own_cpu(),
        }
    }

    /// What each clock advanced by since [`CpuMeter::start`].
    pub fn stop(&self) -> CpuUsed {
        let per_node = self.nodes.as_ref().and_then(|nodes| {
            nodes
                .iter()
                .map(|&(pid, then)| process_cpu(pid).map(|now| now.saturating_sub(then)))
                .collect()
        });
        CpuUsed {
            wall: self.started.elapsed(),
            per_node,
            own: self
                .own
                .zip(own_cpu())
                .map(|(then, now)| now.saturating_sub(then)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_system_ticks_are_read_after_the_command_name() {
        // A command name with a space and a parenthesis of its own.
        let stat = "4242 (tokio (w) 1) S 1 4242 4242 0 -1 4194560 1234 0 5 0 \
                    700 65 0 0 20 0 9 0 123456 1000000 250 18446744073709551615";
        assert_eq!(stat_cpu_ticks(stat), Some(765));
        assert_eq!(stat_cpu_ticks("4242 (x) S 1 2"), None, "cut short");
        assert_eq!(stat_cpu_ticks("no parenthesis 1 2 3"), None);
        let garbled = "1 (x) S 1 1 1 0 -1 0 0 0 0 0 seven 65";
        assert_eq!(stat_cpu_ticks(garbled), None);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn this_process_s_clock_advances_with_work_and_a_gone_pid_reads_as_absent() {
        let meter = CpuMeter::start(Some(&[std::process::id()]));
        // Burn CPU until the clock (10 ms ticks) has surely moved.
        let deadline = Instant::now() + Duration::from_millis(60);
        let mut x = 0u64;
        while Instant::now() < deadline {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let used = meter.stop();
        assert!(used.own.unwrap() > Duration::ZERO, "{used:?}");
        assert!(used.nodes().unwrap() > Duration::ZERO, "{used:?}");
        let share = used.percent_of_core().unwrap();
        assert!(share[0] > 0.0, "{share:?}");
        // Pid 0 is never a process in /proc.
        assert_eq!(process_cpu(0), None);
        let absent = CpuMeter::start(Some(&[0])).stop();
        assert_eq!((absent.per_node.as_deref(), absent.nodes()), (None, None));
        let unknown = CpuMeter::start(None).stop();
        assert!(unknown.per_node.is_none() && unknown.own.is_some());
    }
}
