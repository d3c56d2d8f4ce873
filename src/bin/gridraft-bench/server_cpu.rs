//! What the measured seconds cost the machine, read when the warm-up ends and when the measured
//! seconds end: the CPU the servers under test spend (`--server-pids`; user plus system time of
//! each process, every thread included, from `/proc/PID/stat`), the load generator's own, and
//! how the machine's cores were spent (busy, idle, or taken by the hypervisor: `/proc/stat`).
//! Reported next to the request count, the first gives the server CPU per request of exactly
//! the requests measured; the last tells a run the machine's cores limited (none idle) from one
//! that waited (cores idle while requests were in flight), and a host that took cores away.

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

/// The machine's CPU ticks since boot, all cores together, from the `cpu` line of `/proc/stat`:
/// busy (user, nice, system, irq, softirq), idle (idle, iowait) and stolen (steal: time the
/// hypervisor ran something else while a virtual core wanted to run).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cores {
    busy: u64,
    idle: u64,
    stolen: u64,
}

fn parse_proc_stat(text: &str) -> Option<Cores> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    Some(Cores {
        busy: at(0) + at(1) + at(2) + at(5) + at(6),
        idle: at(3) + at(4),
        stolen: at(7),
    })
}

fn cores() -> Option<Cores> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// How the machine's cores were spent over the measured seconds, in cores (CPU seconds per
/// second): on a machine of two cores, busy + idle + stolen is about 2.
#[derive(Debug, Clone, Copy)]
pub struct Machine {
    pub busy: f64,
    pub idle: f64,
    pub stolen: f64,
}

/// What the measured seconds cost: seconds of CPU of the servers (`None` without pids, or when
/// one could not be read) and of the load generator, and the machine's cores.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    pub server: Option<f64>,
    pub client: Option<f64>,
    pub machine: Option<Machine>,
}

/// Samples at `warm_end` and at `end`: the servers' (`pids`) and this process's CPU, and the
/// machine's cores.
pub async fn measure(pids: Vec<u32>, per_second: f64, warm_end: Instant, end: Instant) -> Cost {
    let me = [std::process::id()];
    tokio::time::sleep_until(warm_end.into()).await;
    let (server0, client0, cores0, t0) = (ticks(&pids), ticks(&me), cores(), Instant::now());
    tokio::time::sleep_until(end.into()).await;
    let (server1, client1, cores1, t1) = (ticks(&pids), ticks(&me), cores(), Instant::now());
    let seconds = |a: Option<u64>, b: Option<u64>| Some(b?.checked_sub(a?)? as f64 / per_second);
    let wall = t1.duration_since(t0).as_secs_f64();
    let machine = match (cores0, cores1) {
        (Some(a), Some(b)) if wall > 0.0 => {
            let per_wall = |x: u64, y: u64| y.saturating_sub(x) as f64 / per_second / wall;
            Some(Machine {
                busy: per_wall(a.busy, b.busy),
                idle: per_wall(a.idle, b.idle),
                stolen: per_wall(a.stolen, b.stolen),
            })
        }
        _ => None,
    };
    Cost {
        server: if pids.is_empty() {
            None
        } else {
            seconds(server0, server1)
        },
        client: seconds(client0, client1),
        machine,
    }
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

    #[test]
    fn the_cpu_line_splits_into_busy_idle_and_stolen() {
        let text = "cpu  271936 1281 72561 178851 6619 0 14397 7627 0 0\n\
                    cpu0 135000 600 36000 89000 3300 0 7000 3800 0 0\n\
                    intr 123\n";
        assert_eq!(
            parse_proc_stat(text),
            Some(Cores {
                busy: 271936 + 1281 + 72561 + 14397,
                idle: 178851 + 6619,
                stolen: 7627,
            })
        );
        // An old kernel without the steal column.
        let old = parse_proc_stat("cpu  10 0 5 100 1 0 2\n").unwrap();
        assert_eq!((old.busy, old.idle, old.stolen), (17, 101, 0));
        assert_eq!(parse_proc_stat("intr 1\n"), None);
    }

    #[tokio::test]
    async fn a_measured_second_accounts_for_every_core() {
        let start = Instant::now();
        let cost = measure(
            vec![std::process::id()],
            ticks_per_second(),
            start,
            start + std::time::Duration::from_secs(1),
        )
        .await;
        let m = cost.machine.expect("/proc/stat");
        // The cores /proc/stat counts (a process's CPU affinity or quota may allow fewer).
        let cpus = std::fs::read_to_string("/proc/stat")
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
            .count() as f64;
        let total = m.busy + m.idle + m.stolen;
        // Ticks are counted per core at 100 a second: a second's sample is within a tick or two.
        assert!(
            (total - cpus).abs() < 0.1 * cpus + 0.05,
            "{m:?} on {cpus} cores"
        );
        assert!(cost.server.is_some() && cost.client.is_some(), "{cost:?}");
    }
}
