//! The CPU the servers under test spend during the measured seconds (`--server-pids`): user plus
//! system time of each process, every thread included, read from `/proc/PID/stat` when the
//! warm-up ends and when the measured seconds end. Reported next to the request count, it gives
//! the server CPU per request of exactly the requests measured.

use std::time::Instant;

/// CPU ticks (user + system) of `pids` together; `None` if one of them cannot be read (it
/// exited, or this is not Linux).
fn ticks(pids: &[u32]) -> Option<u64> {
    pids.iter().try_fold(0u64, |sum, pid| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) is in parentheses and may hold spaces: count from its end.
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_ascii_whitespace();
        // After the name: state is field 3, utime field 14, stime field 15.
        let utime: u64 = fields.nth(11)?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some(sum + utime + stime)
    })
}

/// Clock ticks per second, from `getconf CLK_TCK` (100 on every Linux this runs on). Read once,
/// before the load starts.
pub fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|&t| t > 0.0)
        .unwrap_or(100.0)
}

/// Samples the servers' CPU at `warm_end` and at `end`; the seconds of CPU between, or `None`
/// when a process could not be read at either moment.
pub async fn measure(
    pids: Vec<u32>,
    per_second: f64,
    warm_end: Instant,
    end: Instant,
) -> Option<f64> {
    tokio::time::sleep_until(warm_end.into()).await;
    let before = ticks(&pids);
    tokio::time::sleep_until(end.into()).await;
    let after = ticks(&pids);
    Some(after?.checked_sub(before?)? as f64 / per_second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_ticks_grow_with_work() {
        let me = std::process::id();
        let before = ticks(&[me]).expect("own /proc/PID/stat");
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed().as_millis() < 200 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = ticks(&[me]).expect("own /proc/PID/stat");
        // 200 ms of one busy thread: about 20 ticks at 100 per second.
        assert!(after >= before + 10, "{before} -> {after}");
    }

    #[test]
    fn a_missing_process_gives_none() {
        assert_eq!(ticks(&[u32::MAX]), None);
    }
}
