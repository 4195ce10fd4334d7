//! A daemon seen from outside, through `/proc`: its memory, descriptors and
//! threads, for tests that bound what load or hostile clients cost it.

/// `VmRSS`, `VmHWM` (peak RSS) and `VmSize` of a process, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Mem {
    pub rss: u64,
    pub hwm: u64,
    pub size: u64,
}

pub fn mem(pid: u32) -> Mem {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in status"));
        let kb: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().expect("a number of kB");
        kb * 1024
    };
    Mem { rss: field("VmRSS:"), hwm: field("VmHWM:"), size: field("VmSize:") }
}

/// Bytes as MiB with one decimal, for messages.
pub fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

pub fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0)
}
