//! What a run measures about a process: CPU time and peak RSS (`getrusage`), the resident set
//! now (`/proc/self/statm`), the server's CPU time (`/proc/<NATS_SERVER_PID>/stat`), and
//! percentiles of sorted samples.

use std::time::Duration;

use anyhow::Context as _;

/// CPU time (user + system) and peak RSS in KiB of this process.
pub fn usage() -> (Duration, u64) {
    // SAFETY: getrusage fills the struct we pass; RUSAGE_SELF is always valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (
        time(usage.ru_utime) + time(usage.ru_stime),
        usage.ru_maxrss as u64,
    )
}

/// This process's resident set, from `/proc/self/statm`.
pub fn rss_bytes() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .context("/proc/self/statm has no resident field")?
        .parse()?;
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(pages * u64::try_from(page).unwrap_or(4096))
}

/// CPU time (user + system) of the process `NATS_SERVER_PID` names, if it is set and readable:
/// on one machine, the server's share of a workload's cost.
pub fn server_cpu() -> Option<Duration> {
    let pid: u32 = std::env::var("NATS_SERVER_PID").ok()?.parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command in parentheses: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    Some(Duration::from_secs_f64(
        ticks as f64 / per_second.max(1) as f64,
    ))
}

/// The sample at `share` (0.5: the median) of `sorted`, which must not be empty.
pub fn percentile(sorted: &[u64], share: f64) -> u64 {
    sorted[((sorted.len() as f64 * share) as usize).min(sorted.len() - 1)]
}
