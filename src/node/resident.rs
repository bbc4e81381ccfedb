//! The process's resident memory, read from the OS at scrape time.

/// Bytes of this process resident in RAM (`VmRSS`), or `None` where the OS does not say.
///
/// Read from `/proc/self/status` rather than `/proc/self/statm`, whose unit (the page size)
/// would need a libc call to learn; both report the same resident set.
pub fn resident_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        parse_vm_rss(&status)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

// The `VmRSS:   1234 kB` line of a /proc status file, in bytes.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib = line.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_vm_rss_line() {
        let status = "Name:\tdynamo-node\nVmPeak:\t  99 kB\nVmRSS:\t   10224 kB\nRssAnon:\t 5 kB\n";
        assert_eq!(parse_vm_rss(status), Some(10224 * 1024));
        assert_eq!(parse_vm_rss("VmRSS: lots\n"), None);
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_a_resident_set() {
        assert!(resident_bytes().is_some_and(|b| b > 0));
    }
}
