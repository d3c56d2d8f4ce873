//! Background work that yields the CPU to requests: a job on a thread of its own, at a lower
//! scheduling priority, awaited from async code.
//!
//! A snapshot writes the whole map. Built at the priority of the threads serving requests, it
//! takes their share of the cores for as long as it runs, and every request waiting meanwhile
//! pays for it: under sustained adds on a busy machine, a snapshot was the whole of the add's
//! tail (docs/benchmarks.md). At nice [`NICE`] the kernel still gives the job about a tenth of a
//! contended core, so it always finishes, and all of any idle core. RocksDB lowers its
//! compaction threads' CPU priority for the same reason.

use std::io;

use tokio::sync::oneshot;

/// How much nicer the job is than the thread that starts it (at most 19). From 0 to 10 the
/// kernel's weight falls from 1024 to 110.
pub const NICE: i32 = 10;

/// Runs `job` on a new thread named `name` at nice [`NICE`] and returns its result. The thread
/// ends with the job, so no pooled thread keeps the lower priority. A job that panics is an
/// error here.
pub async fn run<T, F>(name: &str, job: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            lower_priority();
            let _ = tx.send(job());
        })?;
    rx.await
        .unwrap_or_else(|_| Err(io::Error::other("the background thread panicked")))
}

/// Makes the calling thread [`NICE`] nicer. On Linux a `setpriority` on a thread id applies to
/// that thread alone; elsewhere it would apply to the whole process, so nothing is changed
/// there. A refusal (a sandbox that forbids the call) leaves the priority as it is.
pub(crate) fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        let me = Some(rustix::thread::gettid());
        let lowered =
            getpriority_process(me).and_then(|nice| setpriority_process(me, (nice + NICE).min(19)));
        if let Err(e) = lowered {
            tracing::debug!(error = %e, "background thread keeps its priority");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_job_runs_at_the_lower_priority_and_its_result_comes_back() {
        let me = || rustix::process::getpriority_process(Some(rustix::thread::gettid()));
        let before = me().unwrap();
        let (result, nice) = run("bg-test", move || {
            let nice = rustix::process::getpriority_process(Some(rustix::thread::gettid()))?;
            Ok((41 + 1, nice))
        })
        .await
        .unwrap();
        assert_eq!(result, 42);
        #[cfg(target_os = "linux")]
        assert_eq!(nice, (before + NICE).min(19));
        // The caller's own thread is untouched.
        assert_eq!(me().unwrap(), before);
    }

    #[tokio::test]
    async fn a_failing_or_panicking_job_is_an_error() {
        let failed = run("bg-test", || Err::<(), _>(io::Error::other("disk full"))).await;
        assert_eq!(failed.unwrap_err().to_string(), "disk full");
        let panicked = run("bg-test", || -> io::Result<()> { panic!("job panicked") }).await;
        assert!(panicked
            .unwrap_err()
            .to_string()
            .contains("background thread panicked"));
    }
}
